//! Notifications on a real RabbitMQ: priorities, pools, requeue, batches, the v1 and v2
//! drivers and bad messages on the wire. Skipped without a broker unless `CI` is set.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use oslo_messaging::notify::{
    Notification, NotificationEndpoint, NotificationListener, NotificationResult, Notifier,
    NotifyDriver, Priority,
};
use oslo_messaging::{Context, Target, Transport};
use serde_json::{Value, json};
use support::rabbit::{Raw, Scope};
use support::{Seen, forwarding, notifier, stop_listener as stop};
use tokio::sync::mpsc;

async fn listener(
    scope: &Scope,
    t: &Transport,
    topic: &str,
    ep: NotificationEndpoint,
    pool: Option<&str>,
) -> NotificationListener {
    let mut b = NotificationListener::builder(t, vec![Target::new(topic)]);
    if let Some(p) = pool {
        scope.queue(p);
        b = b.pool(p);
    }
    let l = b.endpoint(ep).build().unwrap();
    l.start().await.unwrap();
    l
}

async fn next(rx: &mut Seen) -> Notification {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a notification within 10 s")
        .unwrap()
}

#[tokio::test]
async fn every_priority_arrives_with_its_fields() {
    testkit::require_broker!();
    let scope = Scope::new("prio");
    let t = scope.transport();
    let topic = scope.topic("prio");
    let (ep, mut rx) = forwarding(&Priority::ALL);
    let l = listener(&scope, &t, &topic, ep, None).await;
    let n = notifier(&t, &topic, "compute.host1");
    let ctx = Context::new()
        .with("user", "u1")
        .with("auth_token", "secret-token");
    n.audit(&ctx, "e.audit", &1).await.unwrap();
    n.debug(&ctx, "e.debug", &2).await.unwrap();
    n.info(&ctx, "e.info", &json!({"unicode": "ü☃"}))
        .await
        .unwrap();
    n.warn(&ctx, "e.warn", &4).await.unwrap();
    n.error(&ctx, "e.error", &5).await.unwrap();
    n.critical(&ctx, "e.critical", &6).await.unwrap();
    n.sample(&ctx, "e.sample", &7).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..7 {
        let x = next(&mut rx).await;
        assert_eq!(x.publisher_id.as_deref(), Some("compute.host1"));
        assert_eq!(x.context.get_str("user"), Some("u1"));
        assert_eq!(x.context.get("auth_token"), Some(&Value::Null));
        assert_eq!(x.message_id().unwrap().len(), 36);
        assert!(x.timestamp().unwrap().starts_with("20"));
        got.push((x.priority, x.event_type.unwrap(), x.payload));
    }
    got.sort_by_key(|(p, ..)| p.as_str());
    assert_eq!(
        got,
        [
            (Priority::Audit, "e.audit".to_owned(), json!(1)),
            (Priority::Critical, "e.critical".to_owned(), json!(6)),
            (Priority::Debug, "e.debug".to_owned(), json!(2)),
            (Priority::Error, "e.error".to_owned(), json!(5)),
            (
                Priority::Info,
                "e.info".to_owned(),
                json!({"unicode": "ü☃"})
            ),
            (Priority::Sample, "e.sample".to_owned(), json!(7)),
            (Priority::Warn, "e.warn".to_owned(), json!(4)),
        ]
    );
    stop(&l).await;
    t.cleanup().await;
}

#[tokio::test]
async fn notifications_sent_before_the_listener_wait_in_their_queue() {
    testkit::require_broker!();
    let scope = Scope::new("early");
    let t = scope.transport();
    let topic = scope.topic("early");
    // The notifier declares the `topic.priority` queue, as Python's does.
    notifier(&t, &topic, "early")
        .error(&Context::new(), "ev", &json!({"x": 1}))
        .await
        .unwrap();
    let raw = Raw::connect().await.unwrap();
    assert_eq!(raw.message_count(&format!("{topic}.error")).await, Some(1));
    raw.close().await;
    let (ep, mut rx) = forwarding(&[Priority::Error]);
    let l = listener(&scope, &t, &topic, ep, None).await;
    assert_eq!(next(&mut rx).await.payload, json!({"x": 1}));
    stop(&l).await;
    t.cleanup().await;
}

