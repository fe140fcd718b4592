//! The driver contract, one level up, for the Python binding (`oslo-messaging-py`): the
//! operations of oslo's `BaseDriver` as Python's layers above the driver call them.
//!
//! Not a stable API: it exists so that Python's own `RPCClient`, `RPCServer` and notification
//! classes can run on this crate's drivers, and changes with them. Rust code uses
//! [`RpcClient`](crate::RpcClient), [`RpcServer`](crate::RpcServer) and the
//! [`notify`](crate::notify) module.
//!
//! What Python's driver does and the user API of this crate does above the driver is done
//! here: a call waits for its reply with the timeout and the call monitor, RPC requests pass
//! the 16-entry duplicate filter, and a request that does not decode is answered with a
//! failure when it names a reply queue.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::driver::{
    CallParams, IncomingRpc, ListenerControl, NotificationAcker, ReplySink, SendParams,
};
use crate::error::{Error, RemoteError, Result};
use crate::rpc::RpcError;
use crate::serve::DedupCache;
use crate::target::Target;
use crate::transport::{Retry, Transport};
use crate::wire;

/// Calls: publishes `request` and waits for its final reply, applying `timeout` and, when
/// set, the call monitor (a heartbeat must come within `call_monitor_timeout`).
///
/// # Errors
///
/// As [`RpcClient::call`](crate::RpcClient::call): a remote failure is
/// [`ErrorKind::Remote`](crate::ErrorKind::Remote) with the failure in
/// [`Error::remote_error`].
///
/// # Cancel safety
///
/// Dropping the future forgets the call; a request already published still runs.
pub async fn call(
    transport: &Transport,
    target: Target,
    request: wire::Request,
    timeout: Duration,
    call_monitor_timeout: Option<Duration>,
    retry: Retry,
    at_least_once: bool,
) -> Result<Value> {
    target.require_topic()?;
    let receiver = transport
        .driver()
        .send(SendParams {
            target,
            request,
            call: Some(CallParams {
                timeout,
                call_monitor_timeout,
            }),
            retry,
            at_least_once,
        })
        .await?
        .ok_or_else(|| Error::transport("the driver returned no reply receiver for a call"))?;
    crate::rpc::wait_for_reply(
        receiver,
        timeout,
        call_monitor_timeout,
        crate::telemetry::Span::default(),
    )
    .await
}

/// Casts: returns once the broker has `request` (fanout when `target` says so).
///
/// # Errors
///
/// As [`RpcClient::cast`](crate::RpcClient::cast).
///
/// # Cancel safety
///
/// Dropping the future stops the retries; a request already handed to the connection is
/// sent.
pub async fn cast(
    transport: &Transport,
    target: Target,
    request: wire::Request,
    retry: Retry,
    at_least_once: bool,
) -> Result<()> {
    target.require_topic()?;
    transport
        .driver()
        .send(SendParams {
            target,
            request,
            call: None,
            retry,
            at_least_once,
        })
        .await?;
    Ok(())
}

/// Sends a notification to `target`, whose topic is already `<topic>.<priority>`; in the v2
/// envelope when `envelope` is set.
///
/// # Errors
///
/// [`ErrorKind::DeliveryFailure`](crate::ErrorKind::DeliveryFailure) when `retry` runs out or
/// the broker refuses it; [`ErrorKind::ShutDown`](crate::ErrorKind::ShutDown) after cleanup.
///
/// # Cancel safety
///
/// As [`cast`].
pub async fn notify(
    transport: &Transport,
    target: Target,
    message: wire::Notification,
    envelope: bool,
    retry: Retry,
) -> Result<()> {
    target.require_topic()?;
    transport
        .driver()
        .send_notification(target, message, envelope, retry)
        .await
}

/// Starts consuming RPC requests for `target` (topic and server set); returns once the
/// queues exist.
///
/// # Errors
///
/// [`ErrorKind::InvalidTarget`](crate::ErrorKind::InvalidTarget) without topic or server; the
/// driver's error when the queues cannot be declared.
///
/// # Cancel safety
///
/// Dropping the future part-way may leave queues declared; nothing consumes from them.
pub async fn listen(transport: &Transport, target: Target) -> Result<RpcListener> {
    target.require_topic()?;
    if target.server().is_none() {
        return Err(Error::invalid_target(format!(
            "A server's target must have topic and server names specified: {target}"
        )));
    }
    let listener = transport.driver().listen(target).await?;
    Ok(RpcListener {
        incoming: listener.incoming,
        replies: listener.replies,
        control: Arc::from(listener.control),
        seen: DedupCache::new(),
    })
}

