//! Notification behaviour on the memory transport, porting the intent of oslo's
//! `tests/notify/test_notifier.py`, `test_listener.py`, `test_dispatcher.py` and the functional
//! `NotifyTestCase`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use oslo_messaging::notify::{
    Delivery, Notification, NotificationEndpoint, NotificationFilter, NotificationListener,
    NotificationResult, NotificationStream, Notifier, NotifyDriver, Priority,
};
use oslo_messaging::{Config, Context, ErrorKind, Retry, State, Target, Transport};
use serde_json::{Value, json};
use support::{Seen, forwarding, forwarding_through, stop_listener as stop};
use tokio::sync::mpsc;

async fn listener(
    t: &Transport,
    topics: &[&str],
    ep: NotificationEndpoint,
    pool: Option<&str>,
) -> NotificationListener {
    let mut b = NotificationListener::builder(t, topics.iter().map(|t| Target::new(*t)).collect());
    if let Some(p) = pool {
        b = b.pool(p);
    }
    let l = b.endpoint(ep).build().unwrap();
    l.start().await.unwrap();
    l
}

async fn next(rx: &mut Seen) -> Notification {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a notification")
        .unwrap()
}

fn notifier(t: &Transport, publisher: &str) -> Notifier {
    Notifier::builder(t)
        .driver(NotifyDriver::MessagingV2)
        .publisher_id(publisher)
        .build()
        .unwrap()
}

/// `NotifyTestCase::test_simple`.
#[tokio::test]
async fn simple_notification_arrives_with_its_fields() {
    let t = Transport::memory();
    let (ep, mut rx) = forwarding(&[Priority::Info]);
    let l = listener(&t, &["notifications"], ep, None).await;
    let ctx = Context::new()
        .with("user", "u1")
        .with("auth_token", "secret-token");
    notifier(&t, "compute.host1")
        .info(&ctx, "test", &json!("Hello World!"))
        .await
        .unwrap();
    let n = next(&mut rx).await;
    assert_eq!(n.priority, Priority::Info);
    assert_eq!(n.event_type.as_deref(), Some("test"));
    assert_eq!(n.payload, json!("Hello World!"));
    assert_eq!(n.publisher_id.as_deref(), Some("compute.host1"));
    assert_eq!(n.context.get_str("user"), Some("u1"));
    assert_eq!(
        n.context.get("auth_token"),
        Some(&Value::Null),
        "contexts are redacted"
    );
    assert_eq!(n.context.get("client_timeout"), Some(&Value::Null));
    assert_eq!(n.message_id().unwrap().len(), 36);
    assert!(n.timestamp().unwrap().starts_with("20"));
    stop(&l).await;
}

/// `NotifyTestCase::test_all_categories`.
#[tokio::test]
async fn every_priority_reaches_its_handler() {
    let t = Transport::memory();
    let (ep, mut rx) = forwarding(&Priority::ALL);
    let l = listener(&t, &["notifications"], ep, None).await;
    let n = notifier(&t, "p");
    let c = Context::new();
    n.audit(&c, "e", &1).await.unwrap();
    n.debug(&c, "e", &2).await.unwrap();
    n.info(&c, "e", &3).await.unwrap();
    n.warn(&c, "e", &4).await.unwrap();
    n.warning(&c, "e", &5).await.unwrap();
    n.error(&c, "e", &6).await.unwrap();
    n.critical(&c, "e", &7).await.unwrap();
    n.sample(&c, "e", &8).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..8 {
        let x = next(&mut rx).await;
        got.push((x.priority, x.payload.as_i64().unwrap()));
    }
    got.sort_by_key(|(_, v)| *v);
    assert_eq!(
        got,
        [
            (Priority::Audit, 1),
            (Priority::Debug, 2),
            (Priority::Info, 3),
            (Priority::Warn, 4),
            (Priority::Warn, 5),
            (Priority::Error, 6),
            (Priority::Critical, 7),
            (Priority::Sample, 8)
        ]
    );
    stop(&l).await;
}

