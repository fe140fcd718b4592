//! The Kafka driver (`kafka://`): notifications only, as Python's `impl_kafka.py` of
//! oslo.messaging 18.3.1.
//!
//! It runs on librdkafka through the `rdkafka` crate: the engine Python's driver uses (through
//! confluent-kafka), so the two speak to the brokers alike (client settings, partitioning,
//! group protocol), and a mature client with batching, compression, TLS and SASL.
//!
//! What it does, as Python does:
//!
//! * **Topics.** A notification to topic `t` at priority `p` goes to the Kafka topic `t.p`, or
//!   `t.p.<virtual host>` when the URL has one. Topics are not created: the brokers' own
//!   policy decides (an operator creates them, or the broker auto-creates them).
//! * **Bytes.** The 2.0 envelope with the context nested under `_context`
//!   ([`wire::encode_kafka_notification`]).
//! * **Producing.** A notification is handed to librdkafka's queue and the call returns;
//!   librdkafka batches (`producer_batch_timeout`, `producer_batch_size`), compresses
//!   (`compression_codec`) and retries while the brokers are away, for up to its
//!   `message.timeout.ms` (5 minutes). A notification it finally cannot deliver is logged as an
//!   error (Python does not report it at all). When its queue is full the call waits for room.
//!   The notifier's `retry` has no effect, as in Python: librdkafka's retries stand for it.
//! * **Listening.** Each listener is a consumer in group `pool`, or `consumer_group` without a
//!   pool: two pools each get every notification, listeners of one pool share the topics'
//!   partitions. A new group starts at the end of the topics (`auto.offset.reset = latest`).
//!   Without `enable_auto_commit`, the offsets of each batch fetched (at most
//!   `max_poll_records`) are committed before its notifications are handled, so a crash
//!   loses at most that batch (as in Python), and what was fetched is committed before a
//!   rebalance takes partitions away. A commit that fails is logged and the batch is still
//!   handed up (Python drops it), so its next reader may handle it again. Requeueing is not
//!   supported and is logged, as in Python.
//! * **Security.** `security_protocol`, `sasl_mechanism` and the `ssl_*` options become
//!   librdkafka's settings as in Python, with the user name and password of the URL's first
//!   host. A producer the brokers refuse (login or TLS) logs it as an error; its notifications
//!   wait in the queue as while the brokers are away.
//!
//! Deliberate differences, all additions: with a virtual host, a listener also subscribes to
//! `t.p.<virtual host>`, where Python's (and our) notifiers send with that URL, besides the
//! `t.p` Python's listener alone reads; a body that does not decode is logged and skipped (in
//! Python it ends the poll); listening waits until the group has given this consumer its
//! partitions (at most 5 seconds, as Python's first poll does), so notifications sent once
//! `listen` returns are not missed, and fails if the brokers refuse its login
//! ([`ErrorKind::AccessRefused`]) or its TLS handshake ([`ErrorKind::Transport`]) first, where
//! Python's listener polls on, logging; a URL host without a port means port 9092.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

use super::{BoxFuture, Driver, NotificationListenerStream, Retry, RpcListener, SendParams};
use crate::config::KafkaOptions;
use crate::error::{Error, ErrorKind, Result};
use crate::target::Target;
use crate::url::TransportUrl;
use crate::wire;

mod listener;

/// Kafka's usual port, for URL hosts without one.
const DEFAULT_PORT: u16 = 9092;

/// How long `cleanup` waits for queued notifications to reach the brokers.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a notification waits between tries while librdkafka's queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(50);

/// The Kafka notification driver.
pub(crate) struct KafkaDriver {
    /// Brokers, security and credentials: what producer and consumers share.
    base: ClientConfig,
    opts: KafkaOptions,
    /// Appended to notification topics (`t.p.vhost`), when the URL has one.
    vhost: Option<String>,
    /// Created on the first notification, as Python's `_ensure_producer`.
    producer: Mutex<Option<Arc<ThreadedProducer<ProducerLog>>>>,
    closed: Arc<AtomicBool>,
    /// The brokers, for messages (no credentials).
    brokers: String,
}

