//! The soak's verdict: start against end, each figure beside its bound, and the list of what
//! failed (empty when the soak passed).
//!
//! The bounds. Memory: the dispatcher keeps bounded buffers that fill as it runs (per function,
//! the last 1,000 log lines up to 1 MiB and the last 500 invocations; 14 functions here), and
//! its allocator keeps freed pages for reuse, so the end may sit a little above the start
//! without a leak; a leak of even 100 bytes per request would exceed [`RSS_SLACK_MIB`] over
//! the soak's requests. Descriptors other than database connections come back to where they
//! were (no client is connected at rest): [`FD_SLACK`]. Database connections are held by
//! pools that keep idle backends for a while, so their count may move by [`DB_SLACK`].

use super::churn::Tally;
use super::footprint::Footprint;
use super::history::Runs;
use super::load::Counts;
use crate::report::Row;

/// End RSS may exceed the start by this, or by [`RSS_SLACK_PCT`] of it if that is more.
const RSS_SLACK_MIB: f64 = 16.0;
const RSS_SLACK_PCT: f64 = 10.0;
/// Descriptors other than database connections.
const FD_SLACK: u64 = 2;
/// Database connections (the pools' idle backends).
const DB_SLACK: u64 = 4;
/// Threads (tokio's blocking pool lets idle threads go after 10 s).
const THREAD_SLACK: u64 = 8;

/// Warnings and errors the dispatcher logged.
#[derive(Debug, Default)]
pub struct LogProblems {
    pub errors: u64,
    pub warnings: u64,
    /// The first few of each, for the report.
    pub examples: Vec<String>,
}

impl LogProblems {
    /// Lines whose level (the second word) is `ERROR` or `WARN`.
    pub fn scan(log: &str) -> LogProblems {
        let mut p = LogProblems::default();
        for line in log.lines() {
            match line.split_whitespace().nth(1) {
                Some("ERROR") => p.errors += 1,
                Some("WARN") => p.warnings += 1,
                _ => continue,
            }
            if p.examples.len() < 5 {
                p.examples.push(line.chars().take(300).collect());
            }
        }
        p
    }
}

/// Everything the soak measured.
pub struct Verdict<'a> {
    pub seconds: u64,
    pub start: Footprint,
    pub end: Footprint,
    pub echo: &'a Counts,
    pub orders: &'a Counts,
    pub churn: &'a Tally,
    pub runs: &'a Runs,
    pub log: &'a LogProblems,
}

