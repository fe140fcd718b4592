//! The broker topology we declare is Python's, option for option.
//!
//! For each set of `[oslo_messaging_rabbit]` options, Python oslo.messaging 18.3.1 and our
//! library each get a fresh virtual host and do the same things there: an RPC server on a
//! target, a call to it, a fanout cast, a notification and a pooled notification listener.
//! Then `rabbitmqctl list_queues`, `list_exchanges` and `list_bindings` of the two virtual
//! hosts must be identical (random UUIDs in names aside).
//!
//! Needs `rabbitmqctl` for the test broker (so a local broker); skipped without it unless `CI`
//! is set.

mod support;

use std::process::Command;
use std::time::Duration;

use oslo_messaging::notify::{
    Notification, NotificationEndpoint, NotificationListener, NotifyDriver, Priority,
};
use oslo_messaging::rpc::{Endpoint, Request, RpcClient, RpcError, RpcServer};
use oslo_messaging::{Config, Context, Notifier, Target, Transport};
use serde_json::{Value, json};
use support::python::{Peer, PeerOpts, python_client, python_server};
use testkit::broker::Broker;

const EXCHANGE: &str = "topo";
const TOPIC: &str = "topo_t";
const SERVER: &str = "s1";
const NOTIFY_TOPIC: &str = "topo_n";
const POOL: &str = "topo_pool";

fn rabbitmqctl(args: &[&str]) -> Option<String> {
    let out = Command::new("rabbitmqctl").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether rabbitmqctl can manage the test broker; fails instead when `CI` is set.
fn rabbitmqctl_available() -> bool {
    let ok = rabbitmqctl(&["-q", "list_vhosts"]).is_some();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but rabbitmqctl cannot reach the test broker"
        );
        eprintln!("SKIPPED: rabbitmqctl cannot reach the test broker");
    }
    ok
}

/// A virtual host of its own, deleted on drop.
struct Vhost(String);

impl Vhost {
    fn new(name: &str) -> Self {
        let v = format!("oslo_topo_{name}_{}", std::process::id());
        let Broker { user, .. } = Broker::from_env();
        assert!(
            rabbitmqctl(&["-q", "add_vhost", &v]).is_some(),
            "add_vhost {v}"
        );
        assert!(
            rabbitmqctl(&["-q", "set_permissions", "-p", &v, &user, ".*", ".*", ".*"]).is_some()
        );
        Self(v)
    }

    fn url(&self) -> String {
        let Broker {
            host,
            port,
            user,
            password: pass,
            ..
        } = Broker::from_env();
        format!("rabbit://{user}:{pass}@{host}:{port}/{}", self.0)
    }

    /// Queues, exchanges and bindings, one sorted line each, UUIDs replaced.
    fn snapshot(&self) -> Vec<String> {
        let v = self.0.as_str();
        let mut lines = Vec::new();
        for (what, args) in [
            (
                "queue",
                vec![
                    "list_queues",
                    "-p",
                    v,
                    "name",
                    "type",
                    "durable",
                    "auto_delete",
                    "exclusive",
                    "arguments",
                ],
            ),
            (
                "exchange",
                vec![
                    "list_exchanges",
                    "-p",
                    v,
                    "name",
                    "type",
                    "durable",
                    "auto_delete",
                    "internal",
                    "arguments",
                ],
            ),
            (
                "binding",
                vec![
                    "list_bindings",
                    "-p",
                    v,
                    "source_name",
                    "source_kind",
                    "destination_name",
                    "destination_kind",
                    "routing_key",
                    "arguments",
                ],
            ),
        ] {
            let mut full = vec!["-q", "--no-table-headers"];
            full.extend(args);
            let out = rabbitmqctl(&full).unwrap_or_else(|| panic!("rabbitmqctl {what}"));
            for line in out.lines().filter(|l| !l.trim().is_empty()) {
                lines.push(format!("{what}\t{}", normalise(line)));
            }
        }
        lines.sort();
        lines
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["-q", "delete_vhost", &self.0]);
    }
}

