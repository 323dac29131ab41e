//! OpenTelemetry traces, received by a small OTLP/HTTP receiver in the test that decodes the
//! exporter's protobuf (`opentelemetry-proto`): the spans of a request continue the caller's
//! `traceparent`, nest as request -> route / instantiate / guest, and the guest sees its own
//! place in the trace; a schedule's fire has its attempts under it.

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use crate::harness::{client, manifest, wait_until, wasm, Dispatcher, Options};

/// One received span: names and ids in hex.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: Vec<(String, String)>,
    service: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An OTLP/HTTP receiver on 127.0.0.1:0 that keeps every span it is sent.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let kept = kept.clone();
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let kept = kept.clone();
                        async move {
                            assert_eq!(req.uri().path(), "/v1/traces");
                            assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let export =
                                ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                            for rs in export.resource_spans {
                                let service = rs
                                    .resource
                                    .iter()
                                    .flat_map(|r| &r.attributes)
                                    .find(|a| a.key == "service.name")
                                    .map(|a| format!("{:?}", a.value))
                                    .unwrap_or_default();
                                for ss in rs.scope_spans {
                                    for s in ss.spans {
                                        kept.lock().unwrap().push(Span {
                                            name: s.name,
                                            trace_id: hex(&s.trace_id),
                                            span_id: hex(&s.span_id),
                                            parent: hex(&s.parent_span_id),
                                            attributes: s
                                                .attributes
                                                .iter()
                                                .map(|a| (a.key.clone(), format!("{:?}", a.value)))
                                                .collect(),
                                            service: service.clone(),
                                        });
                                    }
                                }
                            }
                            let answer = ExportTraceServiceResponse::default().encode_to_vec();
                            let mut resp = http::Response::new(Full::new(Bytes::from(answer)));
                            resp.headers_mut().insert(
                                "content-type",
                                http::HeaderValue::from_static("application/x-protobuf"),
                            );
                            Ok::<_, Infallible>(resp)
                        }
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        Receiver { url, spans }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

/// `sqlprobe` at `/db`, its database sessions from the host's pool.
fn pooled(dir: &Path) {
    let url = "mysql://root@127.0.0.1:3306/test";
    manifest(
        dir,
        "db",
        &format!(
            "name = \"db\"\nwasm = \"{}\"\n[trigger.http]\npath = \"/db\"\n[env]\nDATABASE_URL = \"{url}\"\n[network]\nallow = [\"{url}\"]\n",
            wasm("sqlprobe").display()
        ),
    );
}

fn probe(dir: &Path) {
    manifest(
        dir,
        "traced",
        &format!(
            "name = \"traced\"\nwasm = \"{}\"\n[trigger.http]\npath = \"/t\"\n\n[[trigger.schedule]]\nname = \"tick\"\ncron = \"* * * * * *\"\n",
            wasm("probe").display()
        ),
    );
}

// Multi-threaded: the receiver serves on the runtime while the test waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_continue_the_callers_trace_and_nest_request_route_instantiate_guest() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    probe(dir.path());
    pooled(dir.path());
    let d = Dispatcher::start_with(
        dir.path(),
        Options {
            env: vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.clone()),
                ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
                ("OTEL_SERVICE_NAME", "dispatcher-under-test".into()),
            ],
            ..Options::default()
        },
    );
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let resp = client()
        .get(d.url("/t?do=env"))
        .header("traceparent", format!("00-{trace_id}-{caller}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let env: serde_json::Value = resp.json().await.unwrap();
    let seen = env["env"]["HTTP_TRACEPARENT"].as_str().unwrap().to_string();
    let parts: Vec<&str> = seen.split('-').collect();
    assert_eq!(parts.len(), 4, "{seen}");
    assert_eq!(
        parts[1], trace_id,
        "the guest's traceparent continues the caller's trace"
    );
    assert_ne!(
        parts[2], caller,
        "the guest's parent is the platform's span, not the caller's"
    );

    let names = ["request", "route", "instantiate", "guest"];
    let arrived = wait_until(Duration::from_secs(15), || {
        let spans = receiver.spans();
        names
            .iter()
            .all(|n| spans.iter().any(|s| s.name == *n && s.trace_id == trace_id))
    });
    assert!(arrived, "spans received: {:#?}", receiver.spans());
    let spans: Vec<Span> = receiver
        .spans()
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect();
    let request = spans.iter().find(|s| s.name == "request").unwrap();
    assert_eq!(
        request.parent, caller,
        "the request span continues the caller's span"
    );
    assert_eq!(
        request.span_id, parts[2],
        "the guest's traceparent names the request span"
    );
    assert!(
        request.service.contains("dispatcher-under-test"),
        "{}",
        request.service
    );
    let attr = |s: &Span, k: &str| {
        s.attributes
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert!(
        attr(request, "http.response.status_code").contains("200"),
        "{request:?}"
    );
    assert!(attr(request, "faas.name").contains("traced"), "{request:?}");
    for child in ["route", "instantiate", "guest"] {
        let s = spans.iter().find(|s| s.name == child).unwrap();
        assert_eq!(
            s.parent, request.span_id,
            "{child} is a child of the request span"
        );
    }
    let route = spans.iter().find(|s| s.name == "route").unwrap();
    assert!(attr(route, "http.route").contains("/t"), "{route:?}");

    // A pooled database session's checkout, under the request that opened it.
    let db_trace = "0af7651916cd43dd8448eb211c80319c";
    let resp = client()
        .post(d.url("/db"))
        .header("traceparent", format!("00-{db_trace}-b7ad6b7169203331-01"))
        .body(r#"{"statements": ["SELECT 1"]}"#)
        .send()
        .await
        .unwrap();
    let answer = resp.text().await.unwrap();
    assert!(
        answer.contains("\"error\":null"),
        "the session did not open: {answer}"
    );
    let checked_out = wait_until(Duration::from_secs(15), || {
        let spans = receiver.spans();
        let request = spans
            .iter()
            .find(|s| s.name == "request" && s.trace_id == db_trace);
        request.is_some_and(|r| {
            spans.iter().any(|s| {
                s.name == "db session checkout" && s.trace_id == db_trace && s.parent == r.span_id
            })
        })
    });
    assert!(
        checked_out,
        "no checkout span under the request: {:#?}",
        receiver.spans()
    );

    // A schedule's fire, with its attempt under it, and the attempt's instance under that.
    let fired = wait_until(Duration::from_secs(15), || {
        let spans = receiver.spans();
        spans.iter().any(|fire| {
            fire.name == "schedule fire"
                && spans.iter().any(|a| {
                    a.name == "attempt"
                        && a.parent == fire.span_id
                        && spans
                            .iter()
                            .any(|g| g.name == "guest" && g.parent == a.span_id)
                })
        })
    });
    assert!(
        fired,
        "no fire -> attempt -> guest spans: {:#?}",
        receiver.spans()
    );
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported_and_traceparent_passes_through() {
    let dir = tempfile::tempdir().unwrap();
    probe(dir.path());
    let d = Dispatcher::start(dir.path());
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = client()
        .get(d.url("/t?do=env"))
        .header("traceparent", tp)
        .send()
        .await
        .unwrap();
    let env: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(env["env"]["HTTP_TRACEPARENT"], tp);
}
