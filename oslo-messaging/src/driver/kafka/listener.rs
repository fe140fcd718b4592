//! A Kafka notification listener: one consumer, polled on a thread of its own.
//!
//! librdkafka's consumer is driven by polling (which also runs its group callbacks), so each
//! listener gets a thread that polls as Python's listener does: a batch of at most
//! `max_poll_records`, its offsets committed (without `enable_auto_commit`), then its
//! notifications handed up. At most `max_poll_records` notifications are with the handlers at
//! once; the thread fetches more as they finish.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tokio::sync::{mpsc, watch};

use super::super::{
    BoxFuture, IncomingNotification, ListenerControl, NotificationAcker, NotificationListenerStream,
};
use crate::config::KafkaOptions;
use crate::error::{Error, ErrorKind, Result};
use crate::wire;

/// How long `listen` waits for the group to assign partitions, as Python's first poll.
const ASSIGNMENT_WAIT: Duration = Duration::from_secs(5);

/// How often the thread polls until its partitions are assigned.
const READY_POLL: Duration = Duration::from_millis(20);

/// How long looking up a partition's starting offset may take.
const OFFSET_LOOKUP: Duration = Duration::from_secs(5);

/// How long `cleanup` waits for the consumer to leave its group.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Where a new listener stands, as its thread tells `listen`.
#[derive(Debug, Clone)]
enum Readiness {
    Waiting,
    /// Partitions are assigned, with the offsets they start from.
    Assigned,
    /// The brokers refused the login or the TLS handshake: trying again cannot help.
    Refused(ErrorKind, String),
}

/// Starts a consumer in `group` on `topics` and its polling thread; returns once the group
/// assigned it partitions, with the offsets they start from (so nothing sent afterwards is
/// missed, even by a new group, which starts at the end), or after [`ASSIGNMENT_WAIT`].
/// Fails at once if the brokers refuse its credentials or its TLS handshake first.
pub(super) async fn start(
    base: &ClientConfig,
    opts: &KafkaOptions,
    group: String,
    topics: Vec<String>,
    transport_closed: Arc<AtomicBool>,
) -> Result<NotificationListenerStream> {
    let mut config = base.clone();
    config
        .set("group.id", &group)
        .set("enable.auto.commit", opts.enable_auto_commit.to_string())
        .set(
            "max.partition.fetch.bytes",
            opts.kafka_max_fetch_bytes.to_string(),
        )
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "latest");
    let (ready_tx, mut ready) = watch::channel(Readiness::Waiting);
    let consumer: BaseConsumer<ConsumerLog> = config
        .create_with_context(ConsumerLog {
            assigned: AtomicBool::new(false),
            commit: !opts.enable_auto_commit,
        })
        .map_err(|e| super::client_error("cannot create the Kafka consumer", &e))?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&names)
        .map_err(|e| super::client_error("cannot subscribe to the Kafka topics", &e))?;
    tracing::debug!(?topics, group, "subscribed to Kafka topics");
    let limit = usize::try_from(opts.max_poll_records).unwrap_or(1).max(1);
    let shared = Arc::new(Shared {
        stopped: AtomicBool::new(false),
        transport_closed,
        window: Window::default(),
        done: Mutex::new(false),
        done_cv: Condvar::new(),
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let poll = PollLoop {
        consumer,
        shared: shared.clone(),
        tx,
        limit,
        timeout: Duration::try_from_secs_f64(opts.kafka_consumer_timeout.max(0.01))
            .unwrap_or(Duration::from_secs(3600))
            .min(Duration::from_secs(3600)),
        commit: !opts.enable_auto_commit,
        ready_tx: Some(ready_tx),
    };
    // If `listen` is dropped before it returns, the thread stops and leaves the group.
    let guard = StopOnDrop(Some(shared.clone()));
    std::thread::Builder::new()
        .name("kafka-listener".to_owned())
        .spawn(move || poll.run())
        .map_err(|e| {
            crate::error::Error::transport(format!("cannot start the Kafka listener thread: {e}"))
        })?;
    let waited = tokio::time::timeout(
        ASSIGNMENT_WAIT,
        ready.wait_for(|r| !matches!(r, Readiness::Waiting)),
    )
    .await;
    match waited {
        // Returning drops the armed guard, which stops the thread.
        Ok(Ok(r)) => {
            if let Readiness::Refused(kind, message) = &*r {
                return Err(Error::new(*kind, message.clone()));
            }
        }
        // The thread ended (the transport is being cleaned up): the stream ends at once.
        Ok(Err(_)) => {}
        Err(_) => tracing::warn!(
            ?topics,
            group,
            "no Kafka partitions assigned to this listener yet (do the topics exist?); it keeps trying"
        ),
    }
    guard.disarm();
    Ok(NotificationListenerStream {
        incoming: rx,
        control: Box::new(Control { shared }),
        prefetch: Some(limit),
    })
}

/// Stops the polling thread when dropped armed: a `listen` cancelled during its wait.
struct StopOnDrop(Option<Arc<Shared>>);

impl StopOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            shared.stop();
        }
    }
}

