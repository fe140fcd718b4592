//! Configuration: oslo.config option names, groups and defaults.
//!
//! [`Config`] holds the groups oslo.messaging reads: `[DEFAULT]` ([`DefaultOptions`]),
//! `[oslo_messaging_rabbit]` ([`RabbitOptions`]), `[oslo_messaging_notifications]`
//! ([`NotificationOptions`]), `[oslo_messaging_kafka]` ([`KafkaOptions`]),
//! `[oslo_messaging_tracing]` ([`TracingOptions`]) and `[oslo_messaging_metrics]`
//! ([`MetricsOptions`]). Load it from oslo-style INI files, later files overriding earlier
//! ones, or build it in Rust:
//!
//! ```
//! use oslo_messaging::Config;
//!
//! let conf = Config::from_ini_str(
//!     "[DEFAULT]\n\
//!      transport_url = rabbit://nova:pw@rmq1:5672/\n\
//!      control_exchange = nova\n\
//!      [oslo_messaging_rabbit]\n\
//!      heartbeat_timeout_threshold = 30\n",
//! )?;
//! assert_eq!(conf.default.control_exchange, "nova");
//! assert_eq!(conf.rabbit.heartbeat_timeout_threshold, 30);
//! assert_eq!(conf.default.rpc_response_timeout, 60);
//!
//! let conf = Config::builder()
//!     .transport_url("memory://")
//!     .control_exchange("nova")
//!     .option("oslo_messaging_rabbit", "rabbit_qos_prefetch_count", "10")
//!     .build()?;
//! assert_eq!(conf.rabbit.rabbit_qos_prefetch_count, 10);
//! # Ok::<(), oslo_messaging::Error>(())
//! ```
//!
//! As in oslo.config, options a file sets that this library does not know are ignored (a
//! `nova.conf` holds many other groups), while a bad value for a known option is an error naming
//! the group, option and value. Query parameters of a `rabbit://` URL override
//! `[oslo_messaging_rabbit]` options for that transport (of a `kafka://` URL,
//! `[oslo_messaging_kafka]` options); there an unknown name is an error.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::secret::Secret;

mod ini;
#[macro_use]
mod opts;

pub use opts::OptionInfo;

options! {
    /// `[DEFAULT]`: the transport URL, control exchange and RPC defaults.
    pub struct DefaultOptions("DEFAULT") {
        /// The broker URL (secret: it usually holds a password).
        transport_url: Secret = Secret::new("rabbit://"), "secret string";
        /// The default exchange for topics and notifications; services set their own
        /// (`nova`, `neutron`...).
        control_exchange: String = "openstack".to_owned(), "string";
        /// Seconds to wait for a reply to a call.
        rpc_response_timeout: i64 = 60, "integer";
        /// Handlers an RPC server or notification listener runs at once.
        executor_thread_pool_size: i64 = 64, "integer, min 1", deprecated ["rpc_thread_pool_size"], min 1;
        /// Adds the `oslo_rpc_server_ping` method to RPC servers.
        rpc_ping_enabled: bool = false, "boolean";
    }
}

