//! Command-line definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Exit status: success.
pub(crate) const EXIT_OK: u8 = 0;
/// Exit status: a timeout or transport failure.
pub(crate) const EXIT_FAILURE: u8 = 2;

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
    /// Run a short tour in one process: RPC server, calls, casts, fanout, a remote error, a
    /// timeout, and notifications (on memory:// unless --url says otherwise).
    Demo(DemoArgs),
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
