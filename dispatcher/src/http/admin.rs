//! The admin API under `/_dispatcher/`, a prefix no manifest may claim. JSON in and out.
//!
//! | Method and path                               | What                                   |
//! |-----------------------------------------------|----------------------------------------|
//! | `GET /_dispatcher/health`                     | readiness: 200 ok, 503 starting/draining |
//! | `GET /_dispatcher/functions`                  | list what is deployed                  |
//! | `POST /_dispatcher/functions`                 | deploy (multipart: `manifest`, `wasm`) |
//! | `GET /_dispatcher/functions/{name}`           | one function and its versions          |
//! | `DELETE /_dispatcher/functions/{name}`        | remove                                 |
//! | `POST /_dispatcher/functions/{name}/rollback` | previous version, or `?to=N`           |
//! | `POST /_dispatcher/functions/{name}/invoke`   | run once: body on stdin, query as is   |
//! | `GET /_dispatcher/functions/{name}/logs`      | recent lines (NDJSON); `?request=ID`, `?follow=1` |
//! | `GET /_dispatcher/functions/{name}/invocations` | recent invocations, newest first (`?limit=N`) |
//! | `GET /_dispatcher/functions/{name}/stats`     | counts by outcome; last minute's rate and latency |
//! | `GET /_dispatcher/schedules`                  | each schedule's next fires and recent runs |
//! | `GET /_dispatcher/ui/`                        | the web dashboard (its page needs no token; its calls do) |
//!
//! Every other call needs `Authorization: Bearer <DISPATCHER_ADMIN_TOKEN>`; without that
//! variable the API is off (404).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, request::Parts, HeaderValue, Method, Response, StatusCode};
use hyper::body::Incoming;

use super::body::read_body;
use super::deploy_form::{parse_boundary, parse_form};
use super::refusals::{Refusal, Refusals, Refused};
use super::response::{error_response, json, Body};
use super::state::{AppState, RequestCtx};
use super::{observe, ui};
use crate::api::{Action, ErrorBody, Health};
use crate::deploy::{DeployError, Upload};
use crate::function::Event;
use crate::telemetry::Trigger;

/// The reserved prefix.
pub const PREFIX: &str = "/_dispatcher";

/// Liveness and readiness, without a token.
pub const HEALTH: &str = "/_dispatcher/health";

/// The health answer: 200 when `ok`, else 503 (`starting`: the deployed functions are not
/// loaded yet; `draining`: shutting down), so a load balancer or a readiness probe sends
/// traffic only to a replica that can serve it.
pub fn health(status: &str, functions: usize, optimizing: usize) -> Response<Body> {
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: status.into(),
        functions,
        optimizing,
    };
    json(code, &body)
}

/// Whether a request path belongs to the admin API.
pub fn is_admin_path(path: &str) -> bool {
    path == PREFIX
        || path
            .strip_prefix(PREFIX)
            .is_some_and(|r| r.starts_with('/'))
}

pub(super) fn err(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    error_response(status, kind, None, message)
}

fn deploy_error(e: DeployError) -> Response<Body> {
    match e {
        DeployError::Invalid(errors) => {
            let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            json(
                StatusCode::BAD_REQUEST,
                &ErrorBody {
                    error: "invalid".into(),
                    message: lines.join("; "),
                    errors: lines,
                    ..ErrorBody::default()
                },
            )
        }
        DeployError::Conflict { conflict, .. } => json(
            StatusCode::CONFLICT,
            &ErrorBody {
                error: "route_conflict".into(),
                message: conflict.to_string(),
                route: Some(conflict.route),
                owner: Some(conflict.owner),
                ..ErrorBody::default()
            },
        ),
        DeployError::NotFound(m) => err(StatusCode::NOT_FOUND, "not_found", &m),
        DeployError::NoVersion(m) => err(StatusCode::CONFLICT, "no_earlier_version", &m),
        DeployError::Store(e) => {
            tracing::warn!("admin request failed on the platform database: {e:#}");
            err(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                &format!("the platform database failed, nothing was changed: {e:#}"),
            )
        }
    }
}

