//! Notifications as a stream, for services that run a loop of their own.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex};
use std::task::{Context as TaskContext, Poll};

use futures_core::Stream;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::UnboundedReceiver;

use super::dispatch::{Received, convert, settle};
use super::notification::Notification;
use crate::driver::{self, ListenerControl, NotificationListenerStream};
use crate::error::Result;
use crate::serializer::Serializer;
use crate::serve::DedupCache;

/// Notifications as a [`Stream`] of [`Delivery`] values, each to be acknowledged or requeued
/// by the receiver (as an async-nats `Subscriber` hands out messages). Made by
/// [`NotificationListenerBuilder::subscribe`](super::NotificationListenerBuilder::subscribe).
///
/// Messages with a priority that is not oslo's, and copies of messages acknowledged
/// recently (oslo's duplicate check), are acknowledged and skipped. Dropping the stream stops
/// consuming; what it had received and not handed out goes back to the broker.
///
/// # Examples
///
/// ```
/// use oslo_messaging::notify::{NotificationListener, Notifier, NotifyDriver, Priority};
/// use oslo_messaging::{Context, Target, Transport};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Created {
///     instance_id: String,
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> oslo_messaging::Result<()> {
/// let transport = Transport::memory();
/// let mut stream = NotificationListener::builder(&transport, vec![Target::new("notifications")])
///     .subscribe([Priority::Info])
///     .await?;
///
/// let notifier = Notifier::builder(&transport).driver(NotifyDriver::MessagingV2).build()?;
/// let payload = serde_json::json!({"instance_id": "vm-1"});
/// notifier.info(&Context::new(), "compute.instance.create.end", &payload).await?;
///
/// // `futures::StreamExt::next` works too.
/// let delivery = stream.recv().await.expect("a notification");
/// let created: Created = delivery.payload_as()?;
/// assert_eq!(created.instance_id, "vm-1");
/// delivery.ack().await?;
/// stream.close().await;
/// # Ok(())
/// # }
/// ```
pub struct NotificationStream {
    incoming: UnboundedReceiver<driver::IncomingNotification>,
    control: Option<Box<dyn ListenerControl>>,
    serializer: Option<Arc<dyn Serializer>>,
    seen: Arc<StdMutex<DedupCache>>,
}

impl fmt::Debug for NotificationStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotificationStream")
            .field("consuming", &self.control.is_some())
            .finish_non_exhaustive()
    }
}

impl NotificationStream {
    pub(crate) fn new(
        stream: NotificationListenerStream,
        serializer: Option<Arc<dyn Serializer>>,
    ) -> Self {
        Self {
            incoming: stream.incoming,
            control: Some(stream.control),
            serializer,
            seen: Arc::new(StdMutex::new(DedupCache::new())),
        }
    }

    /// The next notification; `None` once the stream is closed.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a notification is taken only when it is returned, so a `select!` losing
    /// this branch loses nothing.
    pub async fn recv(&mut self) -> Option<Delivery> {
        std::future::poll_fn(|cx| self.poll_delivery(cx)).await
    }

    /// Stops consuming and releases the consumer; notifications received and not yet handed
    /// out go back to the broker. Dropping the stream does the same in the background.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropped midway, the rest of the shutdown is what dropping the stream does.
    pub async fn close(mut self) {
        if let Some(control) = self.control.take() {
            control.stop().await;
            control.cleanup().await;
        }
    }

    fn poll_delivery(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Delivery>> {
        loop {
            let Some(incoming) = std::task::ready!(self.incoming.poll_recv(cx)) else {
                return Poll::Ready(None);
            };
            let mut received = convert(incoming, self.serializer.as_deref());
            let duplicate = received.is_duplicate(&self.seen);
            match received.notification.take() {
                Some(notification) if !duplicate => {
                    return Poll::Ready(Some(Delivery {
                        notification,
                        received,
                        seen: self.seen.clone(),
                    }));
                }
                _ => {
                    if duplicate {
                        tracing::warn!(
                            unique_id = received.unique_id.as_deref(),
                            "dropping a duplicate notification"
                        );
                    }
                    let seen = self.seen.clone();
                    // Polled outside a Tokio runtime (an executor of its own), the message is
                    // dropped unsettled: the broker gives it back when the channel closes.
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        rt.spawn(async move { settle(received, false, &seen).await });
                    }
                }
            }
        }
    }
}

impl Stream for NotificationStream {
    type Item = Delivery;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Delivery>> {
        self.get_mut().poll_delivery(cx)
    }
}

impl Drop for NotificationStream {
    fn drop(&mut self) {
        if let Some(control) = self.control.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                control.stop().await;
                control.cleanup().await;
            });
        }
    }
}

/// One notification from a [`NotificationStream`], with its acknowledgement.
///
/// Call [`ack`](Self::ack) once it is handled, or [`requeue`](Self::requeue) to have it
/// delivered again; dropping it without either requeues it.
///
/// # Examples
///
/// ```
/// use oslo_messaging::notify::{NotificationListener, Notifier, NotifyDriver, Priority};
/// use oslo_messaging::{Context, Target, Transport};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> oslo_messaging::Result<()> {
/// let transport = Transport::memory();
/// let mut stream = NotificationListener::builder(&transport, vec![Target::new("notifications")])
///     .subscribe([Priority::Error])
///     .await?;
/// let notifier = Notifier::builder(&transport).driver(NotifyDriver::MessagingV2).build()?;
/// notifier.error(&Context::new(), "compute.instance.delete.error", &1).await?;
/// let delivery = stream.recv().await.unwrap();
/// assert_eq!(delivery.notification().payload, 1);
/// delivery.requeue().await?; // or ack(); dropping it requeues too
/// # Ok(())
/// # }
/// ```
pub struct Delivery {
    notification: Notification,
    received: Received,
    seen: Arc<StdMutex<DedupCache>>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("notification", &self.notification)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// The notification.
    pub fn notification(&self) -> &Notification {
        &self.notification
    }

    /// The payload as `T`, read without copying it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Serialization`](crate::ErrorKind::Serialization) saying which field did
    /// not fit and why.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T> {
        self.notification.payload_as()
    }

    /// Acknowledges the notification: the broker forgets it.
    ///
    /// # Errors
    ///
    /// A driver error when the acknowledgement cannot be sent (the connection was lost: the
    /// broker then delivers the notification again).
    ///
    /// # Cancel safety
    ///
    /// Dropped before the acknowledgement reached the connection, the notification is
    /// requeued instead (as dropping a delivery does); dropped after, it is acknowledged.
    pub async fn ack(self) -> Result<()> {
        let Self { received, seen, .. } = self;
        let id = received.unique_id.clone();
        received.acker.ack().await?;
        if let Some(id) = id {
            seen.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(&id);
        }
        Ok(())
    }

    /// Puts the notification back, for another delivery.
    ///
    /// # Errors
    ///
    /// As [`ack`](Self::ack).
    ///
    /// # Cancel safety
    ///
    /// Dropped midway, the notification is requeued all the same (that is what dropping a
    /// delivery does).
    pub async fn requeue(self) -> Result<()> {
        self.received.acker.requeue().await
    }
}
