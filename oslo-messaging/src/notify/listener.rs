//! Receiving notifications: the listener, which hands them to endpoints.

use std::fmt;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tokio::sync::watch;

use super::Priority;
use super::dispatch::{Received, convert, dispatch, settle};
use super::endpoint::NotificationEndpoint;
use super::stream::NotificationStream;
use crate::driver::{self, NotificationListenerStream};
use crate::error::{Error, Result};
use crate::serializer::Serializer;
use crate::serve::{self, DedupCache, Intake, Lifecycle};
use crate::target::Target;
use crate::telemetry::Telemetry;
use crate::transport::Transport;

/// Consumes notifications and dispatches them to endpoints by priority (oslo's notification
/// listener and batch listener).
///
/// It consumes `<topic>.<priority>` for every target and every priority an endpoint handles,
/// or one queue named after the pool, bound to all of them: each pool gets its own copy of
/// each notification, and listeners of the same pool share them. A message is acknowledged
/// after its handlers ran; when a handler asks for `Requeue` (or fails) and requeue is allowed,
/// it is requeued instead. Handlers of one priority run in endpoint order; see
/// [`NotificationHandler`](super::NotificationHandler) for one-at-a-time and batch handlers.
///
/// To run a loop of your own instead of handlers, take the notifications as a stream:
/// [`NotificationListenerBuilder::subscribe`].
///
/// # Examples
///
/// ```
/// use oslo_messaging::notify::{
///     Notification, NotificationEndpoint, NotificationListener, Notifier, NotifyDriver, Priority,
/// };
/// use oslo_messaging::{Context, Target, Transport};
/// use tokio::sync::mpsc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> oslo_messaging::Result<()> {
/// let transport = Transport::memory();
/// let (tx, mut rx) = mpsc::unbounded_channel();
/// let endpoint = NotificationEndpoint::builder()
///     .on(Priority::Info, move |n: Notification| {
///         let tx = tx.clone();
///         async move { let _ = tx.send(n.event_type); }
///     })
///     .build()?;
/// let listener = NotificationListener::builder(&transport, vec![Target::new("notifications")])
///     .endpoint(endpoint)
///     .build()?;
/// listener.start().await?;
///
/// let notifier = Notifier::builder(&transport)
///     .driver(NotifyDriver::MessagingV2)
///     .publisher_id("compute.host1")
///     .build()?;
/// notifier.info(&Context::new(), "compute.instance.create.end", &serde_json::json!({})).await?;
/// assert_eq!(rx.recv().await.unwrap().as_deref(), Some("compute.instance.create.end"));
///
/// listener.stop().await;
/// listener.wait().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct NotificationListener {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    targets: Vec<Target>,
    pool: Option<String>,
    core: Arc<Core>,
    lifecycle: Lifecycle,
}

/// What the poll loop needs (kept apart from `Inner`, so the loop does not keep the listener
/// alive: dropping the last handle stops it).
struct Core {
    endpoints: Arc<[NotificationEndpoint]>,
    batch_size: usize,
    batch_timeout: Option<Duration>,
    allow_requeue: bool,
    pool_size: u32,
    serializer: Option<Arc<dyn Serializer>>,
    telemetry: Telemetry,
}

impl Core {
    /// The priorities some endpoint handles, in oslo's order.
    fn priorities(&self) -> Vec<Priority> {
        Priority::ALL
            .into_iter()
            .filter(|p| self.endpoints.iter().any(|e| e.handler(*p).is_some()))
            .collect()
    }
}

impl fmt::Debug for NotificationListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotificationListener")
            .field("targets", &self.inner.targets)
            .field("pool", &self.inner.pool)
            .field("allow_requeue", &self.inner.core.allow_requeue)
            .field("batch_size", &self.inner.core.batch_size)
            .finish_non_exhaustive()
    }
}

/// The driver consumes `<topic>.<priority>`, as the notifier publishes it.
async fn listen(
    transport: &Transport,
    targets: &[Target],
    priorities: &[Priority],
    pool: Option<String>,
) -> Result<NotificationListenerStream> {
    let mut keyed = Vec::with_capacity(targets.len() * priorities.len());
    for t in targets {
        let topic = t.require_listener_topic()?;
        for p in priorities {
            keyed.push(t.clone().with_topic(format!("{topic}.{}", p.as_str())));
        }
    }
    transport
        .driver()
        .listen_for_notifications(keyed, pool)
        .await
}

impl NotificationListener {
    /// Starts building a listener for `targets` (each needs a topic).
    pub fn builder(transport: &Transport, targets: Vec<Target>) -> NotificationListenerBuilder {
        NotificationListenerBuilder {
            transport: transport.clone(),
            targets,
            endpoints: Vec::new(),
            pool: None,
            allow_requeue: false,
            pool_size: None,
            serializer: None,
            batch_size: 1,
            batch_timeout: None,
        }
    }

