//! The deploy catalog: which functions are deployed, each one's version history, and the
//! modules, in the platform database (shared by replicas) or in memory for a lone dispatcher.
//!
//! A function's versions are numbered 1, 2, ... per name. `dispatcher_functions` points at
//! the current one (NULL once removed); a rollback moves the pointer. Every change bumps the
//! single `dispatcher_catalog.generation` row inside the same transaction, and that row is
//! also the lock that orders deploys across replicas (`SELECT ... FOR UPDATE`). Replicas poll
//! the generation and reload what changed.

use chrono::NaiveDateTime;
use mysql_async::prelude::*;
use mysql_async::{IsolationLevel, Transaction, TxOpts};

use super::connection::{bounded, Store};
use super::memory::MemoryCatalog;
use super::records::{text, History, NewVersion, Snapshot};
use crate::api::Version;
use crate::runtime::content_hash;

/// Bytes per stored module chunk: far below the smallest `max_allowed_packet` MariaDB ships
/// with, so modules of any size (64 MiB and more) go through a stock server.
const CHUNK: usize = 1 << 20;

/// A change to the catalog in progress. It holds the catalog's lock until [`commit`]; dropped
/// without a commit, it changes nothing.
///
/// [`commit`]: CatalogTx::commit
pub enum CatalogTx<'a> {
    Memory {
        guard: tokio::sync::MutexGuard<'a, MemoryCatalog>,
        /// The changed catalog, written back on commit.
        draft: Box<MemoryCatalog>,
    },
    Db(Transaction<'static>),
}

type Row = (
    String,
    u32,
    String,
    String,
    u64,
    String,
    String,
    NaiveDateTime,
);

fn record(r: Row) -> Version {
    Version {
        name: r.0,
        version: r.1,
        manifest: r.2,
        module_hash: r.3,
        module_size: r.4,
        source: r.5,
        deployed_by: r.6,
        deployed_at: text(r.7),
    }
}

const COLUMNS: &str =
    "v.name, v.version, v.manifest, v.module_hash, v.module_size, v.source, v.deployed_by, v.deployed_at";

async fn db_snapshot(q: &mut impl Queryable) -> anyhow::Result<Snapshot> {
    let generation: Option<u64> = q
        .query_first("SELECT generation FROM dispatcher_catalog WHERE id = 1")
        .await?;
    let rows: Vec<Row> = q
        .query(format!(
            "SELECT {COLUMNS} FROM dispatcher_functions f
             JOIN dispatcher_versions v ON v.name = f.name AND v.version = f.current_version
             ORDER BY v.name"
        ))
        .await?;
    Ok(Snapshot {
        generation: generation.unwrap_or(0),
        current: rows.into_iter().map(record).collect(),
    })
}

async fn db_history(q: &mut impl Queryable, name: &str) -> anyhow::Result<History> {
    let current: Option<Option<u32>> = q
        .exec_first(
            "SELECT current_version FROM dispatcher_functions WHERE name = ?",
            (name,),
        )
        .await?;
    let rows: Vec<Row> = q
        .exec(
            format!(
                "SELECT {COLUMNS} FROM dispatcher_versions v WHERE v.name = ? ORDER BY v.version"
            ),
            (name,),
        )
        .await?;
    Ok(History {
        current: current.flatten(),
        versions: rows.into_iter().map(record).collect(),
    })
}

impl Store {
    /// The catalog's generation: it changes with every deploy, rollback and removal.
    pub async fn catalog_generation(&self) -> anyhow::Result<u64> {
        match self {
            Store::Memory(_, c) => Ok(c.lock().await.generation),
            Store::Db(pool) => {
                bounded(async {
                    let mut conn = pool.get_conn().await?;
                    let g: Option<u64> = conn
                        .query_first("SELECT generation FROM dispatcher_catalog WHERE id = 1")
                        .await?;
                    Ok(g.unwrap_or(0))
                })
                .await
            }
        }
    }

    /// What is deployed now.
    pub async fn catalog_snapshot(&self) -> anyhow::Result<Snapshot> {
        match self {
            Store::Memory(_, c) => Ok(c.lock().await.snapshot()),
            Store::Db(pool) => {
                bounded(async { db_snapshot(&mut pool.get_conn().await?).await }).await
            }
        }
    }

