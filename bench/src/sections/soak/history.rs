//! Schedule runs during the soak, counted twice: from the platform's own history
//! (`dispatcher_schedule_fires` and `_attempts`, by function and status), and from what the
//! guest saw (`probe` logs `schedule-event at=<fire time> attempt=N` once per start), which is
//! where a fire time run twice or never would show.

use std::collections::BTreeMap;

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use mysql_async::prelude::Queryable;

/// What the history and the guest's log say about the fire times in a window.
#[derive(Debug, Default)]
pub struct Runs {
    /// Attempts in the history, by (function, status).
    pub attempts: BTreeMap<(String, String), u64>,
    /// Attempts after the first (retries), any function.
    pub retries: u64,
    /// Distinct fire times the probe's log shows started.
    pub probe_fires: u64,
    /// First attempts beyond one per fire time.
    pub duplicates: u64,
    /// Fire times of the window with no start in the log.
    pub missing: u64,
    /// Up to five of the fire times missing, for the report.
    pub missing_examples: Vec<DateTime<Utc>>,
}

impl Runs {
    /// Attempts that did not succeed (failed, lost, still running after the soak), any function.
    pub fn unsuccessful(&self) -> u64 {
        self.attempts
            .iter()
            .filter(|((_, status), _)| status != "succeeded")
            .map(|(_, n)| n)
            .sum()
    }

    pub fn total(&self) -> u64 {
        self.attempts.values().sum()
    }
}

/// The runs with fire times in `[first, end)`, from the platform database `db` and the
/// dispatcher's `log`.
pub fn load(db: &str, log: &str, first: DateTime<Utc>, end: DateTime<Utc>) -> anyhow::Result<Runs> {
    let mut runs = count_log(log, first, end);
    let rows: Vec<(String, String, u32, u64)> = with_connection(|mut conn| async move {
        let rows = conn
            .exec(
                format!(
                    "SELECT f.function_name, a.status, a.attempt, COUNT(*) \
                     FROM `{db}`.dispatcher_schedule_attempts a \
                     JOIN `{db}`.dispatcher_schedule_fires f ON f.id = a.fire_id \
                     WHERE f.fire_time >= ? AND f.fire_time < ? \
                     GROUP BY f.function_name, a.status, a.attempt"
                ),
                (first.naive_utc(), end.naive_utc()),
            )
            .await?;
        conn.disconnect().await?;
        Ok(rows)
    })
    .context("cannot read the schedule history")?;
    for (function, status, attempt, n) in rows {
        *runs.attempts.entry((function, status)).or_default() += n;
        if attempt > 1 {
            runs.retries += n;
        }
    }
    Ok(runs)
}

/// Drops the soak's databases.
pub fn drop_databases(names: &[&str]) -> anyhow::Result<()> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    with_connection(|mut conn| async move {
        for name in names {
            conn.query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
                .await?;
        }
        conn.disconnect().await?;
        Ok(())
    })
}

/// Runs `f` on a new root connection to the local MariaDB.
fn with_connection<T, F, Fut>(f: F) -> anyhow::Result<T>
where
    F: FnOnce(mysql_async::Conn) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")?;
    rt.block_on(async {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(3306)
            .user(Some("root"))
            .prefer_socket(false);
        let conn = mysql_async::Conn::new(opts)
            .await
            .context("cannot connect to MariaDB at 127.0.0.1:3306 as root")?;
        f(conn).await
    })
}

/// Counts the probe's starts per fire time in `[first, end)` from the dispatcher's log.
fn count_log(log: &str, first: DateTime<Utc>, end: DateTime<Utc>) -> Runs {
    let mut starts: BTreeMap<DateTime<Utc>, u64> = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains(" schedule-event ")) {
        let field = |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(name));
        let Some(at) = field("at=").and_then(|at| DateTime::parse_from_rfc3339(at).ok()) else {
            continue;
        };
        let at = at.to_utc();
        if at < first || at >= end || field("attempt=") != Some("1") {
            continue;
        }
        *starts.entry(at).or_default() += 1;
    }
    let mut runs = Runs {
        probe_fires: starts.len() as u64,
        duplicates: starts.values().map(|n| n - 1).sum(),
        ..Runs::default()
    };
    let mut at = first;
    while at < end {
        if !starts.contains_key(&at) {
            runs.missing += 1;
            if runs.missing_examples.len() < 5 {
                runs.missing_examples.push(at);
            }
        }
        at += TimeDelta::seconds(1);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn counts_duplicates_and_missing_fire_times() {
        let line = |at: &str, attempt: u32| {
            format!("2026-01-01T00:00:09.000Z  INFO guest: schedule-event name=default at={at} attempt={attempt} method=POST payload=\n")
        };
        let log = line("2026-01-01T00:00:00Z", 1)
            + &line("2026-01-01T00:00:01Z", 1)
            + &line("2026-01-01T00:00:01Z", 1)
            + &line("2026-01-01T00:00:01Z", 2)
            + &line("2026-01-01T00:00:09Z", 1)
            + "2026-01-01T00:00:02.000Z  INFO request: GET /orders 200\n";
        let runs = count_log(&log, t("2026-01-01T00:00:00Z"), t("2026-01-01T00:00:04Z"));
        assert_eq!(runs.probe_fires, 2);
        assert_eq!(runs.duplicates, 1);
        assert_eq!(runs.missing, 2);
        assert_eq!(
            runs.missing_examples,
            [t("2026-01-01T00:00:02Z"), t("2026-01-01T00:00:03Z")]
        );
    }
}
