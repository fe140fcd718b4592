//! Faults on a private three-node RabbitMQ cluster with quorum queues (never the system
//! broker): the reliability reference's R1-R6 and R14, one after the other behind one cluster
//! start (R7, R8 and R12 are in `rabbit_proxy`). Clients reach the nodes through fault proxies, which tell which node a client is
//! connected to. Every figure is printed and asserted with its bound; results use the Jepsen
//! checker's words: lost (confirmed, never consumed) and duplicated.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oslo_messaging::rpc::{RpcClient, RpcServer};
use oslo_messaging::{Config, Context, ErrorKind, Retry, Target, Transport};
use serde_json::{Value, json};
use support::cluster::Cluster;
use support::proxy::Proxy;
use support::{Calls, calls_in_flight, how_they_ended, recording_endpoint, stop};

const HEARTBEAT: u64 = 10;

fn config() -> Config {
    support::cluster::client_config("cluster", &[])
}

/// The cluster, a proxy in front of each node, and the URL through them.
struct Bed {
    cluster: Cluster,
    proxies: Vec<Proxy>,
}

impl Bed {
    fn proxied_url(&self) -> String {
        let hosts: Vec<String> = self
            .proxies
            .iter()
            .map(|p| format!("guest:guest@{}", p.addr()))
            .collect();
        format!("rabbit://{}/", hosts.join(","))
    }

    fn accepted(&self) -> Vec<usize> {
        self.proxies.iter().map(Proxy::accepted).collect()
    }

    /// Connections accepted through all the proxies so far.
    fn connections(&self) -> usize {
        self.proxies.iter().map(Proxy::accepted).sum()
    }

    /// The node whose proxy accepted a connection since `before` (an [`accepted`](Self::accepted)).
    fn connected_since(&self, before: &[usize]) -> Option<usize> {
        let after = self.accepted();
        (0..after.len()).find(|i| after[*i] > before[*i])
    }

    /// A client transport whose publishing connection is on a node `want` accepts (the
    /// driver shuffles the hosts, so this tries until one lands there); returns the node.
    async fn client_on(&self, want: impl Fn(usize) -> bool) -> (Transport, usize) {
        for _ in 0..60 {
            let before = self.accepted();
            let t = Transport::with_config(&self.proxied_url(), &config()).unwrap();
            RpcClient::new(&t, Target::new("placement"))
                .cast(&Context::new(), "nothing", &json!({}))
                .await
                .unwrap();
            let node = self.connected_since(&before).unwrap();
            if want(node) {
                return (t, node);
            }
            t.cleanup().await;
        }
        panic!("no client landed where wanted in 60 tries");
    }

    /// Three RPC servers on `topic`, each with its own connection to the whole cluster.
    async fn servers(&self, topic: &str, calls: &Calls) -> Vec<(Transport, RpcServer)> {
        let mut out = Vec::new();
        for i in 1..=3 {
            let t = Transport::with_config(&self.cluster.url(), &config()).unwrap();
            let name = format!("s{i}");
            let s = RpcServer::builder(&t, Target::new(topic).with_server(&name))
                .endpoint(recording_endpoint(&name, calls))
                .build()
                .unwrap();
            s.start().await.unwrap();
            out.push((t, s));
        }
        out
    }