    /// One function's versions.
    pub async fn history(&self, name: &str) -> anyhow::Result<History> {
        match self {
            Store::Memory(_, c) => Ok(c.lock().await.history(name)),
            Store::Db(pool) => {
                bounded(async { db_history(&mut pool.get_conn().await?, name).await }).await
            }
        }
    }

    /// Stores a module under its content hash, once. Safe to race: every writer of a hash
    /// writes the same bytes.
    pub async fn put_module(&self, hash: &str, wasm: &[u8]) -> anyhow::Result<()> {
        match self {
            Store::Memory(m, _) => {
                // A lock of its own, apart from the catalog's: a change in progress may need
                // a module.
                m.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .modules
                    .entry(hash.to_string())
                    .or_insert_with(|| wasm.into());
                Ok(())
            }
            Store::Db(pool) => {
                // Each statement bounded on its own: a large module takes many.
                let mut conn = bounded(async { Ok(pool.get_conn().await?) }).await?;
                let known: Option<u32> = bounded(async {
                    Ok(conn
                        .exec_first(
                            "SELECT chunks FROM dispatcher_modules WHERE hash = ?",
                            (hash,),
                        )
                        .await?)
                })
                .await?;
                if known.is_some() {
                    return Ok(());
                }
                let mut chunks = 0u32;
                for (seq, chunk) in wasm.chunks(CHUNK).enumerate() {
                    bounded(async {
                        Ok(conn
                            .exec_drop(
                                "REPLACE INTO dispatcher_module_chunks (hash, seq, data) VALUES (?, ?, ?)",
                                (hash, seq as u32, chunk),
                            )
                            .await?)
                    })
                    .await?;
                    chunks += 1;
                }
                // Written last: a module row means its chunks are complete.
                bounded(async {
                    Ok(conn.exec_drop(
                        "INSERT IGNORE INTO dispatcher_modules (hash, size, chunks, created_at) VALUES (?, ?, ?, NOW(6))",
                        (hash, wasm.len() as u64, chunks),
                    )
                    .await?)
                })
                .await
            }
        }
    }

    /// A stored module's bytes, checked against its hash.
    pub async fn module(&self, hash: &str) -> anyhow::Result<Vec<u8>> {
        let bytes = match self {
            Store::Memory(m, _) => m
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .modules
                .get(hash)
                .map(|m| m.to_vec())
                .ok_or_else(|| anyhow::anyhow!("module {hash} is not stored"))?,
            Store::Db(pool) => {
                // A chunk at a time, each bounded on its own: a large module takes many.
                let mut conn = bounded(async { Ok(pool.get_conn().await?) }).await?;
                let meta: Option<(u64, u32)> = bounded(async {
                    Ok(conn
                        .exec_first(
                            "SELECT size, chunks FROM dispatcher_modules WHERE hash = ?",
                            (hash,),
                        )
                        .await?)
                })
                .await?;
                let (size, chunks) =
                    meta.ok_or_else(|| anyhow::anyhow!("module {hash} is not stored"))?;
                let mut bytes = Vec::with_capacity(size as usize);
                for seq in 0..chunks {
                    let chunk: Option<Vec<u8>> = bounded(async {
                        Ok(conn
                            .exec_first(
                                "SELECT data FROM dispatcher_module_chunks WHERE hash = ? AND seq = ?",
                                (hash, seq),
                            )
                            .await?)
                    })
                    .await?;
                    let chunk = chunk.ok_or_else(|| {
                        anyhow::anyhow!(
                            "stored module {hash} is incomplete: chunk {seq} is missing"
                        )
                    })?;
                    bytes.extend_from_slice(&chunk);
                }
                bytes
            }
        };
        anyhow::ensure!(
            content_hash(&bytes) == hash,
            "stored module {hash} is damaged: its bytes do not match its hash"
        );
        Ok(bytes)
    }

    /// Starts a change: takes the catalog's lock, which orders changes across replicas.
    pub async fn begin_change(&self) -> anyhow::Result<CatalogTx<'_>> {
        match self {
            Store::Memory(_, c) => {
                let guard = c.lock().await;
                let draft = Box::new(guard.clone());
                Ok(CatalogTx::Memory { guard, draft })
            }
            Store::Db(pool) => {
                bounded(async {
                    // Read committed: once the lock is ours, every read sees what the replica
                    // that held it before committed.
                    let mut opts = TxOpts::default();
                    opts.with_isolation_level(IsolationLevel::ReadCommitted);
                    let mut tx = pool.start_transaction(opts).await?;
                    tx.query_drop(
                        "SELECT generation FROM dispatcher_catalog WHERE id = 1 FOR UPDATE",
                    )
                    .await?;
                    Ok(CatalogTx::Db(tx))
                })
                .await
            }
        }
    }
}

