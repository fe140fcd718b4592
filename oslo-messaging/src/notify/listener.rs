//! Receiving notifications.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::Priority;
use super::filter::NotificationFilter;
use crate::context::Context;
use crate::driver::{self, NotificationAcker};
use crate::error::{Error, Result};
use crate::serializer::Serializer;
use crate::serve::{self, CatchUnwind, DedupCache, Intake, Lifecycle};
use crate::target::Target;
use crate::transport::Transport;

/// A notification as a listener hands it to handlers.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Notification {
    /// The sender's (redacted) context, plus `client_timeout` as Python listeners see it.
    pub context: Context,
    /// `publisher_id`.
    pub publisher_id: Option<String>,
    /// `event_type`.
    pub event_type: Option<String>,
    /// The priority.
    pub priority: Priority,
    /// The payload.
    pub payload: Value,
    /// `{"message_id": ..., "timestamp": ...}`, as received.
    pub metadata: Map<String, Value>,
}

impl Notification {
    /// A notification, for calling handlers directly in tests.
    pub fn new(priority: Priority, event_type: impl Into<String>, payload: Value) -> Self {
        Self {
            context: Context::new(),
            publisher_id: None,
            event_type: Some(event_type.into()),
            priority,
            payload,
            metadata: Map::new(),
        }
    }

    /// The payload converted to `T`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Serialization`](crate::ErrorKind::Serialization) when it does not fit.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.payload.clone())
            .map_err(|e| Error::serialization(format!("notification payload does not fit: {e}")))
    }

    /// `metadata["message_id"]` when it is a string.
    pub fn message_id(&self) -> Option<&str> {
        self.metadata.get("message_id").and_then(Value::as_str)
    }

    /// `metadata["timestamp"]` when it is a string.
    pub fn timestamp(&self) -> Option<&str> {
        self.metadata.get("timestamp").and_then(Value::as_str)
    }

    fn passes(&self, filter: Option<&NotificationFilter>) -> bool {
        filter.is_none_or(|f| {
            f.matches(
                &self.context,
                self.publisher_id.as_deref(),
                self.event_type.as_deref(),
                &self.metadata,
                &self.payload,
            )
        })
    }
}

/// What a handler decided (oslo's `NotificationResult`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotificationResult {
    /// Done: acknowledge the message.
    #[default]
    Handled,
    /// Put it back for another delivery (only when the listener allows requeue; otherwise it
    /// is acknowledged).
    Requeue,
}

/// What notification handlers may return.
///
/// `()` and `Handled` acknowledge; `Requeue` requeues; an `Err` is logged and counts as
/// `Requeue`, as an exception does in Python.
pub trait IntoNotificationResult {
    /// The decision.
    fn into_notification_result(self) -> NotificationResult;
}

impl IntoNotificationResult for NotificationResult {
    fn into_notification_result(self) -> NotificationResult {
        self
    }
}

impl IntoNotificationResult for () {
    fn into_notification_result(self) -> NotificationResult {
        NotificationResult::Handled
    }
}

impl<T: IntoNotificationResult, E: fmt::Display> IntoNotificationResult
    for std::result::Result<T, E>
{
    fn into_notification_result(self) -> NotificationResult {
        match self {
            Ok(v) => v.into_notification_result(),
            Err(e) => {
                tracing::error!(error = %e, "notification handler failed");
                NotificationResult::Requeue
            }
        }
    }
}

type HandlerFuture = Pin<Box<dyn Future<Output = NotificationResult> + Send>>;
type SingleFn = Arc<dyn Fn(Notification) -> HandlerFuture + Send + Sync>;
type BatchFn = Arc<dyn Fn(Vec<Notification>) -> HandlerFuture + Send + Sync>;

fn erase<A, F, Fut, R>(f: F) -> Arc<dyn Fn(A) -> HandlerFuture + Send + Sync>
where
    A: Send + 'static,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoNotificationResult,
{
    let f = Arc::new(f);
    Arc::new(move |a| {
        let f = f.clone();
        Box::pin(async move {
            // The handler is called inside the guard: a panic before it returns its future is
            // caught too.
            CatchUnwind::new(async move { f(a).await })
                .await
                .map_or_else(
                    |panic| {
                        tracing::error!(panic, "notification handler panicked");
                        NotificationResult::Requeue
                    },
                    IntoNotificationResult::into_notification_result,
                )
        })
    })
}

