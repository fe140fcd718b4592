//! Network faults between our client and the broker, through an in-process fault proxy
//! (`support::proxy`) in front of the test broker: a black-holed link (R7), resets in the
//! middle of publishing (R8), a handler that blocks its thread for longer than the
//! heartbeat allows (R12), and a reset while a reply is on its way, with a reply queue and with
//! direct reply-to. Each prints its figures and asserts them with a stated bound.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oslo_messaging::rpc::{Endpoint, Request, RpcClient, RpcError, RpcServer};
use oslo_messaging::{Context, ErrorKind, Target, Transport};
use serde_json::{Value, json};
use support::proxy::Proxy;
use support::rabbit::Scope;
use support::{
    Calls, alive_tasks, calls_in_flight, how_they_ended, open_fds, recording_endpoint, settles,
    stop,
};
use testkit::broker::Broker;

/// Heartbeat of the proxied connections, in seconds.
const HEARTBEAT: u64 = 4;

/// Quick recovery: a reconnect 0.5 s after a loss, then every second.
const FAST: [(&str, &str); 5] = [
    ("heartbeat_timeout_threshold", "4"),
    ("rabbit_retry_interval", "1"),
    ("rabbit_retry_backoff", "0"),
    ("rabbit_interval_max", "1"),
    ("kombu_reconnect_delay", "0.5"),
];

async fn proxy() -> Proxy {
    let Broker { host, port, .. } = Broker::from_env();
    Proxy::start(&format!("{host}:{port}")).await
}

/// A transport to the test broker through `proxy`, with `options`.
fn through(scope: &Scope, proxy: &Proxy, options: &[(&str, &str)]) -> Transport {
    let Broker {
        user,
        password,
        vhost,
        ..
    } = Broker::from_env();
    let vhost = if vhost == "/" { String::new() } else { vhost };
    let url = format!("rabbit://{user}:{password}@{}/{vhost}", proxy.addr());
    Transport::with_config(&url, &scope.config(options)).unwrap()
}

/// A recording server on a topic of its own, reached directly, and a proxy in front of the
/// broker for the client under test.
struct Rig {
    scope: Scope,
    topic: String,
    server_t: Transport,
    calls: Calls,
    server: RpcServer,
    proxy: Proxy,
}

impl Rig {
    async fn start(name: &str) -> Self {
        let scope = Scope::new(name);
        let topic = scope.topic(name);
        scope.queue(format!("{topic}.s1"));
        let server_t = scope.transport();
        let calls = Calls::default();
        let server = serve(&server_t, &topic, recording_endpoint("s1", &calls)).await;
        Self {
            proxy: proxy().await,
            scope,
            topic,
            server_t,
            calls,
            server,
        }
    }

    /// A client transport through the proxy, with `options`.
    fn client(&self, options: &[(&str, &str)]) -> Transport {
        through(&self.scope, &self.proxy, options)
    }

    async fn finish(self, client: Transport) {
        stop(&self.server).await;
        client.cleanup().await;
        self.server_t.cleanup().await;
    }
}

async fn serve(t: &Transport, topic: &str, endpoint: Endpoint) -> RpcServer {
    let s = RpcServer::builder(t, Target::new(topic).with_server("s1"))
        .endpoint(endpoint)
        .build()
        .unwrap();
    s.start().await.unwrap();
    s
}

/// Calls `echo` with a short timeout until one succeeds; returns how long that took.
async fn until_a_call_works(client: &RpcClient, within: Duration) -> Duration {
    let started = Instant::now();
    let quick = client
        .prepare()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    loop {
        match quick
            .call::<Value>(&Context::new(), "echo", &json!({"value": 1}))
            .await
        {
            Ok(v) => {
                assert_eq!(v, json!(1));
                return started.elapsed();
            }
            Err(e) => assert!(started.elapsed() < within, "no call within {within:?}: {e}"),
        }
    }
}

