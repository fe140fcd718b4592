//! The public test handle on a memory broker, and the messages it records.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::Value;

use super::broker::{Broker, lock};
use crate::error::Result;
use crate::wire;

/// What kind of message a [`SentMessage`] is.
///
/// # Examples
///
/// ```
/// use oslo_messaging::transport::SentKind;
/// use oslo_messaging::{Context, RpcClient, Target, Transport};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> oslo_messaging::Result<()> {
/// let transport = Transport::memory();
/// let handle = transport.memory_handle().unwrap();
/// handle.record_sent(true);
/// RpcClient::new(&transport, Target::new("t")).cast(&Context::new(), "m", &()).await?;
/// assert_eq!(handle.sent()[0].kind, SentKind::Request);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SentKind {
    /// An RPC request (call or cast).
    Request,
    /// A reply or call-monitor heartbeat.
    Reply,
    /// A notification.
    Notification,
}

/// A message the memory broker accepted, as it would have gone on the wire.
///
/// # Examples
///
/// ```
/// use oslo_messaging::{Context, RpcClient, Target, Transport};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> oslo_messaging::Result<()> {
/// let transport = Transport::memory();
/// let handle = transport.memory_handle().unwrap();
/// handle.record_sent(true);
/// RpcClient::new(&transport, Target::new("compute")).cast(&Context::new(), "reboot", &()).await?;
/// let sent = &handle.sent()[0];
/// assert_eq!((sent.exchange.as_str(), sent.routing_key.as_str()), ("openstack", "compute"));
/// assert!(sent.body.starts_with(b"{\"oslo.version\": \"2.0\""));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SentMessage {
    /// What it is.
    pub kind: SentKind,
    /// The exchange (`""` for replies, as the default exchange).
    pub exchange: String,
    /// The routing key.
    pub routing_key: String,
    /// Whether it was published mandatory.
    pub mandatory: bool,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl SentMessage {
    /// The body as JSON, with the 2.0 envelope unwrapped.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Protocol`](crate::ErrorKind::Protocol) when the body does not decode.
    pub fn decoded(&self) -> Result<serde_json::Map<String, Value>> {
        Ok(wire::unwrap_envelope(&self.body)?)
    }
}

/// Inspects and steers the memory broker behind a transport, for tests.
///
/// # Examples
///
/// ```
/// use oslo_messaging::{Context, RpcClient, Target, Transport};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> oslo_messaging::Result<()> {
/// let transport = Transport::memory();
/// let handle = transport.memory_handle().unwrap();
/// handle.record_sent(true);
///
/// let client = RpcClient::new(&transport, Target::new("compute"));
/// client.cast(&Context::new(), "reboot", &serde_json::json!({"id": 7})).await?;
///
/// let sent = handle.sent();
/// assert_eq!(sent[0].routing_key, "compute");
/// assert_eq!(sent[0].decoded()?["method"], "reboot");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryHandle {
    broker: Arc<Broker>,
}

impl fmt::Debug for MemoryHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryHandle")
            .field("broker", &self.broker)
            .finish()
    }
}

impl MemoryHandle {
    pub(super) fn new(broker: Arc<Broker>) -> Self {
        Self { broker }
    }

    /// Starts (or stops) recording every accepted message for [`sent`](Self::sent).
    pub fn record_sent(&self, on: bool) {
        self.broker.recording.store(on, Ordering::Relaxed);
    }

    /// The messages accepted since recording started, oldest first.
    pub fn sent(&self) -> Vec<SentMessage> {
        lock(&self.broker.sent).clone()
    }

    /// Forgets the recorded messages.
    pub fn clear_sent(&self) {
        lock(&self.broker.sent).clear();
    }

    /// Makes the next `n` publish attempts fail as if the connection dropped, to exercise
    /// `retry`.
    pub fn fail_next_publishes(&self, n: u32) {
        self.broker.failures.store(n, Ordering::SeqCst);
    }

    /// Publishes raw bytes to `exchange` with `routing_key`, as another client on the broker
    /// could: to feed servers and listeners hand-made or malformed messages. Returns how many
    /// queues received it.
    pub fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        body: impl Into<Vec<u8>>,
    ) -> usize {
        let body: Arc<[u8]> = body.into().into();
        self.broker.publish(exchange, routing_key, body, None)
    }

    /// The names of the declared queues, sorted.
    pub fn queues(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.broker.state).queues.keys().cloned().collect();
        names.sort();
        names
    }

    /// Messages waiting in `queue`, or `None` when there is no such queue.
    pub fn queue_depth(&self, queue: &str) -> Option<usize> {
        lock(&self.broker.state)
            .queues
            .get(queue)
            .map(|q| q.messages.len())
    }

    /// Consumers of `queue`, or `None` when there is no such queue.
    pub fn consumer_count(&self, queue: &str) -> Option<usize> {
        lock(&self.broker.state)
            .queues
            .get(queue)
            .map(|q| q.consumers.len())
    }
}
