//! The soak (L2): mixed call, cast and notification traffic at about half the rate measured
//! at its start, on a private three-node quorum cluster, with a fault every few minutes (a
//! leader kill, an operator closing every connection, a reset of every client connection, in
//! turn). Runs `OSLO_SOAK_MINUTES` minutes (2 by default, as in `scripts/test`; `scripts/soak
//! --minutes 60` for the long run). Its last line is one JSON object: lost, duplicates,
//! memory growth after the warm-up, file descriptor and task deltas, reply queues left.
//!
//! Memory is sampled three ways, each less the soak's own bookkeeping: the process's RSS; its
//! anonymous part (`RssAnon`: heap, stacks, private memory), which is what a leak grows, while
//! the rest of the RSS is pages of the test binary and its libraries, faulted in as code runs
//! for the first time; and the bytes live allocations hold (counted by a wrapping global
//! allocator), which tells a leak (live bytes that keep growing) from allocator slack
//! (anonymous memory that grows while live bytes stay flat).
//!
//! The warm-up lasts at least 5 minutes (a quarter of a short run) and until each kind of fault
//! has happened once, so the baseline has seen every code path and its first burst. Asserted
//! after it: live bytes grow at most 5% (a leak grows them); anonymous memory grows at most
//! 15% in a short run and 25% in a run of 30 minutes or more, a guard against runaway growth
//! rather than a leak test. The whole RSS, the growth over the second half of the window and
//! the growth per hour are reported too.
//!
//! Why anonymous memory is not asserted flat: under glibc's allocator it grows in small steps
//! at the faults (a reconnect allocates a burst of buffers from whichever thread runs it, and
//! glibc keeps the freed pages in that thread's arena), about 20% over a long run while live
//! bytes stay flat. The same run under mimalloc shows no trend at all (from a larger base),
//! and `MALLOC_ARENA_MAX=2` does not change glibc's figure, so the growth is allocator slack,
//! not a leak; a leak shows in the live bytes first.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oslo_messaging::notify::{
    Notification, NotificationEndpoint, NotificationListener, Notifier, NotifyDriver, Priority,
};
use oslo_messaging::rpc::{Endpoint, Request, RpcClient, RpcError, RpcServer};
use oslo_messaging::{Config, Context, Target, Transport};
use serde_json::{Value, json};
use support::cluster::Cluster;
use support::proxy::Proxy;
use support::{alive_tasks, open_fds, rss_anon_kib, rss_kib, settles, stop};

/// Counts the bytes the process's allocations hold.
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// The soak's own four bitmaps, in bytes: measured memory leaves them out.
const BOOKKEEPING: usize = 4 * CAPACITY.div_ceil(64) as usize * 8;

/// Bytes held by live allocations, in KiB, less the soak's bookkeeping.
fn heap_kib() -> u64 {
    (ALLOCATOR.allocated().saturating_sub(BOOKKEEPING) / 1024) as u64
}

/// Resident anonymous memory, in KiB, less the soak's bookkeeping (written up front, so all
/// resident).
fn anon_kib() -> u64 {
    rss_anon_kib().saturating_sub((BOOKKEEPING / 1024) as u64)
}

/// The whole resident memory, in KiB, less the soak's bookkeeping.
fn own_rss_kib() -> u64 {
    rss_kib().saturating_sub((BOOKKEEPING / 1024) as u64)
}

/// A set of message numbers in a bitmap sized and written up front, so the bookkeeping of a
/// long run does not itself grow the memory the soak measures (untouched zeroed pages would
/// become resident one by one as the numbers grow); also counts numbers seen twice.
struct Bits {
    words: Mutex<Vec<u64>>,
    again: AtomicU64,
}

impl Bits {
    fn new(capacity: u64) -> Self {
        Self {
            words: Mutex::new({
                let n = capacity.div_ceil(64) as usize;
                // On purpose: `resize` writes every word, where `vec![0; n]` would map zeroed
                // pages that become resident one by one.
                #[allow(clippy::slow_vector_initialization)]
                let words = {
                    let mut words = Vec::with_capacity(n);
                    words.resize(n, 0);
                    words
                };
                words
            }),
            again: AtomicU64::new(0),
        }
    }

