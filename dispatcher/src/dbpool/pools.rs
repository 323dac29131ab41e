//! Every pool of a dispatcher, one per database endpoint (host, port, user, schema), each
//! with a loopback listener that guest connections to that endpoint are sent to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::backend::Target;
use super::pool::{Pool, PoolConfig};
use super::session;
use crate::manifest::DatabaseUrl;
use crate::runtime::{Endpoint, NetPolicy};

/// What makes two database endpoints one pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    address: String,
    user: String,
    schema: Option<String>,
}

/// The pools, made on first use and kept for the life of the process.
pub struct Pools {
    config: PoolConfig,
    /// Each pool's series.
    telemetry: Arc<crate::telemetry::Telemetry>,
    by_key: Mutex<HashMap<PoolKey, (Arc<Pool>, SocketAddr)>>,
}

impl Pools {
    pub fn new(config: PoolConfig, telemetry: Arc<crate::telemetry::Telemetry>) -> Arc<Pools> {
        Arc::new(Pools {
            config,
            telemetry,
            by_key: Mutex::default(),
        })
    }

    /// The policy a function runs with: its own, with its pooled databases served by the
    /// host. Must be called within the tokio runtime (a new pool starts listening).
    pub fn policy(
        &self,
        network: &NetPolicy,
        databases: &[DatabaseUrl],
    ) -> std::io::Result<NetPolicy> {
        let mut policy = network.clone();
        for db in databases {
            let to = self.listener(db)?;
            let from = Endpoint::parse(&db.address())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            policy.redirects.push((from, to));
        }
        Ok(policy)
    }

    /// The loopback address of the pool for `db`, opening it if it is new.
    fn listener(&self, db: &DatabaseUrl) -> std::io::Result<SocketAddr> {
        let key = PoolKey {
            address: db.address(),
            user: db.user.clone(),
            schema: db.schema.clone(),
        };
        let mut pools = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((pool, addr)) = pools.get(&key) {
            if pool.target.password == db.password {
                return Ok(*addr);
            }
            // Same user, new password (rotated): a pool that logs in with the new one.
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let name = format!(
            "{}@{}/{}",
            db.user,
            db.address(),
            db.schema.as_deref().unwrap_or("")
        );
        let pool = Pool::new(
            name.clone(),
            Target {
                address: db.address(),
                user: db.user.clone(),
                password: db.password.clone(),
                schema: db.schema.clone(),
            },
            self.config,
            self.telemetry.clone(),
        );
        tracing::info!(target: "dbpool", pool = %name, %addr, max = self.config.max_backends, "database session pool ready");
        tokio::spawn(accept_loop(pool.clone(), listener));
        pools.insert(key, (pool, addr));
        Ok(addr)
    }
}

async fn accept_loop(pool: Arc<Pool>, listener: tokio::net::TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(session::serve(pool.clone(), stream));
            }
            Err(e) => {
                tracing::warn!(target: "dbpool", pool = %pool.name, "accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
