//! Schedules: how late a cron fire starts, from its fire time to the guest's first log line,
//! with one replica and with two replicas sharing a database (which must still run each fire
//! exactly once). `probe.wasm` fires every second; as a schedule job it logs
//! `schedule-event name=.. at=<SCHEDULED_AT> attempt=N ...`, and the dispatcher prefixes that
//! line with its own RFC 3339 timestamp: lateness = that timestamp − `at`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use super::orders::{recreate_database, wasm};
use super::Section;
use crate::artifacts::Artifacts;
use crate::process::ChildGuard;
use crate::report::Row;
use crate::servers;

pub const SECTION: Section = Section {
    name: "schedule",
    title: "5. schedule start lateness: fire time to guest start (cron every second, probe.wasm)",
    run,
};

/// Fires measured per configuration (one per second).
const FIRES: i64 = 60;
/// Seconds between the last replica being ready and the first fire measured.
const SETTLE_SECS: i64 = 2;
/// How long after the last fire time its log line may still be coming.
const GRACE: Duration = Duration::from_millis(1500);
/// Target: each fire starts within this long of its fire time.
const TARGET_MS: f64 = 100.0;

/// Replicas sharing one platform database.
struct Config {
    label: &'static str,
    database: &'static str,
    replicas: usize,
}

const CONFIGS: [Config; 2] = [
    Config {
        label: "1 replica",
        database: "bench_sched_1",
        replicas: 1,
    },
    Config {
        label: "2 replicas",
        database: "bench_sched_2",
        replicas: 2,
    },
];

/// One `schedule-event` line.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    /// When the dispatcher logged it.
    logged: DateTime<Utc>,
    /// The fire time (`SCHEDULED_AT`).
    at: DateTime<Utc>,
    attempt: u32,
}

/// What one configuration's replicas logged inside the window.
struct Outcome {
    /// Lateness of every first attempt, in ms, ascending.
    lateness_ms: Vec<f64>,
    /// Fires started more than once: first attempts beyond one per fire time, across replicas.
    duplicates: usize,
    /// Fire times in the window with no event at all.
    missing: usize,
    /// Events that were retries (attempt > 1): the probe never fails, so there should be none.
    retries: usize,
    /// First attempts run by each replica.
    per_replica: Vec<usize>,
    /// The latest start: its fire time and lateness in ms.
    slowest: Option<(DateTime<Utc>, f64)>,
    warnings: usize,
    first_warning: Option<String>,
}

