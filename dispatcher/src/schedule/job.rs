//! One fire of one schedule: claimed (or taken over), run with retries, recorded.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use std::sync::Arc;

use super::context::Shared;
use crate::api::FireStatus;
use crate::function::{explicit_status, Event, Function, RunConfig, RunError};
use crate::manifest::{backoff, Overlap, ScheduleSpec};
use crate::store::FireKey;

/// Extra lease time beyond the function's timeout, for the store round trips around a run.
const LEASE_MARGIN: Duration = Duration::from_secs(2);

/// One fire to run: a new one (claim first) or one taken over from a dead replica.
pub(super) struct Job {
    pub(super) function: Arc<Function>,
    pub(super) schedule: usize,
    pub(super) at: DateTime<Utc>,
    /// `Some((id, attempt))` when the fire is already ours (taken over).
    pub(super) taken: Option<(u64, u32)>,
}

pub(super) fn lease(function: &Function) -> Duration {
    function.spec.limits.timeout + LEASE_MARGIN
}

pub(super) fn fire_key(function: &Function, spec: &ScheduleSpec, at: DateTime<Utc>) -> FireKey {
    FireKey {
        function: function.spec.name.clone(),
        schedule: spec.name.clone(),
        at,
    }
}

/// Marks a (function, schedule) as running on this replica while alive.
struct LocalRun<'a> {
    shared: &'a Shared,
    key: (String, String),
}

impl<'a> LocalRun<'a> {
    fn start(shared: &'a Shared, key: (String, String)) -> (Self, u32) {
        let mut m = shared
            .local_running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = m.entry(key.clone()).or_default();
        *n += 1;
        let before = *n - 1;
        (LocalRun { shared, key }, before)
    }
}

impl Drop for LocalRun<'_> {
    fn drop(&mut self) {
        let mut m = self
            .shared
            .local_running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Job {
    pub(super) async fn run(self, shared: &Shared) {
        let spec = &self.function.spec.schedules[self.schedule];
        let key = fire_key(&self.function, spec, self.at);
        let store = &shared.store;
        let replica = &shared.config.replica;
        let lease = lease(&self.function);
        let (id, first_attempt) = match self.taken {
            Some(t) => t,
            None => match store.claim(&key, replica, lease).await {
                Ok(Some(id)) => (id, 1),
                Ok(None) => return, // another replica runs it
                Err(e) => {
                    tracing::error!(function = %key.function, schedule = %key.schedule, fire_time = %key.at, "cannot claim the fire: {e:#}");
                    return;
                }
            },
        };
        let (_local, already) =
            LocalRun::start(shared, (key.function.clone(), key.schedule.clone()));
        if spec.overlap == Overlap::Skip && first_attempt == 1 {
            let elsewhere = store
                .running_besides(&key.function, &key.schedule, id)
                .await
                .unwrap_or(false);
            if already > 0 || elsewhere {
                tracing::info!(function = %key.function, schedule = %key.schedule, fire_time = %key.at, "skipped: the previous run is still going (overlap = \"skip\")");
                log_err(store.finish(id, &key, FireStatus::Skipped, None).await);
                return;
            }
        }
        let mut last_error = String::new();
        for attempt in first_attempt..=spec.retries + 1 {
            if attempt > first_attempt {
                let wait = backoff(attempt);
                log_err(store.extend_lease(id, wait + lease).await);
                tokio::time::sleep(wait).await;
            }
            let started = Instant::now();
            // The claim (or the takeover, or the lease extension before a retry) already
            // covers this attempt, so the guest starts at once and its history row is written
            // alongside, not before: a slow commit must not make the run late.
            let (recorded, outcome) = tokio::join!(
                store.start_attempt(id, &key, attempt, replica, lease),
                invoke(
                    &self.function,
                    spec,
                    self.at,
                    attempt,
                    shared.config.max_output_bytes,
                )
            );
            log_err(recorded);
            let took = started.elapsed();
            let status = if outcome.is_ok() {
                FireStatus::Succeeded
            } else {
                FireStatus::Failed
            };
            let error = outcome.as_ref().err().map(String::as_str);
            tracing::info!(
                function = %key.function,
                schedule = %key.schedule,
                fire_time = %key.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                attempt,
                %status,
                ms = took.as_millis() as u64,
                error = %error.unwrap_or(""),
                "scheduled run"
            );
            log_err(store.end_attempt(id, attempt, status, took, error).await);
            match outcome {
                Ok(()) => {
                    log_err(store.finish(id, &key, FireStatus::Succeeded, None).await);
                    return;
                }
                Err(e) => last_error = e,
            }
        }
        log_err(
            store
                .finish(id, &key, FireStatus::Failed, Some(&last_error))
                .await,
        );
    }
}

fn log_err(r: anyhow::Result<()>) {
    if let Err(e) = r {
        tracing::warn!("the platform database did not take a run update: {e:#}");
    }
}

/// Runs one attempt. Success is exit 0 with no `Status`, or a 2xx `Status`.
async fn invoke(
    function: &Function,
    schedule: &ScheduleSpec,
    at: DateTime<Utc>,
    attempt: u32,
    max_output_bytes: usize,
) -> Result<(), String> {
    let event = Event::Schedule {
        schedule,
        at,
        attempt,
    };
    let config = RunConfig {
        max_output_bytes,
        queue_timeout: None,
    };
    let output = match function.run(event, config).await {
        Ok(output) => output,
        Err(RunError::Invoke(e)) => return Err(format!("the function {e}")),
        Err(e) => return Err(e.to_string()),
    };
    match explicit_status(&output) {
        Some(status) if !(200..300).contains(&status) => {
            Err(format!("the function answered status {status}"))
        }
        _ => Ok(()),
    }
}