/// Handlers per priority, with an optional filter (a Python notification endpoint with its
/// `filter_rule`).
///
/// # Examples
///
/// ```
/// use oslo_messaging::notify::{Notification, NotificationEndpoint, NotificationFilter, NotificationResult, Priority};
///
/// let endpoint = NotificationEndpoint::new()
///     .with_filter(NotificationFilter::new().event_type("compute\\.")?)
///     .on(Priority::Info, |n: Notification| async move {
///         println!("{:?}: {}", n.event_type, n.payload);
///     })
///     .on(Priority::Error, |_n: Notification| async { NotificationResult::Requeue });
/// assert_eq!(endpoint.priorities().collect::<Vec<_>>(), [Priority::Info, Priority::Error]);
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct NotificationEndpoint {
    filter: Option<NotificationFilter>,
    handlers: Vec<(Priority, SingleFn)>,
}

impl fmt::Debug for NotificationEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotificationEndpoint")
            .field("filter", &self.filter)
            .field("priorities", &self.priorities().collect::<Vec<_>>())
            .finish()
    }
}

impl NotificationEndpoint {
    /// An endpoint without handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only notifications passing `filter` reach this endpoint's handlers.
    #[must_use]
    pub fn with_filter(mut self, filter: NotificationFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Handles notifications of `priority` (a later handler for the same priority replaces it).
    #[must_use]
    pub fn on<F, Fut, R>(mut self, priority: Priority, handler: F) -> Self
    where
        F: Fn(Notification) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoNotificationResult,
    {
        self.handlers.retain(|(p, _)| *p != priority);
        self.handlers.push((priority, erase(handler)));
        self
    }

    /// The priorities handled.
    pub fn priorities(&self) -> impl Iterator<Item = Priority> + '_ {
        self.handlers.iter().map(|(p, _)| *p)
    }

    fn handler(&self, priority: Priority) -> Option<&SingleFn> {
        self.handlers
            .iter()
            .find(|(p, _)| *p == priority)
            .map(|(_, h)| h)
    }
}

/// Handlers per priority that receive notifications in batches (for the
/// [batch listener](NotificationListener::batch_builder)).
#[derive(Clone, Default)]
pub struct BatchNotificationEndpoint {
    filter: Option<NotificationFilter>,
    handlers: Vec<(Priority, BatchFn)>,
}

impl fmt::Debug for BatchNotificationEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchNotificationEndpoint")
            .field("filter", &self.filter)
            .field("priorities", &self.priorities().collect::<Vec<_>>())
            .finish()
    }
}

impl BatchNotificationEndpoint {
    /// An endpoint without handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only notifications passing `filter` reach this endpoint's handlers.
    #[must_use]
    pub fn with_filter(mut self, filter: NotificationFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Handles batches of `priority`. Returning `Requeue` (or an error) requeues the whole
    /// batch of that priority, as Python does.
    #[must_use]
    pub fn on<F, Fut, R>(mut self, priority: Priority, handler: F) -> Self
    where
        F: Fn(Vec<Notification>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoNotificationResult,
    {
        self.handlers.retain(|(p, _)| *p != priority);
        self.handlers.push((priority, erase(handler)));
        self
    }

    /// The priorities handled.
    pub fn priorities(&self) -> impl Iterator<Item = Priority> + '_ {
        self.handlers.iter().map(|(p, _)| *p)
    }

    fn handler(&self, priority: Priority) -> Option<&BatchFn> {
        self.handlers
            .iter()
            .find(|(p, _)| *p == priority)
            .map(|(_, h)| h)
    }
}

#[derive(Clone)]
enum Mode {
    Single(Arc<[NotificationEndpoint]>),
    Batch {
        endpoints: Arc<[BatchNotificationEndpoint]>,
        size: usize,
        timeout: Option<Duration>,
    },
}

impl Mode {
    fn priorities(&self) -> Vec<Priority> {
        let handled: Vec<Priority> = match self {
            Self::Single(eps) => eps
                .iter()
                .flat_map(NotificationEndpoint::priorities)
                .collect(),
            Self::Batch { endpoints, .. } => endpoints
                .iter()
                .flat_map(BatchNotificationEndpoint::priorities)
                .collect(),
        };
        Priority::ALL
            .into_iter()
            .filter(|p| handled.contains(p))
            .collect()
    }
}

/// Consumes notifications and dispatches them to endpoints by priority (oslo's notification
/// listener and batch listener).
///
/// It consumes `<topic>.<priority>` for every target and every priority an endpoint handles,
/// or one queue named after the pool, bound to all of them: each pool gets its own copy of
/// each notification, and listeners of the same pool share them. A message is acknowledged
/// after its handlers ran; when a handler asks for `Requeue` (or fails) and requeue is allowed,
/// it is requeued instead. Handlers of one priority run in endpoint order; the first `Requeue`
/// stops the rest.
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
/// let endpoint = NotificationEndpoint::new().on(Priority::Info, move |n: Notification| {
///     let tx = tx.clone();
///     async move { let _ = tx.send(n.event_type); }
/// });
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
    mode: Mode,
    allow_requeue: bool,
    pool_size: u32,
    serializer: Option<Arc<dyn Serializer>>,
}