/// R7: the link goes silent for 20 s (nothing flows, nothing closes). The client notices
/// within two heartbeats plus 2 s, every call in flight ends as a success or a timeout
/// within its timeout plus 1 s, and calls work again within 2 s of the link healing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_link_is_detected_and_every_call_resolves() {
    testkit::require_broker!();
    const TIMEOUT: Duration = Duration::from_secs(30);
    let rig = Rig::start("blackhole").await;
    let proxy = &rig.proxy;
    let t = rig.client(&FAST);
    let client = RpcClient::builder(&t, Target::new(&rig.topic))
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    until_a_call_works(&client, Duration::from_secs(10)).await;
    let accepted = proxy.accepted();

    // 20 calls in flight, each a second long on the server.
    let pending = calls_in_flight(&client, 20, "sleep", &json!({"seconds": 1}));
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.blackhole(true);
    let cut = Instant::now();
    while proxy.accepted() == accepted {
        assert!(cut.elapsed() < Duration::from_secs(30), "never noticed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let detected = cut.elapsed();
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(cut.elapsed())).await;
    proxy.blackhole(false);
    let resumed = until_a_call_works(&client, Duration::from_secs(30)).await;
    let (ok, timed_out, longest) = how_they_ended(pending, TIMEOUT + Duration::from_secs(5)).await;
    println!(
        "R7 blackhole 20 s, heartbeat {HEARTBEAT} s: detected after {:.1} s, calls work {:.2} s after the heal; in flight: {ok} answered, {timed_out} timed out, longest {:.1} s",
        detected.as_secs_f64(),
        resumed.as_secs_f64(),
        longest.as_secs_f64()
    );
    assert!(
        detected <= Duration::from_secs(2 * HEARTBEAT + 2),
        "{detected:?}"
    );
    assert!(resumed <= Duration::from_secs(2), "{resumed:?}");
    assert!(longest <= TIMEOUT + Duration::from_secs(1), "{longest:?}");
    rig.finish(t).await;
}

/// R8: 50 resets of the client's connections while it publishes confirmed casts without
/// pause. Each time it is publishing again within 1 s; every confirmed cast reaches the
/// server (lost = 0); file descriptors and tasks come back to where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_mid_publish_lose_nothing_and_leak_nothing() {
    testkit::require_broker!();
    let rig = Rig::start("reset").await;
    let (proxy, calls) = (&rig.proxy, &rig.calls);
    let t = rig.client(&FAST);
    let client = RpcClient::new(&t, Target::new(&rig.topic));
    until_a_call_works(&client, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fds, tasks) = (open_fds(), alive_tasks());

    let confirmed = Arc::new(Mutex::new(Vec::<u64>::new()));
    let running = Arc::new(AtomicBool::new(true));
    let publisher = tokio::spawn({
        let (client, confirmed, running) = (client.clone(), confirmed.clone(), running.clone());
        async move {
            let mut i = 0u64;
            while running.load(Ordering::SeqCst) {
                client
                    .cast(&Context::new(), "record", &json!({ "value": i }))
                    .await
                    .unwrap();
                confirmed.lock().unwrap().push(i);
                i += 1;
            }
        }
    });
    let mut recoveries = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = confirmed.lock().unwrap().len();
        proxy.reset();
        let reset = Instant::now();
        // Recovered once a cast published after the reset is confirmed (one in flight at
        // the reset may still be confirmed on the old connection).
        while confirmed.lock().unwrap().len() < before + 2 {
            assert!(reset.elapsed() < Duration::from_secs(10), "no recovery");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        recoveries.push(reset.elapsed());
    }
    running.store(false, Ordering::SeqCst);
    publisher.await.unwrap();
    let confirmed: BTreeSet<u64> = confirmed.lock().unwrap().iter().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (seen, deliveries) = loop {
        let all = calls.by("s1");
        let seen: BTreeSet<u64> = all.iter().filter_map(Value::as_u64).collect();
        if confirmed.is_subset(&seen) || Instant::now() > deadline {
            break (seen, all.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lost = confirmed.difference(&seen).count();
    recoveries.sort();
    let fds_after = settles(open_fds, fds, 2, Duration::from_secs(10)).await;
    let tasks_after = settles(alive_tasks, tasks, 2, Duration::from_secs(10)).await;
    println!(
        "R8 50 resets mid-publish: recovery median {:.2} s, max {:.2} s; {} casts confirmed, lost {lost}, {} duplicates; fds {fds} -> {fds_after}, tasks {tasks} -> {tasks_after}",
        recoveries[recoveries.len() / 2].as_secs_f64(),
        recoveries[recoveries.len() - 1].as_secs_f64(),
        confirmed.len(),
        deliveries - seen.len(),
    );
    assert_eq!(lost, 0);
    assert!(
        recoveries[recoveries.len() - 1] <= Duration::from_secs(1),
        "{recoveries:?}"
    );
    assert!(fds_after <= fds + 2, "fds {fds} -> {fds_after}");
    assert!(tasks_after <= tasks + 2, "tasks {tasks} -> {tasks_after}");
    rig.finish(t).await;
}

/// R12: a handler that blocks its thread (no `.await`) for three heartbeats. The server's
/// connection must survive: it is not reconnected, and the call is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_blocking_its_thread_for_three_heartbeats_keeps_the_connection() {
    testkit::require_broker!();
    let scope = Scope::new("blocking");
    let topic = scope.topic("blocking");
    scope.queue(format!("{topic}.s1"));
    let proxy = proxy().await;
    let server_t = through(&scope, &proxy, &FAST);
    let endpoint = Endpoint::builder()
        .method("block", |req: Request<Value>| async move {
            let secs = req.args()["seconds"].as_u64().unwrap_or(0);
            // Deliberately blocking: no await point for the whole time.
            std::thread::sleep(Duration::from_secs(secs));
            Ok::<_, RpcError>(secs)
        })
        .build()
        .unwrap();
    let server = serve(&server_t, &topic, endpoint).await;
    let t = scope.transport();
    let client = RpcClient::builder(&t, Target::new(&topic))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    // The first reply opens the server's publishing connection.
    let warm: Value = client
        .call(&Context::new(), "block", &json!({ "seconds": 0 }))
        .await
        .unwrap();
    assert_eq!(warm, json!(0));
    let connections = proxy.accepted();
    let started = Instant::now();
    let out: Value = client
        .call(
            &Context::new(),
            "block",
            &json!({ "seconds": 3 * HEARTBEAT }),
        )
        .await
        .unwrap();
    assert_eq!(out, json!(3 * HEARTBEAT));
    // And the next call too, on the same connection.
    let again: Value = client
        .call(&Context::new(), "block", &json!({ "seconds": 0 }))
        .await
        .unwrap();
    assert_eq!(again, json!(0));
    let reconnects = proxy.accepted() - connections;
    println!(
        "R12 handler blocked its thread {} s (heartbeat {HEARTBEAT} s): answered after {:.1} s, {reconnects} reconnects",
        3 * HEARTBEAT,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(reconnects, 0, "the server's connection was lost");
    assert_eq!(
        proxy.open(),
        connections,
        "every proxied connection is still open"
    );
    stop(&server).await;
    server_t.cleanup().await;
    t.cleanup().await;
}

/// A call whose request the broker never confirms (here a link that goes silent with
/// heartbeats off, so nothing notices it is dead) ends at the call's timeout, as Python's
/// does; before, the publish waited for the confirm forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_broker_never_confirms_ends_at_its_timeout() {
    testkit::require_broker!();
    let rig = Rig::start("noconfirm").await;
    let proxy = &rig.proxy;
    let t = rig.client(&[("heartbeat_timeout_threshold", "0")]);
    let client = RpcClient::builder(&t, Target::new(&rig.topic))
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    until_a_call_works(&client, Duration::from_secs(10)).await;
    proxy.blackhole(true);
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        client.call::<Value>(&Context::new(), "echo", &json!({"value": 2})),
    )
    .await
    .expect("the call ends")
    .unwrap_err();
    let took = started.elapsed();
    println!("a call never confirmed ended after {took:.2?}: {err}");
    assert_eq!(err.kind(), oslo_messaging::ErrorKind::Timeout);
    assert!(took < Duration::from_secs(5), "{took:?}");
    proxy.blackhole(false);
    rig.finish(t).await;
}