#[tokio::test]
async fn pools_get_their_own_copy_and_share_it_inside() {
    testkit::require_broker!();
    let scope = Scope::new("pools");
    let t = scope.transport();
    let topic = scope.topic("pools");
    let pool1 = format!("{topic}_pool1");
    let pool2 = format!("{topic}_pool2");
    let (e1, mut p1a) = forwarding(&[Priority::Info]);
    let (e2, mut p1b) = forwarding(&[Priority::Info]);
    let (e3, mut p2) = forwarding(&[Priority::Info]);
    let l1 = listener(&scope, &t, &topic, e1, Some(&pool1)).await;
    let l2 = listener(&scope, &t, &topic, e2, Some(&pool1)).await;
    let l3 = listener(&scope, &t, &topic, e3, Some(&pool2)).await;
    let n = notifier(&t, &topic, "p");
    for i in 0..10 {
        n.info(&Context::new(), "ev", &i).await.unwrap();
    }
    let mut in_pool2 = Vec::new();
    for _ in 0..10 {
        in_pool2.push(next(&mut p2).await.payload.as_i64().unwrap());
    }
    assert_eq!(in_pool2, (0..10).collect::<Vec<_>>());
    let mut in_pool1 = Vec::new();
    for _ in 0..10 {
        tokio::select! {
            Some(x) = p1a.recv() => in_pool1.push(("a", x.payload.as_i64().unwrap())),
            Some(x) = p1b.recv() => in_pool1.push(("b", x.payload.as_i64().unwrap())),
        }
    }
    let mut values: Vec<i64> = in_pool1.iter().map(|(_, v)| *v).collect();
    values.sort_unstable();
    assert_eq!(values, (0..10).collect::<Vec<_>>(), "each message once");
    assert!(
        in_pool1.iter().any(|(w, _)| *w == "a") && in_pool1.iter().any(|(w, _)| *w == "b"),
        "both members of pool1 took a share: {in_pool1:?}"
    );
    for l in [&l1, &l2, &l3] {
        stop(l).await;
    }
    // The notifier also filled the default queue, as Python's does.
    let raw = Raw::connect().await.unwrap();
    assert_eq!(raw.message_count(&format!("{topic}.info")).await, Some(10));
    raw.close().await;
    t.cleanup().await;
}

fn requeue_once(seen: Arc<Mutex<Vec<bool>>>) -> NotificationEndpoint {
    NotificationEndpoint::builder()
        .on(Priority::Info, move |_n: Notification| {
            let seen = seen.clone();
            async move {
                let mut s = seen.lock().unwrap();
                let first = s.is_empty();
                s.push(first);
                if first {
                    NotificationResult::Requeue
                } else {
                    NotificationResult::Handled
                }
            }
        })
        .build()
        .unwrap()
}

async fn wait_for(seen: &Mutex<Vec<bool>>, n: usize) {
    for _ in 0..200 {
        if seen.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn requeue_when_allowed_and_ack_when_not() {
    testkit::require_broker!();
    let scope = Scope::new("requeue");
    let t = scope.transport();
    for allow in [true, false] {
        let topic = scope.topic("requeue");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let l = NotificationListener::builder(&t, vec![Target::new(&topic)])
            .endpoint(requeue_once(seen.clone()))
            .allow_requeue(allow)
            .build()
            .unwrap();
        l.start().await.unwrap();
        notifier(&t, &topic, "p")
            .info(&Context::new(), "e", &1)
            .await
            .unwrap();
        wait_for(&seen, if allow { 2 } else { 1 }).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop(&l).await;
        let want: &[bool] = if allow { &[true, false] } else { &[true] };
        assert_eq!(*seen.lock().unwrap(), want, "allow_requeue={allow}");
        let raw = Raw::connect().await.unwrap();
        assert_eq!(
            raw.message_count(&format!("{topic}.info")).await,
            Some(0),
            "allow_requeue={allow}: acknowledged in the end"
        );
        raw.close().await;
    }
    t.cleanup().await;
}

#[tokio::test]
async fn batches_fill_up_or_time_out() {
    testkit::require_broker!();
    let scope = Scope::new("batch");
    let t = scope.transport();
    let topic = scope.topic("batch");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ep = NotificationEndpoint::builder()
        .on(Priority::Info, move |batch: Vec<Notification>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(batch.iter().map(|n| n.payload.clone()).collect::<Vec<_>>());
            }
        })
        .build()
        .unwrap();
    let l = NotificationListener::builder(&t, vec![Target::new(&topic)])
        .endpoint(ep)
        .batch_size(10)
        .batch_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    l.start().await.unwrap();
    let n = notifier(&t, &topic, "p");
    for i in 0..25 {
        n.info(&Context::new(), "e", &i).await.unwrap();
    }
    let mut sizes = Vec::new();
    let mut all = Vec::new();
    while all.len() < 25 {
        let batch = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a batch")
            .unwrap();
        sizes.push(batch.len());
        all.extend(batch);
    }
    assert_eq!(all, (0..25).map(|i| json!(i)).collect::<Vec<_>>());
    assert!(sizes.iter().all(|s| *s <= 10), "{sizes:?}");
    assert_eq!(sizes.last(), Some(&5), "the rest comes after the timeout");
    stop(&l).await;
    t.cleanup().await;
}