/// What the polling thread and the listener's handles share.
#[derive(Debug)]
struct Shared {
    stopped: AtomicBool,
    transport_closed: Arc<AtomicBool>,
    window: Window,
    /// Set by the thread when the consumer has left its group.
    done: Mutex<bool>,
    done_cv: Condvar,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopped.load(Ordering::Acquire) || self.transport_closed.load(Ordering::Acquire)
    }

    /// Tells the thread to stop, waking it if it waits for room.
    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        // Taken so the wake-up cannot fall between the waiter's check and its wait.
        let _out = self
            .window
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.window.cv.notify_all();
    }
}

/// Notifications with the handlers: the thread fetches no more while `limit` are out.
#[derive(Debug, Default)]
struct Window {
    out: Mutex<usize>,
    cv: Condvar,
}

impl Window {
    /// Waits (at most `timeout`, and not once `stopped`) until fewer than `limit` are out;
    /// returns the room.
    fn room(&self, limit: usize, timeout: Duration, stopped: &AtomicBool) -> usize {
        let out = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (out, _) = self
            .cv
            .wait_timeout_while(out, timeout, |out| {
                *out >= limit && !stopped.load(Ordering::Acquire)
            })
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        limit.saturating_sub(*out)
    }

    fn take(&self, n: usize) {
        *self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += n;
    }

    fn give_back(&self) {
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *out = out.saturating_sub(1);
        self.cv.notify_one();
    }
}

struct PollLoop {
    consumer: BaseConsumer<ConsumerLog>,
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<IncomingNotification>,
    limit: usize,
    timeout: Duration,
    commit: bool,
    /// Told once the partitions and their starting offsets are known, or the brokers
    /// refused this consumer; `None` after.
    ready_tx: Option<watch::Sender<Readiness>>,
}

impl PollLoop {
    fn run(mut self) {
        while !self.shared.stopping() && !self.tx.is_closed() {
            let room = self
                .shared
                .window
                .room(self.limit, self.timeout, &self.shared.stopped);
            if room == 0 || self.shared.stopping() {
                continue;
            }
            // Until ready, poll briefly: the group's callbacks run inside `poll`.
            let wait = if self.ready_tx.is_some() {
                READY_POLL
            } else {
                self.timeout
            };
            let first = self.next(wait);
            self.tell_when_ready();
            let Some(first) = first else {
                continue;
            };
            let mut batch = vec![first];
            while batch.len() < room {
                match self.next(Duration::ZERO) {
                    Some(n) => batch.push(n),
                    None => break,
                }
            }
            if self.commit {
                // As Python: the batch is committed before it is handled.
                commit_fetched(&self.consumer);
            }
            // Counted out at once (one lock), before any of them can come back.
            self.shared.window.take(batch.iter().flatten().count());
            for decoded in batch {
                let Some(message) = decoded else { continue };
                let acker = Box::new(KafkaAcker {
                    shared: Some(self.shared.clone()),
                });
                if self
                    .tx
                    .send(IncomingNotification { message, acker })
                    .is_err()
                {
                    // The listener is gone.
                    self.shared.stopped.store(true, Ordering::Release);
                    break;
                }
            }
        }
        // The channel ends first (the listener waits for that before its cleanup, which
        // bounds the close); then dropping the consumer leaves the group (librdkafka's close).
        let Self {
            consumer,
            shared,
            tx,
            ready_tx,
            ..
        } = self;
        drop((tx, ready_tx));
        drop(consumer);
        *shared
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        shared.done_cv.notify_all();
    }

