//! Subcommand implementations: each only uses the library's public API.

mod demo;

use oslo_messaging::{Config, Transport};

use crate::cli::{Cli, Command, Global};

pub(crate) async fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Demo(args) => demo::run(&cli.global, &args).await,
    }
}

/// The configuration from `--config-file`s, with `--exchange` applied.
pub(crate) fn load_config(global: &Global) -> Result<Config, String> {
    let mut conf = Config::from_files(&global.config_files).map_err(|e| e.to_string())?;
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
) -> Result<Transport, String> {
    let from_config = !global.config_files.is_empty();
    let url = match (&global.url, from_config, fallback) {
        (Some(url), _, _) => url.clone(),
        (None, true, _) | (None, false, None) => conf.transport_url().expose().to_owned(),
        (None, false, Some(f)) => f.to_owned(),
    };
    Transport::with_config(&url, conf).map_err(|e| e.to_string())
}
