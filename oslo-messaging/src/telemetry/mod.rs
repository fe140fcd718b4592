//! Observability: OpenTelemetry traces of calls, casts and notifications, configured by
//! `[oslo_messaging_tracing]` as in Python oslo.messaging 18.3.1.
//!
//! With `tracing_enabled = true` (and a build with the `otel` feature):
//!
//! * each call and cast opens a PRODUCER span `"{topic}.{method}"` with the attributes Python
//!   sets (`messaging.system`, `messaging.operation`, `messaging.destination.name`,
//!   `rpc.method`, `rpc.service`, `openstack.request_id`) and writes the W3C trace context
//!   into the request's context, so it travels as `_context_traceparent` (and
//!   `_context_tracestate`, `_context_baggage` when set), as Python's does;
//! * an RPC server opens a CONSUMER span `"{method} receive"`, a child of the context the
//!   request carried, around the handler and the reply; calls and casts the handler makes
//!   are its children, so a trace goes on through every hop, Python or Rust;
//! * beyond Python: notifications get a PRODUCER span `"{event_type} publish"` and a
//!   CONSUMER span `"{event_type} receive"` in the listener; the wait for a reply (`request
//!   sent`, `reply received`) and call-monitor heartbeats (`heartbeat sent`, `heartbeat
//!   received`) are span events; a handler that failed, or a reply that could not be sent,
//!   marks its span as an error.
//!
//! Spans go over OTLP (`http/protobuf` to `<endpoint>/v1/traces`, or `grpc`) from a thread of
//! their own, through a bounded queue: an unreachable collector never slows a call; what does
//! not fit is dropped and counted ([`spans_dropped`]). [`Transport::cleanup`] waits (a few
//! seconds at most) for the spans still queued to be exported.
//!
//! A malformed or oversized `traceparent`, `tracestate` or `baggage` in a request is ignored:
//! the server span starts a new trace, and the first such value is logged.
//!
//! When tracing is off the keys pass through untouched, as context data.
//!
//! [`Transport::cleanup`]: crate::Transport::cleanup
//!
//! # Examples
//!
//! ```
//! use oslo_messaging::{Config, Transport};
//!
//! let conf = Config::from_ini_str(
//!     "[oslo_messaging_tracing]\n\
//!      tracing_enabled = false\n\
//!      tracing_service_name = nova-compute\n",
//! )?;
//! assert_eq!(conf.tracing.otel_exporter_otlp_endpoint, "http://localhost:4318");
//! let transport = Transport::memory_with_config(&conf);
//! assert_eq!(oslo_messaging::telemetry::spans_dropped(), 0);
//! # Ok::<(), oslo_messaging::Error>(())
//! ```

use std::future::Future;
use std::time::Duration;

use crate::config::Config;
use crate::context::Context;
use crate::error::Result;
use crate::target::Target;

mod oslo_metrics;
#[cfg(feature = "otel")]
mod otel;

pub(crate) use oslo_metrics::Measure;

/// Records the library's counters and histograms through the `metrics` facade (feature
/// `metrics`) from now on: call it once a recorder (a Prometheus exporter, say) is installed.
/// Off by default, so a process without a recorder does none of the work. See the table of
/// names below.
///
/// | name | type | labels |
/// |---|---|---|
/// | `oslo_messaging_rpc_client_requests_total` | counter | `kind` (call, cast, fanout), `method`, `outcome` |
/// | `oslo_messaging_rpc_client_seconds` | histogram | `kind`, `method` |
/// | `oslo_messaging_rpc_client_in_flight` | gauge | |
/// | `oslo_messaging_rpc_server_requests_total` | counter | `method`, `outcome` |
/// | `oslo_messaging_rpc_server_handler_seconds` | histogram | `method` |
/// | `oslo_messaging_rpc_server_in_flight` | gauge | |
/// | `oslo_messaging_handler_pool_full_total` | counter | (a message waited for a free handler) |
/// | `oslo_messaging_duplicates_dropped_total` | counter | `what` (rpc, notification) |
/// | `oslo_messaging_notifications_handled_total` | counter | `priority`, `outcome` (handled, requeued) |
/// | `oslo_messaging_rabbit_reconnects_total` | counter | `what` (publisher, consumer) |
/// | `oslo_messaging_rabbit_blocked_seconds` | histogram | (each wait of a publish on `connection.blocked`) |
/// | `oslo_messaging_rabbit_confirm_seconds` | histogram | (publish to broker confirm) |
/// | `oslo_messaging_rabbit_reply_retries_total` | counter | (replies retried for a missing reply queue) |
///
/// A client's `outcome` is `ok` or the error's kind in snake case (`timeout`, `remote`, ...); a
/// server's is `ok`, `error` (the handler failed) or `no_such_method` (whose `method` label is
/// `(unknown)`: the name came from the wire). A call or cast whose caller stopped waiting is
/// `cancelled`. Without the `metrics` feature this does nothing.
///
/// # Examples
///
/// ```
/// // After installing a recorder, for example metrics-exporter-prometheus:
/// oslo_messaging::telemetry::record_metrics(true);
/// ```
pub fn record_metrics(on: bool) {
    crate::stats::set(on);
}

