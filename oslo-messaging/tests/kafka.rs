//! The Kafka notification driver on a real Kafka-protocol broker (tansu, one per test), against
//! Python oslo.messaging 18.3.1's Kafka driver (on confluent-kafka) and against itself.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use oslo_messaging::notify::{
    Notification, NotificationEndpoint, NotificationResult, NotifyDriver,
};
use oslo_messaging::{
    Context, ErrorKind, NotificationListener, Notifier, Priority, Target, Transport,
};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use serde_json::{Value, json};
use support::{PRIORITIES, Seen, forwarding, notifier, stop_listener};
use testkit::kafka::Tansu;
use testkit::python::{Peer, PeerOpts};

/// A broker with the priority topics of `topic`, `partitions` each.
fn broker_with(topic: &str, partitions: u32) -> Tansu {
    let broker = Tansu::start();
    broker.create_priority_topics(topic, partitions);
    broker
}

async fn next(rx: &mut Seen, secs: u64) -> Notification {
    tokio::time::timeout(Duration::from_secs(secs), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("a notification within {secs} s"))
        .unwrap()
}

/// Nothing more arrives within `secs`.
async fn nothing_more(rx: &mut Seen, secs: u64) {
    if let Ok(Some(n)) = tokio::time::timeout(Duration::from_secs(secs), rx.recv()).await {
        panic!("unexpected notification {:?}", n.event_type);
    }
}

/// A started Rust listener on `topic`, in `pool` when given.
async fn rust_listener(
    t: &Transport,
    topic: &str,
    pool: Option<&str>,
) -> (NotificationListener, Seen) {
    let (ep, rx) = forwarding(&Priority::ALL);
    let mut b = NotificationListener::builder(t, vec![Target::new(topic)]).endpoint(ep);
    if let Some(pool) = pool {
        b = b.pool(pool);
    }
    let l = b.build().unwrap();
    l.start().await.unwrap();
    (l, rx)
}

fn peer_opts(url: &str) -> PeerOpts<'_> {
    PeerOpts::new(url, "openstack")
}

/// A Python listener peer on `topic` that stops after `total` notifications, once ready.
async fn python_listener(url: &str, topic: &str, total: usize, pool: Option<&str>) -> Peer {
    let total = total.to_string();
    let mut args = vec!["--topic", topic, "--count", &total, "--timeout", "90"];
    if let Some(pool) = pool {
        args.extend(["--pool", pool]);
    }
    let mut listener = Peer::spawn("listen", &args, &peer_opts(url));
    listener.wait_event("ready", 60).await;
    listener
}

