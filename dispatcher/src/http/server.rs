//! The HTTP listener: accepts connections, hands each request to the admin API or the
//! trigger, logs one line per request, and drains on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::admin;
use super::response::Body;
use super::state::AppState;
use super::trigger;

/// Serves HTTP on `listener` until `shutdown` resolves, then stops accepting and drains the
/// requests in flight for at most `config.drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("set_nodelay: {e}");
        }
        let state = state.clone();
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(&state, req, remote, local).await) }
        });
        let conn = http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(TokioIo::new(stream), service);
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

/// Handles one request and logs one line for it.
async fn handle(
    state: &AppState,
    req: Request<Incoming>,
    remote: SocketAddr,
    local: SocketAddr,
) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (parts, body) = req.into_parts();
    let (function, response) = if admin::is_admin_path(parts.uri.path()) {
        admin::handle(state, parts, body).await
    } else {
        trigger::handle(state, parts, body, remote, local).await
    };
    // A stable target, whatever file this is in: what `RUST_LOG=request=warn` filters.
    tracing::info!(
        target: "request",
        function = %function.as_deref().unwrap_or("-"),
        %method,
        %path,
        status = response.status().as_u16(),
        us = started.elapsed().as_micros() as u64
    );
    response
}
