//! The RabbitMQ driver (`rabbit://`, `kombu://`): Python oslo.messaging's `impl_rabbit` and
//! `amqpdriver`, on the crate's own AMQP client.
//!
//! * Publishing goes through one connection per transport ([`publisher`]), consuming through
//!   a connection per listener ([`consumer`]), and a call's replies through the transport's
//!   reply queue, consumed without acknowledgements by its own connection on the first call;
//!   with `rabbit_direct_reply_to`, through RabbitMQ's direct reply-to on that connection.
//! * The topology, message properties, retry and failover behaviour are Python's for the same
//!   options ([`topology`], [`link`]).
//! * Replies are published mandatory to the default exchange; while the reply queue is missing
//!   they are retried every 0.25 s up to `kombu_missing_consumer_retry_timeout`, then the queue
//!   is remembered as gone for 60 s (Python's `ObsoleteReplyQueuesCache`). Replies to a direct
//!   reply-to name are not mandatory: RabbitMQ 3.x returns every such publish, delivered or
//!   not, and 4.x none, so a return would say nothing.

/// The AMQP client (its own crate, so nothing above this driver can reach it).
pub(crate) use oslo_messaging_amqp as amqp;
mod consumer;
mod link;
mod publisher;
mod qmanager;
mod tls;
pub(crate) mod topology;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{OnceCell, mpsc, watch};

use self::amqp::{Channel, FieldTable};
use self::consumer::{ConsumeQueue, ConsumerHandle, ConsumerSpec, ReplyAddress, Sink};
use self::link::Link;
use self::publisher::{Declare, Outgoing, Publisher};
use super::{
    BoxFuture, Driver, NotificationListenerStream, ReplyReceiver, ReplySink, ReplyWaiters, Retry,
    RpcListener, SendParams,
};
use crate::config::RabbitOptions;
use crate::error::RemoteError;
use crate::error::{Error, ErrorKind, Result};
use crate::target::Target;
use crate::url::TransportUrl;
use crate::wire;

/// Declares `ex` on `ch`, as [`topology`] describes it.
async fn declare_exchange(ch: &Channel, ex: &topology::ExchangeDecl) -> Result<(), amqp::Error> {
    ch.exchange_declare(&ex.name, ex.kind, ex.options(), FieldTable::new())
        .await
}

/// Declares what `q` needs on `ch`: its exchange (when bound), the queue, the binding.
async fn declare_queue(ch: &Channel, q: &topology::QueueDecl) -> Result<(), amqp::Error> {
    if let Some((ex, _)) = &q.binding {
        declare_exchange(ch, ex).await?;
    }
    ch.queue_declare(&q.name, q.options(), q.arguments.clone())
        .await?;
    if let Some((ex, key)) = &q.binding {
        ch.queue_bind(&q.name, &ex.name, key, FieldTable::new())
            .await?;
    }
    Ok(())
}

/// Reply queues given up on, for 60 s, at most 200 (Python's `ObsoleteReplyQueuesCache`).
#[derive(Debug, Default)]
struct ObsoleteReplyQueues {
    entries: Mutex<HashMap<String, Instant>>,
}

const OBSOLETE_TTL: Duration = Duration::from_secs(60);
const OBSOLETE_MAX: usize = 200;

impl ObsoleteReplyQueues {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn contains(&self, queue: &str) -> bool {
        let mut m = self.lock();
        m.retain(|_, at| at.elapsed() < OBSOLETE_TTL);
        m.contains_key(queue)
    }

    fn add(&self, queue: &str) {
        let mut m = self.lock();
        if m.len() >= OBSOLETE_MAX
            && let Some(oldest) = m.iter().min_by_key(|(_, at)| **at).map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(queue.to_owned(), Instant::now());
    }
}

/// Sends replies and heartbeats for RPC servers.
#[derive(Debug)]
struct RabbitReplies {
    publisher: Arc<Publisher>,
    obsolete: Arc<ObsoleteReplyQueues>,
    missing_timeout: Duration,
}

impl RabbitReplies {
    fn outgoing(reply_q: &str, body: Vec<u8>) -> Outgoing {
        Outgoing {
            exchange: String::new(),
            routing_key: reply_q.to_owned(),
            mandatory: !reply_q.starts_with(consumer::DIRECT_REPLY_TO),
            expiration: None,
            body,
            declare: Declare::Nothing,
        }
    }
}

