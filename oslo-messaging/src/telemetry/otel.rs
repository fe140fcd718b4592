//! The OpenTelemetry side of [`Telemetry`](super::Telemetry): one exporting pipeline per
//! distinct `[oslo_messaging_tracing]` setting, shared by the transports that have it (Python
//! has one per process; a Rust process may hold transports configured apart).
//!
//! Spans leave the calling task at once: the span processor puts them on a bounded queue that
//! a thread of its own (`oslo-otel-export`, with a one-thread tokio runtime for the HTTP or
//! gRPC client) batches and exports, as the SDK's batch processor does with Python's
//! defaults (512 spans a batch, at most 5 s apart, 2048 queued). A full queue or a failed
//! export drops spans and counts them; nothing waits on the collector but
//! [`Pipeline::flush`].

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context as Cx, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter as _};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::NoteInfo;
use crate::config::TracingOptions;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::target::Target;

/// Spans queued for export at most (the SDK's and Python's default).
const QUEUE: usize = 2048;
/// Spans exported at once at most.
const BATCH: usize = 512;
/// The longest a span waits in a partial batch.
const DELAY: Duration = Duration::from_secs(5);
/// The longest one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `traceparent` read (Python's extractor ignores longer ones).
const MAX_TRACEPARENT: usize = 512;
/// The longest `tracestate` read (W3C: 512 characters are enough for 32 members).
const MAX_TRACESTATE: usize = 512;
/// The longest `baggage` read (W3C's limit).
const MAX_BAGGAGE: usize = 8192;

static DROPPED: AtomicU64 = AtomicU64::new(0);

pub(super) fn spans_dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

fn drop_spans(n: usize) {
    DROPPED.fetch_add(n as u64, Ordering::Relaxed);
}

