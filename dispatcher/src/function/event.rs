//! What a trigger hands a function, as the CGI/1.1 contract puts it: the event as environment
//! variables (then the manifest's `[env]`, which wins) and its input on stdin.

use std::net::SocketAddr;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, Method, Uri};

use crate::manifest::{percent_decode, RouteMatch, RoutePattern, ScheduleSpec};
use crate::runtime::CStrings;

/// One event for a function.
pub enum Event<'a> {
    /// An HTTP request to the function's route.
    Http {
        request: RequestInfo<'a>,
        body: Bytes,
    },
    /// `POST /_dispatcher/functions/NAME/invoke`: the body on stdin, the call's query.
    Invoke {
        query: &'a str,
        content_type: &'a str,
        body: Bytes,
    },
    /// One attempt of a schedule's fire; its payload on stdin.
    Schedule {
        schedule: &'a ScheduleSpec,
        at: DateTime<Utc>,
        attempt: u32,
    },
}

impl Event<'_> {
    /// The variables of this event (`REQUEST_ID` among them), then the manifest's `[env]`
    /// from `base`, which wins over an event variable of the same name.
    pub fn env(&self, request_id: &str, base: &EnvBase) -> CStrings {
        match self {
            Event::Http { request, .. } => request_env(request, request_id, base),
            Event::Invoke {
                query,
                content_type,
                body,
            } => event_env(
                "invoke",
                &[("REQUEST_ID", request_id)],
                body.len(),
                content_type,
                query,
                base,
            ),
            Event::Schedule {
                schedule,
                at,
                attempt,
            } => event_env(
                "schedule",
                &[
                    ("REQUEST_ID", request_id),
                    ("SCHEDULE_NAME", &schedule.name),
                    (
                        "SCHEDULED_AT",
                        &at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                    ),
                    ("ATTEMPT", &attempt.to_string()),
                ],
                schedule.payload.len(),
                if schedule.payload.is_empty() {
                    ""
                } else {
                    "application/json"
                },
                "",
                base,
            ),
        }
    }

    /// The event's input.
    pub fn into_stdin(self) -> Bytes {
        match self {
            Event::Http { body, .. } | Event::Invoke { body, .. } => body,
            Event::Schedule { schedule, .. } => Bytes::from(schedule.payload.clone()),
        }
    }
}

/// Everything about one HTTP request that the contract turns into variables.
pub struct RequestInfo<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body_len: usize,
    pub peer: &'a Peer,
    pub matched: &'a RouteMatch,
}

/// The two ends of a connection, with the text the CGI variables take from them made once
/// per connection instead of once per request.
#[derive(Debug)]
pub struct Peer {
    local: SocketAddr,
    remote_ip: String,
    local_ip: String,
    local_port: String,
}

impl Peer {
    pub fn new(remote: SocketAddr, local: SocketAddr) -> Self {
        Peer {
            local,
            remote_ip: remote.ip().to_string(),
            local_ip: local.ip().to_string(),
            local_port: local.port().to_string(),
        }
    }
}

/// What a function's environment has in common for every event, built once at deploy: the
/// HTTP trigger's fixed variables and the manifest's `[env]` (appended last, so it wins).
#[derive(Debug, Default)]
pub struct EnvBase {
    /// `GATEWAY_INTERFACE`, `SERVER_SOFTWARE`, `SERVER_PROTOCOL`, `X_MATCHED_ROUTE`,
    /// `TRIGGER=http`, less those the manifest sets.
    http_fixed: CStrings,
    /// The manifest's `[env]`.
    manifest: CStrings,
    /// The names the manifest sets: an event variable of one of these names is left out.
    overridden: Vec<String>,
}

impl EnvBase {
    /// For a function with `manifest_env`, served on `route` if it has an HTTP trigger.
    pub fn new(manifest_env: &[(String, String)], route: Option<&RoutePattern>) -> Self {
        let mut base = EnvBase {
            http_fixed: CStrings::default(),
            manifest: CStrings::from_vars(manifest_env.iter().map(|(k, v)| (k, v))),
            overridden: manifest_env.iter().map(|(k, _)| k.clone()).collect(),
        };
        let mut fixed = Vars::new(&base, 256);
        fixed.set("GATEWAY_INTERFACE", "CGI/1.1");
        fixed.set("SERVER_SOFTWARE", SERVER_SOFTWARE);
        fixed.set("SERVER_PROTOCOL", "HTTP/1.1");
        if let Some(route) = route {
            fixed.set("X_MATCHED_ROUTE", route.source());
        }
        fixed.set("TRIGGER", "http");
        base.http_fixed = fixed.env;
        base
    }