impl ReplySink for RabbitReplies {
    fn reply<'a>(
        &'a self,
        reply_q: &'a str,
        msg_id: &'a str,
        outcome: std::result::Result<Value, RemoteError>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if self.obsolete.contains(reply_q) {
                tracing::warn!(
                    reply_q,
                    msg_id,
                    "{reply_q} doesn't exist, drop reply to {msg_id}"
                );
                return Ok(());
            }
            let deadline = Instant::now() + self.missing_timeout;
            loop {
                // A new _unique_id for every attempt, as Python does.
                let body = wire::encode_reply(msg_id, &wire::new_id(), &outcome);
                match self
                    .publisher
                    .publish(&Self::outgoing(reply_q, body), Retry::Forever)
                    .await
                {
                    Ok(()) => return Ok(()),
                    Err(e) if e.kind() == ErrorKind::Undeliverable => {
                        if Instant::now() >= deadline {
                            self.obsolete.add(reply_q);
                            tracing::error!(
                                msg_id,
                                reply_q,
                                "The reply {msg_id} failed to send after {} seconds due to a missing queue ({reply_q}). Abandoning...",
                                self.missing_timeout.as_secs()
                            );
                            return Ok(());
                        }
                        tracing::debug!(msg_id, reply_q, "the reply queue is missing; retrying");
                        crate::stats::reply_retry();
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    }

    fn heartbeat<'a>(&'a self, reply_q: &'a str, msg_id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let body = wire::encode_heartbeat(msg_id, &wire::new_id());
            match self
                .publisher
                .publish(&Self::outgoing(reply_q, body), Retry::Forever)
                .await
            {
                Err(e) if e.kind() == ErrorKind::Undeliverable => Err(Error::new(
                    ErrorKind::DeliveryFailure,
                    "Heartbeat send failed. Missing queue",
                )),
                other => other,
            }
        })
    }
}

/// The transport's reply queue (or direct reply-to) and its consumer.
#[derive(Debug)]
struct ReplyQueue {
    address: ReplyAddress,
    consumer: ConsumerHandle,
}

impl ReplyQueue {
    /// Registers a call under `msg_id` and returns the `_reply_q` its request must carry.
    /// With direct reply-to this waits (up to `timeout`) for the consumer's channel while it
    /// reconnects, and never pairs a call with a name whose channel has already gone: the
    /// consumer retracts a name before it fails the calls registered under it.
    async fn register(
        &self,
        waiters: &Arc<ReplyWaiters>,
        msg_id: &str,
        timeout: Duration,
    ) -> Result<(Arc<str>, ReplyReceiver)> {
        let mut address = self.address.clone();
        let deadline = super::deadline_after(timeout);
        loop {
            let name = match tokio::time::timeout_at(deadline, address.wait_for(Option::is_some))
                .await
            {
                Ok(Ok(name)) => name.clone(),
                Ok(Err(_)) => return Err(Error::shut_down("the reply consumer has stopped")),
                Err(_) => {
                    return Err(Error::timeout(format!(
                        "Timed out waiting for a reply to message ID {msg_id}: the direct reply-to consumer did not reconnect within {:.1} s",
                        timeout.as_secs_f64()
                    )));
                }
            };
            let Some(name) = name else {
                continue; // `wait_for` returned a present name; never absent here
            };
            let receiver = waiters.register(msg_id.to_owned());
            if address
                .borrow()
                .as_ref()
                .is_some_and(|now| Arc::ptr_eq(now, &name))
            {
                return Ok((name, receiver));
            }
        }
    }
}

/// The RabbitMQ driver of one transport.
#[derive(Debug)]
pub(crate) struct RabbitDriver {
    link: Arc<Link>,
    default_exchange: String,
    publisher: Arc<Publisher>,
    waiters: Arc<ReplyWaiters>,
    reply: OnceCell<ReplyQueue>,
    obsolete: Arc<ObsoleteReplyQueues>,
    closed: AtomicBool,
}

impl RabbitDriver {
    /// A driver for `url`; connects lazily.
    pub(crate) fn new(
        url: &TransportUrl,
        opts: &RabbitOptions,
        default_exchange: String,
    ) -> Result<Self> {
        if opts.rabbit_login_method == "RABBIT-CR-DEMO" {
            tracing::warn!(
                "rabbit_login_method RABBIT-CR-DEMO sends the password in clear text; use it for tests only"
            );
        }
        let link = Arc::new(Link::new(url, opts)?);
        Ok(Self {
            publisher: Arc::new(Publisher::new(link.clone())),
            link,
            default_exchange,
            waiters: Arc::default(),
            reply: OnceCell::new(),
            obsolete: Arc::default(),
            closed: AtomicBool::new(false),
        })
    }

