//! `[oslo_messaging_metrics]`: RPC client metrics for an oslo.metrics collector, as Python
//! oslo.messaging 18.3.1 sends them.
//!
//! Each call and cast sends `rpc_client_invocation_start_total` (inc) before it is sent, then,
//! when it ends, `rpc_client_processing_seconds` (observe, in seconds) and
//! `rpc_client_invocation_end_total` (inc) on success, or `rpc_client_exception_total` (inc,
//! with an `exception` label: the class name Python's client would raise) on failure. Each is
//! one JSON datagram, written as Python's `json.dumps` writes it, to the collector's unix
//! datagram socket, with Python's labels (`call_type`, `exchange`, `topic`, `namespace`,
//! `version`, `server`, `fanout`, `method`, `timeout`, `process`) and Python's values for them
//! (an unset target field is `null`; so is `timeout`, which 18.3.1 never fills in).
//!
//! A thread of its own sends them from a bounded buffer (`metrics_buffer_size`): a full buffer,
//! a missing socket or a collector that went away drops the metric and counts it
//! ([`metrics_dropped`](super::metrics_dropped)); sending resumes by itself when the
//! collector is back. A call never waits for any of it.

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::config::MetricsOptions;
use crate::error::{Error, ErrorKind, Result};
use crate::target::Target;
use crate::wire;

static DROPPED: AtomicU64 = AtomicU64::new(0);

pub(super) fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// A sender of metrics to one collector socket.
#[derive(Debug)]
pub(crate) struct Collector {
    queue: SyncSender<Vec<u8>>,
    process: String,
}

impl Collector {
    /// The sender for `opts` (one per socket, process name and buffer size, as Python has one
    /// per process), started on first use.
    pub(super) fn for_options(opts: &MetricsOptions) -> Result<Arc<Self>> {
        type Key = (String, String, i64);
        static ALL: OnceLock<Mutex<HashMap<Key, Arc<Collector>>>> = OnceLock::new();
        let key = (
            opts.metrics_socket_file.clone(),
            opts.metrics_process_name.clone(),
            opts.metrics_buffer_size,
        );
        super::shared(&ALL, key, |(socket, process, size)| {
            let size = usize::try_from((*size).max(1)).unwrap_or(1);
            let (queue, rx) = std::sync::mpsc::sync_channel(size);
            let path = PathBuf::from(socket);
            std::thread::Builder::new()
                .name("oslo-metrics-send".to_owned())
                .spawn(move || send_loop(&path, &rx))
                .map_err(|e| {
                    Error::config(format!("cannot start the metrics sender thread: {e}"))
                })?;
            Ok(Self {
                queue,
                process: process.clone(),
            })
        })
    }

    /// Starts measuring a call or cast: sends `rpc_client_invocation_start_total`.
    pub(super) fn start(
        self: &Arc<Self>,
        target: &Target,
        method: &str,
        call_type: &'static str,
    ) -> Measure {
        let version = target.version().map(ToString::to_string);
        let mut labels = Map::new();
        labels.insert("call_type".into(), call_type.into());
        labels.insert("exchange".into(), target.exchange().into());
        labels.insert("topic".into(), target.topic().into());
        labels.insert("namespace".into(), target.namespace().into());
        labels.insert("version".into(), version.into());
        labels.insert("server".into(), target.server().into());
        // Python's Target leaves fanout None unless it is asked for.
        labels.insert(
            "fanout".into(),
            if target.fanout() {
                Value::Bool(true)
            } else {
                Value::Null
            },
        );
        labels.insert("method".into(), method.into());
        labels.insert("timeout".into(), Value::Null);
        let measure = Measure {
            collector: self.clone(),
            labels,
            started: std::time::Instant::now(),
        };
        measure.send(
            "rpc_client_invocation_start_total",
            "inc",
            Value::Null,
            None,
        );
        measure
    }

    fn enqueue(&self, datagram: Vec<u8>) {
        static WARNED: AtomicBool = AtomicBool::new(false);
        match self.queue.try_send(datagram) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the oslo.metrics buffer is full: dropping metrics until the collector \
                         keeps up (logged once)"
                    );
                }
            }
        }
    }
}

/// One call or cast being measured.
#[derive(Debug)]
pub(crate) struct Measure {
    collector: Arc<Collector>,
    labels: Map<String, Value>,
    started: std::time::Instant,
}

impl Measure {
    /// Sends what ends the measurement: duration and end on success, the exception otherwise.
    pub(crate) fn finish<T>(self, outcome: &Result<T>) {
        match outcome {
            Ok(_) => {
                let seconds = self.started.elapsed().as_secs_f64();
                self.send(
                    "rpc_client_processing_seconds",
                    "observe",
                    json!(seconds),
                    None,
                );
                self.send("rpc_client_invocation_end_total", "inc", Value::Null, None);
            }
            Err(e) => self.send(
                "rpc_client_exception_total",
                "inc",
                Value::Null,
                Some(python_exception_name(e)),
            ),
        }
    }

    /// Sends what ends a call or cast whose caller stopped waiting (dropped its future): an
    /// exception named `Cancelled`, which Python, whose calls cannot be abandoned, never sends.
    pub(crate) fn cancelled(self) {
        self.send(
            "rpc_client_exception_total",
            "inc",
            Value::Null,
            Some("Cancelled".to_owned()),
        );
    }