/// `test_multiple_topics`, `test_independent_topics`.
#[tokio::test]
async fn listeners_get_only_their_topics() {
    let t = Transport::memory();
    let (ep_a, mut a) = forwarding(&[Priority::Info]);
    let (ep_b, mut b) = forwarding(&[Priority::Info]);
    let (ep_ab, mut ab) = forwarding(&[Priority::Info]);
    let la = listener(&t, &["topic_a"], ep_a, None).await;
    let lb = listener(&t, &["topic_b"], ep_b, Some("pool_b")).await;
    let lab = listener(&t, &["topic_a", "topic_b"], ep_ab, Some("pool_ab")).await;
    let to_a = Notifier::builder(&t)
        .driver(NotifyDriver::MessagingV2)
        .publisher_id("pa")
        .topics(["topic_a"])
        .build()
        .unwrap();
    let to_b = Notifier::builder(&t)
        .driver(NotifyDriver::MessagingV2)
        .publisher_id("pb")
        .topics(["topic_b"])
        .build()
        .unwrap();
    to_a.info(&Context::new(), "ev", &"a").await.unwrap();
    to_b.info(&Context::new(), "ev", &"b").await.unwrap();
    assert_eq!(next(&mut a).await.payload, json!("a"));
    assert_eq!(next(&mut b).await.payload, json!("b"));
    let mut both = vec![next(&mut ab).await.payload, next(&mut ab).await.payload];
    both.sort_by_key(ToString::to_string);
    assert_eq!(both, [json!("a"), json!("b")]);
    for l in [&la, &lb, &lab] {
        stop(l).await;
    }
    assert!(a.try_recv().is_err() && b.try_recv().is_err());
}

/// `test_multiple_servers` and `test_listener.py::TestListener::test_two_pools_three_listener`.
#[tokio::test]
async fn pools_get_their_own_copy_and_share_it_inside() {
    let t = Transport::memory();
    let (e1, mut p1a) = forwarding(&[Priority::Info]);
    let (e2, mut p1b) = forwarding(&[Priority::Info]);
    let (e3, mut p2) = forwarding(&[Priority::Info]);
    let l1 = listener(&t, &["n"], e1, Some("pool1")).await;
    let l2 = listener(&t, &["n"], e2, Some("pool1")).await;
    let l3 = listener(&t, &["n"], e3, Some("pool2")).await;
    let n = Notifier::builder(&t)
        .driver(NotifyDriver::MessagingV2)
        .publisher_id("p")
        .topics(["n"])
        .build()
        .unwrap();
    for i in 0..10 {
        n.info(&Context::new(), "ev", &i).await.unwrap();
    }
    let mut pool2 = Vec::new();
    for _ in 0..10 {
        pool2.push(next(&mut p2).await.payload.as_i64().unwrap());
    }
    assert_eq!(pool2, (0..10).collect::<Vec<_>>());
    let mut pool1 = Vec::new();
    for _ in 0..10 {
        tokio::select! {
            Some(x) = p1a.recv() => pool1.push(("a", x.payload.as_i64().unwrap())),
            Some(x) = p1b.recv() => pool1.push(("b", x.payload.as_i64().unwrap())),
        }
    }
    assert_eq!(
        pool1.iter().filter(|(w, _)| *w == "a").count(),
        5,
        "{pool1:?}"
    );
    assert_eq!(
        pool1.iter().filter(|(w, _)| *w == "b").count(),
        5,
        "{pool1:?}"
    );
    for l in [&l1, &l2, &l3] {
        stop(l).await;
    }
    // The notifier also filled the default queue, as Python's does.
    assert_eq!(t.memory_handle().unwrap().queue_depth("n.info"), Some(10));
}

#[tokio::test]
async fn notifications_sent_before_the_listener_wait_for_it() {
    let t = Transport::memory();
    notifier(&t, "early")
        .error(&Context::new(), "ev", &json!({"x": 1}))
        .await
        .unwrap();
    let (ep, mut rx) = forwarding(&[Priority::Error]);
    let l = listener(&t, &["notifications"], ep, None).await;
    assert_eq!(next(&mut rx).await.payload, json!({"x": 1}));
    stop(&l).await;
}

