//! The admin API's views of what functions did on this replica: recent log lines (followed
//! live if asked), recent invocations, counts and latency, and the schedules with their runs.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, request::Parts, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Either, StreamBody};
use hyper::body::Frame;
use tokio::sync::broadcast::error::RecvError;

use super::admin::err;
use super::response::{full, json, Body};
use super::state::stopped;
use super::state::AppState;
use crate::api::{LogLine, ScheduleView};
use crate::telemetry::FunctionTelemetry;

/// Most recent invocations one call returns.
const MAX_INVOCATIONS: usize = 500;
/// A followed log sends a blank line this often when quiet, so a client that left is noticed.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// How many attempts of each schedule the schedules view shows.
const RUNS_PER_SCHEDULE: u64 = 20;

/// The value of `key` in the request's query, percent-decoded.
fn query(parts: &Parts, key: &str) -> Option<String> {
    parts.uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| crate::manifest::percent_decode(v))
    })
}

// The error is the answer itself, made once per call that names no function.
#[allow(clippy::result_large_err)]
fn observed(state: &AppState, name: &str) -> Result<Arc<FunctionTelemetry>, Response<Body>> {
    state.telemetry.find(name).ok_or_else(|| {
        err(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no function named `{name}` has been deployed on this replica"),
        )
    })
}

fn ndjson_line(line: &LogLine) -> Vec<u8> {
    let mut out = serde_json::to_vec(line).unwrap_or_default();
    out.push(b'\n');
    out
}

/// `GET .../logs`: the kept lines as NDJSON, oldest first; `?request=ID` keeps one
/// invocation's; `?follow=1` keeps the response open and sends new lines as they come, until
/// the client leaves or the replica shuts down.
pub fn logs(state: &AppState, name: &str, parts: &Parts) -> Response<Body> {
    let own = match observed(state, name) {
        Ok(o) => o,
        Err(resp) => return resp,
    };
    let request = query(parts, "request").filter(|r| !r.is_empty());
    let follow = matches!(query(parts, "follow").as_deref(), Some("1" | "true" | ""));
    // Subscribed before the kept lines are read, so none falls between the two.
    let feed = follow.then(|| own.recent.follow());
    let mut first = Vec::new();
    for line in own.recent.lines(request.as_deref()) {
        first.extend(ndjson_line(&line));
    }
    let body = match feed {
        None => full(first),
        Some(feed) => {
            let shutdown = state.shutdown.clone();
            let stream = futures_util::stream::unfold(
                (Some(first), feed, shutdown, request),
                |(first, mut feed, mut shutdown, request)| async move {
                    if let Some(first) = first {
                        let frame = Frame::data(Bytes::from(first));
                        return Some((Ok(frame), (None, feed, shutdown, request)));
                    }
                    let chunk = loop {
                        tokio::select! {
                            got = feed.recv() => match got {
                                Ok(line) if request.as_deref().is_none_or(|r| line.request_id.as_deref() == Some(r)) => {
                                    break ndjson_line(&line);
                                }
                                Ok(_) => {}
                                Err(RecvError::Lagged(n)) => {
                                    let gap = LogLine {
                                        at: crate::telemetry::now_text(),
                                        request_id: None,
                                        source: crate::api::LogSource::Platform,
                                        level: "warn".into(),
                                        message: format!("{n} lines skipped: this reader fell behind"),
                                    };
                                    break ndjson_line(&gap);
                                }
                                Err(RecvError::Closed) => return None,
                            },
                            () = tokio::time::sleep(HEARTBEAT) => break b"\n".to_vec(),
                            () = stopped(&mut shutdown) => return None,
                        }
                    };
                    let frame = Frame::data(Bytes::from(chunk));
                    Some((Ok::<_, Infallible>(frame), (None, feed, shutdown, request)))
                },
            );
            Either::Right(StreamBody::new(stream).boxed())
        }
    };
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `GET .../invocations`: the recent invocations, newest first (`?limit=N`, default 100).
pub fn invocations(state: &AppState, name: &str, parts: &Parts) -> Response<Body> {
    let own = match observed(state, name) {
        Ok(o) => o,
        Err(resp) => return resp,
    };
    let limit = match query(parts, "limit") {
        None => 100,
        Some(v) => match v.parse::<usize>() {
            Ok(n) => n.min(MAX_INVOCATIONS),
            Err(_) => {
                return err(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!(
                        "`limit={v}` is not a number: expected a count up to {MAX_INVOCATIONS}"
                    ),
                )
            }
        },
    };
    let records: Vec<_> = own
        .recent
        .invocations(limit)
        .iter()
        .map(|k| k.record())
        .collect();
    json(StatusCode::OK, &records)
}

/// `GET .../stats`.
pub fn stats(state: &AppState, name: &str) -> Response<Body> {
    match observed(state, name) {
        Ok(own) => json(StatusCode::OK, &state.telemetry.stats(name, &own)),
        Err(resp) => resp,
    }
}

/// `GET /_dispatcher/schedules`: every deployed schedule, its next five fire times in its
/// time zone, and its recent attempts from the platform database.
pub async fn schedules(state: &AppState) -> Response<Body> {
    let registry = state.deployments.live().load();
    let now = chrono::Utc::now();
    let mut views = Vec::new();
    for (name, function) in &registry.functions {
        if function.spec.schedules.is_empty() {
            continue;
        }
        let runs = match state.deployments.runs(name, 200).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(function = %name, "reading the run history failed: {e:#}");
                return err(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    &format!("the run history could not be read: {e:#}"),
                );
            }
        };
        for s in &function.spec.schedules {
            views.push(ScheduleView {
                function: name.clone(),
                schedule: s.name.clone(),
                cron: s.expression.clone(),
                timezone: s.timezone.to_string(),
                next: s
                    .upcoming(now, 5)
                    .iter()
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false))
                    .collect(),
                runs: runs
                    .iter()
                    .filter(|r| r.schedule == s.name)
                    .take(RUNS_PER_SCHEDULE as usize)
                    .cloned()
                    .collect(),
            });
        }
    }
    views.sort_by(|a, b| (&a.function, &a.schedule).cmp(&(&b.function, &b.schedule)));
    json(StatusCode::OK, &views)
}
