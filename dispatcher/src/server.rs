//! The HTTP trigger: accepts connections, routes each request to its function, runs it in a
//! fresh instance under the function's limits, and turns the outcome into a response.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::admin::{self, AdminToken};
use crate::cgi::{self, RequestInfo};
use crate::deploy::Platform;
use crate::registry::Function;
use crate::route::Lookup;
use crate::runtime::InvokeError;

/// Settings of the HTTP trigger.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted; larger gets 413.
    pub max_body_bytes: usize,
    /// Largest output (headers and body) a function may write; more gets 502.
    pub max_output_bytes: usize,
    /// How long a request waits for a free instance of its function before 503.
    pub queue_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    pub drain_timeout: Duration,
    /// Largest deploy request (manifest and module) the admin API accepts.
    pub max_deploy_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 16 << 20,
            max_output_bytes: 32 << 20,
            queue_timeout: Duration::from_millis(500),
            drain_timeout: Duration::from_secs(10),
            max_deploy_bytes: 256 << 20,
        }
    }
}

/// What every request handler shares.
pub struct AppState {
    /// The deployed functions, and the way to change them.
    pub platform: Arc<Platform>,
    pub config: ServerConfig,
    /// The admin API's token (`DISPATCHER_ADMIN_TOKEN`); `None` turns the API off.
    pub admin: Option<AdminToken>,
}

type Body = Full<Bytes>;

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
    let (function, response) = route(state, req, remote, local).await;
    tracing::info!(
        function = %function.as_deref().unwrap_or("-"),
        %method,
        %path,
        status = response.status().as_u16(),
        us = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

async fn route(
    state: &AppState,
    req: Request<Incoming>,
    remote: SocketAddr,
    local: SocketAddr,
) -> (Option<Arc<str>>, Response<Body>) {
    let (parts, body) = req.into_parts();
    if admin::is_admin_path(parts.uri.path()) {
        return admin::handle(state, parts, body).await;
    }
    // This request's view of the deployed set: a deploy that lands meanwhile does not
    // change the function it runs.
    let registry = state.platform.live().load();
    let (function, pattern, matched) = match registry.routes.lookup(&parts.method, parts.uri.path())
    {
        Lookup::Found {
            target,
            pattern,
            matched,
        } => (target, pattern, matched),
        Lookup::MethodNotAllowed(allowed) => {
            let allow = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let mut resp = error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                None,
                &format!("{} is not allowed here; allowed: {allow}", parts.method),
            );
            if let Ok(v) = HeaderValue::from_str(&allow) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            return (None, resp);
        }
        Lookup::NotFound => {
            return (
                None,
                error_response(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    None,
                    &format!("no function serves {}", parts.uri.path()),
                ),
            )
        }
    };
    let name = Some(function.name.clone());
    let fail =
        |status, kind, message: &str| error_response(status, kind, Some(&function.name), message);

    let max = state.config.max_body_bytes;
    let body = match read_body(body, &parts.headers, max).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            let msg = format!("the request body is larger than {max} bytes");
            return (
                name,
                fail(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", &msg),
            );
        }
        Err(BodyError::Read(e)) => {
            tracing::debug!(function = %function.name, "reading the request body failed: {e}");
            let msg = "the request body could not be read";
            return (name, fail(StatusCode::BAD_REQUEST, "bad_request", msg));
        }
    };

    let permit = match admit(function, state.config.queue_timeout).await {
        Ok(permit) => permit,
        Err(resp) => return (name, resp),
    };

    let info = RequestInfo {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        body_len: body.len(),
        remote,
        local,
        pattern,
        matched: &matched,
    };
    let env = cgi::request_env(&info, &function.spec.env);
    let inv = function.invocation(env, body, state.config.max_output_bytes);
    let result = function.module.invoke(inv).await;
    drop(permit);
    (name, respond(function, result))
}

/// Waits up to `queue_timeout` for one of the function's `max_concurrency` slots; past it,
/// 503 with `Retry-After`.
pub(crate) async fn admit(
    function: &Function,
    queue_timeout: Duration,
) -> Result<tokio::sync::OwnedSemaphorePermit, Response<Body>> {
    match tokio::time::timeout(queue_timeout, function.permits.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => {
            let mut resp = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                Some(&function.name),
                "too many requests in flight for this function; retry shortly",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Err(resp)
        }
    }
}

/// Why a request body was not read.
pub(crate) enum BodyError {
    TooLarge,
    Read(hyper::Error),
}

/// How much of an oversized body is read and thrown away, and for how long, so that the
/// client gets its 413 instead of a broken pipe while it is still sending.
const DISCARD_BYTES: u64 = 64 << 20;
const DISCARD_TIME: Duration = Duration::from_secs(2);

/// Reads the whole body if it is at most `max` bytes.
pub(crate) async fn read_body(
    mut body: Incoming,
    headers: &http::HeaderMap,
    max: usize,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        if declared.is_some_and(|n| n <= DISCARD_BYTES) {
            discard(body).await;
        }
        return Err(BodyError::TooLarge);
    }
    let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else {
            continue; // trailers
        };
        if buf.len() + data.len() > max {
            discard(body).await;
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// Reads and drops the rest of a body, up to [`DISCARD_BYTES`] and [`DISCARD_TIME`].
async fn discard(mut body: Incoming) {
    let drain = async {
        let mut seen = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            if seen > DISCARD_BYTES {
                break;
            }
        }
    };
    // Past the limits the connection is simply closed after the 413.
    let _drained = tokio::time::timeout(DISCARD_TIME, drain).await;
}

/// Maps an invocation's outcome to a response: the one place errors become status codes.
pub(crate) fn respond(function: &Function, result: Result<Vec<u8>, InvokeError>) -> Response<Body> {
    let name = &function.name;
    let (status, kind, message) = match result {
        Ok(output) => match cgi::parse_output(output) {
            Ok(out) => {
                let mut resp = Response::new(Full::new(out.body));
                *resp.status_mut() = out.status;
                *resp.headers_mut() = out.headers;
                return resp;
            }
            Err(e) => {
                tracing::warn!(function = %name, "bad output: {e}");
                (
                    StatusCode::BAD_GATEWAY,
                    "bad_output",
                    "the function's output is not a valid CGI response",
                )
            }
        },
        Err(e) => {
            tracing::warn!(function = %name, "invocation failed: {e}");
            match e {
                InvokeError::Timeout(_) => (
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    "the function did not finish in time",
                ),
                InvokeError::MemoryLimit(_) => (
                    StatusCode::BAD_GATEWAY,
                    "memory_limit",
                    "the function exceeded its memory limit",
                ),
                InvokeError::OutputLimit(_) => (
                    StatusCode::BAD_GATEWAY,
                    "output_limit",
                    "the function wrote more output than allowed",
                ),
                InvokeError::Exit(_) => (
                    StatusCode::BAD_GATEWAY,
                    "exit",
                    "the function exited with an error",
                ),
                InvokeError::Trap(_) => (StatusCode::BAD_GATEWAY, "trap", "the function crashed"),
                InvokeError::Capacity(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "no instance could be started; retry shortly",
                ),
            }
        }
    };
    let mut resp = error_response(status, kind, Some(name), message);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// A small JSON error body naming the function and the kind of failure; never the details.
pub(crate) fn error_response(
    status: StatusCode,
    kind: &str,
    function: Option<&str>,
    message: &str,
) -> Response<Body> {
    let body = serde_json::json!({
        "error": kind,
        "function": function,
        "message": message,
    });
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