fn requeue_once(seen: Arc<Mutex<Vec<bool>>>) -> NotificationEndpoint {
    NotificationEndpoint::builder()
        .on(Priority::Info, move |n: Notification| {
            let seen = seen.clone();
            async move {
                let mut s = seen.lock().unwrap();
                let first = s.is_empty();
                s.push(first);
                let _ = n;
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

/// `test_listener.py::test_requeue`.
#[tokio::test]
async fn requeue_when_allowed_and_ack_when_not() {
    let t = Transport::memory();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let l = NotificationListener::builder(&t, vec![Target::new("rq")])
        .endpoint(requeue_once(seen.clone()))
        .allow_requeue(true)
        .build()
        .unwrap();
    l.start().await.unwrap();
    Notifier::builder(&t)
        .driver(NotifyDriver::MessagingV2)
        .topics(["rq"])
        .build()
        .unwrap()
        .info(&Context::new(), "e", &1)
        .await
        .unwrap();
    for _ in 0..100 {
        if seen.lock().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        *seen.lock().unwrap(),
        [true, false],
        "delivered twice: requeued, then handled"
    );
    stop(&l).await;
    assert_eq!(t.memory_handle().unwrap().queue_depth("rq.info"), Some(0));

    // Without allow_requeue the Requeue answer is acknowledged: one delivery only.
    let t = Transport::memory();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let l = NotificationListener::builder(&t, vec![Target::new("rq")])
        .endpoint(requeue_once(seen.clone()))
        .build()
        .unwrap();
    l.start().await.unwrap();
    Notifier::builder(&t)
        .driver(NotifyDriver::MessagingV2)
        .topics(["rq"])
        .build()
        .unwrap()
        .info(&Context::new(), "e", &1)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop(&l).await;
    assert_eq!(*seen.lock().unwrap(), [true]);
    assert_eq!(t.memory_handle().unwrap().queue_depth("rq.info"), Some(0));
}

#[tokio::test]
async fn a_failing_handler_counts_as_requeue() {
    let t = Transport::memory();
    let tries = Arc::new(Mutex::new(0));
    let tries2 = tries.clone();
    let ep = NotificationEndpoint::builder()
        .on(Priority::Info, move |_n: Notification| {
            let tries = tries2.clone();
            async move {
                let mut n = tries.lock().unwrap();
                *n += 1;
                if *n < 3 {
                    Err("database is down")
                } else {
                    Ok(())
                }
            }
        })
        .build()
        .unwrap();
    let l = NotificationListener::builder(&t, vec![Target::new("f")])
        .endpoint(ep)
        .allow_requeue(true)
        .build()
        .unwrap();
    l.start().await.unwrap();
    Notifier::builder(&t)
        .driver(NotifyDriver::MessagingV2)
        .topics(["f"])
        .build()
        .unwrap()
        .info(&Context::new(), "e", &1)
        .await
        .unwrap();
    for _ in 0..100 {
        if *tries.lock().unwrap() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop(&l).await;
    assert_eq!(*tries.lock().unwrap(), 3);
}

/// `test_dispatcher.py::TestDispatcherFilter`.
#[tokio::test]
async fn filters_screen_notifications_per_endpoint() {
    let t = Transport::memory();
    let (all, mut all_rx) = forwarding(&[Priority::Info]);
    let filter = NotificationFilter::builder()
        .event_type(r"compute\.")
        .payload("state", "^active$")
        .build()
        .unwrap();
    let (compute, mut compute_rx) = forwarding_through(&[Priority::Info], Some(filter));
    let l = NotificationListener::builder(&t, vec![Target::new("flt")])
        .endpoint(compute)
        .endpoint(all)
        .build()
        .unwrap();
    l.start().await.unwrap();
    let n = Notifier::builder(&t)
        .driver(NotifyDriver::MessagingV2)
        .topics(["flt"])
        .build()
        .unwrap();
    n.info(
        &Context::new(),
        "compute.instance.update",
        &json!({"state": "active"}),
    )
    .await
    .unwrap();
    n.info(
        &Context::new(),
        "compute.instance.update",
        &json!({"state": "building"}),
    )
    .await
    .unwrap();
    n.info(
        &Context::new(),
        "volume.create",
        &json!({"state": "active"}),
    )
    .await
    .unwrap();
    // The last endpoint gets each notification whole, as the first got its copy.
    let mut got = Vec::new();
    for _ in 0..3 {
        let n = next(&mut all_rx).await;
        got.push((n.event_type.unwrap_or_default(), n.payload));
    }
    assert_eq!(
        got,
        [
            (
                "compute.instance.update".to_owned(),
                json!({"state": "active"})
            ),
            (
                "compute.instance.update".to_owned(),
                json!({"state": "building"})
            ),
            ("volume.create".to_owned(), json!({"state": "active"})),
        ]
    );
    let only = next(&mut compute_rx).await;
    assert_eq!(only.payload, json!({"state": "active"}));
    assert_eq!(only.event_type.as_deref(), Some("compute.instance.update"));
    stop(&l).await;
    assert!(compute_rx.try_recv().is_err());
}

/// `NotifyTestCase::test_simple_batch`.
#[tokio::test(start_paused = true)]
async fn batches_of_100_100_and_5() {
    let t = Transport::memory();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ep = NotificationEndpoint::builder()
        .on(Priority::Info, move |batch: Vec<Notification>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(batch.len());
            }
        })
        .build()
        .unwrap();
    let l = NotificationListener::builder(&t, vec![Target::new("batch")])
        .endpoint(ep)
        .batch_size(100)
        .batch_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    l.start().await.unwrap();
    let n = Notifier::builder(&t)
        .driver(NotifyDriver::Messaging)
        .topics(["batch"])
        .build()
        .unwrap();
    for i in 0..205 {
        n.info(&Context::new(), "e", &i).await.unwrap();
    }
    let mut sizes = Vec::new();
    for _ in 0..3 {
        sizes.push(rx.recv().await.unwrap());
    }
    assert_eq!(sizes, [100, 100, 5]);
    stop(&l).await;
}

#[tokio::test]
async fn batch_requeue_requeues_the_whole_priority_group() {
    let t = Transport::memory();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c2 = calls.clone();
    let ep = NotificationEndpoint::builder()
        .on(Priority::Error, move |batch: Vec<Notification>| {
            let c = c2.clone();
            async move {
                let mut c = c.lock().unwrap();
                c.push(batch.len());
                if c.len() == 1 {
                    NotificationResult::Requeue
                } else {
                    NotificationResult::Handled
                }
            }
        })
        .on(Priority::Info, |_b: Vec<Notification>| async {})
        .build()
        .unwrap();
    let l = NotificationListener::builder(&t, vec![Target::new("bq")])
        .endpoint(ep)
        .batch_size(3)
        .batch_timeout(Duration::from_millis(50))
        .allow_requeue(true)
        .build()
        .unwrap();
    let n = Notifier::builder(&t)
        .driver(NotifyDriver::MessagingV2)
        .topics(["bq"])
        .build()
        .unwrap();
    n.error(&Context::new(), "e", &1).await.unwrap();
    n.error(&Context::new(), "e", &2).await.unwrap();
    n.info(&Context::new(), "e", &3).await.unwrap();
    l.start().await.unwrap();
    for _ in 0..100 {
        if calls.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop(&l).await;
    // Both errors came back together, in one later batch.
    assert_eq!(*calls.lock().unwrap(), [2, 2]);
    let h = t.memory_handle().unwrap();
    assert_eq!(h.queue_depth("bq.error"), Some(0));
    assert_eq!(h.queue_depth("bq.info"), Some(0));
}

#[tokio::test]
async fn unknown_priorities_and_garbage_are_dropped_and_the_next_one_handled() {
    let t = Transport::memory();
    let (ep, mut rx) = forwarding(&[Priority::Info]);
    let l = listener(&t, &["u"], ep, None).await;
    let h = t.memory_handle().unwrap();
    h.publish_raw(
        "openstack",
        "u.info",
        br#"{"priority": "WARNING", "event_type": "x", "payload": 1}"#.to_vec(),
    );
    h.publish_raw("openstack", "u.info", b"{not json".to_vec());
    h.publish_raw(
        "openstack",
        "u.info",
        br#"{"oslo.version": "9.0", "oslo.message": "{}"}"#.to_vec(),
    );
    Notifier::builder(&t)
        .driver(NotifyDriver::MessagingV2)
        .topics(["u"])
        .build()
        .unwrap()
        .info(&Context::new(), "good", &1)
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await.event_type.as_deref(), Some("good"));
    stop(&l).await;
    assert_eq!(h.queue_depth("u.info"), Some(0), "nothing was requeued");
}

#[tokio::test]
async fn v1_and_v2_drivers_reach_the_same_listener() {
    let t = Transport::memory();
    let h = t.memory_handle().unwrap();
    h.record_sent(true);
    let (ep, mut rx) = forwarding(&[Priority::Info]);
    let l = listener(&t, &["notifications"], ep, None).await;
    let v1 = Notifier::builder(&t)
        .driver(NotifyDriver::Messaging)
        .publisher_id("v1")
        .build()
        .unwrap();
    let v2 = Notifier::builder(&t)
        .driver(NotifyDriver::MessagingV2)
        .publisher_id("v2")
        .build()
        .unwrap();
    v1.info(&Context::new(), "e", &1).await.unwrap();
    v2.info(&Context::new(), "e", &2).await.unwrap();
    let mut got = vec![
        next(&mut rx).await.publisher_id,
        next(&mut rx).await.publisher_id,
    ];
    got.sort();
    assert_eq!(got, [Some("v1".to_owned()), Some("v2".to_owned())]);
    let sent = h.sent();
    assert!(
        !sent[0].body.starts_with(b"{\"oslo.version\""),
        "v1 has no envelope"
    );
    assert!(sent[1].body.starts_with(b"{\"oslo.version\": \"2.0\""));
    assert_eq!(sent[0].routing_key, "notifications.info");
    stop(&l).await;
}

#[tokio::test]
async fn test_log_and_noop_drivers() {
    let t = Transport::memory();
    let n = Notifier::builder(&t)
        .publisher_id("p")
        .driver(NotifyDriver::Test)
        .driver(NotifyDriver::Log)
        .retry(Retry::Times(3))
        .build()
        .unwrap();
    assert!(n.is_enabled());
    n.warning(
        &Context::new().with("auth_token", "t"),
        "ev",
        &json!({"password": "x"}),
    )
    .await
    .unwrap();
    let got = Notifier::captured(&t);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].priority, Priority::Warn);
    assert_eq!(got[0].message.priority, "WARN");
    assert_eq!(got[0].retry, Retry::Times(3));
    assert_eq!(got[0].context.get("auth_token"), Some(&Value::Null));

    let off = Notifier::builder(&t)
        .driver(NotifyDriver::Noop)
        .build()
        .unwrap();
    assert!(!off.is_enabled());
    off.info(&Context::new(), "ev", &1).await.unwrap();
    assert_eq!(Notifier::captured(&t).len(), 1);

    let conf = Config::builder()
        .notification_drivers(Vec::<String>::new())
        .build()
        .unwrap();
    let none = Notifier::builder(&Transport::memory_with_config(&conf))
        .build()
        .unwrap();
    assert!(
        !none.is_enabled(),
        "an explicitly empty driver list sends nothing"
    );
}

#[tokio::test]
async fn prepare_overrides_publisher_and_shares_drivers() {
    let t = Transport::memory();
    let base = Notifier::builder(&t)
        .publisher_id("base")
        .driver(NotifyDriver::Test)
        .build()
        .unwrap();
    let sub = base
        .prepare()
        .publisher_id("compute.host9")
        .retry(Retry::Times(0))
        .build()
        .unwrap();
    sub.info(&Context::new(), "e", &1).await.unwrap();
    base.info(&Context::new(), "e", &2).await.unwrap();
    let got = Notifier::captured(&t);
    assert_eq!(
        got[0].message.publisher_id.as_deref(),
        Some("compute.host9")
    );
    assert_eq!(got[0].retry, Retry::Times(0));
    assert_eq!(got[1].message.publisher_id.as_deref(), Some("base"));
}

#[tokio::test]
async fn routing_driver_follows_its_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routing.yaml");
    std::fs::write(
        &path,
        "group_1:\n  test:\n    accepted_events: ['compute.instance.*']\n    accepted_priorities: [info]\n",
    )
    .unwrap();
    let conf = Config::builder()
        .notification_drivers(["routing"])
        .option(
            "oslo_messaging_notifications",
            "routing_config",
            path.to_str().unwrap(),
        )
        .build()
        .unwrap();
    let t = Transport::memory_with_config(&conf);
    let n = Notifier::builder(&t).publisher_id("p").build().unwrap();
    n.info(&Context::new(), "compute.instance.create", &1)
        .await
        .unwrap();
    n.error(&Context::new(), "compute.instance.create", &2)
        .await
        .unwrap();
    n.info(&Context::new(), "volume.create", &3).await.unwrap();
    let got = Notifier::captured(&t);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.payload, json!(1));

    let bad = Config::builder()
        .notification_drivers(["routing"])
        .build()
        .unwrap();
    let err = Notifier::builder(&Transport::memory_with_config(&bad))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("routing_config"), "{err}");
}