options! {
    /// `[oslo_messaging_rabbit]`: the RabbitMQ driver's options, with Python's names and defaults.
    pub struct RabbitOptions("oslo_messaging_rabbit") {
        /// Durable topic exchanges and queues (forced on by `rabbit_quorum_queue`).
        amqp_durable_queues: bool = false, "boolean";
        /// `auto_delete` on topic exchanges and queues.
        amqp_auto_delete: bool = false, "boolean";
        /// Python's publishing connection pool size (accepted; this driver publishes on one
        /// multiplexed connection per transport).
        rpc_conn_pool_size: i64 = 30, "integer, min 1", min 1;
        /// Python's pool minimum (accepted, no effect here).
        conn_pool_min_size: i64 = 2, "integer";
        /// Python's idle pool connection lifetime (accepted, no effect here).
        conn_pool_ttl: i64 = 1200, "integer";
        /// Connect over TLS.
        ssl: bool = false, "boolean";
        /// The TLS version to use (`TLSv1_2`, `TLSv1_3`; empty for the library's default).
        ssl_version: String = String::new(), "string";
        /// Client private key file (PEM).
        ssl_key_file: String = String::new(), "string";
        /// Client certificate file (PEM).
        ssl_cert_file: String = String::new(), "string";
        /// CA certificates to verify the broker with (PEM).
        ssl_ca_file: String = String::new(), "string";
        /// Deprecated: broker host names are always verified.
        ssl_enforce_hostname_verification: bool = true, "boolean (deprecated, always on)";
        /// Deprecated, no effect.
        ssl_enforce_fips_mode: bool = false, "boolean (deprecated, no effect)";
        /// Seconds to wait before reconnecting after an error (added to the backoff).
        kombu_reconnect_delay: f64 = 1.0, "float, 0.0 to 4.5", min 0.0, max 4.5;
        /// Random jitter, up to this many seconds, added to each reconnect wait (Python only
        /// logs it).
        kombu_reconnect_splay: f64 = 0.0, "float, min 0.0", min 0.0;
        /// Compression of published messages: `gzip` (`zlib`) or `bz2` (`bzip2`, `bzip`);
        /// unset: none. Received messages are decompressed by their header either way.
        kombu_compression: Option<String> = None, "string: gzip, zlib, bz2, bzip2 or bzip";
        /// Seconds a server retries a reply to a missing reply queue.
        kombu_missing_consumer_retry_timeout: i64 = 60, "integer", deprecated ["kombu_reconnect_timeout"];
        /// Which host to try next after a failure: `round-robin` or `shuffle`.
        kombu_failover_strategy: String = "round-robin".to_owned(), "round-robin or shuffle", choices ["round-robin", "shuffle"];
        /// SASL mechanism: `PLAIN`, `AMQPLAIN`, `EXTERNAL` (a client certificate), or
        /// `RABBIT-CR-DEMO` (sends the password in clear; for tests).
        rabbit_login_method: String = "AMQPLAIN".to_owned(), "PLAIN, AMQPLAIN, EXTERNAL or RABBIT-CR-DEMO", choices ["PLAIN", "AMQPLAIN", "EXTERNAL", "RABBIT-CR-DEMO"];
        /// First reconnect interval, seconds.
        rabbit_retry_interval: i64 = 1, "integer, min 1", min 1;
        /// Seconds added to the interval after each failed attempt.
        rabbit_retry_backoff: i64 = 2, "integer, min 0", min 0;
        /// Largest reconnect interval, seconds.
        rabbit_interval_max: i64 = 30, "integer, min 1", min 1;
        /// Legacy `x-ha-policy: all` queue argument (no effect on RabbitMQ 3.0 and later).
        rabbit_ha_queues: bool = false, "boolean";
        /// Quorum topic and notification queues (`x-queue-type: quorum`, durable).
        rabbit_quorum_queue: bool = false, "boolean";
        /// Quorum reply and fanout queues (durable).
        rabbit_transient_quorum_queue: bool = false, "boolean";
        /// `x-delivery-limit` of quorum queues (0: unset).
        rabbit_quorum_delivery_limit: i64 = 0, "integer";
        /// `x-max-in-memory-length` of quorum queues (0: unset).
        rabbit_quorum_max_memory_length: i64 = 0, "integer";
        /// `x-max-in-memory-bytes` of quorum queues (0: unset).
        rabbit_quorum_max_memory_bytes: i64 = 0, "integer";
        /// Seconds before an unused reply or fanout queue expires (`x-expires`; 0: never).
        rabbit_transient_queues_ttl: i64 = 1800, "integer, min 0", min 0;
        /// Unacknowledged messages a consumer may hold (0: unlimited).
        rabbit_qos_prefetch_count: i64 = 0, "integer";
        /// AMQP heartbeat timeout, seconds (0 disables heartbeats).
        heartbeat_timeout_threshold: i64 = 60, "integer";
        /// Heartbeat checks per timeout period.
        heartbeat_rate: i64 = 3, "integer";
        /// Deprecated: replies are always published mandatory (except to a direct reply-to name).
        direct_mandatory_flag: bool = true, "boolean (deprecated, always on)";
        /// Ask the broker to cancel consumers on mirrored-queue failover.
        enable_cancel_on_failover: bool = false, "boolean";
        /// Stable reply and fanout queue names from host name, process name and a counter.
        use_queue_manager: bool = false, "boolean";
        /// Host name for the queue manager (default: this machine's).
        hostname: String = default_hostname(), "string";
        /// Process name for the queue manager (default: this program's file name).
        processname: String = default_processname(), "string";
        /// Fanout through one RabbitMQ stream per topic instead of a queue per server.
        rabbit_stream_fanout: bool = false, "boolean";
        /// Not Python's: this client's calls take their replies through RabbitMQ's direct
        /// reply-to (`amq.rabbitmq.reply-to`) instead of a reply queue: no enqueue and no ack
        /// per reply. Servers need no change, but replies in flight are lost when the
        /// connection drops (the calls waiting for them fail at once with `ReplyLost`), and
        /// Python servers on RabbitMQ 3.x need `direct_mandatory_flag` set to false.
        rabbit_direct_reply_to: bool = false, "boolean (not Python's)";
    }
}

