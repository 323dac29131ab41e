//! Schedules in real time against the real MariaDB: replicas that share a platform database
//! run each fire time exactly once, retry failures, and take over runs of a dead replica.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::{manifest, sql, wait_until, wasm, Dispatcher, Options, PlatformDb};
use chrono::{DateTime, Utc};

fn job(dir: &Path, name: &str, schedule: &str, env: &str) {
    manifest(
        dir,
        name,
        &format!(
            "name = \"{name}\"\nwasm = \"{}\"\n{schedule}\n[env]\n{env}\n[limits]\ntimeout_ms = 4000\n",
            wasm("probe").display()
        ),
    );
}

/// `(at, attempt)` of every schedule event a replica's log shows.
fn events(d: &Dispatcher) -> Vec<(String, u32)> {
    d.log_text()
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("schedule-event ")?..];
            let at = rest
                .split("at=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .to_string();
            let attempt = rest
                .split("attempt=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((at, attempt))
        })
        .collect()
}

fn parse_at(at: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(at)
        .unwrap_or_else(|e| panic!("SCHEDULED_AT `{at}` is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

fn kill9(d: &Dispatcher) {
    Command::new("kill")
        .args(["-9", &d.child.id().to_string()])
        .status()
        .unwrap();
}

#[test]
fn two_replicas_run_every_second_exactly_once() {
    let db = PlatformDb::create("twice");
    let dir = tempfile::tempdir().unwrap();
    job(
        dir.path(),
        "ticker",
        "[[trigger.schedule]]\nname = \"tick\"\ncron = \"* * * * * *\"\noverlap = \"allow\"\npayload = '{\"kind\":\"tick\"}'",
        "",
    );
    let started = Utc::now();
    let a = Dispatcher::start_with(dir.path(), db.opts());
    let b = Dispatcher::start_with(dir.path(), db.opts());
    std::thread::sleep(Duration::from_secs(8));
    b.terminate();
    let b_stopped = Utc::now();
    std::thread::sleep(Duration::from_secs(3));
    a.terminate();
    std::thread::sleep(Duration::from_millis(500));

    let (ea, eb) = (events(&a), events(&b));
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for (at, attempt) in ea.iter().chain(eb.iter()) {
        assert_eq!(*attempt, 1, "{at} needed a retry");
        *seen.entry(at.clone()).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "fire times run twice: {twice:?}");
    assert!(
        seen.len() >= 9,
        "only {} fires in 11 s: {seen:?}",
        seen.len()
    );
    eprintln!("replica a ran {} fires, replica b {}", ea.len(), eb.len());

    // Every SCHEDULED_AT is a whole second in UTC, after start-up, and none is missing.
    let times: BTreeSet<DateTime<Utc>> = seen.keys().map(|s| parse_at(s)).collect();
    for (at, t) in seen.keys().zip(&times) {
        assert!(at.ends_with('Z') && t.timestamp_subsec_nanos() == 0, "{at}");
        assert!(
            *t >= started - chrono::TimeDelta::seconds(1),
            "{at} is before start-up"
        );
    }
    let first = *times.first().unwrap();
    let last = *times.last().unwrap();
    let expected = (last - first).num_seconds() + 1;
    assert_eq!(
        times.len() as i64,
        expected,
        "a fire was missed between {first} and {last}: {times:?}"
    );
    assert!(last > b_stopped, "replica a kept firing after b stopped");

    // The platform database agrees: one row per fire time.
    let rows = sql(&format!(
        "SELECT COUNT(*), COUNT(DISTINCT fire_time) FROM {}.dispatcher_schedule_fires",
        db.name
    ));
    let counts: Vec<u64> = rows
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(counts[0], counts[1]);
    assert!(counts[0] as usize >= times.len());
}

#[test]
fn failures_are_retried_and_every_attempt_is_in_the_history() {
    let db = PlatformDb::create("retry");
    let dir = tempfile::tempdir().unwrap();
    // Fails twice, then succeeds; and one that always fails.
    job(
        dir.path(),
        "flaky",
        "[[trigger.schedule]]\nname = \"every5\"\ncron = \"*/5 * * * * *\"\nretries = 2",
        "PROBE_FAIL_UNTIL_ATTEMPT = \"2\"",
    );
    job(
        dir.path(),
        "broken",
        "[[trigger.schedule]]\nname = \"every5\"\ncron = \"*/5 * * * * *\"\nretries = 1",
        "PROBE_FAIL_UNTIL_ATTEMPT = \"99\"",
    );
    let d = Dispatcher::start_with(dir.path(), db.opts());
    wait_until(Duration::from_secs(15), || {
        events(&d).iter().any(|(_, a)| *a == 3) && d.log_text().contains("status=succeeded")
    });
    std::thread::sleep(Duration::from_millis(500));
    drop(d);

    let out = Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .args(["runs", "--json", "--limit", "100"])
        .env("DISPATCHER_DB", db.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let attempts_of = |function: &str| -> BTreeMap<String, Vec<(u64, String)>> {
        let mut by_fire: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
        for r in runs.iter().filter(|r| r["function"] == function) {
            by_fire
                .entry(r["fire_time"].as_str().unwrap().to_string())
                .or_default()
                .push((
                    r["attempt"].as_u64().unwrap(),
                    r["status"].as_str().unwrap().to_string(),
                ));
        }
        for v in by_fire.values_mut() {
            v.sort();
        }
        by_fire
    };
    let flaky = attempts_of("flaky");
    let first = flaky.values().next().expect("the flaky job ran");
    assert_eq!(
        first,
        &vec![
            (1, "failed".to_string()),
            (2, "failed".to_string()),
            (3, "succeeded".to_string())
        ],
        "{flaky:?}"
    );
    let broken = attempts_of("broken");
    let first = broken.values().next().expect("the broken job ran");
    assert_eq!(
        first,
        &vec![(1, "failed".to_string()), (2, "failed".to_string())],
        "{broken:?}"
    );

    // The table view works too.
    let out = Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .args(["runs", "flaky"])
        .env("DISPATCHER_DB", db.url())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("FUNCTION"), "{table}");
    assert!(
        table.lines().skip(1).all(|l| l.starts_with("flaky")),
        "{table}"
    );
}

#[test]
fn a_run_cut_off_by_sigkill_is_retried_by_the_other_replica() {
    let db = PlatformDb::create("kill");
    let dir = tempfile::tempdir().unwrap();
    job(
        dir.path(),
        "slow",
        "[[trigger.schedule]]\nname = \"every10\"\ncron = \"*/10 * * * * *\"\noverlap = \"allow\"\nretries = 2",
        "PROBE_SLEEP_MS = \"3000\"",
    );
    let a = Dispatcher::start_with(dir.path(), db.opts());
    // Wait until replica a has started a run, then start b (it claims only later fires) and
    // kill a in the middle of that run.
    assert!(
        wait_until(Duration::from_secs(15), || !events(&a).is_empty()),
        "replica a never fired: {}",
        a.log_text()
    );
    let at = events(&a)[0].0.clone();
    let b = Dispatcher::start_with(dir.path(), db.opts());
    kill9(&a);
    // Lease = timeout (4 s) + 2 s; b looks every second.
    let retried = wait_until(Duration::from_secs(15), || {
        events(&b)
            .iter()
            .any(|(t, attempt)| *t == at && *attempt == 2)
    });
    assert!(retried, "b did not retry {at}:\n{}", b.log_text());
    assert!(b.wait_for_log(
        "taking over a run whose replica stopped",
        Duration::from_secs(1)
    ));
    let done = |b: &Dispatcher| {
        b.log_text()
            .contains(&format!("schedule-done at={at} attempt=2"))
    };
    assert!(
        wait_until(Duration::from_secs(6), || done(&b)),
        "{}",
        b.log_text()
    );
    std::thread::sleep(Duration::from_millis(500));
    let status = sql(&format!(
        "SELECT status, attempt FROM {}.dispatcher_schedule_fires WHERE fire_time = '{}'",
        db.name,
        parse_at(&at).naive_utc()
    ));
    assert_eq!(
        status.split_whitespace().collect::<Vec<_>>(),
        ["succeeded", "2"],
        "{status}"
    );
}

#[test]
fn schedules_command_lists_the_next_fire_times() {
    let dir = tempfile::tempdir().unwrap();
    job(
        dir.path(),
        "nightly",
        "[[trigger.schedule]]\nname = \"berlin\"\ncron = \"0 30 2 * * *\"\ntimezone = \"Europe/Berlin\"",
        "",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .args(["schedules", "--manifests"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("nightly / berlin"), "{text}");
    let times: Vec<&str> = text.lines().filter(|l| l.starts_with("    ")).collect();
    assert_eq!(times.len(), 5, "{text}");
    assert!(times.iter().all(|t| t.contains(" 02:30:00 CE")), "{text}");
}

#[test]
fn without_a_database_a_lone_replica_runs_schedules_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    job(
        dir.path(),
        "solo",
        "[[trigger.schedule]]\ncron = \"* * * * * *\"",
        "",
    );
    let d = Dispatcher::start_with(
        dir.path(),
        Options {
            env: vec![
                ("DISPATCHER_DB", String::new()),
                ("DATABASE_URL", String::new()),
            ],
            ..Options::default()
        },
    );
    assert!(d.wait_for_log("replicas would each run every fire", Duration::from_secs(5)));
    assert!(
        d.wait_for_log("status=succeeded", Duration::from_secs(5)),
        "{}",
        d.log_text()
    );
    let ev = events(&d);
    assert!(!ev.is_empty());
}

#[test]
fn overlap_skip_records_skipped_fires_and_catch_up_runs_the_latest_missed_fire() {
    let db = PlatformDb::create("skip");
    let dir = tempfile::tempdir().unwrap();
    // Runs take 2.5 s but fire every second: with overlap = "skip" (the default) the fires
    // that come while one runs are skipped, so runs never overlap.
    job(
        dir.path(),
        "long",
        "[[trigger.schedule]]\nname = \"busy\"\ncron = \"* * * * * *\"",
        "PROBE_SLEEP_MS = \"2500\"",
    );
    let d = Dispatcher::start_with(dir.path(), db.opts());
    std::thread::sleep(Duration::from_secs(6));
    drop(d);
    let rows = sql(&format!(
        "SELECT status, COUNT(*) FROM {}.dispatcher_schedule_fires GROUP BY status ORDER BY status",
        db.name
    ));
    let counts: BTreeMap<&str, u64> = rows
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(s, n)| (s, n.trim().parse().unwrap()))
        .collect();
    assert!(counts.get("skipped").copied().unwrap_or(0) >= 2, "{rows}");
    let ran =
        counts.get("succeeded").copied().unwrap_or(0) + counts.get("running").copied().unwrap_or(0);
    assert!(
        (1..=3).contains(&ran),
        "runs overlapped or none ran: {rows}"
    );

    // catch_up = "latest": the last fire time before start-up (every 10 s) runs at once, once.
    let dir = tempfile::tempdir().unwrap();
    job(
        dir.path(),
        "catcher",
        "[[trigger.schedule]]\nname = \"tens\"\ncron = \"*/10 * * * * *\"\ncatch_up = \"latest\"",
        "",
    );
    let before = Utc::now();
    let missed = before
        - chrono::TimeDelta::seconds(before.timestamp() % 10)
        - chrono::TimeDelta::nanoseconds(before.timestamp_subsec_nanos() as i64);
    let d = Dispatcher::start_with(dir.path(), db.opts());
    let want = missed.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    wait_until(Duration::from_secs(3), || {
        events(&d).iter().any(|(at, _)| *at == want)
    });
    // (If start-up straddled a fire time, the one it caught up is that later one.)
    let caught: Vec<_> = events(&d)
        .into_iter()
        .filter(|(at, _)| parse_at(at) <= Utc::now())
        .collect();
    assert!(
        !caught.is_empty(),
        "nothing was caught up: {}",
        d.log_text()
    );
    assert!(
        d.log_text().contains("catching up a missed fire"),
        "{}",
        d.log_text()
    );
    drop(d);
    // A restart does not run the same fire again.
    let d = Dispatcher::start_with(dir.path(), db.opts());
    std::thread::sleep(Duration::from_millis(800));
    let first = &caught[0].0;
    let again = events(&d).iter().filter(|(at, _)| at == first).count();
    assert_eq!(again, 0, "{first} ran again after a restart");
}
