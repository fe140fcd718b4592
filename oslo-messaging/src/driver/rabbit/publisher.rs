//! Publishing: one connection per transport (separate from every consumer's, as in Python),
//! a channel in confirm mode shared by all callers (their confirms are pipelined), and a
//! second channel for declarations, so a declaration the broker refuses never closes the
//! channel other callers' messages are in flight on.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, watch};

use super::amqp::{
    Channel, Confirm, Connection, Error as AmqpError, FieldTable, FieldValue, Properties,
};
use super::link::{Link, give_up};
use super::topology::{ExchangeDecl, QueueDecl};
use crate::driver::{Retry, backoff};
use crate::error::{Error, ErrorKind, Result};

/// RabbitMQ's hard upper bound for `max_message_size` (512 MiB): larger bodies can never be
/// accepted and are refused before anything is sent.
pub(crate) const MAX_MESSAGE_SIZE: usize = 512 * 1024 * 1024;

/// Bodies above this size go out on a channel of their own. A broker refuses a body above its
/// `max_message_size` (16 MiB by default on 4.x, 128 MiB on 3.x, often lowered) by closing the
/// channel it came on; a channel of its own keeps that from failing the messages in flight on
/// the shared confirm channel. The extra channel costs a few round trips, nothing beside
/// sending a mebibyte.
const OWN_CHANNEL_ABOVE: usize = 1024 * 1024;

/// The broker's `max_message_size`, when `e` is its refusal of a body above it
/// (`406 PRECONDITION_FAILED - message size N is larger than configured max size M`).
fn size_limit_refusal(e: &AmqpError) -> Option<usize> {
    let AmqpError::ChannelClosed {
        code: 406, text, ..
    } = e
    else {
        return None;
    };
    let (_, max) = text.split_once("larger than configured max size ")?;
    max.trim().parse().ok()
}

fn too_large(len: usize, max: usize) -> Error {
    Error::new(
        ErrorKind::DeliveryFailure,
        format!(
            "the message is {len} bytes, above the broker's max_message_size of {max} bytes; it was not sent"
        ),
    )
}

/// How long a message the broker nacks is published again before the send fails. A quorum
/// queue nacks while it elects a leader (a fraction of a second on three idle nodes, above 2 s
/// on a loaded machine), and that must lose nothing; a full queue with
/// `overflow = reject-publish` nacks until it has room, and that must not hang a send whose
/// `retry` is unlimited. 5 s: the publish stall the leader-kill tests (R1, R2) accept.
pub(crate) const NACK_WINDOW: Duration = Duration::from_secs(5);

/// How long a publish waits for the broker's confirm before it counts as a failed attempt
/// (retried as `retry` allows). A broker that stops answering altogether is found sooner by
/// the heartbeat; this bounds the wait on one that answers but never confirms.
pub(crate) const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// The wait before publishing a nacked message again: 25 ms, doubling up to 200 ms.
fn nack_backoff(nacks: u32) -> Duration {
    Duration::from_millis(25 << nacks.saturating_sub(1).min(3))
}

/// What must exist before a message is published.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Declare {
    /// Nothing (replies go to the default exchange).
    Nothing,
    /// An exchange (RPC sends), with Python's non-durable fallback.
    Exchange(ExchangeDecl),
    /// An exchange, a queue and its binding (the notifier's default queue; no fallback, as in
    /// Python).
    Queue(QueueDecl),
}

/// A message to publish.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) exchange: String,
    pub(crate) routing_key: String,
    pub(crate) mandatory: bool,
    /// Per-message TTL in milliseconds (calls).
    pub(crate) expiration: Option<u64>,
    pub(crate) body: Vec<u8>,
    pub(crate) declare: Declare,
}

struct Session {
    conn: Connection,
    host: String,
    publish: std::sync::Mutex<Channel>,
    declare: Mutex<Option<Channel>>,
    /// Queues declared on this connection (a broker restart may have lost them).
    declared: Mutex<HashSet<String>>,
    /// Held while a dead publish channel is replaced, so one replacement serves every caller.
    renewing: Mutex<()>,
}