    fn insert(&self, i: u64) {
        let mut w = self.words.lock().unwrap();
        let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
        assert!(word < w.len(), "the soak ran past its bookkeeping ({i})");
        if w[word] & bit != 0 {
            self.again.fetch_add(1, Ordering::Relaxed);
        }
        w[word] |= bit;
    }

    fn len(&self) -> u64 {
        self.words
            .lock()
            .unwrap()
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum()
    }

    /// Numbers in `self` that `other` lacks.
    fn missing_from(&self, other: &Self) -> u64 {
        let (a, b) = (self.words.lock().unwrap(), other.words.lock().unwrap());
        a.iter()
            .zip(b.iter())
            .map(|(x, y)| u64::from((x & !y).count_ones()))
            .sum()
    }
}

/// Room for this many units of traffic (2.5 MiB per bitmap at most).
const CAPACITY: u64 = 20_000_000;

/// The servers' endpoint: `echo` answers `value`, `record` notes it.
fn endpoint(received: &Arc<Bits>) -> Endpoint {
    let received = received.clone();
    Endpoint::builder()
        .method("echo", |req: Request<Value>| async move {
            Ok::<_, RpcError>(req.args()["value"].clone())
        })
        .method("record", move |req: Request<Value>| {
            let received = received.clone();
            async move {
                if let Some(i) = req.args()["value"].as_u64() {
                    received.insert(i);
                }
                Ok::<_, RpcError>(())
            }
        })
        .build()
        .unwrap()
}

fn config() -> Config {
    support::cluster::client_config("soak", &[("rabbit_qos_prefetch_count", "100")])
}

/// Body lengths after oslo's `tools/messages_length.yaml` (0.9 to 11.3 KB, mean about 3.4 KB).
const LENGTHS: [usize; 10] = [900, 1500, 1500, 2000, 2500, 3000, 3500, 4500, 6500, 8000];

fn payload(i: u64) -> String {
    "x".repeat(LENGTHS[(i % LENGTHS.len() as u64) as usize])
}

/// What the traffic did.
struct Tally {
    casts: Bits,
    notes: Bits,
    calls_ok: AtomicU64,
    calls_failed: AtomicU64,
}