/// Logs `message` the first time `flag` is raised, at debug level after that.
fn warn_once(flag: &AtomicBool, message: fmt::Arguments<'_>) {
    if flag.swap(true, Ordering::Relaxed) {
        tracing::debug!("{message}");
    } else {
        tracing::warn!("{message} (logged once)");
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    endpoint: String,
    protocol: String,
    service: String,
    insecure: bool,
}

impl Key {
    fn of(opts: &TracingOptions) -> Self {
        Self {
            endpoint: opts.otel_exporter_otlp_endpoint.clone(),
            protocol: opts.otlp_protocol.clone(),
            service: opts.tracing_service_name.clone(),
            insecure: opts.insecure,
        }
    }
}

/// A tracer and the thread that exports what it records.
pub(crate) struct Pipeline {
    key: Key,
    tracer: SdkTracer,
    /// Kept so the tracer's spans keep reaching the processor.
    _provider: SdkTracerProvider,
    flushes: mpsc::UnboundedSender<oneshot::Sender<()>>,
    propagator: TextMapCompositePropagator,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("endpoint", &shown(&self.key.endpoint))
            .field("protocol", &self.key.protocol)
            .field("service", &self.key.service)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// The pipeline for `opts`, started on first use.
    pub(super) fn for_options(opts: &TracingOptions) -> Result<Arc<Self>> {
        static ALL: OnceLock<Mutex<HashMap<Key, Arc<Pipeline>>>> = OnceLock::new();
        super::shared(&ALL, Key::of(opts), |key| Self::start(key.clone()))
    }

    fn start(key: Key) -> Result<Self> {
        let resource = Resource::builder()
            .with_service_name(key.service.clone())
            .build();
        let queue = Arc::new(Queue::default());
        let (flush_tx, flush_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_key = key.clone();
        let thread_resource = resource.clone();
        let thread_queue = queue.clone();
        std::thread::Builder::new()
            .name("oslo-otel-export".to_owned())
            .spawn(move || {
                export_thread(
                    &thread_key,
                    &thread_resource,
                    &thread_queue,
                    flush_rx,
                    &ready_tx,
                );
            })
            .map_err(|e| Error::config(format!("cannot start the span exporter thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(Error::config(format!(
                    "[oslo_messaging_tracing] cannot export to {:?} over {}: {e}",
                    shown(&key.endpoint),
                    key.protocol
                )));
            }
            Err(_) => return Err(Error::config("the span exporter thread ended at start")),
        }
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_span_processor(Enqueue(queue))
            .build();
        let tracer = provider.tracer("oslo.messaging");
        tracing::info!(
            endpoint = shown(&key.endpoint),
            protocol = key.protocol,
            service = key.service,
            "exporting OpenTelemetry spans"
        );
        Ok(Self {
            key,
            tracer,
            _provider: provider,
            flushes: flush_tx,
            propagator: TextMapCompositePropagator::new(vec![
                Box::new(TraceContextPropagator::new()),
                Box::new(BaggagePropagator::new()),
            ]),
        })
    }

    /// Waits, at most `timeout`, until the spans ended so far are exported (or dropped).
    pub(super) async fn flush(&self, timeout: Duration) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.flushes.send(done_tx).is_ok() {
            let _ = tokio::time::timeout(timeout, done_rx).await;
        }
    }

    pub(super) fn send(&self, target: &Target, method: &str, kind: &str, ctx: &mut Context) -> Cx {
        let topic = target.topic().unwrap_or_default();
        let mut attrs = vec![
            KeyValue::new("messaging.system", "rabbitmq"),
            KeyValue::new("messaging.operation", kind.to_owned()),
            KeyValue::new("messaging.destination.name", topic.to_owned()),
            KeyValue::new("rpc.method", method.to_owned()),
        ];
        if let Some(ns) = target.namespace().filter(|ns| !ns.is_empty()) {
            attrs.push(KeyValue::new("rpc.service", ns.to_owned()));
        }
        push_request_id(&mut attrs, ctx);
        let cx = self.open(
            format!("{topic}.{method}"),
            SpanKind::Producer,
            attrs,
            Cx::current(),
        );
        self.inject(&cx, ctx);
        cx
    }

    pub(super) fn receive(&self, method: &str, msg_id: Option<&str>, ctx: &Context) -> Cx {
        // As Python's incoming message: a cast has no `_msg_id`, so it gets a made-up one.
        let msg_id = msg_id.map_or_else(
            || uuid::Uuid::new_v4().hyphenated().to_string(),
            str::to_owned,
        );
        let mut attrs = vec![
            KeyValue::new("messaging.system", "rabbitmq"),
            KeyValue::new("messaging.operation", "receive"),
            KeyValue::new("rpc.method", method.to_owned()),
            KeyValue::new("messaging.message.id", msg_id),
        ];
        push_request_id(&mut attrs, ctx);
        let parent = self.extract(ctx);
        self.open(
            format!("{method} receive"),
            SpanKind::Consumer,
            attrs,
            parent,
        )
    }

    pub(super) fn publish(&self, note: &NoteInfo<'_>, ctx: &mut Context) -> Cx {
        let mut attrs = note_attributes(note, "publish");
        push_request_id(&mut attrs, ctx);
        let name = format!("{} publish", note.event_type.unwrap_or("unknown"));
        let cx = self.open(name, SpanKind::Producer, attrs, Cx::current());
        self.inject(&cx, ctx);
        cx
    }

    pub(super) fn notification(&self, note: &NoteInfo<'_>, ctx: &Context) -> Cx {
        let mut attrs = note_attributes(note, "receive");
        push_request_id(&mut attrs, ctx);
        let parent = self.extract(ctx);
        let name = format!("{} receive", note.event_type.unwrap_or("unknown"));
        self.open(name, SpanKind::Consumer, attrs, parent)
    }

    fn open(&self, name: String, kind: SpanKind, attrs: Vec<KeyValue>, parent: Cx) -> Cx {
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &parent);
        parent.with_span(span)
    }

    /// Writes the W3C trace context of `cx` into `ctx`: `traceparent` always, `tracestate`
    /// and `baggage` when not empty, as Python's propagators do.
    fn inject(&self, cx: &Cx, ctx: &mut Context) {
        self.propagator
            .inject_context(cx, &mut ContextInjector(ctx));
    }

    /// The remote parent that `ctx` names, or none (a new trace) when it names none or a
    /// malformed one.
    fn extract(&self, ctx: &Context) -> Cx {
        static WARNED: [AtomicBool; 3] = [const { AtomicBool::new(false) }; 3];
        let mut headers = Headers::default();
        for (i, (key, limit)) in [
            ("traceparent", MAX_TRACEPARENT),
            ("tracestate", MAX_TRACESTATE),
            ("baggage", MAX_BAGGAGE),
        ]
        .into_iter()
        .enumerate()
        {
            match ctx.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s.len() <= limit => headers.0.push((key, s)),
                Some(other) => warn_once(
                    &WARNED[i],
                    format_args!(
                        "ignoring the {key} of a received message: not a string of at most \
                         {limit} characters ({} long)",
                        other.to_string().len()
                    ),
                ),
            }
        }
        if headers.0.is_empty() {
            return Cx::new();
        }
        let cx = self.propagator.extract_with_context(&Cx::new(), &headers);
        if headers.get("traceparent").is_some() && !cx.span().span_context().is_valid() {
            warn_once(
                &WARNED[0],
                format_args!(
                    "ignoring a malformed traceparent in a received message (a new trace starts)"
                ),
            );
        }
        cx
    }
}

