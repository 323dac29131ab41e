//! The web dashboard in a real browser (Debian's headless Chromium, driven by chromedriver
//! through Selenium: `dispatcher/tests/browser/dashboard.py`) against a real dispatcher
//! serving the demo functions: sign in, see them, watch a request count rise, roll a function
//! back from the page; then check over HTTP that the old version answers.

use std::path::Path;
use std::process::Command;

use crate::harness::{
    bare_command, client, manifest, repo, sql, unique_name, wasm, Dispatcher, Options,
};

const TOKEN: &str = "dashboard-token";

/// The demo manifests (`manifests/`), their modules found from `dir`.
fn demo_manifests(dir: &Path) {
    let demo = repo().join("manifests");
    for entry in std::fs::read_dir(&demo).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("\"../target/", &format!("\"{}/target/", repo().display()));
            std::fs::write(dir.join(path.file_name().unwrap()), text).unwrap();
        }
    }
}

fn greeter(dir: &Path, tag: &str) {
    manifest(
        dir,
        "greeter",
        &format!(
            "name = \"greeter\"\nwasm = \"{}\"\n[trigger.http]\npath = \"/greet\"\n[env]\nGREETING = \"{tag}\"\n",
            wasm("probe").display()
        ),
    );
}

async fn greeting(d: &Dispatcher) -> String {
    let env: serde_json::Value = client()
        .get(d.url("/greet?do=env"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    env["env"]["GREETING"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn sign_in_watch_requests_and_roll_back_in_a_real_browser() {
    let db = unique_name("dash", "db");
    sql(&format!("CREATE DATABASE {db}"));
    let dir = tempfile::tempdir().unwrap();
    demo_manifests(dir.path());
    greeter(dir.path(), "hello from v1");
    let d = Dispatcher::start_with(
        dir.path(),
        Options {
            env: vec![
                ("DISPATCHER_ADMIN_TOKEN", TOKEN.to_string()),
                ("DATABASE_URL", format!("mysql://root@127.0.0.1:3306/{db}")),
                ("NOTIFY_URL", "http://127.0.0.1:9/events".into()),
            ],
            ..Options::default()
        },
    );
    // v2 of greeter, deployed with the CLI.
    let v2 = tempfile::tempdir().unwrap();
    greeter(v2.path(), "hello from v2");
    let out = bare_command()
        .arg("deploy")
        .arg(v2.path().join("greeter.toml"))
        .args(["--server", &d.url, "--token", TOKEN])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(greeting(&d).await, "hello from v2");

    // The page itself is public; what it calls needs the token.
    let page = client()
        .get(d.url("/_dispatcher/ui/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    let redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(d.url("/_dispatcher/ui"))
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 308);

    let shot = std::env::var("DASHBOARD_SCREENSHOT").ok();
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("dispatcher/tests/browser/dashboard.py"))
        .args([&d.url, TOKEN]);
    if let Some(path) = &shot {
        cmd.args(["--screenshot", path]);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let steps = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser test failed after:\n{steps}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(steps.contains("rolled greeter back to v1"), "{steps}");

    // Over HTTP, the old version answers.
    assert_eq!(greeting(&d).await, "hello from v1");
    sql(&format!("DROP DATABASE IF EXISTS {db}"));
}