options! {
    /// `[oslo_messaging_kafka]`: the Kafka notification driver's options, with the names and
    /// defaults of Python oslo.messaging 18.3.1 (`kafka_driver/kafka_options.py`). Query
    /// parameters of a `kafka://` URL override them for that transport, as in Python.
    pub struct KafkaOptions("oslo_messaging_kafka") {
        /// Most bytes a listener fetches from one partition at once
        /// (`max.partition.fetch.bytes`).
        kafka_max_fetch_bytes: i64 = 1024 * 1024, "integer, min 1", min 1;
        /// Seconds a listener waits for messages in one poll.
        kafka_consumer_timeout: f64 = 1.0, "float, min 0.0", min 0.0;
        /// The consumer group of listeners started without a pool: listeners of one group
        /// share the notifications.
        consumer_group: String = "oslo_messaging_consumer".to_owned(), "string";
        /// Seconds the producer may wait to batch messages (`linger.ms`).
        producer_batch_timeout: f64 = 0.0, "float, min 0.0", min 0.0;
        /// Most messages in one producer batch (`batch.num.messages`).
        producer_batch_size: i64 = 16384, "integer, min 1", min 1;
        /// Compression of produced messages: `none`, `gzip`, `snappy`, `lz4` or `zstd`.
        compression_codec: String = "none".to_owned(), "none, gzip, snappy, lz4 or zstd", choices ["none", "gzip", "snappy", "lz4", "zstd"];
        /// Commit offsets in the background; when false, a listener commits each batch it
        /// fetched before handling it (as Python does).
        enable_auto_commit: bool = false, "boolean";
        /// Most messages one poll hands a listener.
        max_poll_records: i64 = 500, "integer, min 1", min 1;
        /// How to talk to the brokers: `PLAINTEXT`, `SASL_PLAINTEXT`, `SSL` or `SASL_SSL`.
        security_protocol: String = "PLAINTEXT".to_owned(), "PLAINTEXT, SASL_PLAINTEXT, SSL or SASL_SSL", choices ["PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL"];
        /// The SASL mechanism (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`); the user name and
        /// password come from the transport URL.
        sasl_mechanism: String = "PLAIN".to_owned(), "string";
        /// CA certificates (PEM) to verify the brokers with.
        ssl_cafile: String = String::new(), "string";
        /// Client certificate (PEM).
        ssl_client_cert_file: String = String::new(), "string";
        /// Client private key (PEM).
        ssl_client_key_file: String = String::new(), "string";
        /// The client private key's password.
        ssl_client_key_password: Secret = Secret::new(""), "secret string";
    }
}

options! {
    /// `[oslo_messaging_notifications]`: how notifications are sent.
    pub struct NotificationOptions("oslo_messaging_notifications") {
        /// Notification drivers (`messagingv2`, `messaging`, `log`, `routing`, `test`, `noop`).
        /// `None` when no configuration set it; see [`Notifier`](crate::notify::Notifier) for the
        /// default.
        driver: Option<Vec<String>> = None, "multi-valued string", deprecated ["notification_driver"];
        /// A separate transport for notifications (default: the RPC transport's URL).
        transport_url: Option<Secret> = None, "secret string";
        /// Topics notifications are sent to.
        topics: Vec<String> = vec!["notifications".to_owned()], "list", deprecated ["notification_topics"];
        /// Reconnect attempts when sending a notification (-1: forever).
        retry: i64 = -1, "integer";
        /// YAML file of the `routing` driver.
        routing_config: String = String::new(), "string";
    }
}

options! {
    /// `[oslo_messaging_tracing]`: OpenTelemetry traces of calls, casts and notifications, with
    /// the names and defaults of Python oslo.messaging 18.3.1. Spans are exported only in a build
    /// with the `otel` feature; without it, enabling tracing warns once and does nothing.
    pub struct TracingOptions("oslo_messaging_tracing") {
        /// Trace calls and casts (and, beyond Python, notifications), and carry the W3C trace
        /// context in the message context (`_context_traceparent`...).
        tracing_enabled: bool = false, "boolean";
        /// The `service.name` resource attribute of exported spans.
        tracing_service_name: String = "openstack".to_owned(), "string";
        /// Where spans go: for `http/protobuf`, `/v1/traces` is appended.
        otel_exporter_otlp_endpoint: String = "http://localhost:4318".to_owned(), "string";
        /// The OTLP protocol: `http/protobuf` or `grpc`.
        otlp_protocol: String = "http/protobuf".to_owned(), "http/protobuf or grpc", choices ["http/protobuf", "grpc"];
        /// gRPC only: plain text instead of TLS. An `https://` endpoint always uses TLS; any
        /// other uses TLS unless this is true (as Python's gRPC exporter decides).
        insecure: bool = false, "boolean";
    }
}

