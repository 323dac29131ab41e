//! The platform's metrics, in the Prometheus (OpenMetrics) text format by `prometheus-client`.
//!
//! Labels stay bounded: a function's name, its trigger, an outcome or status class from a
//! fixed set, a schedule's name, a pool's endpoint. Never a path, a query or a request id.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::{Outcome, Trigger};

/// A label value shared without copying: a function's, a schedule's or a pool's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Name(pub Arc<str>);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, &self.0)
    }
}

impl EncodeLabelValue for Trigger {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// The class of the HTTP status a trigger answered with (`2xx` ... `5xx`), or `none` for a
/// run whose output is not an HTTP answer (a schedule's).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct StatusClass(pub u16);

impl EncodeLabelValue for StatusClass {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let text = match self.0 / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            5 => "5xx",
            _ => "none",
        };
        std::fmt::Write::write_str(encoder, text)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabels {
    pub function: Name,
    pub trigger: Trigger,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InvocationLabels {
    pub function: Name,
    pub trigger: Trigger,
    pub outcome: Outcome,
    pub status: StatusClass,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleLabels {
    pub function: Name,
    pub schedule: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FireLabels {
    pub function: Name,
    pub schedule: Name,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CompileLabels {
    /// `compiled` (a compile ran) or `cached` (loaded from the cache or seen before).
    pub origin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: Name,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds from 100 us to 30 s, in 1-2.5-5 steps.
const SECONDS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 20.0, 30.0,
];

/// Lateness of a schedule's start: 1 ms to a minute.
const LATENESS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS)
}

fn lateness_histogram() -> Histogram {
    Histogram::new(LATENESS)
}

/// Every metric of one platform.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub invocations: Family<InvocationLabels, Counter>,
    pub duration: Histograms<FunctionLabels>,
    pub instantiate: Histograms<FunctionLabels>,
    pub in_flight: Family<FunctionLabels, Gauge>,
    pub queue_wait: Histograms<FunctionLabels>,
    pub output_bytes: Family<FunctionLabels, Counter>,
    pub unrouted: Family<ReasonLabels, Counter>,
    pub functions: Gauge,
    pub catalog_generation: Gauge,
    pub applied_generation: Gauge,
    pub deploys: Family<ActionLabels, Counter>,
    pub compile: Histograms<CompileLabels>,
    pub fires: Family<FireLabels, Counter>,
    pub lateness: Histograms<ScheduleLabels>,
    pub retries: Family<ScheduleLabels, Counter>,
    pub pool_backends: Family<PoolLabels, Gauge>,
    pub pool_in_use: Family<PoolLabels, Gauge>,
    pub pool_waits: Family<PoolLabels, Counter>,
    pub pool_resets: Family<PoolLabels, Counter>,
    pub pool_discards: Family<PoolLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let histograms = || Histograms::new_with_constructor(seconds_histogram as fn() -> _);
        let m = Metrics {
            registry: Registry::with_prefix("dispatcher"),
            invocations: Family::default(),
            duration: histograms(),
            instantiate: histograms(),
            in_flight: Family::default(),
            queue_wait: histograms(),
            output_bytes: Family::default(),
            unrouted: Family::default(),
            functions: Gauge::default(),
            catalog_generation: Gauge::default(),
            applied_generation: Gauge::default(),
            deploys: Family::default(),
            compile: Histograms::new_with_constructor(seconds_histogram),
            fires: Family::default(),
            lateness: Histograms::new_with_constructor(lateness_histogram),
            retries: Family::default(),
            pool_backends: Family::default(),
            pool_in_use: Family::default(),
            pool_waits: Family::default(),
            pool_resets: Family::default(),
            pool_discards: Family::default(),
        };
        m.registered()
    }

    fn registered(mut self) -> Metrics {
        let r = &mut self.registry;
        let s = Unit::Seconds;
        r.register(
            "invocations",
            "Function invocations by trigger, outcome and HTTP status class",
            self.invocations.clone(),
        );
        r.register_with_unit(
            "invocation_duration",
            "Time from admission to output, per invocation",
            s.clone(),
            self.duration.clone(),
        );
        r.register_with_unit(
            "instantiate",
            "Time to create a fresh instance",
            s.clone(),
            self.instantiate.clone(),
        );
        r.register(
            "invocations_in_flight",
            "Invocations admitted and not yet finished",
            self.in_flight.clone(),
        );
        r.register_with_unit(
            "queue_wait",
            "Time an event waited for one of its function's concurrency slots",
            s.clone(),
            self.queue_wait.clone(),
        );
        r.register_with_unit(
            "output",
            "Bytes functions wrote to stdout",
            Unit::Bytes,
            self.output_bytes.clone(),
        );
        r.register("unrouted_requests", "Requests answered without running a function (not_found, method_not_allowed, body_too_large)", self.unrouted.clone());
        r.register(
            "functions",
            "Functions deployed on this replica",
            self.functions.clone(),
        );
        r.register(
            "catalog_generation",
            "The newest catalog generation this replica has read",
            self.catalog_generation.clone(),
        );
        r.register(
            "catalog_applied_generation",
            "The catalog generation this replica serves (behind = catalog_generation - this)",
            self.applied_generation.clone(),
        );
        r.register("deploys", "Changes made through this replica, by action (deployed, unchanged, rolled_back, removed)", self.deploys.clone());
        r.register_with_unit(
            "compile",
            "Time to compile or load a module until it can serve",
            s.clone(),
            self.compile.clone(),
        );
        r.register(
            "schedule_fires",
            "Scheduled fires by outcome (succeeded, failed, skipped, lost: run by another replica)",
            self.fires.clone(),
        );
        r.register_with_unit(
            "schedule_lateness",
            "How long after its fire time a scheduled attempt started",
            s,
            self.lateness.clone(),
        );
        r.register(
            "schedule_retries",
            "Attempts after a fire's first",
            self.retries.clone(),
        );
        r.register(
            "db_pool_backends",
            "Backend connections open in a database session pool",
            self.pool_backends.clone(),
        );
        r.register(
            "db_pool_in_use",
            "Backend connections lent to guest sessions",
            self.pool_in_use.clone(),
        );
        r.register(
            "db_pool_waits",
            "Sessions that waited for a backend",
            self.pool_waits.clone(),
        );
        r.register(
            "db_pool_resets",
            "Backends reset and kept after a session",
            self.pool_resets.clone(),
        );
        r.register(
            "db_pool_discards",
            "Backends closed after a session (not idle, or the reset failed)",
            self.pool_discards.clone(),
        );
        self
    }

    /// The scrape: every metric in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!("encoding the metrics failed: {e}");
        }
        out
    }

    /// The handles of one function's per-trigger series, resolved once.
    pub fn for_function(&self, function: &Arc<str>, trigger: Trigger) -> FunctionMetrics {
        let labels = FunctionLabels {
            function: Name(function.clone()),
            trigger,
        };
        FunctionMetrics {
            duration: self.duration.get_or_create(&labels).clone(),
            instantiate: self.instantiate.get_or_create(&labels).clone(),
            in_flight: self.in_flight.get_or_create(&labels).clone(),
            queue_wait: self.queue_wait.get_or_create(&labels).clone(),
            output_bytes: self.output_bytes.get_or_create(&labels).clone(),
            counters: Default::default(),
            labels,
        }
    }

    /// The handles of one database session pool.
    pub fn for_pool(&self, pool: &str) -> PoolMetrics {
        let labels = PoolLabels {
            pool: Name(pool.into()),
        };
        PoolMetrics {
            backends: self.pool_backends.get_or_create(&labels).clone(),
            in_use: self.pool_in_use.get_or_create(&labels).clone(),
            waits: self.pool_waits.get_or_create(&labels).clone(),
            resets: self.pool_resets.get_or_create(&labels).clone(),
            discards: self.pool_discards.get_or_create(&labels).clone(),
        }
    }
}

