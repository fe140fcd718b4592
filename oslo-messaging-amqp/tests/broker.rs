//! The AMQP client against a real RabbitMQ (`OSLO_MESSAGING_TEST_URL`, default
//! `rabbit://guest:guest@127.0.0.1:5672/`). Every queue and exchange name is unique.

use std::time::Duration;

use oslo_messaging_amqp::*;
use testkit::unique;

fn params() -> ConnectParams {
    let b = testkit::broker::Broker::from_env();
    let login = Login::Plain {
        user: b.user,
        password: b.password,
    };
    ConnectParams::new(b.host, b.port, login)
        .vhost(b.vhost)
        .heartbeat(10)
        .heartbeat_rate(3)
        .connection_name("oslo-messaging-amqp-tests")
        .product("oslo-messaging tests")
}

/// Exclusive: gone with the test's connection, so nothing is left on the broker.
fn test_queue() -> QueueOptions {
    QueueOptions::default().exclusive(true).auto_delete(true)
}

async fn declare(ch: &Channel, queue: &str) -> Result<QueueState, Error> {
    ch.queue_declare(queue, test_queue(), FieldTable::new())
        .await
}

fn json_props() -> Properties {
    Properties {
        content_type: Some("application/json".into()),
        content_encoding: Some("utf-8".into()),
        headers: Some(FieldTable::new()),
        delivery_mode: Some(2),
        priority: Some(0),
        ..Properties::default()
    }
}

#[tokio::test]
async fn publish_confirm_consume_ack() {
    testkit::require_broker!();
    let conn = Connection::open(&params()).await.unwrap();
    let ch = conn.channel().await.unwrap();
    ch.confirm_select().await.unwrap();
    let q = unique("amqp_test");
    assert_eq!(declare(&ch, &q).await.unwrap().name, q);

    // Many publishes in flight at once, each waiting for its own confirm.
    let mut pending = Vec::new();
    for i in 0..200u32 {
        let ch = ch.clone();
        let q = q.clone();
        pending.push(tokio::spawn(async move {
            ch.publish(
                "",
                &q,
                false,
                &json_props(),
                format!("{{\"n\": {i}}}").as_bytes(),
            )
            .await
        }));
    }
    for p in pending {
        assert_eq!(p.await.unwrap().unwrap(), Confirm::Ack);
    }

    let consumer = conn.channel().await.unwrap();
    let mut rx = consumer
        .consume(&q, "", false, FieldTable::new())
        .await
        .unwrap();
    let mut seen = 0;
    while seen < 200 {
        let Some(ConsumerEvent::Delivery(_, d)) = rx.recv().await else {
            panic!("consumer ended")
        };
        assert_eq!(d.properties, json_props());
        assert!(d.body.starts_with(b"{\"n\": "));
        consumer.ack(d.delivery_tag).await.unwrap();
        seen += 1;
    }
    conn.close().await;
    assert!(matches!(conn.error(), Some(Error::Closed)));
}

#[tokio::test]
async fn mandatory_unroutable_publish_is_returned() {
    testkit::require_broker!();
    let conn = Connection::open(&params()).await.unwrap();
    let ch = conn.channel().await.unwrap();
    ch.confirm_select().await.unwrap();
    let routed_q = unique("amqp_routed");
    declare(&ch, &routed_q).await.unwrap();
    let nowhere = unique("reply_nowhere");
    // Interleave routable and unroutable mandatory publishes: each gets its own verdict.
    let props = json_props();
    let (a, b, c) = tokio::join!(
        ch.publish("", &routed_q, true, &props, b"1"),
        ch.publish("", &nowhere, true, &props, b"2"),
        ch.publish("", &routed_q, true, &props, b"3"),
    );
    assert_eq!(a.unwrap(), Confirm::Ack);
    assert_eq!(
        b.unwrap(),
        Confirm::Returned {
            code: 312,
            text: "NO_ROUTE".into()
        }
    );
    assert_eq!(c.unwrap(), Confirm::Ack);
    // Not mandatory: accepted and dropped.
    assert_eq!(
        ch.publish("", &nowhere, false, &json_props(), b"4")
            .await
            .unwrap(),
        Confirm::Ack
    );
    conn.close().await;
}