options! {
    /// `[oslo_messaging_metrics]`: RPC client metrics sent to an oslo.metrics collector, with the
    /// names and defaults of Python oslo.messaging 18.3.1.
    pub struct MetricsOptions("oslo_messaging_metrics") {
        /// Send RPC client metrics to the oslo.metrics collector.
        metrics_enabled: bool = false, "boolean";
        /// Metrics held while the collector is slow or away; beyond that they are dropped and
        /// counted.
        metrics_buffer_size: i64 = 1000, "integer, min 1", min 1;
        /// The collector's unix datagram socket.
        metrics_socket_file: String = "/var/tmp/metrics_collector.sock".to_owned(), "string";
        /// The `process` label of every metric.
        metrics_process_name: String = String::new(), "string";
        /// Python stops its sending thread after this many idle seconds (accepted; the sender
        /// here never holds up an exit).
        metrics_thread_stop_timeout: i64 = 10, "integer";
    }
}

fn default_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// This program's file name (`argv[0]` without its directory), as Python's
/// `os.path.basename(sys.argv[0])`.
pub(crate) fn default_processname() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "oslo-messaging".to_owned())
}

/// oslo.messaging groups that this library does not implement: options a file sets there
/// would otherwise be ignored without a word, so loading such a file warns.
const UNSUPPORTED_GROUPS: &[&str] = &["oslo_messaging_amqp"];

/// All the options oslo.messaging reads, by group.
///
/// # Examples
///
/// ```
/// use oslo_messaging::Config;
///
/// let conf = Config::from_ini_str("[DEFAULT]\ncontrol_exchange = nova\n")?;
/// assert_eq!(conf.default.control_exchange, "nova");
/// assert_eq!(conf.rabbit.heartbeat_timeout_threshold, 60, "Python's default");
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Config {
    /// `[DEFAULT]`.
    pub default: DefaultOptions,
    /// `[oslo_messaging_rabbit]`.
    pub rabbit: RabbitOptions,
    /// `[oslo_messaging_notifications]`.
    pub notifications: NotificationOptions,
    /// `[oslo_messaging_tracing]`.
    pub tracing: TracingOptions,
    /// `[oslo_messaging_metrics]`.
    pub metrics: MetricsOptions,
    /// `[oslo_messaging_kafka]`.
    pub kafka: KafkaOptions,
    /// oslo.messaging groups the loaded files set that this library does not implement.
    unsupported: Vec<String>,
}

impl Config {
    /// Loads INI files in order, later files overriding earlier ones (multi-valued options such
    /// as `driver` collect the values of every file, as oslo.config does). The same as
    /// `Config::builder().files(paths).build()`; use the [builder](Self::builder) for service
    /// defaults below the files.
    ///
    /// `$name`, `${name}` and `${group.name}` in values are replaced by other options' values
    /// (same group first, then `[DEFAULT]`); `$$` is a literal `$`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Configuration`](crate::ErrorKind::Configuration) for a file that cannot be
    /// read or parsed, a bad value of a known option, a substitution naming no option (the
    /// message names file, group, option and value), or options that conflict.
    pub fn from_files<P: AsRef<Path>>(paths: &[P]) -> Result<Self> {
        Self::builder().files(paths).build()
    }

    /// Parses INI text over the defaults.
    ///
    /// # Errors
    ///
    /// As [`from_files`](Self::from_files).
    pub fn from_ini_str(text: &str) -> Result<Self> {
        Self::builder().ini_str(text).build()
    }

    /// Every option, by group, with its type, default and help: what Python's
    /// `oslo_messaging.opts.list_opts()` gives oslo-config-generator.
    pub fn list_opts() -> Vec<(&'static str, Vec<OptionInfo>)> {
        vec![
            (DefaultOptions::GROUP, DefaultOptions::options()),
            (NotificationOptions::GROUP, NotificationOptions::options()),
            (RabbitOptions::GROUP, RabbitOptions::options()),
            (TracingOptions::GROUP, TracingOptions::options()),
            (MetricsOptions::GROUP, MetricsOptions::options()),
            (KafkaOptions::GROUP, KafkaOptions::options()),
        ]
    }

