//! The HTTP trigger: routes a request to its function, runs it in a fresh instance under the
//! function's limits, and turns the outcome into a response.

use std::sync::Arc;

use http::{header, request::Parts, HeaderValue, Method, Response, StatusCode};
use hyper::body::Incoming;

use super::body::{read_body, BodyError};
use super::response::{error_response, respond, Body};
use super::state::{AppState, RequestCtx};
use crate::function::{Event, Function, Peer, RequestInfo};
use crate::manifest::Lookup;
use crate::telemetry::{traceparent, Finished, Trigger};

/// Runs the function that serves the request's route; answers 404, 405 or 413 without one.
/// Returns the function's name for the log line.
pub async fn handle(
    state: &AppState,
    mut parts: Parts,
    body: Incoming,
    peer: &Peer,
    ctx: &RequestCtx,
) -> (Option<Arc<str>>, Response<Body>) {
    let routing = ctx.trace.as_ref().map(|_| std::time::SystemTime::now());
    // This request's view of the deployed set: a deploy that lands meanwhile does not
    // change the function it runs.
    let registry = state.deployments.live().load();
    let (function, pattern, matched) = match registry.routes.lookup(&parts.method, parts.uri.path())
    {
        Lookup::Found {
            target,
            pattern,
            matched,
        } => (target, pattern, matched),
        Lookup::MethodNotAllowed(allowed) => {
            let allow = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let mut resp = error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                None,
                &format!("{} is not allowed here; allowed: {allow}", parts.method),
            );
            if let Ok(v) = HeaderValue::from_str(&allow) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            state.telemetry.unrouted("method_not_allowed");
            return (None, resp);
        }
        Lookup::NotFound => {
            state.telemetry.unrouted("not_found");
            return (
                None,
                error_response(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    None,
                    &format!("no function serves {}", parts.uri.path()),
                ),
            );
        }
    };
    if let (Some(t), Some(active), Some(routing)) = (&state.telemetry.tracing, &ctx.trace, routing)
    {
        let attributes = vec![opentelemetry::KeyValue::new(
            "http.route",
            pattern.to_string(),
        )];
        t.child(
            &active.cx,
            "route",
            routing,
            std::time::SystemTime::now(),
            attributes,
        );
        // The guest's own calls join the trace under this request.
        if let Some(tp) = traceparent(&active.cx).and_then(|v| HeaderValue::from_str(&v).ok()) {
            parts.headers.insert("traceparent", tp);
        }
    }
    let name = Some(function.name.clone());
    let limits = state.config.body_limits(state.config.max_body_bytes);
    let body = match read_body(body, &parts.headers, limits).await {
        Ok(body) => body,
        Err(e) => {
            match &e {
                BodyError::TooLarge => state.telemetry.unrouted("body_too_large"),
                BodyError::TimedOut => state.telemetry.unrouted("body_timeout"),
                BodyError::Read(e) => {
                    tracing::debug!(function = %function.name, "reading the request body failed: {e}");
                }
            }
            return (name, e.response(limits, Some(&function.name)));
        }
    };

    let request = RequestInfo {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        body_len: body.len(),
        peer,
        matched: &matched,
    };
    let event = Event::Http { request, body };
    let response = run(state, function, event, Trigger::Http, ctx).await;
    (name, response)
}

/// Runs `event` in `function` and answers with the outcome as HTTP, counted, kept and
/// traced: the HTTP trigger's way, and the admin API's `invoke`.
pub(super) async fn run(
    state: &AppState,
    function: &Function,
    event: Event<'_>,
    trigger: Trigger,
    ctx: &RequestCtx,
) -> Response<Body> {
    let trace = ctx.trace.as_ref().map(|a| &a.cx);
    let mut report = Function::report();
    let result = function
        .run(
            event,
            state.run_config(),
            trigger,
            &ctx.id,
            trace,
            &mut report,
        )
        .await;
    let (response, outcome, detail) = respond(function, result);
    function.finished(Finished {
        trigger,
        request_id: &ctx.id,
        report: &report,
        outcome,
        status: response.status().as_u16(),
        detail,
        trace,
    });
    response
}