/// One unit of traffic: a call, a cast and a notification, numbered `i`.
async fn unit(client: &RpcClient, notifier: &Notifier, tally: &Tally, i: u64) {
    let body = payload(i);
    match client
        .call::<Value>(&Context::new(), "echo", &json!({ "value": i, "pad": body }))
        .await
    {
        Ok(v) if v == json!(i) => tally.calls_ok.fetch_add(1, Ordering::Relaxed),
        _ => tally.calls_failed.fetch_add(1, Ordering::Relaxed),
    };
    if client
        .cast(
            &Context::new(),
            "record",
            &json!({ "value": i, "pad": body }),
        )
        .await
        .is_ok()
    {
        tally.casts.insert(i);
    }
    if notifier
        .info(&Context::new(), "soak", &json!({ "n": i, "pad": body }))
        .await
        .is_ok()
    {
        tally.notes.insert(i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak() {
    testkit::require_nodes!();
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::io::stderr)
        .try_init();
    let minutes: f64 = std::env::var("OSLO_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(2.0);
    let total = Duration::from_secs_f64(minutes * 60.0);
    let warmup = (total / 4).min(Duration::from_secs(300));
    let fault_every = (total / 5).clamp(Duration::from_secs(20), Duration::from_secs(180));
    // After the last first-of-its-kind fault, time for its burst to pass.
    let settle = (fault_every / 2).min(Duration::from_secs(60));
    let cluster = Cluster::start("soak", 5784);
    let mut proxies = Vec::new();
    for n in &cluster.nodes {
        proxies.push(Proxy::start(&format!("127.0.0.1:{}", n.port)).await);
    }
    let proxied: Vec<String> = proxies
        .iter()
        .map(|p| format!("guest:guest@{}", p.addr()))
        .collect();
    let client_url = format!("rabbit://{}/", proxied.join(","));

    // Three servers and a listener, each on its own connection to the whole cluster.
    let received_casts = Arc::new(Bits::new(CAPACITY));
    let received_notes = Arc::new(Bits::new(CAPACITY));
    let mut servers = Vec::new();
    for i in 1..=3 {
        let t = Transport::with_config(&cluster.url(), &config()).unwrap();
        let name = format!("s{i}");
        let s = RpcServer::builder(&t, Target::new("soak").with_server(&name))
            .endpoint(endpoint(&received_casts))
            .build()
            .unwrap();
        s.start().await.unwrap();
        servers.push((t, s));
    }
    let record = received_notes.clone();
    let listener_t = Transport::with_config(&cluster.url(), &config()).unwrap();
    let listener = NotificationListener::builder(&listener_t, vec![Target::new("soak_n")])
        .endpoint(
            NotificationEndpoint::builder()
                .on(Priority::Info, move |n: Notification| {
                    let record = record.clone();
                    async move {
                        if let Some(i) = n.payload["n"].as_u64() {
                            record.insert(i);
                        }
                    }
                })
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    listener.start().await.unwrap();

    let t = Transport::with_config(&client_url, &config()).unwrap();
    let client = RpcClient::builder(&t, Target::new("soak"))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let notifier = Notifier::builder(&t)
        .driver(NotifyDriver::MessagingV2)
        .topics(["soak_n"])
        .build()
        .unwrap();
    let tally = Arc::new(Tally {
        casts: Bits::new(CAPACITY),
        notes: Bits::new(CAPACITY),
        calls_ok: AtomicU64::new(0),
        calls_failed: AtomicU64::new(0),
    });
    let next = Arc::new(AtomicU64::new(0));

    // The rate: as many units as 8 workers manage in 10 s, then half of that.
    let running = Arc::new(AtomicBool::new(true));
    let measure = |pace: Option<Duration>| {
        let mut workers = Vec::new();
        for _ in 0..8 {
            let (client, notifier, tally, next, running) = (
                client.clone(),
                notifier.clone(),
                tally.clone(),
                next.clone(),
                running.clone(),
            );
            workers.push(tokio::spawn(async move {
                while running.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    unit(&client, &notifier, &tally, i).await;
                    if let Some(p) = pace {
                        tokio::time::sleep(p.saturating_sub(started.elapsed())).await;
                    }
                }
            }));
        }
        workers
    };
    let workers = measure(None);
    tokio::time::sleep(Duration::from_secs(10)).await;
    running.store(false, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let full_rate = next.load(Ordering::SeqCst) as f64 / 10.0;
    // Half the rate: each of the 8 workers sends a unit every 16 / full_rate seconds.
    let pace = Duration::from_secs_f64(16.0 / full_rate.max(1.0));
    running.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let workers = measure(Some(pace));

    let mut baseline = None;
    let mut baseline_at = Duration::ZERO;
    let mut midpoint = None;
    let mut last_fault_at = Duration::ZERO;
    let mut faults = Vec::new();
    let mut next_fault = started + fault_every;
    let kinds = ["leader kill", "forced close", "proxy reset"];
    // Memory over time: about 30 samples a run, none closer than 10 s.
    let sample_every = (total / 30).max(Duration::from_secs(10));
    let mut next_sample = started;
    while started.elapsed() < total {
        let warm = started.elapsed() >= warmup
            && faults.len() >= kinds.len()
            && started.elapsed() >= last_fault_at + settle;
        if baseline.is_none() && warm {
            baseline_at = started.elapsed();
            // The 8 traffic workers end before the last count.
            baseline = Some((
                own_rss_kib(),
                anon_kib(),
                heap_kib(),
                open_fds(),
                alive_tasks().saturating_sub(8),
            ));
        }
        if baseline.is_some()
            && midpoint.is_none()
            && started.elapsed() >= baseline_at + (total.saturating_sub(baseline_at)) / 2
        {
            midpoint = Some(anon_kib());
        }
        if Instant::now() >= next_sample {
            println!(
                "soak: t={}s units={} rss_kib={} anon_kib={} heap_kib={} fds={} tasks={}",
                started.elapsed().as_secs(),
                next.load(Ordering::Relaxed),
                own_rss_kib(),
                anon_kib(),
                heap_kib(),
                open_fds(),
                alive_tasks()
            );
            next_sample += sample_every;
        }
        if Instant::now() >= next_fault && started.elapsed() + Duration::from_secs(20) < total {
            let kind = kinds[faults.len() % kinds.len()];
            let at = started.elapsed().as_secs();
            match kind {
                "leader kill" => {
                    let leader = cluster.leader_of("soak").unwrap_or(0);
                    cluster.nodes[leader].kill();
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    tokio::task::block_in_place(|| cluster.nodes[leader].boot());
                }
                "forced close" => {
                    let _ = cluster.ctl(&["close_all_connections", "soak"]);
                }
                _ => proxies.iter().for_each(Proxy::reset),
            }
            faults.push(json!({"at_s": at, "fault": kind}));
            last_fault_at = started.elapsed();
            next_fault = Instant::now() + fault_every;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.store(false, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }

    // Everything confirmed must arrive.
    let deadline = Instant::now() + Duration::from_secs(90);
    let lost = loop {
        let lost =
            tally.casts.missing_from(&received_casts) + tally.notes.missing_from(&received_notes);
        if lost == 0 || Instant::now() > deadline {
            break lost;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let duplicates =
        received_casts.again.load(Ordering::SeqCst) + received_notes.again.load(Ordering::SeqCst);
    let (rss0, anon0, heap0, fds0, tasks0) = baseline.expect("a baseline after the warm-up");
    let (rss1, anon1, heap1) = (own_rss_kib(), anon_kib(), heap_kib());
    let measured_h = (started.elapsed() - baseline_at).as_secs_f64() / 3600.0;
    let anon_mid = midpoint.expect("a sample in the middle of the measured window");
    let fds1 = settles(open_fds, fds0, 2, Duration::from_secs(20)).await;
    let tasks1 = settles(alive_tasks, tasks0, 2, Duration::from_secs(20)).await;
    t.cleanup().await;
    listener.stop().await;
    listener.wait().await;
    listener_t.cleanup().await;
    for (st, s) in servers {
        stop(&s).await;
        st.cleanup().await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let queues = cluster
        .ctl(&["-q", "list_queues", "name", "--formatter", "json"])
        .unwrap_or_default();
    let reply_queues = serde_json::from_str::<Value>(&queues)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|q| q["name"].as_str().is_some_and(|n| n.starts_with("reply_")))
        .count();
    let growth = |a: u64, b: u64| ((b as f64 - a as f64) * 1000.0 / a as f64).round() / 10.0;
    let (rss_growth_pct, anon_growth_pct) = (growth(rss0, rss1), growth(anon0, anon1));
    let (anon_late_growth_pct, heap_growth_pct) = (growth(anon_mid, anon1), growth(heap0, heap1));
    let anon_kib_per_hour = ((anon1 as f64 - anon0 as f64) / measured_h).round();
    let report = json!({
        "minutes": minutes,
        "rate_per_s": (full_rate / 2.0 * 3.0).round(),
        "calls_ok": tally.calls_ok.load(Ordering::SeqCst),
        "calls_failed": tally.calls_failed.load(Ordering::SeqCst),
        "casts": tally.casts.len(),
        "notifications": tally.notes.len(),
        "faults": faults,
        "warmup_s": baseline_at.as_secs(),
        "lost": lost,
        "duplicates": duplicates,
        "rss_kib": [rss0, rss1],
        "rss_growth_pct": rss_growth_pct,
        "anon_kib": [anon0, anon_mid, anon1],
        "anon_growth_pct": anon_growth_pct,
        "anon_late_growth_pct": anon_late_growth_pct,
        "anon_kib_per_hour": anon_kib_per_hour,
        "heap_kib": [heap0, heap1],
        "heap_growth_pct": heap_growth_pct,
        "fd_delta": fds1 as i64 - fds0 as i64,
        "tasks_delta": tasks1 as i64 - tasks0 as i64,
        "reply_queues_leaked": reply_queues,
    });
    println!("{report}");
    assert_eq!(lost, 0, "{report}");
    assert_eq!(reply_queues, 0, "{report}");
    assert!(fds1 <= fds0 + 2 && tasks1 <= tasks0 + 2, "{report}");
    // See the module documentation for what is asserted and why.
    assert!(heap_growth_pct <= 5.0, "{report}");
    if minutes >= 30.0 {
        assert!(anon_growth_pct <= 25.0, "{report}");
    } else {
        assert!(anon_growth_pct <= 15.0, "{report}");
    }
}
