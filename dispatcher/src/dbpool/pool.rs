//! One pool: the backend connections of one database endpoint (host, port, user, schema),
//! at most `max_backends` of them, idle ones kept per session flavor, lent one per guest
//! session and reset before the next.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::backend::{probe, Backend, BackendError, Flavor, Target};
use super::login::ServerInfo;
use crate::telemetry::{PoolMetrics, Telemetry};

/// Settings shared by every pool of a dispatcher.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Most backend connections per pool.
    pub max_backends: usize,
    /// How long a session waits for a backend before the guest gets an error.
    pub acquire_timeout: Duration,
    /// How long opening (or resetting) a backend may take.
    pub connect_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_backends: 16,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// A backend lent to one session, with its share of the pool's bound.
#[derive(Debug)]
pub struct Lease {
    pub backend: Backend,
    /// Held for as long as the connection is open.
    _permit: OwnedSemaphorePermit,
}

/// Why no backend was lent.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error("all {0} database sessions of this pool stayed busy for {1:?}")]
    Busy(usize, Duration),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

pub struct Pool {
    /// `user@host:port/schema`, for logs.
    pub name: String,
    pub target: Target,
    config: PoolConfig,
    /// One permit per open backend connection (idle, lent, or being opened or reset).
    permits: Arc<Semaphore>,
    idle: Mutex<HashMap<Flavor, Vec<Lease>>>,
    /// Woken when a backend comes back or a permit frees up.
    returned: Notify,
    /// The server's greeting, learnt once.
    server: Mutex<Option<ServerInfo>>,
    /// Connection ids the host shows its guests in its greeting. Not the backends' (a session
    /// gets its backend only after the login): they count down from the top of the range,
    /// far from the server's own ids, so a `KILL` of one fails instead of hitting another
    /// session's thread.
    next_id: AtomicU32,
    /// Backends open and lent, waits, resets and discards.
    metrics: PoolMetrics,
    /// Whose sessions these are, and the traces their checkouts go into.
    pub telemetry: Arc<Telemetry>,
}

impl Pool {
    pub fn new(
        name: String,
        target: Target,
        config: PoolConfig,
        telemetry: Arc<Telemetry>,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            metrics: telemetry.metrics.for_pool(&name),
            telemetry,
            name,
            target,
            permits: Arc::new(Semaphore::new(config.max_backends)),
            config,
            idle: Mutex::default(),
            returned: Notify::new(),
            server: Mutex::default(),
            next_id: AtomicU32::new(u32::MAX),
        })
    }

    pub fn next_connection_id(&self) -> u32 {
        self.next_id.fetch_sub(1, Ordering::Relaxed)
    }

    /// What the server offers, from its greeting (read once, again after a failure).
    pub async fn server(&self) -> Result<ServerInfo, BackendError> {
        if let Some(s) = self.lock_server().clone() {
            return Ok(s);
        }
        let info = probe(&self.target, self.config.connect_timeout).await?;
        *self.lock_server() = Some(info.clone());
        Ok(info)
    }

    fn lock_server(&self) -> std::sync::MutexGuard<'_, Option<ServerInfo>> {
        self.server.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, HashMap<Flavor, Vec<Lease>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle backend of `flavor` that still looks alive; dead ones are dropped.
    fn take_idle(&self, flavor: &Flavor) -> Option<Lease> {
        let mut idle = self.lock_idle();
        let list = idle.get_mut(flavor)?;
        while let Some(lease) = list.pop() {
            if lease.backend.looks_alive() {
                return Some(lease);
            }
            tracing::debug!(target: "dbpool", pool = %self.name, "an idle backend was closed by the server; dropped");
        }
        None
    }

    /// Closes one idle backend of another flavor, to make room.
    fn evict_other(&self, flavor: &Flavor) -> bool {
        let mut idle = self.lock_idle();
        for (f, list) in idle.iter_mut() {
            if f != flavor && list.pop().is_some() {
                return true;
            }
        }
        false
    }

    /// Lends a backend for a session of `flavor`: an idle one, else a new one while the
    /// bound allows, else the first one back within the acquire timeout.
    pub async fn acquire(&self, flavor: &Flavor) -> Result<Lease, AcquireError> {
        let lease = self.lend(flavor).await;
        self.count_open();
        if lease.is_ok() {
            self.metrics.in_use.inc();
        }
        lease
    }

    /// Sets the open-backends gauge from the permits taken.
    fn count_open(&self) {
        let open = self.config.max_backends - self.permits.available_permits();
        self.metrics.backends.set(open as i64);
    }

    async fn lend(&self, flavor: &Flavor) -> Result<Lease, AcquireError> {
        let deadline = Instant::now() + self.config.acquire_timeout;
        let mut waited = false;
        loop {
            let notified = self.returned.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(lease) = self.take_idle(flavor) {
                return Ok(lease);
            }
            let permit = match self.permits.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) if self.evict_other(flavor) => self.permits.clone().try_acquire_owned().ok(),
                Err(_) => None,
            };
            if let Some(permit) = permit {
                // On failure the permit goes back with the error.
                let backend =
                    Backend::open(&self.target, flavor, self.config.connect_timeout).await?;
                tracing::debug!(target: "dbpool", pool = %self.name, backend = backend.id, "opened a backend connection");
                return Ok(Lease {
                    backend,
                    _permit: permit,
                });
            }
            if !waited {
                waited = true;
                self.metrics.waits.inc();
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                return Err(AcquireError::Busy(
                    self.config.max_backends,
                    self.config.acquire_timeout,
                ));
            }
        }
    }

    /// Takes a backend back. A clean one is reset (off the guest's path) and kept; one
    /// that was not idle, or whose reset fails, is closed.
    pub fn release(self: &Arc<Self>, mut lease: Lease, clean: bool) {
        self.metrics.in_use.dec();
        if !clean {
            tracing::debug!(target: "dbpool", pool = %self.name, backend = lease.backend.id, "a session ended mid-exchange; its backend is closed");
            drop(lease);
            self.metrics.discards.inc();
            self.count_open();
            self.returned.notify_one();
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            let schema = pool.target.schema.clone();
            let reset = tokio::time::timeout(
                pool.config.connect_timeout,
                lease.backend.reset(schema.as_deref()),
            )
            .await;
            match reset {
                Ok(Ok(())) => {
                    let flavor = lease.backend.flavor.clone();
                    pool.lock_idle().entry(flavor).or_default().push(lease);
                    pool.metrics.resets.inc();
                }
                Ok(Err(e)) => {
                    tracing::info!(target: "dbpool", pool = %pool.name, "a backend failed its reset and is closed: {e}");
                    pool.metrics.discards.inc();
                }
                Err(_) => {
                    tracing::info!(target: "dbpool", pool = %pool.name, "a backend did not answer its reset in time and is closed");
                    pool.metrics.discards.inc();
                }
            }
            pool.count_open();
            pool.returned.notify_one();
        });
    }

    /// Forgets what the server offered, so the next session reads its greeting again.
    pub fn forget_server(&self) {
        *self.lock_server() = None;
    }
}