    fn overrides(&self, name: &str) -> bool {
        self.overridden.iter().any(|o| o == name)
    }
}

const SERVER_SOFTWARE: &str = concat!("dispatcher/", env!("CARGO_PKG_VERSION"));

/// An environment being built: a variable the manifest sets is skipped, and the manifest's
/// `[env]` comes last.
struct Vars<'a> {
    env: CStrings,
    base: &'a EnvBase,
}

impl<'a> Vars<'a> {
    fn new(base: &'a EnvBase, capacity: usize) -> Self {
        Vars {
            env: CStrings::with_capacity(capacity),
            base,
        }
    }

    fn set(&mut self, key: &str, value: &str) {
        self.set_bytes(key, value.as_bytes());
    }

    fn set_bytes(&mut self, key: &str, value: &[u8]) {
        if !self.base.overrides(key) {
            self.env.push_var(key, value);
        }
    }

    fn set_fmt(&mut self, key: &str, value: std::fmt::Arguments<'_>) {
        if !self.base.overrides(key) {
            self.env.push_var_fmt(key, value);
        }
    }

    fn finish(mut self) -> CStrings {
        self.env.append(&self.base.manifest);
        self.env
    }
}

/// The variables of an event that is not an HTTP request (a schedule's fire, an admin
/// `invoke`): a POST with `TRIGGER` naming the trigger, `extra` after it, then the manifest's
/// `[env]`, which wins.
fn event_env(
    trigger: &str,
    extra: &[(&str, &str)],
    body_len: usize,
    content_type: &str,
    query: &str,
    base: &EnvBase,
) -> CStrings {
    let mut env = Vars::new(base, 512);
    env.set("GATEWAY_INTERFACE", "CGI/1.1");
    env.set("SERVER_SOFTWARE", SERVER_SOFTWARE);
    env.set("REQUEST_METHOD", "POST");
    env.set("TRIGGER", trigger);
    for (k, v) in extra {
        env.set(k, v);
    }
    env.set_fmt("CONTENT_LENGTH", format_args!("{body_len}"));
    env.set("CONTENT_TYPE", content_type);
    env.set("QUERY_STRING", query);
    if query.is_empty() {
        env.set("REQUEST_URI", "/");
    } else {
        env.set_fmt("REQUEST_URI", format_args!("/?{query}"));
    }
    env.set("SCRIPT_NAME", "");
    env.set("PATH_INFO", "");
    env.finish()
}

/// The host part of a `Host` header's authority (`example.com:8080` gives `example.com`,
/// `[::1]:80` gives `[::1]`); `None` if it is not a plausible host.
fn host_of(authority: &str) -> Option<&str> {
    let host = if authority.starts_with('[') {
        &authority[..=authority.find(']')?]
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            Some(_) => return None,
            None => authority,
        }
    };
    let plausible = |b: u8| b.is_ascii_alphanumeric() || b"-._~%[]:".contains(&b);
    (!host.is_empty() && host.bytes().all(plausible)).then_some(host)
}