/// The endpoint as it may be shown: a password in it masked.
fn shown(endpoint: &str) -> String {
    crate::url::mask_password_in_raw(endpoint)
}

fn push_request_id(attrs: &mut Vec<KeyValue>, ctx: &Context) {
    if let Some(id) = ctx.request_id().filter(|id| !id.is_empty()) {
        attrs.push(KeyValue::new("openstack.request_id", id.to_owned()));
    }
}

fn note_attributes(note: &NoteInfo<'_>, operation: &'static str) -> Vec<KeyValue> {
    let mut attrs = vec![
        KeyValue::new("messaging.system", "rabbitmq"),
        KeyValue::new("messaging.operation", operation),
        KeyValue::new("messaging.message.id", note.message_id.to_owned()),
        KeyValue::new("openstack.priority", note.priority.to_owned()),
    ];
    if let Some(event_type) = note.event_type {
        attrs.push(KeyValue::new("openstack.event_type", event_type.to_owned()));
    }
    if let Some(publisher) = note.publisher_id {
        attrs.push(KeyValue::new(
            "openstack.publisher_id",
            publisher.to_owned(),
        ));
    }
    if let Some(topic) = note.topic {
        attrs.push(KeyValue::new(
            "messaging.destination.name",
            topic.to_owned(),
        ));
    }
    attrs
}

pub(super) fn event(cx: &Cx, name: &'static str, msg_id: Option<&str>) {
    let attrs = msg_id
        .map(|id| vec![KeyValue::new("messaging.message.id", id.to_owned())])
        .unwrap_or_default();
    cx.span().add_event(name, attrs);
}

pub(super) fn fail(cx: &Cx, description: &str) {
    cx.span().set_status(Status::error(description.to_owned()));
}

/// The trace headers a message carried, as a propagator reads them.
#[derive(Default)]
struct Headers<'a>(Vec<(&'static str, &'a str)>);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

struct ContextInjector<'a>(&'a mut Context);

impl Injector for ContextInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.insert(key, value);
        }
    }
}

/// Ended spans waiting for the export thread. The thread is woken only when the first span
/// of a batch arrives and when a batch is full, not for every span: a wake-up per span (a
/// channel) cost more than the span itself.
#[derive(Debug, Default)]
struct Queue {
    spans: Mutex<Vec<SpanData>>,
    wake: tokio::sync::Notify,
}

impl Queue {
    fn push(&self, span: SpanData) {
        static WARNED: AtomicBool = AtomicBool::new(false);
        let len = {
            let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
            if spans.len() >= QUEUE {
                drop(spans);
                drop_spans(1);
                warn_once(
                    &WARNED,
                    format_args!(
                        "the span export queue is full ({QUEUE} spans): dropping spans until \
                         the collector keeps up"
                    ),
                );
                return;
            }
            spans.push(span);
            spans.len()
        };
        if len == 1 || len == BATCH {
            self.wake.notify_one();
        }
    }