/// Starts consuming notifications for `targets` (topics already `<topic>.<priority>`), from
/// the shared queue `pool` when given.
///
/// # Errors
///
/// The driver's error when the queues cannot be declared.
///
/// # Cancel safety
///
/// As [`listen`].
pub async fn listen_for_notifications(
    transport: &Transport,
    targets: Vec<Target>,
    pool: Option<String>,
) -> Result<NotificationListener> {
    let stream = transport
        .driver()
        .listen_for_notifications(targets, pool)
        .await?;
    Ok(NotificationListener {
        incoming: stream.incoming,
        control: Arc::from(stream.control),
        prefetch: stream.prefetch,
        seen: SeenIds::default(),
    })
}

/// Stops and cleans up a listener; cheap to clone, so it can be used while another task reads
/// the listener.
#[derive(Debug, Clone)]
pub struct Control(Arc<dyn ListenerControl>);

impl Control {
    /// Stops taking new messages; what was already received is still handed out, then the
    /// listener ends. Idempotent.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: stopping is idempotent and can be awaited again.
    pub async fn stop(&self) {
        self.0.stop().await;
    }

    /// Releases what the listener opened. Call after the last message was handled.
    ///
    /// # Cancel safety
    ///
    /// Dropped part-way, what was not yet released is released when the transport is cleaned
    /// up.
    pub async fn cleanup(&self) {
        self.0.cleanup().await;
    }
}

/// Acknowledged RPC requests of one server target.
#[derive(Debug)]
pub struct RpcListener {
    incoming: mpsc::UnboundedReceiver<IncomingRpc>,
    replies: Arc<dyn ReplySink>,
    control: Arc<dyn ListenerControl>,
    seen: DedupCache,
}

impl RpcListener {
    /// The listener's stop and cleanup.
    pub fn control(&self) -> Control {
        Control(self.control.clone())
    }

    /// The next request; `None` once the listener stopped and everything received was handed
    /// out. Duplicates (the last 16 `_unique_id`s) are dropped; a request that does not decode
    /// is answered with a failure when it names a reply queue, and skipped.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a request is taken from the queue only when it is returned.
    pub async fn next(&mut self) -> Option<IncomingRequest> {
        loop {
            match self.incoming.recv().await? {
                IncomingRpc::Request(request) => {
                    if let Some(id) = request.unique_id.as_deref()
                        && !self.seen.insert(id)
                    {
                        tracing::warn!(unique_id = id, "dropping a duplicate request");
                        continue;
                    }
                    return Some(IncomingRequest {
                        request,
                        replies: self.replies.clone(),
                    });
                }
                IncomingRpc::Malformed { error, reply_to } => {
                    tracing::error!(error = %error, "rejected a malformed RPC request");
                    if let Some((msg_id, reply_q)) = reply_to {
                        let failure =
                            RpcError::type_error(format!("malformed RPC request: {error}"))
                                .into_remote();
                        let replies = self.replies.clone();
                        tokio::spawn(async move {
                            if let Err(e) = replies.reply(&reply_q, &msg_id, Err(failure)).await {
                                tracing::warn!(msg_id, error = %e, "could not answer a malformed request");
                            }
                        });
                    }
                }
            }
        }
    }
}

/// One RPC request and the way to answer it.
#[derive(Debug)]
pub struct IncomingRequest {
    /// The decoded request (`_msg_id`, `_reply_q`, `_timeout`, `_unique_id` and the context).
    pub request: wire::IncomingRequest,
    replies: Arc<dyn ReplySink>,
}

impl IncomingRequest {
    /// A handle that answers this request; `None` for a cast.
    pub fn replier(&self) -> Option<Replier> {
        Some(Replier {
            msg_id: self.request.msg_id.clone()?,
            reply_q: self.request.reply_q.clone()?,
            replies: self.replies.clone(),
        })
    }
}

/// Answers one call.
#[derive(Debug, Clone)]
pub struct Replier {
    msg_id: String,
    reply_q: String,
    replies: Arc<dyn ReplySink>,
}

impl Replier {
    /// Publishes the final reply: the result, or the failure.
    ///
    /// # Errors
    ///
    /// The driver's error when the reply could not be published.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may or may not leave the reply sent.
    pub async fn reply(&self, outcome: std::result::Result<Value, RemoteError>) -> Result<()> {
        self.replies
            .reply(&self.reply_q, &self.msg_id, outcome)
            .await
    }

