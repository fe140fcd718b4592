//! Counters and histograms for Prometheus, through the `metrics` facade (feature `metrics`),
//! once [`record_metrics`](crate::telemetry::record_metrics) turned them on: what Python has
//! no numbers for (the names are listed there). Without the feature, or until then, every
//! function here returns at once.
// Without the feature nothing reads the values; without the RabbitMQ driver its hooks go unused.
#![cfg_attr(not(all(feature = "metrics", feature = "rabbit")), allow(dead_code))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::{Error, ErrorKind};

static ON: AtomicBool = AtomicBool::new(false);

/// Turns recording on or off (off by default).
pub(crate) fn set(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// Whether anything is recorded.
#[inline]
pub(crate) fn on() -> bool {
    cfg!(feature = "metrics") && ON.load(Ordering::Relaxed)
}

/// A start time, taken only when recording.
pub(crate) fn started() -> Option<Instant> {
    on().then(Instant::now)
}

/// `ok`, or the kind of `e` in snake case.
pub(crate) fn outcome(e: Option<&Error>) -> &'static str {
    match e.map(Error::kind) {
        None => "ok",
        Some(ErrorKind::Timeout) => "timeout",
        Some(ErrorKind::DeliveryFailure) => "delivery_failure",
        Some(ErrorKind::Undeliverable) => "undeliverable",
        Some(ErrorKind::InvalidTarget) => "invalid_target",
        Some(ErrorKind::InvalidUrl) => "invalid_url",
        Some(ErrorKind::Configuration) => "configuration",
        Some(ErrorKind::Remote) => "remote",
        Some(ErrorKind::VersionCap) => "version_cap",
        Some(ErrorKind::Serialization) => "serialization",
        Some(ErrorKind::Protocol) => "protocol",
        Some(ErrorKind::Transport) => "transport",
        Some(ErrorKind::Blocked) => "blocked",
        Some(ErrorKind::AccessRefused) => "access_refused",
        Some(ErrorKind::ShutDown) => "shut_down",
        Some(ErrorKind::InvalidState) => "invalid_state",
        Some(ErrorKind::ReplyLost) => "reply_lost",
    }
}

/// One more of a gauge while it lives.
#[derive(Debug)]
pub(crate) struct InFlight(Option<&'static str>);

impl InFlight {
    pub(crate) fn new(gauge: &'static str) -> Self {
        if !on() {
            return Self(None);
        }
        #[cfg(feature = "metrics")]
        metrics::gauge!(gauge).increment(1.0);
        Self(Some(gauge))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        if let Some(gauge) = self.0 {
            metrics::gauge!(gauge).decrement(1.0);
        }
    }
}

pub(crate) const RPC_CLIENT_IN_FLIGHT: &str = "oslo_messaging_rpc_client_in_flight";
pub(crate) const RPC_SERVER_IN_FLIGHT: &str = "oslo_messaging_rpc_server_in_flight";

/// A call or cast ended with `outcome` ([`outcome`], or `cancelled`).
pub(crate) fn rpc_client(
    kind: &'static str,
    method: &str,
    outcome: &'static str,
    since: Option<Instant>,
) {
    let Some(since) = since.filter(|_| on()) else {
        return;
    };
    let _ = (kind, method, outcome, since);
    #[cfg(feature = "metrics")]
    {
        let method = method.to_owned();
        metrics::counter!("oslo_messaging_rpc_client_requests_total", "kind" => kind, "method" => method.clone(), "outcome" => outcome).increment(1);
        metrics::histogram!("oslo_messaging_rpc_client_seconds", "kind" => kind, "method" => method)
            .record(since.elapsed().as_secs_f64());
    }
}

/// An RPC handler ended.
pub(crate) fn rpc_server(method: &str, outcome: &'static str, since: Option<Instant>) {
    let Some(since) = since.filter(|_| on()) else {
        return;
    };
    let _ = (method, outcome, since);
    #[cfg(feature = "metrics")]
    {
        let method = method.to_owned();
        metrics::counter!("oslo_messaging_rpc_server_requests_total", "method" => method.clone(), "outcome" => outcome).increment(1);
        metrics::histogram!("oslo_messaging_rpc_server_handler_seconds", "method" => method)
            .record(since.elapsed().as_secs_f64());
    }
}

/// A message waited for a free place in the handler pool.
pub(crate) fn pool_full() {
    if on() {
        #[cfg(feature = "metrics")]
        metrics::counter!("oslo_messaging_handler_pool_full_total").increment(1);
    }
}

/// A duplicate (same `_unique_id`) was dropped.
pub(crate) fn duplicate(what: &'static str) {
    if on() {
        let _ = what;
        #[cfg(feature = "metrics")]
        metrics::counter!("oslo_messaging_duplicates_dropped_total", "what" => what).increment(1);
    }
}

/// A notification was handled or requeued.
pub(crate) fn notification(priority: &'static str, requeued: bool) {
    if on() {
        let _ = (priority, requeued);
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "oslo_messaging_notifications_handled_total",
            "priority" => priority,
            "outcome" => if requeued { "requeued" } else { "handled" }
        )
        .increment(1);
    }
}

/// A connection was made again after one was lost.
pub(crate) fn reconnect(what: &'static str) {
    if on() {
        let _ = what;
        #[cfg(feature = "metrics")]
        metrics::counter!("oslo_messaging_rabbit_reconnects_total", "what" => what).increment(1);
    }
}

/// A publish waited on `connection.blocked` since `since`.
pub(crate) fn blocked(since: Option<Instant>) {
    if let Some(since) = since.filter(|_| on()) {
        let _ = since;
        #[cfg(feature = "metrics")]
        metrics::histogram!("oslo_messaging_rabbit_blocked_seconds")
            .record(since.elapsed().as_secs_f64());
    }
}

/// The broker confirmed a publish sent at `since`.
pub(crate) fn confirm(since: Option<Instant>) {
    if let Some(since) = since.filter(|_| on()) {
        let _ = since;
        #[cfg(feature = "metrics")]
        metrics::histogram!("oslo_messaging_rabbit_confirm_seconds")
            .record(since.elapsed().as_secs_f64());
    }
}

/// A reply was retried because its reply queue was missing.
pub(crate) fn reply_retry() {
    if on() {
        #[cfg(feature = "metrics")]
        metrics::counter!("oslo_messaging_rabbit_reply_retries_total").increment(1);
    }
}
