//! `bench`: load generators and servers with the message shapes of oslo.messaging's
//! `tools/simulator.py` (method `info`, `message = [seq, cargo, client_ts, server_ts,
//! return_ts]`, v1 `compute.start` notifications), so either side can face a Python peer.
//!
//! Servers print JSON lines on stdout: `ready`, `done` (once `--count` messages arrived) and
//! `stopped`, with the epoch times of the first and last message. Clients print one summary:
//! throughput, latency percentiles and errors (JSON with `--json`).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oslo_messaging::notify::{
    Notification, NotificationEndpoint, NotificationListener, Notifier, NotifyDriver,
};
use oslo_messaging::rpc::{Endpoint, Request, RpcClient, RpcError, RpcServer};
use oslo_messaging::{Context, Error, ErrorKind, Priority, Target};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Failure;
use crate::cli::{
    BenchCommand, BenchLoad, BenchNotifyClientArgs, BenchNotifyServerArgs, BenchRpcClientArgs,
    BenchServerArgs, DriverArg, EXIT_FAILURE, EXIT_OK, Global, PayloadSize,
};

pub(crate) async fn run(global: &Global, command: &BenchCommand) -> Result<u8, Failure> {
    match command {
        BenchCommand::RpcServer(a) => rpc_server(global, a).await,
        BenchCommand::RpcClient(a) => rpc_client(global, a).await,
        BenchCommand::NotifyServer(a) => notify_server(global, a).await,
        BenchCommand::NotifyClient(a) => notify_client(global, a).await,
    }
}

/// Seconds since the epoch, as Python's `time.time()`.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

// ------------------------------------------------------------------ payloads

/// Bucket weights (per cent) of 500-byte message-length buckets, read off oslo.messaging's
/// `tools/messages_length.yaml` (lengths seen in a Rally boot-and-delete run): mostly 1 to
/// 3 KB, a tail to 11 KB, mean about 3.2 KB.
const OSLO_BUCKETS: [(usize, u32); 16] = [
    (500, 2),
    (1000, 8),
    (1500, 22),
    (2000, 22),
    (2500, 12),
    (3000, 4),
    (3500, 2),
    (4000, 3),
    (4500, 4),
    (5000, 5),
    (5500, 2),
    (6000, 4),
    (6500, 5),
    (7000, 2),
    (7500, 2),
    (11000, 1),
];

/// Cargo: one random lowercase string, sliced to each message's size (generation is not
/// what we measure).
struct Cargo {
    text: String,
    size: PayloadSize,
}

impl Cargo {
    fn new(size: PayloadSize) -> Self {
        let longest = match size {
            PayloadSize::Fixed(n) => n,
            PayloadSize::Oslo => 11_500,
        };
        let text = (0..longest).map(|_| fastrand::lowercase()).collect();
        Self { text, size }
    }

    fn next(&self) -> &str {
        match self.size {
            PayloadSize::Fixed(_) => &self.text,
            PayloadSize::Oslo => {
                let total: u32 = OSLO_BUCKETS.iter().map(|(_, w)| w).sum();
                let mut pick = fastrand::u32(0..total);
                let mut start = OSLO_BUCKETS[0].0;
                for (bucket, weight) in OSLO_BUCKETS {
                    if pick < weight {
                        start = bucket;
                        break;
                    }
                    pick -= weight;
                }
                &self.text[..start + fastrand::usize(0..500)]
            }
        }
    }
}

/// The simulator's message: `[seq, cargo, client_ts, server_ts, return_ts]`.
#[derive(Serialize)]
struct Info<'a> {
    message: (u64, &'a str, f64, Option<f64>, Option<f64>),
}

// ------------------------------------------------------------------ servers

/// Messages counted by a server, with the epoch times of the first and last.
#[derive(Default)]
struct Tally {
    count: AtomicU64,
    first: OnceLock<f64>,
    last: AtomicU64,
    target: Option<u64>,
    done: tokio::sync::Notify,
}

impl Tally {
    fn new(target: Option<u64>) -> Self {
        Self {
            target,
            ..Self::default()
        }
    }

