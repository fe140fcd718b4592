//! The real broker for the RabbitMQ tests.
//!
//! * The broker is `testkit::broker`'s (`OSLO_MESSAGING_TEST_URL`); a test starts with
//!   `testkit::require_broker!()`.
//! * A [`Scope`] gives a test its own control exchange and topic names and deletes what the
//!   test declared when it is dropped (even when the test panics). Transient queues with
//!   random names (fanout and reply queues) expire on their own: scoped transports set
//!   `rabbit_transient_queues_ttl` to 60 s instead of Python's 30 min.
//! * [`Raw`] is an independent AMQP client (amqprs): it injects raw messages and inspects what
//!   our driver put on the wire.

use std::sync::Mutex;
use std::time::Duration;

use amqprs::BasicProperties;
use amqprs::channel::{
    BasicGetArguments, BasicPublishArguments, Channel, ExchangeDeleteArguments, QueueBindArguments,
    QueueDeclareArguments, QueueDeleteArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use oslo_messaging::{Config, Transport};
use testkit::broker::{Broker, url as broker_url};

/// A test's names on the shared broker, deleted on drop.
pub struct Scope {
    /// The control exchange of the scope's transports.
    pub exchange: String,
    queues: Mutex<Vec<String>>,
    exchanges: Mutex<Vec<String>>,
}

/// Every notification priority as it appears in queue names.
const PRIORITIES: [&str; 7] = [
    "audit", "debug", "info", "warn", "error", "critical", "sample",
];

impl Scope {
    /// A scope whose names start with `name`.
    pub fn new(name: &str) -> Self {
        let exchange = testkit::unique(&format!("rt_{name}"));
        Self {
            exchanges: Mutex::new(vec![exchange.clone()]),
            exchange,
            queues: Mutex::new(Vec::new()),
        }
    }

    /// A new topic; its topic queue, fanout exchange and notification queues are deleted on drop.
    pub fn topic(&self, name: &str) -> String {
        let topic = testkit::unique(name);
        let mut q = self.queues.lock().unwrap();
        q.push(topic.clone());
        q.extend(PRIORITIES.iter().map(|p| format!("{topic}.{p}")));
        self.exchanges
            .lock()
            .unwrap()
            .push(format!("{topic}_fanout"));
        topic
    }

    /// Also deletes `name` (a server queue `topic.server`, a pool) on drop.
    pub fn queue(&self, name: impl Into<String>) {
        self.queues.lock().unwrap().push(name.into());
    }

    /// Also deletes the exchange `name` on drop.
    pub fn exchange(&self, name: impl Into<String>) {
        self.exchanges.lock().unwrap().push(name.into());
    }

    /// The scope's configuration with `options` (`[oslo_messaging_rabbit]` name, value).
    pub fn config(&self, options: &[(&str, &str)]) -> Config {
        let mut b = Config::builder().control_exchange(&self.exchange).option(
            "oslo_messaging_rabbit",
            "rabbit_transient_queues_ttl",
            "60",
        );
        for (name, value) in options {
            b = b.option("oslo_messaging_rabbit", name, value);
        }
        b.build().expect("test options are valid")
    }

    /// A transport on the test broker, with the scope's control exchange.
    pub fn transport(&self) -> Transport {
        self.transport_with(&[])
    }

    /// A transport with extra `[oslo_messaging_rabbit]` options.
    pub fn transport_with(&self, options: &[(&str, &str)]) -> Transport {
        Transport::with_config(&broker_url(), &self.config(options)).expect("a transport")
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let queues = std::mem::take(&mut *self.queues.lock().unwrap());
        let exchanges = std::mem::take(&mut *self.exchanges.lock().unwrap());
        // Its own thread and runtime: drop may run inside (or outside) the test's runtime.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let Ok(raw) = Raw::connect().await else {
                    return;
                };
                for q in queues {
                    raw.delete_queue(&q).await;
                }
                for x in exchanges {
                    raw.delete_exchange(&x).await;
                }
                raw.close().await;
            });
        })
        .join();
        if done.is_err() {
            eprintln!("warning: the scope's cleanup failed");
        }
    }
}

/// A raw message seen on the broker.
#[derive(Debug)]
pub struct RawMessage {
    pub properties: BasicProperties,
    pub body: Vec<u8>,
    pub routing_key: String,
}

impl RawMessage {
    /// A header's value, rendered with `Debug` (amqprs' field values).
    pub fn header(&self, name: &str) -> Option<String> {
        let headers = self.properties.headers()?;
        headers
            .as_ref()
            .iter()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| format!("{v:?}"))
    }
}

/// A queue argument's value, for [`Raw::probe_with`].
#[derive(Debug, Clone, Copy)]
pub enum QueueArg<'a> {
    Int(i64),
    Str(&'a str),
}

/// An independent AMQP connection (amqprs), used one operation at a time.
pub struct Raw {
    conn: Connection,
    ch: Mutex<Channel>,
}

