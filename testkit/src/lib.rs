//! The test infrastructure of the oslo-messaging workspace, in one place for the library's,
//! the AMQP client's and the command line's tests (not published; it depends on none of the
//! workspace's crates):
//!
//! * [`broker`]: the test broker of `OSLO_MESSAGING_TEST_URL`, and [`require_broker!`];
//! * [`node`] and [`cluster`]: private RabbitMQ nodes and three-node clusters on their own
//!   ports, for faults ([`require_nodes!`]);
//! * [`proxy`]: a fault proxy between a client and a broker;
//! * [`tls`]: a TLS front for a plain-TCP server (tansu);
//! * [`kafka`]: a private Kafka-protocol broker (tansu) for the Kafka driver ([`require_kafka!`]);
//! * [`python`]: the Python oslo.messaging 18.3.1 peers ([`require_python!`]);
//! * [`process`]: a background process read line by line;
//! * [`metrics`]: this process's memory, file descriptors and tasks;
//! * [`otlp`]: an OTLP/HTTP trace receiver, to check spans across processes;
//! * [`fuzz`]: replaying a fuzz corpus as an ordinary test.
//!
//! A test that needs something missing here is skipped with a message, unless `CI` is set:
//! then it fails, so CI never skips silently.
#![allow(missing_docs, missing_debug_implementations, unreachable_pub)]

use std::sync::atomic::{AtomicUsize, Ordering};

pub mod broker;
pub mod cluster;
pub mod fuzz;
pub mod kafka;
pub mod metrics;
pub mod node;
pub mod otlp;
pub mod process;
pub mod proxy;
pub mod python;
pub mod tls;

/// A name no other test uses (process id, time and a counter), for queues, exchanges and
/// topics on shared brokers.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{:x}{:x}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether `CI` is set: then what a test needs must be there.
pub(crate) fn skip_or_fail(what: &str, hint: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but {what} ({hint})"
    );
    eprintln!("SKIPPED: {what} ({hint})");
}
