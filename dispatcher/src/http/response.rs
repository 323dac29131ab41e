//! Responses the platform writes itself: a function's outcome as HTTP (the one place errors
//! become status codes), JSON answers, and error bodies.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use std::convert::Infallible;

use http_body_util::combinators::BoxBody;
use http_body_util::{Either, Full};
use serde::Serialize;

use crate::api::ErrorBody;
use crate::function::{parse_output, Function, RunError};
use crate::runtime::InvokeError;
use crate::telemetry::Outcome;

/// Every response body: whole, in memory (every answer but one), or a stream of chunks (a
/// followed log), boxed only then.
pub type Body = Either<Full<Bytes>, BoxBody<Bytes, Infallible>>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Either::Left(Full::new(bytes.into()))
}

/// Maps an invocation's result to a response, its outcome and (on failure) the detail for the
/// log: the one place errors become status codes.
pub fn respond(
    function: &Function,
    result: Result<Vec<u8>, RunError>,
) -> (Response<Body>, Outcome, Option<String>) {
    let name = &function.name;
    let (status, outcome, message, detail) = match result {
        Ok(output) => match parse_output(output) {
            Ok(out) => {
                let mut resp = Response::new(full(out.body));
                *resp.status_mut() = out.status;
                *resp.headers_mut() = out.headers;
                return (resp, Outcome::Ok, None);
            }
            Err(e) => (
                StatusCode::BAD_GATEWAY,
                Outcome::BadOutput,
                "the function's output is not a valid CGI response",
                format!("bad output: {e}"),
            ),
        },
        Err(e) => {
            let (status, message) = match &e {
                RunError::Overloaded => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many requests in flight for this function; retry shortly",
                ),
                RunError::Invoke(InvokeError::Timeout(_)) => (
                    StatusCode::GATEWAY_TIMEOUT,
                    "the function did not finish in time",
                ),
                RunError::Invoke(InvokeError::MemoryLimit(_)) => (
                    StatusCode::BAD_GATEWAY,
                    "the function exceeded its memory limit",
                ),
                RunError::Invoke(InvokeError::OutputLimit(_)) => (
                    StatusCode::BAD_GATEWAY,
                    "the function wrote more output than allowed",
                ),
                RunError::Invoke(InvokeError::Exit(_)) => {
                    (StatusCode::BAD_GATEWAY, "the function exited with an error")
                }
                RunError::Invoke(InvokeError::Trap(_)) => {
                    (StatusCode::BAD_GATEWAY, "the function crashed")
                }
                RunError::Invoke(InvokeError::HostPanic(_)) => (
                    StatusCode::BAD_GATEWAY,
                    "the platform failed while running the function (see its log)",
                ),
                RunError::Invoke(InvokeError::Capacity(_)) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no instance could be started; retry shortly",
                ),
            };
            let detail = match &e {
                RunError::Overloaded => {
                    "every concurrency slot stayed busy for the queue timeout".to_string()
                }
                RunError::Invoke(e) => format!("invocation failed: {e}"),
            };
            (status, e.outcome(), message, detail)
        }
    };
    let mut resp = error_response(status, outcome.as_str(), Some(name), message);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    (resp, outcome, Some(detail))
}

/// A small JSON error body naming the function and the kind of failure; never the details.
pub fn error_response(
    status: StatusCode,
    kind: &str,
    function: Option<&str>,
    message: &str,
) -> Response<Body> {
    let body = ErrorBody {
        error: kind.into(),
        function: function.map(Into::into),
        message: message.into(),
        ..ErrorBody::default()
    };
    json(status, &body)
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|e| {
        format!("{{\"error\":\"internal\",\"message\":\"cannot encode the answer: {e}\"}}")
            .into_bytes()
    });
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
