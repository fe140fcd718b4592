//! Load held on the test broker: connection churn (L3) and a slow consumer with a bounded
//! prefetch (L4). Figures are printed and asserted with their bounds.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use oslo_messaging::notify::{
    Notification, NotificationEndpoint, NotificationListener, Notifier, NotifyDriver, Priority,
};
use oslo_messaging::rpc::{RpcClient, RpcServer};
use oslo_messaging::{Context, Target};
use serde_json::{Value, json};
use support::rabbit::Scope;
use support::{Calls, alive_tasks, open_fds, recording_endpoint, rss_kib, settles, stop};
use testkit::broker::rabbitmqctl;

/// Connections and channels this process has open on the test broker, from `rabbitmqctl`:
/// connections named `<program>:<pid>:<uuid>` with this process's pid, and their channels.
/// (Other tests run beside this one, in other processes, with connections of their own.)
fn broker_counts() -> (usize, usize) {
    let ours = format!(":{}:", std::process::id());
    let connections: Vec<String> = rabbitmqctl(&["list_connections", "pid", "client_properties"])
        .lines()
        .filter(|l| l.contains("\"connection_name\"") && l.contains(&ours))
        .filter_map(|l| l.split('\t').next().map(str::to_owned))
        .collect();
    let channels = rabbitmqctl(&["list_channels", "connection", "pid"])
        .lines()
        .filter(|l| {
            l.split('\t')
                .next()
                .is_some_and(|c| connections.iter().any(|ours| ours == c))
        })
        .count();
    (connections.len(), channels)
}

/// L3: 1,000 cycles of a new transport that connects, declares its reply queue, makes a
/// call and is cleaned up. Afterwards this process holds no more file descriptors, tasks or
/// memory than after the first 50, and the broker no more connections or channels of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connect_call_close_cycles_leak_nothing() {
    testkit::require_broker!();
    let scope = Scope::new("churn");
    let topic = scope.topic("churn");
    scope.queue(format!("{topic}.s1"));
    let server_t = scope.transport();
    let calls = Calls::default();
    let server = RpcServer::builder(&server_t, Target::new(&topic).with_server("s1"))
        .endpoint(recording_endpoint("s1", &calls))
        .build()
        .unwrap();
    server.start().await.unwrap();
    let cycle = |i: usize| {
        let t = scope.transport();
        let topic = topic.clone();
        async move {
            let client = RpcClient::new(&t, Target::new(&topic));
            let v: Value = client
                .call(&Context::new(), "echo", &json!({ "value": i }))
                .await
                .unwrap();
            assert_eq!(v, json!(i));
            t.cleanup().await;
        }
    };
    for i in 0..50 {
        cycle(i).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fds, tasks, rss, broker) = (open_fds(), alive_tasks(), rss_kib(), broker_counts());
    let started = Instant::now();
    for i in 50..1_050 {
        cycle(i).await;
    }
    let took = started.elapsed();
    let fds_after = settles(open_fds, fds, 2, Duration::from_secs(10)).await;
    let tasks_after = settles(alive_tasks, tasks, 2, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut broker_after = broker_counts();
    while (broker_after.0 > broker.0 || broker_after.1 > broker.1) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        broker_after = broker_counts();
    }
    let rss_after = rss_kib();
    println!(
        "L3 1,000 connect-declare-call-close cycles in {:.1} s: fds {fds} -> {fds_after}, tasks {tasks} -> {tasks_after}, RSS {rss} -> {rss_after} KiB, broker connections {} -> {}, channels {} -> {}",
        took.as_secs_f64(),
        broker.0,
        broker_after.0,
        broker.1,
        broker_after.1
    );
    assert!(fds_after <= fds + 2);
    assert!(tasks_after <= tasks + 2);
    // Allocator slack, not a leak: a leak of even 1 KiB a cycle would show as 1,000 KiB.
    assert!(rss_after <= rss + 1024, "RSS {rss} -> {rss_after} KiB");
    assert!(broker_after.0 <= broker.0 && broker_after.1 <= broker.1);
    stop(&server).await;
    server_t.cleanup().await;
}

/// Runs a listener whose handler takes 20 ms over 300 waiting notifications of 64 KiB with
/// `prefetch` (0: unlimited) and returns the largest growth of this process's memory while
/// it works through the first 100, in KiB.
async fn slow_consumer_growth(scope: &Scope, prefetch: &str) -> u64 {
    let t = scope.transport_with(&[("rabbit_qos_prefetch_count", prefetch)]);
    let topic = scope.topic("slow");
    let notifier = Notifier::builder(&t)
        .driver(NotifyDriver::MessagingV2)
        .topics([topic.as_str()])
        .build()
        .unwrap();
    let payload = "x".repeat(64 << 10);
    for _ in 0..300 {
        notifier
            .info(&Context::new(), "slow", &json!({ "data": payload }))
            .await
            .unwrap();
    }
    drop(payload);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib();
    let handled = Arc::new(AtomicUsize::new(0));
    let counted = handled.clone();
    let listener = NotificationListener::builder(&t, vec![Target::new(&topic)])
        .endpoint(
            NotificationEndpoint::builder()
                .on(Priority::Info, move |_n: Notification| {
                    let counted = counted.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                })
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    listener.start().await.unwrap();
    let mut peak = before;
    let deadline = Instant::now() + Duration::from_secs(60);
    while handled.load(Ordering::SeqCst) < 100 {
        assert!(Instant::now() < deadline, "the listener stalled");
        peak = peak.max(rss_kib());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    listener.stop().await;
    listener.wait().await;
    t.cleanup().await;
    peak.saturating_sub(before)
}

/// L4: a slow consumer with a bounded prefetch keeps what it buffers bounded by prefetch ×
/// message size; with no bound the broker pushes the whole backlog into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_buffers_no_more_than_its_prefetch() {
    testkit::require_broker!();
    let scope = Scope::new("slow");
    let bounded = slow_consumer_growth(&scope, "10").await;
    let unbounded = slow_consumer_growth(&scope, "0").await;
    let bound = 10 * 64 * 2 + 4096;
    println!(
        "L4 slow consumer over 300 waiting 64 KiB notifications: memory grew {bounded} KiB with prefetch 10 (bound {bound} KiB: twice prefetch × size, plus 4 MiB), {unbounded} KiB with no prefetch"
    );
    assert!(bounded <= bound, "{bounded} KiB");
    // The measurement sees a backlog when there is one.
    assert!(unbounded > 8 * 1024, "{unbounded} KiB");
}
