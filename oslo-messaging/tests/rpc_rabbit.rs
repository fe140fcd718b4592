//! RPC on a real RabbitMQ: what `rpc_memory` proves on the memory transport, plus what only
//! a broker shows (message properties, compression, bad messages on the wire, failover, the
//! durable-mismatch fallback, authentication errors). Skipped without a broker unless `CI` is set.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use oslo_messaging::rpc::{Endpoint, NoArgs, Request, RpcClient, RpcError, RpcServer};
use oslo_messaging::{Config, Context, ErrorKind, Retry, Target, Transport, Version};
use serde_json::{Value, json};
use support::rabbit::{Raw, Scope};
use support::{Calls, LogBuffer, counting_endpoint, recording_endpoint, stop};
use testkit::broker::Broker;

fn ctx() -> Context {
    Context::new()
        .with("user", "alice")
        .with("request_id", "req-1")
}

/// Starts a server and has the scope delete its server queue.
async fn serve(scope: &Scope, t: &Transport, topic: &str, server: &str, ep: Endpoint) -> RpcServer {
    scope.queue(format!("{topic}.{server}"));
    let s = RpcServer::builder(t, Target::new(topic).with_server(server))
        .endpoint(ep)
        .build()
        .unwrap();
    s.start().await.unwrap();
    s
}