    /// A sample configuration file with every option commented out at its default, with its
    /// help, as oslo-config-generator writes one (`oslo-messaging config sample` prints it).
    ///
    /// # Examples
    ///
    /// ```
    /// let sample = oslo_messaging::Config::sample_ini();
    /// assert!(sample.contains("[oslo_messaging_rabbit]"));
    /// assert!(sample.contains("\n#heartbeat_timeout_threshold = 60\n"));
    /// // It loads, and gives the defaults.
    /// let conf = oslo_messaging::Config::from_ini_str(&sample)?;
    /// assert_eq!(conf.rabbit.heartbeat_timeout_threshold, 60);
    /// # Ok::<(), oslo_messaging::Error>(())
    /// ```
    pub fn sample_ini() -> String {
        let mut out = String::new();
        for (group, opts) in Self::list_opts() {
            out.push_str(&format!(
                "[{group}]\n\n#\n# From oslo.messaging (Rust)\n#\n\n"
            ));
            for o in opts {
                let help = format!("{} ({})", o.help, o.kind);
                for line in wrap(&help, 70) {
                    out.push_str(&format!("# {line}\n"));
                }
                for old in o.deprecated_names {
                    out.push_str(&format!("# Deprecated group/name - [{group}]/{old}\n"));
                }
                out.push_str(&format!("#{} = {}\n\n", o.name, o.sample));
            }
            out.push('\n');
        }
        out
    }

    /// The oslo.messaging groups that the loaded files set and this library does not implement
    /// (`oslo_messaging_amqp`, whose driver Python removed too): their options have no
    /// effect. Loading warns about each once.
    pub fn unsupported_groups(&self) -> &[String] {
        &self.unsupported
    }

    fn apply_raw(&mut self, raw: &ini::Sections, source: &str) -> Result<()> {
        // `$` substitution sees the values before the files (defaults, service defaults).
        let before = self.clone();
        let lookup = |g: &str, k: &str| before.text_of(g, k);
        for (group, entries) in raw {
            if UNSUPPORTED_GROUPS.contains(&group.as_str()) {
                if !self.unsupported.contains(group) {
                    tracing::warn!(
                        source,
                        group,
                        "this library does not implement [{group}]: its options have no effect"
                    );
                    self.unsupported.push(group.clone());
                }
                continue;
            }
            for (key, values) in entries {
                if !self.knows(group, key) {
                    tracing::debug!(source, group, key, "ignoring unknown option");
                    continue;
                }
                let values = values
                    .iter()
                    .map(|v| ini::substitute(v, group, raw, &lookup))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Error::config(format!("{source}: [{group}] {key}: {e}")))?;
                if let Err(SetError::Invalid(msg)) = self.set_values(group, key, &values) {
                    return Err(Error::config(format!("{source}: {msg}")));
                }
            }
        }
        Ok(())
    }

    /// Sets one option from its text form, as a config file would.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Configuration`](crate::ErrorKind::Configuration) for an unknown group or
    /// option or a bad value.
    pub fn set(&mut self, group: &str, name: &str, value: &str) -> Result<()> {
        match self.set_values(group, name, &[value.to_owned()]) {
            Ok(()) => Ok(()),
            Err(SetError::Unknown) => {
                Err(Error::config(format!("no such option [{group}] {name}")))
            }
            Err(SetError::Invalid(msg)) => Err(Error::config(msg)),
        }
    }

    /// A known option's current value as text, for `$` substitution.
    fn text_of(&self, group: &str, name: &str) -> Option<String> {
        match group {
            "DEFAULT" => self.default.text_of(name),
            "oslo_messaging_rabbit" => self.rabbit.text_of(name),
            "oslo_messaging_notifications" => self.notifications.text_of(name),
            "oslo_messaging_tracing" => self.tracing.text_of(name),
            "oslo_messaging_metrics" => self.metrics.text_of(name),
            "oslo_messaging_kafka" => self.kafka.text_of(name),
            _ => None,
        }
    }

    fn knows(&self, group: &str, name: &str) -> bool {
        match group {
            "DEFAULT" => {
                DefaultOptions::knows(name)
                    || matches!(name, "notification_driver" | "notification_topics")
            }
            "oslo_messaging_rabbit" => RabbitOptions::knows(name),
            "oslo_messaging_notifications" => NotificationOptions::knows(name),
            "oslo_messaging_tracing" => TracingOptions::knows(name),
            "oslo_messaging_metrics" => MetricsOptions::knows(name),
            "oslo_messaging_kafka" => KafkaOptions::knows(name),
            _ => false,
        }
    }

    fn set_values(&mut self, group: &str, name: &str, values: &[String]) -> Result<(), SetError> {
        match group {
            "DEFAULT" => {
                // Deprecated DEFAULT-group names of notification options still work, as in
                // oslo.config.
                match self.default.set(name, values) {
                    Err(SetError::Unknown) => match name {
                        "notification_driver" | "notification_topics" => {
                            self.notifications.set(name, values)
                        }
                        _ => Err(SetError::Unknown),
                    },
                    other => other,
                }
            }
            "oslo_messaging_rabbit" => self.rabbit.set(name, values),
            "oslo_messaging_notifications" => self.notifications.set(name, values),
            "oslo_messaging_tracing" => self.tracing.set(name, values),
            "oslo_messaging_metrics" => self.metrics.set(name, values),
            "oslo_messaging_kafka" => self.kafka.set(name, values),
            _ => Err(SetError::Unknown),
        }
    }

    /// Starts a [`ConfigBuilder`] from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// The `[DEFAULT]` transport URL text (a secret).
    pub fn transport_url(&self) -> &Secret {
        &self.default.transport_url
    }

    /// The URL notifications use: `[oslo_messaging_notifications] transport_url`, else
    /// `[DEFAULT] transport_url`.
    pub fn notification_transport_url(&self) -> &Secret {
        self.notifications
            .transport_url
            .as_ref()
            .unwrap_or(&self.default.transport_url)
    }

    /// Checks combinations that the Python driver refuses at start-up.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Configuration`](crate::ErrorKind::Configuration) describing the conflict.
    pub fn validate(&self) -> Result<()> {
        self.rabbit.validate()
    }
}