impl CatalogTx<'_> {
    /// What is deployed, as this change sees it.
    pub async fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        match self {
            CatalogTx::Memory { draft, .. } => Ok(draft.snapshot()),
            CatalogTx::Db(tx) => bounded(db_snapshot(tx)).await,
        }
    }

    /// One function's versions, as this change sees them.
    pub async fn history(&mut self, name: &str) -> anyhow::Result<History> {
        match self {
            CatalogTx::Memory { draft, .. } => Ok(draft.history(name)),
            CatalogTx::Db(tx) => bounded(db_history(tx, name)).await,
        }
    }

    /// Adds version n+1 of a function and makes it current. Returns n+1.
    pub async fn add_version(&mut self, v: &NewVersion<'_>) -> anyhow::Result<u32> {
        match self {
            CatalogTx::Memory { draft, .. } => {
                let versions = draft.versions.entry(v.name.to_string()).or_default();
                let version = versions.last().map_or(1, |r| r.version + 1);
                versions.push(Version {
                    name: v.name.to_string(),
                    version,
                    manifest: v.manifest.to_string(),
                    module_hash: v.module_hash.to_string(),
                    module_size: v.module_size,
                    source: v.source.to_string(),
                    deployed_by: v.deployed_by.to_string(),
                    deployed_at: text(v.deployed_at.naive_utc()),
                });
                draft.current.insert(v.name.to_string(), Some(version));
                draft.generation += 1;
                Ok(version)
            }
            CatalogTx::Db(tx) => bounded(async {
                let last: Option<Option<u32>> = tx
                    .exec_first(
                        "SELECT MAX(version) FROM dispatcher_versions WHERE name = ?",
                        (v.name,),
                    )
                    .await?;
                let version = last.flatten().unwrap_or(0) + 1;
                tx.exec_drop(
                    "INSERT INTO dispatcher_versions (name, version, manifest, module_hash, module_size, source, deployed_by, deployed_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        v.name,
                        version,
                        v.manifest,
                        v.module_hash,
                        v.module_size,
                        v.source,
                        v.deployed_by,
                        v.deployed_at.naive_utc(),
                    ),
                )
                .await?;
                db_point(tx, v.name, Some(version)).await?;
                Ok(version)
            }).await,
        }
    }

    /// Points a function at one of its versions, or at none (removed).
    pub async fn set_current(&mut self, name: &str, version: Option<u32>) -> anyhow::Result<()> {
        match self {
            CatalogTx::Memory { draft, .. } => {
                draft.current.insert(name.to_string(), version);
                draft.generation += 1;
                Ok(())
            }
            CatalogTx::Db(tx) => bounded(db_point(tx, name, version)).await,
        }
    }

    /// Makes the change visible to every replica; returns the new generation.
    pub async fn commit(self) -> anyhow::Result<u64> {
        match self {
            CatalogTx::Memory { mut guard, draft } => {
                *guard = *draft;
                Ok(guard.generation)
            }
            CatalogTx::Db(mut tx) => {
                bounded(async move {
                    let generation: Option<u64> = tx
                        .query_first("SELECT generation FROM dispatcher_catalog WHERE id = 1")
                        .await?;
                    tx.commit().await?;
                    Ok(generation.unwrap_or(0))
                })
                .await
            }
        }
    }
}

async fn db_point(
    tx: &mut Transaction<'static>,
    name: &str,
    version: Option<u32>,
) -> anyhow::Result<()> {
    tx.exec_drop(
        "INSERT INTO dispatcher_functions (name, current_version, updated_at) VALUES (?, ?, NOW(6))
         ON DUPLICATE KEY UPDATE current_version = VALUES(current_version), updated_at = VALUES(updated_at)",
        (name, version),
    )
    .await?;
    tx.query_drop("UPDATE dispatcher_catalog SET generation = generation + 1 WHERE id = 1")
        .await?;
    Ok(())
}
