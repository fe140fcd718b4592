//! The in-process broker: exchanges, queues, bindings and consumers, AMQP-like.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};

use super::handle::{SentKind, SentMessage};
use crate::driver::{
    BoxFuture, IncomingNotification, IncomingRpc, NotificationAcker, ReplyWaiters,
};
use crate::error::Result;
use crate::wire;
use tokio::sync::mpsc;

/// Brokers shared by `memory://<vhost>` URLs in this process.
static SHARED: LazyLock<Mutex<HashMap<String, Arc<Broker>>>> = LazyLock::new(Default::default);

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Clone)]
pub(super) struct Message {
    pub(super) body: Arc<[u8]>,
    /// A call's request expires with its timeout, as AMQP `expiration` makes RabbitMQ drop it.
    pub(super) expires: Option<tokio::time::Instant>,
}

pub(super) enum ConsumerTx {
    Rpc(mpsc::UnboundedSender<IncomingRpc>),
    Notification(mpsc::UnboundedSender<IncomingNotification>),
}

pub(super) struct Consumer {
    pub(super) id: u64,
    pub(super) tx: ConsumerTx,
}

#[derive(Default)]
pub(super) struct Queue {
    pub(super) messages: VecDeque<Message>,
    pub(super) consumers: Vec<Consumer>,
    pub(super) next: usize,
}

#[derive(Default)]
pub(super) struct Exchange {
    pub(super) fanout: bool,
    /// `(binding key, queue)`.
    pub(super) bindings: Vec<(String, String)>,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) exchanges: HashMap<String, Exchange>,
    pub(super) queues: HashMap<String, Queue>,
    pub(super) next_consumer: u64,
}

/// The in-process broker.
#[derive(Default)]
pub(super) struct Broker {
    pub(super) state: Mutex<State>,
    pub(super) reply_queues: Mutex<HashMap<String, Weak<ReplyWaiters>>>,
    pub(super) failures: AtomicU32,
    pub(super) recording: AtomicBool,
    pub(super) sent: Mutex<Vec<SentMessage>>,
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
    pub(super) fn shared(vhost: &str) -> Arc<Self> {
        lock(&SHARED).entry(vhost.to_owned()).or_default().clone()
    }

    pub(super) fn declare_exchange(state: &mut State, name: &str, fanout: bool) {
        state
            .exchanges
            .entry(name.to_owned())
            .or_insert_with(|| Exchange {
                fanout,
                bindings: Vec::new(),
            });
    }

    pub(super) fn declare_bound_queue(
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

    pub(super) fn record(
        &self,
        kind: SentKind,
        exchange: &str,
        key: &str,
        mandatory: bool,
        body: &[u8],
    ) {
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
    pub(super) fn publish(
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
    pub(super) fn dispatch(self: &Arc<Self>, name: &str, queue: &mut Queue) {
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

    pub(super) fn add_consumer(
        self: &Arc<Self>,
        queues: &[String],
        make: impl Fn() -> ConsumerTx,
    ) -> u64 {
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

    pub(super) fn remove_consumer(&self, id: u64) {
        let mut state = lock(&self.state);
        for q in state.queues.values_mut() {
            q.consumers.retain(|c| c.id != id);
        }
    }

    pub(super) fn delete_queue(&self, name: &str) {
        let mut state = lock(&self.state);
        state.queues.remove(name);
        for ex in state.exchanges.values_mut() {
            ex.bindings.retain(|(_, q)| q != name);
        }
    }

    pub(super) fn requeue_locked(self: &Arc<Self>, state: &mut State, queue: &str, msg: Message) {
        if let Some(q) = state.queues.get_mut(queue) {
            q.messages.push_front(msg);
            self.dispatch(queue, q);
        }
    }

    /// Requeues from a `Drop`, which may run while this thread holds the state lock (a channel
    /// value freed inside `dispatch`): then it is done by a helper thread once the lock is free.
    pub(super) fn requeue_from_drop(self: &Arc<Self>, queue: String, msg: Message) {
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
    pub(super) fn take_injected_failure(&self) -> bool {
        self.failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Acknowledges a notification taken from the memory broker.
pub(super) struct MemoryAcker {
    pub(super) broker: Weak<Broker>,
    pub(super) queue: String,
    pub(super) message: Option<Message>,
    pub(super) disarmed: Arc<AtomicBool>,
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
