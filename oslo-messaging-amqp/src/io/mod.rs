//! The I/O task: one per connection, the only owner of its socket.
//!
//! It reads and writes concurrently in one `select!` loop (a full socket never stops it from
//! reading `connection.blocked`, acks or heartbeats), demultiplexes frames to channels,
//! resolves RPC replies in order, tracks publisher confirms per channel (pipelined: any number
//! of publishes can wait for their confirm at once), matches `basic.return` to the publish it
//! returns, and sends heartbeats. Callers encode frames in their own task and hand them over
//! as [`Command`]s; nothing they do can block the I/O task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::channel::{ChanShared, Confirm, ConsumerEvent};
use crate::connect::AsyncReadWrite;
use crate::connection::{CLOSE_TIMEOUT, Shared};
use crate::error::{Error, io_error};
use crate::frame::{self, Method};

/// Read and write buffers shrink back to this once a burst that made them larger is over.
const BUFFER_KEEP: usize = 256 * 1024;
/// A burst is over when the buffers have not needed more than [`BUFFER_KEEP`] for this long.
/// Shrinking at once instead, under a steady load of large messages, would give the memory
/// back after every write and fault it in again for the next one.
const BURST_OVER: Duration = Duration::from_secs(1);
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
    /// A dropped consumer: forget it and send `basic.cancel` without waiting for the answer.
    CancelConsumer {
        channel: u16,
        /// The channel's identity: its number may already belong to a newer channel.
        shared: Arc<ChanShared>,
        consumer_tag: String,
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

mod inbound;
mod state;
#[cfg(test)]
mod tests;

use state::{ChanState, ChannelOpened, PendingConfirm, PendingRpc};

pub(crate) struct IoTask {
    reader: tokio::io::ReadHalf<Box<dyn AsyncReadWrite>>,
    writer: tokio::io::WriteHalf<Box<dyn AsyncReadWrite>>,
    /// Everything written, not yet flushed (TLS buffers records until flushed).
    needs_flush: bool,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    /// The last time a buffer held more than [`BUFFER_KEEP`].
    busy_at: Instant,
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
            busy_at: Instant::now(),
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
                            if self.wbuf.len() > BUFFER_KEEP {
                                self.busy_at = self.last_write;
                            }
                            // The capacity stays while the load lasts (see `on_tick`).
                            self.wbuf.clear();
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
        // A burst (a backlog while the broker was slow, a run of large messages) leaves no
        // lasting capacity behind once it is over.
        if now.duration_since(self.busy_at) >= BURST_OVER {
            if self.wbuf.is_empty() && self.wbuf.capacity() > BUFFER_KEEP {
                self.wbuf.shrink_to(BUFFER_KEEP);
            }
            if self.rbuf.is_empty() && self.rbuf.capacity() > BUFFER_KEEP {
                self.rbuf.shrink_to(BUFFER_KEEP);
            }
        }
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

    /// Writes our `channel.close` (a normal close); the caller marks the channel closing.
    fn write_channel_close(&mut self, channel: u16) {
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
            Command::CancelConsumer {
                channel,
                shared,
                consumer_tag,
            } => {
                // Absent when the tick already cancelled it (its receiver was gone first).
                if let Some(ch) = self
                    .channels
                    .get_mut(&channel)
                    .filter(|ch| !ch.closing && Arc::ptr_eq(&ch.shared, &shared))
                    && ch.consumers.remove(&consumer_tag).is_some()
                {
                    self.write_method(
                        channel,
                        &Method::BasicCancel {
                            consumer_tag,
                            no_wait: true,
                        },
                    );
                }
            }
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
                        self.write_channel_close(channel);
                    }
                }
                None => {
                    let _ = reply.send(());
                }
            },
        }
        Step::Continue
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
        Command::Publish { .. } | Command::Send { .. } | Command::CancelConsumer { .. } => {}
    }
}