/// Replaces 32-hex-digit UUIDs (fanout and reply queue names) with `<uuid>`.
fn normalise(line: &str) -> String {
    let bytes = line.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..]
            .iter()
            .take_while(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            .count();
        if run == 32 {
            out.push_str("<uuid>");
            i += 32;
        } else {
            let ch = line[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// What Python declares for `options`, while its processes run.
async fn python_topology(options: &[(&str, &str)]) -> Vec<String> {
    let vhost = Vhost::new("py");
    let url = vhost.url();
    let opts = PeerOpts {
        rabbit: options,
        ..PeerOpts::new(&url, EXCHANGE)
    };
    let server = python_server(TOPIC, SERVER, &opts).await;
    let mut listener = Peer::spawn(
        "listen",
        &["--topic", NOTIFY_TOPIC, "--pool", POOL, "--timeout", "120"],
        &opts,
    );
    listener.wait_event("ready", 60).await;
    let out = python_client(
        TOPIC,
        &[
            json!({"op": "call", "method": "echo", "args": {"data": 1}, "timeout": 30}),
            json!({"op": "cast", "method": "echo", "args": {"data": 2}, "fanout": true}),
        ],
        &opts,
    )
    .await;
    assert_eq!(out[0]["ok"], 1, "{out:?}");
    let mut notifier = Peer::spawn(
        "notify",
        &["--topic", NOTIFY_TOPIC, "--publisher-id", "p"],
        &opts,
    );
    notifier
        .send(&json!({"priority": "info", "event_type": "e", "payload": 1, "context": {}}))
        .await;
    assert_eq!(notifier.next(30).await, json!({"ok": true}));
    notifier.finish().await;
    listener.wait_event("notification", 30).await;
    let snapshot = vhost.snapshot();
    server.finish().await;
    listener.finish().await;
    snapshot
}

/// What we declare for `options`, doing the same things.
async fn rust_topology(options: &[(&str, &str)]) -> Vec<String> {
    let vhost = Vhost::new("rs");
    let mut b = Config::builder().control_exchange(EXCHANGE);
    for (k, v) in options {
        b = b.option("oslo_messaging_rabbit", k, v);
    }
    let t = Transport::with_config(&vhost.url(), &b.build().unwrap()).unwrap();
    let server = RpcServer::builder(&t, Target::new(TOPIC).with_server(SERVER))
        .endpoint(
            Endpoint::builder()
                .method("echo", |req: Request<Value>| async move {
                    Ok::<_, RpcError>(req.args()["data"].clone())
                })
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    server.start().await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
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
    let listener = NotificationListener::builder(&t, vec![Target::new(NOTIFY_TOPIC)])
        .endpoint(ep.build().unwrap())
        .pool(POOL)
        .build()
        .unwrap();
    listener.start().await.unwrap();
    // Python's client and notifier are transports of their own; so are ours.
    let client_t = Transport::with_config(&vhost.url(), t.config()).unwrap();
    let client = RpcClient::new(&client_t, Target::new(TOPIC));
    let one: Value = client
        .call(&Context::new(), "echo", &json!({"data": 1}))
        .await
        .unwrap();
    assert_eq!(one, json!(1));
    client
        .prepare()
        .fanout(true)
        .build()
        .unwrap()
        .cast(&Context::new(), "echo", &json!({"data": 2}))
        .await
        .unwrap();
    Notifier::builder(&client_t)
        .driver(NotifyDriver::MessagingV2)
        .publisher_id("p")
        .topics([NOTIFY_TOPIC])
        .build()
        .unwrap()
        .info(&Context::new(), "e", &1)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the notification")
        .unwrap();
    let snapshot = vhost.snapshot();
    server.stop().await;
    server.wait().await;
    listener.stop().await;
    listener.wait().await;
    client_t.cleanup().await;
    t.cleanup().await;
    snapshot
}

async fn compare(options: &[(&str, &str)]) {
    let (py, rs) = tokio::join!(python_topology(options), rust_topology(options));
    assert!(
        py.iter().any(|l| l.starts_with("queue\treply_<uuid>")),
        "the snapshot sees the reply queue: {py:#?}"
    );
    if std::env::var_os("SHOW_TOPOLOGY").is_some() {
        eprintln!("{}", py.join("\n"));
    }
    assert_eq!(
        rs, py,
        "options {options:?}: ours (left) and Python's (right) differ"
    );
}

macro_rules! topology_test {
    ($name:ident, $options:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            testkit::require_python!();
            if !rabbitmqctl_available() {
                return;
            }
            compare($options).await;
        }
    };
}

topology_test!(defaults, &[]);
topology_test!(
    durable_queues_and_a_short_ttl,
    &[
        ("amqp_durable_queues", "true"),
        ("rabbit_transient_queues_ttl", "600")
    ]
);
topology_test!(auto_delete, &[("amqp_auto_delete", "true")]);
topology_test!(ha_queues, &[("rabbit_ha_queues", "true")]);
topology_test!(
    quorum_queues_with_limits,
    &[
        ("rabbit_quorum_queue", "true"),
        ("rabbit_quorum_delivery_limit", "5"),
        ("rabbit_quorum_max_memory_length", "100"),
        ("rabbit_quorum_max_memory_bytes", "100000")
    ]
);
topology_test!(
    transient_quorum_queues,
    &[
        ("rabbit_quorum_queue", "true"),
        ("rabbit_transient_quorum_queue", "true")
    ]
);
topology_test!(
    stream_fanout,
    &[
        ("rabbit_quorum_queue", "true"),
        ("rabbit_transient_quorum_queue", "true"),
        ("rabbit_stream_fanout", "true"),
        ("rabbit_qos_prefetch_count", "10")
    ]
);
