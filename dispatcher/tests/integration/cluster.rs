//! Replicas behind a real load balancer: three dispatcher processes on one platform database
//! behind a real HAProxy, all client traffic through it, and the platform changed under
//! continuous load: a deploy to one replica, a rolling restart, a replica killed, a fourth
//! one added with a cold compile cache. One cluster, the scenarios in sequence, to keep the
//! time down; the every-second schedule deployed first is checked over all of them at the end.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;

use crate::harness::{
    bare_command, free_port, manifest, sql, wait_until, wasm, Dispatcher, HaProxy, Load,
    LoadResult, Options, PlatformDb,
};

const TOKEN: &str = "test-admin-token";
/// HAProxy's server names, one per replica; the fourth starts later.
const NAMES: [&str; 4] = ["r0", "r1", "r2", "r3"];
/// What the POST clients send to `/echo` and must get back.
const BODY: &str = "through the balancer";
/// Client connections of each load: echo POSTs and GETs of `/noop`.
const POSTERS: usize = 3;
const GETTERS: usize = 2;

/// A replica on `port`, on the test's database with the admin API on. After SIGTERM it keeps
/// serving for 1 s while its health says draining: HAProxy, checking every 200 ms and taking
/// a server out after 2 failed checks, has stopped sending it requests by then.
fn replica(db: &PlatformDb, port: u16, cache: Option<&Path>) -> Dispatcher {
    Dispatcher::start_bare(Options {
        cache_dir: cache,
        args: vec!["--drain-delay", "1"],
        listen: Some(format!("127.0.0.1:{port}")),
        env: vec![
            ("DISPATCHER_DB", db.url()),
            ("DISPATCHER_ADMIN_TOKEN", TOKEN.to_string()),
        ],
        ..Options::default()
    })
}

/// Whether `url` answers `want` (and, for 200, echoes `BODY`), asked with a short timeout.
async fn answers(http: &reqwest::Client, method: Method, url: &str, want: u16) -> bool {
    let body = if method == Method::POST { BODY } else { "" };
    match http.request(method, url).body(body).send().await {
        Ok(r) if r.status().as_u16() == want => {
            want != 200 || r.text().await.is_ok_and(|t| t == BODY)
        }
        _ => false,
    }
}

/// Whether `base` serves both functions: POST /echo echoes, GET /noop is 204.
async fn serves_both(http: &reqwest::Client, base: &str) -> bool {
    answers(http, Method::POST, &format!("{base}/echo"), 200).await
        && answers(http, Method::GET, &format!("{base}/noop"), 204).await
}

/// The echo and GET loads through the balancer.
fn loads(lb: &HaProxy) -> (Load, Load) {
    (
        Load::start(lb.url("/echo"), BODY, POSTERS),
        Load::start_method(Method::GET, lb.url("/noop"), "", GETTERS),
    )
}

/// Requests HAProxy has retried and redispatched so far, over the whole backend.
fn retries(lb: &HaProxy) -> (u64, u64) {
    let b = lb.server("BACKEND");
    (b.retries, b.redispatches)
}

/// `", haproxy retried N (M redispatched)"` since `before`.
fn retried_since(lb: &HaProxy, before: (u64, u64)) -> String {
    let now = retries(lb);
    format!(
        "haproxy retried {} ({} redispatched)",
        now.0 - before.0,
        now.1 - before.1
    )
}

/// The end of a dispatcher's log, for failure messages.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The database's clock, as microseconds since the epoch in UTC (fire times are UTC).
fn db_now_us() -> i64 {
    sql("SELECT TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6))")
        .trim()
        .parse()
        .unwrap()
}

/// Asserts that the two loads lost nothing and got the right answers.
fn assert_no_loss(what: &str, post: &LoadResult, get: &LoadResult, diagnostics: &str) {
    assert!(
        post.failures.is_empty() && get.failures.is_empty(),
        "{what}: failed requests: POST {:?} GET {:?}\n{diagnostics}",
        &post.failures[..post.failures.len().min(5)],
        &get.failures[..get.failures.len().min(5)],
    );
    assert_right_answers(what, post, get);
}

