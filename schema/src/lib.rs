//! flotilla's API machinery: object keys, subjects, the bus codec, the store contract,
//! the resource registry, defaulting and validation. No I/O, no actix, no NATS here.

pub mod admission;
pub mod codec;
pub mod conversion;
pub mod cron;
pub mod defaults;
pub mod disruption;
pub mod events;
pub mod fieldmanager;
pub mod fieldpath;
pub mod fieldtypes;
pub mod join;
pub mod keys;
pub mod labels;
pub mod logs;
pub mod metrics;
pub mod natsauth;
pub mod noderestriction;
pub mod object;
pub mod obs;
pub mod openapi;
pub mod plugins;
pub mod printers;
pub mod quantity;
pub mod rbac;
pub mod rbac_defaults;
pub mod registry;
pub mod services;
pub mod storage;
pub mod store;
pub mod streaming;
pub mod subjects;
pub mod tokens;
pub mod trace;
pub mod typed;
pub mod validate;