#[tokio::test]
async fn a_channel_error_kills_only_that_channel() {
    testkit::require_broker!();
    let conn = Connection::open(&params()).await.unwrap();
    let ch = conn.channel().await.unwrap();
    let q = unique("amqp_precondition");
    declare(&ch, &q).await.unwrap();
    let mismatched: FieldTable = [("x-expires", FieldValue::I32(1000))].into_iter().collect();
    let err = ch
        .queue_declare(&q, test_queue(), mismatched)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(406), "{err}");
    assert!(!err.is_connection_level());
    // The channel is dead: publishing on it fails at once instead of killing the connection.
    assert_eq!(
        ch.publish("", &q, false, &json_props(), b"x")
            .await
            .unwrap_err()
            .to_string(),
        err.to_string()
    );
    let other = conn.channel().await.unwrap();
    let missing = other
        .queue_declare(
            &unique("amqp_missing"),
            QueueOptions::default().passive(true),
            FieldTable::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some(404));
    let fresh = conn.channel().await.unwrap();
    declare(&fresh, &unique("amqp_after")).await.unwrap();
    assert!(conn.error().is_none());
    // Channel numbers go round rather than reusing the number of a channel just closed, and
    // handles tell channels apart by identity.
    assert_eq!(
        [ch.id(), other.id(), fresh.id()],
        [ch.id(), ch.id() + 1, ch.id() + 2]
    );
    assert!(ch.same(&ch.clone()));
    assert!(!ch.same(&other));
    conn.close().await;
}

#[tokio::test]
async fn cancelled_rpcs_leave_the_channel_usable() {
    testkit::require_broker!();
    let conn = Connection::open(&params()).await.unwrap();
    let ch = conn.channel().await.unwrap();
    for _ in 0..20 {
        // Dropped right after sending: the reply must be discarded, not given to the next RPC.
        let name = unique("amqp_cancel");
        let fut = declare(&ch, &name);
        let _ = tokio::time::timeout(Duration::from_micros(1), fut).await;
    }
    let q = unique("amqp_cancel_after");
    assert_eq!(declare(&ch, &q).await.unwrap().name, q);
    conn.close().await;
}

#[tokio::test]
async fn large_bodies_span_frames() {
    testkit::require_broker!();
    let conn = Connection::open(&params()).await.unwrap();
    let ch = conn.channel().await.unwrap();
    ch.confirm_select().await.unwrap();
    let q = unique("amqp_large");
    declare(&ch, &q).await.unwrap();
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        ch.publish("", &q, false, &json_props(), &body)
            .await
            .unwrap(),
        Confirm::Ack
    );
    let mut rx = ch.consume(&q, "", true, FieldTable::new()).await.unwrap();
    let Some(ConsumerEvent::Delivery(_, d)) = rx.recv().await else {
        panic!("no delivery")
    };
    assert_eq!(d.body, body);
    conn.close().await;
}

#[tokio::test]
async fn wrong_password_is_a_typed_authentication_failure() {
    testkit::require_broker!();
    let mut p = params();
    p.login = Login::Plain {
        user: "guest".into(),
        password: "definitely-wrong".into(),
    };
    let err = Connection::open(&p).await.unwrap_err();
    assert!(matches!(err, Error::AuthenticationFailed(_)), "{err:?}");
    assert!(err.is_fatal());
    assert!(!err.to_string().contains("definitely-wrong"));
}

#[tokio::test]
async fn amqplain_login_works() {
    testkit::require_broker!();
    let mut p = params();
    if let Login::Plain { user, password } = p.login.clone() {
        p.login = Login::AmqPlain { user, password };
    }
    let conn = Connection::open(&p).await.unwrap();
    assert!(conn.server_property("version").is_some());
    conn.close().await;
}

#[tokio::test]
async fn unknown_vhost_is_refused() {
    testkit::require_broker!();
    let mut p = params();
    p.vhost = unique("no_such_vhost");
    let err = Connection::open(&p).await.unwrap_err();
    assert!(err.is_fatal(), "{err:?}");
}

#[tokio::test]
async fn a_peer_that_never_speaks_amqp_times_out() {
    testkit::require_broker!();
    // Accepts TCP connections and then says nothing, like a paused broker.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let mut p = params();
    p.host = "127.0.0.1".into();
    p.port = port;
    p.connect_timeout = Duration::from_millis(500);
    let start = std::time::Instant::now();
    let err = Connection::open(&p).await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout("the AMQP handshake")),
        "{err:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    hold.abort();
}

