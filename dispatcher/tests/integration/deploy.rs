//! Deploys to a running platform: the admin API and the CLI against real dispatcher
//! processes and the real MariaDB, each change checked by its effect over HTTP.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::harness::{
    bare_command, client, manifest, padded, sql, wait_until, wasm, wat_module, Dispatcher, Load,
    Options, PlatformDb,
};
use serde_json::Value;

const TOKEN: &str = "test-admin-token";

/// A platform on its own database with the admin API on.
fn platform(tag: &str) -> (PlatformDb, Dispatcher) {
    let db = PlatformDb::create(tag);
    let d = Dispatcher::start_bare(admin_opts(&db));
    (db, d)
}

fn admin_opts(db: &PlatformDb) -> Options<'static> {
    Options {
        env: vec![
            ("DISPATCHER_DB", db.url()),
            ("DISPATCHER_ADMIN_TOKEN", TOKEN.to_string()),
        ],
        ..Options::default()
    }
}

/// Runs the CLI against `d` with the admin token.
fn cli(d: &Dispatcher, args: &[&str]) -> Output {
    cli_with(d, Some(TOKEN), args)
}

fn cli_with(d: &Dispatcher, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = bare_command();
    cmd.args(args).env("DISPATCHER_SERVER", &d.url);
    if let Some(t) = token {
        cmd.env("DISPATCHER_ADMIN_TOKEN", t);
    }
    cmd.output().expect("run the dispatcher CLI")
}

