//! OpenTelemetry tracing (`[oslo_messaging_tracing]`, feature `otel`): one trace through
//! Python 18.3.1 and Rust hops, every process exporting to one OTLP receiver run by the test,
//! and what goes beyond Python (notifications, heartbeats, failures), bad trace context and an
//! unreachable collector.

mod support;

use std::time::{Duration, Instant};

use oslo_messaging::notify::{
    Notification, NotificationEndpoint, NotificationListener, Notifier, NotifyDriver, Priority,
};
use oslo_messaging::rpc::{Endpoint, Request, RpcClient, RpcError, RpcServer};
use oslo_messaging::{Config, Context, Target, Transport};
use serde::Deserialize;
use serde_json::{Value, json};
use support::python::{Peer, PeerOpts, python_server};
use support::rabbit::Scope;
use testkit::broker::url as broker_url;
use testkit::otlp::{OtlpReceiver, ReceivedSpan};

/// The configuration of a Rust service that traces to `endpoint` as `service`.
fn traced(exchange: &str, endpoint: &str, service: &str) -> Config {
    Config::builder()
        .control_exchange(exchange)
        .option("oslo_messaging_rabbit", "rabbit_transient_queues_ttl", "60")
        .option("oslo_messaging_tracing", "tracing_enabled", "true")
        .option(
            "oslo_messaging_tracing",
            "otel_exporter_otlp_endpoint",
            endpoint,
        )
        .option("oslo_messaging_tracing", "tracing_service_name", service)
        .build()
        .unwrap()
}

#[derive(Deserialize)]
struct Relay {
    to_topic: String,
    to_method: String,
    #[serde(default)]
    to_args: Value,
}

/// An endpoint with `relay` (call `to_method` on `to_topic` with the caller's context, as a
/// service calls the next one) and `echo`.
fn hop(transport: &Transport) -> Endpoint {
    let t = transport.clone();
    Endpoint::builder()
        .method("relay", move |req: Request<Relay>| {
            let t = t.clone();
            async move {
                let (ctx, relay) = req.into_parts();
                let client = RpcClient::new(&t, Target::new(relay.to_topic));
                client
                    .call::<Value>(&ctx, &relay.to_method, &relay.to_args)
                    .await
                    .map_err(|e| RpcError::runtime_error(e.to_string()))
            }
        })
        .method("echo", |req: Request<Value>| async move {
            Ok::<_, RpcError>(req.into_args()["data"].clone())
        })
        .build()
        .unwrap()
}

fn python_tracing(endpoint: &str, service: &'static str) -> [(&'static str, String); 3] {
    [
        ("tracing_enabled", "true".to_owned()),
        ("otel_exporter_otlp_endpoint", endpoint.to_owned()),
        ("tracing_service_name", service.to_owned()),
    ]
}

fn pairs<'a>(options: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    options.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// `fut`, or a panic after 30 s: a test never hangs.
async fn within<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .expect("done within 30 s")
}

/// The span named `name` from `service`.
fn span<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> &'a ReceivedSpan {
    spans
        .iter()
        .find(|s| s.service == service && s.name == name)
        .unwrap_or_else(|| panic!("no span {name:?} from {service}: {spans:#?}"))
}

fn has(spans: &[ReceivedSpan], service: &str, name: &str) -> bool {
    spans.iter().any(|s| s.service == service && s.name == name)
}