#[tokio::test]
async fn refused_connections_are_connect_errors() {
    testkit::require_broker!();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut p = params();
    p.host = "127.0.0.1".into();
    p.port = port;
    let err = Connection::open(&p).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    // The I/O error behind it is there for callers that want its kind.
    let io = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .expect("the I/O error");
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn broker_cancel_ends_the_consumer() {
    testkit::require_broker!();
    let conn = Connection::open(&params()).await.unwrap();
    let ch = conn.channel().await.unwrap();
    let q = unique("amqp_cancelled");
    ch.queue_declare(&q, QueueOptions::default(), FieldTable::new())
        .await
        .unwrap();
    let mut rx = ch.consume(&q, "", false, FieldTable::new()).await.unwrap();
    let admin = conn.channel().await.unwrap();
    assert_eq!(admin.queue_delete(&q, false, false).await.unwrap(), 0);
    assert!(matches!(rx.recv().await, Some(ConsumerEvent::Cancelled(_))));
    assert!(rx.recv().await.is_none());
    conn.close().await;
}

/// The consumer count and ready messages of `queue`, by a passive declare.
async fn queue_counts(ch: &Channel, queue: &str) -> (u32, u32) {
    let q = ch
        .queue_declare(
            queue,
            QueueOptions::default().passive(true),
            FieldTable::new(),
        )
        .await
        .unwrap();
    (q.consumer_count, q.message_count)
}

#[tokio::test]
async fn dropping_the_consumer_cancels_it() {
    testkit::require_broker!();
    let conn = Connection::open(&params()).await.unwrap();
    let ch = conn.channel().await.unwrap();
    ch.confirm_select().await.unwrap();
    let q = unique("amqp_drop");
    // Not auto-delete (that would delete it with its last consumer); exclusive, so it goes
    // with the connection.
    ch.queue_declare(
        &q,
        QueueOptions::default().exclusive(true),
        FieldTable::new(),
    )
    .await
    .unwrap();
    let props = json_props();
    let consumer = conn.channel().await.unwrap();
    let mut rx = consumer
        .consume(&q, "", false, FieldTable::new())
        .await
        .unwrap();
    assert_eq!(
        ch.publish("", &q, false, &props, b"{}").await.unwrap(),
        Confirm::Ack
    );
    let Some(ConsumerEvent::Delivery(_, d)) = rx.recv().await else {
        panic!("a delivery")
    };
    consumer.ack(d.delivery_tag).await.unwrap();
    // Dropped: the consumer must be cancelled, so the next message waits in the queue
    // instead of going round between the broker and a consumer nobody reads.
    drop(rx);
    assert_eq!(
        ch.publish("", &q, false, &props, b"{}").await.unwrap(),
        Confirm::Ack
    );
    let started = std::time::Instant::now();
    let mut counts = queue_counts(&ch, &q).await;
    while counts != (0, 1) && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        counts = queue_counts(&ch, &q).await;
    }
    println!(
        "consumer cancelled and message waiting after {:.2?}",
        started.elapsed()
    );
    assert_eq!(counts, (0, 1), "(consumers, ready messages)");
    // The channel still works: a new consumer gets the message.
    let mut rx = consumer
        .consume(&q, "", false, FieldTable::new())
        .await
        .unwrap();
    let Some(ConsumerEvent::Delivery(_, d)) = rx.recv().await else {
        panic!("a delivery")
    };
    consumer.ack(d.delivery_tag).await.unwrap();
    conn.close().await;
}

#[tokio::test]
async fn a_cancelled_confirm_select_still_waits_for_confirms() {
    testkit::require_broker!();
    let conn = Connection::open(&params()).await.unwrap();
    let ch = conn.channel().await.unwrap();
    // Polled once (which hands the request over) and dropped before the broker's select-ok.
    tokio::select! {
        biased;
        r = ch.confirm_select() => panic!("completed without the broker's reply: {r:?}"),
        () = std::future::ready(()) => {}
    }
    // A mandatory publish to nowhere: only a channel in confirm mode waits for the broker
    // (and so sees the return); a channel that is not would say Ack at once.
    let got = ch
        .publish("", &unique("amqp_nowhere"), true, &json_props(), b"{}")
        .await
        .unwrap();
    assert!(
        matches!(got, Confirm::Returned { code: 312, .. }),
        "{got:?}"
    );
    conn.close().await;
}
