//! The driver contract: what a transport backend must do.
//!
//! This is private, like oslo's `_drivers/base.py` ("the driver API is internal"), and written as
//! a specification. The user API (`rpc`, `notify`) talks only to [`Driver`]; everything specific
//! to a broker lives below it. Wire encoding is shared: drivers encode and decode with
//! [`crate::wire`], so every driver carries the same bytes.
//!
//! # Contract
//!
//! **Sending.** [`Driver::send`] publishes one RPC request to
//! `target.exchange or control_exchange` with routing key `topic` or `topic.server`, or to the
//! `topic_fanout` exchange when `target.fanout` is set. For a call (`params.call` is `Some`), the
//! driver MUST register the reply waiter *before* publishing, so a fast reply cannot be missed,
//! and MUST return the [`ReplyReceiver`] only after the broker accepted the request. A publish
//! that fails is retried as [`Retry`] allows; when retries run out the error is
//! [`ErrorKind::DeliveryFailure`](crate::ErrorKind::DeliveryFailure). The driver MUST NOT
//! duplicate a message by retrying one the broker already confirmed; one republished after a
//! lost confirm keeps its `_unique_id`, so receivers drop the copy. With `at_least_once`, a
//! request to a topic or server that no queue receives fails at once with
//! [`ErrorKind::Undeliverable`](crate::ErrorKind::Undeliverable); without it (and always for
//! fanout casts, as Python), a cast is dropped, and a call may be sent again until a queue
//! takes it (the RabbitMQ driver does, until the call's timeout) or else times out.
//!
//! **Replies.** Every reply message for a pending call is decoded and handed, in arrival order,
//! to the call's [`ReplyReceiver`]; heartbeats (`ending: false`) included. The timeout and
//! call-monitor logic are not the driver's: the RPC client applies them. Replies for unknown
//! message ids are logged and dropped.
//!
//! **Listening.** [`Driver::listen`] consumes `topic`, `topic.server` and the topic's fanout
//! queue. RPC requests are acknowledged on receipt, before dispatch (oslo's at-most-once), and
//! delivered decoded; a message that does not decode is rejected without requeue and handed
//! up as [`IncomingRpc::Malformed`] (so the server can answer the caller when it can), and the
//! next one is delivered normally. [`ListenerControl::stop`] stops taking new messages;
//! the [`RpcListener::incoming`] channel then ends once what was already received is read.
//!
//! **Notifications.** [`Driver::send_notification`] publishes to `<topic>` (already
//! `<topic>.<priority>`) on `target.exchange or control_exchange`, declaring that queue first so
//! early notifications are not lost. [`Driver::listen_for_notifications`] takes targets in the
//! same form and consumes their `<topic>.<priority>` queues (or one `pool` queue bound to all
//! of them); each message is
//! acknowledged or requeued through its [`NotificationAcker`] after the handler ran.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::RemoteError;
use crate::error::Result;
use crate::target::Target;
use crate::wire;

pub(crate) mod backoff;
#[cfg(feature = "kafka")]
pub(crate) mod kafka;
pub(crate) mod memory;
#[cfg(feature = "rabbit")]
pub(crate) mod rabbit;

/// A boxed, `Send` future: drivers are used as trait objects.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// `now + after`, saturating far in the future instead of overflowing (a `Duration::MAX`
/// timeout means "very long", not a panic).
pub(crate) fn deadline_after(after: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// How many times a publish may reconnect before failing (oslo's `retry`).
///
/// # Examples
///
/// ```
/// use oslo_messaging::Retry;
///
/// assert_eq!(Retry::from_python(-1), Retry::Forever);
/// assert_eq!(Retry::from_python(0), Retry::Times(0));
/// assert_eq!(Retry::from_python(3), Retry::Times(3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Retry {
    /// Keep retrying until the broker is back (Python's `None` or `-1`, the default).
    #[default]
    Forever,
    /// Retry at most this many times (0: fail on the first error).
    Times(u32),
}

impl Retry {
    /// Reads Python's integer convention: negative means forever.
    pub fn from_python(retry: i64) -> Self {
        u32::try_from(retry).map_or(Self::Forever, Self::Times)
    }

    /// Whether attempt number `attempt` (0 for the first retry) is allowed.
    pub(crate) fn allows(self, attempt: u32) -> bool {
        match self {
            Self::Forever => true,
            Self::Times(n) => attempt < n,
        }
    }
}

