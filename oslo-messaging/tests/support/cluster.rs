//! The cluster tests' client options; the cluster itself is `testkit::cluster`.

use oslo_messaging::Config;

#[allow(unused_imports)]
pub use testkit::cluster::Cluster;

/// Options of the clients and servers of cluster tests: quorum queues, a 10 s heartbeat,
/// quick reconnects (0.5 s after a loss, then 1 to 2 s), the control exchange `exchange`,
/// and `extra` (`[oslo_messaging_rabbit]` name, value).
pub fn client_config(exchange: &str, extra: &[(&str, &str)]) -> Config {
    let mut b = Config::builder().control_exchange(exchange);
    for (k, v) in [
        ("rabbit_quorum_queue", "true"),
        ("heartbeat_timeout_threshold", "10"),
        ("rabbit_retry_interval", "1"),
        ("rabbit_retry_backoff", "1"),
        ("rabbit_interval_max", "2"),
        ("kombu_reconnect_delay", "0.5"),
    ]
    .iter()
    .chain(extra)
    {
        b = b.option("oslo_messaging_rabbit", k, v);
    }
    b.build().unwrap()
}
