//! One fire of one schedule: claimed (or taken over), run with retries, recorded.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use std::sync::Arc;

use super::context::{lock, Shared};
use crate::api::FireStatus;
use crate::function::{explicit_status, Event, Function, RunConfig, RunError};
use crate::manifest::{backoff, Overlap, ScheduleSpec};
use crate::store::FireKey;
use crate::telemetry::{request_id, Finished, Outcome, SpanKind, TraceContext, Trigger};

/// Extra lease time beyond the function's timeout, for the store round trips around a run.
const LEASE_MARGIN: Duration = Duration::from_secs(2);
/// How long a run's records are retried while the platform database is away. The run is not
/// repeated: its outcome waits here until the database takes it.
const RECORD_FOR: Duration = Duration::from_secs(300);
/// Longest pause between two tries of a record.
const RECORD_RETRY_MAX: Duration = Duration::from_millis(500);

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

/// Marks a fire as held by this replica while alive, so its reaper leaves it alone.
struct Held<'a> {
    shared: &'a Shared,
    id: u64,
}

impl<'a> Held<'a> {
    fn new(shared: &'a Shared, id: u64) -> Self {
        lock(&shared.held).insert(id);
        Held { shared, id }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        lock(&self.shared.held).remove(&self.id);
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

/// Counts a fire's end by outcome: `succeeded`, `failed`, `skipped`, or `lost` (another
/// replica claimed it).
fn count_fire(function: &Function, spec: &ScheduleSpec, outcome: &'static str) {
    let labels = crate::telemetry::FireLabels {
        function: crate::telemetry::Name(function.name.clone()),
        schedule: crate::telemetry::Name(spec.name.as_str().into()),
        outcome,
    };
    function
        .telemetry
        .metrics
        .fires
        .get_or_create(&labels)
        .inc();
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
                Ok(None) => {
                    // Another replica runs it.
                    count_fire(&self.function, spec, "lost");
                    return;
                }
                Err(e) => {
                    tracing::error!(function = %key.function, schedule = %key.schedule, fire_time = %key.at, "cannot claim the fire: {e:#}");
                    return;
                }
            },
        };
        let _held = Held::new(shared, id);
        let (_local, already) =
            LocalRun::start(shared, (key.function.clone(), key.schedule.clone()));
        if spec.overlap == Overlap::Skip && first_attempt == 1 {
            let elsewhere = store
                .running_besides(&key.function, &key.schedule, id)
                .await
                .unwrap_or(false);
            if already > 0 || elsewhere {
                tracing::info!(function = %key.function, schedule = %key.schedule, fire_time = %key.at, "skipped: the previous run is still going (overlap = \"skip\")");
                recorded("skip", || store.finish(id, &key, FireStatus::Skipped, None)).await;
                count_fire(&self.function, spec, "skipped");
                return;
            }
        }
        let telemetry = &self.function.telemetry;
        let series = crate::telemetry::ScheduleLabels {
            function: crate::telemetry::Name(self.function.name.clone()),
            schedule: crate::telemetry::Name(spec.name.as_str().into()),
        };
        let fire_span = telemetry.tracing.as_ref().map(|t| {
            let attributes = vec![
                opentelemetry::KeyValue::new("faas.name", key.function.clone()),
                opentelemetry::KeyValue::new("dispatcher.schedule", key.schedule.clone()),
                opentelemetry::KeyValue::new("faas.time", key.at.to_rfc3339()),
            ];
            t.start("schedule fire", SpanKind::Internal, None, None, attributes)
        });
        let mut last_error = String::new();
        for attempt in first_attempt..=spec.retries + 1 {
            if attempt > first_attempt {
                let wait = backoff(attempt);
                log_err(store.extend_lease(id, wait + lease).await);
                tokio::time::sleep(wait).await;
            }
            let started = Instant::now();
            if attempt == 1 {
                let late = (Utc::now() - self.at).to_std().unwrap_or_default();
                telemetry
                    .metrics
                    .lateness
                    .get_or_create(&series)
                    .observe(late.as_secs_f64());
            } else {
                telemetry.metrics.retries.get_or_create(&series).inc();
            }
            let request_id = request_id::new();
            let attempt_span = match (&telemetry.tracing, &fire_span) {
                (Some(t), Some(fire)) => {
                    let attributes = vec![
                        opentelemetry::KeyValue::new("dispatcher.attempt", i64::from(attempt)),
                        opentelemetry::KeyValue::new("faas.invocation_id", request_id.to_string()),
                    ];
                    Some(t.start(
                        "attempt",
                        SpanKind::Internal,
                        Some(&fire.cx),
                        None,
                        attributes,
                    ))
                }
                _ => None,
            };
            // The claim (or the takeover, or the lease extension before a retry) already
            // covers this attempt, so the guest starts at once and its history row is written
            // alongside, not before: a slow commit must not make the run late.
            let ((), outcome) = tokio::join!(
                recorded("start", || store.start_attempt(
                    id,
                    &key,
                    attempt,
                    replica,
                    lease,
                    &request_id
                )),
                invoke(
                    &self.function,
                    spec,
                    Attempt {
                        at: self.at,
                        attempt,
                        request_id: &request_id,
                        trace: attempt_span.as_ref().map(|a| &a.cx),
                    },
                    shared.config.max_output_bytes,
                )
            );
            if let (Some(t), Some(span)) = (&telemetry.tracing, attempt_span) {
                t.end(span, Vec::new(), outcome.as_ref().err().cloned());
            }
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
            recorded("end", || {
                store.end_attempt(id, attempt, status, took, error)
            })
            .await;
            match outcome {
                Ok(()) => {
                    recorded("success", || {
                        store.finish(id, &key, FireStatus::Succeeded, None)
                    })
                    .await;
                    count_fire(&self.function, spec, "succeeded");
                    if let (Some(t), Some(span)) = (&telemetry.tracing, fire_span) {
                        t.end(span, Vec::new(), None);
                    }
                    return;
                }
                Err(e) => last_error = e,
            }
        }
        recorded("failure", || {
            store.finish(id, &key, FireStatus::Failed, Some(&last_error))
        })
        .await;
        count_fire(&self.function, spec, "failed");
        if let (Some(t), Some(span)) = (&telemetry.tracing, fire_span) {
            t.end(span, Vec::new(), Some(last_error));
        }
    }
}