impl Raw {
    /// Connects to the test broker.
    pub async fn connect() -> Result<Self, amqprs::error::Error> {
        let Broker {
            host,
            port,
            user,
            password: pass,
            vhost,
            ..
        } = Broker::from_env();
        let conn = tokio::time::timeout(
            Duration::from_secs(10),
            Connection::open(
                &OpenConnectionArguments::new(&host, port, &user, &pass)
                    .virtual_host(&vhost)
                    .connection_name("oslo-messaging-tests-raw")
                    .finish(),
            ),
        )
        .await
        .map_err(|_| amqprs::error::Error::NetworkError("connect timed out".into()))??;
        let ch = conn.open_channel(None).await?;
        Ok(Self {
            conn,
            ch: Mutex::new(ch),
        })
    }

    /// The channel, reopened if a channel error closed it.
    async fn channel(&self) -> Channel {
        let current = self.ch.lock().unwrap().clone();
        if current.is_open() {
            return current;
        }
        let ch = self.conn.open_channel(None).await.expect("a new channel");
        *self.ch.lock().unwrap() = ch.clone();
        ch
    }

    /// Publishes `body` with `content_type` (none when `None`) and optional headers.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) {
        let mut props = BasicProperties::default();
        if let Some(ct) = content_type {
            props.with_content_type(ct);
        }
        self.channel()
            .await
            .basic_publish(
                props.finish(),
                body.to_vec(),
                BasicPublishArguments::new(exchange, routing_key),
            )
            .await
            .expect("raw publish");
    }

    /// Declares a non-durable queue bound to `exchange` with `key` (the exchange must exist).
    pub async fn probe(&self, queue: &str, exchange: &str, key: &str) {
        self.probe_with(queue, exchange, key, &[]).await;
    }

    /// A queue bound to `exchange` with `key` that holds at most `max_length` messages and
    /// refuses (nacks) publishes beyond that (`x-overflow = reject-publish`).
    pub async fn reject_publish_queue(
        &self,
        queue: &str,
        exchange: &str,
        key: &str,
        max_length: i64,
    ) {
        self.probe_with(
            queue,
            exchange,
            key,
            &[
                ("x-max-length", QueueArg::Int(max_length)),
                ("x-overflow", QueueArg::Str("reject-publish")),
            ],
        )
        .await;
    }

    /// As [`probe`](Self::probe), with integer and string queue arguments (such as
    /// `x-max-length` and `x-overflow`).
    pub async fn probe_with(
        &self,
        queue: &str,
        exchange: &str,
        key: &str,
        arguments: &[(&str, QueueArg<'_>)],
    ) {
        let mut table = amqprs::FieldTable::new();
        for (name, value) in arguments {
            let v: amqprs::FieldValue = match value {
                QueueArg::Int(n) => amqprs::FieldValue::l(*n),
                QueueArg::Str(s) => (*s).into(),
            };
            table.insert((*name).try_into().unwrap(), v);
        }
        let ch = self.channel().await;
        ch.queue_declare(QueueDeclareArguments::new(queue).arguments(table).finish())
            .await
            .expect("probe queue");
        ch.queue_bind(QueueBindArguments::new(queue, exchange, key))
            .await
            .expect("probe binding");
    }

    /// Takes one message from `queue`, waiting up to 5 s for one to arrive.
    pub async fn get(&self, queue: &str) -> RawMessage {
        for _ in 0..100 {
            let got = self
                .channel()
                .await
                .basic_get(BasicGetArguments::new(queue).no_ack(true).finish())
                .await
                .expect("basic.get");
            if let Some((ok, properties, body)) = got {
                return RawMessage {
                    properties,
                    body,
                    routing_key: ok.routing_key().to_owned(),
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no message arrived on {queue}");
    }

    /// The number of ready messages in `queue`, or `None` when it does not exist.
    pub async fn message_count(&self, queue: &str) -> Option<u32> {
        let ch = self.channel().await;
        let out = ch
            .queue_declare(QueueDeclareArguments::new(queue).passive(true).finish())
            .await;
        match out {
            Ok(Some((_, count, _))) => Some(count),
            _ => None,
        }
    }

    /// Declares `queue` with `arguments` given as `(name, i64)`: fails when the broker has it
    /// with other settings (406), which tells what the driver declared.
    pub async fn redeclare_matches(
        &self,
        queue: &str,
        durable: bool,
        auto_delete: bool,
        arguments: amqprs::FieldTable,
    ) -> bool {
        let ch = self.channel().await;
        ch.queue_declare(
            QueueDeclareArguments::new(queue)
                .durable(durable)
                .auto_delete(auto_delete)
                .arguments(arguments)
                .finish(),
        )
        .await
        .is_ok()
    }

    /// Declares an exchange (for the durable-mismatch tests).
    pub async fn declare_exchange(&self, name: &str, kind: &str, durable: bool) {
        self.channel()
            .await
            .exchange_declare(
                amqprs::channel::ExchangeDeclareArguments::new(name, kind)
                    .durable(durable)
                    .finish(),
            )
            .await
            .expect("exchange declare");
    }

    /// Deletes a queue; missing queues are fine.
    pub async fn delete_queue(&self, queue: &str) {
        let _ = self
            .channel()
            .await
            .queue_delete(QueueDeleteArguments::new(queue))
            .await;
    }

    /// Deletes an exchange; missing exchanges are fine.
    pub async fn delete_exchange(&self, name: &str) {
        let _ = self
            .channel()
            .await
            .exchange_delete(ExchangeDeleteArguments::new(name))
            .await;
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = self.conn.close().await;
    }
}
