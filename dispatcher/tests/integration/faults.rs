//! Faults of the platform's own dependencies, each checked by the answer a user sees: a
//! damaged compile cache, a cache folder that is full or read-only, the platform database
//! cut under load, and a dispatcher SIGKILLed in the middle of a deploy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::{
    bare_command, client, manifest, padded, sql, wait_until, wasm, Dispatcher, Load, Options,
    PlatformDb, Proxy,
};

const MARIADB: &str = "127.0.0.1:3306";
const TOKEN: &str = "faults-admin-token";

/// Manifests for `echo` at `/echo`, `probe` at `/probe` and `noop` at `/noop`.
fn three_functions(dir: &Path) {
    for name in ["echo", "probe", "noop"] {
        manifest(
            dir,
            name,
            &format!(
                "name = \"{name}\"\nwasm = \"{}\"\n[trigger.http]\npath = \"/{name}\"\n",
                wasm(name).display()
            ),
        );
    }
}

/// Every function of [`three_functions`] answers as its own code does.
async fn three_answer(d: &Dispatcher) {
    let http = client();
    for (path, status, answer) in [
        ("/echo", 200, "hello"),
        ("/probe?do=counter", 200, "1"),
        ("/noop", 204, ""),
    ] {
        let r = http.post(d.url(path)).body("hello").send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(r.text().await.unwrap(), answer, "{path}");
    }
}

/// The `.cwasm` files of a cache folder.
fn artifacts(cache: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    found.sort();
    found
}

fn count(d: &Dispatcher, needle: &str) -> usize {
    d.log_text().lines().filter(|l| l.contains(needle)).count()
}

fn start(manifests: &Path, cache: &Path, args: Vec<&str>) -> Dispatcher {
    Dispatcher::start_with(
        manifests,
        Options {
            cache_dir: Some(cache),
            args,
            ..Options::default()
        },
    )
}

#[tokio::test]
async fn damaged_compile_cache_files_are_named_compiled_again_and_never_run() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    three_functions(dir.path());
    // Optimized: each artifact is stored before the platform serves.
    let first = start(dir.path(), cache.path(), vec!["--compile", "optimized"]);
    three_answer(&first).await;
    drop(first);
    let files = artifacts(cache.path());
    assert_eq!(files.len(), 3, "one artifact per module: {files:?}");

    // Each file damaged another way: cut in half, a bit flipped in the middle, emptied.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&files[0], &bytes).unwrap();
    let mut bytes = std::fs::read(&files[1]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&files[1], &bytes).unwrap();
    std::fs::write(&files[2], b"").unwrap();

    // The ordinary restart (tiered): every function answers from its own code.
    let second = start(dir.path(), cache.path(), vec![]);
    three_answer(&second).await;
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            second.wait_for_log(&name, Duration::from_secs(10)),
            "the log does not name {name}:\n{}",
            second.log_text()
        );
    }
    assert_eq!(count(&second, "ignoring unusable cached module"), 3);
    // Behind, Cranelift's code is compiled again and stored whole.
    assert!(
        wait_until(Duration::from_secs(60), || {
            count(&second, "optimized code swapped in") == 3
        }),
        "{}",
        second.log_text()
    );
    drop(second);

    // A module stored under another module's name (a misplaced file) is refused too.
    let misplaced = artifacts(cache.path());
    assert_eq!(misplaced.len(), 3);
    std::fs::copy(&misplaced[0], &misplaced[1]).unwrap();
    let third = start(dir.path(), cache.path(), vec!["--compile", "optimized"]);
    three_answer(&third).await;
    let name = misplaced[1].file_name().unwrap().to_string_lossy();
    assert!(third.wait_for_log(&name, Duration::from_secs(5)));
    assert_eq!(count(&third, "ignoring unusable cached module"), 1);
    assert_eq!(count(&third, &name), 1, "{}", third.log_text());
    drop(third);

    // And once stored again, a restart loads all three without a word.
    let fourth = start(dir.path(), cache.path(), vec!["--compile", "optimized"]);
    three_answer(&fourth).await;
    assert!(
        wait_until(Duration::from_secs(5), || count(&fourth, "compiled=false")
            == 3),
        "{}",
        fourth.log_text()
    );
    assert_eq!(count(&fourth, "unusable"), 0, "{}", fourth.log_text());
}