/// One attempt of a fire, as the function sees it.
struct Attempt<'a> {
    at: DateTime<Utc>,
    attempt: u32,
    request_id: &'a Arc<str>,
    trace: Option<&'a TraceContext>,
}

fn log_err(r: anyhow::Result<()>) {
    if let Err(e) = r {
        tracing::warn!("the platform database did not take a run update: {e:#}");
    }
}

/// Writes one of a run's records (`what`: its start, end, ...), retrying for [`RECORD_FOR`]
/// while the platform database is away, so the history ends whole and the fire is not left
/// `running` for another replica to take over and run again.
async fn recorded<F, Fut>(what: &str, mut write: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let deadline = Instant::now() + RECORD_FOR;
    let mut wait = Duration::from_millis(50);
    let mut failed = false;
    loop {
        match write().await {
            Ok(()) if failed => {
                tracing::info!("the platform database took the run's {what} record after all");
                return;
            }
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => {
                tracing::error!("the platform database did not take the run's {what} record for {RECORD_FOR:?}; giving up: {e:#}");
                return;
            }
            Err(e) if !failed => {
                failed = true;
                tracing::warn!("the platform database did not take the run's {what} record: {e:#}; retrying until it does");
            }
            Err(_) => {}
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RECORD_RETRY_MAX);
    }
}

/// Runs one attempt. Success is exit 0 with no `Status`, or a 2xx `Status`.
async fn invoke(
    function: &Function,
    schedule: &ScheduleSpec,
    run: Attempt<'_>,
    max_output_bytes: usize,
) -> Result<(), String> {
    let event = Event::Schedule {
        schedule,
        at: run.at,
        attempt: run.attempt,
    };
    let config = RunConfig {
        max_output_bytes,
        queue_timeout: None,
    };
    let mut report = Function::report();
    let result = function
        .run(
            event,
            config,
            Trigger::Schedule,
            run.request_id,
            run.trace,
            &mut report,
        )
        .await;
    let (outcome, status, error) = match &result {
        Ok(output) => {
            let status = explicit_status(output).unwrap_or(0);
            let error = (status != 0 && !(200..300).contains(&status))
                .then(|| format!("the function answered status {status}"));
            (Outcome::Ok, status, error)
        }
        Err(e) => {
            let error = match e {
                RunError::Invoke(e) => format!("the function {e}"),
                other => other.to_string(),
            };
            (e.outcome(), 0, Some(error))
        }
    };
    function.finished(Finished {
        trigger: Trigger::Schedule,
        request_id: run.request_id,
        report: &report,
        outcome,
        status,
        detail: (outcome != Outcome::Ok).then(|| error.clone()).flatten(),
        trace: run.trace,
    });
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
