//! The function contract: CGI/1.1 as WAGI applies it.
//!
//! In: the request as environment variables and the body on stdin. Out: CGI headers
//! (`Status`, `Content-Type`, `Location`, any others), a blank line, then the body.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};

use crate::route::{percent_decode, RouteMatch, RoutePattern};

/// Longest header section a function may write before its body.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Everything about one HTTP request that the contract turns into variables.
pub struct RequestInfo<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body_len: usize,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub pattern: &'a RoutePattern,
    pub matched: &'a RouteMatch,
}

/// The name of the variable that carries route parameter `name`: `ROUTE_PARAM_<NAME>`.
pub fn param_var(name: &str) -> String {
    format!("ROUTE_PARAM_{}", name.to_ascii_uppercase())
}

/// The variables of an event that is not an HTTP request (a schedule's fire, an admin
/// `invoke`): a POST with `TRIGGER` naming the trigger, `extra` after it, then the manifest's
/// `[env]`, which wins.
pub fn event_env(
    trigger: &str,
    extra: Vec<(String, String)>,
    body_len: usize,
    content_type: &str,
    query: &str,
    manifest_env: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("GATEWAY_INTERFACE".into(), "CGI/1.1".into()),
        (
            "SERVER_SOFTWARE".into(),
            concat!("dispatcher/", env!("CARGO_PKG_VERSION")).into(),
        ),
        ("REQUEST_METHOD".into(), "POST".into()),
        ("TRIGGER".into(), trigger.into()),
    ];
    env.extend(extra);
    env.extend([
        ("CONTENT_LENGTH".into(), body_len.to_string()),
        ("CONTENT_TYPE".into(), content_type.into()),
        ("QUERY_STRING".into(), query.into()),
        (
            "REQUEST_URI".into(),
            if query.is_empty() {
                "/".into()
            } else {
                format!("/?{query}")
            },
        ),
        ("SCRIPT_NAME".into(), String::new()),
        ("PATH_INFO".into(), String::new()),
    ]);
    for (k, v) in manifest_env {
        env.retain(|(existing, _)| existing != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// The CGI variables for a request, followed by `manifest_env` (which wins over request
/// variables of the same name, so a client can never override the operator's settings).
pub fn request_env(
    req: &RequestInfo<'_>,
    manifest_env: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        Vec::with_capacity(24 + req.headers.len() + manifest_env.len());
    let mut set = |k: &str, v: String| env.push((k.to_string(), v));

    let host_header = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let authority = host_header.unwrap_or_else(|| req.local.to_string());
    let server_name = authority
        .parse::<http::uri::Authority>()
        .map(|a| a.host().to_string())
        .unwrap_or_else(|_| req.local.ip().to_string());
    let query = req.uri.query().unwrap_or("");

    set("GATEWAY_INTERFACE", "CGI/1.1".into());
    set(
        "SERVER_SOFTWARE",
        concat!("dispatcher/", env!("CARGO_PKG_VERSION")).into(),
    );
    set("SERVER_PROTOCOL", "HTTP/1.1".into());
    set("SERVER_NAME", server_name);
    set("SERVER_PORT", req.local.port().to_string());
    set("REMOTE_ADDR", req.remote.ip().to_string());
    set("REMOTE_HOST", req.remote.ip().to_string());
    set("REQUEST_METHOD", req.method.as_str().to_string());
    set("SCRIPT_NAME", req.matched.script_name.clone());
    set("PATH_INFO", percent_decode(&req.matched.raw_path_info));
    set("X_RAW_PATH_INFO", req.matched.raw_path_info.clone());
    set(
        "PATH_TRANSLATED",
        percent_decode(&req.matched.raw_path_info),
    );
    set("QUERY_STRING", query.to_string());
    set(
        "REQUEST_URI",
        req.uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string(),
    );
    set(
        "CONTENT_TYPE",
        req.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string(),
    );
    set("CONTENT_LENGTH", req.body_len.to_string());
    set("X_MATCHED_ROUTE", req.pattern.to_string());
    set(
        "X_FULL_URL",
        format!(
            "http://{authority}{}",
            req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
        ),
    );
    set("TRIGGER", "http".into());
    for (name, value) in &req.matched.params {
        set(&param_var(name), value.clone());
    }

    // Headers as HTTP_<NAME>; repeated headers are joined with ", ".
    let mut names: Vec<&HeaderName> = req.headers.keys().collect();
    names.dedup();
    for name in names {
        // httpoxy: a `Proxy` header must never become HTTP_PROXY.
        if name.as_str() == "proxy" {
            continue;
        }
        let values: Vec<String> = req
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let var = format!(
            "HTTP_{}",
            name.as_str().to_ascii_uppercase().replace('-', "_")
        );
        set(&var, values.join(", "));
    }

    for (k, v) in manifest_env {
        env.retain(|(existing, _)| existing != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// A function's answer, parsed.
#[derive(Debug)]
pub struct CgiResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Parses CGI output: header lines (`\n` or `\r\n`), a blank line, then the body.
pub fn parse_output(output: Vec<u8>) -> Result<CgiResponse, String> {
    let mut output = Bytes::from(output);
    if output.is_empty() {
        return Err(
            "the function wrote nothing: expected CGI headers, a blank line and a body".into(),
        );
    }
    let mut status = None;
    let mut headers = HeaderMap::new();
    let mut pos = 0;
    loop {
        let Some(nl) = output[pos..].iter().position(|&b| b == b'\n') else {
            return Err("the output has no blank line after its headers".into());
        };
        let mut line = &output[pos..pos + nl];
        pos += nl + 1;
        if pos > MAX_HEADER_BYTES {
            return Err(format!(
                "the header section is longer than {MAX_HEADER_BYTES} bytes"
            ));
        }
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        if line.is_empty() {
            break;
        }
        let text =
            std::str::from_utf8(line).map_err(|_| "a header line is not UTF-8".to_string())?;
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| format!("header line `{}` has no `:`", truncate(text)))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("");
            let code = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .filter(|c| (100..=599).contains(&c.as_u16()))
                .ok_or_else(|| {
                    format!("`Status: {}` is not an HTTP status code", truncate(value))
                })?;
            status = Some(code);
            continue;
        }
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("`{}` is not a valid header name", truncate(name)))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("the value of header `{name}` is not valid"))?;
        headers.append(name, value);
    }
    let status = status.unwrap_or(if headers.contains_key(http::header::LOCATION) {
        StatusCode::FOUND
    } else {
        StatusCode::OK
    });
    let body = output.split_off(pos);
    Ok(CgiResponse {
        status,
        headers,
        body,
    })
}

/// The `Status` a function wrote in its header section, if it wrote one.
pub fn explicit_status(output: &[u8]) -> Option<u16> {
    for line in output.split(|&b| b == b'\n').take(MAX_HEADER_LINES) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let text = std::str::from_utf8(line).ok()?;
        let (name, value) = text.split_once(':')?;
        if name.trim().eq_ignore_ascii_case("status") {
            return value.split_whitespace().next()?.parse().ok();
        }
    }
    None
}

