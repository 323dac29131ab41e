//! Arming schedules as deploys come and go, and handing each fire (or each run taken over
//! from a dead replica) to a [`Job`].
//!
//! Semantics: each fire time starts once. A failed attempt (non-zero exit, trap, timeout, or a
//! non-2xx `Status`) is retried up to `retries` times with exponential backoff from 1 s, by
//! the same replica. A run that dies with its replica is retried by another replica as
//! attempt n+1 once its lease (the function's timeout plus a margin) has expired, and stayed
//! expired for [`REAP_GRACE`] while the platform database answered: a replica that lost the
//! database in the middle of a run records it as soon as the database is back, so its run
//! is not taken for a dead one and run twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

use super::context::{lock, SchedulerConfig, Shared};
use super::job::{fire_key, lease, Job};
use crate::deploy::Live;
use crate::function::Function;
use crate::manifest::{CatchUp, CATCH_UP_WINDOW};
use crate::store::Store;

/// How often a replica looks for runs abandoned by a dead replica.
const REAP_EVERY: Duration = Duration::from_secs(1);
/// How long a run must have been seen abandoned, by looks that reached the database, before
/// it is taken over. Longer than a replica takes to record a finished run once the database
/// is back (its records are retried every 500 ms at most).
const REAP_GRACE: Duration = Duration::from_secs(2);
/// Longest single sleep, so a wall-clock jump is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// A unique name for this replica: host, process and a random suffix.
pub fn replica_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let mut r = [0u8; 3];
    if getrandom::fill(&mut r).is_err() {
        // The host and pid still tell replicas apart; the suffix only guards against pid reuse.
        tracing::debug!("no randomness for the replica name's suffix");
    }
    format!(
        "{host}-{}-{:02x}{:02x}{:02x}",
        std::process::id(),
        r[0],
        r[1],
        r[2]
    )
}

