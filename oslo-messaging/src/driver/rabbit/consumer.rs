//! Consuming: one task per listener (RPC server, notification listener, reply waiter) that
//! owns its own connection, as Python gives each listener a connection of its own.
//!
//! The task connects (failing over between hosts, waiting as Python does between attempts),
//! sets QoS, declares the listener's queues (with Python's fallbacks) and consumes them; after
//! a lost connection or a broker-side cancel it does all of that again, resuming stream
//! consumers after the last message seen. Messages that do not decode are rejected without
//! requeue. RPC requests are acknowledged on receipt: those that arrive together share one
//! `basic.ack` with `multiple`, sent as soon as no more are waiting and at most
//! [`ACK_DELAY`] after the first of them. Replies are consumed without acknowledgements, from
//! the reply queue or, with `rabbit_direct_reply_to`, from RabbitMQ's direct reply-to.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::amqp::{
    Channel, Connection, ConsumerEvent, Delivery, Error as AmqpError, FieldTable, Properties,
    QueueOptions,
};
use super::link::Link;
use super::topology::{self, QueueDecl, StreamOffset};
use crate::driver::{
    BoxFuture, IncomingNotification, IncomingRpc, ListenerControl, NotificationAcker, ReplyWaiters,
    Retry, backoff,
};
use crate::error::{Error, ErrorKind, Result};
use crate::wire;

/// Largest body accepted after decompression.
const MAX_DECOMPRESSED: u64 = 512 << 20;

/// The longest an RPC request waits for its acknowledgement while more arrive behind it: the
/// at-most-once window stays what one `basic.ack` per request gives, give or take this.
pub(crate) const ACK_DELAY: Duration = Duration::from_millis(1);

/// Requests acknowledged by one `basic.ack` at most.
const ACK_BATCH: u32 = 256;

/// RabbitMQ's direct reply-to pseudo-queue.
pub(crate) const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// How long the broker may take to tell a direct reply-to consumer its name.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a call's replies come back: the reply queue's name, or the direct reply-to name of
/// the consumer's current channel (`None` while it reconnects).
pub(crate) type ReplyAddress = watch::Receiver<Option<Arc<str>>>;

/// A queue a listener declares and consumes.
#[derive(Debug, Clone)]
pub(crate) struct ConsumeQueue {
    pub(crate) decl: QueueDecl,
    /// A stream queue: consumed from an offset.
    pub(crate) stream: bool,
}

/// Where a listener's messages go.
pub(crate) enum Sink {
    Rpc(mpsc::UnboundedSender<IncomingRpc>),
    Notifications(mpsc::UnboundedSender<IncomingNotification>),
    /// Replies, consumed without acknowledgements. With `direct`, from direct reply-to: the
    /// consumer publishes each channel's name there, and fails the waiting calls when the
    /// channel goes.
    Replies {
        waiters: Arc<ReplyWaiters>,
        direct: Option<watch::Sender<Option<Arc<str>>>>,
    },
}

impl Sink {
    fn no_ack(&self) -> bool {
        matches!(self, Self::Replies { .. })
    }

    fn direct(&self) -> Option<&watch::Sender<Option<Arc<str>>>> {
        match self {
            Self::Replies { direct, .. } => direct.as_ref(),
            _ => None,
        }
    }
}

/// What to consume.
pub(crate) struct ConsumerSpec {
    pub(crate) what: &'static str,
    pub(crate) queues: Vec<ConsumeQueue>,
    /// Queues to delete when the listener is cleaned up (fanout queues, as Python does).
    pub(crate) delete_on_cleanup: Vec<String>,
}

enum Ctl {
    Stop(oneshot::Sender<()>),
    Cleanup(oneshot::Sender<()>),
}

/// Controls a consumer task.
#[derive(Debug)]
pub(crate) struct ConsumerHandle {
    ctl: mpsc::UnboundedSender<Ctl>,
}