/// `child` continues `parent`: same trace, parented to it.
fn assert_child(child: &ReceivedSpan, parent: &ReceivedSpan) {
    assert_eq!(child.trace_id, parent.trace_id, "{child:#?} {parent:#?}");
    assert_eq!(
        child.parent_span_id, parent.span_id,
        "{} is a child of {}",
        child.name, parent.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_call_traces_through_a_rust_hop_to_a_python_server() {
    testkit::require_python!();
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let scope = Scope::new("otel_prp");
    let (rs_topic, py_topic) = (scope.topic("otel_rs"), scope.topic("otel_py"));
    let url = broker_url();

    let server_tracing = python_tracing(&endpoint, "py-server");
    let server_tracing = pairs(&server_tracing);
    let server_opts = PeerOpts {
        tracing: &server_tracing,
        ..PeerOpts::new(&url, &scope.exchange)
    };
    let py_server = python_server(&py_topic, "s1", &server_opts).await;

    let t = Transport::with_config(&url, &traced(&scope.exchange, &endpoint, "rust-hop")).unwrap();
    let server = RpcServer::builder(&t, Target::new(&rs_topic).with_server("r1"))
        .endpoint(hop(&t))
        .build()
        .unwrap();
    server.start().await.unwrap();

    let client_tracing = python_tracing(&endpoint, "py-client");
    let client_tracing = pairs(&client_tracing);
    let client_opts = PeerOpts {
        tracing: &client_tracing,
        ..PeerOpts::new(&url, &scope.exchange)
    };
    let mut client = Peer::spawn("client", &["--topic", &rs_topic], &client_opts);
    client
        .send(&json!({
            "op": "call",
            "method": "relay",
            "args": {"to_topic": py_topic, "to_method": "echo", "to_args": {"data": "through"}},
            "context": {"request_id": "req-otel-1"},
        }))
        .await;
    let answer = client.next(60).await;
    assert_eq!(answer["ok"], "through", "{answer}");
    // Python exports at exit (the SDK's atexit flush), Rust at cleanup.
    client.finish().await;
    py_server.finish().await;
    server.stop().await;
    server.wait().await;
    t.cleanup().await;

    let relay = format!("{rs_topic}.relay");
    let echo = format!("{py_topic}.echo");
    let spans = receiver
        .wait_until(Duration::from_secs(30), |s| {
            has(s, "py-client", &relay)
                && has(s, "rust-hop", "relay receive")
                && has(s, "rust-hop", &echo)
                && has(s, "py-server", "echo receive")
        })
        .await;
    let py_call = span(&spans, "py-client", &relay);
    let rs_receive = span(&spans, "rust-hop", "relay receive");
    let rs_call = span(&spans, "rust-hop", &echo);
    let py_receive = span(&spans, "py-server", "echo receive");
    println!(
        "trace {}: {} -> {} -> {} -> {}",
        py_call.trace_id, py_call.name, rs_receive.name, rs_call.name, py_receive.name
    );
    assert!(
        py_call.parent_span_id.is_empty(),
        "the Python client starts the trace"
    );
    assert_child(rs_receive, py_call);
    assert_child(rs_call, rs_receive);
    assert_child(py_receive, rs_call);

    // Python's attributes, on the spans we make.
    assert_eq!(rs_receive.kind, "consumer");
    assert_eq!(rs_receive.attributes["messaging.system"], "rabbitmq");
    assert_eq!(rs_receive.attributes["messaging.operation"], "receive");
    assert_eq!(rs_receive.attributes["rpc.method"], "relay");
    assert_eq!(rs_receive.attributes["openstack.request_id"], "req-otel-1");
    assert_eq!(rs_receive.attributes["messaging.message.id"].len(), 32);
    assert_eq!(rs_call.kind, "producer");
    assert_eq!(rs_call.attributes["messaging.operation"], "call");
    assert_eq!(rs_call.attributes["messaging.destination.name"], py_topic);
    assert_eq!(rs_call.attributes["rpc.method"], "echo");
    assert_eq!(rs_call.attributes["openstack.request_id"], "req-otel-1");
    // And the same attribute names as Python's own spans.
    for (ours, theirs) in [(rs_receive, py_receive), (rs_call, py_call)] {
        let names = |s: &ReceivedSpan| s.attributes.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            names(ours),
            names(theirs),
            "{} vs {}",
            ours.name,
            theirs.name
        );
    }
    // Beyond Python: the steps of a call as events.
    assert_eq!(rs_call.events, ["request sent", "reply received"]);
    assert!(rs_receive.events.is_empty(), "{rs_receive:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_call_traces_through_a_python_hop_to_a_rust_server() {
    testkit::require_python!();
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let scope = Scope::new("otel_rpr");
    let (rs_topic, py_topic) = (scope.topic("otel_rs"), scope.topic("otel_py"));
    let url = broker_url();

    let t = Transport::with_config(&url, &traced(&scope.exchange, &endpoint, "rust")).unwrap();
    let server = RpcServer::builder(&t, Target::new(&rs_topic).with_server("r1"))
        .endpoint(hop(&t))
        .build()
        .unwrap();
    server.start().await.unwrap();
    let hop_tracing = python_tracing(&endpoint, "py-hop");
    let hop_tracing = pairs(&hop_tracing);
    let opts = PeerOpts {
        tracing: &hop_tracing,
        ..PeerOpts::new(&url, &scope.exchange)
    };
    let py_hop = python_server(&py_topic, "p1", &opts).await;

    let client = RpcClient::new(&t, Target::new(&py_topic));
    let ctx = Context::new().with("request_id", "req-otel-2");
    let got: Value = client
        .call(
            &ctx,
            "relay",
            &json!({"to_topic": rs_topic, "to_method": "echo", "to_args": {"data": "back"}}),
        )
        .await
        .unwrap();
    assert_eq!(got, "back");
    py_hop.finish().await;
    server.stop().await;
    server.wait().await;
    t.cleanup().await;

    let relay = format!("{py_topic}.relay");
    let echo = format!("{rs_topic}.echo");
    let spans = receiver
        .wait_until(Duration::from_secs(30), |s| {
            has(s, "rust", &relay)
                && has(s, "py-hop", "relay receive")
                && has(s, "py-hop", &echo)
                && has(s, "rust", "echo receive")
        })
        .await;
    let rs_call = span(&spans, "rust", &relay);
    let py_receive = span(&spans, "py-hop", "relay receive");
    let py_call = span(&spans, "py-hop", &echo);
    let rs_receive = span(&spans, "rust", "echo receive");
    println!(
        "trace {}: {} -> {} -> {} -> {}",
        rs_call.trace_id, rs_call.name, py_receive.name, py_call.name, rs_receive.name
    );
    assert!(
        rs_call.parent_span_id.is_empty(),
        "the Rust client starts the trace"
    );
    assert_child(py_receive, rs_call);
    assert_child(py_call, py_receive);
    assert_child(rs_receive, py_call);
    assert_eq!(py_receive.attributes["openstack.request_id"], "req-otel-2");
    assert_eq!(rs_receive.attributes["openstack.request_id"], "req-otel-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_heartbeats_and_failures_are_traced() {
    let receiver = OtlpReceiver::start().await;
    let conf = traced("otel_mem", &receiver.endpoint(), "rust-mem");
    let t = Transport::memory_with_config(&conf);
    let endpoint = Endpoint::builder()
        .method("boom", |_req: Request<Value>| async move {
            Err::<Value, _>(RpcError::value_error("no such flavor"))
        })
        .method("slow", |_req: Request<Value>| async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok::<_, RpcError>(json!("done"))
        })
        .build()
        .unwrap();
    let server = RpcServer::builder(&t, Target::new("svc").with_server("h1"))
        .endpoint(endpoint)
        .build()
        .unwrap();
    server.start().await.unwrap();
    let ctx = Context::new();
    let client = RpcClient::new(&t, Target::new("svc"));
    let err = client
        .call::<Value>(&ctx, "boom", &json!({}))
        .await
        .unwrap_err();
    assert!(err.remote_error().is_some());
    let monitored = client
        .prepare()
        .call_monitor_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let done: Value = within(monitored.call(&ctx, "slow", &json!({})))
        .await
        .unwrap();
    assert_eq!(done, "done");

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handler = NotificationEndpoint::builder()
        .on(Priority::Info, move |n: Notification| {
            let tx = tx.clone();
            async move {
                tx.send(n.context.get_str("traceparent").map(str::to_owned))
                    .unwrap();
            }
        })
        .build()
        .unwrap();
    let listener = NotificationListener::builder(&t, vec![Target::new("notifications")])
        .endpoint(handler)
        .build()
        .unwrap();
    listener.start().await.unwrap();
    let notifier = Notifier::builder(&t)
        .driver(NotifyDriver::MessagingV2)
        .publisher_id("compute.host-1")
        .topics(["notifications"])
        .build()
        .unwrap();
    notifier
        .info(&ctx, "compute.instance.create.end", &json!({"id": 1}))
        .await
        .unwrap();
    let carried = within(rx.recv()).await.unwrap();
    assert!(
        carried.is_some_and(|tp| tp.starts_with("00-")),
        "trace context travels"
    );
    listener.stop().await;
    listener.wait().await;
    server.stop().await;
    server.wait().await;
    t.cleanup().await;

    let spans = receiver
        .wait_until(Duration::from_secs(30), |s| {
            has(s, "rust-mem", "compute.instance.create.end receive")
                && has(s, "rust-mem", "slow receive")
                && has(s, "rust-mem", "svc.slow")
                && has(s, "rust-mem", "boom receive")
                && has(s, "rust-mem", "svc.boom")
        })
        .await;
    // A failed handler marks both ends as errors (Python marks neither).
    assert!(span(&spans, "rust-mem", "boom receive").error);
    assert!(span(&spans, "rust-mem", "svc.boom").error);
    assert!(!span(&spans, "rust-mem", "svc.slow").error);
    // Call-monitor heartbeats are events on both ends.
    let slow_server = span(&spans, "rust-mem", "slow receive");
    let slow_client = span(&spans, "rust-mem", "svc.slow");
    assert!(
        slow_server.events.iter().any(|e| e == "heartbeat sent"),
        "{slow_server:#?}"
    );
    assert!(
        slow_client.events.iter().any(|e| e == "heartbeat received"),
        "{slow_client:#?}"
    );
    // A notification: publish, and its receipt as a child.
    let publish = span(&spans, "rust-mem", "compute.instance.create.end publish");
    let receive = span(&spans, "rust-mem", "compute.instance.create.end receive");
    assert_eq!(publish.kind, "producer");
    assert_eq!(receive.kind, "consumer");
    assert_child(receive, publish);
    assert_eq!(
        publish.attributes["openstack.publisher_id"],
        "compute.host-1"
    );
    assert_eq!(receive.attributes["openstack.priority"], "INFO");
    assert_eq!(
        publish.attributes["messaging.message.id"],
        receive.attributes["messaging.message.id"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_trace_context_starts_a_new_trace_and_off_means_untouched() {
    let receiver = OtlpReceiver::start().await;
    // Two transports on one memory broker: the caller does not trace, the server does.
    let plain = Transport::from_url("memory://otel_bad").unwrap();
    let conf = traced("openstack", &receiver.endpoint(), "rust-bad");
    let traced_t = Transport::with_config("memory://otel_bad", &conf).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let endpoint = Endpoint::builder()
        .method("ctx", move |req: Request<Value>| {
            let tx = tx.clone();
            async move {
                tx.send(req.context().clone()).unwrap();
                Ok::<_, RpcError>(json!(true))
            }
        })
        .build()
        .unwrap();
    let server = RpcServer::builder(&traced_t, Target::new("bad").with_server("b1"))
        .endpoint(endpoint)
        .build()
        .unwrap();
    server.start().await.unwrap();
    let client = RpcClient::new(&plain, Target::new("bad"));
    let cases = [
        json!("garbage"),
        json!(format!("00-{}-{}-01", "a".repeat(32), "b".repeat(600))),
        json!(42),
        json!("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ];
    for (i, tp) in cases.iter().enumerate() {
        let ctx = Context::new()
            .with("traceparent", tp.clone())
            .with("request_id", format!("req-bad-{i}"));
        let ok: bool = client.call(&ctx, "ctx", &json!({})).await.unwrap();
        assert!(ok);
        let seen = within(rx.recv()).await.unwrap();
        assert_eq!(
            seen.get("traceparent"),
            Some(tp),
            "passed through untouched"
        );
    }
    server.stop().await;
    server.wait().await;
    traced_t.cleanup().await;
    let spans = receiver
        .wait_until(Duration::from_secs(30), |s| {
            s.iter().filter(|s| s.name == "ctx receive").count() == cases.len()
        })
        .await;
    for s in spans.iter().filter(|s| s.name == "ctx receive") {
        let case = &s.attributes["openstack.request_id"];
        if case == "req-bad-3" {
            assert_eq!(s.trace_id, "0af7651916cd43dd8448eb211c80319c");
            assert_eq!(s.parent_span_id, "b7ad6b7169203331");
        } else {
            assert!(s.parent_span_id.is_empty(), "{case}: a new trace");
            assert_ne!(s.trace_id, "0af7651916cd43dd8448eb211c80319c");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_over_grpc_too() {
    let receiver = OtlpReceiver::start_grpc().await;
    let conf = Config::builder()
        .option("oslo_messaging_tracing", "tracing_enabled", "true")
        .option("oslo_messaging_tracing", "otlp_protocol", "grpc")
        // Plain text: Python's gRPC exporter asks for TLS unless `insecure` (or https://).
        .option("oslo_messaging_tracing", "insecure", "true")
        .option(
            "oslo_messaging_tracing",
            "otel_exporter_otlp_endpoint",
            &receiver.endpoint(),
        )
        .option(
            "oslo_messaging_tracing",
            "tracing_service_name",
            "rust-grpc",
        )
        .build()
        .unwrap();
    let t = Transport::memory_with_config(&conf);
    let server = RpcServer::builder(&t, Target::new("grpc").with_server("g1"))
        .endpoint(hop(&t))
        .build()
        .unwrap();
    server.start().await.unwrap();
    let client = RpcClient::new(&t, Target::new("grpc"));
    let got: Value = within(client.call(&Context::new(), "echo", &json!({"data": "g"})))
        .await
        .unwrap();
    assert_eq!(got, "g");
    server.stop().await;
    server.wait().await;
    t.cleanup().await;
    let spans = receiver
        .wait_until(Duration::from_secs(30), |s| {
            has(s, "rust-grpc", "grpc.echo") && has(s, "rust-grpc", "echo receive")
        })
        .await;
    assert_child(
        span(&spans, "rust-grpc", "echo receive"),
        span(&spans, "rust-grpc", "grpc.echo"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_never_slows_a_call() {
    // Nothing listens on the discard port: every export fails.
    let conf = traced("openstack", "http://127.0.0.1:9", "rust-lost");
    let t = Transport::memory_with_config(&conf);
    let endpoint = Endpoint::builder()
        .method("echo", |req: Request<Value>| async move {
            Ok::<_, RpcError>(req.into_args())
        })
        .build()
        .unwrap();
    let server = RpcServer::builder(&t, Target::new("lost").with_server("l1"))
        .endpoint(endpoint)
        .build()
        .unwrap();
    server.start().await.unwrap();
    let client = RpcClient::new(&t, Target::new("lost"));
    let calls = 3000;
    let started = Instant::now();
    for i in 0..calls {
        let got: Value = client
            .call(&Context::new(), "echo", &json!({"i": i}))
            .await
            .unwrap();
        assert_eq!(got["i"], i);
    }
    let elapsed = started.elapsed();
    server.stop().await;
    server.wait().await;
    let flush_started = Instant::now();
    t.cleanup().await;
    let flushed = flush_started.elapsed();
    // Each call makes two spans; none is exported, and every one is counted. A cleanup that
    // gave up waiting (a busy machine) leaves the last batches to the export thread: they are
    // counted once it has failed them too (bound: 10 s more).
    let counting = Instant::now();
    let mut dropped = oslo_messaging::telemetry::spans_dropped();
    while dropped < 2 * calls && counting.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        dropped = oslo_messaging::telemetry::spans_dropped();
    }
    println!(
        "{calls} calls with an unreachable collector: {elapsed:?}; cleanup {flushed:?}; {dropped} spans dropped ({:?} after the cleanup)",
        counting.elapsed()
    );
    assert_eq!(dropped, 2 * calls, "every span is counted as dropped");
    // Bound: cleanup waits for the queue at most 5 s, plus slack.
    assert!(flushed < Duration::from_secs(7), "{flushed:?}");
}
