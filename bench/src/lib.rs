//! The line protocol the benchmark programs speak, in one place: `raw-amqp` writes it with
//! these types, `bench-compare` reads every program's output with them, and the command
//! line's `bench` modes (which cannot depend on this unpublished crate) are checked against
//! them by a test of theirs.
//!
//! A server prints JSON lines with an `event` (`ready`, `done` when its count is reached,
//! `stopped`) and its count ([`ServerLine`]); a client prints one [`Summary`] at the end.
#![allow(missing_docs)]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Seconds since the epoch: the clock both sides of a measurement share.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Latencies of a client run, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

impl Latency {
    /// The figures of `ms`, which it sorts.
    pub fn of(ms: &mut [f64]) -> Self {
        ms.sort_by(f64::total_cmp);
        Self {
            p50: percentile(ms, 50.0),
            p90: percentile(ms, 90.0),
            p99: percentile(ms, 99.0),
            max: ms.last().copied(),
            mean: (!ms.is_empty()).then(|| ms.iter().sum::<f64>() / ms.len() as f64),
        }
    }
}

/// A client's result line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `rpc-client` or `notify-client`.
    pub mode: String,
    /// Which implementation ran: `rust`, `python`, `raw-ours`, `raw-amqprs`.
    #[serde(rename = "impl")]
    pub implementation: String,
    #[serde(default)]
    pub cast: bool,
    #[serde(default)]
    pub fanout: bool,
    /// Operations asked for (0: a timed run).
    #[serde(default)]
    pub calls: u64,
    /// Operations that succeeded.
    pub ok: u64,
    pub errors: u64,
    /// Failures by kind, when a program counts them.
    #[serde(default)]
    pub error_kinds: Value,
    #[serde(default)]
    pub concurrency: u32,
    /// Bytes, or `"oslo"` for the simulator's length distribution.
    #[serde(default)]
    pub payload_size: Value,
    /// When the measured part started and ended, on the shared clock.
    pub start_ts: f64,
    pub end_ts: f64,
    pub duration_s: f64,
    /// Successful operations per second.
    pub throughput: f64,
    pub latency_ms: Latency,
}

/// A server's line: an event and the count so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerLine {
    pub event: String,
    #[serde(rename = "impl", default)]
    pub implementation: String,
    #[serde(default)]
    pub received: u64,
    /// When the first and the last message arrived.
    #[serde(default)]
    pub first_ts: Option<f64>,
    #[serde(default)]
    pub last_ts: Option<f64>,
}

/// A server's count of messages and the times of the first and last.
#[derive(Debug, Default)]
pub struct Tally {
    count: AtomicU64,
    first: OnceLock<f64>,
    last: AtomicU64,
}

impl Tally {
    /// Counts one; true when `target` was just reached.
    pub fn hit(&self, target: Option<u64>) -> bool {
        let t = now();
        self.first.get_or_init(|| t);
        self.last.fetch_max(t.to_bits(), Ordering::Relaxed);
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        target == Some(n)
    }

    /// The count as a line for `event`.
    pub fn line(&self, event: &str, implementation: &str) -> ServerLine {
        ServerLine {
            event: event.to_owned(),
            implementation: implementation.to_owned(),
            received: self.count.load(Ordering::Relaxed),
            first_ts: self.first.get().copied(),
            last_ts: self
                .first
                .get()
                .map(|_| f64::from_bits(self.last.load(Ordering::Relaxed))),
        }
    }
}

/// Host, port, user, password and virtual host of a one-host `amqp://` or `rabbit://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpUrl {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub vhost: String,
}

impl AmqpUrl {
    pub fn parse(url: &str) -> Self {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let (authority, vhost) = rest.split_once('/').unwrap_or((rest, ""));
        let (creds, hostport) = authority
            .rsplit_once('@')
            .unwrap_or(("guest:guest", authority));
        let (user, password) = creds.split_once(':').unwrap_or((creds, ""));
        let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5672"));
        Self {
            host: host.to_owned(),
            port: port.parse().unwrap_or(5672),
            user: user.to_owned(),
            password: password.to_owned(),
            vhost: if vhost.is_empty() { "/" } else { vhost }.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[], 50.0), None);
        let mut ms = vec![3.0, 1.0, 2.0];
        let l = Latency::of(&mut ms);
        assert_eq!((l.p50, l.max, l.mean), (Some(2.0), Some(3.0), Some(2.0)));
    }

    #[test]
    fn lines_round_trip_and_urls_parse() {
        let t = Tally::default();
        assert!(!t.hit(Some(2)));
        assert!(t.hit(Some(2)));
        let line = t.line("done", "rust");
        let text = serde_json::to_string(&line).unwrap();
        assert!(text.contains("\"impl\":\"rust\""), "{text}");
        assert_eq!(serde_json::from_str::<ServerLine>(&text).unwrap(), line);
        let u = AmqpUrl::parse("amqp://u:p@h:5673/v");
        assert_eq!(
            (u.host.as_str(), u.port, u.vhost.as_str()),
            ("h", 5673, "v")
        );
    }
}