impl ConsumerHandle {
    async fn send(&self, make: impl FnOnce(oneshot::Sender<()>) -> Ctl) {
        let (tx, rx) = oneshot::channel();
        if self.ctl.send(make(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Cancels the consumers; deliveries already received are handed on, then the sink is
    /// dropped (so the listener's channel ends).
    pub(crate) async fn stop(&self) {
        self.send(Ctl::Stop).await;
    }

    /// Deletes what the listener should not leave behind and closes the connection.
    pub(crate) async fn cleanup(&self) {
        self.send(Ctl::Cleanup).await;
    }
}

impl ListenerControl for ConsumerHandle {
    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(Self::stop(self))
    }

    fn cleanup(&self) -> BoxFuture<'_, ()> {
        Box::pin(Self::cleanup(self))
    }
}

/// Starts a consumer task; returns once it consumes (or with the error that makes
/// consuming impossible: a declaration the broker refuses, bad credentials, or an unreachable
/// broker once `first_start` retries are spent). After the start the task reconnects forever.
pub(crate) async fn spawn(
    link: Arc<Link>,
    spec: ConsumerSpec,
    sink: Sink,
    first_start: Retry,
) -> Result<ConsumerHandle> {
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = oneshot::channel();
    let ready = Ready {
        tx: Some(ready_tx),
        retry: first_start,
    };
    tokio::spawn(run(link, spec, sink, ctl_rx, ready));
    match ready_rx.await {
        Ok(Ok(())) => Ok(ConsumerHandle { ctl: ctl_tx }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::shut_down(
            "the consumer task ended before it started",
        )),
    }
}

/// `rabbit_qos_prefetch_count` on a channel (nothing for 0 or less: no limit).
async fn set_qos(ch: &Channel, prefetch: i64) -> std::result::Result<(), AmqpError> {
    if prefetch > 0 {
        ch.basic_qos(u16::try_from(prefetch).unwrap_or(u16::MAX))
            .await?;
    }
    Ok(())
}

async fn declare_queue(
    conn: &Connection,
    ch: &mut Channel,
    q: &QueueDecl,
) -> std::result::Result<(), AmqpError> {
    match super::declare_queue(ch, q).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_durable_mismatch() => {
            tracing::warn!(
                queue = q.name,
                error = %e,
                "queue could not be declared probably because of conflicting configurations; declaring it non-durable"
            );
            *ch = conn.channel().await?;
            super::declare_queue(ch, &q.non_durable_fallback()).await
        }
        // A queue whose home node is gone (bug 2068630): delete it and declare it again.
        Err(e) if e.code() == Some(404) => {
            tracing::warn!(queue = q.name, error = %e, "re-creating a queue the broker could not find");
            *ch = conn.channel().await?;
            let _ = ch.queue_delete(&q.name, false, false).await;
            *ch = conn.channel().await?;
            super::declare_queue(ch, q).await
        }
        Err(e) => Err(e),
    }
}

struct Consuming {
    channel: Channel,
    events: mpsc::UnboundedReceiver<ConsumerEvent>,
    /// Consumer tag to queue name.
    tags: HashMap<String, String>,
    /// The channel's direct reply-to name, when it consumes direct reply-to.
    direct_name: Option<String>,
}

/// Learns the direct reply-to name of `ch`, which consumes [`DIRECT_REPLY_TO`]: the broker
/// writes it into the `reply_to` of a message published on `ch` with `reply_to` set to
/// [`DIRECT_REPLY_TO`], which a private queue hands back.
async fn direct_reply_name(ch: &Channel) -> std::result::Result<String, AmqpError> {
    let probe = format!("reply_probe_{}", wire::new_id());
    ch.queue_declare(
        &probe,
        QueueOptions::default().exclusive(true).auto_delete(true),
        FieldTable::new(),
    )
    .await?;
    let mut consumer = ch.consume(&probe, "", true, FieldTable::new()).await?;
    let props = Properties {
        reply_to: Some(DIRECT_REPLY_TO.to_owned()),
        ..Properties::default()
    };
    ch.publish("", &probe, false, &props, b"").await?;
    let name = loop {
        match tokio::time::timeout(PROBE_TIMEOUT, consumer.recv()).await {
            Ok(Some(ConsumerEvent::Delivery(_, d))) => break d.properties.reply_to,
            Ok(Some(_)) => {}
            Ok(None) => return Err(ch.error().unwrap_or(AmqpError::Closed)),
            Err(_) => {
                return Err(AmqpError::Protocol(
                    "the broker did not hand back the direct reply-to probe".into(),
                ));
            }
        }
    };
    // The probe queue goes with its consumer (auto-delete).
    consumer.cancel().await?;
    match name {
        Some(n) if n.starts_with(DIRECT_REPLY_TO) && n.len() > DIRECT_REPLY_TO.len() => Ok(n),
        // Not worth retrying: the broker does not do direct reply-to.
        other => Err(AmqpError::Invalid(format!(
            "rabbit_direct_reply_to: the broker does not support direct reply-to (the probe came back with reply_to {other:?})"
        ))),
    }
}

