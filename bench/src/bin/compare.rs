//! `bench-compare`: one run, one broker, every implementation side by side.
//!
//! For each workload (calls with 1 and 64 in flight, casts, a fanout cast to 3 servers,
//! notifications, notifications through Kafka; 100 B and 64 KiB payloads) it runs the raw-AMQP ceilings (`raw-amqp` on
//! oslo-messaging's AMQP client and on amqprs), oslo-messaging (Rust client and server),
//! Python oslo.messaging 18.3.1 (Python client and server), and the mixed pairs, for several
//! rounds, and reports medians. It also reads the resident memory of idle and loaded RPC
//! servers. Results go to `bench/results/latest.json`, `bench/results/latest.md` and
//! `bench/results/latest.svg`.
//!
//! The Kafka rows run oslo-messaging and Python oslo.messaging (on confluent-kafka) against a
//! fresh tansu broker per measurement (`OSLO_MESSAGING_TANSU`; without it they are skipped):
//! `kafka-publish` is the notifier's rate (until its last `notify` returned: both hand
//! notifications to librdkafka's queue), `kafka-notify` the end-to-end rate (until the listener
//! got the last one).
//!
//! Servers and clients are separate processes speaking the line protocol of
//! `oslo-messaging bench` (ready, done, stopped, one summary per client).

use oslo_messaging_bench::{ServerLine, Summary};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

#[derive(Debug, Parser)]
#[command(
    name = "bench-compare",
    about = "oslo-messaging vs Python oslo.messaging vs raw AMQP"
)]
struct Cli {
    /// The broker.
    #[arg(long, default_value = "rabbit://guest:guest@127.0.0.1:5672/")]
    url: String,
    /// Rounds per measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Fewer messages per run (a smoke test, not for publishing).
    #[arg(long)]
    quick: bool,
    /// Only workloads whose name contains one of these.
    #[arg(long = "only")]
    only: Vec<String>,
    /// Python with oslo.messaging 18.3.1 (default: OSLO_MESSAGING_PYTHON, else
    /// ~/.cache/oslo-venv-18.3.1/bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Where results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Measure nothing: redraw the table and chart from `<out>/latest.json`.
    #[arg(long)]
    replot: bool,
    /// Run the Python peers monkey-patched with eventlet (green threads, the eventlet
    /// executor), as eventlet services do; threads otherwise.
    #[arg(long)]
    eventlet: bool,
}

/// Who plays a side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    RawOurs,
    RawAmqprs,
    Rust,
    /// oslo-messaging with `[oslo_messaging_tracing]` on, exporting every span to a local
    /// OTLP sink.
    RustOtel,
    /// oslo-messaging with `rabbit_direct_reply_to` on (calls only: nothing else has replies).
    RustDirect,
    Python,
    /// Python oslo.messaging on the Rust engine (`rabbitrs://`, the oslo-messaging-rs wheel).
    PythonRs,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Self::RawOurs => "raw (our AMQP client)",
            Self::RawAmqprs => "raw (amqprs)",
            Self::Rust => "oslo-messaging (Rust)",
            Self::RustOtel => "oslo-messaging (Rust), tracing on",
            Self::RustDirect => "oslo-messaging (Rust), direct reply-to",
            Self::Python => "Python oslo.messaging",
            Self::PythonRs => "Python oslo.messaging on rabbitrs (Rust engine)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Self::RawOurs => "raw-ours",
            Self::RawAmqprs => "raw-amqprs",
            Self::Rust => "rust",
            Self::RustOtel => "rust-otel",
            Self::RustDirect => "rust-direct",
            Self::Python => "python",
            Self::PythonRs => "python-rs",
        }
    }

    fn fast(self) -> bool {
        !self.python()
    }

    fn python(self) -> bool {
        matches!(self, Self::Python | Self::PythonRs)
    }

    /// oslo-messaging's own `bench`, in one configuration or another.
    fn rust(self) -> bool {
        matches!(self, Self::Rust | Self::RustOtel | Self::RustDirect)
    }
}

/// A client/server pairing.
#[derive(Debug, Clone, Copy)]
struct Pair {
    client: Side,
    server: Side,
}

