//! The admin API under `/_dispatcher/`, a prefix no manifest may claim. JSON in and out.
//!
//! | Method and path                               | What                                   |
//! |-----------------------------------------------|----------------------------------------|
//! | `GET /_dispatcher/health`                     | liveness and readiness (no token)      |
//! | `GET /_dispatcher/functions`                  | list what is deployed                  |
//! | `POST /_dispatcher/functions`                 | deploy (multipart: `manifest`, `wasm`) |
//! | `GET /_dispatcher/functions/{name}`           | one function and its versions          |
//! | `DELETE /_dispatcher/functions/{name}`        | remove                                 |
//! | `POST /_dispatcher/functions/{name}/rollback` | previous version, or `?to=N`           |
//! | `POST /_dispatcher/functions/{name}/invoke`   | run once: body on stdin, query as is   |
//!
//! Every other call needs `Authorization: Bearer <DISPATCHER_ADMIN_TOKEN>`; without that
//! variable the API is off (404).

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, request::Parts, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::cgi;
use crate::deploy::{DeployError, Upload};
use crate::server::{admit, error_response, read_body, respond, AppState, BodyError};

/// The reserved prefix.
pub const PREFIX: &str = "/_dispatcher";

type Body = Full<Bytes>;

/// The admin token, kept as its SHA-256 so that comparing takes the same time whatever the
/// guess (its length included).
pub struct AdminToken([u8; 32]);

impl AdminToken {
    pub fn new(token: &str) -> Self {
        AdminToken(Sha256::digest(token.as_bytes()).into())
    }

    fn accepts(&self, given: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        self.0.ct_eq(&given).into()
    }
}