    fn send(&self, name: &str, action: &str, value: Value, exception: Option<String>) {
        let mut labels = self.labels.clone();
        if let Some(exception) = exception {
            labels.insert("exception".into(), exception.into());
        }
        labels.insert("process".into(), self.collector.process.clone().into());
        // The key order of Python's `Metric.to_json`.
        let metric = json!({
            "module": "oslo_messaging",
            "name": name,
            "action": {"value": value, "action": action},
            "labels": labels,
        });
        let mut out = Vec::with_capacity(320);
        if wire::json::write(&mut out, &metric).is_ok() {
            self.collector.enqueue(out);
        }
    }
}

/// The class name of the exception Python's RPC client raises for `e` (what
/// `ex.__class__.__name__` gives in `measure_metrics`).
pub(crate) fn python_exception_name(e: &Error) -> String {
    match e.kind() {
        ErrorKind::Timeout => "MessagingTimeout".to_owned(),
        ErrorKind::DeliveryFailure => "MessageDeliveryFailure".to_owned(),
        ErrorKind::Undeliverable => "MessageUndeliverable".to_owned(),
        ErrorKind::InvalidTarget => "InvalidTarget".to_owned(),
        ErrorKind::VersionCap => "RPCVersionCapError".to_owned(),
        ErrorKind::Remote => match e.remote_error() {
            // Python rebuilds builtins exceptions as themselves, and the others (modules the
            // client did not allow) as RemoteError.
            Some(r) if matches!(r.module(), "builtins" | "exceptions") => r.class().to_owned(),
            _ => "RemoteError".to_owned(),
        },
        _ => "MessagingException".to_owned(),
    }
}

fn send_loop(path: &std::path::Path, queue: &Receiver<Vec<u8>>) {
    let mut failing = false;
    let mut socket = None;
    while let Ok(datagram) = queue.recv() {
        let sock = match &socket {
            Some(s) => s,
            None => match UnixDatagram::unbound() {
                Ok(s) => socket.insert(s),
                Err(e) => {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "cannot open a unix datagram socket");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            },
        };
        match sock.send_to(&datagram, path) {
            Ok(_) if failing => {
                failing = false;
                tracing::info!(socket = %path.display(), "sending metrics to oslo.metrics again");
            }
            Ok(_) => {}
            Err(e) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                if !failing {
                    failing = true;
                    tracing::warn!(
                        socket = %path.display(),
                        error = %e,
                        "cannot send metrics to oslo.metrics; dropping them until it is back"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RemoteError;

    fn collector_at(path: &std::path::Path) -> Arc<Collector> {
        let opts = MetricsOptions {
            metrics_enabled: true,
            metrics_socket_file: path.display().to_string(),
            metrics_process_name: "nova-api".to_owned(),
            ..MetricsOptions::default()
        };
        Collector::for_options(&opts).unwrap()
    }

    fn receive(sock: &UnixDatagram) -> String {
        let mut buf = vec![0u8; 65536];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn datagrams_are_pythons_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let c = collector_at(&path);
        let m = c.start(&Target::new("compute"), "resize", "call");
        assert_eq!(
            receive(&sock),
            r#"{"module": "oslo_messaging", "name": "rpc_client_invocation_start_total", "action": {"value": null, "action": "inc"}, "labels": {"call_type": "call", "exchange": null, "topic": "compute", "namespace": null, "version": null, "server": null, "fanout": null, "method": "resize", "timeout": null, "process": "nova-api"}}"#
        );
        m.finish(&Ok(()));
        let observed = receive(&sock);
        assert!(
            observed.starts_with(
                r#"{"module": "oslo_messaging", "name": "rpc_client_processing_seconds", "action": {"value": 0."#
            ),
            "{observed}"
        );
        assert!(observed.contains(r#""action": "observe"}"#), "{observed}");
        assert!(receive(&sock).contains(r#""name": "rpc_client_invocation_end_total""#));

        let target = Target::new("compute")
            .with_server("h1")
            .with_namespace("ns")
            .with_version("5.1".parse().unwrap())
            .with_fanout(true);
        let m = c.start(&target, "stop", "cast");
        let start = receive(&sock);
        assert!(
            start.contains(r#""labels": {"call_type": "cast", "exchange": null, "topic": "compute", "namespace": "ns", "version": "5.1", "server": "h1", "fanout": true, "method": "stop""#),
            "{start}"
        );
        m.finish::<()>(&Err(Error::timeout("no reply")));
        let failed = receive(&sock);
        assert!(
            failed.ends_with(
                r#""timeout": null, "exception": "MessagingTimeout", "process": "nova-api"}}"#
            ),
            "{failed}"
        );
    }

    #[test]
    fn a_missing_collector_drops_and_sending_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("later.sock");
        let c = collector_at(&path);
        let before = dropped();
        for _ in 0..5 {
            c.start(&Target::new("t"), "m", "cast");
        }
        // The sender thread drops what it cannot send.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while dropped() < before + 5 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(dropped() >= before + 5);
        // The collector comes up: the next metric gets through.
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.start(&Target::new("t"), "back", "cast");
        assert!(receive(&sock).contains(r#""method": "back""#));
    }

    #[test]
    fn exception_names_are_pythons() {
        let remote =
            |module: &str, class: &str| Error::remote(RemoteError::new(module, class, "boom"));
        assert_eq!(
            python_exception_name(&remote("builtins", "ValueError")),
            "ValueError"
        );
        assert_eq!(
            python_exception_name(&remote("nova.exception", "NotFound")),
            "RemoteError"
        );
        assert_eq!(
            python_exception_name(&Error::timeout("x")),
            "MessagingTimeout"
        );
    }
}
