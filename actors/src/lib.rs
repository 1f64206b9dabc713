//! The control-plane actors: the state group, the API gateway, the controllers, the cloud controller and the scheduler.

pub mod state;
pub mod gateway;
pub mod controllers;
pub mod cloud;
pub mod scheduler;
pub mod leaderelection;
