//! What an operator sees: Prometheus metrics on their own listener (parsed with Python's
//! `prometheus_client`, a real scraper's parser), request ids from the client to the guest,
//! the log and back, JSON logs, and each function's recent lines over the API and the CLI.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{bare_command, client, probe, wait_until, Dispatcher, Options};

const TOKEN: &str = "observe-token";

fn with_token(args: Vec<&str>) -> Options<'_> {
    Options {
        env: vec![("DISPATCHER_ADMIN_TOKEN", TOKEN.to_string())],
        args,
        ..Options::default()
    }
}

/// The metrics listener's address, from the line the dispatcher logs when it opens it.
fn metrics_url(d: &Dispatcher) -> String {
    assert!(
        d.wait_for_log("metrics on http://", Duration::from_secs(30)),
        "no metrics listener in the log:\n{}",
        d.log_text()
    );
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("metrics on http://"))
        .unwrap();
    let at = line.find("http://").unwrap();
    line[at..].split_whitespace().next().unwrap().to_string()
}

/// Every sample of a scrape, as Python's `prometheus_client` OpenMetrics parser reads it:
/// `name{label="v",...}` (labels sorted) to value.
fn parse_scrape(text: &str) -> BTreeMap<String, f64> {
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join('%s="%s"' % (k, v) for k, v in sorted(s.labels.items()))
        out["%s{%s}" % (s.name, labels)] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/setup.sh installs prometheus_client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the scrape does not parse as OpenMetrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sample(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in the scrape: {:#?}", samples.keys()))
}

#[tokio::test]
async fn metrics_count_every_outcome_and_the_histograms_agree() {
    let dir = tempfile::tempdir().unwrap();
    probe(dir.path(), "probe", "/p", "[limits]\ntimeout_ms = 400\n");
    let d = Dispatcher::start_with(
        dir.path(),
        with_token(vec!["--metrics-listen", "127.0.0.1:0"]),
    );
    let metrics = metrics_url(&d);
    let c = client();
    // Known outcomes: 5 ok (2xx), 3 ok with the function's own 404, 2 traps, 2 exits,
    // 1 timeout, 2 bad outputs; 4 requests no function serves; 1 admin invoke.
    let plan: &[(&str, usize, u16)] = &[
        ("/p?do=counter", 5, 200),
        ("/p?do=status&code=404", 3, 404),
        ("/p?do=panic", 2, 502),
        ("/p?do=exit&code=3", 2, 502),
        ("/p?do=sleep&ms=5000", 1, 504),
        ("/p?do=garbage", 2, 502),
        ("/nothing-here", 4, 404),
    ];
    for (path, n, status) in plan {
        for _ in 0..*n {
            let resp = c.get(d.url(path)).send().await.unwrap();
            assert_eq!(resp.status(), *status, "{path}");
        }
    }
    let resp = c
        .post(d.url("/_dispatcher/functions/probe/invoke?do=counter"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let scrape = c.get(&metrics).send().await.unwrap();
    assert_eq!(scrape.status(), 200);
    assert!(scrape.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let samples = parse_scrape(&scrape.text().await.unwrap());
    let inv = |trigger: &str, outcome: &str, status: &str| {
        sample(
            &samples,
            &format!("dispatcher_invocations_total{{function=\"probe\",outcome=\"{outcome}\",status=\"{status}\",trigger=\"{trigger}\"}}"),
        )
    };
    assert_eq!(inv("http", "ok", "2xx"), 5.0);
    assert_eq!(inv("http", "ok", "4xx"), 3.0);
    assert_eq!(inv("http", "trap", "5xx"), 2.0);
    assert_eq!(inv("http", "exit", "5xx"), 2.0);
    assert_eq!(inv("http", "timeout", "5xx"), 1.0);
    assert_eq!(inv("http", "bad_output", "5xx"), 2.0);
    assert_eq!(inv("invoke", "ok", "2xx"), 1.0);
    let http = "function=\"probe\",trigger=\"http\"";
    assert_eq!(
        sample(
            &samples,
            &format!("dispatcher_invocation_duration_seconds_count{{{http}}}")
        ),
        15.0,
        "the histogram counts every HTTP invocation"
    );
    assert_eq!(
        sample(
            &samples,
            "dispatcher_invocation_duration_seconds_bucket{function=\"probe\",le=\"+Inf\",trigger=\"http\"}"
        ),
        15.0
    );
    let timeout_floor = sample(
        &samples,
        &format!("dispatcher_invocation_duration_seconds_sum{{{http}}}"),
    );
    assert!(
        timeout_floor >= 0.4,
        "the timed-out run alone took 0.4 s: {timeout_floor}"
    );
    assert_eq!(
        sample(
            &samples,
            &format!("dispatcher_instantiate_seconds_count{{{http}}}")
        ),
        15.0
    );
    assert_eq!(
        sample(
            &samples,
            &format!("dispatcher_invocations_in_flight{{{http}}}")
        ),
        0.0
    );
    assert!(
        sample(
            &samples,
            &format!("dispatcher_output_bytes_total{{{http}}}")
        ) > 0.0
    );
    assert_eq!(
        sample(
            &samples,
            "dispatcher_unrouted_requests_total{reason=\"not_found\"}"
        ),
        4.0
    );
    assert_eq!(sample(&samples, "dispatcher_functions{}"), 1.0);
    assert_eq!(
        sample(&samples, "dispatcher_deploys_total{action=\"deployed\"}"),
        1.0
    );
    assert_eq!(
        sample(&samples, "dispatcher_catalog_generation{}"),
        sample(&samples, "dispatcher_catalog_applied_generation{}")
    );
    // No path, query or request id in any label.
    for key in samples.keys() {
        assert!(!key.contains("do=") && !key.contains("/p"), "{key}");
    }
    // Only /metrics is served there.
    let other = c
        .get(metrics.replace("/metrics", "/other"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

async fn json(resp: reqwest::Response) -> Value {
    resp.json().await.unwrap()
}

#[tokio::test]
async fn a_request_id_goes_to_the_guest_the_response_the_log_and_the_logs_api() {
    let dir = tempfile::tempdir().unwrap();
    probe(dir.path(), "talker", "/t", "");
    let d = Dispatcher::start_with(dir.path(), with_token(Vec::new()));
    let c = client();

    // A sane client id is kept: the guest sees it, the response carries it.
    let resp = c
        .get(d.url("/t?do=env"))
        .header("x-request-id", "client-id-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "client-id-42");
    let env = json(resp).await;
    assert_eq!(env["env"]["REQUEST_ID"], "client-id-42", "{env}");

    // One that is not a sane token is replaced by a new one, and each request gets its own.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let resp = c
            .get(d.url("/t?do=env"))
            .header("x-request-id", "has spaces; and=more")
            .send()
            .await
            .unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_ne!(id, "has spaces; and=more");
        let env = json(resp).await;
        assert_eq!(env["env"]["REQUEST_ID"], id.as_str());
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
    // 404s and admin calls carry one too.
    let resp = c.get(d.url("/missing")).send().await.unwrap();
    assert!(resp.headers().contains_key("x-request-id"));

    // The guest's stderr lines carry the id in the log and in the logs API.
    let resp = c
        .get(d.url("/t?do=stderr"))
        .header("x-request-id", "talk-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(d.wait_for_log("first line from the probe", Duration::from_secs(5)));
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("first line from the probe"))
        .unwrap();
    assert!(
        line.contains("request_id=talk-1") && line.contains("talker"),
        "{line}"
    );
    assert!(d.wait_for_log("request_id=talk-1", Duration::from_secs(5)));

    let logs = c
        .get(d.url("/_dispatcher/functions/talker/logs?request=talk-1"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(logs.status(), 200);
    assert_eq!(logs.headers()["content-type"], "application/x-ndjson");
    let text = logs.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines
        .iter()
        .all(|l| l["request_id"] == "talk-1" && l["source"] == "guest"));
    assert!(lines[0]["message"]
        .as_str()
        .unwrap()
        .contains("first line from the probe"));

    // A failed invocation's platform line is kept with its id; the invocations list has both.
    let resp = c
        .get(d.url("/t?do=panic"))
        .header("x-request-id", "crash-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let all = c
        .get(d.url("/_dispatcher/functions/talker/logs?request=crash-1"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        all.contains("\"source\":\"platform\"") && all.contains("trap"),
        "{all}"
    );
    let invocations = json(
        c.get(d.url("/_dispatcher/functions/talker/invocations"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let newest = &invocations[0];
    assert_eq!(newest["request_id"], "crash-1");
    assert_eq!(newest["outcome"], "trap");
    assert_eq!(newest["status"], 502);
    assert_eq!(invocations[1]["request_id"], "talk-1");

    // The CLI prints one invocation's lines.
    let out = bare_command()
        .args([
            "logs",
            "talker",
            "--request",
            "talk-1",
            "--server",
            &d.url,
            "--token",
            TOKEN,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(
        stdout.lines().all(|l| l.contains("talk-1 guest info:")),
        "{stdout}"
    );

    // Unknown functions and a bad token are refused clearly.
    let resp = c
        .get(d.url("/_dispatcher/functions/nobody/logs"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = c
        .get(d.url("/_dispatcher/functions/talker/logs"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn logs_follow_streams_new_lines_to_the_api_and_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    probe(dir.path(), "talker", "/t", "");
    let d = Dispatcher::start_with(dir.path(), with_token(Vec::new()));
    let c = client();
    let mut stream = c
        .get(d.url("/_dispatcher/functions/talker/logs?follow=1"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);

    // The CLI follows too, in its own process.
    let mut cli = bare_command()
        .args([
            "logs", "talker", "--follow", "--server", &d.url, "--token", TOKEN,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let cli_out = cli.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(cli_out)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Give the CLI a moment to subscribe before the lines are written.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let resp = c
        .get(d.url("/t?do=stderr"))
        .header("x-request-id", "live-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !got.contains("second line from the probe") {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("the followed stream sent the new lines within 10 s")
            .unwrap()
            .expect("the stream stays open");
        got.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(got.contains("\"request_id\":\"live-1\""), "{got}");

    let mut cli_lines = Vec::new();
    let found = wait_until(Duration::from_secs(10), || {
        while let Ok(l) = rx.try_recv() {
            cli_lines.push(l);
        }
        cli_lines
            .iter()
            .any(|l| l.contains("second line from the probe"))
    });
    let _ = cli.kill();
    let _ = cli.wait();
    assert!(found, "the CLI printed: {cli_lines:?}");
    assert!(cli_lines
        .iter()
        .any(|l| l.contains("live-1 guest info: first line")));

    // Shutting down ends the stream (the drain does not wait on it).
    d.terminate();
    let ended = tokio::time::timeout(Duration::from_secs(8), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the followed stream ended at shutdown");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    probe(dir.path(), "talker", "/t", "");
    let d = Dispatcher::start_with(
        dir.path(),
        Options {
            args: vec!["--log-format", "json"],
            ..Options::default()
        },
    );
    let resp = client()
        .get(d.url("/t?do=stderr"))
        .header("x-request-id", "json-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(d.wait_for_log("status", Duration::from_secs(5)));
    assert!(d.wait_for_log("json-1", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(200));
    let log = d.log_text();
    let objects: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let guest = objects
        .iter()
        .find(|o| {
            o["message"]
                .as_str()
                .is_some_and(|m| m.contains("first line from the probe"))
        })
        .expect("the guest's line");
    assert_eq!(guest["request_id"], "json-1");
    assert_eq!(guest["function"], "talker");
    assert_eq!(guest["target"], "guest");
    assert!(guest["timestamp"].is_string() && guest["level"] == "INFO");
    let request = objects
        .iter()
        .find(|o| o["target"] == "request" && o["request_id"] == "json-1")
        .expect("the request's line");
    assert_eq!(request["status"], 200);
    assert_eq!(request["function"], "talker");
}

#[tokio::test]
async fn a_scheduled_attempt_has_its_own_request_id_in_the_run_history_and_its_log_lines() {
    let db = crate::harness::PlatformDb::create("runid");
    let dir = tempfile::tempdir().unwrap();
    crate::harness::manifest(
        dir.path(),
        "ticker",
        &format!(
            "name = \"ticker\"\nwasm = \"{}\"\n[[trigger.schedule]]\nname = \"tick\"\ncron = \"* * * * * *\"\n",
            crate::harness::wasm("probe").display()
        ),
    );
    let mut opts = db.opts();
    opts.env.push(("DISPATCHER_ADMIN_TOKEN", TOKEN.to_string()));
    let d = Dispatcher::start_with(dir.path(), opts);
    assert!(d.wait_for_log("schedule-done", Duration::from_secs(15)));
    // The history names the attempt's id ...
    let out = bare_command()
        .args(["runs", "ticker", "--json", "--db", &db.url()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let done = runs
        .iter()
        .find(|r| r["status"] == "succeeded")
        .unwrap_or_else(|| panic!("no succeeded run: {runs:?}"));
    let id = done["request_id"]
        .as_str()
        .expect("a request id")
        .to_string();
    assert_eq!(id.len(), 24, "{id}");
    // ... and the function's lines of that attempt carry it, in the log and the logs API.
    assert!(d.wait_for_log(&format!("request_id={id}"), Duration::from_secs(5)));
    let text = client()
        .get(d.url(&format!("/_dispatcher/functions/ticker/logs?request={id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("schedule-event name=tick"), "{text}");
    assert!(text.contains("schedule-done"), "{text}");
    // The table shows it too.
    let out = bare_command()
        .args(["runs", "ticker", "--db", &db.url()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.lines().next().unwrap_or("").contains("REQUEST ID"),
        "{table}"
    );
    assert!(table.contains(&id), "{table}");
}