impl Pair {
    fn label(self) -> String {
        if self.client == self.server {
            self.client.short().to_owned()
        } else {
            format!("{}→{}", self.client.short(), self.server.short())
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Call,
    Cast,
    Fanout,
    Notify,
    /// Notifications through Kafka, the notifier's rate.
    KafkaPublish,
    /// Notifications through Kafka, end to end.
    KafkaNotify,
}

impl Kind {
    /// Notifier and listener, not RPC client and server.
    fn notifications(self) -> bool {
        matches!(self, Self::Notify | Self::KafkaPublish | Self::KafkaNotify)
    }

    fn kafka(self) -> bool {
        matches!(self, Self::KafkaPublish | Self::KafkaNotify)
    }
}

#[derive(Debug, Clone)]
struct Workload {
    name: String,
    kind: Kind,
    concurrency: u32,
    payload: usize,
}

fn workloads() -> Vec<Workload> {
    let mut w = Vec::new();
    for payload in [100, 65_536] {
        let size = if payload == 100 { "100B" } else { "64KiB" };
        for (kind, concurrency, name) in [
            (Kind::Call, 1, "call-1"),
            (Kind::Call, 64, "call-64"),
            (Kind::Cast, 64, "cast"),
            (Kind::Fanout, 64, "fanout-3"),
            (Kind::Notify, 64, "notify"),
            (Kind::KafkaPublish, 64, "kafka-publish"),
            (Kind::KafkaNotify, 64, "kafka-notify"),
        ] {
            w.push(Workload {
                name: format!("{name} {size}"),
                kind,
                concurrency,
                payload,
            });
        }
    }
    w
}

/// Calls or casts sent before measuring (servers count them).
const WARMUP: u64 = 20;

/// Messages per run: enough for a few seconds of each implementation.
fn count(w: &Workload, side: Side, quick: bool) -> u64 {
    let base: u64 = match (w.kind, w.concurrency, side.fast()) {
        (Kind::KafkaPublish | Kind::KafkaNotify, _, true) => 50_000,
        (Kind::KafkaPublish | Kind::KafkaNotify, _, false) => 3000,
        (Kind::Call, 1, true) => 4000,
        (Kind::Call, _, true) => 20_000,
        (Kind::Fanout, _, true) => 10_000,
        (_, _, true) => 30_000,
        (Kind::Call, 1, false) => 600,
        (Kind::Fanout, _, false) => 500,
        (_, _, false) => 1000,
    };
    // Python on the Rust engine runs a few times faster than Python: longer runs.
    let base = if side == Side::PythonRs {
        base * 3
    } else {
        base
    };
    // Large messages: fewer (the Kafka broker keeps them all in memory).
    let base = match (w.payload > 10_000, w.kind.kafka()) {
        (false, _) => base,
        (true, false) => base / 5,
        (true, true) => base / 10,
    };
    if quick { (base / 10).max(50) } else { base }
}

fn pairs(kind: Kind) -> Vec<Pair> {
    let p = |client, server| Pair { client, server };
    let mut v = vec![
        p(Side::RawOurs, Side::RawOurs),
        p(Side::RawAmqprs, Side::RawAmqprs),
        p(Side::Rust, Side::Rust),
        p(Side::RustOtel, Side::RustOtel),
        p(Side::RustDirect, Side::RustDirect),
        p(Side::Python, Side::Python),
        p(Side::Python, Side::Rust),
        p(Side::Rust, Side::Python),
        p(Side::PythonRs, Side::PythonRs),
    ];
    if kind.kafka() {
        // Kafka is for notifications only: oslo-messaging and Python, and the mixed pairs.
        return vec![
            p(Side::Rust, Side::Rust),
            p(Side::Python, Side::Python),
            p(Side::Python, Side::Rust),
            p(Side::Rust, Side::Python),
        ];
    }
    if kind == Kind::Notify {
        // Raw AMQP has no notifications: the cast ceiling (publish with confirms, consume
        // with acks) is the same work.
        v.retain(|x| x.client != Side::RawAmqprs && x.client != Side::RawOurs);
    }
    if kind != Kind::Call {
        // Direct reply-to changes how replies travel: casts would measure `rust` again.
        v.retain(|x| x.client != Side::RustDirect);
    }
    v
}

struct Env {
    url: String,
    bin_dir: PathBuf,
    python: PathBuf,
    peer: PathBuf,
    eventlet: bool,
    /// The configuration file of [`Side::RustOtel`].
    otel_conf: PathBuf,
}

impl Env {
    /// `raw-amqp` with the broker, exchange and AMQP client of `side`.
    fn raw(&self, side: Side, exchange: &str) -> Command {
        let mut c = Command::new(self.bin_dir.join("raw-amqp"));
        c.args(["--url", &self.url, "--exchange", exchange, "--client"])
            .arg(if side == Side::RawOurs {
                "ours"
            } else {
                "amqprs"
            });
        c
    }

    /// `oslo-messaging bench` or the Python peer (they take the same subcommands), running
    /// `sub` with the broker (`kafka`: the Kafka broker's URL instead of RabbitMQ's) and
    /// exchange in each one's own place.
    fn bench(&self, side: Side, exchange: &str, sub: &[&str], kafka: Option<&str>) -> Command {
        let base = kafka.unwrap_or(&self.url);
        let mut c = if side.rust() {
            let mut c = Command::new(self.bin_dir.join("oslo-messaging"));
            if side == Side::RustOtel {
                c.arg("--config-file").arg(&self.otel_conf);
            }
            let url = if side == Side::RustDirect {
                let sep = if base.contains('?') { '&' } else { '?' };
                format!("{base}{sep}rabbit_direct_reply_to=true")
            } else {
                base.to_owned()
            };
            c.args(["--url", &url, "--exchange", exchange, "--json", "bench"]);
            c
        } else {
            let mut c = Command::new(&self.python);
            c.arg(&self.peer);
            c
        };
        c.args(sub);
        if side.python() {
            let url = if side == Side::PythonRs {
                format!(
                    "rabbitrs://{}",
                    base.split_once("://").map_or("", |(_, rest)| rest)
                )
            } else {
                base.to_owned()
            };
            c.args(["--url", &url, "--exchange", exchange]);
            if self.eventlet {
                c.arg("--eventlet");
            }
        }
        c
    }

    #[allow(clippy::too_many_arguments)]
    fn server_cmd(
        &self,
        side: Side,
        kind: Kind,
        exchange: &str,
        topic: &str,
        server: &str,
        n: u64,
        kafka: Option<&str>,
    ) -> Command {
        let n = n.to_string();
        if matches!(side, Side::RawOurs | Side::RawAmqprs) {
            let mut c = self.raw(side, exchange);
            c.args(["rpc-server", "--topic", topic, "--count", &n]);
            return c;
        }
        let sub: &[&str] = if kind.notifications() {
            &["notify-server", "--topic", topic, "--count", &n]
        } else {
            &[
                "rpc-server",
                "--topic",
                topic,
                "--server",
                server,
                "--count",
                &n,
            ]
        };
        self.bench(side, exchange, sub, kafka)
    }

    fn client_cmd(
        &self,
        side: Side,
        w: &Workload,
        exchange: &str,
        topic: &str,
        n: u64,
        kafka: Option<&str>,
    ) -> Command {
        let (n, c, b, warmup) = (
            n.to_string(),
            w.concurrency.to_string(),
            w.payload.to_string(),
            WARMUP.to_string(),
        );
        let flags: &[&str] = match w.kind {
            Kind::Call | Kind::Notify | Kind::KafkaPublish | Kind::KafkaNotify => &[],
            Kind::Cast => &["--cast"],
            Kind::Fanout => &["--cast", "--fanout"],
        };
        if matches!(side, Side::RawOurs | Side::RawAmqprs) {
            let mut cmd = self.raw(side, exchange);
            cmd.args(["rpc-client", "--topic", topic, "--calls", &n, "-c", &c])
                .args(["--payload-size", &b, "--warmup", &warmup])
                .args(flags);
            return cmd;
        }
        let mut sub = if w.kind.notifications() {
            vec!["notify-client", "--topic", topic, "--count", &n]
        } else {
            let mut sub = vec!["rpc-client", "--topic", topic, "--calls", &n];
            sub.extend_from_slice(flags);
            sub.extend_from_slice(&["--warmup", &warmup]);
            sub
        };
        // The Python peer spells -c out.
        let concurrency = if side.rust() { "-c" } else { "--concurrency" };
        sub.extend_from_slice(&[concurrency, &c, "--payload-size", &b]);
        self.bench(side, exchange, &sub, kafka)
    }
}

/// A running server process and its stdout lines.
struct Server {
    child: Child,
    lines: mpsc::UnboundedReceiver<ServerLine>,
    pid: u32,
}

impl Server {
    async fn start(mut cmd: Command) -> Result<Self, String> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program(&cmd)))?;
        let pid = child.id().unwrap_or(0);
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut r = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = r.next_line().await {
                if let Ok(v) = serde_json::from_str::<ServerLine>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let mut s = Self { child, lines, pid };
        s.wait_for("ready", Duration::from_secs(60)).await?;
        Ok(s)
    }

