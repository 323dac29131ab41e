//! What a trigger hands a function, as the CGI/1.1 contract puts it: the event as environment
//! variables (then the manifest's `[env]`, which wins) and its input on stdin.

use std::net::SocketAddr;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, Method, Uri};

use crate::manifest::{percent_decode, RouteMatch, RoutePattern, ScheduleSpec};

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
    /// The variables of this event (`REQUEST_ID` among them), then `manifest_env`.
    pub fn env(
        &self,
        request_id: &str,
        manifest_env: &[(String, String)],
    ) -> Vec<(String, String)> {
        match self {
            Event::Http { request, .. } => request_env(request, request_id, manifest_env),
            Event::Invoke {
                query,
                content_type,
                body,
            } => event_env(
                "invoke",
                vec![("REQUEST_ID".into(), request_id.into())],
                body.len(),
                content_type,
                query,
                manifest_env,
            ),
            Event::Schedule {
                schedule,
                at,
                attempt,
            } => event_env(
                "schedule",
                vec![
                    ("REQUEST_ID".into(), request_id.into()),
                    ("SCHEDULE_NAME".into(), schedule.name.clone()),
                    (
                        "SCHEDULED_AT".into(),
                        at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                    ),
                    ("ATTEMPT".into(), attempt.to_string()),
                ],
                schedule.payload.len(),
                if schedule.payload.is_empty() {
                    ""
                } else {
                    "application/json"
                },
                "",
                manifest_env,
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
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub pattern: &'a RoutePattern,
    pub matched: &'a RouteMatch,
}

/// The name of the variable that carries route parameter `name`: `ROUTE_PARAM_<NAME>`.
fn param_var(name: &str) -> String {
    format!("ROUTE_PARAM_{}", name.to_ascii_uppercase())
}

/// The variables of an event that is not an HTTP request (a schedule's fire, an admin
/// `invoke`): a POST with `TRIGGER` naming the trigger, `extra` after it, then the manifest's
/// `[env]`, which wins.
fn event_env(
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
fn request_env(
    req: &RequestInfo<'_>,
    request_id: &str,
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
    set("REQUEST_ID", request_id.into());
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
            remote: "10.0.0.1:5555".parse().unwrap(),
            local: "127.0.0.1:8080".parse().unwrap(),
            pattern: &pattern,
            matched: &matched,
        };
        let env = request_env(&info, "id-1", &[("HTTP_X_TOKEN".into(), "operator".into())]);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("HTTP_X_TOKEN"), Some("operator"));
        assert_eq!(env.iter().filter(|(n, _)| n == "HTTP_X_TOKEN").count(), 1);
        assert_eq!(get("HTTP_ACCEPT"), Some("a, b"));
        assert_eq!(get("HTTP_PROXY"), None);
        assert_eq!(get("REQUEST_ID"), Some("id-1"));
        assert_eq!(get("ROUTE_PARAM_ID"), Some("a b"));
        assert_eq!(get("SERVER_NAME"), Some("example.com"));
        assert_eq!(
            get("X_FULL_URL"),
            Some("http://example.com:8080/u/a%20b?x=1")
        );
    }
}
