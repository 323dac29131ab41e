//! The platform database's schema: versioned migrations, applied in order, each once, by one
//! replica at a time.

use mysql_async::prelude::*;
use mysql_async::Conn;

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
    // The deploy catalog (see `catalog.rs`). Modules are stored once per content hash, in
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
    // Each attempt's invocation id, as its log lines carry it.
    (
        9,
        "ALTER TABLE dispatcher_schedule_attempts ADD COLUMN IF NOT EXISTS request_id VARCHAR(128) NULL",
    ),
];

/// Applies the migrations `conn`'s database has not seen, under a lock so that replicas can
/// start together.
pub async fn migrate(conn: &mut Conn) -> anyhow::Result<()> {
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
    Ok(())
}
