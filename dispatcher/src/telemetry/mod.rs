//! What an operator sees of a platform: Prometheus metrics, request ids, each function's
//! recent log lines and invocations, and OpenTelemetry traces.
//!
//! One [`Telemetry`] per platform, shared by the deploys, the triggers and the pools. Every
//! invocation ends in [`Telemetry::invocation`], the one place its outcome is counted, kept
//! and traced.

mod log_writer;
mod metrics;
mod recent;
pub mod request_id;
mod sessions;
mod trace;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;

use crate::api::LogSource;
pub use log_writer::{BatchedLog, FlushGuard};
use metrics::{secs, PerTrigger};
pub use metrics::{ActionLabels, FireLabels, Metrics, Name, PoolMetrics, ScheduleLabels};
pub use opentelemetry::trace::SpanKind;
pub use opentelemetry::Context as TraceContext;
pub use recent::{now_text, Recent};
pub use sessions::{InvocationSessions, SessionTag, Sessions};
pub use trace::{traceparent, Active, Tracing};

/// What started an invocation.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Trigger {
    Http = 0,
    Schedule = 1,
    Invoke = 2,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Http => "http",
            Trigger::Schedule => "schedule",
            Trigger::Invoke => "invoke",
        }
    }
}

/// How an invocation ended, as metrics, logs and error bodies name it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    Ok = 0,
    Timeout,
    MemoryLimit,
    OutputLimit,
    Trap,
    Exit,
    BadOutput,
    Overloaded,
    /// The host failed (a panic in a host call): the platform's bug, not the function's.
    HostError,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Ok,
        Outcome::Timeout,
        Outcome::MemoryLimit,
        Outcome::OutputLimit,
        Outcome::Trap,
        Outcome::Exit,
        Outcome::BadOutput,
        Outcome::Overloaded,
        Outcome::HostError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Timeout => "timeout",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::OutputLimit => "output_limit",
            Outcome::Trap => "trap",
            Outcome::Exit => "exit",
            Outcome::BadOutput => "bad_output",
            Outcome::Overloaded => "overloaded",
            Outcome::HostError => "host_error",
        }
    }
}

/// How long each part of one invocation took, and when it began.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// When the event arrived at its function (before waiting for a slot).
    pub started: SystemTime,
    /// Waiting for one of the function's concurrency slots.
    pub queued: Duration,
    /// Creating the instance (zero if none was made).
    pub instantiate: Duration,
    /// The guest's `_start`, until it returned or was stopped.
    pub guest: Duration,
    /// Bytes the guest wrote to stdout.
    pub output_bytes: usize,
    /// Whether it got a slot (and so was counted in flight).
    pub admitted: bool,
}

impl Report {
    /// Waiting for a slot, creating the instance and running it: the invocation's time.
    pub fn total(&self) -> Duration {
        self.queued + self.instantiate + self.guest
    }

    pub fn new(started: SystemTime) -> Report {
        Report {
            started,
            queued: Duration::ZERO,
            instantiate: Duration::ZERO,
            guest: Duration::ZERO,
            output_bytes: 0,
            admitted: false,
        }
    }
}

/// The end of one invocation, as the trigger saw it.
pub struct Finished<'a> {
    pub trigger: Trigger,
    pub request_id: &'a Arc<str>,
    pub report: &'a Report,
    pub outcome: Outcome,
    /// The HTTP status answered (for a schedule: the function's `Status`, 0 if none).
    pub status: u16,
    /// What went wrong, for the log (never sent to a client).
    pub detail: Option<String>,
    /// The span the invocation's spans go under, when traces are exported.
    pub trace: Option<&'a TraceContext>,
}

/// One function's telemetry: its recent lines and invocations, its series per trigger.
#[derive(Debug, Default)]
pub struct FunctionTelemetry {
    pub recent: Recent,
    series: PerTrigger,
}

impl crate::runtime::LogSink for FunctionTelemetry {
    fn guest_line(&self, request_id: &str, line: &str) {
        self.recent.line(LogSource::Guest, "info", request_id, line);
    }
}

/// A platform's telemetry.
#[derive(Debug, Default)]
pub struct Telemetry {
    pub metrics: Metrics,
    /// Set when traces are exported.
    pub tracing: Option<Tracing>,
    /// By function name; kept across versions, so a redeploy keeps the lines.
    functions: Mutex<HashMap<Arc<str>, Arc<FunctionTelemetry>>>,
    /// Database sessions opened by invocations, until their pool looks them up.
    pub sessions: Sessions,
}

