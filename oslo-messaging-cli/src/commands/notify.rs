//! `notify` and `listen`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use oslo_messaging::Target;
use oslo_messaging::notify::{
    Notification, NotificationEndpoint, NotificationFilter, NotificationListener,
    NotificationResult, Notifier, NotifyDriver, Priority,
};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::Failure;
use crate::cli::{DriverArg, EXIT_FAILURE, EXIT_OK, Global, ListenArgs, NotifyArgs};

pub(crate) async fn notify(global: &Global, args: &NotifyArgs) -> Result<u8, Failure> {
    let conf = super::load_config(global)?;
    let transport = super::notification_transport(global, &conf)?;
    let driver = match args.driver {
        DriverArg::Messagingv2 => NotifyDriver::MessagingV2,
        DriverArg::Messaging => NotifyDriver::Messaging,
    };
    let notifier = Notifier::builder(&transport)
        .publisher_id(&args.publisher_id)
        .driver(driver)
        .topics([args.topic.as_str()])
        .retry(super::retry(args.retry))
        .build()?;
    let ctx = super::context(args.context.as_ref());
    notifier
        .notify(&ctx, &args.event_type, args.priority, &args.payload)
        .await?;
    if global.json {
        super::out(
            &json!({"sent": true, "topic": args.topic, "priority": args.priority.as_str(), "event_type": args.event_type})
                .to_string(),
        );
    }
    transport.cleanup().await;
    Ok(EXIT_OK)
}

/// One notification as a JSON line.
fn as_json(n: &Notification) -> Value {
    json!({
        "priority": n.priority.as_str(),
        "publisher_id": n.publisher_id,
        "event_type": n.event_type,
        "payload": n.payload,
        "context": n.context.as_map(),
        "metadata": n.metadata,
    })
}

/// One notification for people: time, coloured priority, event type, publisher, payload.
fn readable(n: &Notification) -> String {
    let colour = match n.priority {
        Priority::Critical | Priority::Error => "\x1b[1;31m",
        Priority::Warn => "\x1b[33m",
        Priority::Info => "\x1b[32m",
        Priority::Debug => "\x1b[2m",
        Priority::Audit | Priority::Sample => "\x1b[36m",
    };
    let time = n
        .metadata
        .get("timestamp")
        .and_then(Value::as_str)
        .unwrap_or("-");
    format!(
        "\x1b[2m{time}\x1b[0m {colour}{:<8}\x1b[0m \x1b[1m{}\x1b[0m from {}  {}",
        n.priority.as_wire(),
        n.event_type.as_deref().unwrap_or("-"),
        n.publisher_id.as_deref().unwrap_or("-"),
        n.payload
    )
}

pub(crate) async fn listen(global: &Global, args: &ListenArgs) -> Result<u8, Failure> {
    super::serve_metrics(args.metrics_addr)?;
    let conf = super::load_config(global)?;
    let transport = super::notification_transport(global, &conf)?;
    let priorities: Vec<Priority> = if args.priorities.is_empty() {
        Priority::ALL.to_vec()
    } else {
        args.priorities.clone()
    };
    let limit = args.count.unwrap_or(u64::MAX);
    let printed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let people = super::for_people(global);
    let mut endpoint = NotificationEndpoint::builder();
    if let Some(regex) = &args.event_type {
        let filter = NotificationFilter::builder()
            .event_type(regex)
            .build()
            .map_err(|e| Failure::Usage(format!("--event-type: {}", e.message())))?;
        endpoint = endpoint.filter(filter);
    }
    for p in priorities {
        let (printed, done) = (printed.clone(), done.clone());
        endpoint = endpoint.on(p, move |n: Notification| {
            let (printed, done) = (printed.clone(), done.clone());
            async move {
                // Past --count, put it back for the next listener: nothing is lost.
                let seen = printed.fetch_add(1, Ordering::SeqCst);
                if seen >= limit {
                    return NotificationResult::Requeue;
                }
                super::out(&if people {
                    readable(&n)
                } else {
                    as_json(&n).to_string()
                });
                if seen + 1 >= limit {
                    done.notify_one();
                }
                NotificationResult::Handled
            }
        });
    }
    let mut builder = NotificationListener::builder(&transport, vec![Target::new(&args.topic)])
        .endpoint(endpoint.build()?)
        .allow_requeue(true)
        // One at a time, so lines come out in arrival order.
        .executor_pool_size(1);
    if let Some(pool) = &args.pool {
        builder = builder.pool(pool);
    } else {
        eprintln!(
            "note: without --pool this listener consumes the shared {}.<priority> queues (on \
             Kafka: joins their consumer group), taking notifications from the services that \
             read them; use --pool to get copies",
            args.topic
        );
    }
    let listener = builder.build()?;
    let timeout = async {
        match args.timeout {
            Some(secs) => tokio::time::sleep(Duration::from_secs_f64(secs)).await,
            None => std::future::pending().await,
        }
    };
    let signal = super::shutdown_signal();
    tokio::pin!(timeout, signal);
    // The timeout and Ctrl-C also bound the start (an unreachable broker is retried forever).
    let interrupted = tokio::select! {
        started = listener.start() => match started {
            Ok(()) => None,
            Err(e) => {
                transport.cleanup().await;
                return Err(e.into());
            }
        },
        () = &mut timeout => Some(true),
        () = &mut signal => Some(false),
    };
    let timed_out = match interrupted {
        Some(timed_out) => timed_out,
        None => {
            tracing::info!(topic = %args.topic, "listening for notifications");
            tokio::select! {
                () = done.notified() => false,
                () = &mut signal => false,
                () = &mut timeout => true,
            }
        }
    };
    listener.stop().await;
    listener.wait().await;
    transport.cleanup().await;
    let got = printed.load(Ordering::SeqCst).min(limit);
    if timed_out && args.count.is_some_and(|n| got < n) {
        let message = format!(
            "timed out after {} s with {got} of {limit} notifications",
            args.timeout.unwrap_or_default()
        );
        if global.json {
            eprintln!(
                "{}",
                json!({"error": {"kind": "Timeout", "message": message}})
            );
        } else {
            eprintln!("error: {message}");
        }
        return Ok(EXIT_FAILURE);
    }
    Ok(EXIT_OK)
}