    /// Boots a killed node again and waits until the cluster has three running members.
    fn restart(&self, i: usize) {
        self.cluster.nodes[i].boot();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.cluster.running() < 3 {
            assert!(Instant::now() < deadline, "node {i} did not rejoin");
            std::thread::sleep(Duration::from_millis(200));
        }
        // Back in the cluster is not yet back in every quorum queue: the next scenario kills
        // a member, and the two left must both vote.
        while !self.cluster.quorum_queues_whole() {
            assert!(
                Instant::now() < deadline,
                "node {i} did not rejoin its quorum queues"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Makes `n` calls one after the other; each must be answered.
async fn all_answer(client: &RpcClient, n: u64) {
    for i in 0..n {
        let v: Value = client
            .call(&Context::new(), "echo", &json!({ "value": i }))
            .await
            .unwrap();
        assert_eq!(v, json!(i));
    }
}

async fn shutdown(servers: Vec<(Transport, RpcServer)>) {
    for (t, s) in servers {
        stop(&s).await;
        t.cleanup().await;
    }
}

/// Every value the servers recorded, and how many deliveries that took.
fn received(calls: &Calls) -> (BTreeSet<u64>, usize) {
    let all: Vec<u64> = calls
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, v)| v.as_u64())
        .collect();
    let n = all.len();
    (all.into_iter().collect(), n)
}

/// What a run of confirmed casts gave.
struct CastRun {
    confirmed: BTreeSet<u64>,
    lost: usize,
    duplicates: usize,
    longest_stall: Duration,
}

/// Sends casts `from..from + n` (8 at a time) and calls `fault` once `at` of them are
/// confirmed; then waits up to 60 s for the servers to have every confirmed one.
async fn casts_through(
    client: &RpcClient,
    calls: &Calls,
    from: u64,
    n: u64,
    at: u64,
    fault: impl FnOnce(),
) -> CastRun {
    let confirmed = Arc::new(Mutex::new(Vec::<(u64, Instant)>::new()));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(from));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (client, confirmed, next) = (client.clone(), confirmed.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= from + n {
                    return;
                }
                client
                    .cast(&Context::new(), "record", &json!({ "value": i }))
                    .await
                    .unwrap_or_else(|e| panic!("cast {i}: {e}"));
                confirmed.lock().unwrap().push((i, Instant::now()));
            }
        }));
    }
    let mut fault = Some(fault);
    while fault.is_some() {
        if confirmed.lock().unwrap().len() as u64 >= at {
            (fault.take().unwrap())();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for w in workers {
        tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .expect("every cast ends")
            .unwrap();
    }
    let mut times: Vec<Instant> = confirmed.lock().unwrap().iter().map(|(_, t)| *t).collect();
    times.sort();
    let longest_stall = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let confirmed: BTreeSet<u64> = confirmed.lock().unwrap().iter().map(|(i, _)| *i).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (seen, deliveries) = received(calls);
        let missing = confirmed.iter().filter(|i| !seen.contains(i)).count();
        if missing == 0 || Instant::now() > deadline {
            let mine = seen.iter().filter(|i| (from..from + n).contains(i)).count();
            let mine_deliveries = calls
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, v)| v.as_u64().is_some_and(|i| (from..from + n).contains(&i)))
                .count();
            let _ = deliveries;
            return CastRun {
                confirmed,
                lost: missing,
                duplicates: mine_deliveries - mine,
                longest_stall,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether scenario `name` runs: all of them, unless `OSLO_CLUSTER_SCENARIOS` names some
/// (`R5,R6`, for working on one).
fn run(name: &str) -> bool {
    std::env::var("OSLO_CLUSTER_SCENARIOS")
        .map_or(true, |only| only.split(',').any(|s| s.trim() == name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_a_three_node_quorum_cluster() {
    testkit::require_nodes!();
    // The driver's warnings (reconnects, nacks) go with the test's output.
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .try_init();
    let cluster = Cluster::start("qq", 5781);
    let mut proxies = Vec::new();
    for n in &cluster.nodes {
        proxies.push(Proxy::start(&format!("127.0.0.1:{}", n.port)).await);
    }
    let bed = Bed { cluster, proxies };
    let calls = Calls::default();
    let servers = bed.servers("qq", &calls).await;

    // R1: the leader is killed during 10,000 confirmed casts; the client is on a follower.
    // R2: the same with the client on the killed node.
    for (name, on_it, from) in [("R1", false, 0), ("R2", true, 10_000)] {
        if !run(name) {
            continue;
        }
        let leader = bed.cluster.leader_of("qq").expect("a leader");
        let (t, on) = bed.client_on(|n| (n == leader) == on_it).await;
        let client = RpcClient::new(&t, Target::new("qq"));
        let run = casts_through(&client, &calls, from, 10_000, 3_000, || {
            bed.cluster.nodes[leader].kill();
        })
        .await;
        println!(
            "{name} leader (node {leader}) killed at 3,000 of 10,000 casts, client on node {on}: {} confirmed, lost {}, duplicated {}, longest publish stall {:.2} s",
            run.confirmed.len(),
            run.lost,
            run.duplicates,
            run.longest_stall.as_secs_f64()
        );
        assert_eq!(run.confirmed.len(), 10_000);
        assert_eq!(run.lost, 0);
        assert!(run.longest_stall <= Duration::from_secs(5));
        t.cleanup().await;
        bed.restart(leader);
    }

    // R3: 200 calls in flight (each 1 s on a server), timeout 10 s; the node holding the
    // client's reply queue (the one it is connected to) is killed.
    const T: Duration = Duration::from_secs(10);
    if run("R3") {
        let (t, on) = bed.client_on(|_| true).await;
        let client = RpcClient::builder(&t, Target::new("qq"))
            .timeout(T)
            .build()
            .unwrap();
        let before = bed.accepted();
        let warm: Value = client
            .call(&Context::new(), "echo", &json!({"value": 0}))
            .await
            .unwrap();
        assert_eq!(warm, json!(0));
        let reply_node = bed.connected_since(&before).unwrap_or(on);
        let pending = calls_in_flight(&client, 200, "sleep", &json!({"seconds": 1}));
        tokio::time::sleep(Duration::from_millis(300)).await;
        bed.cluster.nodes[reply_node].kill();
        let killed = Instant::now();
        let (ok, timed_out, longest) = how_they_ended(pending, T + Duration::from_secs(5)).await;
        all_answer(&client, 20).await;
        println!(
            "R3 node {reply_node} with the reply queue killed under 200 calls: {ok} answered, {timed_out} timed out, longest {:.1} s (timeout {} s); 20 of 20 calls after it answered, {:.1} s after the kill",
            longest.as_secs_f64(),
            T.as_secs(),
            killed.elapsed().as_secs_f64()
        );
        assert_eq!(ok + timed_out, 200);
        assert!(longest <= T + Duration::from_secs(1), "{longest:?}");
        t.cleanup().await;
        bed.restart(reply_node);
    }

    // R4: the node an RPC server consumes from is killed under 200 calls in flight.
    if run("R4") {
        let before = bed.accepted();
        let server_t = Transport::with_config(&bed.proxied_url(), &config()).unwrap();
        let r4_calls = Calls::default();
        let r4 = RpcServer::builder(&server_t, Target::new("r4").with_server("r4"))
            .endpoint(recording_endpoint("r4", &r4_calls))
            .build()
            .unwrap();
        r4.start().await.unwrap();
        let server_node = bed.connected_since(&before).unwrap();
        let t = Transport::with_config(&bed.cluster.url(), &config()).unwrap();
        let client = RpcClient::builder(&t, Target::new("r4"))
            .timeout(T)
            .build()
            .unwrap();
        let warm: Value = client
            .call(&Context::new(), "echo", &json!({"value": 0}))
            .await
            .unwrap();
        assert_eq!(warm, json!(0));
        let pending = calls_in_flight(&client, 200, "sleep", &json!({"seconds": 0.2}));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = bed.connections();
        bed.cluster.nodes[server_node].kill();
        let killed = Instant::now();
        while bed.connections() == seen {
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "the server never reconnected"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let resubscribed = killed.elapsed();
        let (ok, timed_out, longest) = how_they_ended(pending, T + Duration::from_secs(5)).await;
        all_answer(&client, 20).await;
        println!(
            "R4 node {server_node} the server consumes from killed under 200 calls: reconnected after {:.2} s; {ok} answered, {timed_out} timed out, longest {:.1} s (timeout {} s); 20 of 20 calls after it answered",
            resubscribed.as_secs_f64(),
            longest.as_secs_f64(),
            T.as_secs()
        );
        assert!(resubscribed <= Duration::from_secs(2), "{resubscribed:?}");
        assert!(longest <= T + Duration::from_secs(1), "{longest:?}");
        stop(&r4).await;
        server_t.cleanup().await;
        t.cleanup().await;
        bed.restart(server_node);
    }

    // R5: the leader is frozen (SIGSTOP) for 30 s under confirmed casts; the client is on a
    // follower. R6: the same with the client on the frozen node; its link must be found
    // dead within two heartbeats plus 2 s and the casts go on through another node.
    for client_on_it in [false, true] {
        if !run(if client_on_it { "R6" } else { "R5" }) {
            continue;
        }
        let leader = bed.cluster.leader_of("qq").expect("a leader");
        let (t, on) = bed.client_on(|n| (n == leader) == client_on_it).await;
        let client = RpcClient::new(&t, Target::new("qq"));
        let paused_at = Arc::new(Mutex::new(None::<(Instant, usize)>));
        let pid = bed.cluster.nodes[leader].pid();
        let from = if client_on_it { 30_000 } else { 20_000 };
        let watch = async {
            // Reconnections of the client show at the proxies.
            loop {
                if let Some((at, seen)) = *paused_at.lock().unwrap() {
                    if bed.connections() > seen {
                        return Some(at.elapsed());
                    }
                    if at.elapsed() > Duration::from_secs(40) {
                        return None;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let (run, reconnected) = tokio::join!(
            casts_through(&client, &calls, from, 10_000, 3_000, || {
                bed.cluster.nodes[leader].pause();
                *paused_at.lock().unwrap() = Some((Instant::now(), bed.connections()));
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(30));
                    let _ = std::process::Command::new("kill")
                        .args(["-CONT", &pid])
                        .status();
                });
            }),
            watch
        );
        let name = if client_on_it { "R6" } else { "R5" };
        println!(
            "{name} leader (node {leader}) frozen 30 s at 3,000 of 10,000 casts, client on node {on}: {} confirmed, lost {}, duplicated {}, longest publish stall {:.2} s, client reconnected after {}",
            run.confirmed.len(),
            run.lost,
            run.duplicates,
            run.longest_stall.as_secs_f64(),
            reconnected.map_or("never".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
        );
        assert_eq!(run.lost, 0);
        if client_on_it {
            // Found dead within two heartbeats plus 2 s; the reconnection follows after
            // kombu_reconnect_delay (0.5 s).
            let detected = reconnected.expect("the client left the frozen node");
            assert!(
                detected <= Duration::from_secs(2 * HEARTBEAT + 2) + Duration::from_millis(500),
                "{detected:?}"
            );
        } else {
            assert!(run.longest_stall <= Duration::from_secs(15));
        }
        t.cleanup().await;
        // Thawed by now (or soon): wait for three running members.
        let deadline = Instant::now() + Duration::from_secs(90);
        while bed.cluster.running() < 3 {
            assert!(
                Instant::now() < deadline,
                "the frozen node did not come back"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // R14: two of the three members down. A send with a finite retry budget fails with a
    // typed error, it does not hang; once they are back, traffic resumes by itself.
    if run("R14") {
        let (t, on) = bed.client_on(|_| true).await;
        let client = RpcClient::builder(&t, Target::new("qq"))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let down: Vec<usize> = (0..3).filter(|i| *i != on).collect();
        for i in &down {
            bed.cluster.nodes[*i].kill();
        }
        let started = Instant::now();
        let err = tokio::time::timeout(
            Duration::from_secs(120),
            client
                .prepare()
                .retry(Retry::Times(2))
                .build()
                .unwrap()
                .cast(&Context::new(), "record", &json!({ "value": 99_999_999 })),
        )
        .await
        .expect("a send with a finite retry never hangs")
        .unwrap_err();
        let failed_after = started.elapsed();
        for i in &down {
            bed.cluster.nodes[*i].spawn();
        }
        for i in &down {
            bed.cluster.nodes[*i].wait_up(started);
        }
        let back = Instant::now();
        let v: Value = client
            .prepare()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
            .call(&Context::new(), "echo", &json!({"value": "back"}))
            .await
            .unwrap();
        assert_eq!(v, json!("back"));
        println!(
            "R14 two of three members down: a send with retry 2 failed in {:.1} s ({:?}: {err}); after they returned a call was answered in {:.1} s",
            failed_after.as_secs_f64(),
            err.kind(),
            back.elapsed().as_secs_f64()
        );
        assert!(
            matches!(err.kind(), ErrorKind::DeliveryFailure | ErrorKind::Timeout),
            "{err:?}"
        );
        t.cleanup().await;
    }

    // R13: a notification whose handler always fails, on a quorum queue with a delivery
    // limit and a dead-letter exchange: it is dead-lettered after the limit, not redelivered
    // forever.
    if run("R13") {
        r13_poison_notifications_are_dead_lettered(&bed).await;
    }

    // R16: the node a batch listener consumes from is killed while notifications flow.
    if run("R16") {
        r16_batch_listener_survives_a_node_kill(&bed).await;
    }

    // R11: the whole cluster restarts under 100 clients.
    if run("R11") {
        r11_whole_cluster_restart(&bed).await;
    }
    shutdown(servers).await;
}

const DELIVERY_LIMIT: usize = 5;

async fn r13_poison_notifications_are_dead_lettered(bed: &Bed) {
    use amqprs::channel::{
        BasicGetArguments, ExchangeDeclareArguments, QueueBindArguments, QueueDeclareArguments,
    };
    use amqprs::connection::{Connection, OpenConnectionArguments};
    use oslo_messaging::notify::{
        Notification, NotificationEndpoint, NotificationListener, NotificationResult, Notifier,
        NotifyDriver, Priority,
    };
    // The dead-letter exchange and its queue, and a policy pointing r13 queues at it.
    let port = bed.cluster.nodes[0].port;
    let raw = Connection::open(&OpenConnectionArguments::new(
        "127.0.0.1",
        port,
        "guest",
        "guest",
    ))
    .await
    .unwrap();
    let ch = raw.open_channel(None).await.unwrap();
    ch.exchange_declare(ExchangeDeclareArguments::new("r13.dlx", "fanout"))
        .await
        .unwrap();
    ch.queue_declare(QueueDeclareArguments::new("r13.dead"))
        .await
        .unwrap();
    ch.queue_bind(QueueBindArguments::new("r13.dead", "r13.dlx", ""))
        .await
        .unwrap();
    bed.cluster
        .ctl(&[
            "set_policy",
            "r13",
            "^r13\\.",
            r#"{"dead-letter-exchange":"r13.dlx"}"#,
            "--apply-to",
            "queues",
        ])
        .unwrap();
    let conf = support::cluster::client_config("cluster", &[("rabbit_quorum_delivery_limit", "5")]);
    let t = Transport::with_config(&bed.cluster.url(), &conf).unwrap();
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = attempts.clone();
    let listener = NotificationListener::builder(&t, vec![Target::new("r13")])
        .allow_requeue(true)
        .endpoint(
            NotificationEndpoint::builder()
                .on(Priority::Info, move |_n: Notification| {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async { NotificationResult::Requeue }
                })
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    listener.start().await.unwrap();
    Notifier::builder(&t)
        .driver(NotifyDriver::MessagingV2)
        .topics(["r13"])
        .build()
        .unwrap()
        .info(&Context::new(), "poison", &json!({"always": "fails"}))
        .await
        .unwrap();
    let started = Instant::now();
    let dead = loop {
        let got = ch
            .basic_get(BasicGetArguments::new("r13.dead").no_ack(true).finish())
            .await
            .unwrap();
        if let Some((_, _, body)) = got {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not dead-lettered after {} attempts",
            attempts.load(std::sync::atomic::Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Nothing more arrives: the loop has ended.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let n = attempts.load(std::sync::atomic::Ordering::SeqCst);
    println!(
        "R13 a notification failing every time, x-delivery-limit {DELIVERY_LIMIT}: handled {n} times, then dead-lettered after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(String::from_utf8_lossy(&dead).contains("poison"));
    // The first delivery plus at most `limit` redeliveries.
    assert!((1..=DELIVERY_LIMIT + 1).contains(&n), "{n} attempts");
    listener.stop().await;
    listener.wait().await;
    t.cleanup().await;
    let _ = raw.close().await;
}

async fn r16_batch_listener_survives_a_node_kill(bed: &Bed) {
    use oslo_messaging::notify::{
        Notification, NotificationEndpoint, NotificationListener, Notifier, NotifyDriver, Priority,
    };
    let before = bed.accepted();
    let lt = Transport::with_config(&bed.proxied_url(), &config()).unwrap();
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let record = seen.clone();
    let listener = NotificationListener::builder(&lt, vec![Target::new("r16")])
        .endpoint(
            NotificationEndpoint::builder()
                .on(Priority::Info, move |batch: Vec<Notification>| {
                    let record = record.clone();
                    async move {
                        record
                            .lock()
                            .unwrap()
                            .extend(batch.iter().filter_map(|n| n.payload.as_u64()));
                    }
                })
                .build()
                .unwrap(),
        )
        .batch_size(10)
        .batch_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    listener.start().await.unwrap();
    let node = bed.connected_since(&before).unwrap();
    let t = Transport::with_config(&bed.cluster.url(), &config()).unwrap();
    let notifier = Notifier::builder(&t)
        .driver(NotifyDriver::MessagingV2)
        .topics(["r16"])
        .build()
        .unwrap();
    let mut sent = Vec::new();
    for i in 0..2_000u64 {
        if i == 600 {
            bed.cluster.nodes[node].kill();
        }
        notifier
            .info(&Context::new(), "r16", &i)
            .await
            .unwrap_or_else(|e| panic!("notification {i}: {e}"));
        sent.push(i);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let (distinct, total) = loop {
        let got = seen.lock().unwrap().clone();
        let distinct: BTreeSet<u64> = got.iter().copied().collect();
        if distinct.len() == sent.len() || Instant::now() > deadline {
            break (distinct, got.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lost = sent.iter().filter(|i| !distinct.contains(i)).count();
    println!(
        "R16 node {node} killed under a batch listener at 600 of 2,000 notifications: lost {lost}, duplicated {}",
        total - distinct.len()
    );
    assert_eq!(lost, 0);
    listener.stop().await;
    listener.wait().await;
    lt.cleanup().await;
    t.cleanup().await;
    bed.restart(node);
}

async fn r11_whole_cluster_restart(bed: &Bed) {
    const CLIENTS: usize = 100;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let t = Transport::with_config(&bed.proxied_url(), &config()).unwrap();
        let c = RpcClient::new(&t, Target::new("qq"));
        c.cast(&Context::new(), "record", &json!({ "value": 50_000_000 }))
            .await
            .unwrap();
        clients.push((t, c));
    }
    let first = bed.connections();
    for n in &bed.cluster.nodes {
        n.kill();
    }
    let down = Instant::now();
    // Every client sends one cast; each waits (retry forever) until the cluster is back.
    let mut pending = Vec::new();
    for (i, (_, c)) in clients.iter().enumerate() {
        let c = c.clone();
        pending.push(tokio::spawn(async move {
            c.cast(
                &Context::new(),
                "record",
                &json!({ "value": 60_000_000 + i as u64 }),
            )
            .await
            .map(|()| Instant::now())
        }));
    }
    // Connection attempts, counted at the proxies, while the nodes are down and coming up.
    let mut samples = vec![(Instant::now(), first)];
    let outage = Instant::now() + Duration::from_secs(5);
    while Instant::now() < outage {
        tokio::time::sleep(Duration::from_millis(100)).await;
        samples.push((Instant::now(), bed.connections()));
    }
    for n in &bed.cluster.nodes {
        n.spawn();
    }
    let spawned = Instant::now();
    let mut up_at = None;
    let mut done = Vec::new();
    let mut pending = pending;
    while !pending.is_empty() || up_at.is_none() {
        samples.push((Instant::now(), bed.connections()));
        if up_at.is_none() && bed.cluster.running() == 3 {
            up_at = Some(Instant::now());
        }
        let mut still = Vec::new();
        for p in pending {
            if p.is_finished() {
                done.push(p.await.unwrap().unwrap());
            } else {
                still.push(p);
            }
        }
        pending = still;
        assert!(
            spawned.elapsed() < Duration::from_secs(240),
            "{} clients not back",
            pending.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let up_at = up_at.unwrap();
    let back = done
        .iter()
        .map(|d| d.saturating_duration_since(up_at))
        .max()
        .unwrap_or_default();
    // The most attempts in any one second.
    let peak = samples
        .iter()
        .map(|(t, n)| {
            let later = samples
                .iter()
                .filter(|(u, _)| *u <= *t + Duration::from_secs(1))
                .map(|(_, m)| *m)
                .max()
                .unwrap_or(*n);
            later - n
        })
        .max()
        .unwrap_or(0);
    let attempts = samples.last().map_or(0, |(_, n)| n - first);
    println!(
        "R11 whole cluster killed under {CLIENTS} clients, down {:.1} s until all nodes ran: every client back {:.1} s after that; {attempts} connection attempts, at most {peak} in one second",
        (up_at - down).as_secs_f64(),
        back.as_secs_f64()
    );
    assert_eq!(done.len(), CLIENTS);
    assert!(back <= Duration::from_secs(60), "{back:?}");
    assert!(peak <= 2 * CLIENTS, "{peak} attempts in one second");
    for (t, _) in clients {
        t.cleanup().await;
    }
}