impl KafkaOptions {
    /// Applies `[oslo_messaging_kafka]` overrides from a `kafka://` URL query, as Python's
    /// `ConfigOptsProxy` does.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Configuration`](crate::ErrorKind::Configuration) naming an unknown option or
    /// a bad value.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut kafka = oslo_messaging::config::KafkaOptions::default();
    /// kafka.apply_query(&[("consumer_group".into(), "ceilometer".into())])?;
    /// assert_eq!(kafka.consumer_group, "ceilometer");
    /// assert!(kafka.apply_query(&[("compression_codec".into(), "brotli".into())]).is_err());
    /// # Ok::<(), oslo_messaging::Error>(())
    /// ```
    pub fn apply_query(&mut self, query: &[(String, String)]) -> Result<()> {
        apply_query(Self::GROUP, query, |k, v| self.set(k, v))
    }
}

/// Sets each `name=value` of a URL query with `set`, naming `group` in the errors.
fn apply_query(
    group: &str,
    query: &[(String, String)],
    mut set: impl FnMut(&str, &[String]) -> Result<(), SetError>,
) -> Result<()> {
    for (k, v) in query {
        match set(k, std::slice::from_ref(v)) {
            Ok(()) => {}
            Err(SetError::Unknown) => {
                return Err(Error::config(format!(
                    "no such option {k:?} in group [{group}] (from the transport URL query)"
                )));
            }
            Err(SetError::Invalid(msg)) => {
                return Err(Error::config(format!(
                    "{msg} (from the transport URL query)"
                )));
            }
        }
    }
    Ok(())
}

impl RabbitOptions {
    /// Applies `[oslo_messaging_rabbit]` overrides from a URL query, as Python's
    /// `ConfigOptsProxy` does.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Configuration`](crate::ErrorKind::Configuration) naming an unknown option or
    /// a bad value.
    pub fn apply_query(&mut self, query: &[(String, String)]) -> Result<()> {
        apply_query(Self::GROUP, query, |k, v| self.set(k, v))?;
        self.validate()
    }

