
pub mod state;
pub mod gateway;
