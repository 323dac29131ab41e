//! The seed's orders service on the platform: per-endpoint functions built with tokio_wasi
//! and mysql_async_wasi, talking to the real MariaDB at 127.0.0.1:3306 through the host's
//! WasmEdge socket extension. Each test uses its own database.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{
    client, manifest, sql, unique_name, wasm, Dispatcher, InProcess, Options, Proxy, Server,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const MARIADB: &str = "127.0.0.1:3306";

/// The seed's `orders.json`.
const ORDERS_JSON: &str = r#"[
    {"order_id": 1, "product_id": 12, "quantity": 2, "amount": 56.0, "shipping": 15.0, "tax": 2.0, "shipping_address": "Mataderos 2312"},
    {"order_id": 2, "product_id": 15, "quantity": 3, "amount": 256.0, "shipping": 30.0, "tax": 16.0, "shipping_address": "1234 NW Bobcat"}
]"#;

/// The seed's `update_order.json`.
const UPDATE_JSON: &str = r#"{"order_id": 2, "product_id": 12, "quantity": 2, "amount": 56.0, "shipping": 15.0, "tax": 2.0, "shipping_address": "2350 NW Bobcat"}"#;

const ORDERS_AFTER_CREATE: &str = r#"[{"order_id":1,"product_id":12,"quantity":2,"amount":56.0,"shipping":15.0,"tax":2.0,"shipping_address":"Mataderos 2312"},{"order_id":2,"product_id":15,"quantity":3,"amount":256.0,"shipping":30.0,"tax":16.0,"shipping_address":"1234 NW Bobcat"}]"#;
const ORDERS_AFTER_UPDATE: &str = r#"[{"order_id":1,"product_id":12,"quantity":2,"amount":56.0,"shipping":15.0,"tax":2.0,"shipping_address":"Mataderos 2312"},{"order_id":2,"product_id":12,"quantity":2,"amount":56.0,"shipping":15.0,"tax":2.0,"shipping_address":"2350 NW Bobcat"}]"#;
const ORDERS_AFTER_DELETE: &str = r#"[{"order_id":1,"product_id":12,"quantity":2,"amount":56.0,"shipping":15.0,"tax":2.0,"shipping_address":"Mataderos 2312"}]"#;

const ENDPOINTS: &[(&str, &str, &str)] = &[
    ("init", "/init", "GET"),
    ("create_order", "/create_order", "POST"),
    ("create_orders", "/create_orders", "POST"),
    ("update_order", "/update_order", "POST"),
    ("list_orders", "/orders", "GET"),
    ("delete_order", "/delete_order", "GET"),
];

/// A database of the test's own, dropped at the end.
struct TestDb {
    name: String,
}

impl TestDb {
    fn create(tag: &str) -> TestDb {
        let name = unique_name("t", tag);
        sql(&format!(
            "DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"
        ));
        TestDb { name }
    }

    fn url_via(&self, addr: &str) -> String {
        format!("mysql://root@{addr}/{}", self.name)
    }

    fn count(&self) -> u64 {
        sql(&format!("SELECT COUNT(*) FROM {}.orders", self.name))
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        sql(&format!("DROP DATABASE IF EXISTS {}", self.name));
    }
}

/// Manifests for every orders endpoint (plus `order_count`) against `db_url`, with one
/// `[network] allow` entry: the URL itself (as the shipped manifests have it: sessions from
/// the host's pool) or a `host:port` (a direct connection).
fn orders_manifests(dir: &Path, db_url: &str, allow: &str) {
    let mut all: Vec<(&str, &str, &str)> = ENDPOINTS.to_vec();
    all.push(("order_count", "/order_count", "GET"));
    for (name, path, method) in all {
        manifest(
            dir,
            name,
            &format!(
                "name = \"{name}\"\nwasm = \"{}\"\n[trigger.http]\npath = \"{path}\"\nmethods = [\"{method}\", \"OPTIONS\"]\n\
                 [env]\nDATABASE_URL = \"{db_url}\"\n[network]\nallow = [\"{allow}\"]\n",
                wasm(name).display()
            ),
        );
    }
}

