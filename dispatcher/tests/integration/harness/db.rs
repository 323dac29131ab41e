//! The MariaDB at 127.0.0.1:3306: the `mariadb` client for SQL, and databases of a test's own.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::Options;

/// Runs SQL with the `mariadb` client as root over TCP at 127.0.0.1:3306 and returns its
/// output (tab-separated, no column names).
pub fn sql(statements: &str) -> String {
    try_sql(statements).unwrap_or_else(|e| panic!("{statements}: {e}"))
}

/// Like [`sql`], but a refused statement is returned as its error text, not a panic.
pub fn try_sql(statements: &str) -> Result<String, String> {
    let out = Command::new("mariadb")
        .args([
            "-h127.0.0.1",
            "-P3306",
            "-uroot",
            "-N",
            "-B",
            "-e",
            statements,
        ])
        .output()
        .expect("the mariadb client (scripts/setup.sh installs it)");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// A database name no other test of this run has: `<prefix>_<tag>_<pid>_<n>`. The tests of
/// every area share one process, so the pid alone no longer tells them apart.
pub fn unique_name(prefix: &str, tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{tag}_{}_{n}", std::process::id())
}

/// A platform database of the test's own, dropped afterwards.
pub struct PlatformDb {
    pub name: String,
}

impl PlatformDb {
    pub fn create(tag: &str) -> PlatformDb {
        let name = unique_name("p", tag);
        sql(&format!(
            "DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"
        ));
        PlatformDb { name }
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:3306/{}", self.name)
    }

    pub fn opts(&self) -> Options<'static> {
        Options {
            env: vec![("DISPATCHER_DB", self.url())],
            ..Options::default()
        }
    }
}

impl Drop for PlatformDb {
    fn drop(&mut self) {
        sql(&format!("DROP DATABASE IF EXISTS {}", self.name));
    }
}