    /// The combinations Python refuses.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Configuration`](crate::ErrorKind::Configuration) describing the conflict.
    pub fn validate(&self) -> Result<()> {
        if self.rabbit_ha_queues && self.rabbit_quorum_queue {
            return Err(Error::config(
                "rabbit_ha_queues and rabbit_quorum_queue cannot both be enabled",
            ));
        }
        // Python fails later, on the first reply or fanout queue it declares.
        if self.rabbit_ha_queues && self.rabbit_transient_quorum_queue {
            return Err(Error::config(
                "rabbit_ha_queues and rabbit_transient_quorum_queue cannot both be enabled",
            ));
        }
        if self.rabbit_stream_fanout
            && (self.rabbit_qos_prefetch_count <= 0 || !self.rabbit_transient_quorum_queue)
        {
            return Err(Error::config(
                "rabbit_stream_fanout needs rabbit_qos_prefetch_count > 0 and rabbit_transient_quorum_queue = true",
            ));
        }
        if self.conn_pool_min_size > self.rpc_conn_pool_size {
            return Err(Error::config(
                "rpc_conn_pool_size must be greater than or equal to conn_pool_min_size",
            ));
        }
        if let Some(c) = &self.kombu_compression
            && !matches!(c.as_str(), "gzip" | "zlib" | "bz2" | "bzip2" | "bzip")
        {
            return Err(Error::config(format!(
                "kombu_compression {c:?} is not supported (use gzip, zlib, bz2, bzip2 or bzip)"
            )));
        }
        Ok(())
    }
}

/// Why an option could not be set.
#[derive(Debug)]
pub(crate) enum SetError {
    /// No such option in the group.
    Unknown,
    /// The value is bad; the text names group, option and value.
    Invalid(String),
}

/// Words of `text` in lines of at most `width` characters (a longer word gets its own line).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// A value set in code, above the files (oslo.config's `set_override`).
type Override = Box<dyn FnOnce(&mut Config) -> Result<()> + Send + Sync>;

/// Where option text comes from.
#[derive(Debug)]
enum Source {
    File(PathBuf),
    Text(String),
}

/// Builds a [`Config`] in layers, as oslo.config resolves a value:
///
/// 1. the built-in defaults (Python's);
/// 2. the service's defaults ([`service_default`](Self::service_default),
///    [`default_control_exchange`](Self::default_control_exchange)...: Python's
///    `set_transport_defaults` and `set_defaults`), so a Rust service joining nova defaults to
///    exchange `nova`;
/// 3. the INI files and strings, in the order given ([`files`](Self::files),
///    [`ini_str`](Self::ini_str)), so an operator's `control_exchange` still wins;
/// 4. values set in code ([`control_exchange`](Self::control_exchange),
///    [`option`](Self::option)...: oslo.config's `set_override`).
///
/// Setters never fail: [`build`](Self::build) reports every error.
///
/// # Examples
///
/// ```
/// use oslo_messaging::Config;
///
/// let dir = std::env::temp_dir().join(format!("oslo-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let operator = dir.join("nova.conf");
/// std::fs::write(&operator, "[oslo_messaging_rabbit]\nheartbeat_timeout_threshold = 30\n").unwrap();
///
/// let conf = Config::builder()
///     .default_control_exchange("nova")
///     .file(&operator)
///     .build()?;
/// assert_eq!(conf.default.control_exchange, "nova");
/// assert_eq!(conf.rabbit.heartbeat_timeout_threshold, 30);
///
/// // An operator's choice wins over the service default.
/// std::fs::write(&operator, "[DEFAULT]\ncontrol_exchange = cells\n").unwrap();
/// let conf = Config::builder().default_control_exchange("nova").file(&operator).build()?;
/// assert_eq!(conf.default.control_exchange, "cells");
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[derive(Default)]
#[must_use]
pub struct ConfigBuilder {
    defaults: Vec<(String, String, String)>,
    sources: Vec<Source>,
    overrides: Vec<Override>,
}

impl std::fmt::Debug for ConfigBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigBuilder")
            .field(
                "defaults",
                &self
                    .defaults
                    .iter()
                    .map(|(g, n, _)| format!("[{g}] {n}"))
                    .collect::<Vec<_>>(),
            )
            .field("sources", &self.sources)
            .field("overrides", &self.overrides.len())
            .finish()
    }
}

impl ConfigBuilder {
    fn set_in_code(
        mut self,
        f: impl FnOnce(&mut Config) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.overrides.push(Box::new(f));
        self
    }

    /// A service default for any option, from its text form: below the files, above the
    /// built-in default (oslo.config's `set_default`).
    pub fn service_default(
        mut self,
        group: impl Into<String>,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.defaults
            .push((group.into(), name.into(), value.into()));
        self
    }

    /// The service's default `[DEFAULT] control_exchange`, below the files: Python's
    /// `oslo_messaging.set_transport_defaults(control_exchange)`.
    pub fn default_control_exchange(self, exchange: impl Into<String>) -> Self {
        self.service_default("DEFAULT", "control_exchange", exchange)
    }