/// Python notifies one notification per notifier method with `driver`.
async fn python_notifies(url: &str, topic: &str, driver: &str) {
    let publisher = format!("py.{driver}");
    let args = [
        "--topic",
        topic,
        "--publisher-id",
        &publisher,
        "--driver",
        driver,
    ];
    let mut peer = Peer::spawn("notify", &args, &peer_opts(url));
    for (method, _) in PRIORITIES {
        peer.send(&json!({
            "priority": method,
            "event_type": format!("test.{method}"),
            "payload": {"method": method, "list": [1, "ü", 2.5, null]},
            "context": {"user": "u1", "request_id": "req-1"},
        }))
        .await;
        assert_eq!(peer.next(30).await, json!({"ok": true}));
    }
    peer.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_notifications_reach_a_rust_listener_at_every_priority() {
    testkit::require_python!();
    testkit::require_kafka!();
    let topic = testkit::unique("pyk");
    let broker = broker_with(&topic, 1);
    let url = broker.url("");
    let t = Transport::from_url(&url).unwrap();
    let (l, mut rx) = rust_listener(&t, &topic, None).await;
    // Python's Kafka driver ignores the driver's version: both send the same envelope.
    for driver in ["messaging", "messagingv2"] {
        python_notifies(&url, &topic, driver).await;
        let mut got = Vec::new();
        for _ in 0..PRIORITIES.len() {
            let n = next(&mut rx, 30).await;
            assert_eq!(
                n.publisher_id.as_deref(),
                Some(format!("py.{driver}").as_str())
            );
            assert_eq!(n.context.get_str("user"), Some("u1"));
            assert_eq!(n.context.get_str("request_id"), Some("req-1"));
            assert_eq!(n.message_id().unwrap().len(), 36);
            assert_eq!(n.payload["list"], json!([1, "ü", 2.5, null]));
            got.push((n.event_type.unwrap(), n.priority.as_str().to_owned()));
        }
        got.sort();
        let mut want: Vec<_> = PRIORITIES
            .iter()
            .map(|(m, p)| (format!("test.{m}"), (*p).to_owned()))
            .collect();
        want.sort();
        assert_eq!(got, want, "{driver}");
    }
    stop_listener(&l).await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_notifications_reach_a_python_listener_at_every_priority() {
    testkit::require_python!();
    testkit::require_kafka!();
    let topic = testkit::unique("rsk");
    let broker = broker_with(&topic, 1);
    let url = broker.url("");
    let mut listener = python_listener(&url, &topic, 2 * PRIORITIES.len(), None).await;
    let t = Transport::from_url(&url).unwrap();
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
    let mut got = Vec::new();
    for _ in 0..2 * PRIORITIES.len() {
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
    let mut want: Vec<_> = ["rs.messaging", "rs.messagingv2"]
        .iter()
        .flat_map(|p| {
            PRIORITIES
                .iter()
                .map(move |(m, prio)| ((*p).to_owned(), format!("test.{m}"), (*prio).to_owned()))
        })
        .collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(listener.finish().await.last().unwrap()["reason"], "count");
    t.cleanup().await;
}

/// The raw bodies on `topic` from the start, `n` of them.
fn raw_bodies(broker: &Tansu, topic: &str, n: usize) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", testkit::unique("raw"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} raw messages on {topic}",
            out.len()
        );
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(m.payload().unwrap_or_default().to_vec());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_bytes_equal_pythons_for_the_same_notification() {
    testkit::require_python!();
    testkit::require_kafka!();
    let topic = testkit::unique("bytes");
    let broker = broker_with(&topic, 1);
    let url = broker.url("");
    python_notifies(&url, &topic, "messagingv2").await;
    let python = raw_bodies(&broker, &format!("{topic}.info"), 1).remove(0);
    // Python's bytes, decoded and encoded again by us: the same bytes.
    let got = oslo_messaging::wire::decode_kafka_notification(&python).unwrap();
    let mut n = oslo_messaging::wire::Notification::new(
        got.event_type.clone().unwrap(),
        got.priority.clone().unwrap(),
        got.payload.clone(),
    );
    n.message_id = got.message_id.as_str().unwrap().to_owned();
    n.timestamp = got.timestamp.as_str().unwrap().to_owned();
    n.publisher_id = got.publisher_id.clone();
    n.context = got.context.clone();
    let ours = oslo_messaging::wire::encode_kafka_notification(&n);
    assert_eq!(
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(&python),
        "our bytes for Python's notification"
    );
    // And what our notifier sends through the broker has that layout.
    let t = Transport::from_url(&url).unwrap();
    notifier(&t, &topic, "rs")
        .info(
            &Context::new().with("user", "u1"),
            "test.info",
            &json!({"k": "ü"}),
        )
        .await
        .unwrap();
    t.cleanup().await;
    let bodies = raw_bodies(&broker, &format!("{topic}.info"), 2);
    let ours = String::from_utf8(bodies[1].clone()).unwrap();
    assert!(
        ours.starts_with(r#"{"oslo.version": "2.0", "oslo.message": "{\"message_id\": \""#),
        "{ours}"
    );
    for part in [
        r#"\"event_type\": \"test.info\", \"priority\": \"INFO\", \"payload\": {\"k\": \"\\u00fc\"}, \"timestamp\": \""#,
        r#"\", \"_context\": {\"user\": \"u1\"}}"}"#,
    ] {
        assert!(ours.contains(part), "{part} in {ours}");
    }
    assert!(
        !ours.contains("_unique_id"),
        "Python's Kafka driver sends none: {ours}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_each_get_every_notification_and_one_pool_shares_them() {
    testkit::require_python!();
    testkit::require_kafka!();
    let topic = testkit::unique("pools");
    // Two partitions, so that two listeners of one pool both have a share.
    let broker = broker_with(&topic, 2);
    let url = broker.url("");
    let total = 40;
    // Pool a: a Rust listener; pool b: a Python listener; pool shared: one of each.
    let t = Transport::from_url(&url).unwrap();
    let (la, mut a) = rust_listener(&t, &topic, Some("a")).await;
    let mut b = python_listener(&url, &topic, total, Some("b")).await;
    let (ls, mut shared_rs) = rust_listener(&t, &topic, Some("shared")).await;
    let mut shared_py = python_listener(&url, &topic, total, Some("shared")).await;
    // The group rebalances as its second member joins: let it settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n = notifier(&t, &topic, "rs");
    for i in 0..total {
        n.info(&Context::new(), "pools.test", &json!({"i": i}))
            .await
            .unwrap();
        // Spread over time, so that both partitions get some.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut in_a = BTreeSet::new();
    for _ in 0..total {
        in_a.insert(next(&mut a, 30).await.payload["i"].as_i64().unwrap());
    }
    assert_eq!(in_a.len(), total);
    let mut in_b = BTreeSet::new();
    for _ in 0..total {
        in_b.insert(
            b.wait_event("notification", 30).await["payload"]["i"]
                .as_i64()
                .unwrap(),
        );
    }
    assert_eq!(in_b, in_a, "each pool gets every notification");
    // The shared pool: together, each notification once.
    let mut shared = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Ok(Some(n)) = tokio::time::timeout(Duration::from_secs(3), shared_rs.recv()).await {
        shared.push(n.payload["i"].as_i64().unwrap());
    }
    let by_rust = shared.len();
    let mut by_python = 0;
    while shared.len() < total && Instant::now() < deadline {
        shared.push(
            shared_py.wait_event("notification", 30).await["payload"]["i"]
                .as_i64()
                .unwrap(),
        );
        by_python += 1;
    }
    println!("shared pool: {by_rust} by the Rust listener, {by_python} by the Python one");
    let once: BTreeSet<_> = shared.iter().copied().collect();
    assert_eq!(shared.len(), total, "none twice: {shared:?}");
    assert_eq!(once, in_a, "none lost");
    assert!(
        by_rust > 0 && by_python > 0,
        "both listeners of the pool get a share"
    );
    nothing_more(&mut a, 1).await;
    drop((b, shared_py));
    for l in [la, ls] {
        stop_listener(&l).await;
    }
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_a_notification_is_skipped_and_the_next_handled() {
    testkit::require_kafka!();
    let topic = testkit::unique("bad");
    let broker = broker_with(&topic, 1);
    let t = Transport::from_url(&broker.url("")).unwrap();
    let (l, mut rx) = rust_listener(&t, &topic, None).await;
    let producer: ThreadedProducer<_> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    for bad in [
        &b"not json"[..],
        b"[1, 2]",
        br#"{"_context": 5}"#,
        b"\xff\xfe",
    ] {
        producer
            .send(BaseRecord::<(), [u8]>::to(&format!("{topic}.info")).payload(bad))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    notifier(&t, &topic, "rs")
        .info(&Context::new(), "after.bad", &json!(1))
        .await
        .unwrap();
    let n = next(&mut rx, 30).await;
    assert_eq!(n.event_type.as_deref(), Some("after.bad"));
    nothing_more(&mut rx, 1).await;
    stop_listener(&l).await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_over_kafka_is_a_clear_error() {
    testkit::require_kafka!();
    let t = Transport::from_url("kafka://127.0.0.1:1/").unwrap();
    let client = oslo_messaging::RpcClient::builder(&t, Target::new("t"))
        .build()
        .unwrap();
    let err = client
        .cast(&Context::new(), "m", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(err.to_string().contains("notifications only"), "{err}");
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_refuses_connections_hangs_nothing() {
    testkit::require_kafka!();
    // A port nothing listens on.
    let port = testkit::kafka::free_port();
    let t = Transport::from_url(&format!("kafka://127.0.0.1:{port}/")).unwrap();
    let started = Instant::now();
    notifier(&t, "refused", "rs")
        .info(&Context::new(), "lost", &json!(1))
        .await
        .unwrap();
    let sent = started.elapsed();
    let started = Instant::now();
    let (l, _rx) = rust_listener(&t, "refused", None).await;
    let listening = started.elapsed();
    let started = Instant::now();
    stop_listener(&l).await;
    t.cleanup().await;
    let cleaned = started.elapsed();
    println!("refused broker: notify {sent:?}, listen {listening:?}, stop and cleanup {cleaned:?}");
    assert!(
        sent < Duration::from_secs(2),
        "notify queued at once: {sent:?}"
    );
    assert!(
        listening < Duration::from_secs(8),
        "listen waited at most 5 s: {listening:?}"
    );
    assert!(
        cleaned < Duration::from_secs(25),
        "cleanup bounded: {cleaned:?}"
    );
}

/// Sends notifications `during` 0 to 9 while the broker is out of reach: `notify` hands them
/// to librdkafka's queue and does not wait.
async fn notify_ten_during_the_fault(n: &Notifier) {
    let started = Instant::now();
    for i in 0..10 {
        n.info(&Context::new(), "during", &json!(i)).await.unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "notify does not wait for the broker"
    );
}

/// Receives the ten notifications of [`notify_ten_during_the_fault`], each within `secs`:
/// none may be lost, and at most ten repeats are allowed. Returns how many came twice.
async fn the_ten_during_the_fault(rx: &mut Seen, secs: u64) -> usize {
    let mut got = BTreeSet::new();
    let mut twice = 0;
    while got.len() < 10 {
        let n = next(rx, secs).await;
        assert_eq!(n.event_type.as_deref(), Some("during"), "{:?}", n.payload);
        if !got.insert(n.payload.as_i64().unwrap()) {
            twice += 1;
        }
    }
    assert_eq!(got, (0..10).collect());
    assert!(twice <= 10, "at most one redelivery each: {twice}");
    twice
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_sent_while_the_broker_is_unreachable_arrive_when_it_is_back() {
    testkit::require_kafka!();
    let topic = testkit::unique("blip");
    // Clients reach the broker through a fault proxy (the broker advertises the proxy).
    let port = testkit::kafka::free_port();
    let proxy = testkit::proxy::Proxy::start(&format!("127.0.0.1:{port}")).await;
    let broker = Tansu::start_on(port, proxy.port);
    broker.create_priority_topics(&topic, 1);
    // One record per batch: tansu 0.6 answers a fetch that starts inside a multi-record
    // batch with wrong records (each with the last one's offset and value), and after the
    // outage the listener resumes where it committed, which may be inside the batch of the
    // notifications queued meanwhile. A real Kafka has no such bug.
    let t = Transport::from_url(&broker.url("?producer_batch_size=1")).unwrap();
    let (l, mut rx) = rust_listener(&t, &topic, None).await;
    let n = notifier(&t, &topic, "rs");
    n.info(&Context::new(), "before", &json!(0)).await.unwrap();
    assert_eq!(
        next(&mut rx, 30).await.event_type.as_deref(),
        Some("before")
    );
    // The network goes: nothing flows, then every connection is reset.
    proxy.blackhole(true);
    proxy.reset();
    notify_ten_during_the_fault(&n).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.blackhole(false);
    let back = Instant::now();
    // None may be lost. One may come twice: a batch whose commit failed while the group's
    // coordinator was out of reach is handed up anyway (Python drops it), and is read again
    // by whoever resumes at the last commit that got through.
    let twice = the_ten_during_the_fault(&mut rx, 60).await;
    println!(
        "all 10 arrived {:?} after the network came back; lost 0, {twice} delivered twice",
        back.elapsed()
    );
    stop_listener(&l).await;
    t.cleanup().await;
}

/// A listener that forwards every notification and asks for each to be requeued.
fn requeueing() -> (NotificationEndpoint, Seen) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let ep = NotificationEndpoint::builder()
        .on(Priority::Info, move |n: Notification| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(n);
                NotificationResult::Requeue
            }
        })
        .build()
        .unwrap();
    (ep, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_resumes_where_it_committed_and_requeue_is_not_redelivery() {
    testkit::require_kafka!();
    let topic = testkit::unique("commit");
    let broker = broker_with(&topic, 1);
    let t = Transport::from_url(&broker.url("")).unwrap();
    let n = notifier(&t, &topic, "rs");
    // As Python: offsets are committed when fetched, so a requeue is only logged.
    let (ep, mut rx) = requeueing();
    let l = NotificationListener::builder(&t, vec![Target::new(&topic)])
        .endpoint(ep)
        .pool("p")
        .allow_requeue(true)
        .build()
        .unwrap();
    l.start().await.unwrap();
    for i in 0..5 {
        n.info(&Context::new(), "first", &json!(i)).await.unwrap();
    }
    for _ in 0..5 {
        assert_eq!(next(&mut rx, 30).await.event_type.as_deref(), Some("first"));
    }
    nothing_more(&mut rx, 2).await;
    stop_listener(&l).await;
    // Sent while the pool has no listener: its next listener starts from the pool's
    // committed offsets, so it gets these and none of the first five again.
    for i in 0..5 {
        n.info(&Context::new(), "while away", &json!(i))
            .await
            .unwrap();
    }
    let (l, mut rx) = rust_listener(&t, &topic, Some("p")).await;
    let mut got = BTreeSet::new();
    for _ in 0..5 {
        let n = next(&mut rx, 30).await;
        assert_eq!(n.event_type.as_deref(), Some("while away"));
        got.insert(n.payload.as_i64().unwrap());
    }
    assert_eq!(got, (0..5).collect());
    nothing_more(&mut rx, 1).await;
    stop_listener(&l).await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_nothing_and_the_pool_resumes_where_it_committed() {
    testkit::require_kafka!();
    let topic = testkit::unique("restart");
    // Topics, offsets and committed positions are kept in a file, as a real broker's are.
    let port = testkit::kafka::free_port();
    let mut broker = Tansu::durable(port, port);
    broker.create_priority_topics(&topic, 1);
    let t = Transport::from_url(&broker.url("")).unwrap();
    let (l, mut rx) = rust_listener(&t, &topic, Some("p")).await;
    let n = notifier(&t, &topic, "rs");
    for i in 0..5 {
        n.info(&Context::new(), "before", &json!(i)).await.unwrap();
    }
    for _ in 0..5 {
        assert_eq!(
            next(&mut rx, 30).await.event_type.as_deref(),
            Some("before")
        );
    }
    // The broker dies; notifications sent meanwhile wait in the producer's queue.
    broker.kill();
    notify_ten_during_the_fault(&n).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.restart();
    let back = Instant::now();
    let twice = the_ten_during_the_fault(&mut rx, 90).await;
    println!(
        "broker restart: all 10 arrived {:?} after it was back; lost 0, {twice} delivered twice",
        back.elapsed()
    );
    nothing_more(&mut rx, 2).await;
    stop_listener(&l).await;
    // The pool's committed position survived the restart: its next listener gets only what
    // was sent while it had none.
    n.info(&Context::new(), "after", &json!(0)).await.unwrap();
    let (l, mut rx) = rust_listener(&t, &topic, Some("p")).await;
    assert_eq!(next(&mut rx, 30).await.event_type.as_deref(), Some("after"));
    nothing_more(&mut rx, 2).await;
    stop_listener(&l).await;
    t.cleanup().await;
}

/// A broker that requires SCRAM-SHA-512 logins (user `alice`, password `s3cret`), behind a
/// TLS front that requires client certificates; its priority topics of `topic` exist.
struct SecureBroker {
    certs: testkit::node::Certs,
    /// The client key, encrypted with `keypass`.
    encrypted_key: std::path::PathBuf,
    front: testkit::tls::TlsFront,
    _broker: Tansu,
    dir: std::path::PathBuf,
}

impl SecureBroker {
    async fn start(topic: &str) -> Self {
        let dir = std::env::temp_dir().join(testkit::unique("kafka-tls"));
        let certs = testkit::node::Certs::make_for(&dir, "client", "DNS:localhost,IP:127.0.0.1");
        let encrypted_key = certs.encrypted_client_key("keypass");
        let port = testkit::kafka::free_port();
        let front = testkit::tls::TlsFront::start(
            0,
            &format!("127.0.0.1:{port}"),
            &certs.server_cert,
            &certs.server_key,
            Some(&certs.ca),
        )
        .await;
        let mut broker = Tansu::durable(port, front.port);
        broker.create_user("alice", "s3cret");
        broker.create_priority_topics(topic, 1);
        broker.require_authentication();
        Self {
            certs,
            encrypted_key,
            front,
            _broker: broker,
            dir,
        }
    }

    /// A `kafka://` URL for the front, as `user:password`, with CA `ca`, and the client key
    /// and its password.
    fn url(&self, credentials: &str, ca: &std::path::Path, key_password: &str) -> String {
        format!(
            "kafka://{credentials}@127.0.0.1:{}/?security_protocol=SASL_SSL\
             &sasl_mechanism=SCRAM-SHA-512&ssl_cafile={}&ssl_client_cert_file={}\
             &ssl_client_key_file={}&ssl_client_key_password={key_password}",
            self.front.port,
            ca.display(),
            self.certs.client_cert.display(),
            self.encrypted_key.display(),
        )
    }

    fn good_url(&self) -> String {
        self.url("alice:s3cret", &self.certs.ca, "keypass")
    }
}

impl Drop for SecureBroker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_scram_over_tls_with_a_client_certificate_works_both_ways_with_python() {
    testkit::require_python!();
    testkit::require_kafka!();
    let topic = testkit::unique("sasl");
    let broker = SecureBroker::start(&topic).await;
    let url = broker.good_url();
    let t = Transport::from_url(&url).unwrap();
    let (l, mut rx) = rust_listener(&t, &topic, None).await;
    // Python, given the same URL (its query sets [oslo_messaging_kafka] as ours does).
    python_notifies(&url, &topic, "messagingv2").await;
    let mut got = BTreeSet::new();
    for _ in 0..PRIORITIES.len() {
        let n = next(&mut rx, 30).await;
        assert_eq!(n.publisher_id.as_deref(), Some("py.messagingv2"));
        got.insert(n.event_type.unwrap());
    }
    assert_eq!(got.len(), PRIORITIES.len());
    // And Rust to Python (in a pool of its own: both listeners get it).
    let mut py = python_listener(&url, &topic, 1, Some("py")).await;
    notifier(&t, &topic, "rs")
        .info(&Context::new(), "rs.secure", &json!({"tls": true}))
        .await
        .unwrap();
    let seen = py.wait_event("notification", 60).await;
    assert_eq!(seen["event_type"], "rs.secure", "{seen}");
    assert_eq!(seen["payload"], json!({"tls": true}));
    assert_eq!(
        next(&mut rx, 30).await.event_type.as_deref(),
        Some("rs.secure")
    );
    assert_eq!(py.finish().await.last().unwrap()["reason"], "count");
    stop_listener(&l).await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_or_tls_handshake_is_a_clear_error_without_secrets() {
    testkit::require_kafka!();
    let topic = testkit::unique("refused");
    let broker = SecureBroker::start(&topic).await;
    let cases = [
        (
            "a wrong password",
            broker.url("alice:wrong-pw", &broker.certs.ca, "keypass"),
            ErrorKind::AccessRefused,
        ),
        (
            "an unknown user",
            broker.url("mallory:wrong-pw", &broker.certs.ca, "keypass"),
            ErrorKind::AccessRefused,
        ),
        (
            "a CA that did not sign the brokers' certificate",
            broker.url("alice:s3cret", &broker.certs.other_ca, "keypass"),
            ErrorKind::Transport,
        ),
        (
            "a wrong client key password",
            broker.url("alice:s3cret", &broker.certs.ca, "wrong-pw"),
            ErrorKind::Configuration,
        ),
    ];
    for (what, url, kind) in cases {
        let t = Transport::from_url(&url).unwrap();
        let started = Instant::now();
        let l = NotificationListener::builder(&t, vec![Target::new(&topic)])
            .endpoint(forwarding(&Priority::ALL).0)
            .build()
            .unwrap();
        let err = l.start().await.unwrap_err();
        let took = started.elapsed();
        println!("{what}: {:?} after {took:?}: {err}", err.kind());
        assert_eq!(err.kind(), kind, "{what}: {err}");
        assert!(took < Duration::from_secs(8), "{what}: refused in {took:?}");
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains("wrong-pw"), "{what}: {shown}");
            assert!(!shown.contains("s3cret"), "{what}: {shown}");
            assert!(!shown.contains("keypass"), "{what}: {shown}");
        }
        t.cleanup().await;
    }
}
