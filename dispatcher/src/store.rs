//! Platform state shared by replicas: schedule fire claims and run history, in MariaDB at
//! `DISPATCHER_DB` (default `DATABASE_URL`), or in memory for a lone dispatcher.
//!
//! Exactly-once: each `(function, schedule, fire time)` is claimed by inserting a row under a
//! unique key, so only the replica whose insert succeeds runs it. The row carries a lease (in
//! the database's clock, so replica clock drift does not matter); a replica that dies mid-run
//! leaves it to expire, and another replica takes the fire over as the next attempt.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use mysql_async::prelude::*;
use mysql_async::{Opts, Pool};
use serde::Serialize;

pub use crate::catalog::{MemoryCatalog, NewVersion, VersionRecord};

/// Most fires kept per schedule; older history is pruned.
pub const HISTORY_PER_SCHEDULE: u64 = 1000;

/// The versioned migrations, applied in order, each once.
const MIGRATIONS: &[(u32, &str)] = &[
    (
        1,
        "CREATE TABLE IF NOT EXISTS dispatcher_schedule_fires (
            id BIGINT AUTO_INCREMENT PRIMARY KEY,
            function_name VARCHAR(64) NOT NULL,
            schedule_name VARCHAR(64) NOT NULL,
            fire_time DATETIME(6) NOT NULL,
            replica VARCHAR(128) NOT NULL,
            status VARCHAR(16) NOT NULL,
            attempt INT NOT NULL,
            lease_until DATETIME(6) NULL,
            started_at DATETIME(6) NOT NULL,
            finished_at DATETIME(6) NULL,
            error TEXT NULL,
            UNIQUE KEY fire (function_name, schedule_name, fire_time),
            KEY expiring (status, lease_until)
        )",
    ),
    (
        2,
        "CREATE TABLE IF NOT EXISTS dispatcher_schedule_attempts (
            fire_id BIGINT NOT NULL,
            attempt INT NOT NULL,
            replica VARCHAR(128) NOT NULL,
            status VARCHAR(16) NOT NULL,
            started_at DATETIME(6) NOT NULL,
            finished_at DATETIME(6) NULL,
            duration_ms BIGINT NULL,
            error TEXT NULL,
            PRIMARY KEY (fire_id, attempt)
        )",
    ),
    // The deploy catalog (crate::catalog). Modules are stored once per content hash, in
    // chunks well under any `max_allowed_packet`.
    (
        3,
        "CREATE TABLE IF NOT EXISTS dispatcher_modules (
            hash CHAR(64) PRIMARY KEY,
            size BIGINT NOT NULL,
            chunks INT NOT NULL,
            created_at DATETIME(6) NOT NULL
        )",
    ),
    (
        4,
        "CREATE TABLE IF NOT EXISTS dispatcher_module_chunks (
            hash CHAR(64) NOT NULL,
            seq INT NOT NULL,
            data MEDIUMBLOB NOT NULL,
            PRIMARY KEY (hash, seq)
        )",
    ),
    (
        5,
        "CREATE TABLE IF NOT EXISTS dispatcher_versions (
            name VARCHAR(64) NOT NULL,
            version INT NOT NULL,
            manifest MEDIUMTEXT NOT NULL,
            module_hash CHAR(64) NOT NULL,
            module_size BIGINT NOT NULL,
            source VARCHAR(1024) NOT NULL,
            deployed_by VARCHAR(255) NOT NULL,
            deployed_at DATETIME(6) NOT NULL,
            PRIMARY KEY (name, version)
        )",
    ),
    (
        6,
        "CREATE TABLE IF NOT EXISTS dispatcher_functions (
            name VARCHAR(64) PRIMARY KEY,
            current_version INT NULL,
            updated_at DATETIME(6) NOT NULL
        )",
    ),
    (
        7,
        "CREATE TABLE IF NOT EXISTS dispatcher_catalog (
            id TINYINT PRIMARY KEY,
            generation BIGINT NOT NULL
        )",
    ),
    (
        8,
        "INSERT IGNORE INTO dispatcher_catalog (id, generation) VALUES (1, 0)",
    ),
];

/// For a (function, schedule) this replica knows: its retries and lease, if it has one.
pub type KnownSchedule<'a> = dyn Fn(&str, &str) -> Option<(u32, Duration)> + Sync + 'a;

/// One row of `runs`: function, schedule, fire time, attempt, status, replica, start,
/// duration and error.
type RunRow = (
    String,
    String,
    NaiveDateTime,
    u32,
    String,
    String,
    NaiveDateTime,
    Option<u64>,
    Option<String>,
);

/// Identifies one fire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FireKey {
    pub function: String,
    pub schedule: String,
    /// The scheduled time, UTC, microsecond precision.
    pub at: DateTime<Utc>,
}

