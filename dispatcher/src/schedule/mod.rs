//! The schedule trigger: fires every function's cron schedules, exactly once across the
//! replicas that share a store, with retries, overlap control and catch-up. The specs and
//! their fire times are the manifest's ([`crate::manifest::ScheduleSpec`]); the claims and
//! history are the store's.

mod context;
mod job;
mod runner;

pub use context::SchedulerConfig;
pub use runner::{replica_name, run};