/// The reply half of a call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallParams {
    /// How long the caller waits; also sent as the AMQP `expiration` of the request.
    pub(crate) timeout: Duration,
    /// Sent as `_timeout`; the server heartbeats every half of it.
    pub(crate) call_monitor_timeout: Option<Duration>,
}

/// One RPC request to send.
#[derive(Debug)]
pub(crate) struct SendParams {
    /// The destination; its topic is set (the client checked).
    pub(crate) target: Target,
    /// What to call.
    pub(crate) request: wire::Request,
    /// `Some` for a call.
    pub(crate) call: Option<CallParams>,
    /// Reconnect budget for the publish.
    pub(crate) retry: Retry,
    /// Publish mandatory: fail at once when no queue takes the request.
    pub(crate) at_least_once: bool,
}

/// The backend contract; see the [module documentation](self) for the specification.
pub(crate) trait Driver: Send + Sync + fmt::Debug + 'static {
    /// Publishes an RPC request; for calls returns the receiver of its replies.
    fn send(&self, params: SendParams) -> BoxFuture<'_, Result<Option<ReplyReceiver>>>;

    /// Publishes a notification (`envelope`: the v2 format) to `target`, whose topic is
    /// `<topic>.<priority>`.
    fn send_notification(
        &self,
        target: Target,
        message: wire::Notification,
        envelope: bool,
        retry: Retry,
    ) -> BoxFuture<'_, Result<()>>;

    /// Starts consuming RPC requests for a server target (topic and server set).
    fn listen(&self, target: Target) -> BoxFuture<'_, Result<RpcListener>>;

    /// Starts consuming notifications for targets whose topic is `<topic>.<priority>`, as
    /// [`send_notification`](Self::send_notification) takes them; from `pool` when given.
    fn listen_for_notifications(
        &self,
        targets: Vec<Target>,
        pool: Option<String>,
    ) -> BoxFuture<'_, Result<NotificationListenerStream>>;

    /// Releases connections and background tasks. Later use fails with
    /// [`ErrorKind::ShutDown`](crate::ErrorKind::ShutDown).
    fn cleanup(&self) -> BoxFuture<'_, ()>;

    /// The broker's reason while it blocks publishing (`connection.blocked`); `None` when it
    /// does not. Answers at once: never waits for a connection.
    fn blocked(&self) -> Option<String> {
        None
    }
}

// ===== replies =====

/// Receives the replies of one call, in arrival order. Dropping it forgets the call: later
/// replies for its message id are dropped.
#[derive(Debug)]
pub(crate) struct ReplyReceiver {
    msg_id: String,
    rx: mpsc::UnboundedReceiver<ReplyEvent>,
    _registration: WaiterGuard,
}

/// What reaches a waiting call: a reply, or the news that none can come any more.
// Replies are the common case and move once through a channel: boxing them would only add an
// allocation per reply.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum ReplyEvent {
    Reply(wire::Reply),
    /// The channel replies come back on is gone (direct reply-to): the reason.
    #[cfg_attr(not(feature = "rabbit"), allow(dead_code))]
    Lost(Arc<str>),
}

impl ReplyReceiver {
    /// The call's `_msg_id`.
    pub(crate) fn msg_id(&self) -> &str {
        &self.msg_id
    }

    /// The next reply.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ShutDown`](crate::ErrorKind::ShutDown) when the transport was cleaned up,
    /// [`ErrorKind::ReplyLost`](crate::ErrorKind::ReplyLost) when the reply can no longer
    /// arrive.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a reply not yet received stays queued for the next call.
    pub(crate) async fn recv(&mut self) -> crate::error::Result<wire::Reply> {
        match self.rx.recv().await {
            Some(ReplyEvent::Reply(r)) => Ok(r),
            Some(ReplyEvent::Lost(why)) => Err(crate::error::Error::new(
                crate::error::ErrorKind::ReplyLost,
                format!("no reply to message ID {} can arrive: {why}", self.msg_id),
            )),
            None => Err(crate::error::Error::shut_down(
                "the transport was cleaned up during a call",
            )),
        }
    }
}

/// Removes a waiter from its map when the call ends or is cancelled.
struct WaiterGuard {
    waiters: Weak<ReplyWaiters>,
    msg_id: String,
}