    async fn wait_for(&mut self, event: &str, within: Duration) -> Result<ServerLine, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(v)) if v.event == event => return Ok(v),
                Ok(Some(_)) => {}
                Ok(None) => return Err(format!("the server exited before {event:?}")),
                Err(_) => return Err(format!("no {event:?} from the server within {within:?}")),
            }
        }
    }

    /// Resident and peak resident memory, KiB.
    fn memory(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

async fn run_client(mut cmd: Command, within: Duration) -> Result<Summary, String> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program(&cmd)))?;
    let out = tokio::time::timeout(within, child.wait_with_output())
        .await
        .map_err(|_| format!("the client did not finish within {within:?}"))?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Summary>(l).ok())
        .ok_or_else(|| {
            format!(
                "no summary from the client (exit {:?}): {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            )
        })
}

/// One measurement.
#[derive(Debug, Clone)]
struct Measure {
    throughput: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    idle_rss_kib: Option<u64>,
    peak_rss_kib: Option<u64>,
}

async fn measure(
    env: &Env,
    w: &Workload,
    pair: Pair,
    round: usize,
    quick: bool,
) -> Result<Measure, String> {
    let tag = format!("{:x}{round}", fastrand::u64(..));
    let exchange = format!("cmp_{tag}");
    let topic = format!("cmp_{tag}");
    let n_client = count(w, pair.client, quick).min(count(w, pair.server, quick));
    let servers = if w.kind == Kind::Fanout { 3 } else { 1 };
    // Servers count warmup messages too.
    let expected = n_client + if w.kind.notifications() { 0 } else { WARMUP };
    // A fresh Kafka broker per measurement, with the topics of every priority (tansu creates
    // none on use).
    let kafka = if w.kind.kafka() {
        if testkit::kafka::tansu().is_none() {
            return Err("no tansu broker (OSLO_MESSAGING_TANSU)".to_owned());
        }
        let broker = testkit::kafka::Tansu::start();
        broker.create_priority_topics(&topic, 1);
        Some(broker)
    } else {
        None
    };
    let kafka_url = kafka.as_ref().map(|b| b.url(""));
    let kafka_url = kafka_url.as_deref();
    let mut running = Vec::new();
    for i in 0..servers {
        running.push(
            Server::start(env.server_cmd(
                pair.server,
                w.kind,
                &exchange,
                &topic,
                &format!("s{i}"),
                expected,
                kafka_url,
            ))
            .await?,
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = running[0].memory().0;
    let summary = run_client(
        env.client_cmd(pair.client, w, &exchange, &topic, n_client, kafka_url),
        Duration::from_secs(300),
    )
    .await;
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            for s in running {
                s.stop().await;
            }
            return Err(e);
        }
    };
    let errors = summary.errors;
    let mut result = if w.kind == Kind::Call {
        Ok(summary.throughput)
    } else if w.kind == Kind::KafkaPublish {
        // The notifier's rate; the listener must still get every one.
        let mut failed = None;
        for s in &mut running {
            if let Err(e) = s.wait_for("done", Duration::from_secs(120)).await {
                failed = Some(e);
            }
        }
        failed.map_or(Ok(summary.throughput), Err)
    } else {
        // End to end: until the last server received the last message.
        let mut last = 0.0_f64;
        let mut failed = None;
        for s in &mut running {
            match s.wait_for("done", Duration::from_secs(120)).await {
                Ok(done) => last = last.max(done.last_ts.unwrap_or(0.0)),
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => {
                let start = summary.start_ts;
                Ok(n_client as f64 / (last - start).max(1e-6))
            }
        }
    };
    if errors > 0 {
        result = Err(format!("{errors} errors: {}", summary.error_kinds));
    }
    let peak = running[0].memory().1;
    for s in running {
        s.stop().await;
    }
    if kafka.is_none() {
        cleanup(&env.url, &exchange, &topic).await;
    }
    drop(kafka);
    let throughput = result?;
    Ok(Measure {
        throughput,
        p50_ms: summary.latency_ms.p50,
        p99_ms: summary.latency_ms.p99,
        idle_rss_kib: Some(idle),
        peak_rss_kib: Some(peak),
    })
}

/// An amqprs connection to the broker of a one-host `rabbit://` URL, for deleting what runs
/// leave behind.
async fn admin(url: &str) -> Option<amqprs::connection::Connection> {
    use amqprs::connection::{Connection, OpenConnectionArguments};
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (authority, vhost) = rest.split_once('/').unwrap_or((rest, ""));
    let (creds, hostport) = authority
        .rsplit_once('@')
        .unwrap_or(("guest:guest", authority));
    let (user, pass) = creds.split_once(':').unwrap_or((creds, ""));
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5672"));
    let args = OpenConnectionArguments::new(host, port.parse().unwrap_or(5672), user, pass)
        .virtual_host(if vhost.is_empty() { "/" } else { vhost })
        .finish();
    tokio::time::timeout(Duration::from_secs(5), Connection::open(&args))
        .await
        .ok()?
        .ok()
}

/// Deletes what a run declared (fanout and reply queues with random names expire on their
/// own, or go in the final sweep).
async fn cleanup(url: &str, exchange: &str, topic: &str) {
    use amqprs::channel::{ExchangeDeleteArguments, QueueDeleteArguments};
    let Some(conn) = admin(url).await else {
        return;
    };
    if let Ok(ch) = conn.open_channel(None).await {
        let mut queues = vec![topic.to_owned()];
        queues.extend((0..3).map(|i| format!("{topic}.s{i}")));
        queues.extend(
            [
                "info", "audit", "debug", "warn", "error", "critical", "sample",
            ]
            .map(|p| format!("{topic}.{p}")),
        );
        for q in queues {
            let _ = ch.queue_delete(QueueDeleteArguments::new(&q)).await;
        }
        for x in [exchange.to_owned(), format!("{topic}_fanout")] {
            let _ = ch.exchange_delete(ExchangeDeleteArguments::new(&x)).await;
        }
    }
    let _ = conn.close().await;
}

/// Deletes the runs' leftover fanout queues (`cmp_..._fanout_<uuid>`).
async fn sweep(url: &str) {
    let listed = command_output(
        "rabbitmqctl",
        &["-q", "--no-table-headers", "list_queues", "name"],
    );
    let leftovers: Vec<&str> = listed.lines().filter(|q| q.starts_with("cmp_")).collect();
    if leftovers.is_empty() {
        return;
    }
    use amqprs::channel::QueueDeleteArguments;
    let Some(conn) = admin(url).await else {
        return;
    };
    if let Ok(ch) = conn.open_channel(None).await {
        for q in leftovers {
            let _ = ch.queue_delete(QueueDeleteArguments::new(q)).await;
        }
    }
    let _ = conn.close().await;
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_owned();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "cpu_model": model,
        "memory": mem.split_whitespace().skip(1).collect::<Vec<_>>().join(" "),
        "kernel": command_output("uname", &["-r"]),
    })
}