/// oslo.metrics datagrams this process dropped: the buffer was full, or the collector's socket
/// was missing or refused them (`[oslo_messaging_metrics]`).
pub fn metrics_dropped() -> u64 {
    oslo_metrics::dropped()
}

/// Spans this process dropped because the export queue was full or the collector refused
/// them (always 0 without the `otel` feature).
pub fn spans_dropped() -> u64 {
    #[cfg(feature = "otel")]
    {
        otel::spans_dropped()
    }
    #[cfg(not(feature = "otel"))]
    {
        0
    }
}

/// The value `registry` holds for `key`, made by `start` the first time: one exporter or
/// sender per distinct setting, shared by the transports that have it.
fn shared<K, V>(
    registry: &'static std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<K, std::sync::Arc<V>>>,
    >,
    key: K,
    start: impl FnOnce(&K) -> Result<V>,
) -> Result<std::sync::Arc<V>>
where
    K: std::hash::Hash + Eq,
{
    let mut all = registry
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(found) = all.get(&key) {
        return Ok(found.clone());
    }
    let value = std::sync::Arc::new(start(&key)?);
    all.insert(key, value.clone());
    Ok(value)
}

/// How long [`Transport::cleanup`](crate::Transport::cleanup) waits for queued spans.
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// What an RPC client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendKind {
    Call,
    Cast,
}

impl SendKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Call => "call",
            Self::Cast => "cast",
        }
    }
}

/// A transport's tracing and oslo.metrics: each off, or the pipeline its options chose.
#[derive(Debug, Clone, Default)]
pub(crate) struct Telemetry {
    #[cfg(feature = "otel")]
    pipeline: Option<std::sync::Arc<otel::Pipeline>>,
    metrics: Option<std::sync::Arc<oslo_metrics::Collector>>,
}

impl Telemetry {
    /// Tracing and metrics as `config` says.
    ///
    /// # Errors
    ///
    /// A configuration error when the exporter cannot be made (a bad endpoint).
    pub(crate) fn new(config: &Config) -> Result<Self> {
        let metrics = if config.metrics.metrics_enabled {
            Some(oslo_metrics::Collector::for_options(&config.metrics)?)
        } else {
            None
        };
        let opts = &config.tracing;
        if !opts.tracing_enabled {
            // Without `otel` there is no other field to fill.
            #[allow(clippy::needless_update)]
            return Ok(Self {
                metrics,
                ..Self::default()
            });
        }
        #[cfg(feature = "otel")]
        {
            Ok(Self {
                pipeline: Some(otel::Pipeline::for_options(opts)?),
                metrics,
            })
        }
        #[cfg(not(feature = "otel"))]
        {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "[oslo_messaging_tracing] tracing_enabled is set, but this build has no \
                     OpenTelemetry support (the `otel` feature): no spans are made"
                );
            });
            Ok(Self { metrics })
        }
    }

    /// Starts the oslo.metrics measurement of a call or cast (when metrics are on).
    pub(crate) fn measure(&self, target: &Target, method: &str, kind: SendKind) -> Option<Measure> {
        self.metrics
            .as_ref()
            .map(|m| m.start(target, method, kind.as_str()))
    }

    /// Opens the PRODUCER span of a call or cast of `method` to `target` and writes its trace
    /// context into `ctx` (the context as sent).
    pub(crate) fn send(
        &self,
        target: &Target,
        method: &str,
        kind: SendKind,
        ctx: &mut Context,
    ) -> Span {
        #[cfg(feature = "otel")]
        if let Some(p) = &self.pipeline {
            return Span(Some(p.send(target, method, kind.as_str(), ctx)));
        }
        let _ = (target, method, kind, ctx);
        Span::default()
    }

    /// Opens the CONSUMER span of a request for `method`, a child of the trace context `ctx`
    /// carries.
    pub(crate) fn receive(&self, method: &str, msg_id: Option<&str>, ctx: &Context) -> Span {
        #[cfg(feature = "otel")]
        if let Some(p) = &self.pipeline {
            return Span(Some(p.receive(method, msg_id, ctx)));
        }
        let _ = (method, msg_id, ctx);
        Span::default()
    }

    /// Opens the PRODUCER span of a notification and writes its trace context into `ctx`.
    pub(crate) fn publish(&self, note: &NoteInfo<'_>, ctx: &mut Context) -> Span {
        #[cfg(feature = "otel")]
        if let Some(p) = &self.pipeline {
            return Span(Some(p.publish(note, ctx)));
        }
        let _ = (note, ctx);
        Span::default()
    }

    /// Opens the CONSUMER span of a received notification.
    pub(crate) fn notification(&self, note: &NoteInfo<'_>, ctx: &Context) -> Span {
        #[cfg(feature = "otel")]
        if let Some(p) = &self.pipeline {
            return Span(Some(p.notification(note, ctx)));
        }
        let _ = (note, ctx);
        Span::default()
    }

    /// Whether spans are made.
    pub(crate) fn is_on(&self) -> bool {
        #[cfg(feature = "otel")]
        {
            self.pipeline.is_some()
        }
        #[cfg(not(feature = "otel"))]
        {
            false
        }
    }

    /// Waits, at most `timeout`, until the spans queued so far are exported.
    pub(crate) async fn flush(&self, timeout: Duration) {
        #[cfg(feature = "otel")]
        if let Some(p) = &self.pipeline {
            p.flush(timeout).await;
        }
        let _ = timeout;
    }
}