    /// Starts consuming.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidState`](crate::ErrorKind::InvalidState) when already started or
    /// stopped; driver errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a start dropped before it returns (a timeout around it while the broker
    /// is unreachable) leaves the listener unstarted, and it can be started again.
    pub async fn start(&self) -> Result<()> {
        let inner = &self.inner;
        inner
            .lifecycle
            .start("notification listener", |stop| async move {
                let priorities = inner.core.priorities();
                let stream = listen(
                    &inner.transport,
                    &inner.targets,
                    &priorities,
                    inner.pool.clone(),
                )
                .await?;
                let poll = tokio::spawn(poll_loop(
                    inner.core.clone(),
                    stream.incoming,
                    stream.prefetch,
                    stop,
                ));
                Ok((poll, stream.control))
            })
            .await
    }

    /// Stops taking new notifications; returns once none is taken any more. Dropping the last
    /// handle of a running listener stops it too.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the stop is signalled at the first poll and proceeds whether or not the
    /// future is awaited to its end; only the wait for it is dropped.
    pub async fn stop(&self) {
        self.inner.lifecycle.stop().await;
    }

    /// Waits until stopped and every handler finished and the listener is released.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the shutdown proceeds in the background whether or not anyone waits.
    pub async fn wait(&self) {
        self.inner.lifecycle.wait().await;
    }
}

async fn poll_loop(
    core: Arc<Core>,
    incoming: tokio::sync::mpsc::UnboundedReceiver<driver::IncomingNotification>,
    prefetch: Option<usize>,
    stop: watch::Receiver<bool>,
) {
    let mut intake = Intake::new(incoming, stop, core.pool_size);
    let seen = Arc::new(StdMutex::new(DedupCache::new()));
    // Unacknowledged messages beyond the prefetch never arrive: cap batches there.
    let size = prefetch.map_or(core.batch_size, |p| core.batch_size.min(p));
    'outer: while let Some(first) = intake.next().await {
        let mut batch = vec![convert(first, core.serializer.as_deref())];
        let deadline = core.batch_timeout.map(driver::deadline_after);
        while batch.len() < size {
            match intake.more(deadline).await {
                Ok(Some(m)) => batch.push(convert(m, core.serializer.as_deref())),
                Err(()) => break,
                Ok(None) => {
                    run(&core, batch, &intake, &seen).await;
                    break 'outer;
                }
            }
        }
        // Duplicates of recently acknowledged messages are acknowledged and dropped.
        let mut fresh = Vec::with_capacity(batch.len());
        for r in batch {
            if r.is_duplicate(&seen) {
                tracing::warn!(
                    unique_id = r.unique_id.as_deref(),
                    "dropping a duplicate notification"
                );
                crate::stats::duplicate("notification");
                settle(r, false, &seen).await;
            } else {
                fresh.push(r);
            }
        }
        if !fresh.is_empty() {
            run(&core, fresh, &intake, &seen).await;
        }
    }
    intake.drain().await;
}

/// Dispatches a batch in a task of the handler pool.
async fn run(
    core: &Arc<Core>,
    batch: Vec<Received>,
    intake: &Intake<driver::IncomingNotification>,
    seen: &Arc<StdMutex<DedupCache>>,
) {
    let (core, seen) = (core.clone(), seen.clone());
    intake
        .spawn(Box::pin(async move {
            dispatch(
                &core.endpoints,
                batch,
                core.allow_requeue,
                &seen,
                &core.telemetry,
            )
            .await;
        }))
        .await;
}

/// Builds a [`NotificationListener`], or a [`NotificationStream`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use oslo_messaging::notify::{Notification, NotificationEndpoint, NotificationListener, Priority};
/// use oslo_messaging::{Target, Transport};
///
/// let transport = Transport::memory();
/// let endpoint = NotificationEndpoint::builder()
///     .on(Priority::Sample, |batch: Vec<Notification>| async move { let _ = batch; })
///     .build()?;
/// let listener = NotificationListener::builder(&transport, vec![Target::new("metering")])
///     .endpoint(endpoint)
///     .pool("ceilometer")
///     .batch_size(100)
///     .batch_timeout(Duration::from_secs(5))
///     .build()?;
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[must_use]
pub struct NotificationListenerBuilder {
    transport: Transport,
    targets: Vec<Target>,
    endpoints: Vec<NotificationEndpoint>,
    pool: Option<String>,
    allow_requeue: bool,
    pool_size: Option<usize>,
    serializer: Option<Arc<dyn Serializer>>,
    batch_size: usize,
    batch_timeout: Option<Duration>,
}

impl fmt::Debug for NotificationListenerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotificationListenerBuilder")
            .field("targets", &self.targets)
            .field("endpoints", &self.endpoints)
            .field("pool", &self.pool)
            .field("allow_requeue", &self.allow_requeue)
            .field("batch_size", &self.batch_size)
            .field("batch_timeout", &self.batch_timeout)
            .finish_non_exhaustive()
    }
}

