//! Interoperability with Python oslo.messaging 18.3.1 on the real broker, both ways.
//!
//! The RPC cases run in a matrix: the same operations, with the same expected outcomes, from
//! a Python client and from ours, to a Python server and to ours (`interop/peer.py` plays
//! Python). Our server mirrors the Python peer's endpoint method for method, so every
//! combination must agree. A third peer is Python on the Rust engine (`rabbitrs://`, the
//! `oslo-messaging-py` wheel), on threads and under eventlet, against Python on kombu, against
//! Rust and against itself. Notifications (the same three peers), fanout across both
//! languages and at-least-once follow.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oslo_messaging::notify::{
    Notification, NotificationEndpoint, NotificationListener, NotificationResult, Notifier,
    NotifyDriver, Priority,
};
use oslo_messaging::rpc::{Endpoint, NoArgs, Request, RpcClient, RpcError, RpcServer, State};
use oslo_messaging::{Context, ErrorKind, Retry, Target, Transport, Version};
use serde::Deserialize;
use serde_json::{Value, json};
use support::PRIORITIES;
use support::python::{Peer, PeerOpts, python_client, python_server};
use support::rabbit::Scope;
use testkit::broker::url as broker_url;

// ---------------------------------------------------------------- our mirror of peer.py

/// What our servers recorded: (server, value, context).
type Records = Arc<Mutex<Vec<(String, Value, Value)>>>;

#[derive(Deserialize)]
struct Data {
    data: Value,
}

#[derive(Deserialize)]
struct Fail {
    message: String,
    #[serde(default)]
    exc_class: Option<String>,
}

#[derive(Deserialize)]
struct Sleep {
    seconds: Value,
}

#[derive(Deserialize)]
struct Record {
    value: Value,
}

/// Python's builtin exception classes the tests raise.
const BUILTINS: [&str; 6] = [
    "ValueError",
    "TypeError",
    "RuntimeError",
    "KeyError",
    "IndexError",
    "NotImplementedError",
];

/// The peer's endpoints: echo, context, fail, sleep, record, whoami (version 1.0), and
/// versioned in namespace `ns` (version 1.3).
fn mirror_endpoints(server: &str, records: &Records) -> Vec<Endpoint> {
    let state = (server.to_owned(), records.clone());
    let main = Endpoint::builder()
        .version(Version::new(1, 0))
        .state(state)
        .method("echo", |req: Request<Data>| async move {
            Ok::<_, RpcError>(req.into_args().data)
        })
        .method("context", |req: Request<NoArgs>| async move {
            Ok::<_, RpcError>(Value::Object(req.context().as_map().clone()))
        })
        .method("fail", |req: Request<Fail>| async move {
            let Fail { message, exc_class } = req.into_args();
            let class = exc_class.unwrap_or_else(|| "ValueError".to_owned());
            let module = if BUILTINS.contains(&class.as_str()) {
                "builtins"
            } else {
                "peer_errors"
            };
            Err::<(), _>(RpcError::new(class, message).with_module(module))
        })
        .method("sleep", |req: Request<Sleep>| async move {
            let seconds = req.into_args().seconds;
            let secs = seconds.as_f64().unwrap_or(0.0).clamp(0.0, 600.0);
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            Ok::<_, RpcError>(seconds)
        })
        .method(
            "record",
            |State((server, records)): State<(String, Records)>, req: Request<Record>| async move {
                let (ctx, args) = req.into_parts();
                records.lock().unwrap().push((
                    server.clone(),
                    args.value,
                    Value::Object(ctx.into_map()),
                ));
                Ok::<_, RpcError>(server)
            },
        )
        .method(
            "whoami",
            |State((server, _)): State<(String, Records)>, _req: Request<NoArgs>| async move {
                Ok::<_, RpcError>(server)
            },
        )
        .build()
        .unwrap();
    let versioned = Endpoint::builder()
        .namespace("ns")
        .version(Version::new(1, 3))
        .method("versioned", |req: Request<Data>| async move {
            Ok::<_, RpcError>(json!({ "ns": req.into_args().data }))
        })
        .build()
        .unwrap();
    vec![main, versioned]
}

async fn rust_server(
    scope: &Scope,
    t: &Transport,
    topic: &str,
    server: &str,
    records: &Records,
) -> RpcServer {
    scope.queue(format!("{topic}.{server}"));
    let mut b = RpcServer::builder(t, Target::new(topic).with_server(server));
    for ep in mirror_endpoints(server, records) {
        b = b.endpoint(ep);
    }
    let s = b.build().unwrap();
    s.start().await.unwrap();
    s
}

// ---------------------------------------------------------------- outcomes, normalised

/// Python's client result as an outcome: `{"ok": v}`, `{"timeout": true}`,
/// `{"undeliverable": true}` or `{"remote": class, "message": first line}`.
fn python_outcome(r: &Value) -> Value {
    if let Some(e) = r.get("error") {
        let ty = e["type"].as_str().unwrap_or_default();
        return match ty {
            "MessagingTimeout" => json!({"timeout": true}),
            "MessageUndeliverable" => json!({"undeliverable": true}),
            "RemoteError" => json!({"remote": e["exc_type"], "message": e["value"]}),
            _ => {
                let first = e["str"].as_str().unwrap_or_default().lines().next();
                json!({"remote": ty.trim_end_matches("_Remote"), "message": first.unwrap_or("")})
            }
        };
    }
    json!({ "ok": r["ok"] })
}