fn versions(python: &Path) -> Value {
    let rabbit = command_output("rabbitmqctl", &["-q", "version"]);
    let py = command_output(
        python.to_str().unwrap_or("python3"),
        &[
            "-c",
            "import importlib.metadata as m, sys; print(m.version('oslo.messaging'), m.version('kombu'), sys.version.split()[0])",
        ],
    );
    json!({
        "rabbitmq": rabbit,
        "python_oslo_messaging_kombu_python": py,
        "rustc": command_output("rustc", &["--version"]),
        "oslo_messaging_rust": env!("CARGO_PKG_VERSION"),
        "amqprs": "2.x (Cargo.lock)",
    })
}

/// The markdown table: one row per workload, one column per pair, then our ratios.
fn markdown(
    results: &BTreeMap<String, BTreeMap<String, Value>>,
    order: &[Workload],
    memory: &Value,
    meta: &Value,
) -> String {
    let columns = [
        "raw-ours",
        "raw-amqprs",
        "rust",
        "rust-otel",
        "rust-direct",
        "python",
        "python→rust",
        "rust→python",
        "python-rs",
    ];
    let mut md = String::new();
    md.push_str(&format!(
        "Messages per second (median of {} rounds; calls: round trips/s; kafka-publish: until the notifier's last `notify` returned; others: end to end, until the last server got the last message).\n\n",
        meta["rounds"]
    ));
    md.push_str("| workload | ");
    md.push_str(&columns.join(" | "));
    md.push_str(
        " | rust / raw-ours | rust-direct / raw-ours | rust / python | python-rs / python | rust-otel / rust | rust p50 / p99 ms | rust-direct p50 / p99 ms |\n|---|",
    );
    md.push_str(&"---:|".repeat(columns.len() + 7));
    md.push('\n');
    for w in order {
        let Some(row) = results.get(&w.name) else {
            continue;
        };
        let get = |c: &str| row.get(c).and_then(|v| v["throughput"].as_f64());
        md.push_str(&format!("| {} |", w.name));
        for c in columns {
            md.push_str(&match get(c) {
                Some(v) => format!(" {v:.0} |"),
                None => " – |".to_owned(),
            });
        }
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!(" {:.2}× |", a / b),
            _ => " – |".to_owned(),
        };
        let raw = if w.kind == Kind::Notify { "cast" } else { "" };
        let raw_value = if raw.is_empty() {
            get("raw-ours")
        } else {
            let size = if w.payload == 100 { "100B" } else { "64KiB" };
            results
                .get(&format!("cast {size}"))
                .and_then(|r| r.get("raw-ours"))
                .and_then(|v| v["throughput"].as_f64())
        };
        md.push_str(&ratio(get("rust"), raw_value));
        md.push_str(&ratio(get("rust-direct"), raw_value));
        md.push_str(&ratio(get("rust"), get("python")));
        md.push_str(&ratio(get("python-rs"), get("python")));
        md.push_str(&ratio(get("rust-otel"), get("rust")));
        let lat = |side: &str| {
            row.get(side).map_or_else(
                || "–".to_owned(),
                |v| match (v["p50_ms"].as_f64(), v["p99_ms"].as_f64()) {
                    (Some(a), Some(b)) if w.kind == Kind::Call => format!("{a:.2} / {b:.2}"),
                    _ => "–".to_owned(),
                },
            )
        };
        md.push_str(&format!(" {} | {} |\n", lat("rust"), lat("rust-direct")));
    }
    // Measured with `call-64 100B` only.
    if memory.as_object().is_some_and(|m| !m.is_empty()) {
        md.push_str("\nResident memory of the RPC server (median, MiB): idle after start, and peak during `call-64 100B`.\n\n| server | idle | loaded (peak) |\n|---|---:|---:|\n");
        for side in ["rust", "python", "python-rs"] {
            if let Some(m) = memory.get(side) {
                md.push_str(&format!(
                    "| {} | {:.1} | {:.1} |\n",
                    side,
                    m["idle_mib"].as_f64().unwrap_or(0.0),
                    m["peak_mib"].as_f64().unwrap_or(0.0)
                ));
            }
        }
    }
    md.push_str(&format!(
        "\nPython peers ran with {}. Machine: {} CPUs ({}), {}; RabbitMQ {}; Python oslo.messaging / kombu / CPython {}; {}.\n",
        meta["python_threads"].as_str().unwrap_or("threading"),
        meta["machine"]["cpus"],
        meta["machine"]["cpu_model"].as_str().unwrap_or(""),
        meta["machine"]["memory"].as_str().unwrap_or(""),
        meta["versions"]["rabbitmq"].as_str().unwrap_or("?"),
        meta["versions"]["python_oslo_messaging_kombu_python"].as_str().unwrap_or("?"),
        meta["versions"]["rustc"].as_str().unwrap_or("?"),
    ));
    md
}

