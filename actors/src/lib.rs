//! The control-plane actors: the state group, the API gateway, the controllers and the scheduler.

pub mod state;
pub mod gateway;
pub mod controllers;
pub mod scheduler;
pub mod leaderelection;