    fn hit(&self) {
        let t = now();
        self.first.get_or_init(|| t);
        self.last.fetch_max(t.to_bits(), Ordering::Relaxed);
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if self.target == Some(n) {
            self.done.notify_one();
        }
    }

    fn line(&self, event: &str) -> Value {
        json!({
            "event": event,
            "impl": "rust",
            "received": self.count.load(Ordering::Relaxed),
            "first_ts": self.first.get(),
            "last_ts": self.first.get().map(|_| f64::from_bits(self.last.load(Ordering::Relaxed))),
        })
    }
}

/// Serves until Ctrl-C, SIGTERM or `duration`; prints `done` when the tally reaches its
/// target.
async fn serve_until_stopped(tally: &Tally, duration: Option<f64>, people: bool) {
    let stop = async {
        match duration {
            Some(secs) => {
                tokio::select! {
                    () = super::shutdown_signal() => {}
                    () = tokio::time::sleep(Duration::from_secs_f64(secs)) => {}
                }
            }
            None => super::shutdown_signal().await,
        }
    };
    tokio::pin!(stop);
    let mut announced = false;
    loop {
        tokio::select! {
            () = &mut stop => break,
            () = tally.done.notified(), if !announced => {
                announced = true;
                if people {
                    eprintln!("received {} messages", tally.count.load(Ordering::Relaxed));
                } else {
                    super::out(&tally.line("done").to_string());
                }
            }
        }
    }
}

fn announce_ready(people: bool, what: &str) {
    if people {
        eprintln!("{what}; Ctrl-C stops");
    } else {
        super::out(
            &json!({"event": "ready", "impl": "rust", "pid": std::process::id()}).to_string(),
        );
    }
}

fn announce_stopped(tally: &Tally, people: bool, started: Instant) {
    if people {
        let n = tally.count.load(Ordering::Relaxed);
        let span = match (
            tally.first.get(),
            f64::from_bits(tally.last.load(Ordering::Relaxed)),
        ) {
            (Some(first), last) if last > *first => last - first,
            _ => started.elapsed().as_secs_f64(),
        };
        eprintln!(
            "received {n} messages in {span:.2} s ({:.0}/s)",
            n as f64 / span.max(1e-9)
        );
    } else {
        super::out(&tally.line("stopped").to_string());
    }
}

#[derive(Deserialize)]
struct InfoArgs {
    message: Value,
}

async fn rpc_server(global: &Global, args: &BenchServerArgs) -> Result<u8, Failure> {
    super::serve_metrics(args.metrics_addr)?;
    let conf = super::load_config(global)?;
    let transport = super::transport(global, &conf, None)?;
    let tally = Arc::new(Tally::new(args.count));
    let endpoint = Endpoint::builder()
        .state(tally.clone())
        .method(
            "info",
            |oslo_messaging::rpc::State(tally): oslo_messaging::rpc::State<Arc<Tally>>,
             req: Request<InfoArgs>| async move {
                tally.hit();
                let mut message = req.into_args().message;
                if let Some(slot) = message.as_array_mut().and_then(|m| m.get_mut(3)) {
                    *slot = json!(now());
                }
                Ok::<_, RpcError>(message)
            },
        )
        .build()?;
    let server = RpcServer::builder(
        &transport,
        Target::new(&args.topic.topic).with_server(&args.server),
    )
    .endpoint(endpoint)
    .executor_pool_size(usize::from(args.concurrency))
    .build()?;
    server.start().await?;
    let people = super::for_people(global);
    let started = Instant::now();
    announce_ready(
        people,
        &format!(
            "serving info() on topic {:?} as {:?}",
            args.topic.topic, args.server
        ),
    );
    serve_until_stopped(&tally, args.duration, people).await;
    server.stop().await;
    server.wait().await;
    transport.cleanup().await;
    announce_stopped(&tally, people, started);
    Ok(EXIT_OK)
}