/// The trade-off of `rabbit_direct_reply_to`: the client's connections reset while its call's
/// server is still working. With the reply queue, the reply (published after the reset) waits
/// in the queue for the client to come back and the call succeeds. With direct reply-to the reply has nowhere to go once
/// the channel is gone: the call fails at once with `ReplyLost` (bound: 5 s, against a 20 s
/// timeout), and the next calls use the new channel's name and work (within 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_keeps_queued_replies_and_fails_direct_ones_at_once() {
    testkit::require_broker!();
    let rig = Rig::start("blip").await;
    let mut last: Option<Transport> = None;
    for direct in [false, true] {
        let mut options = FAST.to_vec();
        if direct {
            options.push(("rabbit_direct_reply_to", "true"));
        }
        let t = rig.client(&options);
        let client = RpcClient::builder(&t, Target::new(&rig.topic))
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        until_a_call_works(&client, Duration::from_secs(10)).await;
        let call = tokio::spawn({
            let client = client.clone();
            async move {
                let started = Instant::now();
                let r = client
                    .call::<Value>(&Context::new(), "sleep", &json!({"seconds": 2}))
                    .await;
                (r, started.elapsed())
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        rig.proxy.reset();
        let (result, took) = call.await.unwrap();
        let again = until_a_call_works(&client, Duration::from_secs(10)).await;
        let mode = if direct {
            "direct reply-to"
        } else {
            "reply queue"
        };
        println!(
            "reset 0.5 s into a 2 s call, {mode}: the call ended after {:.2} s ({}), calls work again {:.2} s later",
            took.as_secs_f64(),
            match &result {
                Ok(v) => format!("ok {v}"),
                Err(e) => format!("{:?}: {e}", e.kind()),
            },
            again.as_secs_f64()
        );
        if direct {
            let err = result.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ReplyLost, "{err}");
            assert!(took < Duration::from_secs(5), "{took:?}");
        } else {
            assert_eq!(result.unwrap(), json!(2.0));
        }
        if let Some(previous) = last.replace(t) {
            previous.cleanup().await;
        }
    }
    rig.finish(last.expect("a client transport")).await;
}
