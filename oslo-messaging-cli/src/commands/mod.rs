//! Subcommand implementations: each only uses the library's public API.

mod bench;
mod config;
mod demo;
mod notify;
mod rpc;
mod server;

use std::io::IsTerminal;

use oslo_messaging::{Config, Context, Error, ErrorKind, Retry, Transport};
use serde_json::{Map, Value, json};

use crate::cli::{Cli, Command, EXIT_FAILURE, EXIT_REMOTE, EXIT_USAGE, Global};

pub(crate) async fn run(cli: Cli) -> u8 {
    let global = &cli.global;
    let outcome = match &cli.command {
        Command::Call(args) => rpc::call(global, args).await,
        Command::Cast(args) => rpc::cast(global, args).await,
        Command::Notify(args) => notify::notify(global, args).await,
        Command::Listen(args) => notify::listen(global, args).await,
        Command::RpcServer(args) => server::run(global, args).await,
        Command::Bench(cmd) => bench::run(global, cmd).await,
        Command::Demo(args) => return demo::run(global, args).await,
        Command::Config(cmd) => config::run(global, cmd),
    };
    match outcome {
        Ok(code) => code,
        Err(failure) => failure.report(global.json),
    }
}

/// Why a subcommand failed, and so its exit status.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Bad usage that clap could not see (exit 64).
    Usage(String),
    /// An error from the library: remote (1), bad input (64) or else (2).
    Messaging(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::Messaging(e)
    }
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::Messaging(e) => match e.kind() {
                ErrorKind::Remote => EXIT_REMOTE,
                ErrorKind::InvalidUrl | ErrorKind::InvalidTarget | ErrorKind::Configuration => {
                    EXIT_USAGE
                }
                _ => EXIT_FAILURE,
            },
        }
    }

    /// Prints the failure on stderr and returns the exit status.
    pub(crate) fn report(&self, as_json: bool) -> u8 {
        let code = self.exit_code();
        let body = match self {
            Self::Usage(message) => json!({"kind": "usage", "message": message}),
            Self::Messaging(e) => match e.remote_error() {
                Some(r) => json!({
                    "kind": "remote",
                    "class": r.class(),
                    "module": r.module(),
                    "message": r.message(),
                    "traceback": r.traceback(),
                }),
                None => json!({"kind": format!("{:?}", e.kind()), "message": describe(e)}),
            },
        };
        if as_json {
            eprintln!("{}", json!({ "error": body }));
        } else {
            match self {
                Self::Usage(message) => eprintln!("error: {message}"),
                Self::Messaging(e) => match e.remote_error() {
                    Some(r) => {
                        eprintln!(
                            "remote error: {}.{}: {}",
                            r.module(),
                            r.class(),
                            r.message()
                        );
                        if tracing::enabled!(tracing::Level::INFO) {
                            for line in r.traceback() {
                                eprint!("{line}");
                            }
                        }
                    }
                    None => eprintln!("error: {}", describe(e)),
                },
            }
        }
        code
    }
}

/// An error and every cause in its source chain, each once: the library's `Display` already
/// ends with its direct cause, and a deeper cause is added only when no earlier text holds it.
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let line = c.to_string();
        if !line.is_empty() && !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = c.source();
    }
    text
}

/// The configuration from `--config-file`s, with `--exchange` applied.
pub(crate) fn load_config(global: &Global) -> Result<Config, Error> {
    let mut conf = Config::from_files(&global.config_files)?;
    if let Some(exchange) = &global.exchange {
        conf.default.control_exchange.clone_from(exchange);
    }
    Ok(conf)
}

/// A transport for `--url`, else the configuration's URL, else `fallback`.
pub(crate) fn transport(
    global: &Global,
    conf: &Config,
    fallback: Option<&str>,
) -> Result<Transport, Error> {
    let from_config = !global.config_files.is_empty();
    let url = match (&global.url, from_config, fallback) {
        (Some(url), _, _) => url.clone(),
        (None, true, _) | (None, false, None) => conf.transport_url().expose().to_owned(),
        (None, false, Some(f)) => f.to_owned(),
    };
    Transport::with_config(&url, conf)
}

/// The notification transport: `--url`, else the configuration's notification URL.
pub(crate) fn notification_transport(global: &Global, conf: &Config) -> Result<Transport, Error> {
    match &global.url {
        Some(url) => Transport::with_config(url, conf),
        None => Transport::for_notifications(conf),
    }
}

/// `--retry` in Python's convention.
pub(crate) fn retry(value: i64) -> Retry {
    Retry::from_python(value)
}

/// A context from `--context`.
pub(crate) fn context(value: Option<&Map<String, Value>>) -> Context {
    value.cloned().map(Context::from_map).unwrap_or_default()
}

/// Whether to print for people: colours and aligned text instead of JSON lines.
pub(crate) fn for_people(global: &Global) -> bool {
    !global.json && std::io::stdout().is_terminal()
}

/// Prints one line on stdout, ignoring a closed pipe (as `head` causes).
pub(crate) fn out(line: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// Resolves when the process gets Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// With `--metrics-addr`: serves the library's counters and histograms as Prometheus text on
/// `http://ADDR/metrics` and turns their recording on.
pub(crate) fn serve_metrics(addr: Option<std::net::SocketAddr>) -> Result<(), Failure> {
    let Some(addr) = addr else {
        return Ok(());
    };
    // Seconds, from a fast local call to a slow one.
    let buckets = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0, 30.0, 60.0,
    ];
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(&buckets)
        .and_then(metrics_exporter_prometheus::PrometheusBuilder::install)
        .map_err(|e| Failure::Usage(format!("--metrics-addr {addr}: {e}")))?;
    oslo_messaging::telemetry::record_metrics(true);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Self>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn every_cause_is_printed_once() {
        let deep = Layer(
            "TLS handshake",
            Some(Box::new(Layer("certificate expired", None))),
        );
        let e = Error::with_source(
            oslo_messaging::ErrorKind::Transport,
            "cannot connect to rmq1:5671",
            deep,
        );
        // The library's Display shows the direct cause; the CLI adds the deeper one.
        assert_eq!(e.to_string(), "cannot connect to rmq1:5671: TLS handshake");
        assert_eq!(
            describe(&e),
            "cannot connect to rmq1:5671: TLS handshake: certificate expired"
        );
        // A cause whose text an outer layer already shows is not repeated.
        let io = std::io::Error::other(Layer("disk full", None));
        let e = Error::with_source(
            oslo_messaging::ErrorKind::Configuration,
            "cannot read x",
            io,
        );
        assert_eq!(describe(&e), "cannot read x: disk full");
    }
}