/// One function's series for one trigger (clones share the values).
#[derive(Debug)]
pub struct FunctionMetrics {
    labels: FunctionLabels,
    pub duration: Histogram,
    pub instantiate: Histogram,
    pub in_flight: Gauge,
    pub queue_wait: Histogram,
    pub output_bytes: Counter,
    /// `dispatcher_invocations_total` by outcome and status class (0: none, 1xx ... 5xx).
    counters: [[OnceLock<Counter>; 6]; 8],
}

impl FunctionMetrics {
    /// Counts one invocation of `outcome` and `status`'s class (the counter's handle is
    /// looked up in the family once, then kept).
    pub fn invocation(&self, metrics: &Metrics, outcome: Outcome, status: u16) {
        let class = usize::from(status / 100).min(5);
        let cell = &self.counters[outcome as usize][class];
        cell.get_or_init(|| {
            let labels = InvocationLabels {
                function: self.labels.function.clone(),
                trigger: self.labels.trigger,
                outcome,
                status: StatusClass(status),
            };
            metrics.invocations.get_or_create(&labels).clone()
        })
        .inc();
    }
}

/// The series of one database session pool.
#[derive(Debug, Clone, Default)]
pub struct PoolMetrics {
    pub backends: Gauge,
    pub in_use: Gauge,
    pub waits: Counter,
    pub resets: Counter,
    pub discards: Counter,
}

/// Each trigger's series of one function, made on first use so that an HTTP function has no
/// schedule series.
#[derive(Debug, Default)]
pub struct PerTrigger([OnceLock<FunctionMetrics>; 3]);

impl PerTrigger {
    pub fn get(
        &self,
        metrics: &Metrics,
        function: &Arc<str>,
        trigger: Trigger,
    ) -> &FunctionMetrics {
        self.0[trigger as usize].get_or_init(|| metrics.for_function(function, trigger))
    }
}

/// Seconds as a histogram takes them.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