    fn opts(&self) -> &RabbitOptions {
        &self.link.opts
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

    /// A unique suffix: a UUID hex, or a queue-manager id.
    fn unique(&self) -> Result<String> {
        if self.opts().use_queue_manager {
            qmanager::next_id(self.opts())
        } else {
            Ok(wire::new_id())
        }
    }

    /// The reply queue, declared and consumed on first use (giving up on an unreachable broker
    /// as the first call's `retry` says; once consuming, it reconnects forever); with
    /// `rabbit_direct_reply_to`, the direct reply-to consumer.
    async fn reply_queue(&self, retry: Retry) -> Result<&ReplyQueue> {
        self.reply
            .get_or_try_init(|| async {
                let (spec, sink, address) = if self.opts().rabbit_direct_reply_to {
                    let (tx, address) = watch::channel(None);
                    let spec = ConsumerSpec {
                        what: "direct reply-to consumer",
                        queues: Vec::new(),
                        delete_on_cleanup: Vec::new(),
                    };
                    let sink = Sink::Replies {
                        waiters: self.waiters.clone(),
                        direct: Some(tx),
                    };
                    (spec, sink, address)
                } else {
                    let name = format!("reply_{}", self.unique()?);
                    let spec = ConsumerSpec {
                        what: "reply queue consumer",
                        queues: vec![ConsumeQueue {
                            decl: topology::reply_queue(self.opts(), &name),
                            stream: false,
                        }],
                        // Ours alone: gone with the transport, not left to expire (a process
                        // that dies leaves it to its `x-expires`).
                        delete_on_cleanup: vec![name.clone()],
                    };
                    let sink = Sink::Replies {
                        waiters: self.waiters.clone(),
                        direct: None,
                    };
                    (spec, sink, watch::channel(Some(Arc::from(name))).1)
                };
                let consumer = consumer::spawn(self.link.clone(), spec, sink, retry).await?;
                Ok::<_, Error>(ReplyQueue { address, consumer })
            })
            .await
    }
}

impl RabbitDriver {
    /// Publishes a call's request within the call's `timeout`, sending it again while no
    /// queue takes it (the broker returns it) until one does. After a broker restart a client
    /// may publish before the server has declared its queue again; Python loses such a request
    /// and the caller times out. With `at_least_once` a returned request fails at once.
    async fn send_call(
        &self,
        msg: &mut Outgoing,
        msg_id: &str,
        retry: Retry,
        timeout: Duration,
        at_least_once: bool,
    ) -> Result<()> {
        let deadline = super::deadline_after(timeout);
        let mut returns = 0u32;
        loop {
            // The whole send is bounded by the call's timeout, as Python bounds the publish
            // with a socket timeout: a broker that takes the request but never confirms it
            // cannot hold the call forever.
            match tokio::time::timeout_at(deadline, self.publisher.publish(msg, retry)).await {
                Err(_) => {
                    return Err(Error::timeout(format!(
                        "Timed out waiting for a reply to message ID {msg_id}: the broker did not take the request within {:.1} s",
                        timeout.as_secs_f64()
                    )));
                }
                Ok(Err(e)) if e.kind() == ErrorKind::Undeliverable && !at_least_once => {}
                Ok(other) => return other,
            }
            returns += 1;
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::timeout(format!(
                    "Timed out waiting for a reply to message ID {msg_id}: no queue took the request for {:?} in {:.1} s ({returns} tries), so no server listens on it",
                    msg.routing_key,
                    timeout.as_secs_f64()
                )));
            }
            if returns == 1 {
                tracing::debug!(
                    routing_key = msg.routing_key,
                    "no queue took the request yet; sending it again until the call times out"
                );
            }
            let left = deadline - now;
            let wait = Duration::from_millis(100 << returns.saturating_sub(1).min(4))
                .min(Duration::from_secs(1))
                .min(left);
            tokio::time::sleep(wait).await;
            // The request expires when the call gives up.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            msg.expiration = Some(u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1));
        }
    }
}

