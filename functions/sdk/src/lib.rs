//! Write a dispatcher function as a handler from [`Request`] to [`Response`].
//!
//! The dispatcher runs each request in a fresh WebAssembly instance and speaks CGI to it: the
//! request arrives as environment variables plus the body on stdin, and the answer goes out
//! on stdout as CGI headers, a blank line and the body. This crate does both directions, so a
//! function reads like a hyper service:
//!
//! ```no_run
//! use function_sdk::{Request, Response};
//!
//! fn main() {
//!     function_sdk::run(|req: Request| Response::new(req.into_body()));
//! }
//! ```

use std::io::{self, Read, Write};

pub use http;

/// A request: method, URI, headers and the whole body.
pub type Request = http::Request<Vec<u8>>;
/// A response: status, headers and the whole body.
pub type Response = http::Response<Vec<u8>>;

/// Reads the request the dispatcher handed to this instance.
pub fn request() -> io::Result<Request> {
    // One pass over the environment: each `std::env::var` would scan all of it again.
    let mut method = String::new();
    let mut uri = String::new();
    let mut content_type = String::new();
    let mut content_length = 0;
    let mut builder = http::Request::builder();
    let mut has_content_type = false;
    for (key, value) in std::env::vars() {
        if let Some(name) = key.strip_prefix("HTTP_") {
            let name = name.to_ascii_lowercase().replace('_', "-");
            has_content_type |= name == "content-type";
            builder = builder.header(name, value);
            continue;
        }
        match key.as_str() {
            "REQUEST_METHOD" => method = value,
            "REQUEST_URI" => uri = value,
            "CONTENT_TYPE" => content_type = value,
            "CONTENT_LENGTH" => content_length = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    if uri.is_empty() {
        uri.push('/');
    }
    // The `Content-Type` header arrives as HTTP_CONTENT_TYPE too; CONTENT_TYPE alone (an
    // invoke, a schedule) still gives the request one.
    if !content_type.is_empty() && !has_content_type {
        builder = builder.header(http::header::CONTENT_TYPE, content_type);
    }
    let mut body = Vec::with_capacity(content_length);
    io::stdin().lock().read_to_end(&mut body)?;
    builder
        .method(method.as_str())
        .uri(uri)
        .body(body)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes `response` to stdout in CGI form, in one write.
pub fn respond(response: &Response) -> io::Result<()> {
    let mut out = Vec::with_capacity(64 + response.body().len());
    out.extend_from_slice(b"Status: ");
    out.extend_from_slice(response.status().as_str().as_bytes());
    out.push(b'\n');
    for (name, value) in response.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(response.body());
    let mut stdout = io::stdout().lock();
    stdout.write_all(&out)?;
    stdout.flush()
}

/// The value of route parameter `name` (`/orders/:id` gives `param("id")`).
pub fn param(name: &str) -> Option<String> {
    std::env::var(format!("ROUTE_PARAM_{}", name.to_ascii_uppercase())).ok()
}

/// The first value of `name` in the request's query string, percent-decoded.
pub fn query<'a>(req: &'a Request, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| decode(v))
    })
}

fn decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A plain-text response with `status`.
pub fn text(status: u16, body: impl Into<String>) -> Response {
    let mut resp = Response::new(body.into().into_bytes());
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Reads the request, calls `handler`, and writes its response. A request that cannot be read
/// gets a 400.
pub fn run(handler: impl FnOnce(Request) -> Response) {
    let response = match request() {
        Ok(req) => handler(req),
        Err(e) => text(400, format!("cannot read the request: {e}")),
    };
    finish(&response);
}

/// Like [`run`], for an async handler, on a current-thread tokio_wasi runtime.
#[cfg(feature = "async")]
pub fn run_async<F, Fut>(handler: F)
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let response = match request() {
        Ok(req) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(handler(req)),
            Err(e) => text(500, format!("cannot start the async runtime: {e}")),
        },
        Err(e) => text(400, format!("cannot read the request: {e}")),
    };
    finish(&response);
}

fn finish(response: &Response) {
    if let Err(e) = respond(response) {
        eprintln!("cannot write the response: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decodes() {
        let req = http::Request::builder()
            .uri("/x?a=1&b=two+words&c=%41%2&d")
            .body(Vec::new())
            .unwrap();
        assert_eq!(query(&req, "a").as_deref(), Some("1"));
        assert_eq!(query(&req, "b").as_deref(), Some("two words"));
        assert_eq!(query(&req, "c").as_deref(), Some("A%2"));
        assert_eq!(query(&req, "d").as_deref(), Some(""));
        assert_eq!(query(&req, "z"), None);
    }
}
