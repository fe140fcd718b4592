//! What the I/O task keeps per channel: RPCs waiting for their reply, publishes waiting for
//! their confirm, consumers, and the content frames of a message being assembled.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::channel::{ChanShared, Confirm, ConsumerEvent};
use crate::connection::FirstError;
use crate::error::Error;
use crate::frame::{ContentHeader, Method};

/// Where a new channel's number and shared state go once the broker opened it.
pub(super) type ChannelOpened = oneshot::Sender<Result<(u16, Arc<ChanShared>), Error>>;

pub(super) struct PendingRpc {
    pub(super) expect: (u16, u16),
    pub(super) reply: Option<oneshot::Sender<Result<Method, Error>>>,
    pub(super) consumer: Option<mpsc::UnboundedSender<ConsumerEvent>>,
    pub(super) open: Option<ChannelOpened>,
}

pub(super) struct PendingConfirm {
    pub(super) tag: u64,
    pub(super) key: u64,
    pub(super) tx: oneshot::Sender<Confirm>,
    pub(super) returned: Option<(u16, String)>,
}

pub(super) enum IncomingKind {
    Deliver {
        consumer_tag: String,
        delivery_tag: u64,
    },
    Return {
        code: u16,
        text: String,
        routing_key: String,
    },
}

pub(super) struct Incoming {
    pub(super) kind: IncomingKind,
    pub(super) header: Option<ContentHeader>,
    pub(super) body: Vec<u8>,
}

pub(super) struct ChanState {
    pub(super) shared: Arc<ChanShared>,
    pub(super) rpcs: VecDeque<PendingRpc>,
    pub(super) consumers: HashMap<String, mpsc::UnboundedSender<ConsumerEvent>>,
    pub(super) confirm_mode: bool,
    pub(super) next_tag: u64,
    pub(super) confirms: VecDeque<PendingConfirm>,
    pub(super) incoming: Option<Incoming>,
    pub(super) close_waiters: Vec<oneshot::Sender<()>>,
    pub(super) closing: bool,
}

impl ChanState {
    pub(super) fn new() -> Self {
        Self {
            shared: Arc::new(ChanShared {
                error: FirstError::default(),
            }),
            rpcs: VecDeque::new(),
            consumers: HashMap::new(),
            confirm_mode: false,
            next_tag: 1,
            confirms: VecDeque::new(),
            incoming: None,
            close_waiters: Vec::new(),
            closing: false,
        }
    }

    /// Fails everything waiting on the channel.
    pub(super) fn fail(&mut self, e: &Error) {
        self.shared.fail(e.clone());
        for mut rpc in self.rpcs.drain(..) {
            if let Some(r) = rpc.reply.take() {
                let _ = r.send(Err(e.clone()));
            }
            if let Some(r) = rpc.open.take() {
                let _ = r.send(Err(e.clone()));
            }
        }
        // Dropping the confirm senders and consumer senders wakes their owners, who read the
        // channel's error.
        self.confirms.clear();
        self.consumers.clear();
        for w in self.close_waiters.drain(..) {
            let _ = w.send(());
        }
    }

    pub(super) fn settle(&mut self, delivery_tag: u64, multiple: bool, ack: bool) {
        let verdict = |c: PendingConfirm| {
            let v = match (ack, c.returned) {
                (false, _) => Confirm::Nack,
                (true, Some((code, text))) => Confirm::Returned { code, text },
                (true, None) => Confirm::Ack,
            };
            let _ = c.tx.send(v);
        };
        if multiple {
            while self.confirms.front().is_some_and(|c| c.tag <= delivery_tag) {
                if let Some(c) = self.confirms.pop_front() {
                    verdict(c);
                }
            }
        } else if let Ok(i) = self.confirms.binary_search_by_key(&delivery_tag, |c| c.tag)
            && let Some(c) = self.confirms.remove(i)
        {
            verdict(c);
        }
    }
}
