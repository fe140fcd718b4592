//! An OTLP trace receiver for tests: a collector stand-in that takes `POST /v1/traces`
//! (protobuf, as Python's and our exporters send it) or, started with
//! [`OtlpReceiver::start_grpc`], the gRPC `TraceService/Export`, and keeps the spans, so a test
//! can check trace ids and parents across processes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// One span as the receiver got it; ids are lowercase hex, as in `traceparent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSpan {
    /// `service.name` of the exporting process.
    pub service: String,
    pub name: String,
    /// `producer`, `consumer`, `server`, `client`, `internal` or `unspecified`.
    pub kind: &'static str,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// Attribute values as text.
    pub attributes: BTreeMap<String, String>,
    /// Event names, in order.
    pub events: Vec<String>,
    /// The status was set to error.
    pub error: bool,
}

/// The receiver: runs until dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    arrived: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OtlpReceiver {
    /// Listens on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        Self::listen(true).await
    }

    /// Listens on a free port of 127.0.0.1 and answers every export with `200 OK` without
    /// decoding or keeping it: what a local collector costs the machine, for benchmarks.
    pub async fn start_sink() -> Self {
        Self::listen(false).await
    }

    async fn listen(keep: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let kept = keep.then(|| (spans.clone(), arrived.clone()));
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, kept.clone()));
            }
        });
        Self {
            addr,
            spans,
            arrived,
            task,
        }
    }

    /// Listens for OTLP over gRPC (plain text) on a free port of 127.0.0.1.
    pub async fn start_grpc() -> Self {
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let service = TraceServiceServer::new(GrpcTraces {
            spans: spans.clone(),
            arrived: arrived.clone(),
        });
        let task = tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        Self {
            addr,
            spans,
            arrived,
            task,
        }
    }

    /// The endpoint to configure (`otel_exporter_otlp_endpoint`): `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits up to `within` until `done(spans)`; returns the spans then, or panics with them.
    pub async fn wait_until(
        &self,
        within: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let arrived = self.arrived.notified();
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("the spans expected did not arrive in {within:?}; got {spans:#?}");
            }
        }
    }
}

/// The gRPC side of the receiver.
struct GrpcTraces {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    arrived: Arc<Notify>,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for GrpcTraces
{
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        self.spans
            .lock()
            .unwrap()
            .extend(convert(request.into_inner()));
        self.arrived.notify_waiters();
        Ok(tonic::Response::new(Default::default()))
    }
}

/// One connection: HTTP/1.1 requests, kept alive.
/// Where received spans go (`None`: nowhere, for a sink).
type Keep = Option<(Arc<Mutex<Vec<ReceivedSpan>>>, Arc<Notify>)>;

async fn serve(mut conn: TcpStream, keep: Keep) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 65536];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..head_end + length).skip(head_end).collect();
        let status = if !head.starts_with("post /v1/traces ") {
            "404 Not Found"
        } else if let Some((spans, arrived)) = &keep {
            match ExportTraceServiceRequest::decode(&body[..]) {
                Ok(request) => {
                    spans.lock().unwrap().extend(convert(request));
                    arrived.notify_waiters();
                    "200 OK"
                }
                Err(_) => "400 Bad Request",
            }
        } else {
            "200 OK"
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
        );
        if conn.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn convert(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let resource = rs
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for ss in rs.scope_spans {
            for span in &ss.spans {
                out.push(ReceivedSpan {
                    service: service.clone(),
                    kind: match span.kind {
                        1 => "internal",
                        2 => "server",
                        3 => "client",
                        4 => "producer",
                        5 => "consumer",
                        _ => "unspecified",
                    },
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                    events: span.events.iter().map(|e| e.name.clone()).collect(),
                    error: span.status.as_ref().is_some_and(|s| s.code == 2),
                    name: span.name.clone(),
                });
            }
        }
    }
    out
}
