//! flotilla's API machinery: object keys, subjects, the bus codec, the store contract,
//! the resource registry, defaulting and validation. No I/O, no actix, no NATS here.

pub mod admission;
pub mod codec;
pub mod defaults;
pub mod events;
pub mod keys;
pub mod logs;
pub mod object;
pub mod openapi;
pub mod quantity;
pub mod rbac;
pub mod rbac_defaults;
pub mod registry;
pub mod services;
pub mod store;
pub mod subjects;
pub mod validate;