#[tokio::test]
async fn call_and_cast_carry_every_json_type() {
    testkit::require_broker!();
    let scope = Scope::new("json");
    let t = scope.transport();
    let topic = scope.topic("json");
    let calls = Calls::default();
    let s = serve(&scope, &t, &topic, "s1", recording_endpoint("s1", &calls)).await;
    let client = RpcClient::new(&t, Target::new(&topic));

    let big = "x".repeat(1 << 20);
    for value in [
        json!(null),
        json!(true),
        json!(-17),
        json!(1.5e300),
        json!("naïve ☃ \u{1F600} \"quoted\" \\ \n"),
        json!([1, "two", [3.0], {"four": null}]),
        json!({"nested": {"deep": [true, false]}, "empty": {}, "list": []}),
        json!(big),
    ] {
        let out: Value = client
            .call(&ctx(), "echo", &json!({ "value": value }))
            .await
            .unwrap();
        assert_eq!(out, value);
    }

    client
        .cast(&ctx(), "record", &json!({"value": 7}))
        .await
        .unwrap();
    // The one server handles the cast before answering the later call.
    let _: String = client.call(&ctx(), "whoami", &()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(calls.by("s1"), [json!(7)]);
    stop(&s).await;
    t.cleanup().await;
}

#[tokio::test]
async fn topic_calls_round_robin_and_server_calls_reach_one_server() {
    testkit::require_broker!();
    let scope = Scope::new("rr");
    let t = scope.transport();
    let topic = scope.topic("rr");
    let calls = Calls::default();
    let mut servers = Vec::new();
    for name in ["s1", "s2", "s3"] {
        servers.push(serve(&scope, &t, &topic, name, recording_endpoint(name, &calls)).await);
    }
    let client = RpcClient::new(&t, Target::new(&topic));
    let mut who = Vec::new();
    for i in 0..9 {
        who.push(
            client
                .call::<String>(&ctx(), "record", &json!({"value": i}))
                .await
                .unwrap(),
        );
    }
    for name in ["s1", "s2", "s3"] {
        assert_eq!(who.iter().filter(|w| *w == name).count(), 3, "{who:?}");
    }
    let direct = client.prepare().server("s2").build().unwrap();
    for _ in 0..4 {
        assert_eq!(
            direct.call::<String>(&ctx(), "whoami", &()).await.unwrap(),
            "s2"
        );
    }
    direct
        .cast(&ctx(), "record", &json!({"value": "direct"}))
        .await
        .unwrap();
    let _: String = direct.call(&ctx(), "whoami", &()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(calls.by("s2").contains(&json!("direct")));
    for s in &servers {
        stop(s).await;
    }
    t.cleanup().await;
}

#[tokio::test]
async fn fanout_cast_reaches_every_server() {
    testkit::require_broker!();
    let scope = Scope::new("fan");
    let t = scope.transport();
    let topic = scope.topic("fan");
    let calls = Calls::default();
    let mut servers = Vec::new();
    for name in ["a", "b", "c"] {
        servers.push(serve(&scope, &t, &topic, name, recording_endpoint(name, &calls)).await);
    }
    let client = RpcClient::new(&t, Target::new(&topic).with_fanout(true));
    client
        .cast(&ctx(), "record", &json!({"value": "hi"}))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while calls.len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for name in ["a", "b", "c"] {
        assert_eq!(calls.by(name), [json!("hi")], "{name}");
    }
    let err = client
        .call::<Value>(&ctx(), "whoami", &())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidTarget);
    for s in &servers {
        stop(s).await;
    }
    t.cleanup().await;
}

#[tokio::test]
async fn namespaces_versions_and_remote_errors() {
    testkit::require_broker!();
    let scope = Scope::new("ns");
    let t = scope.transport();
    let topic = scope.topic("ns");
    let ep = Endpoint::builder()
        .namespace("Name1")
        .version(Version::new(7, 5))
        .method("echo", |req: Request<Value>| async move {
            Ok::<_, RpcError>(req.args()["value"].clone())
        })
        .method("fail", |_req: Request<NoArgs>| async {
            Err::<(), _>(
                RpcError::new("InstanceNotFound", "Instance 42 could not be found.")
                    .with_module("nova.exception"),
            )
        })
        .build()
        .unwrap();
    let s = serve(&scope, &t, &topic, "s", ep).await;
    let base = RpcClient::new(&t, Target::new(&topic));
    let args = json!({"value": 1});
    let at = |ns: &str, v: &str| {
        base.prepare()
            .namespace(ns)
            .version(v.parse().unwrap())
            .build()
            .unwrap()
    };
    assert_eq!(
        at("Name1", "7.1")
            .call::<Value>(&ctx(), "echo", &args)
            .await
            .unwrap(),
        json!(1)
    );
    for (client, class) in [
        (at("Name1", "7.6"), "UnsupportedVersion"),
        (at("Other", "7.5"), "UnsupportedVersion"),
        (at("Name1", "7.0"), "NoSuchMethod"),
    ] {
        let method = if class == "NoSuchMethod" {
            "nope"
        } else {
            "echo"
        };
        let err = client
            .call::<Value>(&ctx(), method, &args)
            .await
            .unwrap_err();
        let r = err.remote_error().expect("a remote error");
        assert_eq!(
            (r.class(), r.module()),
            (class, "oslo_messaging.rpc.dispatcher")
        );
    }
    let err = at("Name1", "7.5")
        .call::<Value>(&ctx(), "fail", &())
        .await
        .unwrap_err();
    let r = err.remote_error().unwrap();
    assert_eq!(
        (r.class(), r.module(), r.message()),
        (
            "InstanceNotFound",
            "nova.exception",
            "Instance 42 could not be found."
        )
    );
    stop(&s).await;
    t.cleanup().await;
}

#[tokio::test]
async fn a_call_nobody_serves_times_out_and_at_least_once_fails_fast() {
    testkit::require_broker!();
    let scope = Scope::new("nobody");
    let t = scope.transport();
    let topic = scope.topic("nobody");
    let client = RpcClient::builder(&t, Target::new(&topic))
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = client
        .call::<Value>(&ctx(), "echo", &json!({"value": 1}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.to_string().contains("message ID"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Mandatory publishing: with no queue bound, the broker returns the message at once.
    let strict = client.prepare().at_least_once(true).build().unwrap();
    let started = Instant::now();
    let err = strict
        .call::<Value>(&ctx(), "echo", &json!({"value": 1}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Undeliverable, "{err}");
    assert_eq!(err.routing_key(), Some(topic.as_str()));
    assert_eq!(err.exchange(), Some(t.control_exchange()));
    assert!(started.elapsed() < Duration::from_millis(900));
    let err = strict
        .cast(&ctx(), "echo", &json!({"value": 1}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Undeliverable, "{err}");
    t.cleanup().await;
}

#[tokio::test]
async fn the_call_monitor_keeps_a_slow_call_alive() {
    testkit::require_broker!();
    let scope = Scope::new("monitor");
    let t = scope.transport();
    let topic = scope.topic("monitor");
    let s = serve(
        &scope,
        &t,
        &topic,
        "s",
        recording_endpoint("s", &Calls::default()),
    )
    .await;
    let client = RpcClient::builder(&t, Target::new(&topic))
        .timeout(Duration::from_secs(20))
        .call_monitor_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    // The server sends a heartbeat every second (half the monitor timeout; Python's
    // watchdog ignores monitor timeouts under 2 s), so a 4.5 s call outlives the 2 s monitor.
    let started = Instant::now();
    let out: f64 = client
        .call(&ctx(), "sleep", &json!({"seconds": 4.5}))
        .await
        .unwrap();
    assert!((out - 4.5).abs() < f64::EPSILON);
    assert!(started.elapsed() >= Duration::from_millis(4500));
    stop(&s).await;

    // With the server gone, the monitor gives up after about twice its timeout, long before
    // the call's own timeout.
    let started = Instant::now();
    let err = client
        .call::<Value>(&ctx(), "whoami", &())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    t.cleanup().await;
}

#[tokio::test]
async fn messages_carry_the_properties_python_sets() {
    testkit::require_broker!();
    let scope = Scope::new("props");
    let t = scope.transport();
    let topic = scope.topic("props");
    let raw = Raw::connect().await.unwrap();
    // The first cast declares the control exchange; a probe queue then sees the next ones.
    let client = RpcClient::builder(&t, Target::new(&topic))
        .timeout(Duration::from_secs(7))
        .build()
        .unwrap();
    client.cast(&ctx(), "warmup", &()).await.unwrap();
    let probe = format!("{topic}_probe");
    scope.queue(probe.clone());
    raw.probe(&probe, &scope.exchange, &topic).await;

    client
        .cast(&ctx(), "record", &json!({"value": "é"}))
        .await
        .unwrap();
    let m = raw.get(&probe).await;
    let p = &m.properties;
    assert_eq!(
        p.content_type().map(String::as_str),
        Some("application/json")
    );
    assert_eq!(p.content_encoding().map(String::as_str), Some("utf-8"));
    assert_eq!(p.delivery_mode(), Some(2));
    assert_eq!(p.priority(), Some(0));
    assert_eq!(p.expiration(), None);
    assert!(p.headers().is_some_and(|h| h.as_ref().is_empty()));
    let envelope: Value = serde_json::from_slice(&m.body).unwrap();
    assert_eq!(envelope["oslo.version"], "2.0");
    let msg: Value = serde_json::from_str(envelope["oslo.message"].as_str().unwrap()).unwrap();
    assert_eq!(msg["method"], "record");
    assert_eq!(msg["args"], json!({"value": "é"}));
    assert_eq!(msg["_context_user"], "alice");
    assert!(msg.get("_msg_id").is_none(), "casts carry no reply address");

    // A call's message expires with the call's timeout, in milliseconds.
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call::<Value>(&ctx(), "echo", &json!({})).await }
    });
    let m = raw.get(&probe).await;
    assert_eq!(m.properties.expiration().map(String::as_str), Some("7000"));
    let envelope: Value = serde_json::from_slice(&m.body).unwrap();
    let msg: Value = serde_json::from_str(envelope["oslo.message"].as_str().unwrap()).unwrap();
    let msg_id = msg["_msg_id"].as_str().unwrap();
    let reply_q = msg["_reply_q"].as_str().unwrap();
    assert_eq!(msg_id.len(), 32);
    assert!(reply_q.starts_with("reply_"));
    assert_eq!(msg["_timeout"], Value::Null);

    // Play the server by hand: garbage and a reply nobody waits for are dropped, then the
    // real reply completes the call.
    raw.publish("", reply_q, Some("application/json"), b"not json")
        .await;
    let reply = |id: &str, result: Value| {
        let inner = json!({"result": result, "failure": null, "ending": true, "_msg_id": id});
        json!({"oslo.version": "2.0", "oslo.message": inner.to_string()}).to_string()
    };
    raw.publish(
        "",
        reply_q,
        Some("application/json"),
        reply("ffffffffffffffffffffffffffffffff", json!(0)).as_bytes(),
    )
    .await;
    raw.publish(
        "",
        reply_q,
        Some("application/json"),
        reply(msg_id, json!(42)).as_bytes(),
    )
    .await;
    let out = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the call completes")
        .unwrap()
        .unwrap();
    assert_eq!(out, json!(42));
    raw.close().await;
    t.cleanup().await;
}

#[tokio::test]
async fn compressed_messages_are_sent_and_understood() {
    testkit::require_broker!();
    for (algorithm, header) in [("gzip", "application/x-gzip"), ("bz2", "application/x-bz2")] {
        let scope = Scope::new(algorithm);
        let t = scope.transport_with(&[("kombu_compression", algorithm)]);
        let topic = scope.topic(algorithm);
        let s = serve(
            &scope,
            &t,
            &topic,
            "s",
            recording_endpoint("s", &Calls::default()),
        )
        .await;
        let client = RpcClient::new(&t, Target::new(&topic));
        let payload = "compress me ".repeat(1000);
        let out: Value = client
            .call(&ctx(), "echo", &json!({ "value": payload }))
            .await
            .unwrap();
        assert_eq!(out, json!(payload));

        let raw = Raw::connect().await.unwrap();
        let probe = format!("{topic}_probe");
        scope.queue(probe.clone());
        raw.probe(&probe, &scope.exchange, &topic).await;
        client
            .cast(&ctx(), "record", &json!({"value": payload}))
            .await
            .unwrap();
        let m = raw.get(&probe).await;
        let seen = m.header("compression").unwrap_or_default();
        assert!(
            seen.contains(&format!("\"{header}\"")),
            "{algorithm}: {seen}"
        );
        assert!(m.body.len() < 2000, "{algorithm}: {} bytes", m.body.len());
        if algorithm == "gzip" {
            use std::io::Read;
            let mut text = String::new();
            flate2::read::ZlibDecoder::new(&m.body[..])
                .read_to_string(&mut text)
                .unwrap();
            assert!(text.contains("oslo.message"));
        }
        raw.close().await;
        stop(&s).await;
        t.cleanup().await;
    }
}

#[tokio::test]
async fn bad_messages_are_dropped_and_the_next_one_is_served() {
    testkit::require_broker!();
    let scope = Scope::new("bad");
    let t = scope.transport();
    let topic = scope.topic("bad");
    let count = Arc::new(AtomicUsize::new(0));
    let s = serve(&scope, &t, &topic, "s", counting_endpoint(&count, "value")).await;
    let raw = Raw::connect().await.unwrap();
    let good_request = br#"{"oslo.version": "2.0", "oslo.message": "{\"method\": \"echo\", \"args\": {\"value\": 1}}"}"#;
    let bad: [(Option<&str>, &[u8]); 7] = [
        (Some("application/json"), b"this is not json"),
        (Some("application/json"), b"\xff\xfe\x00garbage"),
        (None, good_request),
        (Some("text/plain"), good_request),
        (
            Some("application/json"),
            br#"{"oslo.version": "3.0", "oslo.message": "{\"method\": \"echo\", \"args\": {}}"}"#,
        ),
        (
            Some("application/json"),
            br#"{"oslo.version": "2.0", "oslo.message": "{\"args\": {}}"}"#,
        ),
        (Some("application/json"), b"[1, 2, 3]"),
    ];
    for (content_type, body) in bad {
        raw.publish(&scope.exchange, &topic, content_type, body)
            .await;
    }
    let client = RpcClient::builder(&t, Target::new(&topic))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let out: Value = client
        .call(&ctx(), "echo", &json!({"value": "after"}))
        .await
        .unwrap();
    assert_eq!(out, json!("after"));
    assert_eq!(count.load(Ordering::SeqCst), 1, "only the good call ran");
    // Nothing was requeued: the topic queue is empty.
    assert_eq!(raw.message_count(&topic).await, Some(0));
    raw.close().await;
    stop(&s).await;
    t.cleanup().await;
}

#[tokio::test]
async fn a_reply_to_a_missing_queue_does_not_stall_the_server() {
    testkit::require_broker!();
    let scope = Scope::new("noreply");
    let t = scope.transport_with(&[("kombu_missing_consumer_retry_timeout", "2")]);
    let topic = scope.topic("noreply");
    let count = Arc::new(AtomicUsize::new(0));
    let s = serve(&scope, &t, &topic, "s", counting_endpoint(&count, "value")).await;
    let raw = Raw::connect().await.unwrap();
    // A call whose reply queue does not exist (its client died before the reply).
    let orphan = br#"{"oslo.version": "2.0", "oslo.message": "{\"method\": \"echo\", \"args\": {\"value\": 1}, \"_msg_id\": \"0123456789abcdef0123456789abcdef\", \"_reply_q\": \"reply_gone_for_good\", \"_timeout\": null}"}"#;
    raw.publish(&scope.exchange, &topic, Some("application/json"), orphan)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Other callers are answered while the orphan reply is being retried.
    let client = RpcClient::builder(&t, Target::new(&topic))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = Instant::now();
    let out: Value = client
        .call(&ctx(), "echo", &json!({"value": 2}))
        .await
        .unwrap();
    assert_eq!(out, json!(2));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(count.load(Ordering::SeqCst), 2);
    raw.close().await;
    stop(&s).await;
    t.cleanup().await;
}

#[tokio::test]
async fn a_dead_first_host_fails_over_to_the_next() {
    testkit::require_broker!();
    let scope = Scope::new("failover");
    let Broker {
        host,
        port,
        user,
        password: pass,
        ..
    } = Broker::from_env();
    // Port 1 refuses connections; round-robin then reaches the real broker.
    let url = format!("rabbit://{user}:{pass}@{host}:1,{user}:{pass}@{host}:{port}/");
    let config = scope.config(&[
        ("kombu_failover_strategy", "round-robin"),
        ("rabbit_retry_interval", "1"),
    ]);
    let t = Transport::with_config(&url, &config).unwrap();
    let topic = scope.topic("failover");
    let s = serve(
        &scope,
        &t,
        &topic,
        "s",
        recording_endpoint("s", &Calls::default()),
    )
    .await;
    let client = RpcClient::builder(&t, Target::new(&topic))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    for i in 0..3 {
        let out: Value = client
            .call(&ctx(), "echo", &json!({ "value": i }))
            .await
            .unwrap();
        assert_eq!(out, json!(i));
    }
    stop(&s).await;
    t.cleanup().await;
}

#[tokio::test]
async fn a_call_to_an_unreachable_broker_gives_up_as_its_retry_says() {
    // No broker needed: port 1 refuses every connection. The first call must also set up its
    // reply queue, and that too must respect the call's retry budget rather than wait forever.
    let url = "rabbit://guest:guest@127.0.0.1:1/";
    let config = Config::builder()
        .option("oslo_messaging_rabbit", "rabbit_retry_interval", "1")
        .option("oslo_messaging_rabbit", "rabbit_retry_backoff", "0")
        .build()
        .unwrap();
    let t = Transport::with_config(url, &config).unwrap();
    let client = RpcClient::builder(&t, Target::new("nowhere"))
        .timeout(Duration::from_secs(3600))
        .retry(Retry::Times(1))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        client.call::<Value>(&ctx(), "echo", &json!({})),
    )
    .await
    .expect("the call must give up, not hang")
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeliveryFailure, "{err}");
    assert!(err.to_string().contains("after 1 tries"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    t.cleanup().await;
}

#[tokio::test]
async fn a_non_durable_exchange_from_elsewhere_makes_durable_servers_fall_back() {
    testkit::require_broker!();
    let scope = Scope::new("durable");
    let raw = Raw::connect().await.unwrap();
    // Another deployment declared the control exchange non-durable; we are configured for
    // durable queues. As in Python, the server then declares everything non-durable.
    raw.declare_exchange(&scope.exchange, "topic", false).await;
    let t = scope.transport_with(&[("amqp_durable_queues", "true")]);
    let topic = scope.topic("durable");
    let s = serve(
        &scope,
        &t,
        &topic,
        "s",
        recording_endpoint("s", &Calls::default()),
    )
    .await;
    let client = RpcClient::new(&t, Target::new(&topic));
    let out: Value = client
        .call(&ctx(), "echo", &json!({"value": "ok"}))
        .await
        .unwrap();
    assert_eq!(out, json!("ok"));
    assert!(
        raw.redeclare_matches(&topic, false, false, amqprs::FieldTable::new())
            .await,
        "the topic queue fell back to non-durable"
    );
    raw.close().await;
    stop(&s).await;
    t.cleanup().await;
}

#[tokio::test]
async fn a_wrong_password_is_refused_without_showing_it() {
    testkit::require_broker!();
    let logs = LogBuffer::default();
    let _guard = logs.capture_trace();

    let scope = Scope::new("auth");
    let Broker {
        host, port, user, ..
    } = Broker::from_env();
    let secret = format!("S3cr3t-{}", std::process::id());
    let url = format!("rabbit://{user}:{secret}@{host}:{port}/");
    let t = Transport::with_config(&url, &scope.config(&[])).unwrap();
    let client = RpcClient::builder(&t, Target::new("auth"))
        .retry(Retry::Times(1))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = client.cast(&ctx(), "x", &()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        matches!(
            err.kind(),
            ErrorKind::AccessRefused | ErrorKind::DeliveryFailure
        ),
        "{err:?}"
    );
    let mut chain = format!("{err} {err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push_str(&format!(" {s} {s:?}"));
        source = s.source();
    }
    assert!(
        chain.contains("ACCESS_REFUSED") || chain.contains("403"),
        "{chain}"
    );
    assert!(!chain.contains(&secret), "{chain}");
    assert!(!format!("{t:?} {:?}", t.url()).contains(&secret));
    t.cleanup().await;
    let logged = logs.text();
    assert!(
        !logged.is_empty(),
        "the driver logs its connection attempts"
    );
    assert!(!logged.contains(&secret), "{logged}");
    // A refusal is not an unreachable broker.
    assert!(logged.contains("refused the login"), "{logged}");
    assert!(!logged.contains("unreachable"), "{logged}");
    // What failed and why, once each.
    let text = err.to_string();
    assert_eq!(text.matches("ACCESS_REFUSED").count(), 1, "{text}");
}

#[tokio::test]
async fn transports_for_config_files_reach_the_broker_with_plain_login() {
    testkit::require_broker!();
    let scope = Scope::new("ini");
    let topic = scope.topic("ini");
    let Broker {
        host,
        port,
        user,
        password: pass,
        ..
    } = Broker::from_env();
    let ini = format!(
        "[DEFAULT]\ntransport_url = rabbit://{user}:{pass}@{host}:{port}/\ncontrol_exchange = {}\n\
         [oslo_messaging_rabbit]\nrabbit_qos_prefetch_count = 5\nrabbit_transient_queues_ttl = 60\n\
         rabbit_login_method = PLAIN\n",
        scope.exchange
    );
    let config = Config::from_ini_str(&ini).unwrap();
    let t = Transport::new(&config).unwrap();
    let s = serve(
        &scope,
        &t,
        &topic,
        "s",
        recording_endpoint("s", &Calls::default()),
    )
    .await;
    let client = RpcClient::new(&t, Target::new(&topic));
    let out: Value = client
        .call(&ctx(), "echo", &json!({"value": [1]}))
        .await
        .unwrap();
    assert_eq!(out, json!([1]));
    stop(&s).await;
    t.cleanup().await;
}

/// A cast the broker keeps refusing (`basic.nack` from a full queue with `overflow =
/// reject-publish`) fails with a typed error in seconds although `retry` is unlimited (Python
/// 18.3.1 hangs there); one it refuses for a moment (as a quorum queue does while it elects a
/// leader) is published again and goes through.
#[tokio::test]
async fn nacked_casts_are_sent_again_briefly_then_fail() {
    testkit::require_broker!();
    let scope = Scope::new("nack");
    let t = scope.transport();
    let topic = scope.topic("nack");
    let client = RpcClient::new(&t, Target::new(&topic));
    // Declares the exchange; no queue is bound yet, so the broker drops it.
    client.cast(&ctx(), "echo", &json!({})).await.unwrap();
    let raw = Raw::connect().await.unwrap();
    let full = format!("{topic}_full");
    scope.queue(&full);
    raw.reject_publish_queue(&full, &scope.exchange, &topic, 0)
        .await;
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        client.cast(&ctx(), "echo", &json!({})),
    )
    .await
    .expect("a nacked cast must not hang")
    .unwrap_err();
    let took = started.elapsed();
    println!("persistently nacked cast failed after {took:.2?}: {err}");
    assert_eq!(err.kind(), ErrorKind::DeliveryFailure);
    assert!(err.to_string().contains("refused"), "{err}");
    // The nack window (5 s) and a second of slack.
    assert!(took < Duration::from_secs(6), "{took:?}");

    // Full for 300 ms: the cast is nacked, sent again, and lands once there is room.
    let brief = format!("{topic}_brief");
    scope.queue(&brief);
    let key = format!("{topic}.s1");
    raw.reject_publish_queue(&brief, &scope.exchange, &key, 1)
        .await;
    raw.publish("", &brief, Some("application/json"), b"\"filler\"")
        .await;
    while raw.message_count(&brief).await != Some(1) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain = tokio::spawn({
        let brief = brief.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let other = Raw::connect().await.unwrap();
            let filler = other.get(&brief).await;
            other.close().await;
            filler.body
        }
    });
    let started = Instant::now();
    client
        .prepare()
        .server("s1")
        .build()
        .unwrap()
        .cast(&ctx(), "echo", &json!({"after": "nack"}))
        .await
        .expect("a briefly nacked cast goes through");
    println!(
        "briefly nacked cast confirmed after {:.2?}",
        started.elapsed()
    );
    assert_eq!(drain.await.unwrap(), b"\"filler\"");
    let landed = raw.get(&brief).await;
    assert!(
        String::from_utf8_lossy(&landed.body).contains("after"),
        "{landed:?}"
    );
    raw.close().await;
    t.cleanup().await;
}

/// A call whose request no queue takes yet (the server is still declaring its queues, as
/// after a broker restart) is sent again until one does, so it is answered once the server
/// is there instead of timing out; Python loses such a request. A cast keeps Python's
/// at-most-once: it is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_made_before_its_server_exists_is_answered_once_it_does() {
    testkit::require_broker!();
    let scope = Scope::new("early");
    let t = scope.transport();
    let topic = scope.topic("early");
    let client = RpcClient::builder(&t, Target::new(&topic))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // The exchange exists; no queue is bound to the topic yet.
    client
        .cast(&ctx(), "record", &json!({"value": "dropped"}))
        .await
        .unwrap();
    let pending = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .call::<Value>(&ctx(), "echo", &json!({"value": "early"}))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!pending.is_finished());
    let calls = Calls::default();
    let up = Instant::now();
    let s = serve(&scope, &t, &topic, "s1", recording_endpoint("s1", &calls)).await;
    let out = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("answered soon after the server is up")
        .unwrap()
        .unwrap();
    let took = up.elapsed();
    println!("a call made 1.5 s before its server started was answered {took:.2?} after it");
    assert_eq!(out, json!("early"));
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(calls.by("s1").is_empty(), "the early cast was dropped");
    stop(&s).await;
    t.cleanup().await;
}