#[tokio::test]
async fn v1_and_v2_drivers_reach_the_same_listener() {
    testkit::require_broker!();
    let scope = Scope::new("v1v2");
    let t = scope.transport();
    let topic = scope.topic("v1v2");
    let (ep, mut rx) = forwarding(&[Priority::Warn]);
    let l = listener(&scope, &t, &topic, ep, None).await;
    for (driver, publisher) in [
        (NotifyDriver::Messaging, "v1"),
        (NotifyDriver::MessagingV2, "v2"),
    ] {
        Notifier::builder(&t)
            .driver(driver)
            .publisher_id(publisher)
            .topics([topic.as_str()])
            .build()
            .unwrap()
            .warn(&Context::new().with("k", "v"), "e", &publisher)
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        let n = next(&mut rx).await;
        assert_eq!(n.context.get_str("k"), Some("v"));
        got.push((n.publisher_id.unwrap(), n.payload));
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [
            ("v1".to_owned(), json!("v1")),
            ("v2".to_owned(), json!("v2"))
        ]
    );
    stop(&l).await;
    t.cleanup().await;
}

#[tokio::test]
async fn bad_notifications_are_dropped_and_the_next_one_handled() {
    testkit::require_broker!();
    let scope = Scope::new("badnote");
    let t = scope.transport();
    let topic = scope.topic("badnote");
    let (ep, mut rx) = forwarding(&[Priority::Info]);
    let l = listener(&scope, &t, &topic, ep, None).await;
    let raw = Raw::connect().await.unwrap();
    let key = format!("{topic}.info");
    for (content_type, body) in [
        (Some("application/json"), &b"{not json"[..]),
        (
            None,
            br#"{"priority": "INFO", "event_type": "x", "payload": 1}"#,
        ),
        (
            Some("application/json"),
            br#"{"oslo.version": "9.0", "oslo.message": "{}"}"#,
        ),
        (
            Some("application/json"),
            br#"{"priority": "LOUD", "event_type": "x", "payload": 1}"#,
        ),
    ] {
        raw.publish(&scope.exchange, &key, content_type, body).await;
    }
    notifier(&t, &topic, "p")
        .info(&Context::new(), "good", &1)
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await.event_type.as_deref(), Some("good"));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "nothing else was handled"
    );
    stop(&l).await;
    assert_eq!(
        raw.message_count(&key).await,
        Some(0),
        "nothing was requeued"
    );
    raw.close().await;
    t.cleanup().await;
}

/// A notification the broker keeps refusing (a full `reject-publish` queue among those it is
/// routed to) fails with a typed error in seconds, with `retry` unlimited.
#[tokio::test]
async fn a_notification_the_broker_keeps_refusing_fails_within_seconds() {
    testkit::require_broker!();
    let scope = Scope::new("nacknote");
    let t = scope.transport();
    let topic = scope.topic("nacknote");
    let n = notifier(&t, &topic, "p");
    n.info(&Context::new(), "e", &1).await.unwrap();
    let raw = Raw::connect().await.unwrap();
    let full = format!("{topic}_full");
    scope.queue(&full);
    raw.reject_publish_queue(&full, &scope.exchange, &format!("{topic}.info"), 0)
        .await;
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(30), n.info(&Context::new(), "e", &2))
        .await
        .expect("a nacked notification must not hang")
        .unwrap_err();
    let took = started.elapsed();
    println!("persistently nacked notification failed after {took:.2?}: {err}");
    assert_eq!(err.kind(), oslo_messaging::ErrorKind::DeliveryFailure);
    // The nack window (5 s) and a second of slack.
    assert!(took < Duration::from_secs(6), "{took:?}");
    raw.close().await;
    t.cleanup().await;
}