/// Python sends nothing when no driver is configured; so do we, and only an explicit driver
/// publishes.
#[tokio::test]
async fn no_configured_driver_sends_nothing() {
    let t = Transport::memory();
    let (ep, mut rx) = forwarding(&[Priority::Info]);
    let l = listener(&t, &["notifications"], ep, None).await;
    let unset = Notifier::builder(&t).publisher_id("p").build().unwrap();
    assert!(!unset.is_enabled());
    unset.info(&Context::new(), "silent", &1).await.unwrap();
    notifier(&t, "p")
        .info(&Context::new(), "sent", &2)
        .await
        .unwrap();
    // Delivery is in order: had the first been sent, it would arrive first.
    assert_eq!(next(&mut rx).await.event_type.as_deref(), Some("sent"));
    stop(&l).await;
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn config_drives_notifier_defaults() {
    let conf = Config::from_ini_str(
        "[oslo_messaging_notifications]\ndriver = test\ntopics = a, b\nretry = 2\n",
    )
    .unwrap();
    let t = Transport::memory_with_config(&conf);
    let n = Notifier::builder(&t).build().unwrap();
    n.info(&Context::new(), "e", &1).await.unwrap();
    let got = Notifier::captured(&t);
    assert_eq!(got[0].retry, Retry::Times(2));

    let bad = Config::from_ini_str("[oslo_messaging_notifications]\ndriver = kafka\n").unwrap();
    let err = Notifier::builder(&Transport::memory_with_config(&bad))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
    assert!(
        err.to_string()
            .contains("unknown notification driver \"kafka\""),
        "{err}"
    );
}

#[tokio::test]
async fn messaging_driver_sends_one_copy_per_topic() {
    let t = Transport::memory();
    let h = t.memory_handle().unwrap();
    h.record_sent(true);
    let n = Notifier::builder(&t)
        .driver(NotifyDriver::MessagingV2)
        .topics(["a", "b"])
        .build()
        .unwrap();
    n.critical(&Context::new(), "e", &1).await.unwrap();
    let keys: Vec<String> = h.sent().into_iter().map(|m| m.routing_key).collect();
    assert_eq!(keys, ["a.critical", "b.critical"]);
    let ids: Vec<Value> = h
        .sent()
        .iter()
        .map(|m| m.decoded().unwrap()["_unique_id"].clone())
        .collect();
    assert_ne!(ids[0], ids[1], "a fresh _unique_id per topic");
}

#[tokio::test(start_paused = true)]
async fn notifier_retry_budget() {
    let t = Transport::memory();
    let h = t.memory_handle().unwrap();
    h.fail_next_publishes(1);
    let n = Notifier::builder(&t)
        .driver(NotifyDriver::MessagingV2)
        .retry(Retry::Times(0))
        .build()
        .unwrap();
    let err = n.info(&Context::new(), "e", &1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DeliveryFailure);
    h.fail_next_publishes(1);
    n.prepare()
        .retry(Retry::Times(1))
        .build()
        .unwrap()
        .info(&Context::new(), "e", &1)
        .await
        .unwrap();
}

#[tokio::test]
async fn listener_validation() {
    let t = Transport::memory();
    let (ep, _rx) = forwarding(&[Priority::Info]);
    let err = NotificationListener::builder(&t, vec![Target::empty()])
        .endpoint(ep.clone())
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidTarget);
    let err = NotificationListener::builder(&t, vec![])
        .endpoint(ep)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidTarget);
    let err = NotificationListener::builder(&t, vec![Target::new("x")])
        .endpoint(NotificationEndpoint::builder().build().unwrap())
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Configuration);
}

