//! A replica's life as a load balancer or an orchestrator sees it: 503 `starting` until its
//! functions are loaded, tiered compiles that serve at once and are optimized behind, a
//! precompiled folder (an image's) used by a replica whose own cache is empty, and 503
//! `draining` after SIGTERM while it still serves for the drain delay.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    bare_command, check_into, client, manifest, wait_until, wasm, Dispatcher, Options,
};

/// A free port on 127.0.0.1 (bound and released), for a process that must be polled before
/// it says where it listens.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn route_manifest(dir: &std::path::Path, name: &str, module: &str, path: &str) {
    manifest(
        dir,
        name,
        &format!(
            "name = \"{name}\"\nwasm = \"{}\"\n[trigger.http]\npath = \"{path}\"\n",
            wasm(module).display()
        ),
    );
}

async fn health(url: &str) -> Option<(u16, Value)> {
    let resp = client()
        .get(format!("{url}/_dispatcher/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().await.ok()?))
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn health_says_starting_until_the_functions_are_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    // Two 2 MB modules compiled with Cranelift, from an empty cache: start-up takes a while.
    route_manifest(dir.path(), "big_a", "create_orders", "/a");
    route_manifest(dir.path(), "big_b", "list_orders", "/b");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let child = bare_command()
        .args(["serve", "--compile", "optimized", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--manifests")
        .arg(dir.path())
        .arg("--cache-dir")
        .arg(cache.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _child = Killed(child);

    let started = Instant::now();
    let mut starting = 0;
    let mut function_answer = None;
    let ready = loop {
        assert!(started.elapsed() < Duration::from_secs(60), "never ready");
        match health(&url).await {
            Some((503, body)) => {
                assert_eq!(body["status"], "starting", "{body}");
                starting += 1;
                if function_answer.is_none() {
                    let resp = client().get(format!("{url}/a")).send().await.unwrap();
                    let retry = resp.headers().get("retry-after").cloned();
                    function_answer = Some((resp.status().as_u16(), retry));
                }
            }
            Some((200, body)) => break body,
            Some((status, body)) => panic!("health answered {status}: {body}"),
            // Not listening yet.
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        starting > 0,
        "health never said `starting` while the modules compiled"
    );
    let (status, retry) = function_answer.unwrap();
    assert_eq!(status, 503, "a function route while starting");
    assert_eq!(retry.unwrap(), "1");
    assert_eq!(ready["status"], "ok");
    assert_eq!(ready["functions"], 2, "{ready}");
}

#[tokio::test]
async fn a_new_module_serves_from_baseline_code_and_is_optimized_behind() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    route_manifest(dir.path(), "echo", "echo", "/echo");
    route_manifest(dir.path(), "big", "create_orders", "/big");
    let d = Dispatcher::start_with(
        dir.path(),
        Options {
            cache_dir: Some(cache.path()),
            ..Options::default()
        },
    );
    // Ready, and serving, before Cranelift is done with the 2 MB module.
    let (status, body) = health(&d.url).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        body["optimizing"].as_u64().unwrap() >= 1,
        "the big module should still be compiling in the background: {body}"
    );
    let echo = |text: &'static str| {
        let url = d.url("/echo");
        async move {
            let resp = client().post(url).body(text).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    assert_eq!(echo("baseline").await, (200, "baseline".to_string()));

    // Both are optimized behind, their artifacts cached, and the answers unchanged.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = health(&d.url).await.unwrap();
        if body["optimizing"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still optimizing: {body}\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The log is written in batches: the lines may land just after the count reaches 0.
    let swapped = || d.log_text().matches("optimized code swapped in").count();
    wait_until(Duration::from_secs(2), || swapped() >= 2);
    assert_eq!(swapped(), 2, "{}", d.log_text());
    let artifacts = std::fs::read_dir(cache.path()).unwrap().count();
    assert_eq!(artifacts, 2, "one Cranelift artifact per module");
    assert_eq!(echo("optimized").await, (200, "optimized".to_string()));
}

#[tokio::test]
async fn a_replica_with_an_empty_cache_loads_from_the_precompiled_folder() {
    let dir = tempfile::tempdir().unwrap();
    let precompiled = tempfile::tempdir().unwrap();
    route_manifest(dir.path(), "echo", "echo", "/echo");
    // `check` fills the folder with Cranelift's code, as the image build does.
    check_into(dir.path(), precompiled.path());
    assert_eq!(std::fs::read_dir(precompiled.path()).unwrap().count(), 1);

    let cache = tempfile::tempdir().unwrap();
    let precompiled_arg = precompiled.path().display().to_string();
    let d = Dispatcher::start_with(
        dir.path(),
        Options {
            cache_dir: Some(cache.path()),
            args: vec!["--precompiled", &precompiled_arg],
            ..Options::default()
        },
    );
    assert!(
        d.wait_for_log("compiled=false", Duration::from_secs(5)),
        "{}",
        d.log_text()
    );
    let resp = client()
        .post(d.url("/echo"))
        .body("precompiled")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "precompiled");
    // Nothing was compiled, so nothing was written to the replica's own cache.
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
    assert!(!d.log_text().contains("optimized code swapped in"));
}

#[tokio::test]
async fn sigterm_answers_draining_and_keeps_serving_for_the_drain_delay() {
    let dir = tempfile::tempdir().unwrap();
    route_manifest(dir.path(), "echo", "echo", "/echo");
    let mut d = Dispatcher::start_with(
        dir.path(),
        Options {
            args: vec!["--drain-delay", "1.5"],
            ..Options::default()
        },
    );
    assert_eq!(health(&d.url).await.unwrap().0, 200);
    let signalled = Instant::now();
    d.terminate();
    assert!(
        d.wait_for_log("still accepting", Duration::from_secs(5)),
        "{}",
        d.log_text()
    );
    let (status, body) = health(&d.url).await.unwrap();
    assert_eq!(
        (status, body["status"].as_str()),
        (503, Some("draining")),
        "{body}"
    );
    // A new connection is still served, and told to close.
    let resp = client()
        .post(d.url("/echo"))
        .body("still here")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["connection"], "close");
    assert_eq!(resp.text().await.unwrap(), "still here");

    let exited = wait_until(Duration::from_secs(15), || {
        d.child.try_wait().unwrap().is_some()
    });
    assert!(exited, "{}", d.log_text());
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(1400),
        "it stopped {took:?} after SIGTERM, before the 1.5 s drain delay"
    );
    assert!(d.child.try_wait().unwrap().unwrap().success());
    assert!(
        client()
            .get(d.url("/_dispatcher/health"))
            .send()
            .await
            .is_err(),
        "nothing listens after the exit"
    );
}
