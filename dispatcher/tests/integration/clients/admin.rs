//! The admin API's clients: a flood of bad tokens (429 past the limit, one log line per
//! interval, the right token still let in) and malformed deploys (each a 4xx naming what was
//! expected), with the platform serving throughout.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{addr, back_near, read_to_close, serving, start, status_of, TOKEN};
use crate::harness::{client, wasm};

#[tokio::test]
async fn a_flood_of_bad_tokens_gets_429_and_one_log_line_and_the_right_token_gets_in() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), &[]);
    serving(&d).await;
    let before = d.usage();
    let url = d.url("/_dispatcher/functions");
    let http = client();
    let started = Instant::now();
    let mut flood = Vec::new();
    for _ in 0..25 {
        let (http, url) = (http.clone(), url.clone());
        flood.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..20 {
                let r = http.get(&url).bearer_auth("wrong").send().await.unwrap();
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                answers.push((r.status().as_u16(), retry, r.text().await.unwrap()));
            }
            answers
        }));
    }
    // The operator's right token is let in during the flood, from the same address.
    for _ in 0..5 {
        let r = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(
            r.status(),
            200,
            "the right token was refused during a flood"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut unauthorized, mut too_many) = (0, 0);
    for task in flood {
        for (status, retry, body) in task.await.unwrap() {
            match status {
                401 => unauthorized += 1,
                429 => {
                    too_many += 1;
                    let secs: u64 = retry.expect("429 without Retry-After").parse().unwrap();
                    assert!((1..=10).contains(&secs), "Retry-After: {secs}");
                    assert!(body.contains("too_many_refusals"), "{body}");
                }
                other => panic!("a wrong token got {other}: {body}"),
            }
        }
    }
    let took = started.elapsed();
    // Its pooled keep-alive connections close with it.
    drop(http);
    assert_eq!((unauthorized, too_many), (10, 490), "401s and 429s of 500");
    serving(&d).await;
    // One line for the first refusal; the rest counted on one line when the interval ends.
    let summary = "more admin requests with a wrong token refused in the last 10 s";
    assert!(
        d.wait_for_log(summary, Duration::from_secs(15)),
        "{}",
        d.log_text()
    );
    let log = d.log_text();
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("refused")).collect();
    assert!(refusals.len() <= 2, "{refusals:#?}");
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("499 more admin requests")),
        "{refusals:#?}"
    );
    println!(
        "500 bad tokens in {took:?}: 10 x 401, 490 x 429, {} log lines",
        refusals.len()
    );
    back_near(&d, before, "500 bad tokens");
}

const B: &str = "----clients-test-boundary";

/// One form part.
fn part(name: &str, file: Option<&str>, data: &[u8]) -> Vec<u8> {
    let file = file.map_or(String::new(), |f| format!("; filename=\"{f}\""));
    let head = format!("--{B}\r\nContent-Disposition: form-data; name=\"{name}\"{file}\r\n\r\n");
    [head.as_bytes(), data, b"\r\n"].concat()
}

/// A whole form of `parts`.
fn form(parts: &[Vec<u8>]) -> Vec<u8> {
    [parts.concat(), format!("--{B}--\r\n").into_bytes()].concat()
}

fn good_manifest(name: &str) -> Vec<u8> {
    let text =
        format!("name = \"{name}\"\nwasm = \"{name}.wasm\"\n[trigger.http]\npath = \"/{name}\"\n");
    part("manifest", Some(&format!("{name}.toml")), text.as_bytes())
}

/// POSTs a deploy body with `content_type`; returns the status and the JSON answer.
async fn deploy(url: &str, content_type: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut req = client().post(url).bearer_auth(TOKEN).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, json)
}

/// What a malformed deploy is: its name, content type and body, and the status and words of
/// the answer it must get.
type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);

#[tokio::test]
async fn malformed_deploys_each_get_a_clear_4xx_and_the_platform_serves() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(
        dir.path(),
        &["--max-deploy", "1048576", "--body-timeout", "1"],
    );
    serving(&d).await;
    let url = d.url("/_dispatcher/functions");
    let module = std::fs::read(wasm("probe")).unwrap();
    let form_type = format!("multipart/form-data; boundary={B}");
    let ok_wasm = || part("wasm", Some("good.wasm"), b"\0asm\x01\0\0\0");
    let many_headers: String = (0..1000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<Case> = vec![
        ("no content type", None, form(&[]), 400, "no Content-Type"),
        (
            "JSON",
            Some("application/json"),
            b"{}".to_vec(),
            400,
            "is `application/json`",
        ),
        (
            "no boundary",
            Some("multipart/form-data"),
            form(&[]),
            400,
            "no boundary",
        ),
        (
            "truncated",
            Some(&form_type),
            good_manifest("good")[..40].to_vec(),
            400,
            "ends early",
        ),
        ("no parts", Some(&form_type), form(&[]), 400, "no parts"),
        (
            "no wasm",
            Some(&form_type),
            form(&[good_manifest("good")]),
            400,
            "no `wasm` part",
        ),
        (
            "no manifest",
            Some(&form_type),
            form(&[ok_wasm()]),
            400,
            "no `manifest` part",
        ),
        (
            "two manifests",
            Some(&form_type),
            form(&[good_manifest("good"), good_manifest("good"), ok_wasm()]),
            400,
            "more than one `manifest` part",
        ),
        (
            "a 100 kB part name",
            Some(&form_type),
            form(&[part(&"n".repeat(100_000), None, b"x")]),
            400,
            "unexpected form part",
        ),
        (
            "1,000 part headers",
            Some(&form_type),
            form(&[format!("--{B}\r\n{many_headers}\r\nx\r\n").into_bytes()]),
            400,
            "malformed",
        ),
        (
            "a manifest that is not UTF-8",
            Some(&form_type),
            form(&[part("manifest", None, b"name = \"\xff\xfe\""), ok_wasm()]),
            400,
            "not UTF-8",
        ),
        (
            "2 MiB, over --max-deploy",
            Some(&form_type),
            form(&[good_manifest("good"), part("wasm", None, &vec![0; 2 << 20])]),
            413,
            "larger than 1048576 bytes",
        ),
    ];
    let before = d.usage();
    for (what, content_type, body, status, needle) in cases {
        let (got, json) = deploy(&url, content_type, body).await;
        let message = json["message"].as_str().unwrap_or_default();
        assert_eq!(got, status, "{what}: {json}");
        assert!(message.contains(needle), "{what}: {message}");
        assert!(
            message.len() < 400,
            "{what}: the answer quotes too much: {message}"
        );
        serving(&d).await;
    }
    // A deploy whose body stops coming: 408 within the body timeout, connection closed.
    let mut s = TcpStream::connect(addr(&d)).await.unwrap();
    let head = format!(
        "POST /_dispatcher/functions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: {form_type}\r\nContent-Length: 100000\r\n\r\n--{B}\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let got = read_to_close(&mut s, Duration::from_secs(5))
        .await
        .expect("still open");
    let text = String::from_utf8_lossy(&got);
    assert!(status_of(&got).starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Nothing was deployed, and a good deploy still works.
    let list = client().get(&url).bearer_auth(TOKEN).send().await.unwrap();
    let list: Value = list.json().await.unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let good = form(&[
        good_manifest("good"),
        part("wasm", Some("good.wasm"), &module),
    ]);
    let (status, json) = deploy(&url, Some(&form_type), good).await;
    assert_eq!(status, 201, "{json}");
    let r = client()
        .get(d.url("/good?do=counter"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    back_near(&d, before, "malformed deploys");
}