/// Runs the CLI, asserts success, and parses its `--json` output.
fn cli_json(d: &Dispatcher, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = cli(d, &args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from --json")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `dispatcher deploy MANIFEST` and asserts that it fails with every `part` in its
/// one-line error.
fn deploy_refused(d: &Dispatcher, manifest: &Path, parts: &[&str]) {
    let out = cli(d, &["deploy", manifest.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "the deploy of {} was accepted",
        manifest.display()
    );
    let err = stderr(&out);
    for part in parts {
        assert!(err.contains(part), "{part:?} is not in: {err}");
    }
}

/// Writes `<name>.toml` for module `module` at route `path` and returns the manifest's path.
fn fn_manifest(dir: &Path, name: &str, module: &Path, path: &str, extra: &str) -> PathBuf {
    manifest(
        dir,
        name,
        &format!(
            "name = \"{name}\"\nwasm = \"{}\"\n[trigger.http]\npath = \"{path}\"\n{extra}",
            module.display()
        ),
    );
    dir.join(format!("{name}.toml"))
}

async fn post(url: &str, body: &str) -> (u16, String) {
    let r = client()
        .post(url)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn names(list: &Value) -> Vec<(String, u64)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["version"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn version_rows(db: &PlatformDb) -> String {
    sql(&format!(
        "SELECT name, version, module_hash FROM {}.dispatcher_versions ORDER BY name, version",
        db.name
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_invoke_redeploy_rollback_and_remove_through_the_cli() {
    let db = PlatformDb::create("cli");
    // A compile cache of its own, so that "compiled" below means this platform compiled.
    let cache = tempfile::tempdir().unwrap();
    let d = Dispatcher::start_bare(Options {
        cache_dir: Some(cache.path()),
        ..admin_opts(&db)
    });
    let dir = tempfile::tempdir().unwrap();
    let m = fn_manifest(dir.path(), "svc", &wasm("echo"), "/svc", "");
    let m = m.to_str().unwrap();

    // Before: nothing there.
    assert_eq!(post(&d.url("/svc"), "x").await.0, 404);

    // Deploy: version 1, served at once.
    let r = cli_json(&d, &["deploy", m]);
    assert_eq!(r[0]["action"], "deployed", "{r}");
    assert_eq!(r[0]["version"], 1);
    assert_eq!(
        post(&d.url("/svc?do=counter"), "one").await,
        (200, "one".into())
    );

    // A deploy of the same files is a no-op.
    let r = cli_json(&d, &["deploy", m]);
    assert_eq!(r[0]["action"], "unchanged", "{r}");
    assert_eq!(r[0]["version"], 1);

    // List shows name, version, route and module.
    let list = cli_json(&d, &["list"]);
    assert_eq!(names(&list), vec![("svc".to_string(), 1)]);
    assert_eq!(list[0]["route"], "* /svc");
    assert_eq!(list[0]["module_hash"].as_str().unwrap().len(), 64);
    assert!(list[0]["module_size"].as_u64().unwrap() > 1000);
    let human = cli(&d, &["list"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("svc"));

    // Invoke runs it once with the body.
    let out = cli(&d, &["invoke", "svc", "--data", "hello"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello");

    // Redeploy with another module: version 2 answers.
    fn_manifest(dir.path(), "svc", &wasm("probe"), "/svc", "");
    let r = cli_json(&d, &["deploy", m]);
    assert_eq!(r[0]["version"], 2, "{r}");
    assert_eq!(r[0]["compiled"], true, "probe was never compiled here: {r}");
    assert_eq!(
        post(&d.url("/svc?do=counter"), "one").await,
        (200, "1".into())
    );

    // Rollback: version 1 answers again; rollback --to 2 brings 2 back.
    let r = cli_json(&d, &["rollback", "svc"]);
    assert_eq!(
        (r["action"].as_str(), r["version"].as_u64()),
        (Some("rolled_back"), Some(1))
    );
    assert_eq!(
        post(&d.url("/svc?do=counter"), "one").await,
        (200, "one".into())
    );
    let r = cli_json(&d, &["rollback", "svc", "--to", "2"]);
    assert_eq!(r["version"], 2);
    assert_eq!(
        post(&d.url("/svc?do=counter"), "one").await,
        (200, "1".into())
    );

    // Show: the history with the current version.
    let show = cli_json(&d, &["show", "svc"]);
    assert_eq!(show["current_version"], 2);
    assert_eq!(show["versions"].as_array().unwrap().len(), 2);
    assert!(show["versions"][0]["source"]
        .as_str()
        .unwrap()
        .ends_with("svc.toml"));

    // Rolling back past version 1 is refused, naming why.
    cli_json(&d, &["rollback", "svc", "--to", "1"]);
    let out = cli(&d, &["rollback", "svc"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("409: function `svc` is at version 1"),
        "{}",
        stderr(&out)
    );

    // Remove: 404 afterwards, gone from the list, history kept.
    cli_json(&d, &["remove", "svc"]);
    assert_eq!(post(&d.url("/svc"), "x").await.0, 404);
    assert!(names(&cli_json(&d, &["list"])).is_empty());
    let out = cli(&d, &["remove", "svc"]);
    assert!(
        stderr(&out).contains("404: no function named `svc` is deployed"),
        "{}",
        stderr(&out)
    );
    let show = cli_json(&d, &["show", "svc"]);
    assert!(show["current"].is_null());
    assert_eq!(show["versions"].as_array().unwrap().len(), 2);

    // A new deploy after removal is the next version.
    fn_manifest(
        dir.path(),
        "svc",
        &wasm("echo"),
        "/svc",
        "[env]\nX = \"1\"\n",
    );
    let r = cli_json(&d, &["deploy", m]);
    assert_eq!(r[0]["version"], 3, "{r}");
    // A module seen before is not compiled again.
    assert_eq!(r[0]["compiled"], false, "{r}");
    assert_eq!(post(&d.url("/svc"), "back").await, (200, "back".into()));
}

#[tokio::test]
async fn the_admin_api_needs_the_token_and_is_off_without_one() {
    let (db, d) = platform("auth");
    let dir = tempfile::tempdir().unwrap();
    let m = fn_manifest(dir.path(), "svc", &wasm("echo"), "/svc", "");
    let m = m.to_str().unwrap();
    let http = client();

    // Health needs no token.
    let r = http.get(d.url("/_dispatcher/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // No token, a wrong token: 401, one clear line, logged, nothing deployed.
    let out = cli_with(&d, None, &["deploy", m]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("401:") && stderr(&out).contains("needs an admin token"),
        "{}",
        stderr(&out)
    );
    let out = cli_with(&d, Some("wrong"), &["deploy", m]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("401: the admin token was rejected by {}", d.url)),
        "{}",
        stderr(&out)
    );
    let r = http
        .get(d.url("/_dispatcher/functions"))
        .bearer_auth(format!("{TOKEN}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(d.wait_for_log(
        "admin request without a token refused",
        Duration::from_secs(5)
    ));
    assert!(d.wait_for_log(
        "admin request with a wrong token refused",
        Duration::from_secs(5)
    ));
    assert_eq!(post(&d.url("/svc"), "x").await.0, 404);
    assert_eq!(version_rows(&db), "");

    // The right token works.
    assert!(cli(&d, &["deploy", m]).status.success());
    assert_eq!(post(&d.url("/svc"), "x").await.0, 200);
    drop(d);

    // Without DISPATCHER_ADMIN_TOKEN the API is off (404) and the log says so; the deployed
    // function is still served from the database, and health still answers.
    let off = Dispatcher::start_bare(db.opts());
    assert!(off.wait_for_log("the admin API is off", Duration::from_secs(5)));
    let r = http
        .get(off.url("/_dispatcher/functions"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let out = cli(&off, &["list"]);
    assert!(
        stderr(&out).contains("404: the admin API is off"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        http.get(off.url("/_dispatcher/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(post(&off.url("/svc"), "still").await, (200, "still".into()));
}

#[tokio::test]
async fn bad_deploys_are_refused_and_change_nothing() {
    let (db, d) = platform("bad");
    let dir = tempfile::tempdir().unwrap();
    let good = fn_manifest(
        dir.path(),
        "echo",
        &wasm("echo"),
        "/echo",
        "methods = [\"POST\"]\n",
    );
    assert!(cli(&d, &["deploy", good.to_str().unwrap()])
        .status
        .success());
    let before = version_rows(&db);
    let list_before = names(&cli_json(&d, &["list"]));

    let check_unchanged = |what: &str| {
        assert_eq!(version_rows(&db), before, "{what} changed the catalog");
        assert_eq!(
            names(&cli_json(&d, &["list"])),
            list_before,
            "{what} changed the list"
        );
    };

    // A route another function owns: 409 naming it.
    let clash = fn_manifest(
        dir.path(),
        "echo2",
        &wasm("echo"),
        "/echo",
        "methods = [\"POST\"]\n",
    );
    deploy_refused(
        &d,
        &clash,
        &["409: route POST /echo belongs to function echo"],
    );
    check_unchanged("a route conflict");

    // An invalid manifest: 400 naming the file and field.
    manifest(
        dir.path(),
        "typo",
        &format!(
            "name = \"typo\"\nwasm = \"{}\"\n[trigger.http]\npath = \"/typo\"\nmemory = 5\n",
            wasm("echo").display()
        ),
    );
    deploy_refused(
        &d,
        &dir.path().join("typo.toml"),
        &["400: typo.toml:", "memory"],
    );
    check_unchanged("an invalid manifest");

    // A broken module.
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x01\0\0\0\xff\xff").unwrap();
    let m = fn_manifest(dir.path(), "broken", &broken, "/broken", "");
    deploy_refused(&d, &m, &["400:", "not a valid WebAssembly module"]);
    check_unchanged("an invalid module");

    // A module importing what the host does not provide.
    let foreign = wat_module(
        dir.path(),
        "foreign",
        r#"(module (import "env" "host_magic" (func)) (func (export "_start")))"#,
    );
    let m = fn_manifest(dir.path(), "foreign", &foreign, "/foreign", "");
    deploy_refused(&d, &m, &["400:", "env::host_magic"]);
    check_unchanged("a module with unknown imports");

    // A body that is not a deploy form.
    let r = client()
        .post(d.url("/_dispatcher/functions"))
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("multipart/form-data"));
    check_unchanged("a malformed request");

    // Still serving.
    assert_eq!(post(&d.url("/echo"), "ok").await, (200, "ok".into()));
}

#[tokio::test]
async fn a_64_mib_module_deploys_and_a_restart_keeps_the_deployed_set() {
    let (db, d) = platform("big");
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.wasm");
    padded(&wasm("echo"), &big, 65 << 20);
    let m = fn_manifest(dir.path(), "big", &big, "/big", "");
    let r = cli_json(&d, &["deploy", m.to_str().unwrap()]);
    assert_eq!(r[0]["action"], "deployed", "{r}");
    assert!(r[0]["module_size"].as_u64().unwrap() > 65 << 20);
    assert_eq!(post(&d.url("/big"), "large").await, (200, "large".into()));
    drop(d);

    // A fresh process on the same database, with a cold compile cache: it fetches the
    // module from the database and serves it.
    let cache = tempfile::tempdir().unwrap();
    let again = Dispatcher::start_bare(Options {
        cache_dir: Some(cache.path()),
        ..admin_opts(&db)
    });
    assert_eq!(post(&again.url("/big"), "kept").await, (200, "kept".into()));
    assert_eq!(
        names(&cli_json(&again, &["list"])),
        vec![("big".to_string(), 1)]
    );
}

#[tokio::test]
async fn startup_manifests_deploy_once_and_unchanged_files_are_no_ops() {
    let db = PlatformDb::create("startup");
    let dir = tempfile::tempdir().unwrap();
    fn_manifest(dir.path(), "echo", &wasm("echo"), "/echo", "");
    let d = Dispatcher::start_with(dir.path(), admin_opts(&db));
    assert_eq!(
        names(&cli_json(&d, &["list"])),
        vec![("echo".to_string(), 1)]
    );
    drop(d);
    let d = Dispatcher::start_with(dir.path(), admin_opts(&db));
    assert_eq!(
        names(&cli_json(&d, &["list"])),
        vec![("echo".to_string(), 1)]
    );
    assert!(d.wait_for_log("unchanged", Duration::from_secs(5)));
    drop(d);
    fn_manifest(
        dir.path(),
        "echo",
        &wasm("echo"),
        "/echo",
        "[env]\nA = \"b\"\n",
    );
    let d = Dispatcher::start_with(dir.path(), admin_opts(&db));
    assert_eq!(
        names(&cli_json(&d, &["list"])),
        vec![("echo".to_string(), 2)]
    );
    assert_eq!(post(&d.url("/echo"), "v2").await, (200, "v2".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_serves_a_deploy_within_2_s() {
    let (db, a) = platform("replica");
    let b = Dispatcher::start_bare(admin_opts(&db));
    let dir = tempfile::tempdir().unwrap();
    let m = fn_manifest(dir.path(), "svc", &wasm("echo"), "/svc", "");
    let m = m.to_str().unwrap();

    // Warm the compile cache, so that the figure is about sync, not compiling.
    assert!(cli(&a, &["deploy", m]).status.success());
    assert!(cli(&a, &["remove", "svc"]).status.success());
    assert!(wait_until(Duration::from_secs(5), || {
        std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &b.url("/svc"),
            ])
            .output()
            .map(|o| o.stdout == b"404")
            .unwrap_or(false)
    }));

    for (step, args, want) in [
        ("deploy", vec!["deploy", m], 200),
        ("remove", vec!["remove", "svc"], 404),
        ("rollback", vec!["rollback", "svc"], 200),
    ] {
        let out = cli(&a, &args);
        assert!(out.status.success(), "{step}: {}", stderr(&out));
        let started = Instant::now();
        let mut seen = 0;
        while started.elapsed() < Duration::from_secs(5) {
            seen = post(&b.url("/svc"), "x").await.0;
            if seen == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = started.elapsed();
        assert_eq!(seen, want, "replica b did not follow the {step}");
        assert!(
            took < Duration::from_secs(2),
            "replica b took {took:?} to follow the {step}"
        );
        println!("replica b followed the {step} in {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeploy_rollback_and_remove_under_load_fail_no_request() {
    let (_db, d) = platform("load");
    let dir = tempfile::tempdir().unwrap();
    let svc = fn_manifest(dir.path(), "svc", &wasm("echo"), "/svc", "");
    let svc = svc.to_str().unwrap().to_string();
    let other = fn_manifest(dir.path(), "other", &wasm("probe"), "/other", "");
    let other = other.to_str().unwrap().to_string();
    let slow = fn_manifest(dir.path(), "slow", &wasm("probe"), "/slow", "");
    let slow = slow.to_str().unwrap().to_string();
    for m in [&svc, &other, &slow] {
        assert!(cli(&d, &["deploy", m]).status.success());
    }
    // Both modules are compiled now, so each change below is a swap, not a compile.
    let load = Load::start(d.url("/svc?do=counter"), "echo", 4);
    let other_load = Load::start(d.url("/other?do=counter"), "", 2);
    std::thread::sleep(Duration::from_millis(300));

    let mut steps = 0;
    for round in 0..3 {
        // Redeploy svc with the other module, then with a changed manifest.
        fn_manifest(dir.path(), "svc", &wasm("probe"), "/svc", "");
        assert!(cli(&d, &["deploy", &svc]).status.success());
        std::thread::sleep(Duration::from_millis(150));
        fn_manifest(
            dir.path(),
            "svc",
            &wasm("echo"),
            "/svc",
            &format!("[env]\nROUND = \"{round}\"\n"),
        );
        assert!(cli(&d, &["deploy", &svc]).status.success());
        std::thread::sleep(Duration::from_millis(150));
        // Roll back, and update another function meanwhile.
        assert!(cli(&d, &["rollback", "svc"]).status.success());
        fn_manifest(
            dir.path(),
            "other",
            &wasm("probe"),
            "/other",
            &format!("[env]\nROUND = \"{round}\"\n"),
        );
        assert!(cli(&d, &["deploy", &other]).status.success());
        std::thread::sleep(Duration::from_millis(150));
        steps += 4;
    }

    // Remove a function with a request in flight: it finishes, then the route is 404.
    let slow_req = tokio::spawn({
        let url = d.url("/slow?do=sleep&ms=1500");
        async move { post(&url, "").await }
    });
    std::thread::sleep(Duration::from_millis(400));
    assert!(cli(&d, &["remove", "slow"]).status.success());
    assert_eq!(post(&d.url("/slow?do=counter"), "").await.0, 404);
    assert_eq!(
        slow_req.await.unwrap().0,
        200,
        "the in-flight request was cut off"
    );

    std::thread::sleep(Duration::from_millis(300));
    let svc_result = load.stop();
    let other_result = other_load.stop();
    println!(
        "{steps} changes under load: svc {} ok, other {} ok",
        svc_result.ok, other_result.ok
    );
    assert!(
        svc_result.failures.is_empty(),
        "svc failures: {:?}",
        &svc_result.failures[..svc_result.failures.len().min(5)]
    );
    assert!(
        other_result.failures.is_empty(),
        "other failures: {:?}",
        &other_result.failures[..other_result.failures.len().min(5)]
    );
    assert!(
        svc_result.ok > 100 && other_result.ok > 50,
        "too little load to mean anything"
    );
    // Both versions answered: the swaps happened under load.
    assert!(
        svc_result.bodies.contains(&"echo".to_string()),
        "{:?}",
        svc_result.bodies
    );
    assert!(
        svc_result.bodies.contains(&"1".to_string()),
        "{:?}",
        svc_result.bodies
    );
}

#[tokio::test]
async fn serve_watch_redeploys_a_rebuilt_wasm() {
    let db = PlatformDb::create("watch");
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("svc.wasm");
    std::fs::copy(wasm("echo"), &module).unwrap();
    fn_manifest(dir.path(), "svc", Path::new("svc.wasm"), "/svc", "");
    let d = Dispatcher::start_with(
        dir.path(),
        Options {
            args: vec!["--watch"],
            ..admin_opts(&db)
        },
    );
    assert_eq!(
        post(&d.url("/svc?do=counter"), "e").await,
        (200, "e".into())
    );

    // "Rebuild": the new module lands by rename, as cargo and editors do.
    let tmp = dir.path().join("svc.wasm.tmp");
    std::fs::copy(wasm("probe"), &tmp).unwrap();
    std::fs::rename(&tmp, &module).unwrap();
    let started = Instant::now();
    let mut body = String::new();
    while started.elapsed() < Duration::from_secs(10) {
        body = post(&d.url("/svc?do=counter"), "e").await.1;
        if body == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(body, "1", "the rebuilt module was not picked up");
    println!(
        "--watch picked up the rebuilt module in {:?}",
        started.elapsed()
    );
    assert_eq!(
        names(&cli_json(&d, &["list"])),
        vec![("svc".to_string(), 2)]
    );

    // A broken edit is logged and the running version stays.
    std::fs::write(dir.path().join("svc.toml"), "name = \"svc\"\nwasm = 5\n").unwrap();
    assert!(d.wait_for_log("not redeployed", Duration::from_secs(5)));
    assert_eq!(
        post(&d.url("/svc?do=counter"), "e").await,
        (200, "1".into())
    );
}

/// Fire runs of `function` recorded in the platform database.
fn fires(db: &PlatformDb, function: &str) -> usize {
    sql(&format!(
        "SELECT COUNT(*) FROM {}.dispatcher_schedule_fires WHERE function_name = '{function}'",
        db.name
    ))
    .trim()
    .parse()
    .unwrap()
}

#[tokio::test]
async fn a_deployed_schedule_fires_and_stops_when_removed() {
    let (db, d) = platform("sched");
    let dir = tempfile::tempdir().unwrap();
    manifest(
        dir.path(),
        "tick",
        &format!(
            "name = \"tick\"\nwasm = \"{}\"\n[[trigger.schedule]]\nname = \"every\"\ncron = \"* * * * * *\"\n",
            wasm("probe").display()
        ),
    );
    let m = dir.path().join("tick.toml");
    assert!(cli(&d, &["deploy", m.to_str().unwrap()]).status.success());
    assert!(
        wait_until(Duration::from_secs(5), || fires(&db, "tick") >= 2),
        "the deployed schedule did not fire: {}",
        d.log_text()
    );
    let list = cli_json(&d, &["list"]);
    assert_eq!(list[0]["schedules"][0], "every \"* * * * * *\" UTC");

    // Invoke runs a job once, as its own event, with the body and query given.
    let out = cli(
        &d,
        &["invoke", "tick", "--query", "do=env", "--data", "{\"k\":1}"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let env: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(env["env"]["TRIGGER"], "invoke", "{env}");
    assert_eq!(env["stdin_len"], 7, "{env}");

    assert!(cli(&d, &["remove", "tick"]).status.success());
    std::thread::sleep(Duration::from_millis(1200));
    let after_remove = fires(&db, "tick");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        fires(&db, "tick"),
        after_remove,
        "a removed schedule kept firing"
    );
}

#[tokio::test]
async fn a_lost_platform_database_refuses_deploys_and_keeps_serving() {
    let (db, d) = platform("lost");
    let dir = tempfile::tempdir().unwrap();
    let m = fn_manifest(dir.path(), "svc", &wasm("echo"), "/svc", "");
    assert!(cli(&d, &["deploy", m.to_str().unwrap()]).status.success());

    // The catalog's tables vanish (as if the database were lost).
    sql(&format!("DROP DATABASE {}", db.name));
    let other = fn_manifest(dir.path(), "other", &wasm("echo"), "/other", "");
    let out = cli(&d, &["deploy", other.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("503: the platform database failed, nothing was changed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(post(&d.url("/other"), "x").await.0, 404);
    assert_eq!(post(&d.url("/svc"), "still").await, (200, "still".into()));
    assert!(d.wait_for_log("cannot read the deploy catalog", Duration::from_secs(5)));
    // Recreated so that PlatformDb's drop finds it.
    sql(&format!("CREATE DATABASE {}", db.name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_deploys_to_two_replicas_cannot_both_take_a_route() {
    let (db, a) = platform("race");
    let b = Dispatcher::start_bare(admin_opts(&db));
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let path = format!("/r{round}");
        let one = fn_manifest(dir.path(), &format!("one{round}"), &wasm("echo"), &path, "");
        let two = fn_manifest(
            dir.path(),
            &format!("two{round}"),
            &wasm("probe"),
            &path,
            "",
        );
        let (one, two) = (
            one.to_str().unwrap().to_string(),
            two.to_str().unwrap().to_string(),
        );
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| cli(&a, &["deploy", &one]));
            let tb = s.spawn(|| cli(&b, &["deploy", &two]));
            (ta.join().unwrap(), tb.join().unwrap())
        });
        assert!(
            ra.status.success() != rb.status.success(),
            "exactly one deploy may win: a: {} b: {}",
            stderr(&ra),
            stderr(&rb)
        );
        let loser = if ra.status.success() { &rb } else { &ra };
        assert!(stderr(loser).contains("409: route"), "{}", stderr(loser));
        // Both replicas serve the winner.
        let want = if ra.status.success() { "x" } else { "1" };
        for d in [&a, &b] {
            let url = d.url(&format!("{path}?do=counter"));
            let mut got = (0, String::new());
            for _ in 0..100 {
                got = post(&url, "x").await;
                if got == (200, want.to_string()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(got, (200, want.to_string()), "replica {} at {path}", d.url);
        }
    }
}

#[tokio::test]
async fn a_replica_that_cannot_load_a_version_retries_until_it_can() {
    let (db, a) = platform("retry");
    let dir = tempfile::tempdir().unwrap();
    let m = fn_manifest(dir.path(), "svc", &wasm("echo"), "/svc", "");
    assert!(cli(&a, &["deploy", m.to_str().unwrap()]).status.success());

    // The module's bytes go missing from the catalog, and replica b has never compiled it.
    let t = &db.name;
    sql(&format!(
        "CREATE TABLE {t}.saved AS SELECT * FROM {t}.dispatcher_module_chunks; DELETE FROM {t}.dispatcher_module_chunks"
    ));
    let cache = tempfile::tempdir().unwrap();
    let b = Dispatcher::start_bare(Options {
        cache_dir: Some(cache.path()),
        ..admin_opts(&db)
    });
    assert!(b.wait_for_log(
        "cannot serve this version on this replica",
        Duration::from_secs(5)
    ));
    assert_eq!(post(&b.url("/svc"), "x").await.0, 404);
    std::thread::sleep(Duration::from_millis(1200));
    let said = b
        .log_text()
        .lines()
        .filter(|l| l.contains("cannot serve this version"))
        .count();
    assert_eq!(said, 1, "the failure is logged once, not at every retry");

    // Once the bytes are back, the next sync loads it.
    sql(&format!(
        "INSERT INTO {t}.dispatcher_module_chunks SELECT * FROM {t}.saved"
    ));
    let started = Instant::now();
    let mut got = (0, String::new());
    while started.elapsed() < Duration::from_secs(5) {
        got = post(&b.url("/svc"), "back").await;
        if got.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got, (200, "back".into()), "replica b never retried");
}
