//! The in-memory driver (`memory://`, `fake://`): a small AMQP-like broker inside the process.
//!
//! It routes exactly as the RabbitMQ driver lays out its topology: a topic exchange per control
//! exchange, `topic` and `topic.server` queues, a `topic_fanout` exchange with one queue per
//! server, `topic.priority` notification queues declared by the notifier, and pool queues.
//! Consumers of one queue share its messages round-robin; queues keep messages until consumed;
//! a requeued notification goes back to the head of its queue. Bodies are the exact wire bytes.
//!
//! Transports built from the same `memory://<vhost>` URL in one process share one broker, so a
//! server and a client built separately can talk. [`Transport::memory`](crate::Transport::memory)
//! makes a private one.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    BoxFuture, Driver, IncomingNotification, IncomingRpc, ListenerControl, NotificationAcker,
    NotificationListenerStream, ReplyReceiver, ReplySink, ReplyWaiters, Retry, RpcListener,
    SendParams,
};
use crate::config::RabbitOptions;
use crate::error::RemoteError;
use crate::error::{Error, ErrorKind, Result};
use crate::target::Target;
use crate::wire;

/// Brokers shared by `memory://<vhost>` URLs in this process.
static SHARED: LazyLock<Mutex<HashMap<String, Arc<Broker>>>> = LazyLock::new(Default::default);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What kind of message a [`SentMessage`] is.
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
    /// [`ErrorKind::Protocol`] when the body does not decode.
    pub fn decoded(&self) -> Result<serde_json::Map<String, Value>> {
        Ok(wire::unwrap_envelope(&self.body)?)
    }
}

#[derive(Clone)]
struct Message {
    body: Arc<[u8]>,
    /// A call's request expires with its timeout, as AMQP `expiration` makes RabbitMQ drop it.
    expires: Option<tokio::time::Instant>,
}

enum ConsumerTx {
    Rpc(mpsc::UnboundedSender<IncomingRpc>),
    Notification(mpsc::UnboundedSender<IncomingNotification>),
}

struct Consumer {
    id: u64,
    tx: ConsumerTx,
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<Message>,
    consumers: Vec<Consumer>,
    next: usize,
}

#[derive(Default)]
struct Exchange {
    fanout: bool,
    /// `(binding key, queue)`.
    bindings: Vec<(String, String)>,
}

#[derive(Default)]
struct State {
    exchanges: HashMap<String, Exchange>,
    queues: HashMap<String, Queue>,
    next_consumer: u64,
}

/// The in-process broker.
#[derive(Default)]
pub(crate) struct Broker {
    state: Mutex<State>,
    reply_queues: Mutex<HashMap<String, Weak<ReplyWaiters>>>,
    failures: AtomicU32,
    recording: AtomicBool,
    sent: Mutex<Vec<SentMessage>>,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("Broker")
            .field("exchanges", &state.exchanges.len())
            .field("queues", &state.queues.len())
            .finish_non_exhaustive()
    }
}

