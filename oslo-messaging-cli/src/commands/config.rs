//! `config sample` and `config check`.

use oslo_messaging::{Config, TransportUrl};
use serde_json::json;

use super::Failure;
use crate::cli::{ConfigCommand, EXIT_OK, Global};

pub(crate) fn run(global: &Global, cmd: &ConfigCommand) -> Result<u8, Failure> {
    match cmd {
        ConfigCommand::Sample => {
            print!("{}", Config::sample_ini());
            Ok(EXIT_OK)
        }
        ConfigCommand::Check => check(global),
    }
}

fn check(global: &Global) -> Result<u8, Failure> {
    let conf = super::load_config(global)?;
    // The URLs are shown masked; one that does not parse is an error worth seeing here.
    let url = match &global.url {
        Some(u) => TransportUrl::parse(u)?,
        None => TransportUrl::parse(conf.transport_url().expose())?,
    };
    let notification_url = TransportUrl::parse(conf.notification_transport_url().expose())?;
    let unsupported = conf.unsupported_groups();
    if global.json {
        super::out(
            &json!({
                "transport_url": url.to_string(),
                "notification_transport_url": notification_url.to_string(),
                "control_exchange": conf.default.control_exchange,
                "notification_drivers": conf.notifications.driver,
                "unsupported_groups": unsupported,
            })
            .to_string(),
        );
    } else {
        super::out(&format!("transport_url = {url}"));
        super::out(&format!("notification transport_url = {notification_url}"));
        super::out(&format!(
            "control_exchange = {}",
            conf.default.control_exchange
        ));
        match &conf.notifications.driver {
            Some(d) => super::out(&format!("notification drivers = {}", d.join(", "))),
            None => super::out("notification drivers = (none: notifications are not sent)"),
        }
        for group in unsupported {
            super::out(&format!(
                "warning: [{group}] is set, but this library does not implement it: its options have no effect"
            ));
        }
    }
    Ok(EXIT_OK)
}
