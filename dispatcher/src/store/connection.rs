//! Where platform state lives: the MariaDB at `DISPATCHER_DB` (default `DATABASE_URL`),
//! shared by replicas, or memory for a lone dispatcher.

use std::sync::Mutex;
use std::time::Duration;

use mysql_async::{Opts, Pool};

use super::memory::{MemoryCatalog, MemoryState};
use super::migrations::migrate;

/// Longest wait for the platform database in one step of a store call (a connect, a
/// statement, or a call's few statements), so that a database that stops answering (frozen,
/// or cut off without a reset) fails a deploy with a clear 503 and a claim in time, instead of
/// hanging them until it answers again.
pub(super) const DB_WAIT: Duration = Duration::from_secs(10);

/// `step`, or an error naming the platform database if it takes longer than [`DB_WAIT`].
pub(super) async fn bounded<T>(
    step: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(DB_WAIT, step).await.map_err(|_| {
        anyhow::anyhow!(
            "the platform database did not answer within {} s",
            DB_WAIT.as_secs()
        )
    })?
}

/// Where platform state lives. Made once per process, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Store {
    /// One dispatcher alone: replicas would each run every fire, and deploys last only
    /// as long as the process.
    Memory(Mutex<MemoryState>, tokio::sync::Mutex<MemoryCatalog>),
    /// Shared by every replica on the database.
    Db(Pool),
}

impl Store {
    pub fn memory() -> Store {
        Store::Memory(
            Mutex::new(MemoryState::default()),
            tokio::sync::Mutex::new(MemoryCatalog::default()),
        )
    }

    /// Connects to the database and applies the migrations it has not seen.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        let opts = Opts::from_url(url)
            .map_err(|e| anyhow::anyhow!("DISPATCHER_DB is not a valid mysql:// URL: {e}"))?;
        let pool = Pool::new(opts);
        let mut conn = tokio::time::timeout(Duration::from_secs(10), pool.get_conn())
            .await
            .map_err(|_| anyhow::anyhow!("the platform database did not answer within 10 s"))?
            .map_err(|e| anyhow::anyhow!("cannot connect to the platform database: {e}"))?;
        migrate(&mut conn).await?;
        Ok(Store::Db(pool))
    }

    /// Whether replicas share this store (a database), so that they sync deploys through it.
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Db(_))
    }
}
