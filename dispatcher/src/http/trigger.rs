//! The HTTP trigger: routes a request to its function, runs it in a fresh instance under the
//! function's limits, and turns the outcome into a response.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, request::Parts, HeaderValue, Method, Response, StatusCode};
use hyper::body::Incoming;

use super::body::{read_body, BodyError};
use super::response::{error_response, respond, Body};
use super::state::AppState;
use crate::function::{Event, RequestInfo};
use crate::manifest::Lookup;

/// Runs the function that serves the request's route; answers 404, 405 or 413 without one.
/// Returns the function's name for the log line.
pub async fn handle(
    state: &AppState,
    parts: Parts,
    body: Incoming,
    remote: SocketAddr,
    local: SocketAddr,
) -> (Option<Arc<str>>, Response<Body>) {
    // This request's view of the deployed set: a deploy that lands meanwhile does not
    // change the function it runs.
    let registry = state.deployments.live().load();
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

    let request = RequestInfo {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        body_len: body.len(),
        remote,
        local,
        pattern,
        matched: &matched,
    };
    let result = function
        .run(Event::Http { request, body }, state.run_config())
        .await;
    (name, respond(function, result))
}