/// How many header lines [`explicit_status`] looks at.
const MAX_HEADER_LINES: usize = 200;

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lf_and_crlf() {
        let r = parse_output(
            b"Status: 201 Created\r\nContent-Type: text/plain\r\nX-A: 1\r\n\r\nbody\n".to_vec(),
        )
        .unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.headers["content-type"], "text/plain");
        assert_eq!(r.headers["x-a"], "1");
        assert_eq!(&r.body[..], b"body\n");
        let r = parse_output(b"Content-Type: a/b\n\n".to_vec()).unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
    }

    #[test]
    fn finds_an_explicit_status() {
        assert_eq!(
            explicit_status(b"Content-Type: a\nStatus: 500 Oops\n\nbody"),
            Some(500)
        );
        assert_eq!(explicit_status(b"Location: /x\n\n"), None);
        assert_eq!(explicit_status(b""), None);
        assert_eq!(explicit_status(b"plain text output\nStatus: 500\n"), None);
    }

    #[test]
    fn location_without_status_redirects() {
        let r = parse_output(b"Location: /x\n\n".to_vec()).unwrap();
        assert_eq!(r.status, 302);
    }

    #[test]
    fn rejects_bad_output() {
        assert!(parse_output(Vec::new()).is_err());
        assert!(parse_output(b"hello world".to_vec()).is_err());
        assert!(parse_output(b"no colon here\n\nbody".to_vec())
            .unwrap_err()
            .contains("no `:`"));
        assert!(parse_output(b"Status: abc\n\n".to_vec()).is_err());
        assert!(parse_output(b"Status: 99\n\n".to_vec()).is_err());
        let mut big = b"X: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEADER_BYTES));
        big.extend_from_slice(b"\n\n");
        assert!(parse_output(big).unwrap_err().contains("longer than"));
    }

    #[test]
    fn manifest_env_wins() {
        let pattern = RoutePattern::parse("/u/:id").unwrap();
        let matched = pattern.matches("/u/a%20b").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-token", HeaderValue::from_static("t"));
        headers.append("accept", HeaderValue::from_static("a"));
        headers.append("accept", HeaderValue::from_static("b"));
        headers.insert("proxy", HeaderValue::from_static("evil"));
        headers.insert("host", HeaderValue::from_static("example.com:8080"));
        let uri: Uri = "/u/a%20b?x=1".parse().unwrap();
        let info = RequestInfo {
            method: &Method::GET,
            uri: &uri,
            headers: &headers,
            body_len: 0,
            remote: "10.0.0.1:5555".parse().unwrap(),
            local: "127.0.0.1:8080".parse().unwrap(),
            pattern: &pattern,
            matched: &matched,
        };
        let env = request_env(&info, &[("HTTP_X_TOKEN".into(), "operator".into())]);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("HTTP_X_TOKEN"), Some("operator"));
        assert_eq!(env.iter().filter(|(n, _)| n == "HTTP_X_TOKEN").count(), 1);
        assert_eq!(get("HTTP_ACCEPT"), Some("a, b"));
        assert_eq!(get("HTTP_PROXY"), None);
        assert_eq!(get("ROUTE_PARAM_ID"), Some("a b"));
        assert_eq!(get("SERVER_NAME"), Some("example.com"));
        assert_eq!(
            get("X_FULL_URL"),
            Some("http://example.com:8080/u/a%20b?x=1")
        );
    }
}