impl Session {
    fn publish_channel(&self) -> Channel {
        self.publish
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Publishes for one transport.
pub(crate) struct Publisher {
    link: Arc<Link>,
    /// Exchanges declared, kept across reconnects: declaring one again after a failover can
    /// wait on a frozen cluster member (it takes a cluster-wide lock), and a publish to an
    /// exchange that is gone fails with 404, after which it is declared again.
    exchanges: std::sync::Mutex<HashSet<String>>,
    session: Mutex<Option<Arc<Session>>>,
    /// The current connection's `connection.blocked` state, readable without waiting for
    /// `session` (held across a reconnect).
    blocked: std::sync::Mutex<Option<watch::Receiver<Option<String>>>>,
    closed: AtomicBool,
    /// A session was lost: the next one is a reconnect.
    lost: AtomicBool,
    compression: Option<&'static str>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

/// A channel opened for one message, closed when dropped.
struct OwnChannel(Option<Channel>);

impl Drop for OwnChannel {
    fn drop(&mut self) {
        if let (Some(ch), Ok(rt)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(async move { ch.close().await });
        }
    }
}

/// What one attempt ended with.
enum Attempt {
    Done(Result<()>),
    /// Try again (counts against the retry budget), after this error on this host.
    Retry(String, AmqpError),
    /// Try again at once, without counting: another message's refusal closed the channel
    /// this one was in flight on, or the exchange was gone and is to be declared again.
    Again,
    /// The broker refused the message (`basic.nack`): publish it again for a moment.
    Nacked,
}

impl Publisher {
    pub(crate) fn new(link: Arc<Link>) -> Self {
        let compression = match link.opts.kombu_compression.as_deref() {
            Some("gzip" | "zlib") => Some("application/x-gzip"),
            Some("bz2" | "bzip2" | "bzip") => Some("application/x-bz2"),
            _ => None,
        };
        Self {
            link,
            exchanges: std::sync::Mutex::new(HashSet::new()),
            session: Mutex::new(None),
            blocked: std::sync::Mutex::new(None),
            closed: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            compression,
        }
    }

    fn blocked_slot(&self) -> std::sync::MutexGuard<'_, Option<watch::Receiver<Option<String>>>> {
        self.blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The broker's reason while it blocks publishing on this transport's connection; answers
    /// at once, also while a reconnect is under way (`None` then: no connection, no block).
    pub(crate) fn blocked(&self) -> Option<String> {
        self.blocked_slot()
            .as_ref()
            .and_then(|rx| rx.borrow().clone())
    }

    async fn session(&self) -> std::result::Result<Arc<Session>, (String, AmqpError)> {
        if self.closed.load(Ordering::Acquire) {
            return Err((self.link.current(), AmqpError::Closed));
        }
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref()
            && s.conn.error().is_none()
        {
            return Ok(s.clone());
        }
        if slot.take().is_some() {
            self.lost.store(true, Ordering::Relaxed);
        }
        let (host, conn) = self.link.connect().await;
        let conn = conn.map_err(|e| (host.clone(), e))?;
        let publish = conn.channel().await.map_err(|e| (host.clone(), e))?;
        publish
            .confirm_select()
            .await
            .map_err(|e| (host.clone(), e))?;
        let session = Arc::new(Session {
            conn,
            host,
            publish: std::sync::Mutex::new(publish),
            declare: Mutex::new(None),
            declared: Mutex::new(HashSet::new()),
            renewing: Mutex::new(()),
        });
        *self.blocked_slot() = Some(session.conn.watch_blocked());
        *slot = Some(session.clone());
        if self.lost.swap(false, Ordering::Relaxed) {
            crate::stats::reconnect("publisher");
        }
        Ok(session)
    }

    async fn drop_session(&self, session: &Arc<Session>) {
        let mut slot = self.session.lock().await;
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, session)) {
            *slot = None;
            *self.blocked_slot() = None;
            self.lost.store(true, Ordering::Relaxed);
            self.link.lost(&session.host);
        }
        drop(slot);
        let conn = session.conn.clone();
        tokio::spawn(async move { conn.close().await });
    }

    /// Replaces a publish channel the broker closed, and forgets what was declared (an
    /// auto-delete exchange may be gone).
    async fn renew_publish_channel(
        &self,
        session: &Session,
        dead: &Channel,
    ) -> std::result::Result<(), AmqpError> {
        session.declared.lock().await.clear();
        self.exchanges().clear();
        let _renewing = session.renewing.lock().await;
        if !session.publish_channel().same(dead) {
            return Ok(());
        }
        let fresh = session.conn.channel().await?;
        fresh.confirm_select().await?;
        *session
            .publish
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// Runs `declare` on the session's declaration channel.
    async fn declare_on<F, Fut>(
        &self,
        session: &Session,
        declare: F,
    ) -> std::result::Result<(), AmqpError>
    where
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<(), AmqpError>>,
    {
        let mut slot = session.declare.lock().await;
        let ch = match slot.as_ref().filter(|c| c.error().is_none()) {
            Some(c) => c.clone(),
            None => {
                let c = session.conn.channel().await?;
                *slot = Some(c.clone());
                c
            }
        };
        // Held across the declaration: a refusal closes the channel, and a concurrent
        // declaration must not be sent on it meanwhile. Bounded: a declaration can wait on a
        // frozen cluster member; then the channel is given up.
        let result = match tokio::time::timeout(CONFIRM_TIMEOUT, declare(ch.clone())).await {
            Ok(r) => r,
            Err(_) => {
                *slot = None;
                tokio::spawn(async move { ch.close().await });
                Err(AmqpError::Timeout("a declaration"))
            }
        };
        drop(slot);
        result
    }

    async fn ensure_declared(
        &self,
        session: &Session,
        declare: &Declare,
    ) -> std::result::Result<(), AmqpError> {
        let key = match declare {
            Declare::Nothing => return Ok(()),
            Declare::Exchange(ex) => {
                if self.exchanges().contains(&ex.name) {
                    return Ok(());
                }
                String::new()
            }
            Declare::Queue(q) => format!(
                "{} {:?}",
                q.name,
                q.binding.as_ref().map(|(e, k)| (&e.name, k))
            ),
        };
        if !key.is_empty() && session.declared.lock().await.contains(&key) {
            return Ok(());
        }
        match declare {
            Declare::Nothing => {}
            Declare::Exchange(ex) => {
                let declared = self
                    .declare_on(session, |ch| async move {
                        super::declare_exchange(&ch, ex).await
                    })
                    .await;
                match declared {
                    Ok(()) => {}
                    Err(e) if e.is_durable_mismatch() => {
                        tracing::warn!(exchange = ex.name, error = %e, "Force creating a non durable exchange.");
                        let mut fallback = ex.clone();
                        fallback.durable = false;
                        let fallback = &fallback;
                        self.declare_on(session, |ch| async move {
                            super::declare_exchange(&ch, fallback).await
                        })
                        .await?;
                    }
                    Err(e) => return Err(e),
                }
                self.exchanges().insert(ex.name.clone());
                return Ok(());
            }
            Declare::Queue(q) => {
                self.declare_on(
                    session,
                    |ch| async move { super::declare_queue(&ch, q).await },
                )
                .await?;
            }
        }
        session.declared.lock().await.insert(key);
        Ok(())
    }

    fn exchanges(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.exchanges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn properties(&self, expiration: Option<u64>) -> Properties {
        let mut headers = FieldTable::new();
        if let Some(c) = self.compression {
            headers.insert("compression", FieldValue::str(c));
        }
        Properties {
            content_type: Some("application/json".into()),
            content_encoding: Some("utf-8".into()),
            headers: Some(headers),
            delivery_mode: Some(2),
            priority: Some(0),
            // RabbitMQ takes at most 2^32-1 ms.
            expiration: expiration.map(|ms| ms.min(u64::from(u32::MAX)).to_string()),
            ..Properties::default()
        }
    }

    fn compress<'b>(&self, body: &'b [u8]) -> Result<Cow<'b, [u8]>> {
        let out = match self.compression {
            None => return Ok(Cow::Borrowed(body)),
            Some("application/x-gzip") => {
                let mut z =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                z.write_all(body).and_then(|()| z.finish())
            }
            Some(_) => {
                let mut z = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
                z.write_all(body).and_then(|()| z.finish())
            }
        };
        out.map(Cow::Owned).map_err(|e| {
            Error::with_source(ErrorKind::Serialization, "cannot compress the message", e)
        })
    }

    async fn attempt(&self, msg: &Outgoing, body: &[u8], retry: Retry) -> Attempt {
        let session = match self.session().await {
            Ok(s) => s,
            Err((host, e)) if e.is_fatal() || matches!(e, AmqpError::Closed) => {
                return Attempt::Done(Err(match e {
                    AmqpError::Closed => Error::shut_down("the transport has been cleaned up"),
                    e => give_up(&host, retry, &e),
                }));
            }
            Err((host, e)) => return Attempt::Retry(host, e),
        };
        if let Some(reason) = session.conn.blocked() {
            if retry != Retry::Forever {
                return Attempt::Done(Err(Error::new(
                    ErrorKind::Blocked,
                    format!("the broker on {} blocks publishing: {reason}", session.host),
                )));
            }
            tracing::warn!(
                host = session.host,
                reason,
                "the broker blocks publishing; waiting"
            );
            let since = crate::stats::started();
            let mut watch = session.conn.watch_blocked();
            tokio::select! {
                _ = watch.wait_for(Option::is_none) => {}
                _ = session.conn.closed() => {}
            }
            crate::stats::blocked(since);
        }
        if let Err(e) = self.ensure_declared(&session, &msg.declare).await {
            return if e.is_connection_level() {
                self.drop_session(&session).await;
                Attempt::Retry(session.host.clone(), e)
            } else {
                // PRECONDITION_FAILED and the like: retrying cannot help.
                Attempt::Done(Err(give_up(&session.host, retry, &e)))
            };
        }
        let own = body.len() > OWN_CHANNEL_ABOVE;
        // A large message's own channel is closed however this attempt ends, cancelled too.
        let mut own_channel = OwnChannel(None);
        let ch = if own {
            match Self::own_channel(&session).await {
                Ok(c) => {
                    own_channel.0 = Some(c.clone());
                    c
                }
                Err(e) => {
                    if e.is_connection_level() {
                        self.drop_session(&session).await;
                    }
                    return Attempt::Retry(session.host.clone(), e);
                }
            }
        } else {
            session.publish_channel()
        };
        let props = self.properties(msg.expiration);
        let since = crate::stats::started();
        let sent = ch.publish(&msg.exchange, &msg.routing_key, msg.mandatory, &props, body);
        tokio::pin!(sent);
        // Time to write the body counts too (a second per MiB), and time the broker blocks
        // publishing does not: its confirm comes once it unblocks.
        let limit = CONFIRM_TIMEOUT + Duration::from_secs((body.len() >> 20) as u64);
        let result = loop {
            match tokio::time::timeout(limit, &mut sent).await {
                Ok(r) => break r,
                Err(_) if session.conn.blocked().is_some() => {}
                Err(_) => {
                    // A broker that answers heartbeats but never confirms (a quorum queue
                    // without a majority, say): try again within the budget rather than
                    // wait forever.
                    return Attempt::Retry(
                        session.host.clone(),
                        AmqpError::Timeout("waiting for the broker's confirm"),
                    );
                }
            }
        };
        if result.is_ok() {
            crate::stats::confirm(since);
        }
        if own {
            return match result {
                Err(e) if e.is_connection_level() => {
                    self.drop_session(&session).await;
                    Attempt::Retry(session.host.clone(), e)
                }
                Err(e) => match size_limit_refusal(&e) {
                    Some(max) => Attempt::Done(Err(too_large(body.len(), max))),
                    None if e.code() == Some(404) => {
                        self.exchanges().remove(&msg.exchange);
                        session.declared.lock().await.clear();
                        Attempt::Again
                    }
                    None => Attempt::Done(Err(give_up(&session.host, retry, &e))),
                },
                Ok(c) => Self::verdict(msg, c),
            };
        }
        match result {
            Ok(c) => Self::verdict(msg, c),
            Err(AmqpError::Invalid(e)) => {
                Attempt::Done(Err(Error::config(format!("cannot publish: {e}"))))
            }
            Err(e) if e.is_connection_level() => {
                self.drop_session(&session).await;
                Attempt::Retry(session.host.clone(), e)
            }
            // The exchange vanished (an auto-delete fanout exchange whose servers all left, a
            // non-durable one after a broker restart): declare it again and publish again.
            Err(e) if e.code() == Some(404) => {
                match self.renew_publish_channel(&session, &ch).await {
                    Ok(()) => Attempt::Again,
                    Err(e2) => {
                        self.drop_session(&session).await;
                        Attempt::Retry(session.host.clone(), e2)
                    }
                }
            }
            Err(e) => {
                let _ = self.renew_publish_channel(&session, &ch).await;
                match size_limit_refusal(&e) {
                    Some(max) if body.len() > max => Attempt::Done(Err(too_large(body.len(), max))),
                    // Another message was too large: this one goes out again.
                    Some(_) => Attempt::Again,
                    None => Attempt::Done(Err(give_up(&session.host, retry, &e))),
                }
            }
        }
    }

    /// A channel in confirm mode for one large message.
    async fn own_channel(session: &Session) -> std::result::Result<Channel, AmqpError> {
        let ch = session.conn.channel().await?;
        ch.confirm_select().await?;
        Ok(ch)
    }

    /// What the broker's confirm means for `msg`.
    fn verdict(msg: &Outgoing, confirm: Confirm) -> Attempt {
        match confirm {
            Confirm::Ack => Attempt::Done(Ok(())),
            Confirm::Returned { code, text } => Attempt::Done(Err(Error::undeliverable(
                msg.exchange.as_str(),
                msg.routing_key.as_str(),
                format!(
                    "no queue took the message for exchange {:?} and routing key {:?} ({code} {text})",
                    msg.exchange, msg.routing_key
                ),
            ))),
            // A refusal, or a verdict of a later client version: not taken, so sent again.
            _ => Attempt::Nacked,
        }
    }

    /// Publishes `msg`, reconnecting as `retry` allows.
    ///
    /// # Errors
    ///
    /// `Undeliverable` for a mandatory message no queue took; `DeliveryFailure` once retries
    /// run out, when the broker refuses a declaration, or when it keeps refusing (nacking)
    /// the message for [`NACK_WINDOW`], whatever `retry` says; `Blocked` when the broker blocks publishing
    /// and the retry budget is finite; `AccessRefused` for bad credentials; `ShutDown` after
    /// cleanup.
    pub(crate) async fn publish(&self, msg: &Outgoing, retry: Retry) -> Result<()> {
        let body = self.compress(&msg.body)?;
        if body.len() > MAX_MESSAGE_SIZE {
            return Err(too_large(body.len(), MAX_MESSAGE_SIZE));
        }
        let mut failures = 0u32;
        let mut nacked: Option<(Instant, u32)> = None;
        let mut again = 0u32;
        loop {
            let (host, e) = match self.attempt(msg, &body, retry).await {
                Attempt::Done(r) => return r,
                Attempt::Again if again < 5 => {
                    again += 1;
                    continue;
                }
                Attempt::Again => (
                    self.link.current(),
                    AmqpError::Protocol(
                        "the broker keeps closing the publish channel (a missing exchange, or other messages' size)".into(),
                    ),
                ),
                Attempt::Nacked => {
                    let (since, nacks) = nacked.get_or_insert_with(|| (Instant::now(), 0));
                    *nacks += 1;
                    let waited = since.elapsed();
                    if waited >= NACK_WINDOW {
                        return Err(Error::new(
                            ErrorKind::DeliveryFailure,
                            format!(
                                "the broker refused the message for exchange {:?} and routing key {:?} (basic.nack, {nacks} times in {:.1} s): a queue it routes to is full with overflow = reject-publish, or a quorum queue has no leader",
                                msg.exchange,
                                msg.routing_key,
                                waited.as_secs_f64()
                            ),
                        ));
                    }
                    if *nacks == 1 {
                        tracing::warn!(
                            exchange = msg.exchange,
                            routing_key = msg.routing_key,
                            "the broker refused (nacked) a message; publishing it again for up to {} s",
                            NACK_WINDOW.as_secs()
                        );
                    }
                    tokio::time::sleep(nack_backoff(*nacks).min(NACK_WINDOW - waited)).await;
                    continue;
                }
                Attempt::Retry(host, e) => (host, e),
            };
            if !retry.allows(failures) {
                return Err(give_up(&host, retry, &e));
            }
            let wait = backoff::delay(&self.link.opts, failures);
            tracing::warn!(
                host,
                error = %e,
                "cannot publish to the AMQP server; trying again in {:.1} s",
                wait.as_secs_f64()
            );
            tokio::time::sleep(wait).await;
            failures += 1;
        }
    }

    /// Closes the connection; later publishes fail with `ShutDown`.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(s) = self.session.lock().await.take() {
            s.conn.close().await;
        }
    }
}