impl fmt::Debug for NotificationListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotificationListener")
            .field("targets", &self.inner.targets)
            .field("pool", &self.inner.pool)
            .field("allow_requeue", &self.inner.core.allow_requeue)
            .finish_non_exhaustive()
    }
}

impl NotificationListener {
    /// Starts building a listener for `targets` (each needs a topic).
    pub fn builder(transport: &Transport, targets: Vec<Target>) -> NotificationListenerBuilder {
        NotificationListenerBuilder {
            common: Common::new(transport, targets),
            endpoints: Vec::new(),
        }
    }

    /// Starts building a batch listener: handlers get up to `batch_size` notifications of one
    /// priority at once, or fewer when `batch_timeout` passes first. On RabbitMQ a batch is
    /// at most `rabbit_qos_prefetch_count` long when that is set, as in Python: notifications
    /// are acknowledged after their batch ran, so the broker never sends more.
    pub fn batch_builder(
        transport: &Transport,
        targets: Vec<Target>,
    ) -> BatchNotificationListenerBuilder {
        BatchNotificationListenerBuilder {
            common: Common::new(transport, targets),
            endpoints: Vec::new(),
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
                // The driver consumes `<topic>.<priority>`, as the notifier publishes it.
                let priorities = inner.core.mode.priorities();
                let mut keyed = Vec::with_capacity(inner.targets.len() * priorities.len());
                for t in &inner.targets {
                    let topic = t.require_listener_topic()?;
                    for p in &priorities {
                        keyed.push(t.clone().with_topic(format!("{topic}.{}", p.as_str())));
                    }
                }
                let stream = inner
                    .transport
                    .driver()
                    .listen_for_notifications(keyed, inner.pool.clone())
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

/// One received notification, ready to dispatch.
struct Received {
    notification: Option<Notification>,
    unique_id: Option<String>,
    acker: Box<dyn NotificationAcker>,
}

fn convert(
    incoming: driver::IncomingNotification,
    serializer: Option<&dyn Serializer>,
) -> Received {
    let driver::IncomingNotification { message, acker } = incoming;
    let unique_id = message.unique_id.clone();
    let priority_text = message.priority.clone().unwrap_or_default();
    let Some(priority) = Priority::from_wire(&priority_text) else {
        tracing::warn!(
            priority = priority_text,
            "unknown notification priority; acknowledging"
        );
        return Received {
            notification: None,
            unique_id,
            acker,
        };
    };
    let mut context = message.context;
    context.insert("client_timeout", Value::Null);
    let (context, payload) = match serializer {
        None => (context, message.payload),
        Some(s) => match s.deserialize_context(context).and_then(|ctx| {
            s.deserialize_entity(&ctx, message.payload)
                .map(|p| (ctx, p))
        }) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::error!(error = %e, "the serializer refused a notification; acknowledging");
                return Received {
                    notification: None,
                    unique_id,
                    acker,
                };
            }
        },
    };
    let mut metadata = Map::new();
    metadata.insert("message_id".into(), message.message_id);
    metadata.insert("timestamp".into(), message.timestamp);
    Received {
        notification: Some(Notification {
            context,
            publisher_id: message.publisher_id,
            event_type: message.event_type,
            priority,
            payload,
            metadata,
        }),
        unique_id,
        acker,
    }
}

async fn settle(received: Received, requeue: bool, seen: &StdMutex<DedupCache>) {
    let outcome = if requeue {
        received.acker.requeue().await
    } else {
        let done = received.acker.ack().await;
        if done.is_ok()
            && let Some(id) = &received.unique_id
        {
            seen.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(id);
        }
        done
    };
    if let Err(e) = outcome {
        tracing::error!(error = %e, "failed to acknowledge or requeue a notification");
    }
}

async fn dispatch_single(
    endpoints: &[NotificationEndpoint],
    n: &Notification,
) -> NotificationResult {
    for ep in endpoints {
        let Some(handler) = ep.handler(n.priority) else {
            continue;
        };
        if !n.passes(ep.filter.as_ref()) {
            continue;
        }
        if handler(n.clone()).await == NotificationResult::Requeue {
            return NotificationResult::Requeue;
        }
    }
    NotificationResult::Handled
}

/// Python's batch dispatch: group by priority (in name order), and for each group run the
/// endpoints in order on the messages their filter passes; a `Requeue` requeues the whole group.
async fn dispatch_batch(
    endpoints: &[BatchNotificationEndpoint],
    batch: Vec<Received>,
    allow_requeue: bool,
    seen: &StdMutex<DedupCache>,
) {
    let mut groups: BTreeMap<&'static str, Vec<Received>> = BTreeMap::new();
    for r in batch {
        match &r.notification {
            Some(n) => groups.entry(n.priority.as_str()).or_default().push(r),
            None => settle(r, false, seen).await,
        }
    }
    for (_, group) in groups {
        let priority = group[0].notification.as_ref().map(|n| n.priority);
        let mut requeue = false;
        for ep in endpoints {
            let Some(handler) = priority.and_then(|p| ep.handler(p)) else {
                continue;
            };
            let passing: Vec<Notification> = group
                .iter()
                .filter_map(|r| r.notification.as_ref())
                .filter(|n| n.passes(ep.filter.as_ref()))
                .cloned()
                .collect();
            if passing.is_empty() {
                continue;
            }
            if handler(passing).await == NotificationResult::Requeue {
                requeue = true;
                break;
            }
        }
        for r in group {
            settle(r, requeue && allow_requeue, seen).await;
        }
    }
}

async fn poll_loop(
    inner: Arc<Core>,
    incoming: tokio::sync::mpsc::UnboundedReceiver<driver::IncomingNotification>,
    prefetch: Option<usize>,
    stop: watch::Receiver<bool>,
) {
    let mut intake = Intake::new(incoming, stop, inner.pool_size);
    let seen = Arc::new(StdMutex::new(DedupCache::new()));
    'outer: while let Some(first) = intake.next().await {
        let mut batch = vec![convert(first, inner.serializer.as_deref())];
        if let Mode::Batch { size, timeout, .. } = &inner.mode {
            // Unacknowledged messages beyond the prefetch never arrive: cap the batch there.
            let size = prefetch.map_or(*size, |p| (*size).min(p));
            let deadline = timeout.map(crate::driver::deadline_after);
            while batch.len() < size {
                match intake.more(deadline).await {
                    Ok(Some(m)) => batch.push(convert(m, inner.serializer.as_deref())),
                    Err(()) => break,
                    Ok(None) => {
                        dispatch_now(&inner, batch, &intake, &seen).await;
                        break 'outer;
                    }
                }
            }
        }
        // Duplicates of recently acknowledged messages are acknowledged and dropped.
        let mut fresh = Vec::with_capacity(batch.len());
        for r in batch {
            let dup = r.unique_id.as_deref().is_some_and(|id| {
                seen.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .contains(id)
            });
            if dup {
                tracing::warn!(
                    unique_id = r.unique_id.as_deref(),
                    "dropping a duplicate notification"
                );
                settle(r, false, &seen).await;
            } else {
                fresh.push(r);
            }
        }
        if !fresh.is_empty() {
            dispatch_now(&inner, fresh, &intake, &seen).await;
        }
    }
    intake.drain().await;
}

