//! Command-line definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Exit status: success.
pub(crate) const EXIT_OK: u8 = 0;
/// Exit status: the remote method raised an error.
pub(crate) const EXIT_REMOTE: u8 = 1;
/// Exit status: a timeout or transport failure.
pub(crate) const EXIT_FAILURE: u8 = 2;
/// Exit status: bad usage (BSD's `EX_USAGE`).
pub(crate) const EXIT_USAGE: u8 = 64;

/// Call, cast, notify and listen over OpenStack's messaging, wire-compatible with Python
/// oslo.messaging.
#[derive(Debug, Parser)]
#[command(name = "oslo-messaging", version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Transport URL, such as rabbit://user:pass@host:5672/ (default: the config's
    /// transport_url).
    #[arg(
        long,
        global = true,
        env = "OSLO_MESSAGING_URL",
        hide_env_values = true
    )]
    pub(crate) url: Option<String>,
    /// An oslo.config INI file; repeat for several, later ones override earlier ones.
    #[arg(long = "config-file", global = true, value_name = "FILE")]
    pub(crate) config_files: Vec<PathBuf>,
    /// The exchange (default: the config's control_exchange, "openstack").
    #[arg(long, global = true)]
    pub(crate) exchange: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Call an RPC method and print its result as JSON.
    ///
    /// Exit status: 0 on success, 1 when the method raised an error (class, module and
    /// message on stderr), 2 on a timeout or transport failure, 64 on bad usage.
    Call(CallArgs),
    /// Cast an RPC method: send it without waiting for a result.
    Cast(CastArgs),
    /// Send a notification.
    Notify(NotifyArgs),
    /// Print notifications as they arrive: one JSON object per line, or a readable form on a
    /// terminal.
    Listen(ListenArgs),
    /// Serve a test endpoint: echo(data), sleep(seconds), fail(message, exc_class) and the
    /// simulator's info(message). Stops cleanly on Ctrl-C.
    RpcServer(RpcServerArgs),
    /// Load generators and servers compatible with oslo.messaging's tools/simulator.py: the
    /// same method (`info`) and payload shapes, so each side can face a Python peer.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run a short tour in one process: RPC server, calls, casts, fanout, a remote error, a
    /// timeout, and notifications (on memory:// unless --url says otherwise).
    Demo(DemoArgs),
    /// The configuration: a commented sample of every option, or a check of the files given
    /// with --config-file.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print a sample configuration file: every option this library reads, commented out at
    /// its default, with its help (as oslo-config-generator writes one).
    Sample,
    /// Load the --config-file files as a service would and print what they give (passwords
    /// masked), with the groups this library does not implement; exit 64 when they do not load.
    Check,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Serve `info(message)`, counting requests.
    RpcServer(BenchServerArgs),
    /// Call (or cast) `info` as fast as the concurrency allows; report throughput and latency.
    RpcClient(BenchRpcClientArgs),
    /// Listen for notifications, counting them.
    NotifyServer(BenchNotifyServerArgs),
    /// Send `compute.start` notifications; report throughput and latency.
    NotifyClient(BenchNotifyClientArgs),
}

/// Where the benchmark's messages go.
#[derive(Debug, Args)]
pub(crate) struct BenchTopic {
    /// The topic (the simulator's default).
    #[arg(long, default_value = "profiler_topic")]
    pub(crate) topic: String,
}

/// How many and how big.
#[derive(Debug, Args)]
pub(crate) struct BenchLoad {
    /// Operations in all (the default is 1000 unless --duration is given).
    #[arg(long, value_name = "N", conflicts_with = "duration", alias = "count")]
    pub(crate) calls: Option<u64>,
    /// Run for this many seconds instead of a fixed number of operations.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub(crate) duration: Option<f64>,
    /// Operations in flight at once.
    #[arg(long, short = 'c', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) concurrency: u32,
    /// Bytes of cargo per message, or `oslo` for sizes drawn like oslo's
    /// messages_length.yaml (mostly 1 to 7 KB, mean about 3.2 KB).
    #[arg(long, default_value = "100", value_parser = parse_payload)]
    pub(crate) payload_size: PayloadSize,
    /// Operations sent one by one before measuring (not counted).
    #[arg(long, default_value_t = 0)]
    pub(crate) warmup: u64,
}