    /// The service's default `[DEFAULT] executor_thread_pool_size`, below the files: Python's
    /// `oslo_messaging.opts.set_defaults(conf, executor_thread_pool_size=)`.
    pub fn default_executor_thread_pool_size(self, size: i64) -> Self {
        self.service_default("DEFAULT", "executor_thread_pool_size", size.to_string())
    }

    /// Loads an INI file after the sources added before (later sources override earlier
    /// ones; multi-valued options collect every value).
    pub fn file(mut self, path: impl AsRef<Path>) -> Self {
        self.sources.push(Source::File(path.as_ref().to_owned()));
        self
    }

    /// Loads INI files, in order; see [`file`](Self::file).
    pub fn files<P: AsRef<Path>>(mut self, paths: &[P]) -> Self {
        for p in paths {
            self.sources.push(Source::File(p.as_ref().to_owned()));
        }
        self
    }

    /// Loads INI text, as a file would be.
    pub fn ini_str(mut self, text: impl Into<String>) -> Self {
        self.sources.push(Source::Text(text.into()));
        self
    }

    /// `[DEFAULT] transport_url`, set in code.
    pub fn transport_url(self, url: impl Into<String>) -> Self {
        let url = Secret::new(url.into());
        self.set_in_code(move |c| {
            c.default.transport_url = url;
            Ok(())
        })
    }

    /// `[DEFAULT] control_exchange`, set in code (above the files; see
    /// [`default_control_exchange`](Self::default_control_exchange) for a default).
    pub fn control_exchange(self, exchange: impl Into<String>) -> Self {
        let exchange = exchange.into();
        self.set_in_code(move |c| {
            c.default.control_exchange = exchange;
            Ok(())
        })
    }

    /// `[DEFAULT] rpc_response_timeout`, in seconds, set in code.
    pub fn rpc_response_timeout(self, seconds: i64) -> Self {
        self.option("DEFAULT", "rpc_response_timeout", &seconds.to_string())
    }

    /// `[DEFAULT] executor_thread_pool_size`, set in code.
    pub fn executor_thread_pool_size(self, size: i64) -> Self {
        self.option("DEFAULT", "executor_thread_pool_size", &size.to_string())
    }

    /// `[DEFAULT] rpc_ping_enabled`, set in code.
    pub fn rpc_ping_enabled(self, enabled: bool) -> Self {
        self.set_in_code(move |c| {
            c.default.rpc_ping_enabled = enabled;
            Ok(())
        })
    }

    /// `[oslo_messaging_notifications] driver`, set in code.
    pub fn notification_drivers<I, S>(self, drivers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let drivers: Vec<String> = drivers.into_iter().map(Into::into).collect();
        self.set_in_code(move |c| {
            c.notifications.driver = Some(drivers);
            Ok(())
        })
    }

    /// Any option by group and name, from its text form, set in code and checked as a config
    /// file would be.
    pub fn option(self, group: &str, name: &str, value: &str) -> Self {
        let (group, name, value) = (group.to_owned(), name.to_owned(), value.to_owned());
        self.set_in_code(move |c| c.set(&group, &name, &value))
    }

    /// The configuration.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Configuration`](crate::ErrorKind::Configuration) for: a service default or
    /// an [`option`](Self::option) naming no option or with a bad value; a file that cannot be
    /// read or parsed, or a bad value in one (the message names file, group, option and value);
    /// or options that conflict ([`Config::validate`]).
    pub fn build(self) -> Result<Config> {
        let mut conf = Config::default();
        for (group, name, value) in &self.defaults {
            conf.set(group, name, value).map_err(|e| {
                Error::config(format!("service default [{group}] {name}: {}", e.message()))
            })?;
        }
        let mut raw = ini::Sections::new();
        let mut names = Vec::new();
        for source in &self.sources {
            let (name, text) = match source {
                Source::File(path) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        Error::with_source(
                            crate::ErrorKind::Configuration,
                            format!("cannot read config file {}", path.display()),
                            e,
                        )
                    })?;
                    (path.display().to_string(), text)
                }
                Source::Text(text) => ("<string>".to_owned(), text.clone()),
            };
            let sections = ini::parse(&text).map_err(|e| Error::config(format!("{name}: {e}")))?;
            ini::merge(&mut raw, sections);
            names.push(name);
        }
        conf.apply_raw(&raw, &names.join(", "))?;
        for set in self.overrides {
            set(&mut conf)?;
        }
        conf.validate()?;
        Ok(conf)
    }
}

#[cfg(test)]
mod tests;