async fn dispatch_now(
    inner: &Arc<Core>,
    batch: Vec<Received>,
    intake: &Intake<driver::IncomingNotification>,
    seen: &Arc<StdMutex<DedupCache>>,
) {
    let inner = inner.clone();
    let seen = seen.clone();
    intake
        .spawn(async move {
            match &inner.mode {
                Mode::Single(endpoints) => {
                    for r in batch {
                        let result = match &r.notification {
                            Some(n) => dispatch_single(endpoints, n).await,
                            None => NotificationResult::Handled,
                        };
                        let requeue = result == NotificationResult::Requeue && inner.allow_requeue;
                        settle(r, requeue, &seen).await;
                    }
                }
                Mode::Batch { endpoints, .. } => {
                    dispatch_batch(endpoints, batch, inner.allow_requeue, &seen).await;
                }
            }
        })
        .await;
}

struct Common {
    transport: Transport,
    targets: Vec<Target>,
    pool: Option<String>,
    allow_requeue: bool,
    pool_size: Option<usize>,
    serializer: Option<Arc<dyn Serializer>>,
}

impl fmt::Debug for Common {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Common")
            .field("targets", &self.targets)
            .field("pool", &self.pool)
            .field("allow_requeue", &self.allow_requeue)
            .finish_non_exhaustive()
    }
}

