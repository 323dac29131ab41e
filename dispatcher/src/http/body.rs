//! Reading request bodies under a size limit.

use std::time::Duration;

use bytes::Bytes;
use http::header;
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Why a request body was not read.
pub enum BodyError {
    TooLarge,
    Read(hyper::Error),
}

/// How much of an oversized body is read and thrown away, and for how long, so that the
/// client gets its 413 instead of a broken pipe while it is still sending.
const DISCARD_BYTES: u64 = 64 << 20;
const DISCARD_TIME: Duration = Duration::from_secs(2);

/// Reads the whole body if it is at most `max` bytes.
pub async fn read_body(
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