impl NotificationListenerBuilder {
    /// Adds an endpoint; for each priority, endpoints run in the order added.
    pub fn endpoint(mut self, endpoint: NotificationEndpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Consumes from the pool queue `pool` (shared by the pool's listeners) instead of the
    /// default `<topic>.<priority>` queues.
    pub fn pool(mut self, pool: impl Into<String>) -> Self {
        self.pool = Some(pool.into());
        self
    }

    /// Lets `Requeue` (and handler errors) requeue messages (default `false`: they are
    /// acknowledged, as Python's `allow_requeue=False`).
    pub fn allow_requeue(mut self, allow: bool) -> Self {
        self.allow_requeue = allow;
        self
    }

    /// Handlers run at once (default `[DEFAULT] executor_thread_pool_size`, 64).
    pub fn executor_pool_size(mut self, size: usize) -> Self {
        self.pool_size = Some(size);
        self
    }

    /// Passes contexts and payloads through `serializer`.
    pub fn serializer(mut self, serializer: Arc<dyn Serializer>) -> Self {
        self.serializer = Some(serializer);
        self
    }

    /// Hands notifications to handlers in batches of up to `size` (default 1: one at a time),
    /// as Python's batch listener: a batch handler gets the batch, a one-at-a-time handler
    /// each of its notifications. On RabbitMQ a batch is at most `rabbit_qos_prefetch_count`
    /// long when that is set, as in Python: notifications are acknowledged after their batch
    /// ran, so the broker never sends more.
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size;
        self
    }

    /// How long a batch waits to fill after its first notification (default: until full).
    pub fn batch_timeout(mut self, timeout: Duration) -> Self {
        self.batch_timeout = Some(timeout);
        self
    }

    fn check_targets(&self) -> Result<()> {
        if self.targets.is_empty() {
            return Err(Error::invalid_target(
                "a notification listener needs at least one target",
            ));
        }
        for t in &self.targets {
            t.require_listener_topic()?;
        }
        Ok(())
    }

    /// The listener (not yet started).
    ///
    /// # Errors
    ///
    /// * [`ErrorKind::InvalidTarget`](crate::ErrorKind::InvalidTarget): no target, or a
    ///   target without topic;
    /// * [`ErrorKind::Configuration`](crate::ErrorKind::Configuration): no endpoint handles
    ///   any priority, the pool size is 0, or the batch size is 0.
    pub fn build(self) -> Result<NotificationListener> {
        self.check_targets()?;
        if self.batch_size == 0 {
            return Err(Error::config("batch_size must be at least 1"));
        }
        let conf = &self.transport.config().default;
        let pool_size = serve::pool_size(self.pool_size, conf.executor_thread_pool_size)?;
        let core = Core {
            endpoints: self.endpoints.into(),
            batch_size: self.batch_size,
            batch_timeout: self.batch_timeout,
            allow_requeue: self.allow_requeue,
            pool_size,
            serializer: self.serializer,
            telemetry: self.transport.telemetry().clone(),
        };
        if core.priorities().is_empty() {
            return Err(Error::config(
                "no endpoint of the notification listener handles any priority",
            ));
        }
        Ok(NotificationListener {
            inner: Arc::new(Inner {
                transport: self.transport,
                targets: self.targets,
                pool: self.pool,
                core: Arc::new(core),
                lifecycle: Lifecycle::new(),
            }),
        })
    }

    /// Consumes the notifications of `priorities` as a [`NotificationStream`] instead of
    /// handing them to endpoints: for services that want a loop of their own, with explicit
    /// acknowledgements. The targets, pool and serializer apply as to a listener.
    ///
    /// # Errors
    ///
    /// * [`ErrorKind::InvalidTarget`](crate::ErrorKind::InvalidTarget): no target, or a
    ///   target without topic;
    /// * [`ErrorKind::Configuration`](crate::ErrorKind::Configuration): no priority, or
    ///   endpoints or batching were set (they do not apply to a stream);
    /// * driver errors when consuming fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropped before it returns, nothing is left consuming.
    pub async fn subscribe(
        self,
        priorities: impl IntoIterator<Item = Priority>,
    ) -> Result<NotificationStream> {
        self.check_targets()?;
        if !self.endpoints.is_empty() || self.batch_size != 1 || self.batch_timeout.is_some() {
            return Err(Error::config(
                "a notification stream takes no endpoints and no batching: they are for listeners",
            ));
        }
        let wanted: Vec<Priority> = priorities.into_iter().collect();
        let priorities: Vec<Priority> = Priority::ALL
            .into_iter()
            .filter(|p| wanted.contains(p))
            .collect();
        if priorities.is_empty() {
            return Err(Error::config(
                "a notification stream needs at least one priority",
            ));
        }
        let stream = listen(&self.transport, &self.targets, &priorities, self.pool).await?;
        Ok(NotificationStream::new(stream, self.serializer))
    }
}