/// A small tmpfs mounted on a temporary folder, unmounted on drop: a disk that fills up, or
/// (remounted) a read-only one.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` where this process may not mount (not root).
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn read_only(&self) {
        let ok = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(ok.success(), "cannot remount the tmpfs read-only");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

const UNWRITABLE: &str = "the compile cache cannot be written";

/// Starts the three functions on `cache`, checks they answer (twice over, so later compiles
/// and requests would say it again if they did), and that the log says once that the cache
/// cannot be written.
async fn serves_and_warns_once(manifests: &Path, cache: &Path, case: &str) {
    let d = start(manifests, cache, vec![]);
    three_answer(&d).await;
    assert!(
        wait_until(Duration::from_secs(60), || {
            count(&d, "optimized code swapped in") == 3
        }),
        "{case}: {}",
        d.log_text()
    );
    for _ in 0..20 {
        let r = client()
            .post(d.url("/echo"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(count(&d, UNWRITABLE), 1, "{case}: {}", d.log_text());
    println!("{case}: served, and said once: {}", {
        let log = d.log_text();
        log.lines()
            .find(|l| l.contains(UNWRITABLE))
            .unwrap()
            .to_string()
    });
}

#[tokio::test]
async fn a_full_or_read_only_or_missing_cache_folder_serves_anyway_and_warns_once() {
    let dir = tempfile::tempdir().unwrap();
    three_functions(dir.path());

    // A folder that cannot even be made (its parent is a file): needs no privileges.
    let parent = tempfile::tempdir().unwrap();
    let file = parent.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    serves_and_warns_once(dir.path(), &file.join("cache"), "uncreatable").await;

    let Some(disk) = Tmpfs::mount("8k") else {
        println!("full and read-only cache folders: not tested (cannot mount a tmpfs here)");
        return;
    };
    // Full: 8 KiB holds no artifact; a failed write leaves no partial file behind.
    serves_and_warns_once(dir.path(), disk.path(), "full").await;
    let left: Vec<_> = std::fs::read_dir(disk.path()).unwrap().collect();
    assert!(left.is_empty(), "a full cache kept files: {left:?}");
    // Read-only.
    disk.read_only();
    serves_and_warns_once(dir.path(), disk.path(), "read-only").await;
}

/// Runs the CLI against `d` with the admin token.
fn cli(d: &Dispatcher, args: &[&str]) -> Output {
    bare_command()
        .args(args)
        .env("DISPATCHER_SERVER", &d.url)
        .env("DISPATCHER_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run the dispatcher CLI")
}

/// [`wait_until`] that yields to the test's runtime between looks.
async fn until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// [`cli`] off the test's runtime, whose workers must keep the proxy's connections moving.
async fn cli_off(d: &Dispatcher, args: &[&str]) -> Output {
    let url = d.url.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        bare_command()
            .args(&args)
            .env("DISPATCHER_SERVER", url)
            .env("DISPATCHER_ADMIN_TOKEN", TOKEN)
            .output()
            .expect("run the dispatcher CLI")
    })
    .await
    .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A replica on `db`, reached at `via` (`host:port`), with the admin API on.
fn replica(db: &PlatformDb, via: &str) -> Dispatcher {
    replica_with(db, via, None)
}

fn replica_with(db: &PlatformDb, via: &str, cache: Option<&Path>) -> Dispatcher {
    Dispatcher::start_bare(Options {
        cache_dir: cache,
        env: vec![
            // Over TCP only: at 127.0.0.1 mysql_async would otherwise move to MariaDB's
            // unix socket, around the proxy.
            (
                "DISPATCHER_DB",
                format!("mysql://root@{via}/{}?prefer_socket=false", db.name),
            ),
            ("DISPATCHER_ADMIN_TOKEN", TOKEN.to_string()),
            // No line per request: under load the log would be hundreds of thousands of
            // lines, and the test reads it over and over.
            ("RUST_LOG", "info,request=warn".to_string()),
        ],
        ..Options::default()
    })
}

/// Writes `<name>.toml` for `module` at `path` and returns the manifest's path.
fn http_manifest(dir: &Path, name: &str, module: &Path, path: &str) -> String {
    manifest(
        dir,
        name,
        &format!(
            "name = \"{name}\"\nwasm = \"{}\"\n[trigger.http]\npath = \"{path}\"\n",
            module.display()
        ),
    );
    dir.join(format!("{name}.toml")).display().to_string()
}

/// What is wrong with the catalog's tables, if anything: a current version that does not
/// exist, a version whose module is missing or incomplete, or a generation behind them.
fn catalog_faults(db: &PlatformDb) -> Vec<String> {
    let t = &db.name;
    let checks = [
        (
            "current versions that do not exist",
            format!(
                "SELECT f.name, f.current_version FROM {t}.dispatcher_functions f
                 LEFT JOIN {t}.dispatcher_versions v ON v.name = f.name AND v.version = f.current_version
                 WHERE f.current_version IS NOT NULL AND v.name IS NULL"
            ),
        ),
        (
            "versions whose module is missing or incomplete",
            format!(
                "SELECT v.name, v.version FROM {t}.dispatcher_versions v
                 LEFT JOIN {t}.dispatcher_modules m ON m.hash = v.module_hash
                 LEFT JOIN (SELECT hash, COUNT(*) n, SUM(LENGTH(data)) bytes
                            FROM {t}.dispatcher_module_chunks GROUP BY hash) c ON c.hash = v.module_hash
                 WHERE m.hash IS NULL OR c.n IS NULL OR c.n <> m.chunks OR c.bytes <> m.size
                    OR v.module_size <> m.size"
            ),
        ),
        (
            "modules whose chunks are incomplete",
            format!(
                "SELECT m.hash FROM {t}.dispatcher_modules m
                 LEFT JOIN (SELECT hash, COUNT(*) n, SUM(LENGTH(data)) bytes
                            FROM {t}.dispatcher_module_chunks GROUP BY hash) c ON c.hash = m.hash
                 WHERE c.n IS NULL OR c.n <> m.chunks OR c.bytes <> m.size"
            ),
        ),
    ];
    checks
        .iter()
        .filter_map(|(what, q)| {
            let rows = sql(q);
            (!rows.trim().is_empty()).then(|| format!("{what}: {rows}"))
        })
        .collect()
}

/// `at` of every schedule event (a run that really started) in a replica's log.
fn runs(d: &Dispatcher) -> Vec<String> {
    d.log_text()
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("schedule-event ")?..];
            Some(
                rest.split("at=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_database_cut_under_load_costs_no_request_and_no_duplicate_fire() {
    let db = PlatformDb::create("cut");
    let proxy = Proxy::start(MARIADB).await;
    let via = proxy.addr.to_string();
    let a = replica(&db, &via);
    let b = replica(&db, &via);
    let dir = tempfile::tempdir().unwrap();
    let svc = http_manifest(dir.path(), "svc", &wasm("echo"), "/svc");
    assert!(cli_off(&a, &["deploy", &svc]).await.status.success());
    // A job every second that runs 700 ms, so the cut lands in the middle of a run.
    manifest(
        dir.path(),
        "tick",
        &format!(
            "name = \"tick\"\nwasm = \"{}\"\n[[trigger.schedule]]\nname = \"every\"\ncron = \"* * * * * *\"\noverlap = \"allow\"\nretries = 2\n[env]\nPROBE_SLEEP_MS = \"700\"\n[limits]\ntimeout_ms = 1500\n",
            wasm("probe").display()
        ),
    );
    let tick = dir.path().join("tick.toml").display().to_string();
    assert!(cli_off(&a, &["deploy", &tick]).await.status.success());
    let fired = |n: usize| runs(&a).len() + runs(&b).len() >= n;
    assert!(
        until(Duration::from_secs(10), || fired(3)).await,
        "no fires"
    );
    // 4 x 200 requests/s, paced so that the proxy and the platform's timers get the CPU.
    let loads = [
        Load::paced(a.url("/svc"), "steady", 2, Duration::from_millis(5)),
        Load::paced(b.url("/svc"), "steady", 2, Duration::from_millis(5)),
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Cut in the middle of a run: 300 ms past a whole second (runs last 700 ms).
    let past = chrono::Utc::now().timestamp_subsec_millis() as u64;
    tokio::time::sleep(Duration::from_millis((1300 - past) % 1000)).await;
    proxy.cut();
    let cut_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A deploy in the outage: a clear 503 that names the database, at once.
    let other = http_manifest(dir.path(), "other", &wasm("echo"), "/other");
    let started = Instant::now();
    let out = cli_off(&a, &["deploy", &other]).await;
    let took = started.elapsed();
    assert!(
        !out.status.success(),
        "a deploy succeeded without a database: {}\nproxy accepted {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        proxy.accepted(),
        a.log_text()
    );
    assert!(
        stderr(&out).contains("503") && stderr(&out).contains("platform database"),
        "{}",
        stderr(&out)
    );
    assert!(
        took < Duration::from_secs(5),
        "the refused deploy took {took:?}"
    );
    let removed = cli_off(&b, &["remove", "svc"]).await;
    assert!(stderr(&removed).contains("503"), "{}", stderr(&removed));
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(cut_at.elapsed())).await;
    proxy.restore(MARIADB).await;
    let outage = cut_at.elapsed();

    // Catalog sync and schedule claims come back by themselves.
    for d in [&a, &b] {
        let back = until(Duration::from_secs(5), || {
            count(d, "the platform database is back") > 0
        })
        .await;
        assert!(back, "{}", d.log_text());
    }
    let out = cli_off(&a, &["deploy", &other]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let synced = Instant::now();
    let mut on_b = 0;
    while synced.elapsed() < Duration::from_secs(5) && on_b != 200 {
        on_b = client()
            .post(b.url("/other"))
            .body("x")
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        on_b, 200,
        "replica b never loaded a deploy made after the outage"
    );
    let after = runs(&a).len() + runs(&b).len();
    assert!(
        until(Duration::from_secs(5), || fired(after + 2)).await,
        "no fires after the outage"
    );
    // Leases (1.5 s + 2 s) and the reaper's grace have passed: anything to take over is.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let results = loads.map(Load::stop);

    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    for at in runs(&a).into_iter().chain(runs(&b)) {
        *times.entry(at).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    let lost: usize = results.iter().map(|r| r.failures.len()).sum();
    let ok: u64 = results.iter().map(|r| r.ok).sum();
    let late = count(&a, "record after all") + count(&b, "record after all");
    println!(
        "faults: platform database cut for {:.1} s under load: {ok} requests served, {lost} failed; {} fire times run, {} run twice, {late} run records written once it was back; the refused deploy answered in {} ms",
        outage.as_secs_f64(),
        times.len(),
        twice.len(),
        took.as_millis()
    );
    assert_eq!(
        lost,
        0,
        "{:?}",
        results.iter().map(|r| &r.failures).collect::<Vec<_>>()
    );
    assert!(
        twice.is_empty(),
        "fire times run more than once: {twice:?}\na:\n{}\nb:\n{}",
        a.log_text(),
        b.log_text()
    );
    // The history is true and whole: every fire ran and is recorded as succeeded (none left
    // running, none taken for lost).
    let wrong = sql(&format!(
        "SELECT fire_time, status, attempt FROM {}.dispatcher_schedule_fires
         WHERE status <> 'succeeded' AND started_at < NOW(6) - INTERVAL 5 SECOND",
        db.name
    ));
    assert!(
        wrong.trim().is_empty(),
        "fires not recorded as they ran: {wrong}"
    );
    assert_eq!(catalog_faults(&db), Vec::<String>::new());
}

/// A MariaDB that has stopped answering (frozen, or cut off without a reset): it takes
/// connections on `addr` and never says a word. Stops on drop.
struct Frozen(tokio::task::JoinHandle<()>);

impl Frozen {
    async fn at(addr: std::net::SocketAddr) -> Frozen {
        let deadline = Instant::now() + Duration::from_secs(2);
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("cannot listen on {addr}: {e}"),
            }
        };
        Frozen(tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        }))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_database_that_stops_answering_costs_a_deploy_a_503_not_a_hang() {
    let db = PlatformDb::create("frozen");
    let proxy = Proxy::start(MARIADB).await;
    let a = replica(&db, &proxy.addr.to_string());
    let dir = tempfile::tempdir().unwrap();
    let svc = http_manifest(dir.path(), "svc", &wasm("echo"), "/svc");
    assert!(cli_off(&a, &["deploy", &svc]).await.status.success());

    proxy.cut();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let frozen = Frozen::at(proxy.addr).await;
    let other = http_manifest(dir.path(), "other", &wasm("echo"), "/other");
    let started = Instant::now();
    let out = cli_off(&a, &["deploy", &other]).await;
    let took = started.elapsed();
    assert!(
        !out.status.success(),
        "a deploy succeeded against a frozen database"
    );
    assert!(
        stderr(&out).contains("503") && stderr(&out).contains("did not answer within 10 s"),
        "{}",
        stderr(&out)
    );
    assert!(
        took < Duration::from_secs(15),
        "the refused deploy took {took:?}"
    );
    let r = client().post(a.url("/svc")).body("x").send().await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "a function that needs no database stopped serving"
    );
    println!(
        "faults: a frozen platform database: the deploy answered 503 after {:.1} s: {}",
        took.as_secs_f64(),
        stderr(&out).trim()
    );

    drop(frozen);
    proxy.restore(MARIADB).await;
    assert!(
        until(Duration::from_secs(15), || count(
            &a,
            "the platform database is back"
        ) > 0)
        .await,
        "{}",
        a.log_text()
    );
    let out = cli_off(&a, &["deploy", &other]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let r = client()
        .post(a.url("/other"))
        .body("y")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(catalog_faults(&db), Vec::<String>::new());
}

/// When, in a deploy, the dispatcher is killed.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// This long after the CLI started: the upload, the parse or the compile.
    After(Duration),
    /// Once this many of the module's chunks are stored.
    Chunks(usize),
    /// Once the module's row is written (its chunks are complete): the catalog's transaction
    /// comes next.
    Stored,
    /// Once the new version is visible to others (committed).
    Committed,
}

fn one(q: &str) -> usize {
    sql(q).trim().parse().unwrap_or(0)
}

/// `(current version, module hash)` of `big`, and how many versions it has.
fn big_state(db: &PlatformDb) -> ((u32, String), usize) {
    let t = &db.name;
    let row = sql(&format!(
        "SELECT v.version, v.module_hash FROM {t}.dispatcher_functions f
         JOIN {t}.dispatcher_versions v ON v.name = f.name AND v.version = f.current_version
         WHERE f.name = 'big'"
    ));
    let mut cols = row.split_whitespace();
    let current = (
        cols.next().unwrap().parse().unwrap(),
        cols.next().unwrap().to_string(),
    );
    let versions = one(&format!(
        "SELECT COUNT(*) FROM {t}.dispatcher_versions WHERE name = 'big'"
    ));
    (current, versions)
}

/// What `/big?do=counter` answers to `x`: `x` from echo, `1` from probe.
async fn big_answer(d: &Dispatcher) -> String {
    let r = client()
        .post(d.url("/big?do=counter"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "/big");
    r.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_in_the_middle_of_a_deploy_leaves_the_old_version_or_the_new_never_a_mix() {
    let db = PlatformDb::create("kill9");
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut d = replica_with(&db, MARIADB, Some(cache.path()));
    let v1 = http_manifest(dir.path(), "big", &wasm("echo"), "/big");
    assert!(cli(&d, &["deploy", &v1]).status.success());
    // The answer each module gives, by hash.
    let mut answers: BTreeMap<String, &str> = BTreeMap::new();
    answers.insert(
        dispatcher::runtime::content_hash(&std::fs::read(wasm("echo")).unwrap()),
        "x",
    );
    let moments = [
        Moment::After(Duration::from_millis(300)),
        Moment::Chunks(1),
        Moment::Chunks(32),
        Moment::Stored,
        Moment::Committed,
    ];
    for (round, moment) in moments.into_iter().enumerate() {
        // A 64 MiB module of its own each round (another hash), echo and probe in turn.
        let (kind, answer) = if round % 2 == 0 {
            ("probe", "1")
        } else {
            ("echo", "x")
        };
        let module = dir.path().join(format!("big{round}.wasm"));
        padded(&wasm(kind), &module, (64 << 20) + round);
        let hash = dispatcher::runtime::content_hash(&std::fs::read(&module).unwrap());
        answers.insert(hash.clone(), answer);
        let manifest = http_manifest(dir.path(), "big", &module, "/big");
        let (before, versions_before) = big_state(&db);

        let url = d.url.clone();
        let deploy = std::thread::spawn(move || {
            bare_command()
                .args(["deploy", &manifest])
                .env("DISPATCHER_SERVER", url)
                .env("DISPATCHER_ADMIN_TOKEN", TOKEN)
                .output()
                .unwrap()
        });
        let t = &db.name;
        let started = Instant::now();
        let reached = wait_until(Duration::from_secs(60), || match moment {
            Moment::After(wait) => started.elapsed() >= wait,
            Moment::Chunks(n) => {
                one(&format!(
                    "SELECT COUNT(*) FROM {t}.dispatcher_module_chunks WHERE hash = '{hash}'"
                )) >= n
            }
            Moment::Stored => {
                one(&format!(
                    "SELECT COUNT(*) FROM {t}.dispatcher_modules WHERE hash = '{hash}'"
                )) == 1
            }
            Moment::Committed => {
                one(&format!(
                    "SELECT COUNT(*) FROM {t}.dispatcher_versions WHERE module_hash = '{hash}'"
                )) == 1
            }
        });
        assert!(
            reached,
            "round {round}: never reached {moment:?}: {}",
            d.log_text()
        );
        d.child.kill().unwrap();
        let killed_after = started.elapsed();
        drop(d);
        let out = deploy.join().unwrap();

        // A fresh process on the same database: the old version or the new one, whole.
        d = replica_with(&db, MARIADB, Some(cache.path()));
        assert_eq!(catalog_faults(&db), Vec::<String>::new(), "round {round}");
        let (after, versions_after) = big_state(&db);
        let new = after.1 == hash;
        if new {
            assert_eq!(after.0 as usize, versions_before + 1, "round {round}");
            assert_eq!(versions_after, versions_before + 1, "round {round}");
        } else {
            assert_eq!(
                after, before,
                "round {round}: neither the old nor the new version"
            );
            assert_eq!(
                versions_after, versions_before,
                "round {round}: a version that is not current"
            );
        }
        if out.status.success() {
            assert!(
                new,
                "round {round}: the deploy said it succeeded, but the catalog kept the old version"
            );
        }
        let served = big_answer(&d).await;
        assert_eq!(
            served, answers[&after.1],
            "round {round}: /big answers as another version"
        );
        println!(
            "faults: SIGKILL at {moment:?} ({} ms into the deploy): the catalog holds the {} version (v{}); the CLI said: {}",
            killed_after.as_millis(),
            if new { "new" } else { "old" },
            after.0,
            stderr(&out).trim()
        );
    }

    // After all that, a deploy goes through (reusing whatever chunks a killed one left).
    let last = dir.path().join("big0.wasm");
    let manifest = http_manifest(dir.path(), "big", &last, "/big");
    let out = cli(&d, &["deploy", &manifest]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(big_answer(&d).await, "1");
    assert_eq!(catalog_faults(&db), Vec::<String>::new());
}
