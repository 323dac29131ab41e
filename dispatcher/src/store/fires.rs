//! Schedule fire claims and run history.
//!
//! Exactly-once: each `(function, schedule, fire time)` is claimed by inserting a row under a
//! unique key, so only the replica whose insert succeeds runs it. The row carries a lease (in
//! the database's clock, so replica clock drift does not matter); a replica that dies mid-run
//! leaves it to expire, and another replica takes the fire over as the next attempt.

use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use mysql_async::prelude::*;

use super::connection::{bounded, Store};
use super::memory::MemFire;
use super::records::{micros, naive, text, Abandoned, FireKey, KnownSchedule};
use crate::api::{FireStatus, RunRecord};

/// Most fires kept per schedule; older history is pruned.
pub const HISTORY_PER_SCHEDULE: u64 = 1000;

/// One row of `runs`: function, schedule, fire time, attempt, status, replica, start,
/// duration, error and request id.
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
    Option<String>,
);

impl Store {
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
                        status: FireStatus::Running,
                    },
                );
                Ok(Some(id))
            }
            Store::Db(pool) => bounded(async {
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
            }).await,
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
                        && f.status == FireStatus::Running
                        && f.key.function == function
                        && f.key.schedule == schedule
                }))
            }
            Store::Db(pool) => {
                bounded(async {
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
                })
                .await
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
            Store::Db(pool) => bounded(async {
                let mut conn = pool.get_conn().await?;
                let found: Option<i64> = conn
                    .exec_first(
                        "SELECT 1 FROM dispatcher_schedule_fires WHERE function_name = ? AND schedule_name = ? AND fire_time = ?",
                        (&key.function, &key.schedule, naive(key.at)),
                    )
                    .await?;
                Ok(found.is_some())
            }).await,
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
        request_id: &str,
    ) -> anyhow::Result<()> {
        match self {
            Store::Memory(m, _) => {
                let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
                let record = RunRecord {
                    request_id: Some(request_id.into()),
                    function: key.function.clone(),
                    schedule: key.schedule.clone(),
                    fire_time: key.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                    attempt,
                    status: FireStatus::Running,
                    replica: replica.into(),
                    started_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    duration_ms: None,
                    error: None,
                };
                m.attempts.push((id, record));
                Ok(())
            }
            Store::Db(pool) => bounded(async {
                let mut conn = pool.get_conn().await?;
                conn.exec_drop(
                    "UPDATE dispatcher_schedule_fires
                     SET attempt = ?, replica = ?, lease_until = NOW(6) + INTERVAL ? MICROSECOND WHERE id = ?",
                    (attempt, replica, micros(lease), id),
                )
                .await?;
                conn.exec_drop(
                    "INSERT INTO dispatcher_schedule_attempts (fire_id, attempt, replica, status, started_at, request_id)
                     VALUES (?, ?, ?, 'running', NOW(6), ?)
                     ON DUPLICATE KEY UPDATE replica = VALUES(replica), status = 'running', started_at = NOW(6),
                       request_id = VALUES(request_id)",
                    (id, attempt, replica, request_id),
                )
                .await?;
                Ok(())
            }).await,
        }
    }

    /// Extends the lease of a fire this replica holds (before a retry's backoff).
    pub async fn extend_lease(&self, id: u64, lease: Duration) -> anyhow::Result<()> {
        if let Store::Db(pool) = self {
            bounded(async {
                let mut conn = pool.get_conn().await?;
                conn.exec_drop(
                    "UPDATE dispatcher_schedule_fires SET lease_until = NOW(6) + INTERVAL ? MICROSECOND WHERE id = ?",
                    (micros(lease), id),
                )
                .await?;
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// Records how an attempt ended.
    pub async fn end_attempt(
        &self,
        id: u64,
        attempt: u32,
        status: FireStatus,
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
                    r.status = status;
                    r.duration_ms = Some(duration.as_millis() as u64);
                    r.error = error.map(Into::into);
                }
                Ok(())
            }
            Store::Db(pool) => bounded(async {
                let mut conn = pool.get_conn().await?;
                conn.exec_drop(
                    "UPDATE dispatcher_schedule_attempts SET status = ?, finished_at = NOW(6), duration_ms = ?, error = ?
                     WHERE fire_id = ? AND attempt = ?",
                    (status.as_str(), duration.as_millis() as u64, error, id, attempt),
                )
                .await?;
                Ok(())
            }).await,
        }
    }

    /// Closes a fire with its final status, and prunes old history of its schedule.
    pub async fn finish(
        &self,
        id: u64,
        key: &FireKey,
        status: FireStatus,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        match self {
            Store::Memory(m, _) => {
                let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(f) = m.fires.get_mut(&id) {
                    f.status = status;
                }
                // Bounded history: keep the newest attempts.
                let cap = (HISTORY_PER_SCHEDULE * 4) as usize;
                if m.attempts.len() > cap {
                    let excess = m.attempts.len() - cap;
                    m.attempts.drain(..excess);
                }
                Ok(())
            }
            Store::Db(pool) => bounded(async {
                let mut conn = pool.get_conn().await?;
                conn.exec_drop(
                    "UPDATE dispatcher_schedule_fires SET status = ?, finished_at = NOW(6), lease_until = NULL, error = ? WHERE id = ?",
                    (status.as_str(), error, id),
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
            }).await,
        }
    }

    /// Takes over fires whose lease expired (their replica died), as the next attempt. Only
    /// fires of `known` (function, schedule) pairs for which `ripe(id, attempt)` holds are
    /// taken. Fires with no attempts left are closed as failed and not returned.
    pub async fn take_abandoned(
        &self,
        replica: &str,
        known: &KnownSchedule<'_>,
        ripe: &(dyn Fn(u64, u32) -> bool + Sync),
    ) -> anyhow::Result<Vec<Abandoned>> {
        let Store::Db(pool) = self else {
            return Ok(Vec::new());
        };
        bounded(async {
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
            if !ripe(id, attempt) {
                continue;
            }
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
        })
        .await
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
            Store::Db(pool) => bounded(async {
                let mut conn = pool.get_conn().await?;
                let rows: Vec<RunRow> = conn
                    .exec(
                        "SELECT f.function_name, f.schedule_name, f.fire_time, a.attempt, a.status, a.replica,
                                a.started_at, a.duration_ms, a.error, a.request_id
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
                            request_id,
                        )| RunRecord {
                            request_id,
                            function,
                            schedule,
                            fire_time: text(at),
                            attempt,
                            // A name from a newer version reads as lost: it is not running here.
                            status: FireStatus::parse(&status).unwrap_or(FireStatus::Lost),
                            replica,
                            started_at: text(started),
                            duration_ms,
                            error,
                        },
                    )
                    .collect())
            }).await,
        }
    }
}