/// Who sent an admin request, and the refusals counted so far.
pub struct Caller<'a> {
    pub ip: IpAddr,
    pub refusals: &'a Refusals,
}

/// Handles one request under [`PREFIX`].
pub async fn handle(
    state: &AppState,
    parts: Parts,
    body: Incoming,
    ctx: &RequestCtx,
    caller: Caller<'_>,
) -> (Option<Arc<str>>, Response<Body>) {
    let path = parts.uri.path().to_string();
    if path == HEALTH {
        if parts.method != Method::GET {
            return (None, not_allowed("GET"));
        }
        let functions = state.deployments.live().peek().functions.len();
        let draining = state.draining.load(std::sync::atomic::Ordering::Relaxed);
        let status = if draining { "draining" } else { "ok" };
        let optimizing = state.deployments.optimizing();
        return (None, health(status, functions, optimizing));
    }
    let Some(token) = &state.admin else {
        return (
            None,
            err(
                StatusCode::NOT_FOUND,
                "not_found",
                "the admin API is off: the platform was started without DISPATCHER_ADMIN_TOKEN",
            ),
        );
    };
    if let Some(page) = ui::page(&path) {
        return (None, page);
    }
    let given = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let refused = match given {
        None => Some(Refused::NoToken),
        Some(t) if !token.accepts(t.trim()) => Some(Refused::WrongToken),
        Some(_) => None,
    };
    if let Some(why) = refused {
        state.telemetry.unrouted("admin_refused");
        return (None, refuse(&caller, &path, why));
    }

    let segments: Vec<&str> = path
        .trim_start_matches(PREFIX)
        .trim_matches('/')
        .split('/')
        .collect();
    let m = &parts.method;
    let resp = match segments.as_slice() {
        ["functions"] if m == Method::GET => json(StatusCode::OK, &state.deployments.list()),
        ["functions"] if m == Method::POST => deploy(state, &parts, body).await,
        ["functions"] => not_allowed("GET, POST"),
        ["functions", name] if m == Method::GET => match state.deployments.show(name).await {
            Ok(d) => json(StatusCode::OK, &d),
            Err(e) => deploy_error(e),
        },
        ["functions", name] if m == Method::DELETE => match state.deployments.remove(name).await {
            Ok(r) => json(StatusCode::OK, &r),
            Err(e) => deploy_error(e),
        },
        ["functions", _] => not_allowed("GET, DELETE"),
        ["functions", name, "rollback"] if m == Method::POST => {
            let to = match query_version(&parts) {
                Ok(to) => to,
                Err(m) => return (None, err(StatusCode::BAD_REQUEST, "bad_request", &m)),
            };
            match state.deployments.rollback(name, to).await {
                Ok(r) => json(StatusCode::OK, &r),
                Err(e) => deploy_error(e),
            }
        }
        ["functions", name, "invoke"] if m == Method::POST => {
            return invoke(state, name, &parts, body, ctx).await
        }
        ["functions", _, "rollback" | "invoke"] => not_allowed("POST"),
        ["functions", name, "logs"] if m == Method::GET => observe::logs(state, name, &parts),
        ["functions", name, "invocations"] if m == Method::GET => {
            observe::invocations(state, name, &parts)
        }
        ["functions", name, "stats"] if m == Method::GET => observe::stats(state, name),
        ["functions", _, "logs" | "invocations" | "stats"] => not_allowed("GET"),
        ["schedules"] if m == Method::GET => observe::schedules(state).await,
        ["schedules"] => not_allowed("GET"),
        _ => err(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no admin call at {path}: see GET /_dispatcher/functions"),
        ),
    };
    (None, resp)
}

