//! The RabbitMQ driver (`rabbit://`, `kombu://`).
// Temporary while the driver on top of this client is being written.
#![allow(dead_code, unused_imports)]

pub(crate) mod amqp;

/// The broker tests use: `OSLO_MESSAGING_TEST_URL` (default
/// `rabbit://guest:guest@127.0.0.1:5672/`), first host.
#[cfg(test)]
pub(crate) struct TestBroker {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) vhost: String,
    pub(crate) user: String,
    pub(crate) password: String,
}

#[cfg(test)]
pub(crate) fn test_broker() -> TestBroker {
    let url = std::env::var("OSLO_MESSAGING_TEST_URL")
        .unwrap_or_else(|_| "rabbit://guest:guest@127.0.0.1:5672/".to_owned());
    let url = crate::TransportUrl::parse(&url).expect("OSLO_MESSAGING_TEST_URL parses");
    let host = url
        .hosts()
        .first()
        .cloned()
        .expect("a host in OSLO_MESSAGING_TEST_URL");
    TestBroker {
        host: host.hostname().unwrap_or("127.0.0.1").to_owned(),
        port: host.port().unwrap_or(5672),
        vhost: match url.virtual_host() {
            None | Some("") => "/".to_owned(),
            Some(v) => v.to_owned(),
        },
        user: host.username().unwrap_or("guest").to_owned(),
        password: host.password().map_or("guest", |p| p.expose()).to_owned(),
    }
}