impl fmt::Debug for WaiterGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaiterGuard")
            .field("msg_id", &self.msg_id)
            .finish()
    }
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        if let Some(w) = self.waiters.upgrade() {
            w.remove(&self.msg_id);
        }
    }
}

/// Pending calls of one transport, by `_msg_id`: the single reply queue's demultiplexer.
#[derive(Debug, Default)]
pub(crate) struct ReplyWaiters {
    // Unbounded: a final reply must never be dropped because heartbeats filled a buffer while
    // the caller's task was busy; a call gets a handful of messages.
    map: Mutex<HashMap<String, mpsc::UnboundedSender<ReplyEvent>>>,
}

impl ReplyWaiters {
    /// Registers a call; its replies go to the returned receiver until it is dropped.
    pub(crate) fn register(self: &Arc<Self>, msg_id: String) -> ReplyReceiver {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(msg_id.clone(), tx);
        ReplyReceiver {
            msg_id: msg_id.clone(),
            rx,
            _registration: WaiterGuard {
                waiters: Arc::downgrade(self),
                msg_id,
            },
        }
    }

    fn remove(&self, msg_id: &str) {
        self.lock().remove(msg_id);
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<ReplyEvent>>> {
        // A poisoned map still holds valid senders: keep going.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands a decoded reply to its call. Returns `false` (after logging) when no call waits
    /// for it.
    pub(crate) fn deliver(&self, reply: wire::Reply) -> bool {
        let Some(msg_id) = reply.msg_id.clone() else {
            tracing::warn!("dropping a reply without _msg_id");
            return false;
        };
        let tx = self.lock().get(&msg_id).cloned();
        match tx {
            Some(tx) => tx.send(ReplyEvent::Reply(reply)).is_ok(),
            None => {
                tracing::info!(
                    msg_id,
                    "no calling task is waiting for this reply; dropping it"
                );
                false
            }
        }
    }

    /// The number of pending calls.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Ends every pending call (their receivers fail with `ShutDown`).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// Fails every pending call with `ReplyLost` and `why`: their replies can no longer
    /// arrive. Calls registered afterwards are not touched. Returns how many failed.
    #[cfg_attr(not(feature = "rabbit"), allow(dead_code))]
    pub(crate) fn fail_all(&self, why: &str) -> usize {
        let why: Arc<str> = Arc::from(why);
        let pending: Vec<_> = self.lock().drain().collect();
        for (_, tx) in &pending {
            let _ = tx.send(ReplyEvent::Lost(why.clone()));
        }
        pending.len()
    }
}

// ===== RPC listening =====

/// Sends replies and call-monitor heartbeats for one listener.
pub(crate) trait ReplySink: Send + Sync + fmt::Debug + 'static {
    /// Publishes the final reply to `reply_q` for `msg_id`.
    fn reply<'a>(
        &'a self,
        reply_q: &'a str,
        msg_id: &'a str,
        outcome: Result<Value, RemoteError>,
    ) -> BoxFuture<'a, Result<()>>;

    /// Publishes a call-monitor heartbeat to `reply_q` for `msg_id`.
    fn heartbeat<'a>(&'a self, reply_q: &'a str, msg_id: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// Stops and cleans up a listener.
pub(crate) trait ListenerControl: Send + Sync + fmt::Debug + 'static {
    /// Stops taking new messages. Idempotent.
    fn stop(&self) -> BoxFuture<'_, ()>;
    /// Releases what the listener declared or opened that should not outlive it (the fanout
    /// queue, its connection). Called after the last handler finished.
    fn cleanup(&self) -> BoxFuture<'_, ()>;
}

/// What a listener hands up: a request, or one that did not decode (already rejected).
// Requests are the common case and move once through a channel: boxing them would only add an
// allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum IncomingRpc {
    /// A decoded, acknowledged request.
    Request(wire::IncomingRequest),
    /// A request that did not decode; `reply_to` (`_msg_id`, `_reply_q`) when they could be
    /// read, so the caller gets a failure instead of waiting for its timeout.
    Malformed {
        error: wire::WireError,
        reply_to: Option<(String, String)>,
    },
}