/// Message sizes for the benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PayloadSize {
    /// Every message carries this many bytes of cargo.
    Fixed(usize),
    /// Sizes drawn from an approximation of oslo's messages_length.yaml.
    Oslo,
}

#[derive(Debug, Args)]
pub(crate) struct BenchServerArgs {
    #[command(flatten)]
    pub(crate) topic: BenchTopic,
    /// Serve Prometheus metrics on http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    /// The server name (the simulator's default).
    #[arg(long, default_value = "profiler_server")]
    pub(crate) server: String,
    /// Requests handled at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) concurrency: u16,
    /// Print a `done` line once this many messages arrived (and keep serving).
    #[arg(long, value_name = "N")]
    pub(crate) count: Option<u64>,
    /// Stop after this many seconds (default: at Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub(crate) duration: Option<f64>,
}

#[derive(Debug, Args)]
pub(crate) struct BenchRpcClientArgs {
    #[command(flatten)]
    pub(crate) topic: BenchTopic,
    #[command(flatten)]
    pub(crate) load: BenchLoad,
    /// Send to this server only.
    #[arg(long)]
    pub(crate) server: Option<String>,
    /// Cast instead of call.
    #[arg(long)]
    pub(crate) cast: bool,
    /// Fanout cast to every server of the topic (implies --cast).
    #[arg(long, conflicts_with = "server")]
    pub(crate) fanout: bool,
    /// Seconds to wait for each reply.
    #[arg(long, default_value_t = 60.0, value_parser = parse_seconds)]
    pub(crate) timeout: f64,
}

#[derive(Debug, Args)]
pub(crate) struct BenchNotifyServerArgs {
    #[command(flatten)]
    pub(crate) topic: BenchTopic,
    /// Serve Prometheus metrics on http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    /// Share the notifications with the other listeners of this pool.
    #[arg(long)]
    pub(crate) pool: Option<String>,
    /// Print a `done` line once this many notifications arrived (and keep listening).
    #[arg(long, value_name = "N")]
    pub(crate) count: Option<u64>,
    /// Stop after this many seconds (default: at Ctrl-C or SIGTERM).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub(crate) duration: Option<f64>,
}

#[derive(Debug, Args)]
pub(crate) struct BenchNotifyClientArgs {
    #[command(flatten)]
    pub(crate) topic: BenchTopic,
    #[command(flatten)]
    pub(crate) load: BenchLoad,
    /// The notification driver (the simulator sends v1, `messaging`).
    #[arg(long, value_enum, default_value_t = DriverArg::Messaging)]
    pub(crate) driver: DriverArg,
}

/// Where an RPC goes, and what it carries.
#[derive(Debug, Args)]
pub(crate) struct RpcArgs {
    /// The topic.
    #[arg(long)]
    pub(crate) topic: String,
    /// Send to this server only (the topic.server queue).
    #[arg(long)]
    pub(crate) server: Option<String>,
    /// The endpoint namespace.
    #[arg(long)]
    pub(crate) namespace: Option<String>,
    /// The version the call needs, such as 1.3.
    #[arg(long)]
    pub(crate) version: Option<String>,
    /// The caller's context, a JSON object.
    #[arg(long, value_name = "JSON", value_parser = parse_object)]
    pub(crate) context: Option<serde_json::Map<String, serde_json::Value>>,
    /// Reconnection attempts when the broker is unreachable (-1: forever).
    #[arg(long, default_value_t = 2, allow_negative_numbers = true)]
    pub(crate) retry: i64,
    /// The method.
    pub(crate) method: String,
    /// The keyword arguments, a JSON object (default {}).
    #[arg(value_name = "ARGS_JSON", value_parser = parse_object)]
    pub(crate) args: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Args)]
pub(crate) struct CallArgs {
    #[command(flatten)]
    pub(crate) rpc: RpcArgs,
    /// Seconds to wait for the reply (default: the config's rpc_response_timeout, 60).
    #[arg(long, value_parser = parse_seconds)]
    pub(crate) timeout: Option<f64>,
    /// Ask the server for heartbeats and give up after this many seconds without one.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub(crate) call_monitor_timeout: Option<f64>,
}

#[derive(Debug, Args)]
pub(crate) struct CastArgs {
    #[command(flatten)]
    pub(crate) rpc: RpcArgs,
    /// Send to every server of the topic.
    #[arg(long, conflicts_with = "server")]
    pub(crate) fanout: bool,
}

