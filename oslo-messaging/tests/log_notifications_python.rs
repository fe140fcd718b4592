//! Log events as notifications (`notify::LoggingNotificationLayer`, feature `tracing-layer`),
//! received by a Python 18.3.1 listener, with both notification drivers: what Python's
//! `LoggingNotificationHandler` and `PublishErrorsHandler` would have sent.

mod support;

use oslo_messaging::notify::LoggingNotificationLayer;
use oslo_messaging::{Config, Transport};
use serde_json::{Value, json};
use support::python::{Peer, PeerOpts};
use support::rabbit::Scope;
use testkit::broker::url as broker_url;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_events_reach_a_python_listener_with_both_drivers() {
    testkit::require_python!();
    for driver in ["messaging", "messagingv2"] {
        let scope = Scope::new(&format!("lognote_{driver}"));
        let topic = scope.topic("lognote");
        let url = broker_url();
        let mut listener = Peer::spawn(
            "listen",
            &["--topic", &topic, "--count", "2", "--timeout", "60"],
            &PeerOpts::new(&url, &scope.exchange),
        );
        listener.wait_event("ready", 60).await;

        let conf = Config::builder()
            .control_exchange(&scope.exchange)
            .option("oslo_messaging_notifications", "driver", driver)
            .option("oslo_messaging_notifications", "topics", &topic)
            .build()
            .unwrap();
        let t = Transport::with_config(&url, &conf).unwrap();
        let records = LoggingNotificationLayer::builder(&t)
            .publisher_id("compute.host-1")
            .level(tracing::Level::ERROR)
            .build()
            .unwrap();
        let errors = LoggingNotificationLayer::errors(&t).unwrap().unwrap();
        let subscriber = tracing_subscriber::registry().with(records).with(errors);
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(instance = "vm-1", "the instance failed to boot");
            tracing::warn!("below the level: not sent");
        });

        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(listener.wait_event("notification", 30).await);
        }
        got.sort_by_key(|n| n["event_type"].as_str().unwrap_or_default().to_owned());
        let (error_note, record) = (&got[0], &got[1]);
        println!("{driver}: {record}");
        assert_eq!(error_note["event_type"], "error_notification", "{driver}");
        assert_eq!(error_note["publisher_id"], "error.publisher");
        assert_eq!(error_note["priority"], "error");
        assert_eq!(
            error_note["payload"],
            json!({"error": "the instance failed to boot"})
        );
        assert_eq!(record["event_type"], "logrecord", "{driver}");
        assert_eq!(record["publisher_id"], "compute.host-1");
        assert_eq!(record["priority"], "error");
        let p = &record["payload"];
        assert_eq!(p["msg"], "the instance failed to boot");
        assert_eq!(p["levelname"], "ERROR");
        assert_eq!(p["levelno"], 40);
        assert_eq!(p["name"], "log_notifications_python");
        assert_eq!(p["extra"], json!({"instance": "vm-1"}));
        assert_eq!(p["exc_info"], Value::Null);
        assert!(p["lineno"].as_u64().is_some_and(|l| l > 0), "{p}");
        let stopped = listener.finish().await;
        assert_eq!(stopped.last().unwrap()["reason"], "count");
        t.cleanup().await;
    }
}