    fn take(&self) -> Vec<SpanData> {
        std::mem::take(&mut *self.spans.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn len(&self) -> usize {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The span processor: queues ended, sampled spans without waiting.
#[derive(Debug)]
struct Enqueue(Arc<Queue>);

impl opentelemetry_sdk::trace::SpanProcessor for Enqueue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Cx) {}

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() {
            self.0.push(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

fn export_thread(
    key: &Key,
    resource: &Resource,
    queue: &Queue,
    mut flushes: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    ready: &std::sync::mpsc::Sender<std::result::Result<(), String>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    runtime.block_on(async move {
        let mut exporter = match build_exporter(key) {
            Ok(exporter) => exporter,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        exporter.set_resource(resource);
        let _ = ready.send(Ok(()));
        let mut out = Outbox {
            exporter,
            failing: false,
        };
        loop {
            // Asleep until a batch starts (or a flush is asked for).
            let flush = tokio::select! {
                () = queue.wake.notified() => None,
                done = flushes.recv() => match done {
                    Some(done) => Some(done),
                    None => break,
                },
            };
            // Then up to DELAY for the batch to fill.
            let flush = match flush {
                Some(done) => Some(done),
                None if queue.len() < BATCH => tokio::select! {
                    () = tokio::time::sleep(DELAY) => None,
                    () = queue.wake.notified() => None,
                    done = flushes.recv() => done,
                },
                None => None,
            };
            out.export(queue.take()).await;
            if let Some(done) = flush {
                let _ = done.send(());
            }
        }
        out.export(queue.take()).await;
    });
}

struct Outbox {
    exporter: opentelemetry_otlp::SpanExporter,
    failing: bool,
}

impl Outbox {
    /// Exports `spans`, `BATCH` at a time; what fails is dropped and counted.
    async fn export(&mut self, mut spans: Vec<SpanData>) {
        while !spans.is_empty() {
            let rest = spans.split_off(spans.len().min(BATCH));
            self.export_batch(std::mem::replace(&mut spans, rest)).await;
        }
    }

    async fn export_batch(&mut self, batch: Vec<SpanData>) {
        let n = batch.len();
        let error = match tokio::time::timeout(EXPORT_TIMEOUT, self.exporter.export(batch)).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer in {EXPORT_TIMEOUT:?}")),
        };
        match error {
            None if self.failing => {
                self.failing = false;
                tracing::info!("exporting spans again");
            }
            None => {}
            Some(e) => {
                drop_spans(n);
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(
                        error = e,
                        "could not export {n} spans; dropping spans until the collector takes them"
                    );
                }
            }
        }
    }
}

fn build_exporter(key: &Key) -> std::result::Result<opentelemetry_otlp::SpanExporter, String> {
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
    let endpoint = key.endpoint.trim();
    if key.protocol == "grpc" {
        let (url, tls) = grpc_endpoint(endpoint, key.insecure);
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT);
        if tls {
            builder = builder.with_tls_config(
                opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new()
                    .with_native_roots(),
            );
        }
        return builder.build().map_err(|e| e.to_string());
    }
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Err("the endpoint must be an http:// or https:// URL".to_owned());
    };
    if rest.starts_with('/') {
        return Err("the endpoint has no host".to_owned());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let connector = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider.clone())
    {
        Ok(builder) => builder,
        // No CA certificates on this machine: plain http still works.
        Err(e) if url.starts_with("http://") => {
            tracing::debug!(error = %e, "no native CA certificates; https endpoints would fail");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
        Err(e) => return Err(format!("cannot load CA certificates: {e}")),
    }
    .https_or_http()
    .enable_http1()
    .build();
    let client = opentelemetry_http::hyper::HyperClient::new(connector, EXPORT_TIMEOUT, None);
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())
}

/// The gRPC URL and whether it uses TLS, as Python's gRPC exporter decides: `https://`
/// always does; otherwise TLS unless `insecure` (so `http://` with `insecure = false`, the
/// default, still asks for TLS).
fn grpc_endpoint(endpoint: &str, insecure: bool) -> (String, bool) {
    let (hostport, tls) = if let Some(rest) = endpoint.strip_prefix("https://") {
        (rest, true)
    } else {
        (
            endpoint.strip_prefix("http://").unwrap_or(endpoint),
            !insecure,
        )
    };
    let hostport = hostport.trim_end_matches('/');
    let scheme = if tls { "https" } else { "http" };
    (format!("{scheme}://{hostport}"), tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_uses_tls_as_python_does() {
        assert_eq!(
            grpc_endpoint("https://c:4317", true),
            ("https://c:4317".to_owned(), true)
        );
        assert_eq!(
            grpc_endpoint("http://c:4317", false),
            ("https://c:4317".to_owned(), true)
        );
        assert_eq!(
            grpc_endpoint("http://c:4317/", true),
            ("http://c:4317".to_owned(), false)
        );
        assert_eq!(
            grpc_endpoint("c:4317", true),
            ("http://c:4317".to_owned(), false)
        );
    }

    fn pipeline() -> Arc<Pipeline> {
        let opts = TracingOptions {
            tracing_enabled: true,
            // Nothing listens there: spans are dropped, which these tests do not look at.
            otel_exporter_otlp_endpoint: "http://127.0.0.1:9".to_owned(),
            ..TracingOptions::default()
        };
        Pipeline::for_options(&opts).unwrap()
    }

    #[tokio::test]
    async fn a_call_carries_its_span_and_a_server_continues_it() {
        let p = pipeline();
        let mut ctx = Context::new().with("request_id", "req-1");
        let send = p.send(&Target::new("compute"), "resize", "call", &mut ctx);
        let tp = ctx.get_str("traceparent").unwrap().to_owned();
        let sent = send.span().span_context().clone();
        assert_eq!(
            tp,
            format!("00-{}-{}-01", sent.trace_id(), sent.span_id()),
            "as Python writes it"
        );
        assert!(ctx.get("tracestate").is_none(), "empty: not written");
        assert!(ctx.get("baggage").is_none(), "none: not written");
        let recv = p.receive("resize", Some("m1"), &ctx);
        let got = recv.span().span_context().clone();
        assert_eq!(got.trace_id(), sent.trace_id());
        assert_ne!(got.span_id(), sent.span_id());
        // A call the handler makes is a child of the server span.
        let mut nested = Context::new();
        let child = {
            let _guard = recv.attach();
            p.send(&Target::new("network"), "allocate", "call", &mut nested)
        };
        assert_eq!(child.span().span_context().trace_id(), sent.trace_id());
        assert!(
            nested
                .get_str("traceparent")
                .unwrap()
                .contains(&child.span().span_context().span_id().to_string())
        );
    }

    #[tokio::test]
    async fn bad_trace_context_starts_a_new_trace() {
        let p = pipeline();
        let long = format!("00-{}-{}-01", "a".repeat(32), "b".repeat(600));
        for bad in [
            Value::from("garbage"),
            Value::from("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            Value::from("00-00000000000000000000000000000000-b7ad6b7169203331-01"),
            Value::from(long),
            Value::from(42),
        ] {
            let ctx = Context::new().with("traceparent", bad.clone());
            let cx = p.receive("m", None, &ctx);
            let sc = cx.span().span_context().clone();
            assert!(sc.is_valid(), "{bad}: a new root span");
            assert_ne!(
                sc.trace_id().to_string(),
                "0af7651916cd43dd8448eb211c80319c",
                "{bad}"
            );
        }
        let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let ctx = Context::new()
            .with("traceparent", good)
            .with("tracestate", "x".repeat(MAX_TRACESTATE + 1))
            .with("baggage", "k=".to_owned() + &"v".repeat(MAX_BAGGAGE));
        let cx = p.receive("m", None, &ctx);
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c",
            "oversized tracestate and baggage are dropped, the parent kept"
        );
        assert!(cx.span().span_context().trace_state().header().is_empty());
    }
}
