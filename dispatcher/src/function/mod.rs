//! A deployed function, and the one way any trigger runs it: an [`Event`] becomes the CGI
//! contract's environment and stdin, the function is admitted under its concurrency limit,
//! runs in a fresh instance, and its output comes back for the trigger to read.

mod cgi;
mod event;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::api::Version;
use crate::manifest::{FunctionSpec, Limits};
use crate::runtime::{CStrings, Caps, Invocation, InvokeError, Prepared, Timings};
use crate::telemetry::{
    Finished, FunctionTelemetry, InvocationSessions, Report, SessionTag, Telemetry, TraceContext,
    Trigger,
};

pub use cgi::{explicit_status, parse_output};
pub use event::{EnvBase, Event, Peer, RequestInfo};

/// One deployed function.
pub struct Function {
    /// The name, shared with every log line and invocation.
    pub name: Arc<str>,
    /// What its manifest says.
    pub spec: FunctionSpec,
    /// The compiled, pre-linked module.
    pub module: Prepared,
    /// Caps the instances in flight at `limits.max_concurrency`.
    pub permits: Arc<Semaphore>,
    /// The catalog's record of this version.
    pub deployed: Version,
    /// The platform's metrics and traces.
    pub telemetry: Arc<Telemetry>,
    /// The part of its environment that is the same for every event.
    env_base: EnvBase,
    /// `argv`: the function's name.
    args: CStrings,
    /// This function's recent lines and invocations, and its series (kept across versions).
    pub observed: Arc<FunctionTelemetry>,
}

/// How a trigger runs its events.
#[derive(Debug, Clone, Copy)]
pub struct RunConfig {
    /// Most bytes the function may write to stdout.
    pub max_output_bytes: usize,
    /// How long an event waits for one of the function's `max_concurrency` slots before it
    /// is refused; `None` waits as long as it takes (schedules: the fire is claimed already).
    pub queue_timeout: Option<Duration>,
}

/// Why a run produced no output.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Every slot of the function stayed busy for the queue timeout.
    #[error("too many invocations in flight")]
    Overloaded,
    /// The instance failed.
    #[error(transparent)]
    Invoke(#[from] InvokeError),
}

impl RunError {
    /// How metrics and logs name this failure.
    pub fn outcome(&self) -> crate::telemetry::Outcome {
        use crate::telemetry::Outcome;
        match self {
            RunError::Overloaded | RunError::Invoke(InvokeError::Capacity(_)) => {
                Outcome::Overloaded
            }
            RunError::Invoke(InvokeError::Timeout(_)) => Outcome::Timeout,
            RunError::Invoke(InvokeError::MemoryLimit(_)) => Outcome::MemoryLimit,
            RunError::Invoke(InvokeError::OutputLimit(_)) => Outcome::OutputLimit,
            RunError::Invoke(InvokeError::Exit(_)) => Outcome::Exit,
            RunError::Invoke(InvokeError::Trap(_)) => Outcome::Trap,
            RunError::Invoke(InvokeError::HostPanic(_)) => Outcome::HostError,
        }
    }
}

/// What the manifest's limits let one instance hold and use.
fn caps(limits: &Limits, stdout_bytes: usize) -> Caps {
    Caps {
        sockets: limits.max_sockets as usize,
        connections: limits.max_connections as usize,
        pooled_sessions: limits.max_db_sessions as usize,
        lookups: limits.max_lookups as usize,
        stdout_bytes,
        log_bytes: (limits.max_log_kb as usize) << 10,
    }
}

impl Function {
    /// A function ready to serve. The spec's wasm bytes are dropped: the module holds the
    /// machine code.
    pub fn new(
        mut spec: FunctionSpec,
        module: Prepared,
        deployed: Version,
        telemetry: &Arc<Telemetry>,
    ) -> Arc<Self> {
        spec.wasm = Vec::new();
        let name: Arc<str> = spec.name.as_str().into();
        let env_base = EnvBase::new(&spec.env, spec.http.as_ref().map(|h| &h.pattern));
        Arc::new(Function {
            env_base,
            args: CStrings::from_items([&spec.name]),
            observed: telemetry.function(&name),
            telemetry: telemetry.clone(),
            name,
            permits: Arc::new(Semaphore::new(spec.limits.max_concurrency as usize)),
            spec,
            module,
            deployed,
        })
    }

    /// Runs one event in a fresh instance and returns what the function wrote to stdout;
    /// `report` gets how long its parts took. The trigger then hands the outcome to
    /// [`Function::finished`].
    pub async fn run(
        &self,
        event: Event<'_>,
        config: RunConfig,
        trigger: Trigger,
        request_id: &Arc<str>,
        trace: Option<&TraceContext>,
        report: &mut Report,
    ) -> Result<Vec<u8>, RunError> {
        // A free slot is the usual case: no timer, no clock read.
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                let arrived = Instant::now();
                let permit = self.permits.clone().acquire_owned();
                let permit = match config.queue_timeout {
                    Some(wait) => tokio::time::timeout(wait, permit)
                        .await
                        .ok()
                        .and_then(Result::ok),
                    // The semaphore is never closed, so this waits for a slot.
                    None => permit.await.ok(),
                };
                report.queued = arrived.elapsed();
                permit
            }
        };
        let Some(_permit) = permit else {
            return Err(RunError::Overloaded);
        };
        report.admitted = true;
        self.telemetry
            .admitted(&self.name, &self.observed, trigger, report.queued);
        let env = event.env(request_id, &self.env_base);
        // Only a function with pooled databases opens sessions the host serves.
        let sessions = (!self.spec.databases.is_empty()).then(|| {
            Arc::new(InvocationSessions {
                telemetry: self.telemetry.clone(),
                tag: SessionTag {
                    request_id: request_id.clone(),
                    trace: trace.cloned(),
                },
            }) as Arc<dyn crate::runtime::HostSessions>
        });
        let stdin: Bytes = event.into_stdin();
        let invocation = Invocation {
            function: self.name.clone(),
            request_id: request_id.clone(),
            log: Some(self.observed.clone()),
            args: self.args.clone(),
            env,
            stdin,
            memory_bytes: self.spec.limits.memory_bytes,
            timeout: self.spec.limits.timeout,
            caps: caps(&self.spec.limits, config.max_output_bytes),
            sessions,
            net: self.spec.network.clone(),
        };
        let mut timings = Timings::default();
        let result = self.module.invoke_timed(invocation, &mut timings).await;
        report.instantiate = timings.instantiate;
        report.guest = timings.guest;
        report.output_bytes = timings.output_bytes;
        Ok(result?)
    }

    /// Counts, keeps and traces how an invocation of this function ended.
    pub fn finished(&self, done: Finished<'_>) {
        self.telemetry.invocation(&self.name, &self.observed, done);
    }

    /// A report to fill for an invocation arriving now.
    pub fn report() -> Report {
        Report::new(SystemTime::now())
    }

    /// `GET /items/{id}` style, or `None` without an HTTP trigger.
    pub fn route_text(&self) -> Option<String> {
        let http = self.spec.http.as_ref()?;
        let methods = match &http.methods {
            Some(ms) => ms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","),
            None => "*".into(),
        };
        Some(format!("{methods} {}", http.pattern))
    }
}