impl fmt::Debug for KafkaDriver {
    // The client configuration holds the SASL password: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaDriver")
            .field("brokers", &self.brokers)
            .field("vhost", &self.vhost)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl KafkaDriver {
    /// A driver for `url` with `opts` (the URL query already applied).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Configuration`] for a URL without a host.
    pub(crate) fn new(url: &TransportUrl, opts: &KafkaOptions) -> Result<Self> {
        let mut hosts = Vec::new();
        let mut credentials: Option<(Option<String>, Option<String>)> = None;
        for host in url.hosts() {
            // Credentials come from the first host, as in Python.
            let user = host.username().map(str::to_owned);
            match &credentials {
                None => {
                    credentials = Some((user, host.password().map(|p| p.expose().to_owned())));
                }
                Some((first, _)) if *first != user => {
                    tracing::warn!(
                        "different transport user names in the Kafka URL; using the first"
                    );
                }
                Some(_) => {}
            }
            if let Some(name) = host.hostname() {
                let port = host.port().unwrap_or(DEFAULT_PORT);
                if name.contains(':') {
                    hosts.push(format!("[{name}]:{port}"));
                } else {
                    hosts.push(format!("{name}:{port}"));
                }
            }
        }
        if hosts.is_empty() {
            return Err(Error::config(format!(
                "the Kafka transport URL {url} names no broker (kafka://host:port/)"
            )));
        }
        let brokers = hosts.join(",");
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", &brokers)
            .set("security.protocol", &opts.security_protocol);
        if opts.security_protocol.starts_with("SASL") {
            base.set("sasl.mechanism", &opts.sasl_mechanism);
            if let Some((user, password)) = credentials {
                if let Some(user) = user {
                    base.set("sasl.username", user);
                }
                if let Some(password) = password {
                    base.set("sasl.password", password);
                }
            }
        }
        for (key, value) in [
            ("ssl.ca.location", &opts.ssl_cafile),
            ("ssl.certificate.location", &opts.ssl_client_cert_file),
            ("ssl.key.location", &opts.ssl_client_key_file),
        ] {
            if !value.is_empty() {
                base.set(key, value);
            }
        }
        if !opts.ssl_client_key_password.expose().is_empty() {
            base.set("ssl.key.password", opts.ssl_client_key_password.expose());
        }
        Ok(Self {
            base,
            opts: opts.clone(),
            vhost: url
                .virtual_host()
                .filter(|v| !v.is_empty())
                .map(str::to_owned),
            producer: Mutex::new(None),
            closed: Arc::new(AtomicBool::new(false)),
            brokers,
        })
    }

    /// The Kafka topic a notification to `topic` (`<topic>.<priority>`) goes to.
    fn topic_for(&self, topic: &str) -> String {
        match &self.vhost {
            Some(vhost) => format!("{topic}.{vhost}"),
            None => topic.to_owned(),
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::shut_down("the transport was cleaned up"));
        }
        Ok(())
    }

    /// The producer, created on first use.
    fn producer(&self) -> Result<Arc<ThreadedProducer<ProducerLog>>> {
        let mut slot = self
            .producer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Checked under the lock: `cleanup` takes the producer under it, so none is created
        // after it flushed.
        self.check_open()?;
        if let Some(p) = &*slot {
            return Ok(p.clone());
        }
        let mut config = self.base.clone();
        config
            .set(
                "linger.ms",
                format!("{}", self.opts.producer_batch_timeout * 1000.0),
            )
            .set(
                "batch.num.messages",
                self.opts.producer_batch_size.to_string(),
            )
            .set("compression.codec", &self.opts.compression_codec);
        let producer: ThreadedProducer<ProducerLog> = config
            .create_with_context(ProducerLog)
            .map_err(|e| client_error("cannot create the Kafka producer", &e))?;
        let producer = Arc::new(producer);
        *slot = Some(producer.clone());
        Ok(producer)
    }

    fn rpc_unsupported() -> Error {
        Error::config(
            "The RPC implementation for Kafka is not implemented: a kafka:// transport carries \
             notifications only (use a rabbit:// transport for RPC)",
        )
    }
}

/// A librdkafka client error as ours. A refused setting is named without its value, which
/// may be a password.
fn client_error(what: &str, e: &KafkaError) -> Error {
    match e {
        KafkaError::ClientConfig(_, description, key, _) => Error::config(format!(
            "{what}: librdkafka refuses the setting {key}: {description}"
        )),
        KafkaError::ClientCreation(_) => Error::config(format!("{what}: {e}")),
        _ => Error::transport(format!("{what}: {e}")),
    }
}