/// Our client's result as an outcome.
fn rust_outcome(r: oslo_messaging::Result<Value>) -> Value {
    match r {
        Ok(v) => json!({ "ok": v }),
        Err(e) if e.kind() == ErrorKind::Timeout => json!({"timeout": true}),
        Err(e) if e.kind() == ErrorKind::Undeliverable => json!({"undeliverable": true}),
        Err(e) => match e.remote_error() {
            Some(r) => json!({
                "remote": r.class(),
                "message": r.message().lines().next().unwrap_or(""),
            }),
            None => json!({"unexpected": e.to_string()}),
        },
    }
}

/// Runs a peer-protocol op with our client.
async fn rust_op(client: &RpcClient, op: &Value) -> Value {
    let mut p = client.prepare();
    if let Some(s) = op["server"].as_str() {
        p = p.server(s);
    }
    if let Some(ns) = op["namespace"].as_str() {
        p = p.namespace(ns);
    }
    if let Some(v) = op["version"].as_str() {
        p = p.version(v.parse().unwrap());
    }
    if let Some(t) = op["timeout"].as_f64() {
        p = p.timeout(Duration::from_secs_f64(t));
    }
    if let Some(t) = op["call_monitor_timeout"].as_f64() {
        p = p.call_monitor_timeout(Duration::from_secs_f64(t));
    }
    if op["fanout"] == true {
        p = p.fanout(true);
    }
    if op["at_least_once"] == true {
        p = p.at_least_once(true);
    }
    if let Some(r) = op["retry"].as_i64() {
        p = p.retry(Retry::from_python(r));
    }
    let client = p.build().unwrap();
    let ctx = Context::from_serialize(&op.get("context").cloned().unwrap_or(json!({}))).unwrap();
    let method = op["method"].as_str().unwrap();
    let args = op.get("args").cloned().unwrap_or(json!({}));
    if op["op"] == "cast" {
        rust_outcome(client.cast(&ctx, method, &args).await.map(|()| Value::Null))
    } else {
        rust_outcome(client.call::<Value>(&ctx, method, &args).await)
    }
}

// ---------------------------------------------------------------- the RPC matrix

fn call(method: &str, args: Value) -> Value {
    json!({"op": "call", "method": method, "args": args, "timeout": 20})
}

fn remote(class: &str, message: &str) -> Value {
    json!({"remote": class, "message": message})
}