/// A fire another replica abandoned, taken over by this one.
#[derive(Debug, Clone)]
pub struct Abandoned {
    pub id: u64,
    pub key: FireKey,
    /// The attempt this replica now runs.
    pub attempt: u32,
}

/// One attempt in the history, for `dispatcher runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub function: String,
    pub schedule: String,
    pub fire_time: String,
    pub attempt: u32,
    pub status: String,
    pub replica: String,
    pub started_at: String,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
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

#[derive(Default)]
pub struct MemoryState {
    next_id: u64,
    fires: HashMap<u64, MemFire>,
    keys: HashMap<FireKey, u64>,
    attempts: Vec<(u64, RunRecord)>,
    /// Deployed modules by content hash (the catalog's, see [`crate::catalog`]).
    pub(crate) modules: HashMap<String, std::sync::Arc<[u8]>>,
}

struct MemFire {
    key: FireKey,
    status: String,
}

fn naive(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc()
}

pub(crate) fn text(t: NaiveDateTime) -> String {
    t.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
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
        // One replica migrates at a time.
        let locked: Option<i64> = conn
            .query_first("SELECT GET_LOCK('dispatcher_migrations', 30)")
            .await?;
        anyhow::ensure!(
            locked == Some(1),
            "timed out waiting for another replica's migrations"
        );
        conn.query_drop(
            "CREATE TABLE IF NOT EXISTS dispatcher_migrations (version INT PRIMARY KEY, applied_at DATETIME(6) NOT NULL)",
        )
        .await?;
        let applied: Vec<u32> = conn
            .query("SELECT version FROM dispatcher_migrations")
            .await?;
        for (version, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            conn.query_drop(*sql).await?;
            conn.exec_drop(
                "INSERT INTO dispatcher_migrations (version, applied_at) VALUES (?, NOW(6))",
                (version,),
            )
            .await?;
            tracing::info!(version, "applied platform database migration");
        }
        conn.query_drop("DO RELEASE_LOCK('dispatcher_migrations')")
            .await?;
        Ok(Store::Db(pool))
    }

    /// Claims a fire for `replica`; `None` if another replica (or an earlier run) has it.
    pub async fn claim(
        &self,
        key: &FireKey,
        replica: &str,
        lease: Duration,
    ) -> anyhow::Result<Option<u64>> {
        match self {
            Store::Memory(m, _) => {
                let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
                if m.keys.contains_key(key) {
                    return Ok(None);
                }
                m.next_id += 1;
                let id = m.next_id;
                m.keys.insert(key.clone(), id);
                m.fires.insert(
                    id,
                    MemFire {
                        key: key.clone(),
                        status: "running".into(),
                    },
                );
                Ok(Some(id))
            }
            Store::Db(pool) => {
                let mut conn = pool.get_conn().await?;
                let r = conn
                    .exec_drop(
                        "INSERT INTO dispatcher_schedule_fires
                           (function_name, schedule_name, fire_time, replica, status, attempt, lease_until, started_at)
                         VALUES (?, ?, ?, ?, 'running', 1, NOW(6) + INTERVAL ? MICROSECOND, NOW(6))",
                        (&key.function, &key.schedule, naive(key.at), replica, micros(lease)),
                    )
                    .await;
                match r {
                    Ok(()) => Ok(Some(conn.last_insert_id().unwrap_or_default())),
                    Err(mysql_async::Error::Server(e)) if e.code == 1062 => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Whether a fire of this schedule other than `except` is running (on any replica).
    pub async fn running_besides(
        &self,
        function: &str,
        schedule: &str,
        except: u64,
    ) -> anyhow::Result<bool> {
        match self {
            Store::Memory(m, _) => {
                let m = m.lock().unwrap_or_else(|e| e.into_inner());
                Ok(m.fires.iter().any(|(id, f)| {
                    *id != except
                        && f.status == "running"
                        && f.key.function == function
                        && f.key.schedule == schedule
                }))
            }
            Store::Db(pool) => {
                let mut conn = pool.get_conn().await?;
                let found: Option<i64> = conn
                    .exec_first(
                        "SELECT 1 FROM dispatcher_schedule_fires
                         WHERE function_name = ? AND schedule_name = ? AND status = 'running'
                           AND lease_until > NOW(6) AND id <> ? LIMIT 1",
                        (function, schedule, except),
                    )
                    .await?;
                Ok(found.is_some())
            }
        }
    }

    /// Whether a fire was ever claimed (for catch-up).
    pub async fn exists(&self, key: &FireKey) -> anyhow::Result<bool> {
        match self {
            Store::Memory(m, _) => Ok(m
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys
                .contains_key(key)),
            Store::Db(pool) => {
                let mut conn = pool.get_conn().await?;
                let found: Option<i64> = conn
                    .exec_first(
                        "SELECT 1 FROM dispatcher_schedule_fires WHERE function_name = ? AND schedule_name = ? AND fire_time = ?",
                        (&key.function, &key.schedule, naive(key.at)),
                    )
                    .await?;
                Ok(found.is_some())
            }
        }
    }

    /// Records that `attempt` starts, and moves the lease to cover it.
    pub async fn start_attempt(
        &self,
        id: u64,
        key: &FireKey,
        attempt: u32,
        replica: &str,
        lease: Duration,
    ) -> anyhow::Result<()> {
        match self {
            Store::Memory(m, _) => {
                let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
                let record = RunRecord {
                    function: key.function.clone(),
                    schedule: key.schedule.clone(),
                    fire_time: key.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                    attempt,
                    status: "running".into(),
                    replica: replica.into(),
                    started_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    duration_ms: None,
                    error: None,
                };
                m.attempts.push((id, record));
                Ok(())
            }
            Store::Db(pool) => {
                let mut conn = pool.get_conn().await?;
                conn.exec_drop(
                    "UPDATE dispatcher_schedule_fires
                     SET attempt = ?, replica = ?, lease_until = NOW(6) + INTERVAL ? MICROSECOND WHERE id = ?",
                    (attempt, replica, micros(lease), id),
                )
                .await?;
                conn.exec_drop(
                    "INSERT INTO dispatcher_schedule_attempts (fire_id, attempt, replica, status, started_at)
                     VALUES (?, ?, ?, 'running', NOW(6))
                     ON DUPLICATE KEY UPDATE replica = VALUES(replica), status = 'running', started_at = NOW(6)",
                    (id, attempt, replica),
                )
                .await?;
                Ok(())
            }
        }
    }

    /// Extends the lease of a fire this replica holds (before a retry's backoff).
    pub async fn extend_lease(&self, id: u64, lease: Duration) -> anyhow::Result<()> {
        if let Store::Db(pool) = self {
            let mut conn = pool.get_conn().await?;
            conn.exec_drop(
                "UPDATE dispatcher_schedule_fires SET lease_until = NOW(6) + INTERVAL ? MICROSECOND WHERE id = ?",
                (micros(lease), id),
            )
            .await?;
        }
        Ok(())
    }

    /// Records how an attempt ended.
    pub async fn end_attempt(
        &self,
        id: u64,
        attempt: u32,
        status: &str,
        duration: Duration,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        match self {
            Store::Memory(m, _) => {
                let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((_, r)) = m
                    .attempts
                    .iter_mut()
                    .rev()
                    .find(|(fid, r)| *fid == id && r.attempt == attempt)
                {
                    r.status = status.into();
                    r.duration_ms = Some(duration.as_millis() as u64);
                    r.error = error.map(Into::into);
                }
                Ok(())
            }
            Store::Db(pool) => {
                let mut conn = pool.get_conn().await?;
                conn.exec_drop(
                    "UPDATE dispatcher_schedule_attempts SET status = ?, finished_at = NOW(6), duration_ms = ?, error = ?
                     WHERE fire_id = ? AND attempt = ?",
                    (status, duration.as_millis() as u64, error, id, attempt),
                )
                .await?;
                Ok(())
            }
        }
    }

    /// Closes a fire with its final status, and prunes old history of its schedule.
    pub async fn finish(
        &self,
        id: u64,
        key: &FireKey,
        status: &str,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        match self {
            Store::Memory(m, _) => {
                let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(f) = m.fires.get_mut(&id) {
                    f.status = status.into();
                }
                // Bounded history: keep the newest attempts.
                let cap = (HISTORY_PER_SCHEDULE * 4) as usize;
                if m.attempts.len() > cap {
                    let excess = m.attempts.len() - cap;
                    m.attempts.drain(..excess);
                }
                Ok(())
            }
            Store::Db(pool) => {
                let mut conn = pool.get_conn().await?;
                conn.exec_drop(
                    "UPDATE dispatcher_schedule_fires SET status = ?, finished_at = NOW(6), lease_until = NULL, error = ? WHERE id = ?",
                    (status, error, id),
                )
                .await?;
                // Keep the newest HISTORY_PER_SCHEDULE fires of this schedule.
                let cutoff: Option<NaiveDateTime> = conn
                    .exec_first(
                        "SELECT fire_time FROM dispatcher_schedule_fires WHERE function_name = ? AND schedule_name = ?
                         ORDER BY fire_time DESC LIMIT 1 OFFSET ?",
                        (&key.function, &key.schedule, HISTORY_PER_SCHEDULE),
                    )
                    .await?;
                if let Some(cutoff) = cutoff {
                    conn.exec_drop(
                        "DELETE a FROM dispatcher_schedule_attempts a JOIN dispatcher_schedule_fires f ON a.fire_id = f.id
                         WHERE f.function_name = ? AND f.schedule_name = ? AND f.fire_time <= ? AND f.status <> 'running'",
                        (&key.function, &key.schedule, cutoff),
                    )
                    .await?;
                    conn.exec_drop(
                        "DELETE FROM dispatcher_schedule_fires
                         WHERE function_name = ? AND schedule_name = ? AND fire_time <= ? AND status <> 'running'",
                        (&key.function, &key.schedule, cutoff),
                    )
                    .await?;
                }
                Ok(())
            }
        }
    }

    /// Takes over fires whose lease expired (their replica died), as the next attempt. Only
    /// fires of `known` (function, schedule) pairs are taken. Fires with no attempts left are
    /// closed as failed and not returned.
    pub async fn take_abandoned(
        &self,
        replica: &str,
        known: &KnownSchedule<'_>,
    ) -> anyhow::Result<Vec<Abandoned>> {
        let Store::Db(pool) = self else {
            return Ok(Vec::new());
        };
        let mut conn = pool.get_conn().await?;
        let rows: Vec<(u64, String, String, NaiveDateTime, u32)> = conn
            .query(
                "SELECT id, function_name, schedule_name, fire_time, attempt FROM dispatcher_schedule_fires
                 WHERE status = 'running' AND lease_until < NOW(6) LIMIT 100",
            )
            .await?;
        let mut taken = Vec::new();
        for (id, function, schedule, at, attempt) in rows {
            let Some((retries, lease)) = known(&function, &schedule) else {
                continue;
            };
            let next = attempt + 1;
            let exhausted = next > retries + 1;
            conn.exec_drop(
                "UPDATE dispatcher_schedule_fires
                 SET replica = ?, attempt = IF(?, attempt, attempt + 1), lease_until = NOW(6) + INTERVAL ? MICROSECOND,
                     status = IF(?, 'failed', 'running'), error = IF(?, 'the replica running it stopped; no attempts left', error),
                     finished_at = IF(?, NOW(6), finished_at)
                 WHERE id = ? AND status = 'running' AND lease_until < NOW(6) AND attempt = ?",
                (replica, exhausted, micros(lease), exhausted, exhausted, exhausted, id, attempt),
            )
            .await?;
            if conn.affected_rows() != 1 {
                continue; // another replica took it first
            }
            conn.exec_drop(
                "UPDATE dispatcher_schedule_attempts SET status = 'lost', finished_at = NOW(6),
                   error = 'the replica running it stopped'
                 WHERE fire_id = ? AND attempt = ? AND status = 'running'",
                (id, attempt),
            )
            .await?;
            let key = FireKey {
                function,
                schedule,
                at: at.and_utc(),
            };
            if exhausted {
                tracing::warn!(function = %key.function, schedule = %key.schedule, fire_time = %key.at, "abandoned run has no attempts left; marked failed");
                continue;
            }
            taken.push(Abandoned {
                id,
                key,
                attempt: next,
            });
        }
        Ok(taken)
    }

    /// Run history, newest first: every attempt.
    pub async fn runs(&self, function: Option<&str>, limit: u64) -> anyhow::Result<Vec<RunRecord>> {
        match self {
            Store::Memory(m, _) => {
                let m = m.lock().unwrap_or_else(|e| e.into_inner());
                Ok(m.attempts
                    .iter()
                    .rev()
                    .map(|(_, r)| r.clone())
                    .filter(|r| function.is_none_or(|f| r.function == f))
                    .take(limit as usize)
                    .collect())
            }
            Store::Db(pool) => {
                let mut conn = pool.get_conn().await?;
                let rows: Vec<RunRow> = conn
                    .exec(
                        "SELECT f.function_name, f.schedule_name, f.fire_time, a.attempt, a.status, a.replica,
                                a.started_at, a.duration_ms, a.error
                         FROM dispatcher_schedule_attempts a JOIN dispatcher_schedule_fires f ON a.fire_id = f.id
                         WHERE (? IS NULL OR f.function_name = ?)
                         ORDER BY f.fire_time DESC, a.attempt DESC LIMIT ?",
                        (function, function, limit),
                    )
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(
                        |(
                            function,
                            schedule,
                            at,
                            attempt,
                            status,
                            replica,
                            started,
                            duration_ms,
                            error,
                        )| RunRecord {
                            function,
                            schedule,
                            fire_time: text(at),
                            attempt,
                            status,
                            replica,
                            started_at: text(started),
                            duration_ms,
                            error,
                        },
                    )
                    .collect())
            }
        }
    }
}