fn run(artifacts: &Artifacts) -> anyhow::Result<Vec<Row>> {
    let probe = wasm(artifacts, "probe")?;
    for config in &CONFIGS {
        recreate_database(config.database)?;
    }
    let tmp = tempfile::Builder::new()
        .prefix("dispatcher-bench-schedule-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let manifests = tmp.path().join("manifests");
    std::fs::create_dir_all(&manifests).context("cannot create the manifests folder")?;
    write_probe_manifest(&manifests, &probe)?;

    // Every replica of both configurations runs at once, to keep the section to about a minute.
    let any_port: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut replicas: Vec<Vec<(ChildGuard, PathBuf)>> = Vec::new();
    for config in &CONFIGS {
        let mut these = Vec::new();
        for i in 0..config.replicas {
            let name = format!("{}-{i}", config.database);
            let log = tmp.path().join(format!("{name}.log"));
            let mut cmd = servers::dispatcher_command(
                artifacts,
                &manifests,
                any_port,
                &tmp.path().join(format!("cache-{name}")),
            );
            cmd.env(
                "DISPATCHER_DB",
                format!("mysql://root@127.0.0.1:3306/{}", config.database),
            )
            .env_remove("DATABASE_URL");
            let (child, _addr) =
                servers::start(&name, &mut cmd, servers::DISPATCHER_READY, Some(&log))?;
            these.push((child, log));
        }
        replicas.push(these);
    }

    let first = Utc::now()
        .duration_trunc(TimeDelta::seconds(1))
        .context("cannot round the clock")?
        + TimeDelta::seconds(SETTLE_SECS);
    let end = first + TimeDelta::seconds(FIRES);
    let wait = (end - Utc::now()).to_std().unwrap_or_default() + GRACE;
    println!(
        "  {} replicas on {} databases; measuring the {FIRES} fires from {} to {} ({:.0} s)",
        CONFIGS.iter().map(|c| c.replicas).sum::<usize>(),
        CONFIGS.len(),
        first.format("%H:%M:%S"),
        (end - TimeDelta::seconds(1)).format("%H:%M:%S"),
        wait.as_secs_f64()
    );
    std::thread::sleep(wait);

    let mut rows = Vec::new();
    let mut total_duplicates = 0;
    let mut total_missing = 0;
    for (config, these) in CONFIGS.iter().zip(&mut replicas) {
        let mut logs = Vec::new();
        for (child, log) in these.iter_mut() {
            child.ensure_running()?;
            logs.push(
                std::fs::read_to_string(&*log)
                    .with_context(|| format!("cannot read {}", log.display()))?,
            );
        }
        let outcome = evaluate(&logs, first, end);
        print_outcome(config, &outcome);
        total_duplicates += outcome.duplicates;
        total_missing += outcome.missing;
        let Some(p50) = percentile(&outcome.lateness_ms, 50.0) else {
            anyhow::bail!(
                "{}: no schedule-event lines between {first} and {end}{}",
                config.label,
                outcome
                    .first_warning
                    .as_deref()
                    .map_or(String::new(), |w| format!(" (first warning: {w})"))
            );
        };
        let p99 = percentile(&outcome.lateness_ms, 99.0).unwrap_or(p50);
        let max = outcome.lateness_ms.last().copied().unwrap_or(p50);
        rows.push(
            Row::new(
                format!("schedule start lateness p50 / p99 / max, {}", config.label),
                format!("{p50:.1} / {p99:.1} / {max:.1} ms"),
                "-".into(),
            )
            .target(format!("≤ {TARGET_MS:.0} ms"), Some(max <= TARGET_MS)),
        );
    }
    rows.push(
        Row::new(
            format!(
                "schedule fires duplicated / missing ({} × {FIRES})",
                CONFIGS.len()
            ),
            format!("{total_duplicates} / {total_missing}"),
            "-".into(),
        )
        .target("0 / 0", Some(total_duplicates == 0 && total_missing == 0)),
    );
    Ok(rows)
}

fn print_outcome(config: &Config, o: &Outcome) {
    let fmt = |p: f64| percentile(&o.lateness_ms, p).map_or("-".into(), |v| format!("{v:.1}"));
    let split: Vec<String> = o.per_replica.iter().map(usize::to_string).collect();
    println!(
        "  {:<10} {} fires started: lateness p50 {} ms  p99 {} ms  max {} ms  min {} ms; duplicates {}, missing {}, retries {}; per replica {}",
        config.label,
        o.lateness_ms.len(),
        fmt(50.0),
        fmt(99.0),
        o.lateness_ms.last().map_or("-".into(), |v| format!("{v:.1}")),
        o.lateness_ms.first().map_or("-".into(), |v| format!("{v:.1}")),
        o.duplicates,
        o.missing,
        o.retries,
        split.join(" + ")
    );
    if o.duplicates > 0 {
        println!("    WARNING: {} fire(s) ran more than once", o.duplicates);
    }
    if o.missing > 0 {
        println!("    WARNING: {} fire time(s) never started", o.missing);
    }
    if let Some((at, late)) = o.slowest {
        let over: Vec<String> = o
            .lateness_ms
            .iter()
            .filter(|&&v| v >= 20.0)
            .map(|v| format!("{v:.0}"))
            .collect();
        println!(
            "    slowest: the fire at {} ({late:.1} ms); starts ≥ 20 ms: {}",
            at.format("%H:%M:%S"),
            if over.is_empty() {
                "none".into()
            } else {
                format!("{} ms", over.join(", "))
            }
        );
    }
    if o.lateness_ms.first().is_some_and(|&v| v < 0.0) {
        println!("    WARNING: a fire started before its fire time");
    }
    if let Some(&max) = o.lateness_ms.last() {
        if max > TARGET_MS {
            println!("    WARNING: the latest start was {max:.1} ms after its fire time");
        }
    }
    if o.warnings > 0 {
        println!(
            "    {} warnings/errors in the logs (first: {})",
            o.warnings,
            o.first_warning.as_deref().unwrap_or("")
        );
    }
}

/// The events of every replica's log with fire times in `[first, end)`, checked.
fn evaluate(logs: &[String], first: DateTime<Utc>, end: DateTime<Utc>) -> Outcome {
    let mut by_fire: BTreeMap<DateTime<Utc>, usize> = BTreeMap::new();
    let mut lateness_ms = Vec::new();
    let mut retries = 0;
    let mut per_replica = Vec::new();
    let mut slowest: Option<(DateTime<Utc>, f64)> = None;
    let mut warnings = 0;
    let mut first_warning = None;
    for log in logs {
        let mut firsts = 0;
        for line in log.lines() {
            let level = line.split_whitespace().nth(1).unwrap_or("");
            if level == "WARN" || level == "ERROR" {
                warnings += 1;
                first_warning.get_or_insert_with(|| line.to_string());
            }
            let Some(event) = parse_event(line) else {
                continue;
            };
            if event.at < first || event.at >= end {
                continue;
            }
            let starts = by_fire.entry(event.at).or_default();
            if event.attempt > 1 {
                retries += 1;
                continue;
            }
            *starts += 1;
            firsts += 1;
            let late = (event.logged - event.at)
                .num_microseconds()
                .unwrap_or(i64::MAX) as f64
                / 1e3;
            if slowest.is_none_or(|(_, worst)| late > worst) {
                slowest = Some((event.at, late));
            }
            lateness_ms.push(late);
        }
        per_replica.push(firsts);
    }
    lateness_ms.sort_by(f64::total_cmp);
    let expected = (end - first).num_seconds().max(0) as usize;
    Outcome {
        duplicates: by_fire.values().map(|&n| n.saturating_sub(1)).sum(),
        missing: expected.saturating_sub(by_fire.len()),
        lateness_ms,
        retries,
        per_replica,
        slowest,
        warnings,
        first_warning,
    }
}

/// `2026-11-26T01:52:01.001312Z  INFO guest: schedule-event name=default
/// at=2026-11-26T01:52:01Z attempt=1 ...`.
fn parse_event(line: &str) -> Option<Event> {
    let mut words = line.split_whitespace();
    let logged = words.next()?;
    if !line.contains(" schedule-event ") {
        return None;
    }
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_string)
    };
    Some(Event {
        logged: DateTime::parse_from_rfc3339(logged).ok()?.to_utc(),
        at: DateTime::parse_from_rfc3339(&field("at=")?).ok()?.to_utc(),
        attempt: field("attempt=")?.parse().ok()?,
    })
}