/// A grouped bar chart (log scale) of the medians.
fn chart(
    path: &Path,
    results: &BTreeMap<String, BTreeMap<String, Value>>,
    order: &[Workload],
) -> Result<(), String> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let columns = [
        "raw-ours",
        "raw-amqprs",
        "rust",
        "rust-direct",
        "python",
        "python→rust",
        "rust→python",
        "python-rs",
    ];
    let colours = [
        RGBColor(120, 120, 120),
        RGBColor(180, 180, 180),
        RGBColor(206, 66, 43),
        RGBColor(240, 140, 120),
        RGBColor(55, 118, 171),
        RGBColor(120, 90, 160),
        RGBColor(230, 150, 60),
        RGBColor(60, 160, 90),
    ];
    let rows: Vec<&Workload> = order
        .iter()
        .filter(|w| results.contains_key(&w.name))
        .collect();
    let root = SVGBackend::new(path, (1200, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let max = results
        .values()
        .flat_map(|r| r.values())
        .filter_map(|v| v["throughput"].as_f64())
        .fold(10.0_f64, f64::max);
    // Headroom above the bars for the legend; a band below them for the workload names.
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Messages per second (log scale), median of rounds",
            ("sans-serif", 20),
        )
        .margin(12)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..rows.len() as f64, (4.0..max * 12.0).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("messages/s")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(rows.iter().enumerate().map(|(ri, w)| {
            Text::new(
                w.name.clone(),
                (ri as f64 + 0.5, 7.0),
                ("sans-serif", 13)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Center)),
            )
        }))
        .map_err(|e| e.to_string())?;
    let width = 0.8 / columns.len() as f64;
    for (ci, (column, colour)) in columns.iter().zip(colours).enumerate() {
        let bars: Vec<Rectangle<(f64, f64)>> = rows
            .iter()
            .enumerate()
            .filter_map(|(ri, w)| {
                let v = results.get(&w.name)?.get(*column)?["throughput"].as_f64()?;
                let x0 = ri as f64 + 0.1 + ci as f64 * width;
                Some(Rectangle::new(
                    [(x0, 10.0), (x0 + width * 0.9, v.max(10.0))],
                    colour.filled(),
                ))
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(|e| e.to_string())?
            .label(*column)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Redraws the table and chart of an earlier run.
fn replot(out: &Path, order: &[Workload]) {
    let path = out.join("latest.json");
    let doc: Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| panic!("cannot read {}", path.display()));
    let results: BTreeMap<String, BTreeMap<String, Value>> =
        serde_json::from_value(doc["medians"].clone()).unwrap_or_default();
    let md = markdown(&results, order, &doc["memory"], &doc["meta"]);
    std::fs::write(out.join("latest.md"), &md).expect("write latest.md");
    if let Err(e) = chart(&out.join("latest.svg"), &results, order) {
        eprintln!("the chart failed: {e}");
    }
    println!("{md}");
}

fn default_python() -> PathBuf {
    std::env::var_os("OSLO_MESSAGING_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/oslo-venv-18.3.1/bin/python"))
        })
        .unwrap_or_else(|| PathBuf::from("python3"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let python = cli.python.clone().unwrap_or_else(default_python);
    let peer = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../interop/bench_peer.py");
    // What a local collector would be: an OTLP/HTTP endpoint that takes every span.
    let sink = testkit::otlp::OtlpReceiver::start_sink().await;
    let otel_conf = std::env::temp_dir().join(format!("bench-otel-{}.conf", std::process::id()));
    std::fs::write(
        &otel_conf,
        format!(
            "[oslo_messaging_tracing]\ntracing_enabled = true\n\
             otel_exporter_otlp_endpoint = {}\ntracing_service_name = bench\n",
            sink.endpoint()
        ),
    )
    .expect("write the tracing configuration");
    let env = Env {
        url: cli.url.clone(),
        bin_dir,
        python: python.clone(),
        peer,
        eventlet: cli.eventlet,
        otel_conf,
    };
    let order: Vec<Workload> = workloads()
        .into_iter()
        .filter(|w| cli.only.is_empty() || cli.only.iter().any(|o| w.name.contains(o.as_str())))
        .collect();
    if cli.replot {
        replot(&cli.out, &order);
        return;
    }
    let started = Instant::now();
    let mut runs = Vec::new();
    let mut results: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    let mut memory_samples: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for w in &order {
        let pairs = pairs(w.kind);
        let mut measures: Vec<Vec<Measure>> = vec![Vec::new(); pairs.len()];
        // Rounds interleave the pairs, so drift in the machine or the broker touches all alike.
        for round in 0..cli.rounds {
            for (pi, &pair) in pairs.iter().enumerate() {
                let m = measure(&env, w, pair, round, cli.quick).await;
                match &m {
                    Ok(m) => eprintln!(
                        "{:<16} {:<14} round {round}: {:>9.0}/s  p50 {:>7} ms  p99 {:>7} ms",
                        w.name,
                        pair.label(),
                        m.throughput,
                        m.p50_ms.map_or("-".into(), |v| format!("{v:.2}")),
                        m.p99_ms.map_or("-".into(), |v| format!("{v:.2}")),
                    ),
                    Err(e) => eprintln!(
                        "{:<16} {:<14} round {round}: FAILED: {e}",
                        w.name,
                        pair.label()
                    ),
                }
                runs.push(json!({
                    "workload": w.name, "pair": pair.label(), "round": round,
                    "client": pair.client.name(), "server": pair.server.name(),
                    "result": match &m {
                        Ok(m) => json!({"throughput": m.throughput, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms,
                                        "server_idle_rss_kib": m.idle_rss_kib, "server_peak_rss_kib": m.peak_rss_kib}),
                        Err(e) => json!({"error": e}),
                    },
                }));
                if let Ok(m) = m {
                    if w.name == "call-64 100B"
                        && pair.client == pair.server
                        && let Some(key) = match pair.server {
                            Side::Rust => Some("rust"),
                            Side::Python => Some("python"),
                            Side::PythonRs => Some("python-rs"),
                            _ => None,
                        }
                    {
                        let e = memory_samples.entry(key).or_default();
                        e.0.push(m.idle_rss_kib.unwrap_or(0) as f64 / 1024.0);
                        e.1.push(m.peak_rss_kib.unwrap_or(0) as f64 / 1024.0);
                    }
                    measures[pi].push(m);
                }
            }
        }
        for (pair, measures) in pairs.iter().zip(measures) {
            if !measures.is_empty() {
                results.entry(w.name.clone()).or_default().insert(
                    pair.label(),
                    json!({
                        "throughput": median(measures.iter().map(|m| m.throughput).collect()),
                        "p50_ms": median(measures.iter().filter_map(|m| m.p50_ms).collect()),
                        "p99_ms": median(measures.iter().filter_map(|m| m.p99_ms).collect()),
                        "rounds": measures.len(),
                    }),
                );
            }
        }
    }
    sweep(&cli.url).await;
    let memory: Value = memory_samples
        .into_iter()
        .map(|(k, (idle, peak))| {
            (
                k.to_owned(),
                json!({"idle_mib": median(idle), "peak_mib": median(peak)}),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    let meta = json!({
        "rounds": cli.rounds,
        "quick": cli.quick,
        "python_threads": if cli.eventlet { "eventlet" } else { "threading" },
        "machine": machine(),
        "versions": versions(&python),
        "seconds": started.elapsed().as_secs(),
        "date": command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
    });
    let doc = json!({"meta": meta, "medians": results, "memory": memory, "runs": runs});
    if let Err(e) = std::fs::create_dir_all(&cli.out) {
        eprintln!("cannot create {}: {e}", cli.out.display());
        std::process::exit(1);
    }
    let md = markdown(&results, &order, &memory, &meta);
    let write = |name: &str, text: String| {
        let path = cli.out.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    };
    write(
        "latest.json",
        serde_json::to_string_pretty(&doc).unwrap_or_default(),
    );
    write("latest.md", md.clone());
    if let Err(e) = chart(&cli.out.join("latest.svg"), &results, &order) {
        eprintln!("the chart failed: {e}");
    }
    println!("{md}");
}

/// The program a command runs, for error text: its arguments may carry a broker password.
fn program(cmd: &Command) -> String {
    cmd.as_std().get_program().to_string_lossy().into_owned()
}