/// The CGI variables for a request, followed by the manifest's `[env]` (which wins over
/// request variables of the same name, so a client can never override the operator's
/// settings). The fixed ones come ready from `base`; this adds the request's own.
fn request_env(req: &RequestInfo<'_>, request_id: &str, base: &EnvBase) -> CStrings {
    let mut env = Vars::new(
        base,
        base.http_fixed.bytes().len() + base.manifest.bytes().len() + 768,
    );
    env.env.append(&base.http_fixed);

    let host_header = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok());
    let peer = req.peer;
    env.set(
        "SERVER_NAME",
        host_header.and_then(host_of).unwrap_or(&peer.local_ip),
    );
    env.set("SERVER_PORT", &peer.local_port);
    env.set("REMOTE_ADDR", &peer.remote_ip);
    env.set("REMOTE_HOST", &peer.remote_ip);
    env.set("REQUEST_METHOD", req.method.as_str());
    env.set("SCRIPT_NAME", &req.matched.script_name);
    let raw_path_info = &req.matched.raw_path_info;
    if raw_path_info.is_empty() {
        env.set("PATH_INFO", "");
        env.set("X_RAW_PATH_INFO", "");
        env.set("PATH_TRANSLATED", "");
    } else {
        let path_info = percent_decode(raw_path_info);
        env.set("PATH_INFO", &path_info);
        env.set("X_RAW_PATH_INFO", raw_path_info);
        env.set("PATH_TRANSLATED", &path_info);
    }
    env.set("QUERY_STRING", req.uri.query().unwrap_or(""));
    let path_and_query = req.uri.path_and_query().map_or("/", |p| p.as_str());
    env.set("REQUEST_URI", path_and_query);
    let content_type = req
        .headers
        .get(http::header::CONTENT_TYPE)
        .map_or(&b""[..], |h| h.as_bytes());
    env.set_bytes("CONTENT_TYPE", content_type);
    env.set_fmt("CONTENT_LENGTH", format_args!("{}", req.body_len));
    match host_header {
        Some(authority) => env.set_fmt(
            "X_FULL_URL",
            format_args!("http://{authority}{path_and_query}"),
        ),
        None => env.set_fmt(
            "X_FULL_URL",
            format_args!("http://{}{path_and_query}", peer.local),
        ),
    }
    env.set("REQUEST_ID", request_id);
    let mut name = String::with_capacity(64);
    for (param, value) in &req.matched.params {
        name.clear();
        name.push_str("ROUTE_PARAM_");
        name.extend(param.chars().map(|c| c.to_ascii_uppercase()));
        env.set(&name, value);
    }

    // Headers as HTTP_<NAME>; repeated headers are joined with ", ".
    for header in req.headers.keys() {
        // httpoxy: a `Proxy` header must never become HTTP_PROXY.
        if header.as_str() == "proxy" {
            continue;
        }
        name.clear();
        name.push_str("HTTP_");
        name.extend(header.as_str().bytes().map(|b| match b {
            b'-' => '_',
            b => b.to_ascii_uppercase() as char,
        }));
        let mut values = req.headers.get_all(header).iter();
        let first = values.next().map_or(&b""[..], |v| v.as_bytes());
        match values.next() {
            // One value, as UTF-8 (the usual case): as it is.
            None if std::str::from_utf8(first).is_ok() => env.set_bytes(&name, first),
            _ => {
                let joined: Vec<String> = req
                    .headers
                    .get_all(header)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                env.set(&name, &joined.join(", "));
            }
        }
    }
    env.finish()
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

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
            peer: &Peer::new(
                "10.0.0.1:5555".parse().unwrap(),
                "127.0.0.1:8080".parse().unwrap(),
            ),
            matched: &matched,
        };
        let base = EnvBase::new(
            &[("HTTP_X_TOKEN".into(), "operator".into())],
            Some(&pattern),
        );
        let env = request_env(&info, "id-1", &base);
        let get = |k: &str| env.get(k);
        assert_eq!(get("HTTP_X_TOKEN"), Some("operator"));
        let token = env
            .iter()
            .filter(|e| e.starts_with(b"HTTP_X_TOKEN="))
            .count();
        assert_eq!(token, 1);
        assert_eq!(get("HTTP_ACCEPT"), Some("a, b"));
        assert_eq!(get("HTTP_PROXY"), None);
        assert_eq!(get("REQUEST_ID"), Some("id-1"));
        assert_eq!(get("ROUTE_PARAM_ID"), Some("a b"));
        assert_eq!(get("SERVER_NAME"), Some("example.com"));
        assert_eq!(
            get("X_FULL_URL"),
            Some("http://example.com:8080/u/a%20b?x=1")
        );
        assert_eq!(get("X_MATCHED_ROUTE"), Some("/u/:id"));
        assert_eq!(get("PATH_INFO"), Some(""));
        assert_eq!(get("SERVER_PORT"), Some("8080"));
        assert_eq!(get("REMOTE_ADDR"), Some("10.0.0.1"));
        assert_eq!(get("CONTENT_LENGTH"), Some("0"));
        assert_eq!(get("REQUEST_URI"), Some("/u/a%20b?x=1"));
        assert_eq!(get("TRIGGER"), Some("http"));
    }

    #[test]
    fn host_names() {
        assert_eq!(host_of("example.com:8080"), Some("example.com"));
        assert_eq!(host_of("example.com"), Some("example.com"));
        assert_eq!(host_of("[::1]:80"), Some("[::1]"));
        assert_eq!(host_of("a:b"), None);
        assert_eq!(host_of("a b"), None);
        assert_eq!(host_of(""), None);
        assert_eq!(host_of("[::1"), None);
    }

    #[test]
    fn other_events_have_the_manifest_env_last() {
        let base = EnvBase::new(&[("TRIGGER".into(), "mine".into())], None);
        let env = event_env(
            "invoke",
            &[("REQUEST_ID", "r")],
            3,
            "text/plain",
            "a=1",
            &base,
        );
        assert_eq!(env.get("TRIGGER"), Some("mine"));
        assert_eq!(env.iter().filter(|e| e.starts_with(b"TRIGGER=")).count(), 1);
        assert_eq!(env.get("REQUEST_URI"), Some("/?a=1"));
        assert_eq!(env.get("CONTENT_LENGTH"), Some("3"));
        assert_eq!(env.get("X_MATCHED_ROUTE"), None);
    }
}
