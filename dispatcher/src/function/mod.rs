//! A deployed function, and the one way any trigger runs it: an [`Event`] becomes the CGI
//! contract's environment and stdin, the function is admitted under its concurrency limit,
//! runs in a fresh instance, and its output comes back for the trigger to read.

mod cgi;
mod event;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::api::Version;
use crate::manifest::FunctionSpec;
use crate::runtime::{Invocation, InvokeError, Prepared};

pub use cgi::{explicit_status, parse_output};
pub use event::{Event, RequestInfo};

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

impl Function {
    /// A function ready to serve. The spec's wasm bytes are dropped: the module holds the
    /// machine code.
    pub fn new(mut spec: FunctionSpec, module: Prepared, deployed: Version) -> Arc<Self> {
        spec.wasm = Vec::new();
        Arc::new(Function {
            name: spec.name.as_str().into(),
            permits: Arc::new(Semaphore::new(spec.limits.max_concurrency as usize)),
            spec,
            module,
            deployed,
        })
    }

    /// Runs one event in a fresh instance and returns what the function wrote to stdout.
    pub async fn run(&self, event: Event<'_>, config: RunConfig) -> Result<Vec<u8>, RunError> {
        let permit = self.permits.clone().acquire_owned();
        let _permit = match config.queue_timeout {
            Some(wait) => match tokio::time::timeout(wait, permit).await {
                Ok(Ok(p)) => p,
                _ => return Err(RunError::Overloaded),
            },
            // The semaphore is never closed, so this waits for a slot.
            None => permit.await.map_err(|_| RunError::Overloaded)?,
        };
        let env = event.env(&self.spec.env);
        let stdin: Bytes = event.into_stdin();
        let invocation = Invocation {
            function: self.name.clone(),
            args: vec![self.spec.name.clone()],
            env,
            stdin,
            memory_bytes: self.spec.limits.memory_bytes,
            timeout: self.spec.limits.timeout,
            max_sockets: self.spec.limits.max_sockets as usize,
            max_pooled_sessions: self.spec.limits.max_db_sessions as usize,
            stdout_cap: config.max_output_bytes,
            net: self.spec.network.clone(),
        };
        Ok(self.module.invoke(invocation).await?)
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
