//! OpenTelemetry traces over OTLP/HTTP (protobuf), when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: request -> route -> instantiate -> guest,
//! and schedule fire -> attempt -> instantiate -> guest. An incoming `traceparent` is
//! continued. The exporter batches on its own thread (`OTEL_BSP_*` tune it); without the
//! variable there is no tracer and tracing costs nothing.
//!
//! Spans whose times are known only afterwards (an instance's set-up and its run) are made
//! with explicit start and end times, so the request path makes no span it does not export.

use std::time::SystemTime;

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

/// The tracer, when traces are exported.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// A span in progress: ended by [`Tracing::end`].
pub struct Active {
    pub cx: Context,
}

impl Tracing {
    /// Whether the environment names an OTLP endpoint.
    pub fn configured() -> bool {
        let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
        set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    }

    /// A tracer exporting to the OTLP endpoint the environment names (the exporter reads
    /// the standard `OTEL_EXPORTER_OTLP_*` variables).
    pub fn otlp() -> anyhow::Result<Tracing> {
        use opentelemetry_otlp::{Protocol, WithExportConfig};
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build()
            .map_err(|e| {
                anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the OTLP exporter: {e}")
            })?;
        let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "dispatcher".into());
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("dispatcher");
        Ok(Tracing { provider, tracer })
    }

    /// Starts a span: a child of `parent` if given, else of the `traceparent` in `headers`
    /// if there is a valid one, else a new trace.
    pub fn start(
        &self,
        name: &'static str,
        kind: SpanKind,
        parent: Option<&Context>,
        headers: Option<&HeaderMap>,
        attributes: Vec<KeyValue>,
    ) -> Active {
        let parent_cx = match (parent, headers) {
            (Some(p), _) => p.clone(),
            (None, Some(h)) => TraceContextPropagator::new()
                .extract_with_context(&Context::new(), &opentelemetry_http::HeaderExtractor(h)),
            (None, None) => Context::new(),
        };
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent_cx);
        Active {
            cx: parent_cx.with_span(span),
        }
    }

    /// A finished child span of `parent` with known times.
    pub fn child(
        &self,
        parent: &Context,
        name: &'static str,
        start: SystemTime,
        end: SystemTime,
        attributes: Vec<KeyValue>,
    ) {
        let mut span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, parent);
        span.end_with_timestamp(end);
    }

    /// Ends a span, with its attributes known at the end and an error if it failed.
    pub fn end(&self, active: Active, attributes: Vec<KeyValue>, error: Option<String>) {
        let span = active.cx.span();
        span.set_attributes(attributes);
        if let Some(e) = error {
            span.set_status(Status::error(e));
        }
        span.end();
    }

    /// Exports what is buffered and stops the exporter (at shutdown).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("flushing the traces failed: {e}");
        }
    }
}

/// The W3C `traceparent` of a span, for the guest (`HTTP_TRACEPARENT`), so the calls it makes
/// join the trace under the platform's span.
pub fn traceparent(cx: &Context) -> Option<String> {
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}