/// The notification drivers the CLI can send with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DriverArg {
    /// The 2.0 envelope (Python's `messagingv2`).
    Messagingv2,
    /// The bare notification (Python's `messaging`, v1).
    Messaging,
}

#[derive(Debug, Args)]
pub(crate) struct NotifyArgs {
    /// The topic.
    #[arg(long, default_value = "notifications")]
    pub(crate) topic: String,
    /// The publisher id, such as compute.host1.
    #[arg(long)]
    pub(crate) publisher_id: String,
    /// The event type, such as compute.instance.create.end.
    #[arg(long)]
    pub(crate) event_type: String,
    /// audit, debug, info, warn (or warning), error, critical or sample.
    #[arg(long, default_value = "info", value_parser = parse_priority)]
    pub(crate) priority: oslo_messaging::Priority,
    /// The notification driver.
    #[arg(long, value_enum, default_value_t = DriverArg::Messagingv2)]
    pub(crate) driver: DriverArg,
    /// The context, a JSON object.
    #[arg(long, value_name = "JSON", value_parser = parse_object)]
    pub(crate) context: Option<serde_json::Map<String, serde_json::Value>>,
    /// Reconnection attempts when the broker is unreachable (-1: forever).
    #[arg(long, default_value_t = 2, allow_negative_numbers = true)]
    pub(crate) retry: i64,
    /// The payload, any JSON value.
    #[arg(value_name = "PAYLOAD_JSON", value_parser = parse_json)]
    pub(crate) payload: serde_json::Value,
}

#[derive(Debug, Args)]
pub(crate) struct ListenArgs {
    /// Serve Prometheus metrics on http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    /// The topic.
    #[arg(long, default_value = "notifications")]
    pub(crate) topic: String,
    /// Share the notifications with the other listeners of this pool (its own queue).
    #[arg(long)]
    pub(crate) pool: Option<String>,
    /// Only these priorities (repeat; default: all).
    #[arg(long = "priority", value_parser = parse_priority)]
    pub(crate) priorities: Vec<oslo_messaging::Priority>,
    /// Only event types matching this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub(crate) event_type: Option<String>,
    /// Stop after this many notifications (at least 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,
    /// Stop after this many seconds (exit 2 if --count was not reached).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub(crate) timeout: Option<f64>,
}

#[derive(Debug, Args)]
pub(crate) struct RpcServerArgs {
    /// Serve Prometheus metrics on http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    /// The topic.
    #[arg(long)]
    pub(crate) topic: String,
    /// The server name.
    #[arg(long)]
    pub(crate) server: String,
    /// Requests handled at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) concurrency: u16,
    /// Answer oslo_rpc_server_ping.
    #[arg(long)]
    pub(crate) ping: bool,
    /// Do not print a line per request.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Seconds the timeout step waits for a reply that never comes (0.1 to 60).
    #[arg(long, default_value_t = 1.0, value_parser = parse_demo_timeout)]
    pub(crate) timeout: f64,
}

pub(crate) fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn parse_object(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match parse_json(text)? {
        serde_json::Value::Object(map) => Ok(map),
        other => Err(format!(
            "must be a JSON object such as '{{\"name\": 1}}', not {}",
            json_kind(&other)
        )),
    }
}

fn parse_json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| format!("is not valid JSON: {e}"))
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn parse_priority(text: &str) -> Result<oslo_messaging::Priority, String> {
    text.parse()
        .map_err(|e: oslo_messaging::Error| e.message().to_owned())
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if v.is_finite() && v > 0.0 && v <= 86_400.0 * 365.0 {
        Ok(v)
    } else {
        Err(format!("{text} is not a positive number of seconds"))
    }
}

fn parse_payload(text: &str) -> Result<PayloadSize, String> {
    if text == "oslo" {
        return Ok(PayloadSize::Oslo);
    }
    match text.parse::<usize>() {
        Ok(n) if n <= 64 << 20 => Ok(PayloadSize::Fixed(n)),
        _ => Err(format!(
            "{text:?} is not a size in bytes (0 to 64 MiB) or \"oslo\""
        )),
    }
}

fn parse_demo_timeout(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if (0.1..=60.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside 0.1 to 60 seconds"))
    }
}