#[tokio::test]
async fn a_listener_subscribes_only_to_handled_priorities() {
    let t = Transport::memory();
    let (ep, _rx) = forwarding(&[Priority::Info, Priority::Error]);
    let l = listener(&t, &["only"], ep, None).await;
    let mut queues = t.memory_handle().unwrap().queues();
    queues.retain(|q| q.starts_with("only."));
    assert_eq!(queues, ["only.error", "only.info"]);
    stop(&l).await;
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct Created {
    instance_id: String,
    vcpus: u32,
}

fn notifier_to(t: &Transport, topic: &str) -> Notifier {
    Notifier::builder(t)
        .driver(NotifyDriver::MessagingV2)
        .topics([topic])
        .build()
        .unwrap()
}

/// Typed handlers get their payload type and state; a payload that does not fit is an error
/// for that notification alone: not handed to the handler, requeued when requeue is allowed.
#[tokio::test]
async fn typed_handlers_with_state_and_payloads_that_do_not_fit() {
    let t = Transport::memory();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ep =
        NotificationEndpoint::builder()
            .state(tx)
            .on(
                Priority::Info,
                |State(tx): State<mpsc::UnboundedSender<(String, u32)>>,
                 n: Notification<Created>| async move {
                    let _ = tx.send((n.payload.instance_id, n.payload.vcpus));
                },
            )
            .build()
            .unwrap();
    let l = NotificationListener::builder(&t, vec![Target::new("typed")])
        .endpoint(ep)
        .allow_requeue(true)
        .build()
        .unwrap();
    l.start().await.unwrap();
    let n = notifier_to(&t, "typed");
    n.info(
        &Context::new(),
        "e",
        &json!({"instance_id": "vm-1", "vcpus": "two"}),
    )
    .await
    .unwrap();
    n.info(
        &Context::new(),
        "e",
        &json!({"instance_id": "vm-2", "vcpus": 2}),
    )
    .await
    .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, ("vm-2".to_owned(), 2));
    // The one that does not fit keeps coming back (requeue allowed), never reaching the
    // handler; the queue keeps it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(rx.try_recv().is_err());
    stop(&l).await;
    assert_eq!(
        t.memory_handle().unwrap().queue_depth("typed.info"),
        Some(1)
    );

    // Without requeue it is acknowledged and dropped.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ep = NotificationEndpoint::builder()
        .on(Priority::Info, move |n: Notification<Created>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(n.payload);
            }
        })
        .build()
        .unwrap();
    let l = NotificationListener::builder(&t, vec![Target::new("typed")])
        .endpoint(ep)
        .build()
        .unwrap();
    l.start().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop(&l).await;
    assert!(rx.try_recv().is_err());
    assert_eq!(
        t.memory_handle().unwrap().queue_depth("typed.info"),
        Some(0)
    );
}

