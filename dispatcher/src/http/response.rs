//! Responses the platform writes itself: a function's outcome as HTTP (the one place errors
//! become status codes), JSON answers, and error bodies.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use crate::api::ErrorBody;
use crate::function::{parse_output, Function, RunError};
use crate::runtime::InvokeError;

/// Every response body: whole, in memory.
pub type Body = Full<Bytes>;

/// Maps an invocation's outcome to a response: the one place errors become status codes.
pub fn respond(function: &Function, result: Result<Vec<u8>, RunError>) -> Response<Body> {
    let name = &function.name;
    let (status, kind, message) = match result {
        Ok(output) => match parse_output(output) {
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
        Err(RunError::Overloaded) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests in flight for this function; retry shortly",
        ),
        Err(RunError::Invoke(e)) => {
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
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