fn assert_cors(resp: &reqwest::Response) {
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(h["access-control-allow-methods"], "GET, POST, OPTIONS");
    assert_eq!(
        h["access-control-allow-headers"],
        "api,Keep-Alive,User-Agent,Content-Type"
    );
}

async fn call(
    d: &impl Server,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, reqwest::Response) {
    let req = match method {
        "POST" => client()
            .post(d.url(path))
            .body(body.unwrap_or("").to_string()),
        "OPTIONS" => client().request(reqwest::Method::OPTIONS, d.url(path)),
        _ => client().get(d.url(path)),
    };
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp)
}

async fn text_of(resp: reqwest::Response) -> String {
    resp.text().await.unwrap()
}

#[tokio::test]
async fn the_seed_curl_session_byte_for_byte_with_cors() {
    seed_session("seed", &[]).await;
}

/// The same session on Winch's code only: what a replica serves in its first seconds after
/// compiling a module it had not seen (tiered compiles).
#[tokio::test]
async fn the_seed_session_on_baseline_code() {
    seed_session("winch", &["--compile", "baseline"]).await;
}

async fn seed_session(tag: &str, args: &[&str]) {
    let db = TestDb::create(tag);
    let dir = tempfile::tempdir().unwrap();
    orders_manifests(dir.path(), &db.url_via(MARIADB), &db.url_via(MARIADB));
    let d = Dispatcher::start_with(
        dir.path(),
        Options {
            args: args.to_vec(),
            ..Options::default()
        },
    );

    let steps: &[(&str, &str, Option<&str>, &str)] = &[
        ("GET", "/init", None, r#"{"status":true}"#),
        (
            "POST",
            "/create_orders",
            Some(ORDERS_JSON),
            r#"{"status":true}"#,
        ),
        ("GET", "/orders", None, ORDERS_AFTER_CREATE),
        (
            "POST",
            "/update_order",
            Some(UPDATE_JSON),
            r#"{"status":true}"#,
        ),
        ("GET", "/orders", None, ORDERS_AFTER_UPDATE),
        ("GET", "/delete_order?id=2", None, r#"{"status":true}"#),
        ("GET", "/orders", None, ORDERS_AFTER_DELETE),
    ];
    for (method, path, body, want) in steps {
        let (status, resp) = call(&d, method, path, *body).await;
        assert_cors(&resp);
        let got = text_of(resp).await;
        assert_eq!(status, 200, "{method} {path}: {got}\n{}", d.log_text());
        assert_eq!(got, *want, "{method} {path}");
    }
    let (status, resp) = call(
        &d,
        "POST",
        "/create_order",
        Some(
            UPDATE_JSON
                .replace("\"order_id\": 2", "\"order_id\": 3")
                .as_str(),
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(text_of(resp).await, r#"{"status":true}"#);
    assert_eq!(db.count(), 2);

    // OPTIONS on every route answers with the CORS headers.
    for (_, path, _) in ENDPOINTS {
        let (status, resp) = call(&d, "OPTIONS", path, None).await;
        assert_eq!(status, 200, "OPTIONS {path}");
        assert_cors(&resp);
    }
}

#[tokio::test]
async fn bad_input_gets_400_naming_the_field() {
    let db = TestDb::create("bad");
    let dir = tempfile::tempdir().unwrap();
    orders_manifests(dir.path(), &db.url_via(MARIADB), &db.url_via(MARIADB));
    let d = InProcess::start(dir.path());
    let (status, _) = call(&d, "GET", "/init", None).await;
    assert_eq!(status, 200);

    let cases: &[(&str, &str, Option<&str>, &str)] = &[
        ("POST", "/create_order", Some("{not json"), "body"),
        (
            "POST",
            "/create_order",
            Some(r#"{"order_id":1,"product_id":2}"#),
            "quantity",
        ),
        (
            "POST",
            "/create_order",
            Some(
                r#"{"order_id":"one","product_id":1,"quantity":1,"amount":1.0,"shipping":1.0,"tax":1.0,"shipping_address":"a"}"#,
            ),
            "order_id",
        ),
        (
            "POST",
            "/create_orders",
            Some(r#"[{"order_id":1}]"#),
            "[0].product_id",
        ),
        ("POST", "/update_order", Some("[]"), "body"),
        ("GET", "/delete_order?id=abc", None, "id"),
        ("GET", "/delete_order", None, "id"),
    ];
    for (method, path, body, field) in cases {
        let (status, resp) = call(&d, method, path, *body).await;
        assert_cors(&resp);
        let v: serde_json::Value = serde_json::from_str(&text_of(resp).await).unwrap();
        assert_eq!(status, 400, "{method} {path} {body:?}: {v}");
        assert_eq!(v["field"], *field, "{method} {path} {body:?}: {v}");
        assert_eq!(v["status"], false);
    }
    assert_eq!(db.count(), 0, "nothing bad was written");
}

#[tokio::test]
async fn a_sql_error_is_500_with_details_only_in_the_log() {
    let db = TestDb::create("sqlerr");
    let dir = tempfile::tempdir().unwrap();
    orders_manifests(dir.path(), &db.url_via(MARIADB), &db.url_via(MARIADB));
    let d = Dispatcher::start(dir.path());
    // No /init: the table does not exist.
    let (status, resp) = call(&d, "GET", "/orders", None).await;
    let body = text_of(resp).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        !body.contains("exist"),
        "details leaked to the client: {body}"
    );
    assert!(
        d.wait_for_log("doesn't exist", Duration::from_secs(5)),
        "{}",
        d.log_text()
    );
}

#[tokio::test]
async fn fifty_concurrent_creates_leave_fifty_rows() {
    let db = TestDb::create("conc");
    let dir = tempfile::tempdir().unwrap();
    orders_manifests(dir.path(), &db.url_via(MARIADB), &db.url_via(MARIADB));
    let d = InProcess::start(dir.path());
    let (status, _) = call(&d, "GET", "/init", None).await;
    assert_eq!(status, 200);
    let url = d.url("/create_order");
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let body = format!(
                r#"{{"order_id":{i},"product_id":7,"quantity":1,"amount":1.5,"shipping":0.5,"tax":0.1,"shipping_address":"addr {i}"}}"#
            );
            tokio::spawn(client().post(url.clone()).body(body).send())
        })
        .collect();
    for h in handles {
        let resp = h.await.unwrap().unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    assert_eq!(db.count(), 50);
    // The WasmEdge-style function (tokio::main, Pool::new) sees the same rows, unchanged.
    let (status, resp) = call(&d, "GET", "/order_count", None).await;
    assert_eq!(status, 200);
    assert_eq!(text_of(resp).await.trim(), r#"{"count":50}"#);
}

#[tokio::test]
async fn database_outage_gives_503_fast_and_recovery_needs_no_restart() {
    let db = TestDb::create("outage");
    let proxy = Proxy::start(MARIADB).await;
    let via = proxy.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    orders_manifests(dir.path(), &db.url_via(&via), &db.url_via(&via));
    let d = InProcess::start(dir.path());
    let (status, _) = call(&d, "GET", "/init", None).await;
    assert_eq!(status, 200);

    proxy.cut();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for path in ["/orders", "/order_count"] {
        let started = Instant::now();
        let (status, resp) = call(&d, "GET", path, None).await;
        let took = started.elapsed();
        let body = text_of(resp).await;
        if path == "/orders" {
            assert_eq!(status, 503, "{path}: {body}");
        } else {
            // The unchanged WasmEdge-style program just fails: 502 from the dispatcher.
            assert_eq!(status, 502, "{path}: {body}");
        }
        assert!(
            took < Duration::from_secs(3),
            "{path}: the answer took {took:?}"
        );
    }

    proxy.restore(MARIADB).await;
    let (status, resp) = call(&d, "GET", "/orders", None).await;
    assert_eq!(status, 200, "{}", text_of(resp).await);
}

#[tokio::test]
async fn the_network_allow_list_is_enforced_and_logged() {
    let db = TestDb::create("deny");
    let dir = tempfile::tempdir().unwrap();
    // The database is at 127.0.0.1:3306, but the manifest allows only another port.
    orders_manifests(dir.path(), &db.url_via(MARIADB), "127.0.0.1:9");
    let d = Dispatcher::start(dir.path());
    let (status, resp) = call(&d, "GET", "/init", None).await;
    let body = text_of(resp).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        d.wait_for_log("network: connection denied", Duration::from_secs(5)),
        "{}",
        d.log_text()
    );
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("network: connection denied"))
        .unwrap();
    assert!(
        line.contains("function=init") && line.contains("127.0.0.1:3306"),
        "{line}"
    );

    // A name that is not in the list is not even looked up.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mysql://root@localhost:3306/{}", db.name);
    orders_manifests(dir.path(), &url, "127.0.0.1:3306");
    let d = Dispatcher::start(dir.path());
    let (status, _) = call(&d, "GET", "/init", None).await;
    assert_ne!(status, 200);
    assert!(
        d.wait_for_log("name lookup denied", Duration::from_secs(5)),
        "{}",
        d.log_text()
    );

    // Allowed by name, resolved by the host: it works.
    let dir = tempfile::tempdir().unwrap();
    orders_manifests(dir.path(), &url, "localhost:3306");
    let d = Dispatcher::start(dir.path());
    let (status, resp) = call(&d, "GET", "/init", None).await;
    assert_eq!(status, 200, "{}", text_of(resp).await);
}

/// A one-route HTTP server that records request bodies and answers `{"ok":true}`, keeping
/// connections alive.
async fn receiver() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // Read one request: headers, then Content-Length bytes.
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                    seen.lock().unwrap().push(body);
                    buf.drain(..end + 4 + len);
                    let reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";
                    if sock.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn notify_calls_out_over_http_without_40ms_stalls() {
    let (addr, seen) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    manifest(
        dir.path(),
        "notify",
        &format!(
            "name = \"notify\"\nwasm = \"{}\"\n[trigger.http]\npath = \"/notify\"\n[env]\nNOTIFY_URL = \"http://{addr}/events\"\n[network]\nallow = [\"http://{addr}/\"]\n",
            wasm("notify").display()
        ),
    );
    let d = Dispatcher::start(dir.path());
    let mut fastest = Duration::MAX;
    for i in 0..5 {
        let started = Instant::now();
        let resp = client()
            .post(d.url("/notify"))
            .body(format!(r#"{{"order_id":{i}}}"#))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        fastest = fastest.min(started.elapsed());
        assert_eq!(status, 200, "{body}\n{}", d.log_text());
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["delivered"], true);
        assert_eq!(v["reply"], r#"{"ok":true}"#);
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 5);
    let first: serde_json::Value = serde_json::from_str(&seen[0]).unwrap();
    assert_eq!(
        first,
        serde_json::json!({"source": "notify", "event": {"order_id": 0}})
    );
    // Nagle plus a delayed ACK would cost 40 ms on every request/response over guest sockets.
    assert!(
        fastest < Duration::from_millis(40),
        "the fastest notify took {fastest:?}"
    );

    // An address outside the allow-list fails inside the guest: 502, and logged.
    let dir = tempfile::tempdir().unwrap();
    manifest(
        dir.path(),
        "notify",
        &format!(
            "name = \"notify\"\nwasm = \"{}\"\n[trigger.http]\npath = \"/notify\"\n[env]\nNOTIFY_URL = \"http://{addr}/events\"\n",
            wasm("notify").display()
        ),
    );
    let d = Dispatcher::start_with(dir.path(), Options::default());
    let resp = client()
        .post(d.url("/notify"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert!(
        d.wait_for_log("network: connection denied", Duration::from_secs(5)),
        "{}",
        d.log_text()
    );
}
