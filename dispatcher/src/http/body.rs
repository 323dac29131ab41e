//! Reading request bodies under a size limit and a deadline.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::response::{error_response, Body};

/// Why a request body was not read.
pub enum BodyError {
    TooLarge,
    /// The client sent it slower than [`BodyLimits`] allow, or stopped.
    TimedOut,
    Read(hyper::Error),
}

impl BodyError {
    /// The answer: 413, 408 or 400, naming `function` when there is one. After a timeout or
    /// a broken body the connection is closed: the rest of the body cannot be told from the
    /// next request.
    pub fn response(&self, limits: BodyLimits, function: Option<&str>) -> Response<Body> {
        let (status, kind, message) = match self {
            BodyError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than {} bytes", limits.max),
            ),
            BodyError::TimedOut => (
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive in time: expected all of it within {} s, \
                     plus one second per {} KiB received",
                    limits.timeout.as_secs_f64(),
                    MIN_RATE >> 10
                ),
            ),
            BodyError::Read(e) => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the request body could not be read: {e}"),
            ),
        };
        let mut resp = error_response(status, kind, function, &message);
        if !matches!(self, BodyError::TooLarge) {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// How big a body may be, and how fast it must come.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body, in bytes.
    pub max: usize,
    /// How long the whole body may take, plus one second per [`MIN_RATE`] bytes received: a
    /// client that stops, or trickles, is cut off; a large upload on a slow link is not.
    pub timeout: Duration,
}

/// The slowest a body may arrive, once its first `timeout` is spent: 64 KiB a second.
pub const MIN_RATE: u64 = 64 << 10;

/// How much of an oversized body is read and thrown away, and for how long, so that the
/// client gets its 413 instead of a broken pipe while it is still sending.
const DISCARD_BYTES: u64 = 64 << 20;
const DISCARD_TIME: Duration = Duration::from_secs(2);

/// Reads the whole body if it is at most `limits.max` bytes and arrives in time.
pub async fn read_body(
    mut body: Incoming,
    headers: &http::HeaderMap,
    limits: BodyLimits,
) -> Result<Bytes, BodyError> {
    let max = limits.max;
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
    let started = Instant::now();
    let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    loop {
        let earned = Duration::from_secs_f64(buf.len() as f64 / MIN_RATE as f64);
        let deadline = started + limits.timeout + earned;
        let Ok(frame) = tokio::time::timeout_at(deadline, body.frame()).await else {
            return Err(BodyError::TimedOut);
        };
        let Some(frame) = frame else {
            break;
        };
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