    /// Tells `listen` once partitions are assigned, with the offsets they start from.
    fn tell_when_ready(&mut self) {
        if self.consumer.context().assigned.load(Ordering::Acquire)
            && let Some(tx) = self.ready_tx.take()
        {
            tx.send_replace(Readiness::Assigned);
        }
    }

    /// The next message within `timeout`: `Some(None)` for one that did not decode (logged).
    #[allow(clippy::option_option)]
    fn next(&mut self, timeout: Duration) -> Option<Option<wire::IncomingNotification>> {
        match self.consumer.poll(timeout)? {
            Ok(m) => Some(decode(&m)),
            Err(e) => {
                tracing::warn!(error = %e, "Kafka consumer error");
                // While `listen` still waits for the partitions, a refusal ends the listener
                // and fails `listen`; once it has returned, the listener keeps trying.
                if let Some(refused) = refusal(&e)
                    && self.ready_tx.as_ref().is_some_and(|tx| !tx.is_closed())
                    && let Some(tx) = self.ready_tx.take()
                {
                    self.shared.stopped.store(true, Ordering::Release);
                    tx.send_replace(refused);
                }
                None
            }
        }
    }
}

/// What a consumer error means for a listener still waiting for its partitions: the brokers'
/// refusal of its login or of its TLS handshake ends it (librdkafka's log line before says
/// why); anything else it outlasts.
fn refusal(e: &KafkaError) -> Option<Readiness> {
    let (KafkaError::MessageConsumption(code) | KafkaError::MessageConsumptionFatal(code)) = e
    else {
        return None;
    };
    match code {
        RDKafkaErrorCode::Authentication => Some(Readiness::Refused(
            ErrorKind::AccessRefused,
            "the Kafka brokers refused the listener's login (the transport URL's user name and \
             password, sasl_mechanism and security_protocol; librdkafka's log says more)"
                .to_owned(),
        )),
        RDKafkaErrorCode::SSL => Some(Readiness::Refused(
            ErrorKind::Transport,
            "the TLS handshake with the Kafka brokers failed (ssl_cafile, ssl_client_cert_file, \
             ssl_client_key_file, ssl_client_key_password and the brokers' host names; \
             librdkafka's log says more)"
                .to_owned(),
        )),
        _ => None,
    }
}

/// Decodes one message; one that does not decode is logged and skipped.
fn decode(m: &BorrowedMessage<'_>) -> Option<wire::IncomingNotification> {
    match wire::decode_kafka_notification(m.payload().unwrap_or_default()) {
        Ok(n) => Some(n),
        Err(error) => {
            tracing::error!(
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                %error,
                "skipping a Kafka message that is not a notification"
            );
            None
        }
    }
}

/// Offsets are committed when fetched, so acknowledging only frees room in the window.
#[derive(Debug)]
struct KafkaAcker {
    shared: Option<Arc<Shared>>,
}

impl KafkaAcker {
    fn release(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.window.give_back();
        }
    }
}

impl Drop for KafkaAcker {
    fn drop(&mut self) {
        self.release();
    }
}

impl NotificationAcker for KafkaAcker {
    fn ack(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        self.release();
        Box::pin(async { Ok(()) })
    }

    fn requeue(mut self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        tracing::warn!(
            "requeue is not supported by the Kafka driver (as in Python): the notification is dropped"
        );
        self.release();
        Box::pin(async { Ok(()) })
    }
}

#[derive(Debug)]
struct Control {
    shared: Arc<Shared>,
}

