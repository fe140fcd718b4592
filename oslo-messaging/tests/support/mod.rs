//! Helpers shared by the integration tests.
// Each test binary uses a part of this module; the re-exports are there for those that do.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use oslo_messaging::notify::{
    Notification, NotificationEndpoint, NotificationFilter, NotifyDriver, Priority,
};
use oslo_messaging::rpc::{Endpoint, Request, RpcError, RpcServer};
use oslo_messaging::{NotificationListener, Notifier, Target, Transport};
use serde_json::Value;
use tokio::sync::mpsc;

/// Counts calls per server name.
#[derive(Clone, Default)]
pub struct Calls(pub Arc<std::sync::Mutex<Vec<(String, Value)>>>);

impl Calls {
    pub fn push(&self, who: &str, v: Value) {
        self.0.lock().unwrap().push((who.to_owned(), v));
    }
    pub fn by(&self, who: &str) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(w, _)| w == who)
            .map(|(_, v)| v.clone())
            .collect()
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// An endpoint recording `record(value)` calls as `name` and echoing `echo(value)`.
pub fn recording_endpoint(name: &str, calls: &Calls) -> Endpoint {
    let (n1, c1) = (name.to_owned(), calls.clone());
    let n2 = name.to_owned();
    Endpoint::builder()
        .method("record", move |req: Request<Value>| {
            let (n, c) = (n1.clone(), c1.clone());
            async move {
                c.push(&n, req.args()["value"].clone());
                Ok::<_, RpcError>(n)
            }
        })
        .method("whoami", move |_req: Request<Value>| {
            let n = n2.clone();
            async move { Ok::<_, RpcError>(n) }
        })
        .method("echo", |req: Request<Value>| async move {
            Ok::<_, RpcError>(req.args()["value"].clone())
        })
        .method("sleep", |req: Request<Value>| async move {
            let secs = req.args()["seconds"].as_f64().unwrap_or(0.0);
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            Ok::<_, RpcError>(secs)
        })
        .build()
        .unwrap()
}

/// An endpoint whose `echo` answers its `key` argument and counts its calls.
pub fn counting_endpoint(count: &Arc<AtomicUsize>, key: &'static str) -> Endpoint {
    let c = count.clone();
    Endpoint::builder()
        .method("echo", move |req: Request<Value>| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok::<_, RpcError>(req.args()[key].clone())
            }
        })
        .build()
        .unwrap()
}

/// Every notifier method and the priority a listener sees for it.
pub const PRIORITIES: [(&str, &str); 8] = [
    ("audit", "audit"),
    ("debug", "debug"),
    ("info", "info"),
    ("warn", "warn"),
    ("warning", "warn"),
    ("error", "error"),
    ("critical", "critical"),
    ("sample", "sample"),
];

/// The notifications a [`forwarding`] endpoint received.
pub type Seen = mpsc::UnboundedReceiver<Notification>;

/// An endpoint forwarding every priority's notifications to a channel.
pub fn forwarding(priorities: &[Priority]) -> (NotificationEndpoint, Seen) {
    forwarding_through(priorities, None)
}

/// As [`forwarding`], for the notifications `filter` passes.
pub fn forwarding_through(
    priorities: &[Priority],
    filter: Option<NotificationFilter>,
) -> (NotificationEndpoint, Seen) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut ep = NotificationEndpoint::builder();
    if let Some(f) = filter {
        ep = ep.filter(f);
    }
    for p in priorities {
        let tx = tx.clone();
        ep = ep.on(*p, move |n: Notification| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(n);
            }
        });
    }
    (ep.build().unwrap(), rx)
}

/// A `messagingv2` notifier to `topic` as `publisher`.
pub fn notifier(t: &Transport, topic: &str, publisher: &str) -> Notifier {
    Notifier::builder(t)
        .driver(NotifyDriver::MessagingV2)
        .publisher_id(publisher)
        .topics([topic])
        .build()
        .unwrap()
}

/// Stops a notification listener and waits for its handlers.
pub async fn stop_listener(l: &NotificationListener) {
    l.stop().await;
    l.wait().await;
}

/// Starts a server on `topic`/`server` with `endpoint`.
pub async fn start_server(
    transport: &Transport,
    topic: &str,
    server: &str,
    endpoint: Endpoint,
) -> RpcServer {
    let s = RpcServer::builder(transport, Target::new(topic).with_server(server))
        .endpoint(endpoint)
        .build()
        .unwrap();
    s.start().await.unwrap();
    s
}

pub async fn stop(server: &RpcServer) {
    server.stop().await;
    server.wait().await;
}

pub mod cluster;
pub mod rabbit;

pub use testkit::metrics::{alive_tasks, open_fds, rss_anon_kib, rss_kib, settles};
pub use testkit::{node, proxy, python, unique};

/// Log output collected in memory (a `tracing_subscriber` writer).
#[derive(Clone, Default)]
pub struct LogBuffer(pub Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Sends every event of this thread, at TRACE, here until the guard is dropped.
    pub fn capture_trace(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
}

/// Calls in flight: each gives its outcome and how long it took.
pub type InFlight =
    Vec<tokio::task::JoinHandle<(oslo_messaging::Result<Value>, std::time::Duration)>>;

/// Starts `n` calls of `method(args)` at once.
pub fn calls_in_flight(
    client: &oslo_messaging::RpcClient,
    n: usize,
    method: &'static str,
    args: &Value,
) -> InFlight {
    (0..n)
        .map(|_| {
            let (client, args) = (client.clone(), args.clone());
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let r = client
                    .call::<Value>(&oslo_messaging::Context::new(), method, &args)
                    .await;
                (r, started.elapsed())
            })
        })
        .collect()
}

/// How calls in flight ended: how many were answered, how many timed out, the longest. Fails
/// on a call still running after `within`, or on any other error.
pub async fn how_they_ended(pending: InFlight, within: Duration) -> (usize, usize, Duration) {
    let (mut ok, mut timed_out, mut longest) = (0, 0, Duration::ZERO);
    for p in pending {
        let (r, took) = tokio::time::timeout(within, p)
            .await
            .expect("no call hangs")
            .unwrap();
        match r {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.kind(), oslo_messaging::ErrorKind::Timeout, "{e}");
                timed_out += 1;
            }
        }
        longest = longest.max(took);
    }
    (ok, timed_out, longest)
}