impl Driver for KafkaDriver {
    fn send(&self, _params: SendParams) -> BoxFuture<'_, Result<Option<super::ReplyReceiver>>> {
        Box::pin(async { Err(Self::rpc_unsupported()) })
    }

    fn send_notification(
        &self,
        target: Target,
        message: wire::Notification,
        _envelope: bool,
        _retry: Retry,
    ) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.check_open()?;
            let topic = self.topic_for(target.topic().unwrap_or_default());
            let body = wire::encode_kafka_notification(&message);
            let producer = self.producer()?;
            loop {
                let record = BaseRecord::<(), [u8]>::to(&topic).payload(&body);
                match producer.send(record) {
                    Ok(()) => return Ok(()),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        // Room comes as the brokers take messages, or as they time out.
                        tracing::debug!(topic, "the Kafka producer's queue is full; waiting");
                        tokio::time::sleep(QUEUE_FULL_WAIT).await;
                        self.check_open()?;
                    }
                    Err((e, _)) => {
                        return Err(Error::new(
                            ErrorKind::DeliveryFailure,
                            format!("cannot send a notification to Kafka topic {topic}: {e}"),
                        ));
                    }
                }
            }
        })
    }

    fn listen(&self, _target: Target) -> BoxFuture<'_, Result<RpcListener>> {
        Box::pin(async { Err(Self::rpc_unsupported()) })
    }

    fn listen_for_notifications(
        &self,
        targets: Vec<Target>,
        pool: Option<String>,
    ) -> BoxFuture<'_, Result<NotificationListenerStream>> {
        Box::pin(async move {
            self.check_open()?;
            let mut topics: Vec<String> = Vec::new();
            for target in &targets {
                let topic = target.require_listener_topic()?;
                for t in [
                    Some(topic.to_owned()),
                    self.vhost.as_ref().map(|_| self.topic_for(topic)),
                ]
                .into_iter()
                .flatten()
                {
                    if !topics.contains(&t) {
                        topics.push(t);
                    }
                }
            }
            let group = pool.unwrap_or_else(|| self.opts.consumer_group.clone());
            listener::start(&self.base, &self.opts, group, topics, self.closed.clone()).await
        })
    }

    fn cleanup(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.closed.store(true, Ordering::Release);
            let producer = self
                .producer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(producer) = producer {
                // Flushing blocks a thread: not the runtime's.
                let flushed = tokio::task::spawn_blocking(move || {
                    let result = producer.flush(FLUSH_TIMEOUT);
                    (result, producer.in_flight_count())
                })
                .await;
                if let Ok((Err(e), left)) = flushed {
                    tracing::error!(
                        error = %e,
                        left,
                        "Kafka notifications not delivered when the transport was cleaned up are lost"
                    );
                }
            }
        })
    }
}

/// The producer's context: librdkafka's logs and delivery failures, into `tracing`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProducerLog;

impl ClientContext for ProducerLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_librdkafka(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error,
            KafkaError::Global(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)
        ) {
            // Retrying cannot mend it: notifications wait in librdkafka's queue and are lost
            // once their `message.timeout.ms` passes.
            tracing::error!(
                error = %error,
                "Kafka producer refused by the brokers (login or TLS): {reason}"
            );
        } else {
            tracing::warn!(error = %error, "Kafka producer: {reason}");
        }
    }
}

impl ProducerContext for ProducerLog {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, message)) = result {
            tracing::error!(
                topic = message.topic(),
                error = %e,
                "a notification could not be delivered to Kafka and is lost"
            );
        }
    }
}

/// A librdkafka log line into `tracing`.
pub(crate) fn log_librdkafka(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(facility = fac, "librdkafka: {message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(facility = fac, "librdkafka: {message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(facility = fac, "librdkafka: {message}");
        }
        RDKafkaLogLevel::Debug => tracing::debug!(facility = fac, "librdkafka: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driver(url: &str) -> Result<KafkaDriver> {
        KafkaDriver::new(&TransportUrl::parse(url).unwrap(), &KafkaOptions::default())
    }

    #[test]
    fn brokers_come_from_every_host_with_kafkas_port_by_default() {
        let d = driver("kafka://u:secret@k1:9093,u:secret@k2,[::1]:9094/").unwrap();
        assert_eq!(d.brokers, "k1:9093,k2:9092,[::1]:9094");
        assert!(!format!("{d:?}").contains("secret"));
        assert_eq!(
            driver("kafka:///").unwrap_err().kind(),
            ErrorKind::Configuration
        );
    }

    #[test]
    fn a_refused_setting_is_named_without_its_value() {
        let refused = KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Invalid value".into(),
            "sasl.password".into(),
            "hunter2".into(),
        );
        let err = client_error("cannot create the Kafka producer", &refused);
        assert_eq!(err.kind(), ErrorKind::Configuration);
        assert!(err.to_string().contains("sasl.password"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    }

    #[test]
    fn topics_carry_the_virtual_host_when_there_is_one() {
        assert_eq!(driver("kafka://k1/").unwrap().topic_for("n.info"), "n.info");
        assert_eq!(driver("kafka://k1").unwrap().topic_for("n.info"), "n.info");
        assert_eq!(
            driver("kafka://k1/nova").unwrap().topic_for("n.info"),
            "n.info.nova"
        );
    }

    #[test]
    fn sasl_credentials_come_from_the_url_only_for_sasl() {
        let d = driver("kafka://alice:pw@k1/").unwrap();
        assert_eq!(d.base.get("sasl.username"), None);
        let opts = KafkaOptions {
            security_protocol: "SASL_PLAINTEXT".into(),
            ..KafkaOptions::default()
        };
        let d =
            KafkaDriver::new(&TransportUrl::parse("kafka://alice:pw@k1/").unwrap(), &opts).unwrap();
        assert_eq!(d.base.get("sasl.username"), Some("alice"));
        assert_eq!(d.base.get("sasl.password"), Some("pw"));
        assert_eq!(d.base.get("sasl.mechanism"), Some("PLAIN"));
    }
}
