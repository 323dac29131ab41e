//! The HTTP listener: accepts connections (up to a cap, each under time limits), hands each
//! request to the admin API or the trigger, logs one line per request, and drains on
//! shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

use super::admin;
use super::connection::{within_fd_limit, Slots, Stalling};
use super::refusals::Refusals;
use super::response::{error_response, Body};
use super::state::{AppState, HttpConfig, RequestCtx};
use super::tally::Tally;
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
    let config = &state.config;
    let builder = http1_builder(config);
    let slots = Slots::new(within_fd_limit(config.max_connections));
    let refusals = Arc::new(Refusals::default());
    let accept_errors = Tally::new("accept errors", Duration::from_secs(10));
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
                    accept_failed(&accept_errors, e).await;
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
        let Some((stream, slot)) = slots.admit(stream) else {
            continue;
        };
        let state = state.clone();
        let refusals = refusals.clone();
        let peer = Arc::new(Peer::new(remote, local));
        let service = service_fn(move |req| {
            let state = state.clone();
            let peer = peer.clone();
            let refusals = refusals.clone();
            async move {
                let caller = admin::Caller {
                    ip: remote.ip(),
                    refusals: &refusals,
                };
                Ok::<_, Infallible>(answer_or_500(handle(&state, req, &peer, caller)).await)
            }
        });
        let io = TokioIo::new(Stalling::new(nodelay(stream), config.body_timeout));
        let conn = graceful.watch(builder.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%remote, "connection ended: {e}");
            }
            drop(slot);
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
    let config = HttpConfig::default();
    let builder = http1_builder(&config);
    let slots = Slots::new(within_fd_limit(STARTING_CONNECTIONS));
    let accept_errors = Tally::new("accept errors", Duration::from_secs(10));
    loop {
        let stream = tokio::select! {
            biased;
            out = &mut starting => return out,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(&accept_errors, e).await;
                    continue;
                }
            },
        };
        let Some((stream, slot)) = slots.admit(stream) else {
            continue;
        };
        let service = service_fn(|req: Request<Incoming>| async move {
            let mut response = if req.uri().path() == admin::HEALTH {
                admin::health("starting", 0, 0)
            } else {
                error_response(
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
        let io = TokioIo::new(Stalling::new(nodelay(stream), config.body_timeout));
        let conn = builder.serve_connection(io, service);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection ended: {e}");
            }
            drop(slot);
        });
    }
}

/// Connections open at once while the replica is starting (each answered 503 at once).
const STARTING_CONNECTIONS: usize = 1024;

/// Longest request line and headers together: past it, 431 and the connection is closed.
/// Also the most a connection buffers of a request's head, whatever its client sends.
pub const MAX_HEAD_BYTES: usize = 64 << 10;

/// Longest path and query: past it, 414.
pub const MAX_URI_BYTES: usize = 8 << 10;

/// The listener's HTTP/1.1 settings: hyper's limit of 100 headers (431 past it), a head of at
/// most [`MAX_HEAD_BYTES`], and the header timeout, which also closes an idle keep-alive
/// connection.
fn http1_builder(config: &HttpConfig) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_header_size(MAX_HEAD_BYTES);
    builder
}

/// The stream with Nagle off: responses go out whole, at once.
fn nodelay(stream: TcpStream) -> TcpStream {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("set_nodelay: {e}");
    }
    stream
}

/// Out of descriptors and the like: back off instead of spinning, and say so once per spell.
async fn accept_failed(tally: &Arc<Tally>, e: std::io::Error) {
    if tally.note() {
        tracing::warn!("accept failed: {e}");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// The response `handling` gives, or a 500 (closing the connection) if it panics: a bug of
/// the platform ends that request only, with a log line, and the listener serves on. (A panic
/// in a host call is caught closer to it, as a 502 `host_error`: see the runtime.)
async fn answer_or_500(handling: impl Future<Output = Response<Body>>) -> Response<Body> {
    match AssertUnwindSafe(handling).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let message = crate::runtime::panic_message(&*panic);
            tracing::error!("a request's handling panicked: {message}");
            let mut resp = error_response(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                None,
                "the platform failed while handling the request (see its log)",
            );
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    }
}

/// Handles one request and logs one line for it.
async fn handle(
    state: &AppState,
    req: Request<Incoming>,
    peer: &Peer,
    caller: admin::Caller<'_>,
) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > MAX_URI_BYTES {
        let message = format!(
            "the request's path and query are {uri_len} bytes long: at most {MAX_URI_BYTES} are accepted"
        );
        let mut resp = error_response(
            http::StatusCode::URI_TOO_LONG,
            "uri_too_long",
            None,
            &message,
        );
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        state.telemetry.unrouted("uri_too_long");
        tracing::info!(target: "request", %method, status = 414, uri_len, "request refused");
        return resp;
    }
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
        admin::handle(state, parts, body, &ctx, caller).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_is_a_500_that_closes_the_connection() {
        let resp = answer_or_500(async { panic!("a handler's bug") }).await;
        assert_eq!(resp.status(), 500);
        assert_eq!(resp.headers()[http::header::CONNECTION], "close");
        let ok = answer_or_500(async {
            error_response(http::StatusCode::NOT_FOUND, "not_found", None, "none")
        })
        .await;
        assert_eq!(ok.status(), 404);
    }
}
