//! The test broker: `OSLO_MESSAGING_TEST_URL`, default `rabbit://guest:guest@127.0.0.1:5672/`
//! (the local RabbitMQ that `scripts/test` installs when missing).

use std::time::Duration;

use percent_encoding::percent_decode_str;

/// Runs `rabbitmqctl -q args` against the local node (the test broker when it is the local
/// one) and returns its output; panics saying why when it cannot run or fails.
pub fn rabbitmqctl(args: &[&str]) -> String {
    crate::process::run_ok(
        std::process::Command::new("rabbitmqctl")
            .arg("-q")
            .args(args),
        &format!("rabbitmqctl {args:?}"),
    )
}

/// The test broker's first host and its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// The whole URL, as set.
    pub url: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The virtual host (`/` when the URL names none).
    pub vhost: String,
}

impl Broker {
    /// The broker of `OSLO_MESSAGING_TEST_URL`, or the local default.
    pub fn from_env() -> Self {
        Self::parse(
            &std::env::var("OSLO_MESSAGING_TEST_URL")
                .unwrap_or_else(|_| "rabbit://guest:guest@127.0.0.1:5672/".to_owned()),
        )
    }

    /// Reads `scheme://user:pass@host:port[,more hosts]/vhost`: the first host, user and
    /// password percent-decoded.
    pub fn parse(url: &str) -> Self {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let (authority, vhost) = rest.split_once('/').unwrap_or((rest, ""));
        let vhost = vhost.split('?').next().unwrap_or("");
        let first = authority.split(',').next().unwrap_or(authority);
        let (creds, hostport) = first.rsplit_once('@').unwrap_or(("guest:guest", first));
        let (user, password) = creds.split_once(':').unwrap_or((creds, ""));
        let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5672"));
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        Self {
            url: url.to_owned(),
            host: host.to_owned(),
            port: port.parse().expect("a port in OSLO_MESSAGING_TEST_URL"),
            user: decode(user),
            password: decode(password),
            vhost: if vhost.is_empty() {
                "/".to_owned()
            } else {
                decode(vhost)
            },
        }
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The test broker's URL.
pub fn url() -> String {
    Broker::from_env().url
}

/// Whether the test broker answers; skips (false) or fails as the crate explains.
pub fn available() -> bool {
    let b = Broker::from_env();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&(b.host.as_str(), b.port))
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    if !reachable {
        crate::skip_or_fail(
            &format!("the test broker {} is unreachable", b.addr()),
            "set OSLO_MESSAGING_TEST_URL",
        );
    }
    reachable
}

/// Returns from the test when the test broker is unreachable (and fails under `CI`).
#[macro_export]
macro_rules! require_broker {
    () => {
        if !$crate::broker::available() {
            return;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_read_as_the_tests_write_them() {
        let b = Broker::parse("rabbit://nova:p%40ss@rmq1:5673,rmq2:5672/cells?ssl=1");
        assert_eq!(
            (
                b.host.as_str(),
                b.port,
                b.user.as_str(),
                b.password.as_str(),
                b.vhost.as_str()
            ),
            ("rmq1", 5673, "nova", "p@ss", "cells")
        );
        let d = Broker::parse("rabbit://guest:guest@127.0.0.1:5672/");
        assert_eq!(
            (d.vhost.as_str(), d.addr().as_str()),
            ("/", "127.0.0.1:5672")
        );
    }
}