/// Which acknowledgement mode and reply source a listener's [`Sink`] asks for.
#[derive(Debug, Clone, Copy)]
struct Mode {
    no_ack: bool,
    direct: bool,
}

async fn setup(
    conn: &Connection,
    link: &Link,
    spec: &ConsumerSpec,
    mode: Mode,
    offsets: &HashMap<String, StreamOffset>,
) -> std::result::Result<Consuming, AmqpError> {
    let mut ch = conn.channel().await?;
    let prefetch = link.opts.rabbit_qos_prefetch_count;
    set_qos(&ch, prefetch).await?;
    for q in &spec.queues {
        let before = ch.clone();
        declare_queue(conn, &mut ch, &q.decl).await?;
        if !ch.same(&before) {
            // A fallback replaced the channel: QoS is per channel.
            set_qos(&ch, prefetch).await?;
        }
    }
    let (tx, events) = mpsc::unbounded_channel();
    let mut tags = HashMap::new();
    let mut n = 0;
    for q in &spec.queues {
        if tags.values().any(|name| name == &q.decl.name) {
            continue; // one consumer per queue (a pool queue bound to several keys)
        }
        n += 1;
        let offset = q
            .stream
            .then(|| offsets.get(&q.decl.name).copied().unwrap_or_default());
        let args = topology::consumer_arguments(&link.opts, offset.as_ref());
        let tag = ch
            .consume_into(&q.decl.name, &n.to_string(), mode.no_ack, args, tx.clone())
            .await?;
        tags.insert(tag, q.decl.name.clone());
    }
    let mut direct_name = None;
    if mode.direct {
        let tag = ch
            .consume_into(DIRECT_REPLY_TO, "", true, FieldTable::new(), tx.clone())
            .await?;
        tags.insert(tag, DIRECT_REPLY_TO.to_owned());
        direct_name = Some(direct_reply_name(&ch).await?);
    }
    Ok(Consuming {
        channel: ch,
        events,
        tags,
        direct_name,
    })
}

/// The message body, decompressed as its `compression` header says, if its content type is
/// JSON (Python's kombu cannot decode anything else into a message).
fn body_of(d: &Delivery) -> std::result::Result<Cow<'_, [u8]>, String> {
    match d.properties.content_type.as_deref() {
        Some(ct) if ct.starts_with("application/json") => {}
        Some(ct) => return Err(format!("content type {ct:?} is not application/json")),
        None => return Err("the message has no content type".into()),
    }
    let compression = d
        .properties
        .headers
        .as_ref()
        .and_then(|h| h.get("compression"))
        .and_then(super::amqp::FieldValue::as_str);
    let mut out = Vec::new();
    let read = match compression {
        None => return Ok(Cow::Borrowed(&d.body)),
        Some("application/x-gzip" | "gzip" | "zlib") => flate2::read::ZlibDecoder::new(&d.body[..])
            .take(MAX_DECOMPRESSED + 1)
            .read_to_end(&mut out),
        Some("application/x-bz2" | "bzip2" | "bzip") => bzip2::read::BzDecoder::new(&d.body[..])
            .take(MAX_DECOMPRESSED + 1)
            .read_to_end(&mut out),
        Some(c @ ("application/x-lzma" | "lzma" | "xz")) => {
            return Err(format!("compression {c:?} is not supported"));
        }
        // kombu uses the body as it is when it does not know the compression.
        Some(_) => return Ok(Cow::Borrowed(&d.body)),
    };
    match read {
        Ok(n) if n as u64 > MAX_DECOMPRESSED => Err("the decompressed message is too large".into()),
        Ok(_) => Ok(Cow::Owned(out)),
        Err(e) => Err(format!("cannot decompress the message: {e}")),
    }
}

/// Acknowledges a notification after its handlers ran.
struct RabbitAcker {
    channel: Channel,
    tag: u64,
    settled: bool,
    /// The runtime the delivery came from: an acker dropped on a thread outside it (a Python
    /// thread, for the Python driver) still requeues its message there.
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for RabbitAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitAcker")
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

fn settle_error(e: AmqpError) -> Error {
    Error::with_source(ErrorKind::Transport, "cannot acknowledge the message", e)
}

impl NotificationAcker for RabbitAcker {
    // The acker moves into the future and counts as settled only once the frame is handed to
    // the connection: a future dropped before that requeues the message on drop, as an
    // unsettled delivery does. (When sending fails the channel is gone, and the broker
    // requeues what it had delivered on it.)
    fn ack(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let sent = self.channel.ack(self.tag).await.map_err(settle_error);
            self.settled = true;
            sent
        })
    }

    fn requeue(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let sent = self
                .channel
                .reject(self.tag, true)
                .await
                .map_err(settle_error);
            self.settled = true;
            sent
        })
    }
}