async fn notify_server(global: &Global, args: &BenchNotifyServerArgs) -> Result<u8, Failure> {
    super::serve_metrics(args.metrics_addr)?;
    let conf = super::load_config(global)?;
    let transport = super::notification_transport(global, &conf)?;
    let tally = Arc::new(Tally::new(args.count));
    let mut endpoint = NotificationEndpoint::builder();
    for p in Priority::ALL {
        let tally = tally.clone();
        endpoint = endpoint.on(p, move |_n: Notification| {
            let tally = tally.clone();
            async move { tally.hit() }
        });
    }
    let mut builder =
        NotificationListener::builder(&transport, vec![Target::new(&args.topic.topic)])
            .endpoint(endpoint.build()?);
    if let Some(pool) = &args.pool {
        builder = builder.pool(pool);
    }
    let listener = builder.build()?;
    listener.start().await?;
    let people = super::for_people(global);
    let started = Instant::now();
    announce_ready(
        people,
        &format!("counting notifications on topic {:?}", args.topic.topic),
    );
    serve_until_stopped(&tally, args.duration, people).await;
    listener.stop().await;
    listener.wait().await;
    transport.cleanup().await;
    announce_stopped(&tally, people, started);
    Ok(EXIT_OK)
}

// ------------------------------------------------------------------ clients

/// What each sender task measured.
#[derive(Default)]
struct Measured {
    latencies_ms: Vec<f64>,
    errors: BTreeMap<String, u64>,
}

impl Measured {
    fn record(&mut self, started: Instant, outcome: Result<(), Error>) {
        match outcome {
            Ok(()) => self
                .latencies_ms
                .push(started.elapsed().as_secs_f64() * 1e3),
            Err(e) => *self.errors.entry(error_kind(&e)).or_default() += 1,
        }
    }