impl Common {
    fn new(transport: &Transport, targets: Vec<Target>) -> Self {
        Self {
            transport: transport.clone(),
            targets,
            pool: None,
            allow_requeue: false,
            pool_size: None,
            serializer: None,
        }
    }

    fn build(self, mode: Mode) -> Result<NotificationListener> {
        if self.targets.is_empty() {
            return Err(Error::invalid_target(
                "a notification listener needs at least one target",
            ));
        }
        for t in &self.targets {
            t.require_listener_topic()?;
        }
        if mode.priorities().is_empty() {
            return Err(Error::config(
                "no endpoint of the notification listener handles any priority",
            ));
        }
        let conf = &self.transport.config().default;
        let pool_size = serve::pool_size(self.pool_size, conf.executor_thread_pool_size)?;
        Ok(NotificationListener {
            inner: Arc::new(Inner {
                transport: self.transport,
                targets: self.targets,
                pool: self.pool,
                core: Arc::new(Core {
                    mode,
                    allow_requeue: self.allow_requeue,
                    pool_size,
                    serializer: self.serializer,
                }),
                lifecycle: Lifecycle::new(),
            }),
        })
    }
}

macro_rules! common_setters {
    () => {
        /// Consumes from the pool queue `pool` (shared by the pool's listeners) instead of the
        /// default `<topic>.<priority>` queues.
        pub fn pool(mut self, pool: impl Into<String>) -> Self {
            self.common.pool = Some(pool.into());
            self
        }

        /// Lets `Requeue` (and handler errors) requeue messages (default `false`: they are
        /// acknowledged, as Python's `allow_requeue=False`).
        pub fn allow_requeue(mut self, allow: bool) -> Self {
            self.common.allow_requeue = allow;
            self
        }

        /// Handlers run at once (default `[DEFAULT] executor_thread_pool_size`, 64).
        pub fn executor_pool_size(mut self, size: usize) -> Self {
            self.common.pool_size = Some(size);
            self
        }

        /// Passes contexts and payloads through `serializer`.
        pub fn serializer(mut self, serializer: Arc<dyn Serializer>) -> Self {
            self.common.serializer = Some(serializer);
            self
        }
    };
}

/// Builds a [`NotificationListener`].
#[derive(Debug)]
#[must_use]
pub struct NotificationListenerBuilder {
    common: Common,
    endpoints: Vec<NotificationEndpoint>,
}

impl NotificationListenerBuilder {
    /// Adds an endpoint; for each priority, endpoints run in the order added.
    pub fn endpoint(mut self, endpoint: NotificationEndpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    common_setters!();

    /// The listener (not yet started).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidTarget`](crate::ErrorKind::InvalidTarget) for no target or a target without topic;
    /// [`ErrorKind::Configuration`](crate::ErrorKind::Configuration) when no endpoint handles any priority or the pool size is 0.
    pub fn build(self) -> Result<NotificationListener> {
        self.common.build(Mode::Single(self.endpoints.into()))
    }
}

/// Builds a batch [`NotificationListener`].
#[derive(Debug)]
#[must_use]
pub struct BatchNotificationListenerBuilder {
    common: Common,
    endpoints: Vec<BatchNotificationEndpoint>,
    batch_size: usize,
    batch_timeout: Option<Duration>,
}

impl BatchNotificationListenerBuilder {
    /// Adds an endpoint.
    pub fn endpoint(mut self, endpoint: BatchNotificationEndpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// The largest batch (default 1).
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size;
        self
    }

    /// How long a batch waits to fill after its first notification (default: until full).
    pub fn batch_timeout(mut self, timeout: Duration) -> Self {
        self.batch_timeout = Some(timeout);
        self
    }

    common_setters!();

    /// The listener (not yet started).
    ///
    /// # Errors
    ///
    /// As [`NotificationListenerBuilder::build`], and a batch size of 0.
    pub fn build(self) -> Result<NotificationListener> {
        if self.batch_size == 0 {
            return Err(Error::config("batch_size must be at least 1"));
        }
        self.common.build(Mode::Batch {
            endpoints: self.endpoints.into(),
            size: self.batch_size,
            timeout: self.batch_timeout,
        })
    }
}