/// In a batch, a payload that does not fit is requeued alone; the handler gets the others.
/// One-at-a-time handlers in a batch listener see each notification.
#[tokio::test(start_paused = true)]
async fn batches_with_typed_and_one_at_a_time_handlers() {
    let t = Transport::memory();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (tx1, mut rx1) = mpsc::unbounded_channel();
    let batch = NotificationEndpoint::builder()
        .on(Priority::Info, move |b: Vec<Notification<Created>>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(b.into_iter().map(|n| n.payload.vcpus).collect::<Vec<_>>());
            }
        })
        .build()
        .unwrap();
    let single = NotificationEndpoint::builder()
        .on(Priority::Info, move |n: Notification| {
            let tx1 = tx1.clone();
            async move {
                let _ = tx1.send(n.payload["vcpus"].clone());
            }
        })
        .build()
        .unwrap();
    let l = NotificationListener::builder(&t, vec![Target::new("mixed")])
        .endpoint(batch)
        .endpoint(single)
        .batch_size(3)
        .batch_timeout(Duration::from_secs(1))
        .allow_requeue(true)
        .build()
        .unwrap();
    let n = notifier_to(&t, "mixed");
    for vcpus in [json!(1), json!("x"), json!(3)] {
        n.info(
            &Context::new(),
            "e",
            &json!({"instance_id": "vm", "vcpus": vcpus}),
        )
        .await
        .unwrap();
    }
    l.start().await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), [1, 3]);
    // The later endpoint sees the two that fit; the unfit one was requeued before it ran.
    assert_eq!(
        [rx1.recv().await.unwrap(), rx1.recv().await.unwrap()],
        [json!(1), json!(3)]
    );
    stop(&l).await;
    assert_eq!(
        t.memory_handle().unwrap().queue_depth("mixed.info"),
        Some(1)
    );
}

