//! Which broker to connect to next: the URL's hosts, shuffled once, then walked by
//! `kombu_failover_strategy`, with Python's connection parameters.

use std::sync::Mutex;
use std::time::Duration;

use super::amqp::{ConnectParams, Connection, Error as AmqpError, Login};
use super::tls;
use crate::config::RabbitOptions;
use crate::driver::Retry;
use crate::error::{Error, ErrorKind, Result};
use crate::url::TransportUrl;

/// kombu's connect timeout (also bounds the TLS and AMQP handshakes here).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

struct Host {
    params: ConnectParams,
    shown: String,
}

/// The brokers of one transport and where the next connection goes.
pub(crate) struct Link {
    hosts: Vec<Host>,
    shuffle: bool,
    cursor: Mutex<usize>,
    pub(crate) opts: RabbitOptions,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field(
                "hosts",
                &self.hosts.iter().map(|h| &h.shown).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn login(opts: &RabbitOptions, user: String, password: String) -> Result<Login> {
    Ok(match opts.rabbit_login_method.as_str() {
        "PLAIN" => Login::Plain { user, password },
        "AMQPLAIN" => Login::AmqPlain { user, password },
        "EXTERNAL" => Login::External,
        "RABBIT-CR-DEMO" => Login::CrDemo { user, password },
        other => {
            return Err(Error::config(format!(
                "unknown rabbit_login_method {other:?}"
            )));
        }
    })
}

/// `"<process name>:<pid>:<uuid4>"`, as Python names its connections.
pub(crate) fn connection_name(opts: &RabbitOptions) -> String {
    format!(
        "{}:{}:{}",
        opts.processname,
        std::process::id(),
        uuid::Uuid::new_v4().hyphenated()
    )
}

impl Link {
    /// Hosts from `url` (none: `guest:guest@localhost:5672`), credentials defaulting to
    /// `guest`/`guest` as py-amqp does, the virtual host `/` when the URL gives none.
    pub(crate) fn new(url: &TransportUrl, opts: &RabbitOptions) -> Result<Self> {
        let tls_config = if opts.ssl {
            Some(tls::client_config(opts)?)
        } else {
            None
        };
        let vhost = match url.virtual_host() {
            None | Some("") => "/".to_owned(),
            Some(v) => v.to_owned(),
        };
        let heartbeat = u16::try_from(
            opts.heartbeat_timeout_threshold
                .clamp(0, i64::from(u16::MAX)),
        )
        .unwrap_or(60);
        let heartbeat_rate = u16::try_from(opts.heartbeat_rate.clamp(1, 100)).unwrap_or(3);
        let mut entries: Vec<(String, u16, String, String)> = url
            .hosts()
            .iter()
            .map(|h| {
                let user = h
                    .username()
                    .filter(|u| !u.is_empty())
                    .unwrap_or("guest")
                    .to_owned();
                let password = h
                    .password()
                    .map(|p| p.expose().to_owned())
                    .filter(|p| !p.is_empty() || h.username().is_some_and(|u| !u.is_empty()))
                    .unwrap_or_else(|| "guest".to_owned());
                (
                    h.hostname().unwrap_or("localhost").to_owned(),
                    h.port().unwrap_or(5672),
                    user,
                    password,
                )
            })
            .collect();
        if entries.is_empty() {
            entries.push(("localhost".into(), 5672, "guest".into(), "guest".into()));
        }
        // Python shuffles several hosts once, so processes spread over the cluster.
        if entries.len() > 1 {
            fastrand::shuffle(&mut entries);
        }
        let mut hosts = Vec::with_capacity(entries.len());
        for (host, port, user, password) in entries {
            let upgrade = match &tls_config {
                Some(cfg) => Some(tls::upgrade(cfg.clone(), &host)?),
                None => None,
            };
            let shown = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            hosts.push(Host {
                params: {
                    let params = ConnectParams::new(host, port, login(opts, user, password)?)
                        .vhost(vhost.clone())
                        .heartbeat(heartbeat)
                        .heartbeat_rate(heartbeat_rate)
                        .product("oslo-messaging (Rust)")
                        .connect_timeout(CONNECT_TIMEOUT);
                    match upgrade {
                        Some(u) => params.upgrade(u),
                        None => params,
                    }
                },
                shown,
            });
        }
        Ok(Self {
            hosts,
            shuffle: opts.kombu_failover_strategy == "shuffle",
            cursor: Mutex::new(0),
            opts: opts.clone(),
        })
    }

    fn cursor(&self) -> std::sync::MutexGuard<'_, usize> {
        self.cursor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The host the next attempt goes to, as `host:port`.
    pub(crate) fn current(&self) -> String {
        self.hosts[*self.cursor() % self.hosts.len()].shown.clone()
    }

    /// Moves to the next host (round-robin) or a random one (shuffle).
    pub(crate) fn advance(&self) {
        let mut c = self.cursor();
        self.step(&mut c);
    }

    fn step(&self, cursor: &mut usize) {
        *cursor = if self.shuffle {
            fastrand::usize(..self.hosts.len())
        } else {
            (*cursor + 1) % self.hosts.len()
        };
    }

    /// A connection to `host` was lost: the next attempt goes to the next host, unless another
    /// connection already moved on from it.
    pub(crate) fn lost(&self, host: &str) {
        if self.hosts.len() > 1 {
            let mut c = self.cursor();
            if self.hosts[*c % self.hosts.len()].shown == host {
                self.step(&mut c);
            }
        }
    }

    /// One connection attempt to the current host; on failure the next attempt goes to the
    /// next host. Returns the host (`host:port`) with the result.
    pub(crate) async fn connect(&self) -> (String, std::result::Result<Connection, AmqpError>) {
        let (mut params, shown) = {
            let h = &self.hosts[*self.cursor() % self.hosts.len()];
            (h.params.clone(), h.shown.clone())
        };
        params.connection_name = connection_name(&self.opts);
        let result = Connection::open(&params).await;
        match &result {
            Ok(c) => tracing::debug!(
                host = shown,
                version = c.server_property("version").unwrap_or_default(),
                "connected to the AMQP broker"
            ),
            Err(e) if e.is_fatal() => {
                tracing::error!(host = shown, error = %e, "the AMQP server refused the login");
                if self.hosts.len() > 1 {
                    self.advance();
                }
            }
            Err(e) => {
                tracing::warn!(host = shown, error = %e, "AMQP server is unreachable");
                if self.hosts.len() > 1 {
                    self.advance();
                }
            }
        }
        (shown, result)
    }
}

/// The error a publish gives up with, worded as Python's.
pub(crate) fn give_up(host: &str, retry: Retry, err: &AmqpError) -> Error {
    if err.is_fatal() {
        return Error::with_source(
            ErrorKind::AccessRefused,
            format!("the AMQP server on {host} refused the connection"),
            err.clone(),
        );
    }
    let tries = match retry {
        Retry::Forever => "inf".to_owned(),
        Retry::Times(n) => n.to_string(),
    };
    Error::with_source(
        ErrorKind::DeliveryFailure,
        format!("Unable to connect to AMQP server on {host} after {tries} tries"),
        err.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(url: &str, opts: &RabbitOptions) -> Link {
        Link::new(&TransportUrl::parse(url).unwrap(), opts).unwrap()
    }

    #[test]
    fn hosts_credentials_and_vhost() {
        let l = link("rabbit://nova:pw@rmq1:5673/nova", &RabbitOptions::default());
        let p = &l.hosts[0].params;
        assert_eq!(
            (p.host.as_str(), p.port, p.vhost.as_str()),
            ("rmq1", 5673, "nova")
        );
        assert_eq!(
            p.login,
            Login::AmqPlain {
                user: "nova".into(),
                password: "pw".into()
            },
            "AMQPLAIN is Python's default"
        );
        assert_eq!(p.heartbeat, 60);
        let l = link("rabbit://", &RabbitOptions::default());
        let p = &l.hosts[0].params;
        assert_eq!(
            (p.host.as_str(), p.port, p.vhost.as_str()),
            ("localhost", 5672, "/")
        );
        assert_eq!(
            p.login,
            Login::AmqPlain {
                user: "guest".into(),
                password: "guest".into()
            }
        );
        let l = link("rabbit://h//", &RabbitOptions::default());
        assert_eq!(l.hosts[0].params.vhost, "/");
    }

    #[test]
    fn a_lost_connection_moves_the_next_attempt_on_once() {
        let l = link("rabbit://a:1,b:2,c:3/", &RabbitOptions::default());
        let first = l.current();
        // The publisher and a consumer both lose their connection to the same host: the
        // next attempt goes to the next host, not two hosts on.
        l.lost(&first);
        let second = l.current();
        assert_ne!(second, first);
        l.lost(&first);
        assert_eq!(l.current(), second);
        let one = link("rabbit://a:1/", &RabbitOptions::default());
        one.lost("a:1");
        assert_eq!(one.current(), "a:1");
    }

    #[test]
    fn round_robin_walks_every_host() {
        let l = link("rabbit://a:1,b:2,c:3/", &RabbitOptions::default());
        let mut seen: Vec<String> = (0..3)
            .map(|_| {
                let h = l.current();
                l.advance();
                h
            })
            .collect();
        seen.sort();
        assert_eq!(seen, ["a:1", "b:2", "c:3"]);
        assert_eq!(
            l.current(),
            l.hosts[0].shown,
            "back to the first after a full cycle"
        );
    }

    #[test]
    fn login_methods() {
        let o = RabbitOptions {
            rabbit_login_method: "EXTERNAL".into(),
            ..RabbitOptions::default()
        };
        assert_eq!(
            link("rabbit://h/", &o).hosts[0].params.login,
            Login::External
        );
        let o = RabbitOptions {
            rabbit_login_method: "PLAIN".into(),
            ..RabbitOptions::default()
        };
        assert!(matches!(
            link("rabbit://u:p@h/", &o).hosts[0].params.login,
            Login::Plain { .. }
        ));
    }

    #[test]
    fn give_up_reads_like_python() {
        let e = give_up(
            "h:5672",
            Retry::Times(2),
            &AmqpError::Connect {
                addr: "h:5672".into(),
                source: std::sync::Arc::new(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                )),
            },
        );
        assert_eq!(e.kind(), ErrorKind::DeliveryFailure);
        assert_eq!(
            e.message(),
            "Unable to connect to AMQP server on h:5672 after 2 tries"
        );
        // The cause once, from the source.
        assert_eq!(
            e.to_string(),
            "Unable to connect to AMQP server on h:5672 after 2 tries: cannot connect: connection refused"
        );
        let e = give_up(
            "h:5672",
            Retry::Forever,
            &AmqpError::Io(std::sync::Arc::new(std::io::Error::other("x"))),
        );
        assert!(e.message().contains("after inf tries"));
        let e = give_up(
            "h:5672",
            Retry::Forever,
            &AmqpError::AuthenticationFailed("403".into()),
        );
        assert_eq!(e.kind(), ErrorKind::AccessRefused);
    }

    #[test]
    fn connection_names_look_like_pythons() {
        let n = connection_name(&RabbitOptions {
            processname: "nova-compute".into(),
            ..RabbitOptions::default()
        });
        let parts: Vec<&str> = n.split(':').collect();
        assert_eq!(parts[0], "nova-compute");
        assert_eq!(parts[1], std::process::id().to_string());
        assert_eq!(parts[2].len(), 36);
    }
}