/// `(ready, unacknowledged)` of `queue` on the test broker, from `rabbitmqctl` (which must
/// reach the broker of `OSLO_MESSAGING_TEST_URL`: the local one).
fn queue_counts(queue: &str) -> Option<(u64, u64)> {
    let vhost = Broker::from_env().vhost;
    let listing = testkit::broker::rabbitmqctl(&[
        "list_queues",
        "-p",
        &vhost,
        "name",
        "messages_ready",
        "messages_unacknowledged",
    ]);
    listing.lines().find_map(|l| {
        let mut f = l.split('\t');
        if f.next()? != queue {
            return None;
        }
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

/// oslo's at-most-once: a request is acknowledged on receipt, before its handler runs. A
/// backlog of 300 arrives at once and shares `basic.ack`s (`multiple`); with every handler
/// held (as many running as the pool allows, the rest waiting for it), the broker holds none
/// of them any more, neither ready nor unacknowledged (polled with `rabbitmqctl`; bound 30 s:
/// each run starts an Erlang VM, seconds on a busy machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_requests_is_acknowledged_before_it_is_handled() {
    testkit::require_broker!();
    let scope = Scope::new("ackburst");
    let t = scope.transport();
    let topic = scope.topic("ackburst");
    scope.queue(topic.clone());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (started, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let ep = {
        let (gate, started, done) = (gate.clone(), started.clone(), done.clone());
        Endpoint::builder()
            .method("hold", move |_req: Request<Value>| {
                let (gate, started, done) = (gate.clone(), started.clone(), done.clone());
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    let _permit = gate.acquire().await;
                    done.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, RpcError>(())
                }
            })
            .build()
            .unwrap()
    };
    // The queues exist; the backlog builds while no server consumes.
    let first = serve(
        &scope,
        &t,
        &topic,
        "s1",
        recording_endpoint("s1", &Calls::default()),
    )
    .await;
    stop(&first).await;
    let client = RpcClient::new(&t, Target::new(&topic));
    for _ in 0..300 {
        client.cast(&ctx(), "hold", &json!({})).await.unwrap();
    }
    assert_eq!(queue_counts(&topic), Some((300, 0)));
    let server = serve(&scope, &t, &topic, "s1", ep).await;
    let pool = usize::try_from(Config::default().default.executor_thread_pool_size).unwrap();
    let since = Instant::now();
    let settled = loop {
        let counts = queue_counts(&topic);
        if started.load(Ordering::SeqCst) == pool && counts == Some((0, 0)) {
            break since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "still unacknowledged: {counts:?}, {} handlers started",
            started.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "300 requests at once: the broker holds none {:.0} ms after the server started ({pool} handlers held)",
        settled.as_secs_f64() * 1000.0
    );
    assert_eq!(done.load(Ordering::SeqCst), 0);
    gate.add_permits(1000);
    let since = Instant::now();
    while done.load(Ordering::SeqCst) < 300 {
        assert!(since.elapsed() < Duration::from_secs(10), "not all handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(&server).await;
    t.cleanup().await;
}