    /// Publishes a call-monitor heartbeat.
    ///
    /// # Errors
    ///
    /// The driver's error when it could not be published.
    ///
    /// # Cancel safety
    ///
    /// As [`reply`](Self::reply).
    pub async fn heartbeat(&self) -> Result<()> {
        self.replies.heartbeat(&self.reply_q, &self.msg_id).await
    }
}

/// Notifications of one or more targets.
#[derive(Debug)]
pub struct NotificationListener {
    incoming: mpsc::UnboundedReceiver<crate::driver::IncomingNotification>,
    control: Arc<dyn ListenerControl>,
    prefetch: Option<usize>,
    seen: SeenIds,
}

/// The `_unique_id`s of the last 16 notifications a listener acknowledged (oslo's duplicate
/// filter); cheap to clone, shared with whoever acknowledges them.
#[derive(Debug, Clone, Default)]
pub struct SeenIds(Arc<std::sync::Mutex<DedupCache>>);

impl SeenIds {
    fn lock(&self) -> std::sync::MutexGuard<'_, DedupCache> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records an acknowledged notification's id (oslo adds it when the handler acknowledges
    /// the message, whether or not the broker then gets the ack).
    pub fn insert(&self, unique_id: &str) {
        self.lock().insert(unique_id);
    }

    fn contains(&self, unique_id: &str) -> bool {
        self.lock().contains(unique_id)
    }
}

impl NotificationListener {
    /// The listener's stop and cleanup.
    pub fn control(&self) -> Control {
        Control(self.control.clone())
    }

    /// The most notifications the broker hands out unacknowledged (`rabbit_qos_prefetch_count`),
    /// if bounded: a batch larger than this would never fill.
    pub fn prefetch(&self) -> Option<usize> {
        self.prefetch
    }

    /// The next notification; `None` once the listener stopped and everything received was
    /// handed out. A duplicate of one of the last 16 is acknowledged and skipped.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a notification is taken from the queue only when it is returned.
    pub async fn next(&mut self) -> Option<IncomingNotification> {
        loop {
            let n = self.incoming.recv().await?;
            if let Some(n) = self.fresh(n) {
                return Some(n);
            }
        }
    }

    fn fresh(&self, n: crate::driver::IncomingNotification) -> Option<IncomingNotification> {
        if let Some(id) = n.message.unique_id.as_deref()
            && self.seen.contains(id)
        {
            tracing::warn!(unique_id = id, "acknowledging a duplicate notification");
            let ack = n.acker.ack();
            tokio::spawn(async move {
                if let Err(e) = ack.await {
                    tracing::warn!(error = %e, "could not acknowledge a duplicate notification");
                }
            });
            return None;
        }
        Some(IncomingNotification {
            message: n.message,
            acker: Some(n.acker),
        })
    }

    /// The duplicate filter, for whoever acknowledges this listener's notifications.
    pub fn seen_ids(&self) -> SeenIds {
        self.seen.clone()
    }
}

/// One notification; dropped without [`Acker::ack`] or [`Acker::requeue`], it is
/// requeued.
#[derive(Debug)]
pub struct IncomingNotification {
    /// The decoded message.
    pub message: wire::IncomingNotification,
    acker: Option<Box<dyn NotificationAcker>>,
}

impl IncomingNotification {
    /// Takes the acknowledgement out, to settle it later (from another task).
    pub fn take_acker(&mut self) -> Option<Acker> {
        self.acker.take().map(Acker)
    }
}

/// Acknowledges or requeues one notification.
#[derive(Debug)]
pub struct Acker(Box<dyn NotificationAcker>);

impl Acker {
    /// The handler is done with the message.
    ///
    /// # Errors
    ///
    /// The driver's error when the channel is gone (the broker then redelivers it).
    ///
    /// # Cancel safety
    ///
    /// Dropped before the acknowledgement reached the connection, the message is requeued.
    pub async fn ack(self) -> Result<()> {
        self.0.ack().await
    }

    /// Puts the message back for another delivery.
    ///
    /// # Errors
    ///
    /// As [`ack`](Self::ack).
    ///
    /// # Cancel safety
    ///
    /// Dropped part-way, the message is requeued all the same.
    pub async fn requeue(self) -> Result<()> {
        self.0.requeue().await
    }
}
