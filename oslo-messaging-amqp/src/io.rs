//! The I/O task: one per connection, the only owner of its socket.
//!
//! It reads and writes concurrently in one `select!` loop (a full socket never stops it from
//! reading `connection.blocked`, acks or heartbeats), demultiplexes frames to channels,
//! resolves RPC replies in order, tracks publisher confirms per channel (pipelined: any number
//! of publishes can wait for their confirm at once), matches `basic.return` to the publish it
//! returns, and sends heartbeats. Callers encode frames in their own task and hand them over
//! as [`Command`]s; nothing they do can block the I/O task.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::channel::{ChanShared, Confirm, ConsumerEvent, Delivery, return_key};
use crate::connect::AsyncReadWrite;
use crate::connection::{CLOSE_TIMEOUT, FirstError, Shared};
use crate::error::{Error, io_error};
use crate::frame::{
    self, ContentHeader, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, Method, RawFrame,
};

/// Read and write buffers shrink back to this after a burst made them larger.
const BUFFER_KEEP: usize = 256 * 1024;
/// Stop taking commands while this much is waiting to be written.
const WRITE_HIGH_WATER: usize = 4 << 20;
/// Largest message body accepted (RabbitMQ's own hard maximum is 512 MiB).
const MAX_BODY: u64 = 512 << 20;