    fn merge(&mut self, other: Self) {
        self.latencies_ms.extend(other.latencies_ms);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

fn error_kind(e: &Error) -> String {
    match e.kind() {
        ErrorKind::Timeout => "MessagingTimeout".to_owned(),
        ErrorKind::Remote => e
            .remote_error()
            .map_or_else(|| "RemoteError".to_owned(), |r| r.class().to_owned()),
        other => format!("{other:?}"),
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Shares out operations to the sender tasks: a count, or a deadline.
struct Plan {
    next: AtomicU64,
    total: Option<u64>,
    deadline: Option<Instant>,
    stopped: AtomicBool,
}

impl Plan {
    fn new(load: &BenchLoad) -> Self {
        let total = match (load.calls, load.duration) {
            (Some(n), _) => Some(n),
            (None, Some(_)) => None,
            (None, None) => Some(1000),
        };
        Self {
            next: AtomicU64::new(0),
            total,
            deadline: load
                .duration
                .map(|d| Instant::now() + Duration::from_secs_f64(d)),
            stopped: AtomicBool::new(false),
        }
    }

    /// The next sequence number, or `None` when the run is over.
    fn take(&self) -> Option<u64> {
        if self.stopped.load(Ordering::Relaxed)
            || self.deadline.is_some_and(|d| Instant::now() >= d)
        {
            return None;
        }
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        match self.total {
            Some(total) if seq >= total => None,
            _ => Some(seq),
        }
    }

    /// One sender task's loop: runs `op` on each sequence number it takes, measuring each.
    async fn work<Fut>(&self, mut op: impl FnMut(u64) -> Fut) -> Measured
    where
        Fut: Future<Output = Result<(), Error>>,
    {
        let mut m = Measured::default();
        while let Some(seq) = self.take() {
            let t0 = Instant::now();
            let outcome = op(seq).await;
            m.record(t0, outcome);
        }
        m
    }

    fn done_so_far(&self) -> u64 {
        let n = self.next.load(Ordering::Relaxed);
        self.total.map_or(n, |t| n.min(t))
    }
}

/// Waits for the sender tasks, then ends the progress line; returns what they measured and
/// the wall time since `started`.
async fn gather(
    tasks: Vec<tokio::task::JoinHandle<Measured>>,
    bar: Option<tokio::task::JoinHandle<()>>,
    started: Instant,
) -> (Measured, Duration) {
    let mut measured = Measured::default();
    for t in tasks {
        if let Ok(m) = t.await {
            measured.merge(m);
        }
    }
    let wall = started.elapsed();
    if let Some(bar) = bar {
        bar.abort();
        eprintln!();
    }
    (measured, wall)
}

/// A progress line on stderr while the run lasts, when stderr is a terminal.
fn progress(
    plan: Arc<Plan>,
    what: &'static str,
    enabled: bool,
) -> Option<tokio::task::JoinHandle<()>> {
    if !enabled || !std::io::stderr().is_terminal() {
        return None;
    }
    Some(tokio::spawn(async move {
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let done = plan.done_so_far();
            let elapsed = started.elapsed().as_secs_f64();
            let fraction = match (plan.total, plan.deadline) {
                (Some(total), _) => done as f64 / total.max(1) as f64,
                (None, Some(deadline)) => {
                    let whole = deadline.saturating_duration_since(started).as_secs_f64() + elapsed;
                    elapsed / whole.max(1e-9)
                }
                (None, None) => 0.0,
            }
            .clamp(0.0, 1.0);
            let width = 30;
            let filled = (fraction * f64::from(width)).round() as usize;
            eprint!(
                "\r[{}{}] {done} {what} {:.0}/s ",
                "#".repeat(filled),
                ".".repeat(width as usize - filled),
                done as f64 / elapsed.max(1e-9)
            );
        }
    }))
}

/// What a client run gave.
struct Run {
    attempted: u64,
    measured: Measured,
    start_ts: f64,
    wall: Duration,
}

/// The summary every client prints.
fn report(global: &Global, mode: &str, extra: Value, load: &BenchLoad, run: Run) -> u8 {
    let Run {
        attempted,
        mut measured,
        start_ts,
        wall,
    } = run;
    measured
        .latencies_ms
        .sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let ok = measured.latencies_ms.len() as u64;
    let errors: u64 = measured.errors.values().sum();
    let secs = wall.as_secs_f64();
    let l = &measured.latencies_ms;
    let mean = (!l.is_empty()).then(|| l.iter().sum::<f64>() / l.len() as f64);
    let payload = match load.payload_size {
        PayloadSize::Fixed(n) => json!(n),
        PayloadSize::Oslo => json!("oslo"),
    };
    let mut summary = json!({
        "mode": mode,
        "impl": "rust",
        "calls": attempted,
        "ok": ok,
        "errors": errors,
        "error_kinds": measured.errors,
        "concurrency": load.concurrency,
        "payload_size": payload,
        "start_ts": start_ts,
        "end_ts": start_ts + secs,
        "duration_s": secs,
        "throughput": ok as f64 / secs.max(1e-9),
        "latency_ms": {
            "p50": percentile(l, 50.0),
            "p90": percentile(l, 90.0),
            "p99": percentile(l, 99.0),
            "max": l.last(),
            "mean": mean,
        },
    });
    if let (Some(s), Some(e)) = (summary.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    if global.json {
        super::out(&summary.to_string());
    } else {
        let f = |k: &str| {
            summary["latency_ms"][k]
                .as_f64()
                .map_or("-".to_owned(), |v| format!("{v:.3}"))
        };
        super::out(&format!(
            "{mode}: {ok} ok, {errors} errors in {secs:.2} s: {:.0}/s with {} in flight\n\
             latency ms: p50 {}  p90 {}  p99 {}  max {}  mean {}",
            summary["throughput"].as_f64().unwrap_or(0.0),
            load.concurrency,
            f("p50"),
            f("p90"),
            f("p99"),
            f("max"),
            f("mean"),
        ));
        for (kind, n) in &measured.errors {
            super::out(&format!("  {n} x {kind}"));
        }
    }
    if errors > 0 { EXIT_FAILURE } else { EXIT_OK }
}

/// One `info` call or cast.
async fn send_info(
    client: &RpcClient,
    ctx: &Context,
    cargo: &Cargo,
    seq: u64,
    cast: bool,
) -> Result<(), Error> {
    let msg = Info {
        message: (seq, cargo.next(), now(), None, None),
    };
    if cast {
        client.cast(ctx, "info", &msg).await
    } else {
        client
            .call::<serde::de::IgnoredAny>(ctx, "info", &msg)
            .await
            .map(|_| ())
    }
}

async fn rpc_client(global: &Global, args: &BenchRpcClientArgs) -> Result<u8, Failure> {
    let conf = super::load_config(global)?;
    let transport = super::transport(global, &conf, None)?;
    let mut target = Target::new(&args.topic.topic);
    if let Some(server) = &args.server {
        target = target.with_server(server);
    }
    let cast = args.cast || args.fanout;
    let client = RpcClient::builder(&transport, target)
        .timeout(Duration::from_secs_f64(args.timeout))
        .fanout(args.fanout)
        .build()?;
    let cargo = Arc::new(Cargo::new(args.load.payload_size));
    let ctx = Context::new();
    for i in 0..args.load.warmup {
        send_info(&client, &ctx, &cargo, i, cast).await?;
    }
    let plan = Arc::new(Plan::new(&args.load));
    let bar = progress(
        plan.clone(),
        if cast { "casts" } else { "calls" },
        !global.json,
    );
    let start_ts = now();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.load.concurrency {
        let (client, cargo, plan, ctx) = (client.clone(), cargo.clone(), plan.clone(), ctx.clone());
        tasks.push(tokio::spawn(async move {
            plan.work(|seq| send_info(&client, &ctx, &cargo, seq, cast))
                .await
        }));
    }
    let (measured, wall) = gather(tasks, bar, started).await;
    transport.cleanup().await;
    let attempted = plan.done_so_far();
    Ok(report(
        global,
        "rpc-client",
        json!({"cast": cast, "fanout": args.fanout}),
        &args.load,
        Run {
            attempted,
            measured,
            start_ts,
            wall,
        },
    ))
}

async fn notify_client(global: &Global, args: &BenchNotifyClientArgs) -> Result<u8, Failure> {
    let conf = super::load_config(global)?;
    let transport = super::notification_transport(global, &conf)?;
    let driver = match args.driver {
        DriverArg::Messaging => NotifyDriver::Messaging,
        DriverArg::Messagingv2 => NotifyDriver::MessagingV2,
    };
    let notifiers: Vec<Notifier> = (0..args.load.concurrency)
        .map(|i| {
            Notifier::builder(&transport)
                .publisher_id(format!("publisher-{i}"))
                .driver(driver)
                .topics([args.topic.topic.as_str()])
                .build()
        })
        .collect::<Result<_, _>>()?;
    let cargo = Arc::new(Cargo::new(args.load.payload_size));
    let ctx = Context::new();
    for i in 0..args.load.warmup {
        let msg = (i, cargo.next(), now(), None::<f64>, None::<f64>);
        notifiers[0].info(&ctx, "compute.start", &msg).await?;
    }
    let plan = Arc::new(Plan::new(&args.load));
    let bar = progress(plan.clone(), "notifications", !global.json);
    let start_ts = now();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for notifier in notifiers {
        let (cargo, plan, ctx) = (cargo.clone(), plan.clone(), ctx.clone());
        tasks.push(tokio::spawn(async move {
            let (notifier, ctx) = (&notifier, &ctx);
            plan.work(|seq| {
                let msg = (seq, cargo.next(), now(), None::<f64>, None::<f64>);
                async move { notifier.info(ctx, "compute.start", &msg).await }
            })
            .await
        }));
    }
    let (measured, wall) = gather(tasks, bar, started).await;
    transport.cleanup().await;
    let attempted = plan.done_so_far();
    Ok(report(
        global,
        "notify-client",
        json!({"driver": if driver == NotifyDriver::Messaging { "messaging" } else { "messagingv2" }}),
        &args.load,
        Run {
            attempted,
            measured,
            start_ts,
            wall,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 90.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn oslo_sizes_stay_in_range_with_a_plausible_mean() {
        let cargo = Cargo::new(PayloadSize::Oslo);
        let sizes: Vec<usize> = (0..20_000).map(|_| cargo.next().len()).collect();
        assert!(sizes.iter().all(|s| (500..11_500).contains(s)));
        let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
        assert!((2_900.0..3_600.0).contains(&mean), "mean {mean}");
        let fixed = Cargo::new(PayloadSize::Fixed(100));
        assert_eq!(fixed.next().len(), 100);
        assert!(fixed.next().bytes().all(|b| b.is_ascii_lowercase()));
    }
}