/// Runs every schedule of the live registry until `shutdown` turns true, following deploys:
/// a new or changed function's schedules start, a removed one's stop (its runs in flight
/// finish). Then waits for runs in flight (at most `drain_timeout`; what is cut off is
/// retried elsewhere once its lease expires).
pub async fn run(
    live: Arc<Live>,
    store: Arc<Store>,
    config: SchedulerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let shared = Arc::new(Shared {
        live: live.clone(),
        store,
        config,
        local_running: Mutex::new(HashMap::new()),
        held: Mutex::new(HashSet::new()),
    });
    let mut runs: JoinSet<()> = JoinSet::new();
    let mut loops: JoinSet<()> = JoinSet::new();
    // The function each armed name runs, and its schedule loops.
    let mut armed: HashMap<String, (Arc<Function>, Vec<AbortHandle>)> = HashMap::new();
    let mut reaper: Option<AbortHandle> = None;
    let (fire_tx, mut fire_rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
    let mut changes = live.subscribe();
    changes.mark_changed();
    loop {
        tokio::select! {
            Ok(()) = changes.changed() => {
                let registry = live.load();
                armed.retain(|name, (function, handles)| {
                    let same = registry
                        .functions
                        .get(name)
                        .is_some_and(|f| Arc::ptr_eq(f, function));
                    if !same {
                        handles.iter().for_each(AbortHandle::abort);
                    }
                    same
                });
                for (name, function) in &registry.functions {
                    if function.spec.schedules.is_empty() || armed.contains_key(name) {
                        continue;
                    }
                    let handles = (0..function.spec.schedules.len())
                        .map(|i| {
                            loops.spawn(schedule_loop(
                                shared.clone(),
                                function.clone(),
                                i,
                                fire_tx.clone(),
                                shutdown.clone(),
                            ))
                        })
                        .collect();
                    armed.insert(name.clone(), (function.clone(), handles));
                }
                if reaper.is_none() && !armed.is_empty() {
                    reaper = Some(loops.spawn(reap_loop(
                        shared.clone(),
                        fire_tx.clone(),
                        shutdown.clone(),
                    )));
                }
            }
            Some(job) = fire_rx.recv() => {
                let shared = shared.clone();
                runs.spawn(async move { job.run(&shared).await });
            }
            Some(_) = runs.join_next(), if !runs.is_empty() => {}
            Some(_) = loops.join_next(), if !loops.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    loops.abort_all();
    if runs.is_empty() {
        return;
    }
    let drain = shared.config.drain_timeout;
    if tokio::time::timeout(drain, async { while runs.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!("scheduled runs still in flight after {drain:?}; another replica retries them when their leases expire");
        runs.abort_all();
    }
}

async fn schedule_loop(
    shared: Arc<Shared>,
    function: Arc<Function>,
    index: usize,
    tx: tokio::sync::mpsc::UnboundedSender<Job>,
    mut shutdown: watch::Receiver<bool>,
) {
    let spec = &function.spec.schedules[index];
    let now = Utc::now();
    if spec.catch_up == CatchUp::Latest {
        if let Some(missed) = spec.latest_before(now, CATCH_UP_WINDOW) {
            let key = fire_key(&function, spec, missed);
            match shared.store.exists(&key).await {
                Ok(false) => {
                    tracing::info!(function = %function.name, schedule = %spec.name, fire_time = %missed, "catching up a missed fire");
                    let job = Job {
                        function: function.clone(),
                        schedule: index,
                        at: missed,
                        taken: None,
                    };
                    if tx.send(job).is_err() {
                        return; // shutting down
                    }
                }
                Ok(true) => {}
                Err(e) => {
                    tracing::warn!(function = %function.name, schedule = %spec.name, "catch-up check failed: {e:#}")
                }
            }
        }
    }
    let mut after = now;
    loop {
        let Some(next) = spec.next_after(after) else {
            tracing::info!(function = %function.name, schedule = %spec.name, "the schedule has no more fire times");
            return;
        };
        // Sleep until the fire time by the wall clock, in bounded steps.
        loop {
            let remaining = (next - Utc::now()).to_std().unwrap_or_default();
            if remaining.is_zero() {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(remaining.min(MAX_SLEEP)) => {}
                _ = shutdown.changed() => return,
            }
        }
        after = next;
        if tx
            .send(Job {
                function: function.clone(),
                schedule: index,
                at: next,
                taken: None,
            })
            .is_err()
        {
            return;
        }
    }
}

async fn reap_loop(
    shared: Arc<Shared>,
    tx: tokio::sync::mpsc::UnboundedSender<Job>,
    mut shutdown: watch::Receiver<bool>,
) {
    let known = |function: &str, schedule: &str| {
        let registry = shared.live.peek();
        let f = registry.functions.get(function)?;
        let s = f.spec.schedules.iter().find(|s| s.name == schedule)?;
        Some((s.retries, lease(f)))
    };
    // When each abandoned-looking (fire id, attempt) was first seen, and those seen by the
    // current look; a look that fails forgets them all, so that after an outage every
    // replica has REAP_GRACE to record what it ran before its runs are taken from it.
    let first_seen: Mutex<HashMap<(u64, u32), Instant>> = Mutex::default();
    let seen: Mutex<HashSet<(u64, u32)>> = Mutex::default();
    let ripe = |id: u64, attempt: u32| {
        if lock(&shared.held).contains(&id) {
            return false; // ours: running or being recorded here
        }
        lock(&seen).insert((id, attempt));
        let mut first = lock(&first_seen);
        first
            .entry((id, attempt))
            .or_insert_with(Instant::now)
            .elapsed()
            >= REAP_GRACE
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(REAP_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        let looked = shared
            .store
            .take_abandoned(&shared.config.replica, &known, &ripe)
            .await;
        {
            let mut seen = lock(&seen);
            let mut first = lock(&first_seen);
            match looked {
                Ok(_) => first.retain(|k, _| seen.contains(k)),
                Err(_) => first.clear(),
            }
            seen.clear();
        }
        match looked {
            Ok(taken) => {
                let registry = shared.live.load();
                for a in taken {
                    let Some(function) = registry.functions.get(&a.key.function) else {
                        continue;
                    };
                    let Some(index) = function
                        .spec
                        .schedules
                        .iter()
                        .position(|s| s.name == a.key.schedule)
                    else {
                        continue;
                    };
                    tracing::info!(function = %a.key.function, schedule = %a.key.schedule, fire_time = %a.key.at, attempt = a.attempt, "taking over a run whose replica stopped");
                    let job = Job {
                        function: function.clone(),
                        schedule: index,
                        at: a.key.at,
                        taken: Some((a.id, a.attempt)),
                    };
                    if tx.send(job).is_err() {
                        return; // shutting down; the lease expires again for another replica
                    }
                }
            }
            Err(e) => tracing::warn!("looking for abandoned runs failed: {e:#}"),
        }
    }
}
