//! What the schedule trigger's tasks share.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::deploy::Live;
use crate::store::Store;

/// Settings of the schedule trigger.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// This replica's name in claims and history.
    pub replica: String,
    /// Most bytes a job may write to stdout.
    pub max_output_bytes: usize,
    /// How long shutdown waits for runs in flight.
    pub drain_timeout: Duration,
}

/// What every schedule task shares.
pub(super) struct Shared {
    pub(super) live: Arc<Live>,
    pub(super) store: Arc<Store>,
    pub(super) config: SchedulerConfig,
    /// Runs of each (function, schedule) in flight on this replica, for `overlap = "skip"`.
    pub(super) local_running: Mutex<HashMap<(String, String), u32>>,
    /// Fires (by id) this replica runs or has not finished recording: never taken over here,
    /// even once their lease has expired (the platform database was away, say).
    pub(super) held: Mutex<HashSet<u64>>,
}

/// The maps and sets here are only inserted into, read and cleared: a panic elsewhere leaves
/// them usable.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