async fn recv(s: &mut NotificationStream) -> Delivery {
    tokio::time::timeout(Duration::from_secs(5), s.recv())
        .await
        .expect("a notification")
        .expect("the stream is open")
}

/// A stream hands notifications out with explicit acknowledgements: `ack` removes one,
/// `requeue` and dropping a delivery put it back, closing the stream stops consuming.
#[tokio::test]
async fn a_stream_with_explicit_acknowledgements() {
    let t = Transport::memory();
    let mut stream = NotificationListener::builder(&t, vec![Target::new("st")])
        .subscribe([Priority::Error, Priority::Info])
        .await
        .unwrap();
    let mut queues = t.memory_handle().unwrap().queues();
    queues.retain(|q| q.starts_with("st."));
    assert_eq!(queues, ["st.error", "st.info"]);
    let n = notifier_to(&t, "st");
    n.info(
        &Context::new(),
        "a",
        &json!({"instance_id": "vm-1", "vcpus": 1}),
    )
    .await
    .unwrap();
    let d = recv(&mut stream).await;
    assert_eq!(d.notification().event_type.as_deref(), Some("a"));
    assert_eq!(d.payload_as::<Created>().unwrap().vcpus, 1);
    d.requeue().await.unwrap();
    let d = recv(&mut stream).await;
    assert_eq!(d.notification().event_type.as_deref(), Some("a"));
    drop(d);
    let d = recv(&mut stream).await;
    assert!(d.payload_as::<Vec<u8>>().is_err());
    d.ack().await.unwrap();
    assert_eq!(t.memory_handle().unwrap().queue_depth("st.info"), Some(0));

    // A priority the stream does not take stays in its queue; a redelivered copy of a
    // notification acknowledged before is skipped.
    n.warn(&Context::new(), "w", &1).await.unwrap();
    let handle = t.memory_handle().unwrap();
    let body = br#"{"message_id": "m", "publisher_id": null, "event_type": "dup", "priority": "ERROR", "payload": 1, "timestamp": "t", "_unique_id": "u-1"}"#;
    handle.publish_raw("openstack", "st.error", &body[..]);
    recv(&mut stream).await.ack().await.unwrap();
    handle.publish_raw("openstack", "st.error", &body[..]);
    handle.publish_raw(
        "openstack",
        "st.error",
        &br#"{"message_id": "m2", "publisher_id": null, "event_type": "next", "priority": "ERROR", "payload": 2, "timestamp": "t", "_unique_id": "u-2"}"#[..],
    );
    let d = recv(&mut stream).await;
    assert_eq!(d.notification().event_type.as_deref(), Some("next"));
    d.ack().await.unwrap();
    assert_eq!(handle.queue_depth("st.warn"), Some(1));

    stream.close().await;
    assert_eq!(handle.consumer_count("st.info"), Some(0));
    n.info(&Context::new(), "later", &1).await.unwrap();
    assert_eq!(handle.queue_depth("st.info"), Some(1));
}