/// Whether a request path belongs to the admin API.
pub fn is_admin_path(path: &str) -> bool {
    path == PREFIX
        || path
            .strip_prefix(PREFIX)
            .is_some_and(|r| r.starts_with('/'))
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
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

fn err(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    error_response(status, kind, None, message)
}

fn deploy_error(e: DeployError) -> Response<Body> {
    match e {
        DeployError::Invalid(errors) => {
            let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({
                    "error": "invalid",
                    "message": lines.join("; "),
                    "errors": lines,
                }),
            )
        }
        DeployError::Conflict { conflict, .. } => json(
            StatusCode::CONFLICT,
            &serde_json::json!({
                "error": "route_conflict",
                "message": conflict.to_string(),
                "route": conflict.route,
                "owner": conflict.owner,
            }),
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

/// Handles one request under [`PREFIX`].
pub async fn handle(
    state: &AppState,
    parts: Parts,
    body: Incoming,
) -> (Option<Arc<str>>, Response<Body>) {
    let path = parts.uri.path().to_string();
    if path == "/_dispatcher/health" {
        if parts.method != Method::GET {
            return (None, not_allowed("GET"));
        }
        let functions = state.platform.live().peek().functions.len();
        return (
            None,
            json(
                StatusCode::OK,
                &serde_json::json!({ "status": "ok", "functions": functions }),
            ),
        );
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
    let given = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => {
            tracing::warn!(%path, "admin request without a token refused");
            return (
                None,
                unauthorized("this call needs `Authorization: Bearer <DISPATCHER_ADMIN_TOKEN>`"),
            );
        }
        Some(t) if !token.accepts(t.trim()) => {
            tracing::warn!(%path, "admin request with a wrong token refused");
            return (None, unauthorized("the admin token was rejected"));
        }
        Some(_) => {}
    }

    let segments: Vec<&str> = path
        .trim_start_matches(PREFIX)
        .trim_matches('/')
        .split('/')
        .collect();
    let m = &parts.method;
    let resp = match segments.as_slice() {
        ["functions"] if m == Method::GET => json(StatusCode::OK, &state.platform.list()),
        ["functions"] if m == Method::POST => deploy(state, &parts, body).await,
        ["functions"] => not_allowed("GET, POST"),
        ["functions", name] if m == Method::GET => match state.platform.show(name).await {
            Ok(d) => json(StatusCode::OK, &d),
            Err(e) => deploy_error(e),
        },
        ["functions", name] if m == Method::DELETE => match state.platform.remove(name).await {
            Ok(r) => json(StatusCode::OK, &r),
            Err(e) => deploy_error(e),
        },
        ["functions", _] => not_allowed("GET, DELETE"),
        ["functions", name, "rollback"] if m == Method::POST => {
            let to = match query_version(&parts) {
                Ok(to) => to,
                Err(m) => return (None, err(StatusCode::BAD_REQUEST, "bad_request", &m)),
            };
            match state.platform.rollback(name, to).await {
                Ok(r) => json(StatusCode::OK, &r),
                Err(e) => deploy_error(e),
            }
        }
        ["functions", name, "invoke"] if m == Method::POST => {
            return invoke(state, name, &parts, body).await
        }
        ["functions", _, "rollback" | "invoke"] => not_allowed("POST"),
        _ => err(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no admin call at {path}: see GET /_dispatcher/functions"),
        ),
    };
    (None, resp)
}

fn unauthorized(message: &str) -> Response<Body> {
    let mut resp = err(StatusCode::UNAUTHORIZED, "unauthorized", message);
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

fn not_allowed(allow: &'static str) -> Response<Body> {
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

async fn read(parts: &Parts, body: Incoming, max: usize) -> Result<Bytes, Response<Body>> {
    read_body(body, &parts.headers, max)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => err(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                &format!("the request body is larger than {max} bytes"),
            ),
            BodyError::Read(e) => err(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("the request body could not be read: {e}"),
            ),
        })
}

const DEPLOY_FORM: &str = "expected a multipart/form-data body with a `manifest` part (the manifest's TOML) and a `wasm` part (the module)";

/// `POST /_dispatcher/functions`: one manifest and its module.
async fn deploy(state: &AppState, parts: &Parts, body: Incoming) -> Response<Body> {
    let boundary = match parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(multer::parse_boundary)
    {
        Some(Ok(b)) => b,
        _ => return err(StatusCode::BAD_REQUEST, "bad_request", DEPLOY_FORM),
    };
    let bytes = match read(parts, body, state.config.max_deploy_bytes).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let stream = futures_util::stream::once(async move { Ok::<Bytes, Infallible>(bytes) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut manifest: Option<(String, String)> = None;
    let mut wasm: Option<Vec<u8>> = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return err(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("the form is malformed ({e}): {DEPLOY_FORM}"),
                )
            }
        };
        let name = field.name().unwrap_or_default().to_string();
        let file = field.file_name().map(str::to_string);
        let data = match field.bytes().await {
            Ok(d) => d,
            Err(e) => {
                return err(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("the form part `{name}` could not be read: {e}"),
                )
            }
        };
        match name.as_str() {
            "manifest" => match String::from_utf8(data.to_vec()) {
                Ok(text) => manifest = Some((file.unwrap_or_else(|| "manifest.toml".into()), text)),
                Err(_) => {
                    return err(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "the `manifest` part is not UTF-8 text: expected the manifest's TOML",
                    )
                }
            },
            "wasm" => wasm = Some(data.to_vec()),
            other => {
                return err(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("unexpected form part `{other}`: {DEPLOY_FORM}"),
                )
            }
        }
    }
    let (Some((label, manifest)), Some(wasm)) = (manifest, wasm) else {
        return err(StatusCode::BAD_REQUEST, "bad_request", DEPLOY_FORM);
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
        manifest,
        source: format!("api:{label}"),
        label: PathBuf::from(label),
        wasm,
        by,
    };
    match state.platform.deploy(upload).await {
        Ok(r) => json(
            if r.action == "deployed" {
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
) -> (Option<Arc<str>>, Response<Body>) {
    let Some(function) = state.platform.live().load().functions.get(name).cloned() else {
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
    let input = match read(parts, body, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(resp) => return (who, resp),
    };
    let permit = match admit(&function, state.config.queue_timeout).await {
        Ok(p) => p,
        Err(resp) => return (who, resp),
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let env = cgi::event_env(
        "invoke",
        Vec::new(),
        input.len(),
        content_type,
        parts.uri.query().unwrap_or(""),
        &function.spec.env,
    );
    let inv = function.invocation(env, input, state.config.max_output_bytes);
    let result = function.module.invoke(inv).await;
    drop(permit);
    (who, respond(&function, result))
}
