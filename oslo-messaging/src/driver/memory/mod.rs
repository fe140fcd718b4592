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
//!
//! Three parts: [`broker`] is the in-process broker, this module the driver on it, and
//! [`handle`] the public test handle ([`MemoryHandle`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    BoxFuture, Driver, ListenerControl, NotificationListenerStream, ReplyReceiver, ReplySink,
    ReplyWaiters, Retry, RpcListener, SendParams,
};
use crate::config::RabbitOptions;
use crate::error::RemoteError;
use crate::error::{Error, ErrorKind, Result};
use crate::target::Target;
use crate::wire;

mod broker;
mod handle;

use broker::{Broker, ConsumerTx, lock};
pub use handle::{MemoryHandle, SentKind, SentMessage};

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
        MemoryHandle::new(self.broker.clone())
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