impl Drop for RabbitAcker {
    fn drop(&mut self) {
        if !self.settled {
            let (ch, tag) = (self.channel.clone(), self.tag);
            // A runtime that has shut down drops the task: its connection, and with it the
            // delivery, is gone too, and the broker requeues it.
            self.runtime.spawn(async move {
                let _ = ch.reject(tag, true).await;
            });
        }
    }
}

/// RPC requests received and not yet acknowledged: one `basic.ack` with `multiple` settles
/// them.
#[derive(Debug, Default)]
struct PendingAcks {
    /// The highest delivery tag to acknowledge, the first one's arrival and how many.
    last: Option<(u64, Instant, u32)>,
}

impl PendingAcks {
    fn add(&mut self, tag: u64) {
        self.last = Some(match self.last {
            Some((_, since, n)) => (tag, since, n + 1),
            None => (tag, Instant::now(), 1),
        });
    }

    /// Whether the batch must go now although more requests may be waiting.
    fn due(&self) -> bool {
        self.last
            .is_some_and(|(_, since, n)| n >= ACK_BATCH || since.elapsed() >= ACK_DELAY)
    }

    fn is_empty(&self) -> bool {
        self.last.is_none()
    }

    async fn flush(&mut self, ch: &Channel) {
        match self.last.take() {
            Some((tag, _, 1)) => {
                let _ = ch.ack(tag).await;
            }
            Some((tag, _, _)) => {
                let _ = ch.ack_multiple(tag).await;
            }
            None => {}
        }
    }
}

async fn deliver(sink: &Sink, ch: &Channel, what: &str, d: Delivery, acks: &mut PendingAcks) {
    let body = match body_of(&d) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(
                what,
                error = e,
                "rejecting a message that cannot be decoded"
            );
            if !sink.no_ack() {
                let _ = ch.reject(d.delivery_tag, false).await;
            }
            return;
        }
    };
    match sink {
        Sink::Rpc(tx) => {
            let incoming = IncomingRpc::decode(&body);
            if let IncomingRpc::Malformed { error, .. } = &incoming {
                tracing::error!(what, error = %error, "rejecting an RPC request that does not decode");
                let _ = ch.reject(d.delivery_tag, false).await;
            } else {
                // oslo's at-most-once: acknowledged on receipt, with the requests that came
                // with it (the consume loop sends the batch within ACK_DELAY).
                acks.add(d.delivery_tag);
            }
            let _ = tx.send(incoming);
        }
        Sink::Notifications(tx) => match wire::decode_notification(&body) {
            Ok(message) => {
                let acker = RabbitAcker {
                    channel: ch.clone(),
                    tag: d.delivery_tag,
                    settled: false,
                    runtime: tokio::runtime::Handle::current(),
                };
                let _ = tx.send(IncomingNotification {
                    message,
                    acker: Box::new(acker),
                });
            }
            Err(e) => {
                tracing::error!(what, error = %e, "rejecting a notification that does not decode");
                let _ = ch.reject(d.delivery_tag, false).await;
            }
        },
        // Consumed without acknowledgements: a reply is no longer the broker's once sent.
        Sink::Replies { waiters, .. } => match wire::decode_reply(&body) {
            Ok(reply) => {
                waiters.deliver(reply);
            }
            Err(e) => {
                tracing::error!(what, error = %e, "dropping a reply that does not decode");
            }
        },
    }
}

/// How the consume loop ended.
enum Ended {
    Reconnect,
    Stopped(oneshot::Sender<()>),
    Cleanup(oneshot::Sender<()>),
}

/// The start report of a consumer task, and the retry budget of its first start.
struct Ready {
    tx: Option<oneshot::Sender<Result<()>>>,
    retry: Retry,
}

impl Ready {
    fn take(&mut self) -> Option<oneshot::Sender<Result<()>>> {
        self.tx.take()
    }