/// What a handle asks of the I/O task.
pub(crate) enum Command {
    OpenChannel {
        reply: ChannelOpened,
    },
    Rpc {
        channel: u16,
        frame: Vec<u8>,
        expect: (u16, u16),
        reply: oneshot::Sender<Result<Method, Error>>,
        consumer: Option<mpsc::UnboundedSender<ConsumerEvent>>,
        starts_confirms: bool,
    },
    Publish {
        channel: u16,
        frames: Vec<u8>,
        confirm: Option<(oneshot::Sender<Confirm>, u64)>,
    },
    Send {
        channel: u16,
        frame: Vec<u8>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
    CloseChannel {
        channel: u16,
        /// The channel's identity: its number may already belong to a newer channel.
        shared: Arc<ChanShared>,
        reply: oneshot::Sender<()>,
    },
}

/// What one write-or-flush step did.
enum Written {
    Bytes(usize),
    Flushed,
}

async fn write_or_flush<W: AsyncWrite + Unpin>(
    writer: &mut W,
    pending: &[u8],
    write: bool,
) -> std::io::Result<Written> {
    if write {
        writer.write(pending).await.map(Written::Bytes)
    } else {
        writer.flush().await.map(|()| Written::Flushed)
    }
}

/// Where a new channel's number and shared state go once the broker opened it.
type ChannelOpened = oneshot::Sender<Result<(u16, Arc<ChanShared>), Error>>;

struct PendingRpc {
    expect: (u16, u16),
    reply: Option<oneshot::Sender<Result<Method, Error>>>,
    consumer: Option<mpsc::UnboundedSender<ConsumerEvent>>,
    open: Option<ChannelOpened>,
}

struct PendingConfirm {
    tag: u64,
    key: u64,
    tx: oneshot::Sender<Confirm>,
    returned: Option<(u16, String)>,
}

enum IncomingKind {
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

struct Incoming {
    kind: IncomingKind,
    header: Option<ContentHeader>,
    body: Vec<u8>,
}

struct ChanState {
    shared: Arc<ChanShared>,
    rpcs: VecDeque<PendingRpc>,
    consumers: HashMap<String, mpsc::UnboundedSender<ConsumerEvent>>,
    confirm_mode: bool,
    next_tag: u64,
    confirms: VecDeque<PendingConfirm>,
    incoming: Option<Incoming>,
    close_waiters: Vec<oneshot::Sender<()>>,
    closing: bool,
}

impl ChanState {
    fn new() -> Self {
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
    fn fail(&mut self, e: &Error) {
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

    fn settle(&mut self, delivery_tag: u64, multiple: bool, ack: bool) {
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

pub(crate) struct IoTask {
    reader: tokio::io::ReadHalf<Box<dyn AsyncReadWrite>>,
    writer: tokio::io::WriteHalf<Box<dyn AsyncReadWrite>>,
    /// Everything written, not yet flushed (TLS buffers records until flushed).
    needs_flush: bool,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    cmd_rx: mpsc::Receiver<Command>,
    channels: HashMap<u16, ChanState>,
    /// The highest channel number the broker allows.
    channel_max: u16,
    /// Where the search for a free channel number starts: numbers go round, so a number just
    /// given back is not reused while the broker may still be closing it.
    next_channel: u16,
    frame_max: usize,
    heartbeat: Option<Duration>,
    heartbeat_rate: u16,
    last_read: Instant,
    last_write: Instant,
    shared: Arc<Shared>,
    /// Set when this side sent `connection.close`: who waits, and until when.
    closing: Option<(Vec<oneshot::Sender<()>>, Instant)>,
}

enum Step {
    Continue,
    Exit(Error),
}

impl IoTask {
    pub(crate) fn new(
        stream: Box<dyn AsyncReadWrite>,
        cmd_rx: mpsc::Receiver<Command>,
        channel_max: u16,
        frame_max: usize,
        heartbeat: Option<Duration>,
        heartbeat_rate: u16,
        shared: Arc<Shared>,
    ) -> Self {
        let (reader, writer) = tokio::io::split(stream);
        Self {
            reader,
            writer,
            needs_flush: false,
            rbuf: Vec::with_capacity(64 * 1024),
            wbuf: Vec::with_capacity(64 * 1024),
            wpos: 0,
            cmd_rx,
            channels: HashMap::new(),
            channel_max,
            next_channel: 1,
            frame_max,
            heartbeat,
            heartbeat_rate,
            last_read: Instant::now(),
            last_write: Instant::now(),
            shared,
            closing: None,
        }
    }

    pub(crate) async fn run(mut self) {
        let tick_every = self.heartbeat.map_or(Duration::from_secs(1), |h| {
            (h / (2 * u32::from(self.heartbeat_rate))).max(Duration::from_millis(100))
        });
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reason = loop {
            let want_write = self.wpos < self.wbuf.len();
            let take_commands = self.wbuf.len() < WRITE_HIGH_WATER && self.closing.is_none();
            let step = tokio::select! {
                biased;
                r = self.reader.read_buf(&mut self.rbuf) => match r {
                    Ok(0) => Step::Exit(Error::Io(Arc::new(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the broker closed the socket")))),
                    Ok(_) => {
                        self.last_read = Instant::now();
                        self.handle_input()
                    }
                    Err(e) => Step::Exit(io_error(e)),
                },
                // Writing and flushing share one branch (both need the writer); a pending flush
                // (TLS under back-pressure) never stops the reads.
                w = write_or_flush(&mut self.writer, &self.wbuf[self.wpos..], want_write),
                    if want_write || self.needs_flush => match w {
                    Ok(Written::Bytes(0)) => Step::Exit(Error::Io(Arc::new(std::io::Error::new(std::io::ErrorKind::WriteZero, "the socket refused more data")))),
                    Ok(Written::Bytes(n)) => {
                        self.wpos += n;
                        self.last_write = Instant::now();
                        if self.wpos == self.wbuf.len() {
                            self.wbuf.clear();
                            // A burst (a backlog while the broker was slow) leaves no lasting
                            // capacity behind.
                            if self.wbuf.capacity() > BUFFER_KEEP {
                                self.wbuf.shrink_to(BUFFER_KEEP);
                            }
                            self.wpos = 0;
                            self.needs_flush = true;
                        }
                        Step::Continue
                    }
                    Ok(Written::Flushed) => {
                        self.needs_flush = false;
                        Step::Continue
                    }
                    Err(e) => Step::Exit(io_error(e)),
                },
                cmd = self.cmd_rx.recv(), if take_commands => match cmd {
                    Some(c) => {
                        let mut step = self.handle_command(c);
                        while matches!(step, Step::Continue) && self.wbuf.len() < WRITE_HIGH_WATER && self.closing.is_none() {
                            match self.cmd_rx.try_recv() {
                                Ok(c) => step = self.handle_command(c),
                                Err(_) => break,
                            }
                        }
                        step
                    }
                    // Every handle is gone: close politely.
                    None => self.start_close(None),
                },
                _ = tick.tick() => self.on_tick(),
            };
            if self.rbuf.capacity() - self.rbuf.len() < 16 * 1024 {
                self.rbuf.reserve(64 * 1024);
            }
            if let Step::Exit(e) = step {
                break e;
            }
        };
        // Everyone waiting hears of the end at once, before any attempt to say goodbye.
        self.fail_all(&reason);
        // A peer that stopped answering, or a socket that failed, takes nothing more.
        if matches!(reason, Error::HeartbeatTimeout | Error::Io(_)) {
            return;
        }
        // Push out what is queued (a close-ok, say), briefly.
        if self.wpos < self.wbuf.len() {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let _ = self.writer.write_all(&self.wbuf[self.wpos..]).await;
                let _ = self.writer.flush().await;
            })
            .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.writer.shutdown()).await;
    }

    fn fail_all(&mut self, e: &Error) {
        if !matches!(e, Error::Closed) {
            tracing::debug!(error = %e, "AMQP connection ended");
        }
        self.shared.fail(e.clone());
        self.shared.blocked.send_replace(None);
        for (_, mut ch) in self.channels.drain() {
            ch.fail(e);
        }
        if let Some((waiters, _)) = self.closing.take() {
            for w in waiters {
                let _ = w.send(());
            }
        }
        self.cmd_rx.close();
        while let Ok(cmd) = self.cmd_rx.try_recv() {
            reject_command(cmd, e);
        }
    }

    /// Cancels every consumer whose receiver was dropped (`basic.cancel`, its `cancel-ok`
    /// awaited like any reply), so the broker stops delivering to it; what it still sends
    /// meanwhile is rejected and requeued.
    fn cancel_abandoned(&mut self) {
        if self.closing.is_some() {
            return;
        }
        for (&id, ch) in &mut self.channels {
            if ch.closing {
                continue;
            }
            let gone: Vec<String> = ch
                .consumers
                .iter()
                .filter(|(_, tx)| tx.is_closed())
                .map(|(tag, _)| tag.clone())
                .collect();
            for consumer_tag in gone {
                ch.consumers.remove(&consumer_tag);
                tracing::debug!(
                    channel = id,
                    consumer_tag,
                    "cancelling a consumer whose receiver was dropped"
                );
                ch.rpcs.push_back(PendingRpc {
                    expect: (60, 31),
                    reply: None,
                    consumer: None,
                    open: None,
                });
                // Small and fixed: encoding cannot fail.
                let _ = frame::write_method(
                    &mut self.wbuf,
                    id,
                    &Method::BasicCancel {
                        consumer_tag,
                        no_wait: false,
                    },
                );
            }
        }
    }

    fn on_tick(&mut self) -> Step {
        self.cancel_abandoned();
        let now = Instant::now();
        if let Some((_, deadline)) = &self.closing
            && now >= *deadline
        {
            return Step::Exit(Error::Closed);
        }
        let Some(h) = self.heartbeat else {
            return Step::Continue;
        };
        if now.duration_since(self.last_read) > h * 2 {
            return Step::Exit(Error::HeartbeatTimeout);
        }
        if now.duration_since(self.last_write) >= h / 2 && self.wpos >= self.wbuf.len() {
            frame::write_heartbeat(&mut self.wbuf);
        }
        Step::Continue
    }

    fn write_method(&mut self, channel: u16, method: &Method) {
        // Methods the task writes itself are small and fixed: encoding cannot fail.
        let _ = frame::write_method(&mut self.wbuf, channel, method);
    }

    fn start_close(&mut self, waiter: Option<oneshot::Sender<()>>) -> Step {
        match &mut self.closing {
            Some((waiters, _)) => waiters.extend(waiter),
            None => {
                self.write_method(
                    0,
                    &Method::ConnectionClose {
                        code: 200,
                        text: "Goodbye".into(),
                        class_id: 0,
                        method_id: 0,
                    },
                );
                self.closing = Some((waiter.into_iter().collect(), Instant::now() + CLOSE_TIMEOUT));
            }
        }
        Step::Continue
    }

    /// A channel number within the negotiated `channel_max`, round-robin from the last one.
    fn free_channel(&mut self) -> Option<u16> {
        let max = self.channel_max;
        let start = self.next_channel.clamp(1, max);
        let id = (start..=max)
            .chain(1..start)
            .find(|id| !self.channels.contains_key(id))?;
        self.next_channel = if id == max { 1 } else { id + 1 };
        Some(id)
    }

    fn handle_command(&mut self, cmd: Command) -> Step {
        match cmd {
            Command::OpenChannel { reply } => {
                let Some(id) = self.free_channel() else {
                    let _ = reply.send(Err(Error::Protocol(format!(
                        "all {} channel numbers are in use",
                        self.channel_max
                    ))));
                    return Step::Continue;
                };
                let mut ch = ChanState::new();
                ch.rpcs.push_back(PendingRpc {
                    expect: (20, 11),
                    reply: None,
                    consumer: None,
                    open: Some(reply),
                });
                self.channels.insert(id, ch);
                self.write_method(id, &Method::ChannelOpen {});
            }
            Command::Rpc {
                channel,
                frame,
                expect,
                reply,
                consumer,
                starts_confirms,
            } => match self.channels.get_mut(&channel) {
                Some(ch) if !ch.closing => {
                    if starts_confirms && !ch.confirm_mode {
                        // Publishes after confirm.select are numbered from 1.
                        ch.confirm_mode = true;
                        ch.next_tag = 1;
                    }
                    ch.rpcs.push_back(PendingRpc {
                        expect,
                        reply: Some(reply),
                        consumer,
                        open: None,
                    });
                    self.wbuf.extend_from_slice(&frame);
                }
                _ => {
                    let _ = reply.send(Err(Error::Closed));
                }
            },
            Command::Publish {
                channel,
                frames,
                confirm,
            } => match self.channels.get_mut(&channel) {
                Some(ch) if !ch.closing => {
                    if ch.confirm_mode {
                        let tag = ch.next_tag;
                        ch.next_tag += 1;
                        if let Some((tx, key)) = confirm {
                            ch.confirms.push_back(PendingConfirm {
                                tag,
                                key,
                                tx,
                                returned: None,
                            });
                        }
                    } else if let Some((tx, _)) = confirm {
                        let _ = tx.send(Confirm::Ack);
                    }
                    self.wbuf.extend_from_slice(&frames);
                }
                _ => {}
            },
            Command::Send { channel, frame } => {
                if self.channels.get(&channel).is_some_and(|c| !c.closing) {
                    self.wbuf.extend_from_slice(&frame);
                }
            }
            Command::Close { reply } => return self.start_close(Some(reply)),
            Command::CloseChannel {
                channel,
                shared,
                reply,
            } => match self
                .channels
                .get_mut(&channel)
                .filter(|ch| Arc::ptr_eq(&ch.shared, &shared))
            {
                Some(ch) => {
                    ch.close_waiters.push(reply);
                    if !ch.closing {
                        ch.closing = true;
                        self.write_method(
                            channel,
                            &Method::ChannelClose {
                                code: 200,
                                text: "Goodbye".into(),
                                class_id: 0,
                                method_id: 0,
                            },
                        );
                    }
                }
                None => {
                    let _ = reply.send(());
                }
            },
        }
        Step::Continue
    }

    fn handle_input(&mut self) -> Step {
        let mut used_total = 0;
        let mut step = Step::Continue;
        loop {
            let parsed = match frame::parse_frame(&self.rbuf[used_total..], self.frame_max) {
                Ok(Some((f, used))) => Some((f.kind, f.channel, used)),
                Ok(None) => None,
                Err(e) => {
                    step = self.protocol_error(Error::from(e));
                    break;
                }
            };
            let Some((kind, channel, used)) = parsed else {
                break;
            };
            let start = used_total;
            used_total += used;
            // Re-borrow the frame to hand its payload to the handler.
            let buf = std::mem::take(&mut self.rbuf);
            let frame = RawFrame {
                kind,
                channel,
                payload: &buf[start + 7..start + used - 1],
            };
            step = self.handle_frame(&frame);
            self.rbuf = buf;
            if matches!(step, Step::Exit(_)) {
                break;
            }
        }
        self.rbuf.drain(..used_total);
        if self.rbuf.is_empty() && self.rbuf.capacity() > 4 * BUFFER_KEEP {
            self.rbuf.shrink_to(BUFFER_KEEP);
        }
        step
    }

    fn protocol_error(&mut self, e: Error) -> Step {
        tracing::error!(error = %e, "closing the AMQP connection after a protocol error");
        self.write_method(
            0,
            &Method::ConnectionClose {
                code: 505,
                text: "UNEXPECTED_FRAME".into(),
                class_id: 0,
                method_id: 0,
            },
        );
        Step::Exit(e)
    }

    fn handle_frame(&mut self, f: &RawFrame<'_>) -> Step {
        match f.kind {
            FRAME_HEARTBEAT => Step::Continue,
            FRAME_METHOD => match Method::decode(f.payload) {
                Ok(m) if f.channel == 0 => self.on_connection_method(m),
                Ok(m) => self.on_channel_method(f.channel, m),
                Err(e) => self.protocol_error(e.into()),
            },
            FRAME_HEADER => match ContentHeader::decode(f.payload) {
                Ok(h) => self.on_header(f.channel, h),
                Err(e) => self.protocol_error(e.into()),
            },
            FRAME_BODY => self.on_body(f.channel, f.payload),
            other => self.protocol_error(Error::Protocol(format!("unexpected frame type {other}"))),
        }
    }

    fn on_connection_method(&mut self, m: Method) -> Step {
        match m {
            Method::ConnectionClose { code, text, .. } => {
                self.write_method(0, &Method::ConnectionCloseOk {});
                if code == 320 {
                    tracing::warn!(code, text, "the broker closed the connection");
                }
                Step::Exit(Error::ConnectionClosed { code, text })
            }
            Method::ConnectionCloseOk {} if self.closing.is_some() => Step::Exit(Error::Closed),
            Method::ConnectionBlocked { reason } => {
                tracing::warn!(reason, "the broker blocked publishing on this connection");
                self.shared.blocked.send_replace(Some(reason));
                Step::Continue
            }
            Method::ConnectionUnblocked {} => {
                tracing::info!("the broker unblocked publishing on this connection");
                self.shared.blocked.send_replace(None);
                Step::Continue
            }
            other => self.protocol_error(Error::Protocol(format!(
                "unexpected method {:?} on channel 0",
                other.id()
            ))),
        }
    }

    fn on_channel_method(&mut self, channel: u16, m: Method) -> Step {
        let Some(ch) = self.channels.get_mut(&channel) else {
            // A late frame for a channel we already forgot (after our close): ignore it.
            return Step::Continue;
        };
        if ch.incoming.is_some() {
            return self
                .protocol_error(Error::Protocol("a method arrived inside a message".into()));
        }
        match m {
            Method::ChannelClose {
                code,
                text,
                class_id,
                method_id,
            } => {
                let e = Error::ChannelClosed {
                    code,
                    text,
                    class_id,
                    method_id,
                };
                tracing::debug!(channel, error = %e, "the broker closed a channel");
                if let Some(mut ch) = self.channels.remove(&channel) {
                    ch.fail(&e);
                }
                self.write_method(channel, &Method::ChannelCloseOk {});
            }
            Method::ChannelCloseOk {} => {
                if let Some(mut ch) = self.channels.remove(&channel) {
                    ch.fail(&Error::Closed);
                }
            }
            Method::ChannelFlow { active } => {
                self.write_method(channel, &Method::ChannelFlowOk { active })
            }
            Method::BasicDeliver {
                consumer_tag,
                delivery_tag,
                ..
            } => {
                ch.incoming = Some(Incoming {
                    kind: IncomingKind::Deliver {
                        consumer_tag,
                        delivery_tag,
                    },
                    header: None,
                    body: Vec::new(),
                });
            }
            Method::BasicReturn {
                code,
                text,
                routing_key,
                ..
            } => {
                ch.incoming = Some(Incoming {
                    kind: IncomingKind::Return {
                        code,
                        text,
                        routing_key,
                    },
                    header: None,
                    body: Vec::new(),
                });
            }
            Method::BasicAck {
                delivery_tag,
                multiple,
            } => ch.settle(delivery_tag, multiple, true),
            Method::BasicNack {
                delivery_tag,
                multiple,
                ..
            } => ch.settle(delivery_tag, multiple, false),
            Method::BasicCancel {
                consumer_tag,
                no_wait,
            } => {
                if let Some(tx) = ch.consumers.remove(&consumer_tag) {
                    let _ = tx.send(ConsumerEvent::Cancelled(consumer_tag.clone()));
                }
                if !no_wait {
                    self.write_method(channel, &Method::BasicCancelOk { consumer_tag });
                }
            }
            reply => {
                let Some(mut pending) = ch.rpcs.pop_front() else {
                    return self.protocol_error(Error::Protocol(format!(
                        "unexpected method {:?} on channel {channel}",
                        reply.id()
                    )));
                };
                if reply.id() != pending.expect {
                    return self.protocol_error(Error::Protocol(format!(
                        "expected method {:?}, got {:?} on channel {channel}",
                        pending.expect,
                        reply.id()
                    )));
                }
                match &reply {
                    Method::BasicConsumeOk { consumer_tag } => {
                        if let Some(tx) = pending.consumer.take() {
                            ch.consumers.insert(consumer_tag.clone(), tx);
                        }
                    }
                    Method::BasicCancelOk { consumer_tag } => {
                        ch.consumers.remove(consumer_tag);
                    }
                    _ => {}
                }
                if let Some(open) = pending.open.take() {
                    let _ = open.send(Ok((channel, ch.shared.clone())));
                }
                if let Some(r) = pending.reply.take() {
                    let _ = r.send(Ok(reply));
                }
            }
        }
        Step::Continue
    }

    fn on_header(&mut self, channel: u16, header: ContentHeader) -> Step {
        let ok = self
            .channels
            .get(&channel)
            .and_then(|c| c.incoming.as_ref())
            .is_some_and(|i| i.header.is_none());
        if !ok {
            return self.protocol_error(Error::Protocol("unexpected content header".into()));
        }
        if header.body_size > MAX_BODY {
            return self.protocol_error(Error::Protocol(format!(
                "message body of {} bytes exceeds the {MAX_BODY}-byte limit",
                header.body_size
            )));
        }
        let size = header.body_size;
        if let Some(incoming) = self
            .channels
            .get_mut(&channel)
            .and_then(|c| c.incoming.as_mut())
        {
            // Reserve at most a few frames' worth up front: the size is the peer's claim.
            incoming
                .body
                .reserve((size as usize).min(4 * self.frame_max.max(4096)));
            incoming.header = Some(header);
        }
        if size == 0 {
            self.complete(channel);
        }
        Step::Continue
    }

    fn on_body(&mut self, channel: u16, payload: &[u8]) -> Step {
        let Some(incoming) = self
            .channels
            .get_mut(&channel)
            .and_then(|c| c.incoming.as_mut())
        else {
            return self.protocol_error(Error::Protocol("unexpected content body".into()));
        };
        let Some(header) = &incoming.header else {
            return self.protocol_error(Error::Protocol("content body before its header".into()));
        };
        let size = header.body_size;
        incoming.body.extend_from_slice(payload);
        let have = incoming.body.len() as u64;
        if have > size {
            return self
                .protocol_error(Error::Protocol("content body longer than announced".into()));
        }
        if have == size {
            self.complete(channel);
        }
        Step::Continue
    }

    fn complete(&mut self, channel: u16) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        let Some(Incoming {
            kind,
            header: Some(header),
            body,
        }) = ch.incoming.take()
        else {
            return;
        };
        match kind {
            IncomingKind::Deliver {
                consumer_tag,
                delivery_tag,
            } => {
                let delivery = Delivery {
                    delivery_tag,
                    properties: header.properties,
                    body,
                };
                let refused = match ch.consumers.get(&consumer_tag) {
                    Some(tx) => tx
                        .send(ConsumerEvent::Delivery(consumer_tag.clone(), delivery))
                        .is_err(),
                    // Cancelled by us, and the broker had it on its way: give it back.
                    None => true,
                };
                if refused {
                    self.write_method(
                        channel,
                        &Method::BasicReject {
                            delivery_tag,
                            requeue: true,
                        },
                    );
                    self.cancel_abandoned();
                }
            }
            IncomingKind::Return {
                code,
                text,
                routing_key,
            } => {
                let key = return_key(&routing_key, &body);
                if let Some(c) = ch
                    .confirms
                    .iter_mut()
                    .find(|c| c.key == key && c.returned.is_none())
                {
                    c.returned = Some((code, text));
                } else {
                    tracing::debug!(
                        routing_key,
                        code,
                        "a returned message matched no pending publish"
                    );
                }
            }
        }
    }
}

fn reject_command(cmd: Command, e: &Error) {
    match cmd {
        Command::OpenChannel { reply } => {
            let _ = reply.send(Err(e.clone()));
        }
        Command::Rpc { reply, .. } => {
            let _ = reply.send(Err(e.clone()));
        }
        Command::Close { reply } | Command::CloseChannel { reply, .. } => {
            let _ = reply.send(());
        }
        Command::Publish { .. } | Command::Send { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    //! The I/O task against a scripted peer on a loopback socket: the protocol corners a real
    //! broker shows rarely or never on demand.

    use super::*;
    use crate::channel::{Channel, Consumer};
    use crate::frame::{FieldTable, Properties};
    use crate::{ConnectParams, Connection, Login};
    use testkit::metrics::rss_kib;
    use tokio::net::{TcpListener, TcpStream};

    /// The broker's side of one connection, driven by the test.
    struct Peer {
        s: TcpStream,
        buf: Vec<u8>,
    }

    impl Peer {
        /// Accepts a client, logs it in with `channel_max` and `heartbeat`, and returns both
        /// ends.
        async fn start(channel_max: u16, heartbeat: u16) -> (Self, Connection) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let login = Login::Plain {
                user: "u".into(),
                password: "p".into(),
            };
            let params = ConnectParams::new("127.0.0.1", port, login)
                .heartbeat(heartbeat)
                .connection_name("scripted");
            let client = tokio::spawn(async move { Connection::open(&params).await });
            let (s, _) = listener.accept().await.unwrap();
            let mut peer = Self { s, buf: Vec::new() };
            let mut header = [0u8; 8];
            peer.s.read_exact(&mut header).await.unwrap();
            assert_eq!(&header, b"AMQP\x00\x00\x09\x01");
            peer.send(
                0,
                &Method::ConnectionStart {
                    server_properties: FieldTable::new(),
                    mechanisms: "PLAIN".into(),
                    locales: "en_US".into(),
                },
            )
            .await;
            assert!(matches!(
                peer.method().await,
                (0, Method::ConnectionStartOk { .. })
            ));
            peer.send(
                0,
                &Method::ConnectionTune {
                    channel_max,
                    frame_max: 131_072,
                    heartbeat,
                },
            )
            .await;
            assert!(matches!(
                peer.method().await,
                (0, Method::ConnectionTuneOk { .. })
            ));
            assert!(matches!(
                peer.method().await,
                (0, Method::ConnectionOpen { .. })
            ));
            peer.send(0, &Method::ConnectionOpenOk {}).await;
            (peer, client.await.unwrap().unwrap())
        }

        async fn send(&mut self, channel: u16, m: &Method) {
            let mut out = Vec::new();
            frame::write_method(&mut out, channel, m).unwrap();
            self.s.write_all(&out).await.unwrap();
        }

        /// The next frame the client sent: kind, channel, payload.
        async fn frame(&mut self) -> (u8, u16, Vec<u8>) {
            loop {
                if let Some((f, used)) = frame::parse_frame(&self.buf, 0).unwrap() {
                    let out = (f.kind, f.channel, f.payload.to_vec());
                    self.buf.drain(..used);
                    return out;
                }
                let mut chunk = [0u8; 4096];
                let n = tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut chunk))
                    .await
                    .expect("the client sends something")
                    .unwrap();
                assert!(n > 0, "the client hung up");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }

        /// The next method the client sent (content and heartbeat frames skipped).
        async fn method(&mut self) -> (u16, Method) {
            loop {
                let (kind, channel, payload) = self.frame().await;
                if kind == FRAME_METHOD {
                    return (channel, Method::decode(&payload).unwrap());
                }
            }
        }

        /// Answers the client's `channel.open`; returns the channel number it chose.
        async fn open_channel(&mut self) -> u16 {
            let (id, m) = self.method().await;
            assert_eq!(m, Method::ChannelOpen {});
            self.send(id, &Method::ChannelOpenOk {}).await;
            id
        }
    }

    /// Opens a channel with the peer's help.
    async fn channel(peer: &mut Peer, conn: &Connection) -> Channel {
        let conn = conn.clone();
        let opening = tokio::spawn(async move { conn.channel().await });
        peer.open_channel().await;
        opening.await.unwrap().unwrap()
    }

    /// A publish in its own task, once the peer saw its method frame.
    async fn publish(
        peer: &mut Peer,
        ch: &Channel,
        mandatory: bool,
    ) -> tokio::task::JoinHandle<Confirm> {
        let ch = ch.clone();
        let task = tokio::spawn(async move {
            ch.publish("", "key", mandatory, &Properties::default(), b"body")
                .await
                .unwrap()
        });
        assert!(matches!(
            peer.method().await,
            (_, Method::BasicPublish { .. })
        ));
        task
    }

    #[tokio::test]
    async fn confirms_settle_one_by_one_and_several_at_once() {
        let (mut peer, conn) = Peer::start(10, 0).await;
        let ch = channel(&mut peer, &conn).await;
        let selecting = tokio::spawn({
            let ch = ch.clone();
            async move { ch.confirm_select().await }
        });
        let (id, m) = peer.method().await;
        assert_eq!(m, Method::ConfirmSelect { no_wait: false });
        peer.send(id, &Method::ConfirmSelectOk {}).await;
        selecting.await.unwrap().unwrap();
        let (one, two, three) = (
            publish(&mut peer, &ch, false).await,
            publish(&mut peer, &ch, false).await,
            publish(&mut peer, &ch, false).await,
        );
        // One ack for the first two; the third waits.
        peer.send(
            id,
            &Method::BasicAck {
                delivery_tag: 2,
                multiple: true,
            },
        )
        .await;
        assert_eq!(one.await.unwrap(), Confirm::Ack);
        assert_eq!(two.await.unwrap(), Confirm::Ack);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!three.is_finished());
        peer.send(
            id,
            &Method::BasicNack {
                delivery_tag: 3,
                multiple: false,
                requeue: false,
            },
        )
        .await;
        assert_eq!(three.await.unwrap(), Confirm::Nack);
    }

    #[tokio::test]
    async fn a_return_is_matched_to_its_mandatory_publish() {
        let (mut peer, conn) = Peer::start(10, 0).await;
        let ch = channel(&mut peer, &conn).await;
        let selecting = tokio::spawn({
            let ch = ch.clone();
            async move { ch.confirm_select().await }
        });
        let (id, _) = peer.method().await;
        peer.send(id, &Method::ConfirmSelectOk {}).await;
        selecting.await.unwrap().unwrap();
        let returned = publish(&mut peer, &ch, true).await;
        // basic.return, its content (the same routing key and body), then the ack.
        let mut out = Vec::new();
        let method = Method::BasicReturn {
            code: 312,
            text: "NO_ROUTE".into(),
            exchange: String::new(),
            routing_key: "key".into(),
        };
        frame::write_method(&mut out, id, &method).unwrap();
        frame::frame(&mut out, FRAME_HEADER, id, |b| {
            let mut w = frame::Writer::new(b);
            w.short(60);
            w.short(0);
            w.longlong(4);
            Properties::default().encode(&mut w)
        })
        .unwrap();
        frame::frame(&mut out, FRAME_BODY, id, |b| {
            b.extend_from_slice(b"body");
            Ok(())
        })
        .unwrap();
        peer.s.write_all(&out).await.unwrap();
        peer.send(
            id,
            &Method::BasicAck {
                delivery_tag: 1,
                multiple: false,
            },
        )
        .await;
        assert_eq!(
            returned.await.unwrap(),
            Confirm::Returned {
                code: 312,
                text: "NO_ROUTE".into()
            }
        );
    }

    #[tokio::test]
    async fn channel_numbers_go_round_and_run_out_cleanly() {
        let (mut peer, conn) = Peer::start(3, 0).await;
        let a = channel(&mut peer, &conn).await;
        let b = channel(&mut peer, &conn).await;
        assert_eq!((a.id(), b.id()), (1, 2));
        // A number given back is not reused at once: the broker may still be closing it.
        let closing = tokio::spawn({
            let a = a.clone();
            async move { a.close().await }
        });
        let (id, m) = peer.method().await;
        assert!(matches!(m, Method::ChannelClose { .. }));
        peer.send(id, &Method::ChannelCloseOk {}).await;
        closing.await.unwrap();
        let c = channel(&mut peer, &conn).await;
        assert_eq!(c.id(), 3);
        let d = channel(&mut peer, &conn).await;
        assert_eq!(d.id(), 1, "round the end, the first free number");
        let err = conn.channel().await.unwrap_err();
        assert!(
            matches!(&err, Error::Protocol(t) if t.contains("all 3 channel numbers")),
            "{err}"
        );
        assert!(a.error().is_some(), "a closed channel says so");
    }

    #[tokio::test]
    async fn a_dropped_consumer_is_cancelled_and_a_late_delivery_requeued() {
        let (mut peer, conn) = Peer::start(10, 0).await;
        let ch = channel(&mut peer, &conn).await;
        let consuming: tokio::task::JoinHandle<Consumer> = tokio::spawn({
            let ch = ch.clone();
            async move { ch.consume("q", "", false, FieldTable::new()).await.unwrap() }
        });
        let (id, m) = peer.method().await;
        assert!(matches!(m, Method::BasicConsume { .. }));
        peer.send(
            id,
            &Method::BasicConsumeOk {
                consumer_tag: "c1".into(),
            },
        )
        .await;
        let consumer = consuming.await.unwrap();
        assert_eq!(consumer.tag(), "c1");
        drop(consumer);
        assert_eq!(
            peer.method().await,
            (
                id,
                Method::BasicCancel {
                    consumer_tag: "c1".into(),
                    no_wait: true
                }
            )
        );
        // A delivery the broker had on its way goes back to the queue.
        let mut out = Vec::new();
        let deliver = Method::BasicDeliver {
            consumer_tag: "c1".into(),
            delivery_tag: 7,
            redelivered: false,
            exchange: String::new(),
            routing_key: "q".into(),
        };
        frame::write_method(&mut out, id, &deliver).unwrap();
        frame::frame(&mut out, FRAME_HEADER, id, |b| {
            let mut w = frame::Writer::new(b);
            w.short(60);
            w.short(0);
            w.longlong(0);
            Properties::default().encode(&mut w)
        })
        .unwrap();
        peer.s.write_all(&out).await.unwrap();
        assert_eq!(
            peer.method().await,
            (
                id,
                Method::BasicReject {
                    delivery_tag: 7,
                    requeue: true
                }
            )
        );
    }

    #[tokio::test]
    async fn silence_past_two_heartbeats_ends_the_connection() {
        let (_peer, conn) = Peer::start(10, 1).await;
        let started = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .expect("the connection ends");
        let took = started.elapsed();
        println!(
            "a silent peer detected after {:.2} s (heartbeat 1 s)",
            took.as_secs_f64()
        );
        assert!(matches!(err, Error::HeartbeatTimeout), "{err:?}");
        assert!(took < Duration::from_secs(4), "{took:?}");
    }

    #[tokio::test]
    async fn an_unknown_frame_type_closes_the_connection_with_505() {
        let (mut peer, conn) = Peer::start(10, 0).await;
        // Frame type 9 does not exist.
        peer.s
            .write_all(&[9, 0, 0, 0, 0, 0, 0, 0xCE])
            .await
            .unwrap();
        assert_eq!(
            peer.method().await,
            (
                0,
                Method::ConnectionClose {
                    code: 505,
                    text: "UNEXPECTED_FRAME".into(),
                    class_id: 0,
                    method_id: 0
                }
            )
        );
        let err = conn.closed().await;
        assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    }

    /// A delivery on channel 1 whose content header announces `body_size` bytes, followed by
    /// `sent` bytes of body.
    fn delivery(body_size: u64, sent: usize) -> Vec<u8> {
        let mut out = Vec::new();
        frame::write_method(
            &mut out,
            1,
            &Method::BasicDeliver {
                consumer_tag: "c".into(),
                delivery_tag: 1,
                redelivered: false,
                exchange: String::new(),
                routing_key: "q".into(),
            },
        )
        .unwrap();
        // class basic, weight 0, the announced size, no properties
        let mut header = vec![0, 60, 0, 0];
        header.extend_from_slice(&body_size.to_be_bytes());
        header.extend_from_slice(&[0, 0]);
        frame::frame(&mut out, FRAME_HEADER, 1, |b| {
            b.extend_from_slice(&header);
            Ok(())
        })
        .unwrap();
        if sent > 0 {
            frame::frame(&mut out, FRAME_BODY, 1, |b| {
                b.resize(b.len() + sent, b'x');
                Ok(())
            })
            .unwrap();
        }
        out
    }

    #[tokio::test]
    async fn a_body_announced_above_the_limit_is_refused_before_allocating_it() {
        let before = rss_kib();
        let (mut peer, conn) = Peer::start(10, 0).await;
        let _ch = channel(&mut peer, &conn).await;
        peer.s.write_all(&delivery(MAX_BODY + 1, 0)).await.unwrap();
        let err = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .expect("the connection is closed at once");
        assert!(
            matches!(&err, Error::Protocol(t) if t.contains("exceeds")),
            "{err:?}"
        );
        let grew = rss_kib().saturating_sub(before);
        println!("refused a {} byte body; RSS grew {grew} KiB", MAX_BODY + 1);
        assert!(grew < 8 * 1024, "RSS grew {grew} KiB");
    }

    #[tokio::test]
    async fn a_large_announced_body_is_not_reserved_up_front() {
        let before = rss_kib();
        let (mut peer, conn) = Peer::start(10, 0).await;
        let _ch = channel(&mut peer, &conn).await;
        // Within the limit, but only 10 bytes ever come: nothing near 500 MiB is reserved.
        peer.s.write_all(&delivery(500 << 20, 10)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(conn.error().is_none());
        let grew = rss_kib().saturating_sub(before);
        println!("a 500 MiB body announced, 10 bytes sent: RSS grew {grew} KiB");
        assert!(grew < 8 * 1024, "RSS grew {grew} KiB");
    }
}