/// The operations and what every client/server pair must give.
fn matrix() -> Vec<(Value, Value)> {
    let big = "ü".repeat(300_000);
    let mut cases = Vec::new();
    for data in [
        json!(null),
        json!(true),
        json!(-42),
        json!(9_007_199_254_740_993_i64),
        json!(2.5e-8),
        json!("naïve ☃ \u{1F600} \"q\" \\ \t\n\u{0001}"),
        json!([1, "two", [3.5], {"four": null}, []]),
        json!({"nested": {"deep": [true, false]}, "empty": {}, "é": "key"}),
        json!(big),
    ] {
        cases.push((call("echo", json!({ "data": data })), json!({ "ok": data })));
    }
    let ctx = json!({"user": "u1", "request_id": "req-42", "roles": ["admin"], "nested": {"a": 1}});
    let mut with_ctx = call("context", json!({}));
    with_ctx["context"] = ctx.clone();
    let mut seen = ctx;
    seen["client_timeout"] = Value::Null;
    cases.push((with_ctx.clone(), json!({ "ok": seen })));
    // The call monitor's timeout reaches the server's context as client_timeout.
    with_ctx["call_monitor_timeout"] = json!(4);
    seen["client_timeout"] = json!(4);
    cases.push((with_ctx, json!({ "ok": seen })));

    cases.push((
        call("fail", json!({"message": "bad value"})),
        remote("ValueError", "bad value"),
    ));
    cases.push((
        call(
            "fail",
            json!({"message": "gone", "exc_class": "InstanceNotFound"}),
        ),
        remote("InstanceNotFound", "gone"),
    ));
    cases.push((
        call("nosuch", json!({})),
        remote(
            "NoSuchMethod",
            "Endpoint does not support RPC method nosuch",
        ),
    ));
    let mut too_new = call("echo", json!({"data": 1}));
    too_new["version"] = json!("2.0");
    cases.push((
        too_new,
        remote(
            "UnsupportedVersion",
            "Endpoint does not support RPC version 2.0. Attempted method: echo",
        ),
    ));
    let mut compatible = call("versioned", json!({"data": 5}));
    compatible["namespace"] = json!("ns");
    compatible["version"] = json!("1.2");
    cases.push((compatible.clone(), json!({"ok": {"ns": 5}})));
    compatible["version"] = json!("1.4");
    cases.push((
        compatible,
        remote(
            "UnsupportedVersion",
            "Endpoint does not support RPC version 1.4. Attempted method: versioned",
        ),
    ));
    cases.push((
        call("versioned", json!({"data": 5})),
        remote(
            "NoSuchMethod",
            "Endpoint does not support RPC method versioned",
        ),
    ));
    let mut direct = call("whoami", json!({}));
    direct["server"] = json!("server-1");
    cases.push((direct, json!({"ok": "server-1"})));
    let mut slow = call("sleep", json!({"seconds": 3}));
    slow["timeout"] = json!(1);
    cases.push((slow, json!({"timeout": true})));
    // Heartbeats every second keep a 4 s call alive under a 2 s monitor.
    let mut monitored = call("sleep", json!({"seconds": 4}));
    monitored["call_monitor_timeout"] = json!(2);
    cases.push((monitored, json!({"ok": 4})));
    cases.push((
        json!({"op": "cast", "method": "record", "args": {"value": "cast-1"}, "context": {"user": "c"}}),
        json!({"ok": null}),
    ));
    cases
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Side {
    /// Python oslo.messaging on its own RabbitMQ driver (kombu).
    Python,
    /// Python oslo.messaging on the Rust engine (`rabbitrs://`, the `oslo-messaging-py` wheel).
    PythonRs,
    /// The same, monkey-patched with eventlet as eventlet services run: green threads on one
    /// OS thread, the eventlet executor, waits that yield to the hub.
    PythonRsEventlet,
    Rust,
    /// Ours with `rabbit_direct_reply_to`: replies come back through RabbitMQ's direct
    /// reply-to, whoever the server is.
    RustDirect,
}

/// What a Python server needs for clients on direct reply-to: RabbitMQ 3.x returns every
/// mandatory publish to a direct reply-to name although it delivered it, and Python takes the
/// return for a missing queue (it resends the reply for a minute, then drops replies to that
/// name for another), so its replies must not be mandatory.
const PYTHON_SERVER_FOR_DIRECT: [(&str, &str); 1] = [("direct_mandatory_flag", "false")];

/// The URL a Python peer of `side` uses for the broker at `url`.
fn peer_url(side: Side, url: &str) -> String {
    match side {
        Side::PythonRs | Side::PythonRsEventlet => format!(
            "rabbitrs://{}",
            url.split_once("://").map_or(url, |(_, r)| r)
        ),
        _ => url.to_owned(),
    }
}

/// The options of a Python peer of `side` at `url` (from [`peer_url`]).
fn peer_opts<'a>(side: Side, url: &'a str, exchange: &'a str) -> PeerOpts<'a> {
    PeerOpts {
        eventlet: side == Side::PythonRsEventlet,
        ..PeerOpts::new(url, exchange)
    }
}

/// Runs the matrix from `client` to `server` and checks every outcome, then the cast.
async fn run_matrix(client: Side, server: Side) {
    let scope = Scope::new(&format!("mx_{client:?}_{server:?}").to_lowercase());
    let topic = scope.topic("mx");
    scope.queue(format!("{topic}.server-1"));
    let url = broker_url();
    let (client_url, server_url) = (peer_url(client, &url), peer_url(server, &url));
    let client_opts = peer_opts(client, &client_url, &scope.exchange);
    let mut server_opts = peer_opts(server, &server_url, &scope.exchange);
    if client == Side::RustDirect && server == Side::Python {
        server_opts.rabbit = &PYTHON_SERVER_FOR_DIRECT;
    }
    let t = scope.transport();
    let client_t = if client == Side::RustDirect {
        scope.transport_with(&[("rabbit_direct_reply_to", "true")])
    } else {
        t.clone()
    };
    let records = Records::default();
    let (mut py_server, rust_srv) = match server {
        Side::Python | Side::PythonRs | Side::PythonRsEventlet => (
            Some(python_server(&topic, "server-1", &server_opts).await),
            None,
        ),
        Side::Rust | Side::RustDirect => (
            None,
            Some(rust_server(&scope, &t, &topic, "server-1", &records).await),
        ),
    };
    let cases = matrix();
    let ops: Vec<Value> = cases.iter().map(|(op, _)| op.clone()).collect();
    let got: Vec<Value> = match client {
        Side::Python | Side::PythonRs | Side::PythonRsEventlet => {
            python_client(&topic, &ops, &client_opts)
                .await
                .iter()
                .map(python_outcome)
                .collect()
        }
        Side::Rust | Side::RustDirect => {
            let c = RpcClient::new(&client_t, Target::new(&topic));
            let mut out = Vec::new();
            for op in &ops {
                out.push(rust_op(&c, op).await);
            }
            out
        }
    };
    for ((op, want), got) in cases.iter().zip(&got) {
        let shown = op.to_string();
        assert_eq!(
            got,
            want,
            "{client:?} client -> {server:?} server: {}",
            &shown[..shown.len().min(200)]
        );
    }
    // The cast ran on the server, with its context.
    match (py_server.as_mut(), &rust_srv) {
        (Some(py), _) => {
            let rec = py.wait_event("record", 10).await;
            assert_eq!(rec["value"], "cast-1");
            assert_eq!(rec["context"]["user"], "c");
        }
        (None, Some(_)) => {
            for _ in 0..100 {
                if !records.lock().unwrap().is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let r = records.lock().unwrap();
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].1, json!("cast-1"));
            assert_eq!(r[0].2["user"], "c");
        }
        _ => unreachable!(),
    }
    if let Some(py) = py_server {
        py.finish().await;
    }
    if let Some(s) = rust_srv {
        s.stop().await;
        s.wait().await;
    }
    client_t.cleanup().await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_to_python_server_sets_the_expectations() {
    testkit::require_python!();
    run_matrix(Side::Python, Side::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_to_our_server() {
    testkit::require_python!();
    run_matrix(Side::Python, Side::Rust).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_to_python_server() {
    testkit::require_python!();
    run_matrix(Side::Rust, Side::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_to_our_server() {
    testkit::require_python!();
    run_matrix(Side::Rust, Side::Rust).await;
}

// Our client on direct reply-to (`rabbit_direct_reply_to`), against every kind of server.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_direct_reply_to_client_to_our_server() {
    testkit::require_python!();
    run_matrix(Side::RustDirect, Side::Rust).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_direct_reply_to_client_to_python_server() {
    testkit::require_python!();
    run_matrix(Side::RustDirect, Side::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_direct_reply_to_client_to_python_on_rabbitrs() {
    testkit::require_python!();
    run_matrix(Side::RustDirect, Side::PythonRs).await;
}

// Python on the Rust engine, against Python on kombu and against Rust, both ways.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_on_rabbitrs_to_python_on_kombu() {
    testkit::require_python!();
    run_matrix(Side::PythonRs, Side::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_on_kombu_to_python_on_rabbitrs() {
    testkit::require_python!();
    run_matrix(Side::Python, Side::PythonRs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_on_rabbitrs_to_our_server() {
    testkit::require_python!();
    run_matrix(Side::PythonRs, Side::Rust).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_to_python_on_rabbitrs() {
    testkit::require_python!();
    run_matrix(Side::Rust, Side::PythonRs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_on_rabbitrs_to_python_on_rabbitrs() {
    testkit::require_python!();
    run_matrix(Side::PythonRs, Side::PythonRs).await;
}

// The same under eventlet, as monkey-patched services (nova, neutron, ...) run.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_on_rabbitrs_under_eventlet_to_python_on_kombu() {
    testkit::require_python!();
    run_matrix(Side::PythonRsEventlet, Side::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_on_kombu_to_python_on_rabbitrs_under_eventlet() {
    testkit::require_python!();
    run_matrix(Side::Python, Side::PythonRsEventlet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_on_rabbitrs_under_eventlet_to_our_server() {
    testkit::require_python!();
    run_matrix(Side::PythonRsEventlet, Side::Rust).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_to_python_on_rabbitrs_under_eventlet() {
    testkit::require_python!();
    run_matrix(Side::Rust, Side::PythonRsEventlet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_on_rabbitrs_under_eventlet_to_itself_under_threads() {
    testkit::require_python!();
    run_matrix(Side::PythonRsEventlet, Side::PythonRs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_errors_keep_their_class_for_python_clients_that_allow_the_module() {
    testkit::require_python!();
    let scope = Scope::new("exmods");
    let topic = scope.topic("exmods");
    let t = scope.transport();
    let s = rust_server(&scope, &t, &topic, "s", &Records::default()).await;
    let url = broker_url();
    let mut peer = Peer::spawn(
        "client",
        &["--topic", &topic, "--allowed-remote-exmod", "peer_errors"],
        &PeerOpts::new(&url, &scope.exchange),
    );
    peer.send(&call(
        "fail",
        json!({"message": "no such thing", "exc_class": "ThingNotFound"}),
    ))
    .await;
    let out = peer.finish().await;
    // Python rebuilds the class from our module and class names.
    assert_eq!(out[0]["error"]["type"], "ThingNotFound_Remote");
    assert_eq!(out[0]["error"]["module"], "peer_errors_Remote");
    assert!(
        out[0]["error"]["str"]
            .as_str()
            .unwrap()
            .starts_with("no such thing"),
        "{}",
        out[0]
    );
    s.stop().await;
    s.wait().await;
    t.cleanup().await;
}

/// The reverse of the test above: a Python server raises an exception of its own module with
/// nova-style kwargs, and a Rust client that maps that class gets a value of its own type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_exceptions_decode_into_the_rust_types_mapped_to_them() {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct ThingNotFound {
        thing_id: u64,
        code: u16,
        message: String,
    }
    impl oslo_messaging::RemoteException for ThingNotFound {
        const MODULE: &'static str = "peer_errors";
        const CLASS: &'static str = "ThingNotFound";
    }
    testkit::require_python!();
    let scope = Scope::new("pyexc");
    let topic = scope.topic("pyexc");
    scope.queue(format!("{topic}.py-1"));
    let url = broker_url();
    let py = python_server(&topic, "py-1", &PeerOpts::new(&url, &scope.exchange)).await;
    let t = scope.transport();
    let client = RpcClient::new(&t, Target::new(&topic));
    let args = json!({
        "message": "Thing 7 could not be found.",
        "exc_class": "ThingNotFound",
        "kwargs": {"thing_id": 7, "code": 404},
    });
    let err = client
        .call::<Value>(&Context::new(), "fail", &args)
        .await
        .unwrap_err();
    assert_eq!(
        err.remote_as::<ThingNotFound>(),
        Some(ThingNotFound {
            thing_id: 7,
            code: 404,
            message: "Thing 7 could not be found.".into()
        })
    );
    // Another class is not taken for it.
    let args = json!({"message": "m", "exc_class": "OtherError", "kwargs": {"thing_id": 1}});
    let err = client
        .call::<Value>(&Context::new(), "fail", &args)
        .await
        .unwrap_err();
    assert_eq!(err.remote_as::<ThingNotFound>(), None);
    assert_eq!(err.remote_error().unwrap().class(), "OtherError");
    py.finish().await;
    t.cleanup().await;
}

// ---------------------------------------------------------------- both languages on one topic

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_and_round_robin_across_both_languages() {
    testkit::require_python!();
    let scope = Scope::new("mixed");
    let topic = scope.topic("mixed");
    let url = broker_url();
    // Our client takes its replies through direct reply-to here (the matrix covers the reply
    // queue), so the Python servers reply without `mandatory`.
    let opts = PeerOpts {
        rabbit: &PYTHON_SERVER_FOR_DIRECT,
        ..PeerOpts::new(&url, &scope.exchange)
    };
    let t = scope.transport();
    let direct_t = scope.transport_with(&[("rabbit_direct_reply_to", "true")]);
    let records = Records::default();
    let mut py = Vec::new();
    for name in ["py-1", "py-2"] {
        scope.queue(format!("{topic}.{name}"));
        py.push(python_server(&topic, name, &opts).await);
    }
    let mut ours = Vec::new();
    for name in ["rs-1", "rs-2"] {
        ours.push(rust_server(&scope, &t, &topic, name, &records).await);
    }

    // Fanout casts from each language reach all four servers.
    let fanout = |value: &str| json!({"op": "cast", "method": "record", "args": {"value": value}, "fanout": true});
    python_client(&topic, &[fanout("from-python")], &opts).await;
    let client = RpcClient::new(&direct_t, Target::new(&topic));
    assert_eq!(
        rust_op(&client, &fanout("from-rust")).await,
        json!({"ok": null})
    );
    for p in &mut py {
        let mut values = BTreeSet::new();
        for _ in 0..2 {
            let v = p.wait_event("record", 10).await;
            values.insert(v["value"].as_str().unwrap().to_owned());
        }
        assert_eq!(
            values,
            BTreeSet::from(["from-python".to_owned(), "from-rust".to_owned()])
        );
    }
    for _ in 0..100 {
        if records.lock().unwrap().len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let r = records.lock().unwrap();
        let mut got: Vec<(String, Value)> =
            r.iter().map(|(s, v, _)| (s.clone(), v.clone())).collect();
        got.sort_by(|a, b| (a.0.as_str(), a.1.to_string()).cmp(&(b.0.as_str(), b.1.to_string())));
        assert_eq!(
            got,
            [
                ("rs-1".to_owned(), json!("from-python")),
                ("rs-1".to_owned(), json!("from-rust")),
                ("rs-2".to_owned(), json!("from-python")),
                ("rs-2".to_owned(), json!("from-rust")),
            ]
        );
    }

    // Topic calls are shared by all four; server calls reach the named one, whatever its
    // language, from either language.
    let mut who = BTreeSet::new();
    for _ in 0..16 {
        let out = rust_op(&client, &call("whoami", json!({}))).await;
        who.insert(out["ok"].as_str().unwrap().to_owned());
    }
    assert!(who.len() >= 3, "calls spread over the servers: {who:?}");
    let mut ops = Vec::new();
    for name in ["py-1", "py-2", "rs-1", "rs-2"] {
        let mut op = call("whoami", json!({}));
        op["server"] = json!(name);
        ops.push(op.clone());
        assert_eq!(rust_op(&client, &op).await, json!({ "ok": name }));
    }
    let from_python = python_client(&topic, &ops, &opts).await;
    let names: Vec<Value> = from_python.iter().map(|r| r["ok"].clone()).collect();
    assert_eq!(
        names,
        [json!("py-1"), json!("py-2"), json!("rs-1"), json!("rs-2")]
    );

    for p in py {
        p.finish().await;
    }
    for s in ours {
        s.stop().await;
        s.wait().await;
    }
    direct_t.cleanup().await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_with_nobody_listening_fails_fast_in_both() {
    testkit::require_python!();
    let scope = Scope::new("alo");
    let topic = scope.topic("alo");
    let url = broker_url();
    let opts = PeerOpts::new(&url, &scope.exchange);
    // Declare the exchange first, so the message is unroutable rather than refused.
    let t = scope.transport();
    let client = RpcClient::new(&t, Target::new(&topic));
    client.cast(&Context::new(), "warmup", &()).await.unwrap();
    let ops = [
        json!({"op": "call", "method": "echo", "args": {"data": 1}, "at_least_once": true, "timeout": 30}),
        json!({"op": "cast", "method": "echo", "args": {"data": 1}, "at_least_once": true}),
    ];
    let py = python_client(&topic, &ops, &opts).await;
    // Ours with the reply queue and with direct reply-to.
    let direct_t = scope.transport_with(&[("rabbit_direct_reply_to", "true")]);
    let direct = RpcClient::new(&direct_t, Target::new(&topic));
    for (op, r) in ops.iter().zip(&py) {
        assert_eq!(python_outcome(r), json!({"undeliverable": true}), "{op}");
        assert!(r["elapsed"].as_f64().unwrap() < 5.0, "{r}");
        for c in [&client, &direct] {
            let started = std::time::Instant::now();
            assert_eq!(rust_op(c, op).await, json!({"undeliverable": true}));
            assert!(started.elapsed() < Duration::from_secs(5));
        }
    }
    direct_t.cleanup().await;
    t.cleanup().await;
}

// ---------------------------------------------------------------- notifications

type Seen = tokio::sync::mpsc::UnboundedReceiver<Notification>;

fn forwarding() -> (NotificationEndpoint, Seen) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut ep = NotificationEndpoint::builder();
    for p in Priority::ALL {
        let tx = tx.clone();
        ep = ep.on(p, move |n: Notification| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(n);
            }
        });
    }
    (ep.build().unwrap(), rx)
}

async fn next(rx: &mut Seen) -> Notification {
    tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .expect("a notification within 15 s")
        .unwrap()
}

/// Python's two notification drivers.
const NOTIFIER_DRIVERS: [&str; 2] = ["messaging", "messagingv2"];

/// A Python notifier peer (publisher `py.<driver>`) sends one notification per notifier
/// method, each confirmed by the peer.
async fn python_notifies(topic: &str, driver: &str, opts: &PeerOpts<'_>) {
    let publisher = format!("py.{driver}");
    let args = [
        "--topic",
        topic,
        "--publisher-id",
        &publisher,
        "--driver",
        driver,
    ];
    let mut peer = Peer::spawn("notify", &args, opts);
    for (method, _) in PRIORITIES {
        peer.send(&json!({
            "priority": method,
            "event_type": format!("test.{method}"),
            "payload": {"method": method, "list": [1, "ü"]},
            "context": {"user": "u1", "request_id": "req-1"},
        }))
        .await;
        assert_eq!(peer.next(30).await, json!({"ok": true}));
    }
    peer.finish().await;
}

/// A Python listener peer that stops after `total` notifications, once it is ready.
async fn python_listener(topic: &str, total: usize, opts: &PeerOpts<'_>) -> Peer {
    let total = total.to_string();
    let args = ["--topic", topic, "--count", &total, "--timeout", "60"];
    let mut listener = Peer::spawn("listen", &args, opts);
    listener.wait_event("ready", 60).await;
    listener
}

/// The `total` notifications a Python listener printed, as sorted (publisher, event type,
/// priority), each with the context and payload as sent (and no auth token: a notifier
/// redacts it).
async fn python_listener_got(listener: &mut Peer, total: usize) -> Vec<(String, String, String)> {
    let mut got = Vec::new();
    for _ in 0..total {
        let n = listener.wait_event("notification", 30).await;
        assert_eq!(n["ctxt"]["user"], "u1");
        assert_eq!(
            n["ctxt"]["auth_token"],
            Value::Null,
            "redacted before sending"
        );
        assert_eq!(n["metadata"]["message_id"].as_str().unwrap().len(), 36);
        assert_eq!(n["payload"]["list"], json!([1, "ü"]));
        got.push((
            n["publisher_id"].as_str().unwrap().to_owned(),
            n["event_type"].as_str().unwrap().to_owned(),
            n["priority"].as_str().unwrap().to_owned(),
        ));
    }
    got.sort();
    got
}

/// (publisher, event type, priority) of one notification per notifier method from each of
/// the two drivers, publishers named `<prefix>.<driver>`, sorted.
fn sent_by_both_drivers(prefix: &str) -> Vec<(String, String, String)> {
    let mut want: Vec<_> = NOTIFIER_DRIVERS
        .iter()
        .flat_map(|d| {
            PRIORITIES.iter().map(move |(m, p)| {
                (
                    format!("{prefix}.{d}"),
                    format!("test.{m}"),
                    (*p).to_owned(),
                )
            })
        })
        .collect();
    want.sort();
    want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_notifications_reach_our_listener() {
    testkit::require_python!();
    python_notifications_to_rust(Side::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_on_rabbitrs_notifications_reach_our_listener() {
    testkit::require_python!();
    python_notifications_to_rust(Side::PythonRs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_on_rabbitrs_under_eventlet_notifications_reach_our_listener() {
    testkit::require_python!();
    python_notifications_to_rust(Side::PythonRsEventlet).await;
}

/// A Python notifier of `side`, with both notification drivers at every priority, to a Rust
/// listener.
async fn python_notifications_to_rust(side: Side) {
    let scope = Scope::new(&format!("pynote_{side:?}").to_lowercase());
    let topic = scope.topic("pynote");
    let url = peer_url(side, &broker_url());
    let opts = peer_opts(side, &url, &scope.exchange);
    let t = scope.transport();
    let (ep, mut rx) = forwarding();
    let l = NotificationListener::builder(&t, vec![Target::new(&topic)])
        .endpoint(ep)
        .build()
        .unwrap();
    l.start().await.unwrap();
    for driver in NOTIFIER_DRIVERS {
        python_notifies(&topic, driver, &opts).await;
        let mut got = Vec::new();
        for _ in 0..PRIORITIES.len() {
            let n = next(&mut rx).await;
            assert_eq!(
                n.publisher_id.as_deref(),
                Some(format!("py.{driver}").as_str())
            );
            assert_eq!(n.context.get_str("user"), Some("u1"));
            assert_eq!(n.context.get_str("request_id"), Some("req-1"));
            assert_eq!(n.message_id().unwrap().len(), 36);
            assert_eq!(n.payload["list"], json!([1, "ü"]));
            got.push((
                n.event_type.unwrap(),
                n.priority.as_str().to_owned(),
                n.payload["method"].as_str().unwrap().to_owned(),
            ));
        }
        got.sort();
        let mut want: Vec<(String, String, String)> = PRIORITIES
            .iter()
            .map(|(m, p)| (format!("test.{m}"), (*p).to_owned(), (*m).to_owned()))
            .collect();
        want.sort();
        assert_eq!(got, want, "{driver}");
    }
    l.stop().await;
    l.wait().await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_notifications_reach_a_python_listener() {
    testkit::require_python!();
    rust_notifications_to_python(Side::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_notifications_reach_a_python_listener_on_rabbitrs() {
    testkit::require_python!();
    rust_notifications_to_python(Side::PythonRs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_notifications_reach_a_python_listener_on_rabbitrs_under_eventlet() {
    testkit::require_python!();
    rust_notifications_to_python(Side::PythonRsEventlet).await;
}

/// Rust notifications, with both drivers at every priority, to a Python listener of `side`.
async fn rust_notifications_to_python(side: Side) {
    let scope = Scope::new(&format!("rsnote_{side:?}").to_lowercase());
    let topic = scope.topic("rsnote");
    let url = peer_url(side, &broker_url());
    let opts = peer_opts(side, &url, &scope.exchange);
    let t = scope.transport();
    let total = 2 * PRIORITIES.len();
    let mut listener = python_listener(&topic, total, &opts).await;
    let ctx = Context::new()
        .with("user", "u1")
        .with("auth_token", "secret-token");
    for (driver, name) in [
        (NotifyDriver::Messaging, "messaging"),
        (NotifyDriver::MessagingV2, "messagingv2"),
    ] {
        let n = Notifier::builder(&t)
            .driver(driver)
            .publisher_id(format!("rs.{name}"))
            .topics([topic.as_str()])
            .build()
            .unwrap();
        for (method, _) in PRIORITIES {
            let priority: Priority = method.parse().unwrap();
            n.notify(
                &ctx,
                &format!("test.{method}"),
                priority,
                &json!({"method": method, "list": [1, "ü"]}),
            )
            .await
            .unwrap();
        }
    }
    let got = python_listener_got(&mut listener, total).await;
    assert_eq!(got, sent_by_both_drivers("rs"));
    let stopped = listener.finish().await;
    assert_eq!(stopped.last().unwrap()["reason"], "count");
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_on_rabbitrs_notifications_reach_python_on_kombu() {
    testkit::require_python!();
    python_notifications_to_python(Side::PythonRs, Side::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_on_kombu_notifications_reach_python_on_rabbitrs() {
    testkit::require_python!();
    python_notifications_to_python(Side::Python, Side::PythonRs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_on_rabbitrs_under_eventlet_notifications_reach_python_on_kombu() {
    testkit::require_python!();
    python_notifications_to_python(Side::PythonRsEventlet, Side::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_on_kombu_notifications_reach_python_on_rabbitrs_under_eventlet() {
    testkit::require_python!();
    python_notifications_to_python(Side::Python, Side::PythonRsEventlet).await;
}

/// A Python notifier of side `from` to a Python listener of side `to`: both notification
/// drivers, every priority, context and payload as sent.
async fn python_notifications_to_python(from: Side, to: Side) {
    let scope = Scope::new(&format!("pypy_{from:?}_{to:?}").to_lowercase());
    let topic = scope.topic("pypy");
    let url = broker_url();
    let (from_url, to_url) = (peer_url(from, &url), peer_url(to, &url));
    let total = 2 * PRIORITIES.len();
    let mut listener =
        python_listener(&topic, total, &peer_opts(to, &to_url, &scope.exchange)).await;
    for driver in NOTIFIER_DRIVERS {
        python_notifies(&topic, driver, &peer_opts(from, &from_url, &scope.exchange)).await;
    }
    let got = python_listener_got(&mut listener, total).await;
    let want = sent_by_both_drivers("py");
    assert_eq!(got, want, "{from:?} -> {to:?}");
    let stopped = listener.finish().await;
    assert_eq!(stopped.last().unwrap()["reason"], "count");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_are_shared_across_languages() {
    testkit::require_python!();
    let scope = Scope::new("mixpool");
    let topic = scope.topic("mixpool");
    let shared = format!("{topic}_shared");
    let own = format!("{topic}_own");
    scope.queue(shared.clone());
    scope.queue(own.clone());
    let url = broker_url();
    let opts = PeerOpts::new(&url, &scope.exchange);
    let t = scope.transport();
    // Pool "shared": one Python and one Rust listener. Pool "own": a Rust listener alone.
    let mut py = Peer::spawn(
        "listen",
        &["--topic", &topic, "--pool", &shared, "--timeout", "60"],
        &opts,
    );
    py.wait_event("ready", 60).await;
    let (ep_shared, mut rx_shared) = forwarding();
    let (ep_own, mut rx_own) = forwarding();
    let mut listeners = Vec::new();
    for (ep, pool) in [(ep_shared, &shared), (ep_own, &own)] {
        let l = NotificationListener::builder(&t, vec![Target::new(&topic)])
            .endpoint(ep)
            .pool(pool)
            .build()
            .unwrap();
        l.start().await.unwrap();
        listeners.push(l);
    }
    let mut notifier = Peer::spawn("notify", &["--topic", &topic, "--publisher-id", "p"], &opts);
    let count = 20;
    for i in 0..count {
        notifier
            .send(&json!({"priority": "info", "event_type": "e", "payload": i, "context": {}}))
            .await;
        notifier.next(30).await;
    }
    notifier.finish().await;

    let mut own_seen = Vec::new();
    for _ in 0..count {
        own_seen.push(next(&mut rx_own).await.payload.as_i64().unwrap());
    }
    // Handlers run concurrently, so arrival order may differ from sending order.
    own_seen.sort_unstable();
    assert_eq!(
        own_seen,
        (0..count).collect::<Vec<_>>(),
        "the lone pool gets them all"
    );
    // The shared pool: each message once, to one language or the other.
    let mut shared_seen = Vec::new();
    let mut by_python = 0;
    while shared_seen.len() < usize::try_from(count).unwrap() {
        tokio::select! {
            n = next(&mut rx_shared) => shared_seen.push(n.payload.as_i64().unwrap()),
            v = py.wait_event("notification", 20) => {
                by_python += 1;
                shared_seen.push(v["payload"].as_i64().unwrap());
            }
        }
    }
    shared_seen.sort_unstable();
    assert_eq!(shared_seen, (0..count).collect::<Vec<_>>(), "each once");
    assert!(
        by_python > 0 && by_python < count,
        "both languages took a share: python {by_python} of {count}"
    );
    for l in &listeners {
        l.stop().await;
        l.wait().await;
    }
    py.finish().await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_works_across_languages() {
    testkit::require_python!();
    let scope = Scope::new("mixrq");
    let url = broker_url();
    let opts = PeerOpts::new(&url, &scope.exchange);
    let t = scope.transport();

    // A Python listener requeues our notification once, then takes it.
    let topic = scope.topic("rq_py");
    let mut py = Peer::spawn(
        "listen",
        &[
            "--topic",
            &topic,
            "--requeue-first",
            "--count",
            "1",
            "--timeout",
            "60",
        ],
        &opts,
    );
    py.wait_event("ready", 60).await;
    Notifier::builder(&t)
        .driver(NotifyDriver::MessagingV2)
        .publisher_id("rs")
        .topics([topic.as_str()])
        .build()
        .unwrap()
        .info(&Context::new(), "e", &"requeue me")
        .await
        .unwrap();
    let requeued = py.wait_event("requeued", 30).await;
    let n = py.wait_event("notification", 30).await;
    assert_eq!(n["payload"], "requeue me");
    assert_eq!(n["metadata"]["message_id"], requeued["message_id"]);
    py.finish().await;

    // Our listener requeues a Python notification once, then takes it.
    let topic = scope.topic("rq_rs");
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let a2 = attempts.clone();
    let ep = NotificationEndpoint::builder()
        .on(Priority::Info, move |n: Notification| {
            let attempts = a2.clone();
            async move {
                let mut a = attempts.lock().unwrap();
                a.push(n.payload.clone());
                if a.len() == 1 {
                    NotificationResult::Requeue
                } else {
                    NotificationResult::Handled
                }
            }
        })
        .build()
        .unwrap();
    let l = NotificationListener::builder(&t, vec![Target::new(&topic)])
        .endpoint(ep)
        .allow_requeue(true)
        .build()
        .unwrap();
    l.start().await.unwrap();
    let mut notifier = Peer::spawn(
        "notify",
        &["--topic", &topic, "--publisher-id", "py"],
        &opts,
    );
    notifier
        .send(&json!({"priority": "info", "event_type": "e", "payload": "again", "context": {}}))
        .await;
    notifier.next(30).await;
    notifier.finish().await;
    for _ in 0..200 {
        if attempts.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    l.stop().await;
    l.wait().await;
    assert_eq!(*attempts.lock().unwrap(), [json!("again"), json!("again")]);
    t.cleanup().await;
}

/// With `rabbit_qos_prefetch_count` below `batch_size` a batch can never fill (messages are
/// acknowledged after their batch ran): Python caps the batch at the prefetch, and so do we.
/// Six queued notifications, prefetch 2, batch size 5: batches of 2, 2, 2 in both languages,
/// without a batch timeout (which would otherwise hang) and with one (which would otherwise
/// wait it out before every batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_capped_at_the_prefetch_as_in_python() {
    testkit::require_python!();
    const BATCH_TIMEOUT: Duration = Duration::from_secs(5);
    let scope = Scope::new("batchcap");
    let url = broker_url();
    let prefetch = [("rabbit_qos_prefetch_count", "2")];
    let t = scope.transport_with(&prefetch);
    let mut opts = PeerOpts::new(&url, &scope.exchange);
    opts.rabbit = &prefetch;
    let notifier = |topic: &str| {
        Notifier::builder(&t)
            .driver(NotifyDriver::MessagingV2)
            .publisher_id("rs")
            .topics([topic])
            .build()
            .unwrap()
    };
    for timeout in [None, Some(BATCH_TIMEOUT)] {
        // Python first: the notifications wait in the queue before the listener starts.
        let topic = scope.topic("py");
        let n = notifier(&topic);
        for i in 0..6 {
            n.info(&Context::new(), "e", &i).await.unwrap();
        }
        let mut args = vec!["--topic", &topic, "--batch-size", "5", "--count", "6"];
        let secs = timeout.map(|d| d.as_secs().to_string());
        if let Some(s) = &secs {
            args.extend(["--batch-timeout", s]);
        }
        let started = std::time::Instant::now();
        let mut py = Peer::spawn("listen", &args, &opts);
        let mut python_sizes = Vec::new();
        while python_sizes.iter().sum::<usize>() < 6 {
            let b = py.wait_event("batch", 60).await;
            python_sizes.push(b["messages"].as_array().unwrap().len());
        }
        let python_took = started.elapsed();
        py.finish().await;

        let topic = scope.topic("rs");
        let n = notifier(&topic);
        for i in 0..6 {
            n.info(&Context::new(), "e", &i).await.unwrap();
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let ep = NotificationEndpoint::builder()
            .on(Priority::Info, move |b: Vec<Notification>| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(b.len());
                }
            })
            .build()
            .unwrap();
        let mut b = NotificationListener::builder(&t, vec![Target::new(&topic)])
            .endpoint(ep)
            .batch_size(5);
        if let Some(d) = timeout {
            b = b.batch_timeout(d);
        }
        let l = b.build().unwrap();
        let started = std::time::Instant::now();
        l.start().await.unwrap();
        let mut rust_sizes = Vec::new();
        while rust_sizes.iter().sum::<usize>() < 6 {
            let size = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("no batch within 20 s (timeout {timeout:?}), after {rust_sizes:?}")
                })
                .unwrap();
            rust_sizes.push(size);
        }
        let rust_took = started.elapsed();
        l.stop().await;
        l.wait().await;
        println!(
            "batch timeout {timeout:?}: Python batches {python_sizes:?} in {python_took:.2?}, ours {rust_sizes:?} in {rust_took:.2?}"
        );
        assert_eq!(python_sizes, [2, 2, 2]);
        assert_eq!(rust_sizes, [2, 2, 2]);
        // Full batches are handed over at once, not after the batch timeout.
        assert!(rust_took < BATCH_TIMEOUT, "{rust_took:?}");
    }
    t.cleanup().await;
}
