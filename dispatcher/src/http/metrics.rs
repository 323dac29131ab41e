//! The metrics listener (`--metrics-listen`): `GET /metrics` in the OpenMetrics text format,
//! which Prometheus scrapes from each replica directly. Nothing else is served there, and it
//! needs no token: it carries no secrets, and it is meant for a port only the cluster reaches.

use std::convert::Infallible;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::response::{error_response, full, Body};
use super::state::stopped;
use crate::telemetry::Telemetry;

/// The scrape path.
pub const PATH: &str = "/metrics";

/// Serves the metrics on `listener` until `shutdown` turns true.
pub async fn serve_metrics(
    listener: TcpListener,
    telemetry: Arc<Telemetry>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("metrics listener: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => return,
        };
        let telemetry = telemetry.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let telemetry = telemetry.clone();
            async move { Ok::<_, Infallible>(answer(&telemetry, &req)) }
        });
        tokio::spawn(async move {
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("metrics connection ended: {e}");
            }
        });
    }
}

fn answer(telemetry: &Telemetry, req: &Request<Incoming>) -> Response<Body> {
    if req.uri().path() != PATH {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            None,
            &format!("nothing at {}: the metrics are at {PATH}", req.uri().path()),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            None,
            "allowed here: GET",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return resp;
    }
    let mut resp = Response::new(full(telemetry.metrics.encode()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