#[tokio::test]
async fn a_stream_refuses_endpoints_batching_and_no_priority() {
    let t = Transport::memory();
    let (ep, _rx) = forwarding(&[Priority::Info]);
    let builder = || NotificationListener::builder(&t, vec![Target::new("x")]);
    let errors = [
        builder()
            .endpoint(ep)
            .subscribe([Priority::Info])
            .await
            .unwrap_err(),
        builder()
            .batch_size(5)
            .subscribe([Priority::Info])
            .await
            .unwrap_err(),
        builder().subscribe([]).await.unwrap_err(),
    ];
    for e in errors {
        assert_eq!(e.kind(), ErrorKind::Configuration, "{e}");
    }
    let e = NotificationListener::builder(&t, vec![Target::empty()])
        .subscribe([Priority::Info])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidTarget);
    let e = builder()
        .endpoint(forwarding(&[Priority::Info]).0)
        .batch_size(0)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Configuration);
}

/// A prepared notifier shares its parent's drivers and topics: setting them fails `build()`.
#[tokio::test]
async fn a_prepared_notifier_changes_only_publisher_and_retry() {
    let t = Transport::memory();
    let base = Notifier::builder(&t)
        .driver(NotifyDriver::Test)
        .publisher_id("a")
        .build()
        .unwrap();
    for bad in [
        base.prepare().driver(NotifyDriver::Log),
        base.prepare().topics(["other"]),
    ] {
        let err = bad.build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Configuration, "{err}");
    }
    let same = base.prepare().build().unwrap();
    assert_eq!(same.publisher_id(), Some("a"));
    same.info(&Context::new(), "e", &1).await.unwrap();
    assert_eq!(Notifier::captured(&t).len(), 1);
}