fn assert_right_answers(what: &str, post: &LoadResult, get: &LoadResult) {
    assert_eq!(post.bodies, vec![BODY.to_string()], "{what}: POST answers");
    assert_eq!(get.bodies, vec![String::new()], "{what}: GET answers");
    assert!(
        post.ok > 200 && get.ok > 100,
        "{what}: too little load to mean anything: {} POST, {} GET",
        post.ok,
        get.ok
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_behind_haproxy_deploy_restart_lose_one_and_grow_without_losing_requests() {
    let test_started = Instant::now();
    let db = PlatformDb::create("cluster");
    let ports: Vec<u16> = NAMES.iter().map(|_| free_port()).collect();
    let mut replicas: Vec<Option<Dispatcher>> = Vec::new();
    for &port in &ports[..3] {
        replicas.push(Some(replica(&db, port, None)));
    }
    // The fourth server is in the config from the start, down until its process runs.
    let servers: Vec<(&str, u16)> = NAMES.iter().copied().zip(ports.iter().copied()).collect();
    let lb = HaProxy::start(&servers);
    for name in &NAMES[..3] {
        assert!(
            lb.wait_state(name, true, Duration::from_secs(10)).is_some(),
            "haproxy never saw {name} up: {:?}\n{}",
            lb.stats(),
            lb.log_text()
        );
    }
    assert!(
        lb.wait_state("r3", false, Duration::from_secs(5)).is_some(),
        "r3 has no process yet but haproxy holds it {}",
        lb.server("r3").status
    );
    // Logs of replicas that were stopped, for failure messages.
    let mut retired: Vec<String> = Vec::new();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();

    // 1. A deploy through one replica is served by all three, and through the balancer,
    //    within 2 s. The noop function also carries an every-second schedule.
    let dir = tempfile::tempdir().unwrap();
    manifest(
        dir.path(),
        "echo",
        &format!(
            "name = \"echo\"\nwasm = \"{}\"\n[trigger.http]\npath = \"/echo\"\nmethods = [\"POST\"]\n",
            wasm("echo").display()
        ),
    );
    manifest(
        dir.path(),
        "noop",
        &format!(
            "name = \"noop\"\nwasm = \"{}\"\n[trigger.http]\npath = \"/noop\"\nmethods = [\"GET\"]\n\
             [[trigger.schedule]]\nname = \"tick\"\ncron = \"* * * * * *\"\n\
             [limits]\ntimeout_ms = 1000\n",
            wasm("noop").display()
        ),
    );
    let r0 = replicas[0].as_ref().unwrap();
    let out = bare_command()
        .args(["deploy"])
        .arg(dir.path().join("echo.toml"))
        .arg(dir.path().join("noop.toml"))
        .env("DISPATCHER_SERVER", &r0.url)
        .env("DISPATCHER_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deploy through r0: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deployed = Instant::now();
    let mut targets: Vec<(String, String)> = replicas
        .iter()
        .zip(NAMES)
        .map(|(d, n)| (n.to_string(), d.as_ref().unwrap().url.clone()))
        .collect();
    targets.push(("haproxy".into(), lb.url("")));
    let mut converged: Vec<(String, Duration)> = Vec::new();
    while !targets.is_empty() && deployed.elapsed() < Duration::from_secs(10) {
        let mut pending = Vec::new();
        for (name, base) in targets {
            // Through the balancer: two rounds over the three servers.
            let rounds = if name == "haproxy" { 6 } else { 1 };
            let mut ok = true;
            for _ in 0..rounds {
                ok = ok && serves_both(&http, &base).await;
            }
            if ok {
                converged.push((name, deployed.elapsed()));
            } else {
                pending.push((name, base));
            }
        }
        targets = pending;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (name, took) in &converged {
        println!(
            "cluster: the deploy through r0 was served by {name} after {:.3} s",
            took.as_secs_f64()
        );
    }
    assert!(
        targets.is_empty(),
        "never served by {targets:?} (10 s after the deploy)"
    );
    let converge = converged.iter().map(|(_, t)| *t).max().unwrap();
    println!(
        "cluster: seconds to converge (all three replicas and haproxy): {:.3}",
        converge.as_secs_f64()
    );
    assert!(
        converge < Duration::from_secs(2),
        "the deploy took {converge:?} to reach every replica"
    );

    // 2. A rolling restart under load loses no request: each replica in turn gets SIGTERM,
    //    is taken out by HAProxy, exits, starts again on its port, and is back in.
    // The every-second schedule has started firing first, so that its history spans it.
    let fire_count = || -> u64 {
        sql(&format!(
            "SELECT COUNT(*) FROM {}.dispatcher_schedule_fires WHERE function_name = 'noop'",
            db.name
        ))
        .trim()
        .parse()
        .unwrap()
    };
    assert!(
        wait_until(Duration::from_secs(5), || fire_count() >= 2),
        "the every-second schedule did not fire"
    );
    let retries_before = retries(&lb);
    let restarts_at_db = db_now_us();
    let (post, get) = loads(&lb);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, name) in NAMES[..3].iter().enumerate() {
        let mut old = replicas[i].take().unwrap();
        let t = Instant::now();
        old.terminate();
        // Watch both at once: when HAProxy takes it out, and when the process exits.
        let (mut down, mut status, mut exited) = (None, None, None);
        while t.elapsed() < Duration::from_secs(15) && (down.is_none() || status.is_none()) {
            if down.is_none() && lb.server(name).status == "DOWN" {
                down = Some(t.elapsed());
            }
            if status.is_none() {
                status = old.child.try_wait().unwrap();
                if status.is_some() {
                    exited = Some(t.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        retired.push(old.log_text());
        assert!(
            down.is_some(),
            "haproxy never took {name} out after SIGTERM: {:?}",
            lb.stats()
        );
        assert!(
            status.is_some_and(|s| s.success()),
            "{name} did not exit 0 after SIGTERM: {status:?}\n{}",
            tail(&old.log_text(), 20)
        );
        drop(old);
        let restarted = Instant::now();
        let new = replica(&db, ports[i], None);
        let up = lb.wait_state(name, true, Duration::from_secs(10));
        assert!(up.is_some(), "haproxy never saw the restarted {name} up");
        println!(
            "cluster: rolling restart of {name}: out of haproxy {:.3} s after SIGTERM, exited after {:.3} s, back in haproxy {:.3} s after the restart",
            down.unwrap().as_secs_f64(),
            exited.unwrap().as_secs_f64(),
            restarted.elapsed().as_secs_f64()
        );
        replicas[i] = Some(new);
        // Let it take traffic before the next one goes.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sessions_after_restart: Vec<u64> =
        NAMES[..3].iter().map(|n| lb.server(n).sessions).collect();
    let (post_r, get_r) = (post.stop(), get.stop());
    println!(
        "cluster: rolling restart under load: {} requests ({} POST, {} GET), {} failures; {}",
        post_r.ok + get_r.ok + (post_r.failures.len() + get_r.failures.len()) as u64,
        post_r.ok,
        get_r.ok,
        post_r.failures.len() + get_r.failures.len(),
        retried_since(&lb, retries_before)
    );
    assert_no_loss(
        "rolling restart",
        &post_r,
        &get_r,
        &format!(
            "haproxy's log:\n{}\nlast stopped replica's log:\n{}",
            tail(&lb.log_text(), 40),
            tail(retired.last().unwrap(), 30)
        ),
    );

    // 3. SIGKILL of one replica under load: at most the requests in flight on it are lost,
    //    HAProxy takes it out, and nothing fails after that.
    let retries_before = retries(&lb);
    let (post, get) = loads(&lb);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut victim = replicas[1].take().unwrap();
    let log_at_kill = lb.log_len();
    let killed_at_db = db_now_us();
    let killed = Instant::now();
    victim.child.kill().unwrap();
    let out_after = lb.wait_state("r1", false, Duration::from_secs(5));
    assert!(
        out_after.is_some(),
        "haproxy never took the killed r1 out: {:?}",
        lb.stats()
    );
    let out_after = out_after.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (post_k, get_k) = (post.stop(), get.stop());
    retired.push(victim.log_text());
    let _ = victim.child.wait();
    drop(victim);
    let failed: Vec<&String> = post_k.failures.iter().chain(&get_k.failures).collect();
    let last_failure = post_k
        .failed_at
        .iter()
        .chain(&get_k.failed_at)
        .max()
        .map(|t| t.saturating_duration_since(killed));
    println!(
        "cluster: SIGKILL of r1 under load: {} requests ({} POST, {} GET), {} failures, last failure {} after the kill; haproxy took r1 out after {:.3} s; {}",
        post_k.ok + get_k.ok + failed.len() as u64,
        post_k.ok,
        get_k.ok,
        failed.len(),
        last_failure.map_or("(none)".to_string(), |t| format!("{:.3} s", t.as_secs_f64())),
        out_after.as_secs_f64(),
        retried_since(&lb, retries_before)
    );
    for f in &failed {
        println!("cluster: lost to the SIGKILL: {f}");
    }
    for l in lb.errors_since(log_at_kill) {
        println!("cluster: haproxy after the SIGKILL: {l}");
    }
    assert!(
        failed.len() <= POSTERS + GETTERS,
        "more requests failed ({}) than were in flight at most ({}): {:?}",
        failed.len(),
        POSTERS + GETTERS,
        &failed[..failed.len().min(10)]
    );
    if let Some(last) = last_failure {
        assert!(
            last <= out_after + Duration::from_millis(500),
            "a request failed {last:?} after the kill, when haproxy had taken r1 out after {out_after:?}: {failed:?}"
        );
    }
    assert_right_answers("SIGKILL", &post_k, &get_k);

    // 4. A fourth replica, with an empty compile cache of its own, added under load: time
    //    from spawn to its first 200, then HAProxy brings it in and it takes traffic.
    let retries_before = retries(&lb);
    let (post, get) = loads(&lb);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cold = tempfile::tempdir().unwrap();
    let spawned = Instant::now();
    let fourth = replica(&db, ports[3], Some(cold.path()));
    let listening = spawned.elapsed();
    let mut first_200 = None;
    while spawned.elapsed() < Duration::from_secs(60) {
        if serves_both(&http, &fourth.url).await {
            first_200 = Some(spawned.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let Some(first_200) = first_200 else {
        panic!(
            "the fourth replica never served: {}",
            tail(&fourth.log_text(), 30)
        )
    };
    let in_lb = lb.wait_state("r3", true, Duration::from_secs(10));
    assert!(in_lb.is_some(), "haproxy never saw r3 up: {:?}", lb.stats());
    let in_lb = spawned.elapsed();
    println!(
        "cluster: fourth replica (cold compile cache): spawn -> listening {:.3} s, spawn -> first 200 {:.3} s, in haproxy {:.3} s after spawn",
        listening.as_secs_f64(),
        first_200.as_secs_f64(),
        in_lb.as_secs_f64()
    );
    // The start-up target for a replica with an empty cache (issue 16): 3 s.
    assert!(
        first_200 < Duration::from_secs(3),
        "the fourth replica took {first_200:?} from spawn to its first 200"
    );
    let r3_before = lb.server("r3").sessions;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let r3_after = lb.server("r3").sessions;
    let (post_a, get_a) = (post.stop(), get.stop());
    println!(
        "cluster: fourth replica added under load: {} requests ({} POST, {} GET), {} failures; r3 took {} requests in 1 s; {}",
        post_a.ok + get_a.ok + (post_a.failures.len() + get_a.failures.len()) as u64,
        post_a.ok,
        get_a.ok,
        post_a.failures.len() + get_a.failures.len(),
        r3_after - r3_before,
        retried_since(&lb, retries_before)
    );
    assert!(
        r3_after > r3_before,
        "haproxy sent r3 nothing once it was up"
    );
    assert_no_loss(
        "fourth replica",
        &post_a,
        &get_a,
        &format!("haproxy's log:\n{}", tail(&lb.log_text(), 40)),
    );
    // Every restarted replica took traffic through the balancer after its restart.
    for (i, name) in NAMES[..3].iter().enumerate() {
        if i != 1 {
            assert!(
                lb.server(name).sessions > sessions_after_restart[i],
                "{name} took no traffic after its restart"
            );
        }
    }

    // The every-second schedule, over everything above: each fire time ran once, on some
    // replica, and the fires went on through the restarts and after the kill.
    let wanted_after = killed_at_db + 3_000_000;
    let t = &db.name;
    assert!(
        wait_until(Duration::from_secs(5), || {
            sql(&format!(
                "SELECT COUNT(*) FROM {t}.dispatcher_schedule_fires WHERE function_name = 'noop'
                   AND TIMESTAMPDIFF(MICROSECOND, '1970-01-01', fire_time) >= {wanted_after}"
            ))
            .trim()
                != "0"
        }),
        "no fire later than 3 s after the kill"
    );
    let twice = sql(&format!(
        "SELECT fire_time, COUNT(*) FROM {t}.dispatcher_schedule_fires WHERE function_name = 'noop'
         GROUP BY fire_time HAVING COUNT(*) > 1"
    ));
    assert_eq!(twice, "", "fire times claimed twice");
    // Per fire: attempts, succeeded attempts, its status, its age in ms (database clock).
    let rows = sql(&format!(
        "SELECT TIMESTAMPDIFF(MICROSECOND, '1970-01-01', f.fire_time), f.status, f.replica,
                COUNT(a.attempt), COALESCE(SUM(a.status = 'succeeded'), 0),
                TIMESTAMPDIFF(MICROSECOND, f.fire_time, UTC_TIMESTAMP(6)) DIV 1000
         FROM {t}.dispatcher_schedule_fires f
         LEFT JOIN {t}.dispatcher_schedule_attempts a ON a.fire_id = f.id
         WHERE f.function_name = 'noop' AND f.schedule_name = 'tick'
         GROUP BY f.id ORDER BY f.fire_time"
    ));
    let fires: Vec<(i64, String, String, u32, u32, i64)> = rows
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].parse().unwrap(),
                f[1].to_string(),
                f[2].to_string(),
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
                f[5].parse().unwrap(),
            )
        })
        .collect();
    // The history covers everything above: it starts before the rolling restart.
    assert!(
        fires.first().is_some_and(|f| f.0 <= restarts_at_db),
        "no fire before the rolling restart: {rows}"
    );
    let ran_twice: Vec<_> = fires.iter().filter(|f| f.4 > 1).collect();
    assert!(ran_twice.is_empty(), "fires run twice: {ran_twice:?}");
    let retried: Vec<_> = fires.iter().filter(|f| f.3 > 1).collect();
    // Settled: older than the lease (timeout 1 s + 2 s) and a takeover's scan.
    let unsettled: Vec<_> = fires
        .iter()
        .filter(|f| f.5 > 6_000 && (f.1 != "succeeded" || f.4 != 1))
        .collect();
    assert!(
        unsettled.is_empty(),
        "fires that did not end in one succeeded run: {unsettled:?}"
    );
    let gaps: Vec<i64> = fires.windows(2).map(|w| w[1].0 - w[0].0).collect();
    let max_gap = gaps.iter().copied().max().unwrap();
    let mut by_replica: Vec<String> = fires.iter().map(|f| f.2.clone()).collect();
    by_replica.sort();
    by_replica.dedup();
    let after_kill = fires.iter().filter(|f| f.0 > killed_at_db).count();
    println!(
        "cluster: schedule: {} fires over {:.0} s, on {} replica processes, none run twice, {} taken over after a lost run, {} after the kill, longest gap {:.1} s",
        fires.len(),
        (fires.last().unwrap().0 - fires[0].0) as f64 / 1e6,
        by_replica.len(),
        retried.len(),
        after_kill,
        max_gap as f64 / 1e6
    );
    assert!(
        max_gap <= 3_000_000,
        "the schedule stopped for {:.1} s",
        max_gap as f64 / 1e6
    );
    assert!(
        by_replica.len() >= 2,
        "every fire ran on one replica: {by_replica:?}"
    );
    // The fourth replica really started cold: it compiled the modules itself (tiered: Winch
    // to serve at once, Cranelift behind, whose code is then written to its cache).
    let optimized = wait_until(Duration::from_secs(30), || {
        std::fs::read_dir(cold.path()).unwrap().count() >= 2
    });
    assert!(
        optimized,
        "the fourth replica's own compile cache did not fill: {:?}\n{}",
        std::fs::read_dir(cold.path()).unwrap().count(),
        tail(&fourth.log_text(), 20)
    );
    println!(
        "cluster: the fourth replica's own cache holds its optimized code {:.1} s after spawn",
        spawned.elapsed().as_secs_f64()
    );
    drop(fourth);
    println!(
        "cluster: the whole test took {:.1} s",
        test_started.elapsed().as_secs_f64()
    );
}