impl Driver for RabbitDriver {
    fn send(&self, params: SendParams) -> BoxFuture<'_, Result<Option<ReplyReceiver>>> {
        Box::pin(async move {
            self.check_open()?;
            let topic = params.target.require_topic()?.to_owned();
            let opts = self.opts();
            let (exchange, routing_key, declare, mandatory) = if params.target.fanout() {
                let ex = topology::fanout_exchange(opts, &topic);
                (ex.name.clone(), String::new(), Declare::Exchange(ex), false)
            } else {
                let name = self.exchange_of(&params.target).to_owned();
                let key = match params.target.server() {
                    Some(server) => format!("{topic}.{server}"),
                    None => topic,
                };
                let ex = topology::topic_exchange(opts, &name);
                // Calls are always mandatory: a request no queue takes yet (its server is
                // still re-declaring after a broker restart) is sent again below.
                let mandatory = params.at_least_once || params.call.is_some();
                (name, key, Declare::Exchange(ex), mandatory)
            };
            let unique_id = wire::new_id();
            let mut call_id = None;
            let (body, receiver, expiration) = match params.call {
                Some(call) => {
                    let msg_id = wire::new_id();
                    let reply = self.reply_queue(params.retry).await?;
                    let registering = tokio::time::Instant::now();
                    let (reply_q, receiver) =
                        reply.register(&self.waiters, &msg_id, call.timeout).await?;
                    // Waiting for a direct reply-to name counts against the send's share of
                    // the timeout: a call still takes at most about twice its timeout.
                    let send_within = call.timeout.saturating_sub(registering.elapsed());
                    let info = wire::CallInfo {
                        msg_id: &msg_id,
                        reply_q: &reply_q,
                        call_monitor_timeout: call.call_monitor_timeout,
                    };
                    let body = wire::encode_request(&params.request, Some(&info), &unique_id);
                    let ms = u64::try_from(call.timeout.as_millis()).unwrap_or(u64::MAX);
                    call_id = Some((msg_id, send_within));
                    (body, Some(receiver), Some(ms))
                }
                None => (
                    wire::encode_request(&params.request, None, &unique_id),
                    None,
                    None,
                ),
            };
            let mut msg = Outgoing {
                exchange,
                routing_key,
                mandatory,
                expiration,
                body,
                declare,
            };
            match call_id {
                Some((msg_id, timeout)) => {
                    self.send_call(
                        &mut msg,
                        &msg_id,
                        params.retry,
                        timeout,
                        params.at_least_once,
                    )
                    .await?;
                }
                None => self.publisher.publish(&msg, params.retry).await?,
            }
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
            let msg = Outgoing {
                declare: Declare::Queue(topology::notifier_queue(self.opts(), &exchange, &key)),
                exchange,
                routing_key: key,
                mandatory: false,
                expiration: None,
                body: wire::encode_notification(&message, &wire::new_id(), envelope),
            };
            self.publisher.publish(&msg, retry).await
        })
    }

    fn listen(&self, target: Target) -> BoxFuture<'_, Result<RpcListener>> {
        Box::pin(async move {
            self.check_open()?;
            let (topic, server) = target.require_server_target()?;
            let opts = self.opts();
            let exchange = self.exchange_of(&target);
            let server_key = format!("{topic}.{server}");
            let fanout = topology::fanout_queue(opts, topic, &self.unique()?);
            let delete_on_cleanup = if topology::delete_fanout_on_close(opts) {
                vec![fanout.name.clone()]
            } else {
                Vec::new()
            };
            let spec = ConsumerSpec {
                what: "RPC server",
                queues: vec![
                    ConsumeQueue {
                        decl: topology::topic_queue(opts, exchange, topic, topic),
                        stream: false,
                    },
                    ConsumeQueue {
                        decl: topology::topic_queue(opts, exchange, &server_key, &server_key),
                        stream: false,
                    },
                    ConsumeQueue {
                        decl: fanout,
                        stream: opts.rabbit_stream_fanout,
                    },
                ],
                delete_on_cleanup,
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let consumer =
                consumer::spawn(self.link.clone(), spec, Sink::Rpc(tx), Retry::Forever).await?;
            Ok(RpcListener {
                incoming: rx,
                replies: Arc::new(RabbitReplies {
                    publisher: self.publisher.clone(),
                    obsolete: self.obsolete.clone(),
                    missing_timeout: Duration::from_secs(
                        u64::try_from(opts.kombu_missing_consumer_retry_timeout.max(0))
                            .unwrap_or(0),
                    ),
                }),
                control: Box::new(consumer),
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
            let mut queues = Vec::with_capacity(targets.len());
            for target in &targets {
                let key = target.require_listener_topic()?.to_owned();
                let queue = pool.clone().unwrap_or_else(|| key.clone());
                queues.push(ConsumeQueue {
                    decl: topology::topic_queue(
                        self.opts(),
                        self.exchange_of(target),
                        &queue,
                        &key,
                    ),
                    stream: false,
                });
            }
            let spec = ConsumerSpec {
                what: "notification listener",
                queues,
                delete_on_cleanup: Vec::new(),
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let consumer = consumer::spawn(
                self.link.clone(),
                spec,
                Sink::Notifications(tx),
                Retry::Forever,
            )
            .await?;
            Ok(NotificationListenerStream {
                prefetch: usize::try_from(self.opts().rabbit_qos_prefetch_count)
                    .ok()
                    .filter(|n| *n > 0),
                incoming: rx,
                control: Box::new(consumer),
            })
        })
    }

    fn cleanup(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Everything that must hold even if this future is dropped happens before the first
            // await: the transport is shut and calls in flight fail at once.
            self.closed.store(true, Ordering::Release);
            self.waiters.clear();
            if let Some(reply) = self.reply.get() {
                reply.consumer.stop().await;
                reply.consumer.cleanup().await;
            }
            self.publisher.close().await;
        })
    }

    fn blocked(&self) -> Option<String> {
        self.publisher.blocked()
    }
}
