//! What every request handler shares: the deployed set, the HTTP limits and the admin token.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use super::body::BodyLimits;
use super::token::AdminToken;
use crate::deploy::Deployments;
use crate::telemetry::{Active, Telemetry};

/// Settings of the HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body accepted; larger gets 413.
    pub max_body_bytes: usize,
    /// Largest output (headers and body) a function may write; more gets 502.
    pub max_output_bytes: usize,
    /// How long a request waits for a free instance of its function before 503.
    pub queue_timeout: Duration,
    /// How long the listener keeps accepting after the shutdown signal, with health
    /// answering 503 `draining`, so load balancers stop sending first.
    pub drain_delay: Duration,
    /// How long shutdown then waits for requests in flight.
    pub drain_timeout: Duration,
    /// Largest deploy request (manifest and module) the admin API accepts.
    pub max_deploy_bytes: usize,
    /// How long a client has to send a request's line and headers, counted from the moment
    /// the connection is ready for one: a slow client is closed after it, and so is a
    /// keep-alive connection idle that long.
    pub header_timeout: Duration,
    /// How long a request body may take (plus a second per 64 KiB received; slower gets
    /// 408), and how long a response may wait for the client to read it before the
    /// connection is closed.
    pub body_timeout: Duration,
    /// Client connections open at once; past it, new ones get 503 and are closed. Lowered to
    /// what the process's descriptor limit leaves room for.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 16 << 20,
            max_output_bytes: 32 << 20,
            queue_timeout: Duration::from_millis(500),
            drain_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(10),
            max_deploy_bytes: 256 << 20,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

/// What every request handler shares.
pub struct AppState {
    /// The deployed functions, and the way to change them.
    pub deployments: Arc<Deployments>,
    pub config: HttpConfig,
    /// The admin API's token (`DISPATCHER_ADMIN_TOKEN`); `None` turns the API off.
    pub admin: Option<AdminToken>,
    /// Set at the shutdown signal: health answers 503 and responses close their connection.
    pub draining: AtomicBool,
    /// Turns true at the shutdown signal: ends followed log streams.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Metrics, recent lines and invocations, traces.
    pub telemetry: Arc<Telemetry>,
}

/// What one request carries through the handlers.
pub struct RequestCtx {
    /// Its id: the client's `X-Request-Id` if sane, else a new one.
    pub id: Arc<str>,
    /// Its span, when traces are exported.
    pub trace: Option<Active>,
}

impl HttpConfig {
    /// The limits on a request body of at most `max` bytes.
    pub fn body_limits(&self, max: usize) -> BodyLimits {
        BodyLimits {
            max,
            timeout: self.body_timeout,
        }
    }
}

impl AppState {
    /// How requests (and admin invokes) run their function.
    pub fn run_config(&self) -> crate::function::RunConfig {
        crate::function::RunConfig {
            max_output_bytes: self.config.max_output_bytes,
            queue_timeout: Some(self.config.queue_timeout),
        }
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, so callers' futures stay `Send`.
    if shutdown.wait_for(|s| *s).await.is_err() {
        tracing::trace!("the shutdown sender is gone");
    }
}