impl ListenerControl for Control {
    fn stop(&self) -> BoxFuture<'_, ()> {
        self.shared.stop();
        Box::pin(async {})
    }

    fn cleanup(&self) -> BoxFuture<'_, ()> {
        self.shared.stop();
        let shared = self.shared.clone();
        Box::pin(async move {
            // The thread stops within one poll, then leaves the group.
            let left = tokio::task::spawn_blocking(move || {
                let done = shared
                    .done
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let (done, _) = shared
                    .done_cv
                    .wait_timeout_while(done, CLOSE_WAIT, |d| !*d)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *done
            })
            .await
            .unwrap_or(false);
            if !left {
                tracing::warn!("the Kafka listener did not leave its group in time; going on");
            }
        })
    }
}

/// The consumer's context: librdkafka's logs into `tracing`, and whether partitions are
/// assigned.
struct ConsumerLog {
    assigned: AtomicBool,
    /// Offsets are committed by hand (not `enable_auto_commit`).
    commit: bool,
}

impl ClientContext for ConsumerLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        super::log_librdkafka(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, "Kafka consumer: {reason}");
    }
}

impl ConsumerContext for ConsumerLog {
    // As librdkafka's own handling, but the offsets partitions start from are looked up
    // before they are assigned (committed, else the end, as `auto.offset.reset = latest`):
    // librdkafka would look them up after, so a notification sent just after `listen`
    // returned could land before a new group's starting point and never be seen.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let at_end = start_offsets(consumer, partitions);
                // A starting point found at the end is committed at once, so a partition
                // that moves to another listener of the pool before this one commits a batch
                // resumes there, not at a later end.
                if self.commit
                    && at_end.count() > 0
                    && let Err(e) = consumer.commit(&at_end, CommitMode::Sync)
                {
                    tracing::warn!(error = %e, "cannot commit Kafka starting offsets");
                }
                for p in partitions.elements() {
                    tracing::debug!(
                        topic = p.topic(),
                        partition = p.partition(),
                        offset = ?p.offset(),
                        "Kafka partition assigned"
                    );
                }
                if let Err(e) = consumer.assign(partitions) {
                    tracing::warn!(error = %e, "cannot take the Kafka partitions assigned");
                }
                self.assigned.store(true, Ordering::Release);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::debug!(count = partitions.count(), "Kafka partitions revoked");
                // What this listener fetched is committed before the partitions go (the
                // batch being gathered is handed up after), so their next owner does not
                // fetch it again.
                if self.commit {
                    commit_fetched(consumer);
                }
                if let Err(e) = consumer.unassign() {
                    tracing::warn!(error = %e, "cannot give the Kafka partitions back");
                }
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                tracing::warn!(error = %code, "Kafka group rebalance failed");
                let _ = consumer.unassign();
            }
        }
    }
}

/// Commits, and waits for, the offsets after what the consumer has fetched; a failure is
/// logged (nothing fetched yet is not one).
fn commit_fetched(consumer: &BaseConsumer<ConsumerLog>) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(error = %e, "cannot commit Kafka offsets"),
    }
}

/// Sets each partition's starting offset: its committed one, else its end. Returns the
/// partitions started at their end, with that offset.
fn start_offsets(
    consumer: &BaseConsumer<ConsumerLog>,
    partitions: &mut TopicPartitionList,
) -> TopicPartitionList {
    let mut at_end = TopicPartitionList::new();
    let committed = match consumer.committed_offsets(partitions.clone(), OFFSET_LOOKUP) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read committed Kafka offsets; librdkafka will");
            return at_end;
        }
    };
    for p in committed.elements() {
        let offset = match p.offset() {
            Offset::Offset(n) => Offset::Offset(n),
            _ => match consumer.fetch_watermarks(p.topic(), p.partition(), OFFSET_LOOKUP) {
                Ok((_, high)) => {
                    let _ =
                        at_end.add_partition_offset(p.topic(), p.partition(), Offset::Offset(high));
                    Offset::Offset(high)
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        topic = p.topic(),
                        "cannot read a Kafka partition's end; librdkafka will"
                    );
                    continue;
                }
            },
        };
        let _ = partitions.set_partition_offset(p.topic(), p.partition(), offset);
    }
    at_end
}
