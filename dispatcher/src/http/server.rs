//! The HTTP listener: accepts connections, hands each request to the admin API or the
//! trigger, logs one line per request, and drains on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

use super::admin;
use super::response::Body;
use super::state::{AppState, RequestCtx};
use super::trigger;
use crate::function::Peer;
use crate::telemetry::{request_id, SpanKind};

/// Serves HTTP on `listener` until `shutdown` resolves; then answers health with 503
/// `draining` while it keeps accepting for `config.drain_delay`, stops accepting, and drains
/// the requests in flight for at most `config.drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    let stop_accepting = tokio::time::sleep(Duration::MAX);
    tokio::pin!(stop_accepting);
    let mut draining = false;
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown, if !draining => {
                draining = true;
                state.draining.store(true, Ordering::Relaxed);
                let delay = state.config.drain_delay;
                if delay.is_zero() {
                    break;
                }
                tracing::info!("shutting down: health answers 503, still accepting for {delay:?}");
                stop_accepting.as_mut().reset(tokio::time::Instant::now() + delay);
                continue;
            }
            () = &mut stop_accepting => break,
        };
        let state = state.clone();
        let peer = Arc::new(Peer::new(remote, local));
        let service = service_fn(move |req| {
            let state = state.clone();
            let peer = peer.clone();
            async move { Ok::<_, Infallible>(handle(&state, req, &peer).await) }
        });
        let conn = http1_for(&stream).serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%remote, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining requests in flight");
    match tokio::time::timeout(state.config.drain_timeout, graceful.shutdown()).await {
        Ok(()) => tracing::info!("drained"),
        Err(_) => tracing::warn!(
            "requests still in flight after {:?}; closing them",
            state.config.drain_timeout
        ),
    }
    Ok(())
}

/// Answers every request on `listener` with 503 (health: `starting`, everything else:
/// `starting`, retry later) until `starting` resolves, and returns its output. The listener
/// is up from the first moment, so probes and load balancers get an answer, not a hang.
pub async fn while_starting<T>(listener: &TcpListener, starting: impl Future<Output = T>) -> T {
    tokio::pin!(starting);
    loop {
        let stream = tokio::select! {
            biased;
            out = &mut starting => return out,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let service = service_fn(|req: Request<Incoming>| async move {
            let mut response = if req.uri().path() == admin::HEALTH {
                admin::health("starting", 0, 0)
            } else {
                super::response::error_response(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "starting",
                    None,
                    "this replica is loading its functions: try again in a moment",
                )
            };
            let headers = response.headers_mut();
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            Ok::<_, Infallible>(response)
        });
        let conn = http1_for(&stream).serve_connection(TokioIo::new(stream), service);
        tokio::spawn(conn);
    }
}

/// The listener's HTTP/1.1 settings, for a connection whose Nagle is off.
fn http1_for(stream: &TcpStream) -> http1::Builder {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("set_nodelay: {e}");
    }
    let mut builder = http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder
}

/// Out of descriptors and the like: back off instead of spinning.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Handles one request and logs one line for it.
async fn handle(state: &AppState, req: Request<Incoming>, peer: &Peer) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (parts, body) = req.into_parts();
    let ctx = RequestCtx {
        id: request_id::from_headers(&parts.headers),
        trace: state.telemetry.tracing.as_ref().map(|t| {
            let attributes = vec![
                opentelemetry::KeyValue::new("http.request.method", method.to_string()),
                opentelemetry::KeyValue::new("url.path", path.clone()),
            ];
            t.start(
                "request",
                SpanKind::Server,
                None,
                Some(&parts.headers),
                attributes,
            )
        }),
    };
    let (function, mut response) = if admin::is_admin_path(parts.uri.path()) {
        admin::handle(state, parts, body, &ctx).await
    } else {
        trigger::handle(state, parts, body, peer, &ctx).await
    };
    let headers = response.headers_mut();
    if state.draining.load(Ordering::Relaxed) {
        // Keep-alive clients (a load balancer's pool) reconnect, to another replica.
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.id) {
        headers.insert(request_id::HEADER, v);
    }
    let status = response.status().as_u16();
    // A stable target, whatever file this is in: what `RUST_LOG=request=warn` filters.
    tracing::info!(
        target: "request",
        function = %function.as_deref().unwrap_or("-"),
        request_id = %ctx.id,
        %method,
        %path,
        status,
        us = started.elapsed().as_micros() as u64
    );
    if let (Some(t), Some(active)) = (&state.telemetry.tracing, ctx.trace) {
        let mut attributes = vec![opentelemetry::KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        )];
        if let Some(f) = &function {
            attributes.push(opentelemetry::KeyValue::new("faas.name", f.to_string()));
        }
        let error = (status >= 500).then(|| format!("status {status}"));
        t.end(active, attributes, error);
    }
    response
}