impl Telemetry {
    pub fn new(tracing: Option<Tracing>) -> Telemetry {
        Telemetry {
            metrics: Metrics::new(),
            tracing,
            functions: Mutex::default(),
            sessions: Sessions::default(),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Arc<FunctionTelemetry>>> {
        self.functions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The telemetry of the function `name`, made on first use.
    pub fn function(&self, name: &Arc<str>) -> Arc<FunctionTelemetry> {
        self.map().entry(name.clone()).or_default().clone()
    }

    /// The telemetry of `name`, if it ever ran or was deployed here.
    pub fn find(&self, name: &str) -> Option<Arc<FunctionTelemetry>> {
        self.map().get(name).cloned()
    }

    /// This replica's counts of `name` (from its invocation counters) and the last minute of
    /// its recent invocations.
    pub fn stats(&self, name: &str, own: &FunctionTelemetry) -> crate::api::FunctionStats {
        const WINDOW: Duration = Duration::from_secs(60);
        let mut stats = crate::api::FunctionStats {
            function: name.to_string(),
            window_seconds: WINDOW.as_secs(),
            ..Default::default()
        };
        let function = metrics::Name(name.into());
        for trigger in [Trigger::Http, Trigger::Schedule, Trigger::Invoke] {
            for outcome in Outcome::ALL {
                for class in [0, 100, 200, 300, 400, 500] {
                    let labels = metrics::InvocationLabels {
                        function: function.clone(),
                        trigger,
                        outcome,
                        status: metrics::StatusClass(class),
                    };
                    let Some(n) = self.metrics.invocations.get(&labels).map(|c| c.get()) else {
                        continue;
                    };
                    stats.total += n;
                    if outcome != Outcome::Ok || class == 500 {
                        stats.errors += n;
                    }
                    *stats.by_outcome.entry(outcome.as_str().into()).or_default() += n;
                }
            }
        }
        let since = (chrono::Utc::now() - chrono::Duration::from_std(WINDOW).unwrap_or_default())
            .timestamp_micros();
        let mut durations: Vec<u64> = Vec::new();
        for r in own.recent.invocations(recent::MAX_INVOCATIONS) {
            if r.at_micros < since {
                break; // newest first
            }
            stats.recent_count += 1;
            if r.outcome != Outcome::Ok || r.status >= 500 {
                stats.recent_errors += 1;
            }
            durations.push(r.duration_us);
        }
        durations.sort_unstable();
        let pick = |q: f64| -> Option<f64> {
            let last = durations.len().checked_sub(1)?;
            let i = ((last as f64) * q).round() as usize;
            Some(durations[i.min(last)] as f64 / 1000.0)
        };
        stats.p50_ms = pick(0.50);
        stats.p95_ms = pick(0.95);
        stats.p99_ms = pick(0.99);
        stats
    }

    /// Records how long a module took to compile or load until it could serve.
    pub fn compiled(&self, module: &crate::runtime::Prepared) {
        let origin = match module.origin {
            crate::runtime::Origin::Compiled => "compiled",
            crate::runtime::Origin::Cached => "cached",
        };
        let labels = metrics::CompileLabels { origin };
        self.metrics
            .compile
            .get_or_create(&labels)
            .observe(secs(module.load_time));
    }

    /// Counts a request answered without running a function: `not_found`,
    /// `method_not_allowed`, `body_too_large`.
    pub fn unrouted(&self, reason: &'static str) {
        let labels = metrics::ReasonLabels { reason };
        self.metrics.unrouted.get_or_create(&labels).inc();
    }

    /// Marks an invocation admitted (in flight until [`Telemetry::invocation`]).
    pub fn admitted(
        &self,
        function: &Arc<str>,
        own: &FunctionTelemetry,
        trigger: Trigger,
        queued: Duration,
    ) {
        let s = own.series.get(&self.metrics, function, trigger);
        s.queue_wait.observe(secs(queued));
        s.in_flight.inc();
    }

    /// Counts, keeps and traces the end of one invocation.
    pub fn invocation(&self, function: &Arc<str>, own: &FunctionTelemetry, done: Finished<'_>) {
        let r = done.report;
        let admitted = r.admitted;
        let s = own.series.get(&self.metrics, function, done.trigger);
        if admitted {
            s.in_flight.dec();
            s.instantiate.observe(secs(r.instantiate));
        }
        s.duration.observe(secs(r.total()));
        s.output_bytes.inc_by(r.output_bytes as u64);
        s.invocation(&self.metrics, done.outcome, done.status);
        let at_micros = r
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        own.recent.invocation(recent::Kept {
            at_micros,
            request_id: done.request_id.clone(),
            trigger: done.trigger,
            outcome: done.outcome,
            status: done.status,
            duration_us: r.total().as_micros() as u64,
        });
        if let Some(detail) = &done.detail {
            tracing::warn!(function = %function, request_id = %done.request_id, trigger = done.trigger.as_str(), outcome = done.outcome.as_str(), "{detail}");
            let message = format!("{}: {detail}", done.outcome.as_str());
            own.recent
                .line(LogSource::Platform, "warn", done.request_id, &message);
        }
        if let (Some(t), Some(parent)) = (&self.tracing, done.trace) {
            if admitted && !r.instantiate.is_zero() {
                let inst_start = r.started + r.queued;
                let guest_start = inst_start + r.instantiate;
                t.child(parent, "instantiate", inst_start, guest_start, Vec::new());
                t.child(
                    parent,
                    "guest",
                    guest_start,
                    guest_start + r.guest,
                    vec![
                        KeyValue::new("faas.invocation_id", done.request_id.to_string()),
                        KeyValue::new("dispatcher.outcome", done.outcome.as_str()),
                    ],
                );
            }
        }
    }
}

/// What the telemetry of one HTTP invocation costs on this thread, for `make bench`: a new
/// request id and its response header, the in-flight gauge, the histograms and counters, the
/// recent-invocations ring; traces off. Returns the mean over `iterations`.
pub fn cost_per_invocation(iterations: u32) -> Duration {
    let telemetry = Telemetry::default();
    let name: Arc<str> = "echo".into();
    let own = telemetry.function(&name);
    let report = Report::new(SystemTime::now());
    let mut headers = http::HeaderMap::new();
    let iterations = iterations.max(1);
    let started = std::time::Instant::now();
    for _ in 0..iterations {
        let id = request_id::from_headers(&headers);
        telemetry.admitted(&name, &own, Trigger::Http, Duration::from_micros(1));
        telemetry.invocation(
            &name,
            &own,
            Finished {
                trigger: Trigger::Http,
                request_id: &id,
                report: &Report {
                    admitted: true,
                    ..report
                },
                outcome: Outcome::Ok,
                status: 200,
                detail: None,
                trace: None,
            },
        );
        if let Ok(v) = http::HeaderValue::from_str(&id) {
            headers.insert(request_id::HEADER, v);
        }
        headers.clear();
    }
    started.elapsed() / iterations
}