/// What a notification span says about its notification.
#[cfg_attr(not(feature = "otel"), allow(dead_code))]
#[derive(Debug)]
pub(crate) struct NoteInfo<'a> {
    pub(crate) event_type: Option<&'a str>,
    pub(crate) publisher_id: Option<&'a str>,
    pub(crate) priority: &'a str,
    pub(crate) message_id: &'a str,
    /// The topics it is published to (unknown to a listener).
    pub(crate) topic: Option<&'a str>,
}

/// An open span (or nothing, when tracing is off). It ends when [`end`](Self::end) is called
/// or the last clone is dropped.
#[derive(Debug, Clone, Default)]
pub(crate) struct Span(#[cfg(feature = "otel")] Option<opentelemetry::Context>);

/// A future that runs with a span as the current one (or the future itself).
#[cfg(feature = "otel")]
pub(crate) type Scoped<F> = opentelemetry::context::WithContext<F>;
/// A future that runs with a span as the current one (or the future itself).
#[cfg(not(feature = "otel"))]
pub(crate) type Scoped<F> = F;

impl Span {
    /// Adds an event, with the message id when there is one.
    pub(crate) fn event(&self, name: &'static str, msg_id: Option<&str>) {
        #[cfg(feature = "otel")]
        if let Some(cx) = &self.0 {
            otel::event(cx, name, msg_id);
        }
        let _ = (name, msg_id);
    }

    /// Marks the span as failed, with `description`.
    pub(crate) fn fail(&self, description: &str) {
        #[cfg(feature = "otel")]
        if let Some(cx) = &self.0 {
            otel::fail(cx, description);
        }
        let _ = description;
    }

    /// Ends the span now (events after this are ignored).
    pub(crate) fn end(&self) {
        #[cfg(feature = "otel")]
        if let Some(cx) = &self.0 {
            use opentelemetry::trace::TraceContextExt;
            cx.span().end();
        }
    }

    /// The trace id, as 32 hex digits, for log lines.
    pub(crate) fn trace_id(&self) -> Option<String> {
        #[cfg(feature = "otel")]
        if let Some(cx) = &self.0 {
            use opentelemetry::trace::TraceContextExt;
            return Some(cx.span().span_context().trace_id().to_string());
        }
        None
    }

    /// `fut`, run with this span as the current one, so that calls and casts it makes are
    /// children of it.
    pub(crate) fn scope<F: Future>(&self, fut: F) -> Scoped<F> {
        #[cfg(feature = "otel")]
        {
            use opentelemetry::context::FutureExt;
            match &self.0 {
                Some(cx) => fut.with_context(cx.clone()),
                None => fut.with_current_context(),
            }
        }
        #[cfg(not(feature = "otel"))]
        {
            fut
        }
    }
}