impl IncomingRpc {
    /// Decodes a request body.
    pub(crate) fn decode(body: &[u8]) -> Self {
        match wire::decode_request(body) {
            Ok(r) => Self::Request(r),
            Err(error) => Self::Malformed {
                reply_to: wire::reply_address(body),
                error,
            },
        }
    }
}

/// A running RPC listener.
#[derive(Debug)]
pub(crate) struct RpcListener {
    /// Requests, already acknowledged (or rejected when malformed).
    pub(crate) incoming: mpsc::UnboundedReceiver<IncomingRpc>,
    /// Where replies go.
    pub(crate) replies: Arc<dyn ReplySink>,
    /// Stop and cleanup.
    pub(crate) control: Box<dyn ListenerControl>,
}

// ===== notification listening =====

/// Acknowledges or requeues one notification. Dropping it without either requeues it (as a
/// closed AMQP channel would).
pub(crate) trait NotificationAcker: Send + fmt::Debug + 'static {
    /// The handler is done with the message.
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>>;
    /// Put the message back for another delivery.
    fn requeue(self: Box<Self>) -> BoxFuture<'static, Result<()>>;
}

/// One received notification.
#[derive(Debug)]
pub(crate) struct IncomingNotification {
    /// The decoded message.
    pub(crate) message: wire::IncomingNotification,
    /// Its acknowledgement.
    pub(crate) acker: Box<dyn NotificationAcker>,
}

/// A running notification listener.
#[derive(Debug)]
pub(crate) struct NotificationListenerStream {
    /// Decoded notifications.
    pub(crate) incoming: mpsc::UnboundedReceiver<IncomingNotification>,
    /// Stop and cleanup.
    pub(crate) control: Box<dyn ListenerControl>,
    /// The most unacknowledged notifications the broker hands this listener at once
    /// (`rabbit_qos_prefetch_count`), if bounded. Notifications are acknowledged after their
    /// handler ran, so a batch waiting for more than this would never fill: the listener caps
    /// its batches here, as Python does.
    pub(crate) prefetch: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(id: &str) -> wire::Reply {
        wire::Reply {
            msg_id: Some(id.to_owned()),
            result: Value::from(1),
            failure: None,
            ending: true,
            unique_id: None,
        }
    }

    #[tokio::test]
    async fn waiters_route_by_msg_id_and_forget_on_drop() {
        let w = Arc::new(ReplyWaiters::default());
        let mut a = w.register("a".into());
        let b = w.register("b".into());
        assert_eq!(w.len(), 2);
        assert!(w.deliver(reply("a")));
        assert_eq!(a.recv().await.unwrap().msg_id.as_deref(), Some("a"));
        drop(b);
        assert_eq!(w.len(), 1);
        assert!(!w.deliver(reply("b")), "a cancelled call gets nothing");
        assert!(!w.deliver(reply("zzz")), "unknown ids are dropped");
        let mut no_id = reply("a");
        no_id.msg_id = None;
        assert!(!w.deliver(no_id));
    }

    #[tokio::test]
    async fn lost_replies_fail_pending_calls_with_a_typed_error() {
        let w = Arc::new(ReplyWaiters::default());
        let mut a = w.register("a".into());
        assert_eq!(w.fail_all("the reply channel closed"), 1);
        let err = a.recv().await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::ReplyLost);
        assert!(err.to_string().contains("message ID a"), "{err}");
        assert!(
            err.to_string().contains("the reply channel closed"),
            "{err}"
        );
        // A later call is not affected, and a cleaned-up transport is a shutdown.
        let mut b = w.register("b".into());
        assert!(w.deliver(reply("b")));
        assert!(b.recv().await.is_ok());
        w.clear();
        assert_eq!(
            b.recv().await.unwrap_err().kind(),
            crate::ErrorKind::ShutDown
        );
    }

    #[tokio::test]
    async fn deadlines_saturate() {
        let d = deadline_after(Duration::MAX);
        assert!(d > tokio::time::Instant::now() + Duration::from_secs(3600 * 24 * 365));
    }

    #[test]
    fn retry_budget() {
        assert!(Retry::Forever.allows(1_000_000));
        assert!(!Retry::Times(0).allows(0));
        assert!(Retry::Times(2).allows(1));
        assert!(!Retry::Times(2).allows(2));
        assert_eq!(Retry::from_python(-5), Retry::Forever);
    }
}