/// The nearest-rank percentile `p` of ascending `sorted` values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `probe` on a schedule that fires every second, runs overlapping allowed (so none is
/// skipped), no HTTP route.
pub(super) fn probe_manifest(wasm: &Path) -> String {
    // `{:?}` quotes a string as a TOML basic string would (escapes included).
    format!(
        "name = \"probe\"\n\
         wasm = {:?}\n\
         \n\
         [[trigger.schedule]]\n\
         cron = \"* * * * * *\"\n\
         overlap = \"allow\"\n",
        wasm.to_string_lossy()
    )
}

fn write_probe_manifest(dir: &Path, wasm: &Path) -> anyhow::Result<()> {
    let file = dir.join("probe.toml");
    std::fs::write(&file, probe_manifest(wasm))
        .with_context(|| format!("cannot write {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn parses_an_event_line() {
        let line = "2026-11-26T01:52:01.001312Z  INFO guest: schedule-event name=default \
                    at=2026-11-26T01:52:01Z attempt=1 method=POST payload= function=probe";
        let e = parse_event(line).unwrap();
        assert_eq!(e.at, t("2026-11-26T01:52:01Z"));
        assert_eq!(e.attempt, 1);
        assert_eq!((e.logged - e.at).num_microseconds(), Some(1312));
        assert!(parse_event("2026-11-26T01:52:01.001312Z  INFO guest: schedule-done").is_none());
    }

    #[test]
    fn counts_duplicates_missing_and_lateness() {
        let line = |logged: &str, at: &str| {
            format!("{logged}  INFO guest: schedule-event name=default at={at} attempt=1\n")
        };
        let a = line("2026-01-01T00:00:00.002Z", "2026-01-01T00:00:00Z")
            + &line("2026-01-01T00:00:01.004Z", "2026-01-01T00:00:01Z")
            + &line("2026-01-01T00:00:05.000Z", "2026-01-01T00:00:05Z");
        let b = line("2026-01-01T00:00:01.003Z", "2026-01-01T00:00:01Z");
        let o = evaluate(
            &[a, b],
            t("2026-01-01T00:00:00Z"),
            t("2026-01-01T00:00:03Z"),
        );
        assert_eq!(o.duplicates, 1);
        assert_eq!(o.missing, 1);
        assert_eq!(o.per_replica, [2, 1]);
        assert_eq!(o.lateness_ms, [2.0, 3.0, 4.0]);
        assert_eq!(o.slowest, Some((t("2026-01-01T00:00:01Z"), 4.0)));
    }
}