/// 401, or 429 for an address refused too often in the interval; the log gets the first
/// refusal of a spell in full and then a count per interval (see [`Refusals`]).
fn refuse(caller: &Caller<'_>, path: &str, why: Refused) -> Response<Body> {
    let (how, message) = match why {
        Refused::NoToken => (
            "without a token",
            "this call needs `Authorization: Bearer <DISPATCHER_ADMIN_TOKEN>`",
        ),
        Refused::WrongToken => ("with a wrong token", "the admin token was rejected"),
    };
    match caller.refusals.refuse(caller.ip, why) {
        Refusal::Unauthorized { log } => {
            if log {
                tracing::warn!(%path, peer = %caller.ip, "admin request {how} refused");
            }
            unauthorized(message)
        }
        Refusal::TooMany { retry_after } => {
            let mut resp = err(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_refusals",
                &format!(
                    "{message}, and this address had more than {} admin requests refused in {} s: \
                     retry in {retry_after} s with the right token",
                    super::refusals::PER_ADDRESS,
                    super::refusals::INTERVAL.as_secs()
                ),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            resp
        }
    }
}

fn unauthorized(message: &str) -> Response<Body> {
    let mut resp = err(StatusCode::UNAUTHORIZED, "unauthorized", message);
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

pub(super) fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = err(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("allowed here: {allow}"),
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// `?to=N` of a rollback.
fn query_version(parts: &Parts) -> Result<Option<u32>, String> {
    let Some(query) = parts.uri.query() else {
        return Ok(None);
    };
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("to=") {
            return v
                .parse()
                .map(Some)
                .map_err(|_| format!("`to={v}` is not a version: expected a positive integer"));
        }
    }
    Ok(None)
}

async fn read(
    state: &AppState,
    parts: &Parts,
    body: Incoming,
    max: usize,
) -> Result<Bytes, Response<Body>> {
    let limits = state.config.body_limits(max);
    read_body(body, &parts.headers, limits)
        .await
        .map_err(|e| e.response(limits, None))
}

/// `POST /_dispatcher/functions`: one manifest and its module.
async fn deploy(state: &AppState, parts: &Parts, body: Incoming) -> Response<Body> {
    let boundary = match parse_boundary(parts.headers.get(header::CONTENT_TYPE)) {
        Ok(b) => b,
        Err(m) => return err(StatusCode::BAD_REQUEST, "bad_request", &m),
    };
    let bytes = match read(state, parts, body, state.config.max_deploy_bytes).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let form = match parse_form(bytes, boundary).await {
        Ok(f) => f,
        Err(m) => return err(StatusCode::BAD_REQUEST, "bad_request", &m),
    };
    let by = parts
        .headers
        .get("x-deployed-by")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or("api")
        .chars()
        .take(200)
        .collect::<String>();
    let upload = Upload {
        manifest: form.manifest,
        source: format!("api:{}", form.label),
        label: PathBuf::from(form.label),
        wasm: form.wasm,
        by,
    };
    match state.deployments.deploy(upload).await {
        Ok(r) => json(
            if r.action == Action::Deployed {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &r,
        ),
        Err(e) => deploy_error(e),
    }
}

/// `POST /_dispatcher/functions/{name}/invoke`: runs the function once with the body on
/// stdin and the call's query string as `QUERY_STRING` (`TRIGGER=invoke`), and answers with
/// its response.
async fn invoke(
    state: &AppState,
    name: &str,
    parts: &Parts,
    body: Incoming,
    ctx: &RequestCtx,
) -> (Option<Arc<str>>, Response<Body>) {
    let Some(function) = state.deployments.live().load().functions.get(name).cloned() else {
        return (
            None,
            err(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no function named `{name}` is deployed"),
            ),
        );
    };
    let who = Some(function.name.clone());
    let input = match read(state, parts, body, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(resp) => return (who, resp),
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let event = Event::Invoke {
        query: parts.uri.query().unwrap_or(""),
        content_type,
        body: input,
    };
    let response = super::trigger::run(state, &function, event, Trigger::Invoke, ctx).await;
    (who, response)
}