/// AMQP topic matching: `*` is one word, `#` zero or more.
fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| go(rest, &k[i..])),
            Some((&w, rest)) => match k.split_first() {
                Some((&kw, krest)) => (w == "*" || w == kw) && go(rest, krest),
                None => false,
            },
        }
    }
    if !pattern.contains(['*', '#']) {
        return pattern == key;
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

impl Broker {
    fn shared(vhost: &str) -> Arc<Self> {
        lock(&SHARED).entry(vhost.to_owned()).or_default().clone()
    }

    fn declare_exchange(state: &mut State, name: &str, fanout: bool) {
        state
            .exchanges
            .entry(name.to_owned())
            .or_insert_with(|| Exchange {
                fanout,
                bindings: Vec::new(),
            });
    }

    fn declare_bound_queue(
        state: &mut State,
        exchange: &str,
        fanout: bool,
        key: &str,
        queue: &str,
    ) {
        Self::declare_exchange(state, exchange, fanout);
        state.queues.entry(queue.to_owned()).or_default();
        let ex = state.exchanges.get_mut(exchange).expect("declared above");
        if !ex.bindings.iter().any(|(k, q)| k == key && q == queue) {
            ex.bindings.push((key.to_owned(), queue.to_owned()));
        }
    }

    fn record(&self, kind: SentKind, exchange: &str, key: &str, mandatory: bool, body: &[u8]) {
        if self.recording.load(Ordering::Relaxed) {
            lock(&self.sent).push(SentMessage {
                kind,
                exchange: exchange.to_owned(),
                routing_key: key.to_owned(),
                mandatory,
                body: body.to_vec(),
            });
        }
    }

    /// Routes a message; returns how many queues took it.
    fn publish(
        self: &Arc<Self>,
        exchange: &str,
        key: &str,
        body: Arc<[u8]>,
        expires: Option<tokio::time::Instant>,
    ) -> usize {
        let mut state = lock(&self.state);
        let queues: Vec<String> = match state.exchanges.get(exchange) {
            Some(ex) if ex.fanout => ex.bindings.iter().map(|(_, q)| q.clone()).collect(),
            Some(ex) => ex
                .bindings
                .iter()
                .filter(|(k, _)| topic_matches(k, key))
                .map(|(_, q)| q.clone())
                .collect(),
            None => Vec::new(),
        };
        let mut routed = 0;
        let mut seen = Vec::with_capacity(queues.len());
        for q in queues {
            if seen.contains(&q) {
                continue;
            }
            if let Some(queue) = state.queues.get_mut(&q) {
                queue.messages.push_back(Message {
                    body: body.clone(),
                    expires,
                });
                routed += 1;
                self.dispatch(&q, queue);
            }
            seen.push(q);
        }
        routed
    }

    /// Hands queued messages to consumers, round-robin, removing consumers that went away.
    fn dispatch(self: &Arc<Self>, name: &str, queue: &mut Queue) {
        while !queue.consumers.is_empty() {
            let Some(msg) = queue.messages.pop_front() else {
                return;
            };
            if msg
                .expires
                .is_some_and(|t| t <= tokio::time::Instant::now())
            {
                continue;
            }
            let idx = queue.next % queue.consumers.len();
            let delivered = match &queue.consumers[idx].tx {
                ConsumerTx::Rpc(tx) => tx.send(IncomingRpc::decode(&msg.body)).is_ok(),
                ConsumerTx::Notification(tx) => match wire::decode_notification(&msg.body) {
                    Ok(message) => {
                        let disarmed = Arc::new(AtomicBool::new(false));
                        let acker = MemoryAcker {
                            broker: Arc::downgrade(self),
                            queue: name.to_owned(),
                            message: Some(msg.clone()),
                            disarmed: disarmed.clone(),
                        };
                        let sent = tx.send(IncomingNotification {
                            message,
                            acker: Box::new(acker),
                        });
                        if let Err(returned) = sent {
                            // The message goes back to the queue below; the acker must not
                            // requeue it a second time (nor take the lock held here).
                            disarmed.store(true, Ordering::Release);
                            drop(returned);
                            false
                        } else {
                            true
                        }
                    }
                    Err(e) => {
                        tracing::error!(queue = name, error = %e, "rejecting a notification that does not decode");
                        queue.next = idx + 1;
                        continue;
                    }
                },
            };
            if delivered {
                queue.next = idx + 1;
            } else {
                queue.consumers.remove(idx);
                queue.messages.push_front(msg);
            }
        }
    }

    fn add_consumer(self: &Arc<Self>, queues: &[String], make: impl Fn() -> ConsumerTx) -> u64 {
        let mut state = lock(&self.state);
        state.next_consumer += 1;
        let id = state.next_consumer;
        for name in queues {
            if let Some(q) = state.queues.get_mut(name) {
                q.consumers.push(Consumer { id, tx: make() });
                self.dispatch(name, q);
            }
        }
        id
    }

    fn remove_consumer(&self, id: u64) {
        let mut state = lock(&self.state);
        for q in state.queues.values_mut() {
            q.consumers.retain(|c| c.id != id);
        }
    }

    fn delete_queue(&self, name: &str) {
        let mut state = lock(&self.state);
        state.queues.remove(name);
        for ex in state.exchanges.values_mut() {
            ex.bindings.retain(|(_, q)| q != name);
        }
    }

    fn requeue_locked(self: &Arc<Self>, state: &mut State, queue: &str, msg: Message) {
        if let Some(q) = state.queues.get_mut(queue) {
            q.messages.push_front(msg);
            self.dispatch(queue, q);
        }
    }

    /// Requeues from a `Drop`, which may run while this thread holds the state lock (a channel
    /// value freed inside `dispatch`): then it is done by a helper thread once the lock is free.
    fn requeue_from_drop(self: &Arc<Self>, queue: String, msg: Message) {
        match self.state.try_lock() {
            Ok(mut state) => self.requeue_locked(&mut state, &queue, msg),
            Err(std::sync::TryLockError::Poisoned(p)) => {
                self.requeue_locked(&mut p.into_inner(), &queue, msg)
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                let broker = self.clone();
                std::thread::spawn(move || {
                    let mut state = lock(&broker.state);
                    broker.requeue_locked(&mut state, &queue, msg);
                });
            }
        }
    }

    /// One publish attempt may fail when failures were injected.
    fn take_injected_failure(&self) -> bool {
        self.failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Acknowledges a notification taken from the memory broker.
struct MemoryAcker {
    broker: Weak<Broker>,
    queue: String,
    message: Option<Message>,
    disarmed: Arc<AtomicBool>,
}

impl fmt::Debug for MemoryAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryAcker")
            .field("queue", &self.queue)
            .finish()
    }
}

impl NotificationAcker for MemoryAcker {
    fn ack(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        self.message = None;
        Box::pin(async { Ok(()) })
    }

    fn requeue(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        // Dropping requeues.
        drop(self);
        Box::pin(async { Ok(()) })
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        if self.disarmed.load(Ordering::Acquire) {
            return;
        }
        if let (Some(msg), Some(broker)) = (self.message.take(), self.broker.upgrade()) {
            broker.requeue_from_drop(std::mem::take(&mut self.queue), msg);
        }
    }
}

/// The memory driver of one transport.
#[derive(Debug)]
pub(crate) struct MemoryDriver {
    broker: Arc<Broker>,
    default_exchange: String,
    options: RabbitOptions,
    waiters: Arc<ReplyWaiters>,
    reply_q: OnceLock<String>,
    closed: AtomicBool,
}

impl MemoryDriver {
    /// A driver on the broker shared by `memory://<vhost>`.
    pub(crate) fn shared(vhost: &str, default_exchange: String, options: RabbitOptions) -> Self {
        Self::with_broker(Broker::shared(vhost), default_exchange, options)
    }

    /// A driver on a broker of its own.
    pub(crate) fn private(default_exchange: String, options: RabbitOptions) -> Self {
        Self::with_broker(Arc::default(), default_exchange, options)
    }

    /// The test handle on this driver's broker.
    pub(crate) fn handle(&self) -> MemoryHandle {
        MemoryHandle {
            broker: self.broker.clone(),
        }
    }

    fn with_broker(broker: Arc<Broker>, default_exchange: String, options: RabbitOptions) -> Self {
        Self {
            broker,
            default_exchange,
            options,
            waiters: Arc::default(),
            reply_q: OnceLock::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::shut_down("the transport has been cleaned up"))
        } else {
            Ok(())
        }
    }

    fn exchange_of<'a>(&'a self, target: &'a Target) -> &'a str {
        target.exchange().unwrap_or(&self.default_exchange)
    }

    /// This transport's reply queue, registered with the broker on first use.
    fn reply_queue(&self) -> &str {
        self.reply_q.get_or_init(|| {
            let name = format!("reply_{}", wire::new_id());
            lock(&self.broker.reply_queues).insert(name.clone(), Arc::downgrade(&self.waiters));
            name
        })
    }

    /// Runs one publish with oslo's retry semantics against injected failures.
    async fn publish_with_retry(
        &self,
        retry: Retry,
        publish: impl Fn() -> Result<()>,
    ) -> Result<()> {
        let mut attempt = 0u32;
        loop {
            self.check_open()?;
            if !self.broker.take_injected_failure() {
                return publish();
            }
            if !retry.allows(attempt) {
                return Err(Error::new(
                    ErrorKind::DeliveryFailure,
                    format!(
                        "Unable to connect to AMQP server on memory after {attempt} tries: injected connection failure"
                    ),
                ));
            }
            let delay = super::backoff::delay(&self.options, attempt);
            tracing::warn!(
                attempt,
                ?delay,
                "memory transport: injected publish failure; retrying"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

impl Drop for MemoryDriver {
    fn drop(&mut self) {
        if let Some(q) = self.reply_q.get() {
            lock(&self.broker.reply_queues).remove(q);
        }
    }
}

impl Driver for MemoryDriver {
    fn send(&self, params: SendParams) -> BoxFuture<'_, Result<Option<ReplyReceiver>>> {
        Box::pin(async move {
            self.check_open()?;
            let topic = params.target.require_topic()?.to_owned();
            let (exchange, key) = if params.target.fanout() {
                (format!("{topic}_fanout"), String::new())
            } else {
                let key = match params.target.server() {
                    Some(server) => format!("{topic}.{server}"),
                    None => topic,
                };
                (self.exchange_of(&params.target).to_owned(), key)
            };
            let unique_id = wire::new_id();
            let mut receiver = None;
            let body: Arc<[u8]> = match params.call {
                Some(call) => {
                    let msg_id = wire::new_id();
                    let reply_q = self.reply_queue().to_owned();
                    let info = wire::CallInfo {
                        msg_id: &msg_id,
                        reply_q: &reply_q,
                        call_monitor_timeout: call.call_monitor_timeout,
                    };
                    let body = wire::encode_request(&params.request, Some(&info), &unique_id);
                    receiver = Some(self.waiters.register(msg_id));
                    body.into()
                }
                None => wire::encode_request(&params.request, None, &unique_id).into(),
            };
            // Python never publishes fanout casts mandatory.
            let mandatory = params.at_least_once && !params.target.fanout();
            let expires = params.call.map(|c| super::deadline_after(c.timeout));
            self.publish_with_retry(params.retry, || {
                self.broker
                    .record(SentKind::Request, &exchange, &key, mandatory, &body);
                let routed = self.broker.publish(&exchange, &key, body.clone(), expires);
                if routed == 0 && mandatory {
                    return Err(Error::undeliverable(
                        exchange.as_str(),
                        key.as_str(),
                        format!(
                            "no queue is bound to exchange {exchange:?} with routing key {key:?}"
                        ),
                    ));
                }
                Ok(())
            })
            .await?;
            Ok(receiver)
        })
    }

    fn send_notification(
        &self,
        target: Target,
        message: wire::Notification,
        envelope: bool,
        retry: Retry,
    ) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.check_open()?;
            let key = target.require_topic()?.to_owned();
            let exchange = self.exchange_of(&target).to_owned();
            let body: Arc<[u8]> =
                wire::encode_notification(&message, &wire::new_id(), envelope).into();
            self.publish_with_retry(retry, || {
                // The notifier declares the default queue so early notifications wait for a
                // listener, as the RabbitMQ driver does.
                Broker::declare_bound_queue(
                    &mut lock(&self.broker.state),
                    &exchange,
                    false,
                    &key,
                    &key,
                );
                self.broker
                    .record(SentKind::Notification, &exchange, &key, false, &body);
                self.broker.publish(&exchange, &key, body.clone(), None);
                Ok(())
            })
            .await
        })
    }

    fn listen(&self, target: Target) -> BoxFuture<'_, Result<RpcListener>> {
        Box::pin(async move {
            self.check_open()?;
            let (topic, server) = target.require_server_target()?;
            let exchange = self.exchange_of(&target).to_owned();
            let server_key = format!("{topic}.{server}");
            let fanout_exchange = format!("{topic}_fanout");
            let fanout_queue = format!("{topic}_fanout_{}", wire::new_id());
            {
                let mut state = lock(&self.broker.state);
                Broker::declare_bound_queue(&mut state, &exchange, false, topic, topic);
                Broker::declare_bound_queue(&mut state, &exchange, false, &server_key, &server_key);
                Broker::declare_bound_queue(
                    &mut state,
                    &fanout_exchange,
                    true,
                    topic,
                    &fanout_queue,
                );
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let queues = [topic.to_owned(), server_key, fanout_queue.clone()];
            let id = self
                .broker
                .add_consumer(&queues, || ConsumerTx::Rpc(tx.clone()));
            drop(tx);
            Ok(RpcListener {
                incoming: rx,
                replies: Arc::new(MemoryReplies {
                    broker: Arc::downgrade(&self.broker),
                }),
                control: Box::new(MemoryListenerControl {
                    broker: self.broker.clone(),
                    consumer: id,
                    delete_on_cleanup: vec![fanout_queue],
                }),
            })
        })
    }

    fn listen_for_notifications(
        &self,
        targets: Vec<Target>,
        pool: Option<String>,
    ) -> BoxFuture<'_, Result<NotificationListenerStream>> {
        Box::pin(async move {
            self.check_open()?;
            let mut queues: Vec<String> = Vec::new();
            {
                let mut state = lock(&self.broker.state);
                for target in &targets {
                    let key = target.require_listener_topic()?.to_owned();
                    let queue = pool.clone().unwrap_or_else(|| key.clone());
                    Broker::declare_bound_queue(
                        &mut state,
                        self.exchange_of(target),
                        false,
                        &key,
                        &queue,
                    );
                    if !queues.contains(&queue) {
                        queues.push(queue);
                    }
                }
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let id = self
                .broker
                .add_consumer(&queues, || ConsumerTx::Notification(tx.clone()));
            drop(tx);
            Ok(NotificationListenerStream {
                prefetch: None,
                incoming: rx,
                control: Box::new(MemoryListenerControl {
                    broker: self.broker.clone(),
                    consumer: id,
                    delete_on_cleanup: Vec::new(),
                }),
            })
        })
    }

    fn cleanup(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.closed.store(true, Ordering::Release);
            if let Some(q) = self.reply_q.get() {
                lock(&self.broker.reply_queues).remove(q);
            }
            self.waiters.clear();
        })
    }
}