impl Verdict<'_> {
    /// The rows for the closing table, and what failed.
    pub fn judge(&self) -> (Vec<Row>, Vec<String>) {
        let mut rows = Vec::new();
        let mut failures = Vec::new();
        let mut check = |row: Row, ok: bool, failure: String| {
            rows.push(row);
            if !ok {
                failures.push(failure);
            }
        };
        let (s, e) = (self.start, self.end);

        let rss_bound = s.rss_mib() + RSS_SLACK_MIB.max(s.rss_mib() * RSS_SLACK_PCT / 100.0);
        let ok = e.rss_mib() <= rss_bound;
        check(
            soak_row(
                "RSS at rest, start -> end",
                format!(
                    "{:.1} -> {:.1} MiB ({:+.1})",
                    s.rss_mib(),
                    e.rss_mib(),
                    e.rss_mib() - s.rss_mib()
                ),
            )
            .target(
                format!("<= {rss_bound:.1} MiB (+{RSS_SLACK_MIB:.0} MiB or {RSS_SLACK_PCT:.0}%)"),
                Some(ok),
            ),
            ok,
            format!("RSS grew from {:.1} to {:.1} MiB", s.rss_mib(), e.rss_mib()),
        );
        let ok = e.non_db_fds() <= s.non_db_fds() + FD_SLACK;
        check(
            soak_row(
                "descriptors at rest (not database), start -> end",
                format!("{} -> {}", s.non_db_fds(), e.non_db_fds()),
            )
            .target(format!("<= start + {FD_SLACK}"), Some(ok)),
            ok,
            format!(
                "descriptors grew from {} to {}",
                s.non_db_fds(),
                e.non_db_fds()
            ),
        );
        let ok = e.db_sockets <= s.db_sockets + DB_SLACK;
        check(
            soak_row(
                "database connections at rest, start -> end",
                format!("{} -> {}", s.db_sockets, e.db_sockets),
            )
            .target(format!("<= start + {DB_SLACK}"), Some(ok)),
            ok,
            format!(
                "database connections grew from {} to {}",
                s.db_sockets, e.db_sockets
            ),
        );
        let ok = e.threads <= s.threads + THREAD_SLACK;
        check(
            soak_row(
                "threads at rest, start -> end",
                format!("{} -> {}", s.threads, e.threads),
            )
            .target(format!("<= start + {THREAD_SLACK}"), Some(ok)),
            ok,
            format!("threads grew from {} to {}", s.threads, e.threads),
        );

        for (label, c) in [("POST /echo", self.echo), ("orders mix", self.orders)] {
            let failed = c.non_2xx() + c.socket_error_total();
            let ok = failed == 0 && c.requests > 0;
            check(
                soak_row(
                    format!("{label}: requests, failed"),
                    format!("{}, {failed}", c.requests),
                )
                .target("0 failed", Some(ok)),
                ok,
                format!(
                    "{label}: {failed} of {} failed ({})",
                    c.requests,
                    c.describe()
                ),
            );
        }
        let t = self.churn;
        let ok = t.deploy_failures == 0 && t.rollback_failures == 0 && t.deploys > 0;
        check(
            soak_row(
                "deploys, rollbacks (failed)",
                format!(
                    "{} ({}), {} ({})",
                    t.deploys, t.deploy_failures, t.rollbacks, t.rollback_failures
                ),
            )
            .target("0 failed", Some(ok)),
            ok,
            format!(
                "{} deploys and {} rollbacks failed; first: {}",
                t.deploy_failures,
                t.rollback_failures,
                t.first_failure.as_deref().unwrap_or("-")
            ),
        );
        let r = self.runs;
        let ok = r.unsuccessful() == 0 && r.duplicates == 0 && r.missing == 0 && r.total() > 0;
        check(
            soak_row(
                "scheduled runs (history), not succeeded; probe fires duplicated / missing",
                format!(
                    "{}, {}; {} / {}",
                    r.total(),
                    r.unsuccessful(),
                    r.duplicates,
                    r.missing
                ),
            )
            .target("0; 0 / 0", Some(ok)),
            ok,
            format!(
                "schedules: {} runs not succeeded, {} fire times run twice, {} never (first missing: {:?})",
                r.unsuccessful(),
                r.duplicates,
                r.missing,
                r.missing_examples
            ),
        );
        let ok = self.log.errors == 0;
        check(
            soak_row(
                "ERROR / WARN lines in the dispatcher's log",
                format!("{} / {}", self.log.errors, self.log.warnings),
            )
            .target("0 errors", Some(ok)),
            ok,
            format!(
                "{} ERROR lines in the log (first: {})",
                self.log.errors,
                self.log.examples.first().map_or("-", String::as_str)
            ),
        );
        (rows, failures)
    }

    /// The details behind the rows.
    pub fn print(&self, failures: &[String]) {
        println!(
            "  {} s: echo {} ({}), max {:.0} ms; orders {} ({}), max {:.0} ms",
            self.seconds,
            self.echo.requests,
            self.echo.describe(),
            self.echo.max_ms,
            self.orders.requests,
            self.orders.describe(),
            self.orders.max_ms
        );
        println!(
            "  deploys {} ({} failed, slowest {:.0} ms), rollbacks {} ({} failed)",
            self.churn.deploys,
            self.churn.deploy_failures,
            self.churn.slowest_deploy.as_secs_f64() * 1e3,
            self.churn.rollbacks,
            self.churn.rollback_failures
        );
        let by_status: Vec<String> = self
            .runs
            .attempts
            .iter()
            .map(|((f, s), n)| format!("{f} {s} {n}"))
            .collect();
        println!(
            "  scheduled attempts in the soak's window: {} (retries {}); probe: {} fire times started, {} twice, {} never",
            by_status.join(", "),
            self.runs.retries,
            self.runs.probe_fires,
            self.runs.duplicates,
            self.runs.missing
        );
        for line in &self.log.examples {
            println!("    log: {line}");
        }
        for f in failures {
            println!("    FAILED: {f}");
        }
    }
}

fn soak_row(measure: impl Into<String>, value: String) -> Row {
    Row::new(format!("soak: {}", measure.into()), value, "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_errors_and_warnings_by_level() {
        let log = "2026-12-03T15:00:00.000Z  INFO dispatcher: listening\n\
                   2026-12-03T15:00:01.000Z  WARN dispatcher: slow\n\
                   2026-12-03T15:00:02.000Z ERROR dispatcher: broken\n\
                   a guest line mentioning ERROR\n";
        let p = LogProblems::scan(log);
        assert_eq!((p.errors, p.warnings, p.examples.len()), (1, 1, 2));
    }

    #[test]
    fn growth_past_a_bound_fails() {
        let at = |rss_mib: u64, fds: u64| Footprint {
            rss_kib: rss_mib * 1024,
            threads: 10,
            fds,
            db_sockets: 3,
            other_sockets: 2,
        };
        let ok = Counts {
            requests: 10,
            ..Counts::default()
        };
        let tally = Tally {
            deploys: 1,
            rollbacks: 1,
            ..Tally::default()
        };
        let runs = Runs {
            attempts: [(("probe".into(), "succeeded".into()), 5)].into(),
            ..Runs::default()
        };
        let log = LogProblems::default();
        let verdict = |end: Footprint| {
            Verdict {
                seconds: 60,
                start: at(100, 20),
                end,
                echo: &ok,
                orders: &ok,
                churn: &tally,
                runs: &runs,
                log: &log,
            }
            .judge()
            .1
        };
        assert!(verdict(at(115, 22)).is_empty());
        assert_eq!(verdict(at(117, 20)).len(), 1);
        assert_eq!(verdict(at(100, 23)).len(), 1);
    }
}