    /// Before retry number `failures` of the first start: whether the budget is spent, in
    /// which case the caller hears `err` and the task ends.
    fn gives_up(&mut self, failures: u32, host: &str, err: &AmqpError) -> bool {
        if self.tx.is_none() || self.retry.allows(failures) {
            return false;
        }
        if let Some(r) = self.tx.take() {
            let _ = r.send(Err(super::link::give_up(host, self.retry, err)));
        }
        true
    }
}

async fn run(
    link: Arc<Link>,
    spec: ConsumerSpec,
    sink: Sink,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    mut ready: Ready,
) {
    let mode = Mode {
        no_ack: sink.no_ack(),
        direct: sink.direct().is_some(),
    };
    let sink = Some(sink);
    let mut offsets: HashMap<String, StreamOffset> = HashMap::new();
    let stream_queues: Vec<String> = spec
        .queues
        .iter()
        .filter(|q| q.stream)
        .map(|q| q.decl.name.clone())
        .collect();
    let mut failures = 0u32;
    let mut conn: Option<Connection> = None;
    let mut channel: Option<Channel> = None;
    // Phase 1: consume, reconnecting, until stopped.
    let stopped_ack = 'consume: loop {
        if failures > 0 || conn.is_some() {
            if let Some(c) = conn.take() {
                tokio::spawn(async move { c.close().await });
            }
            let wait = backoff::delay(&link.opts, failures.saturating_sub(1));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                c = ctl.recv() => match c {
                    Some(Ctl::Stop(ack)) => break 'consume Some(ack),
                    Some(Ctl::Cleanup(ack)) => {
                        let _ = ack.send(());
                        return;
                    }
                    None => return,
                },
            }
        }
        let (host, result) = link.connect().await;
        let c = match result {
            Ok(c) => c,
            Err(e) => {
                if e.is_fatal() {
                    let err = super::link::give_up(&host, Retry::Forever, &e);
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(err));
                        return;
                    }
                    tracing::error!(what = spec.what, error = %e, "the broker refuses this listener's connection");
                } else if ready.gives_up(failures, &host, &e) {
                    return;
                }
                failures += 1;
                continue;
            }
        };
        let consuming = match setup(&c, &link, &spec, mode, &offsets).await {
            Ok(x) => x,
            Err(e) if !e.is_connection_level() => {
                let err = Error::with_source(
                    ErrorKind::DeliveryFailure,
                    format!("cannot set up the {} on {host}", spec.what),
                    e.clone(),
                );
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(err));
                    c.close().await;
                    return;
                }
                tracing::error!(what = spec.what, error = %e, "cannot set up consumers; retrying");
                conn = Some(c);
                failures += 1;
                continue;
            }
            Err(e) => {
                if ready.gives_up(failures, &host, &e) {
                    c.close().await;
                    return;
                }
                tracing::warn!(what = spec.what, error = %e, "connection lost while setting up consumers");
                conn = Some(c);
                failures += 1;
                continue;
            }
        };
        let Consuming {
            channel: ch,
            mut events,
            tags,
            direct_name,
        } = consuming;
        // Calls use the new name from now on (before the start is reported: the first call
        // finds it).
        if let (Some(tx), Some(name)) = (sink.as_ref().and_then(Sink::direct), direct_name) {
            tracing::debug!(what = spec.what, name, "direct reply-to name");
            tx.send_replace(Some(Arc::from(name)));
        }
        if let Some(r) = ready.take() {
            let _ = r.send(Ok(()));
        } else {
            tracing::info!(what = spec.what, host, "consuming again after reconnecting");
            crate::stats::reconnect("consumer");
        }
        let mut acks = PendingAcks::default();
        let ended = loop {
            tokio::select! {
                // In this order: control (rare, never starved by a busy queue), deliveries,
                // and the acknowledgements of requests when no more deliveries are waiting
                // (sooner when due).
                biased;
                c = ctl.recv() => match c {
                    Some(Ctl::Stop(ack)) => break Ended::Stopped(ack),
                    Some(Ctl::Cleanup(ack)) => break Ended::Cleanup(ack),
                    None => break Ended::Cleanup(oneshot::channel().0),
                },
                ev = events.recv() => match ev {
                    Some(ConsumerEvent::Delivery(tag, d)) => {
                        if let Some(queue) = tags.get(&tag).filter(|q| stream_queues.contains(q)) {
                            offsets.entry(queue.clone()).or_default().seen(d.properties.headers.as_ref());
                        }
                        if let Some(s) = &sink {
                            deliver(s, &ch, spec.what, d, &mut acks).await;
                        }
                        if acks.due() {
                            acks.flush(&ch).await;
                        }
                    }
                    Some(ConsumerEvent::Cancelled(tag)) => {
                        tracing::warn!(what = spec.what, tag, "the broker cancelled a consumer; reconnecting");
                        // The channel still works: requests already handed on are settled, not
                        // redelivered when the connection closes.
                        acks.flush(&ch).await;
                        if let Some(queue) = tags.get(&tag).filter(|q| stream_queues.contains(q)) {
                            offsets.insert(queue.clone(), StreamOffset::Last);
                        }
                        break Ended::Reconnect;
                    }
                    None => break Ended::Reconnect,
                    // An event of a later client version: nothing to do with it here.
                    Some(_) => {}
                },
                e = c.closed() => {
                    tracing::warn!(what = spec.what, error = %e, "lost the connection to the broker; reconnecting");
                    break Ended::Reconnect;
                }
                () = std::future::ready(()), if !acks.is_empty() => acks.flush(&ch).await,
            }
        };
        match ended {
            Ended::Reconnect => {
                link.lost(&host);
                if let Some(Sink::Replies {
                    waiters,
                    direct: Some(tx),
                }) = &sink
                {
                    // The name died with the channel, and with it every reply on its way.
                    tx.send_replace(None);
                    let failed = waiters.fail_all(
                        "its direct reply-to channel is gone (the connection was lost, or the broker closed the channel or cancelled the consumer; rabbit_direct_reply_to)",
                    );
                    if failed > 0 {
                        tracing::warn!(
                            what = spec.what,
                            failed,
                            "calls in flight lost their replies with the direct reply-to channel"
                        );
                    }
                }
                conn = Some(c);
                failures = 1;
            }
            Ended::Stopped(ack) => {
                for tag in tags.keys() {
                    let _ = ch.cancel(tag).await;
                }
                // What arrived before the cancel is handed on (RPC requests acknowledged).
                while let Ok(ev) = events.try_recv() {
                    if let (ConsumerEvent::Delivery(_, d), Some(s)) = (ev, &sink) {
                        deliver(s, &ch, spec.what, d, &mut acks).await;
                    }
                }
                acks.flush(&ch).await;
                conn = Some(c);
                channel = Some(ch);
                break 'consume Some(ack);
            }
            Ended::Cleanup(ack) => {
                acks.flush(&ch).await;
                drop(sink);
                cleanup(&spec, Some(&c), Some(&ch)).await;
                let _ = ack.send(());
                return;
            }
        }
    };
    // Phase 2: stopped. The listener's channel ends; the connection stays for acks until
    // cleanup.
    drop(sink);
    if let Some(r) = ready.take() {
        let _ = r.send(Err(Error::shut_down("stopped before it started")));
    }
    if let Some(ack) = stopped_ack {
        let _ = ack.send(());
    }
    loop {
        match ctl.recv().await {
            Some(Ctl::Stop(ack)) => {
                let _ = ack.send(());
            }
            Some(Ctl::Cleanup(ack)) => {
                cleanup(&spec, conn.as_ref(), channel.as_ref()).await;
                let _ = ack.send(());
                return;
            }
            None => {
                cleanup(&spec, conn.as_ref(), channel.as_ref()).await;
                return;
            }
        }
    }
}

async fn cleanup(spec: &ConsumerSpec, conn: Option<&Connection>, ch: Option<&Channel>) {
    if let (Some(ch), false) = (ch, spec.delete_on_cleanup.is_empty()) {
        for q in &spec.delete_on_cleanup {
            if let Err(e) = ch.queue_delete(q, false, false).await {
                tracing::debug!(queue = q, error = %e, "could not delete the queue");
            }
        }
    }
    if let Some(c) = conn {
        c.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_of_acks_is_due_after_its_delay_or_when_full() {
        let mut acks = PendingAcks::default();
        assert!(acks.is_empty() && !acks.due());
        acks.add(1);
        acks.add(2);
        assert!(!acks.is_empty());
        assert!(!acks.due(), "two requests a moment apart wait for more");
        std::thread::sleep(ACK_DELAY);
        assert!(acks.due(), "the first one waited its delay");
        assert_eq!(acks.last.map(|(tag, _, n)| (tag, n)), Some((2, 2)));

        let mut full = PendingAcks::default();
        for tag in 1..=u64::from(ACK_BATCH) {
            full.add(tag);
        }
        assert!(full.due(), "a full batch goes at once");
    }
}