/// Delivers replies through the broker's reply-queue registry, like a mandatory publish to the
/// default exchange.
#[derive(Debug)]
struct MemoryReplies {
    broker: Weak<Broker>,
}

impl MemoryReplies {
    fn send(&self, reply_q: &str, body: Vec<u8>) -> Result<()> {
        let broker = self
            .broker
            .upgrade()
            .ok_or_else(|| Error::shut_down("the memory broker is gone"))?;
        broker.record(SentKind::Reply, "", reply_q, true, &body);
        let waiters = lock(&broker.reply_queues)
            .get(reply_q)
            .and_then(Weak::upgrade);
        let Some(waiters) = waiters else {
            return Err(Error::undeliverable(
                "",
                reply_q,
                format!("reply queue {reply_q} does not exist"),
            ));
        };
        match wire::decode_reply(&body) {
            Ok(reply) => {
                waiters.deliver(reply);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl ReplySink for MemoryReplies {
    fn reply<'a>(
        &'a self,
        reply_q: &'a str,
        msg_id: &'a str,
        outcome: Result<Value, RemoteError>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.send(
                reply_q,
                wire::encode_reply(msg_id, &wire::new_id(), &outcome),
            )
        })
    }

    fn heartbeat<'a>(&'a self, reply_q: &'a str, msg_id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.send(reply_q, wire::encode_heartbeat(msg_id, &wire::new_id())) })
    }
}

#[derive(Debug)]
struct MemoryListenerControl {
    broker: Arc<Broker>,
    consumer: u64,
    delete_on_cleanup: Vec<String>,
}

impl ListenerControl for MemoryListenerControl {
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.broker.remove_consumer(self.consumer) })
    }

    fn cleanup(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.broker.remove_consumer(self.consumer);
            for q in &self.delete_on_cleanup {
                self.broker.delete_queue(q);
            }
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_matching() {
        assert!(topic_matches("a.b", "a.b"));
        assert!(!topic_matches("a.b", "a.c"));
        assert!(topic_matches("a.*", "a.b"));
        assert!(!topic_matches("a.*", "a.b.c"));
        assert!(topic_matches("a.#", "a.b.c"));
        assert!(topic_matches("a.#", "a"));
        assert!(topic_matches("#", "anything.at.all"));
        assert!(topic_matches("*.info", "notifications.info"));
    }
}
