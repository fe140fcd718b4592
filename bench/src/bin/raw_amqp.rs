//! `raw-amqp`: the broker's ceiling for oslo-messaging's workloads, measured with the same AMQP
//! operations and none of oslo-messaging's layers (no envelope, no JSON, no dispatch).
//!
//! * `rpc-server` consumes a topic queue and a fanout queue, acknowledges each request on
//!   receipt (as oslo's RPC servers do) and publishes the reply (the request's body, as the
//!   simulator's `info()` returns its message) mandatory to the default exchange, waiting for
//!   its confirm.
//! * `rpc-client` publishes requests with confirms (`--cast`: no reply expected; `--fanout`: to
//!   the fanout exchange) and, for calls, waits for replies on an exclusive reply queue, matched
//!   by correlation id.
//!
//! Bodies carry the cargo plus `--overhead` bytes (the size of oslo's envelope around it), so
//! the broker moves as many bytes as for oslo-messaging. The output lines are those of
//! `oslo-messaging bench`, so the comparison reads both alike. `--client amqprs` runs the same
//! operations on the amqprs crate instead of oslo-messaging's own AMQP client.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use oslo_messaging_bench::{AmqpUrl, Latency, Summary, Tally, now};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Parser)]
#[command(
    name = "raw-amqp",
    about = "Raw AMQP ceilings for oslo-messaging's workloads"
)]
struct Cli {
    /// The broker (one host).
    #[arg(long, default_value = "rabbit://guest:guest@127.0.0.1:5672/")]
    url: String,
    /// The AMQP client library.
    #[arg(long, value_enum, default_value_t = Client::Ours)]
    client: Client,
    /// Exchange names start with this (they auto-delete).
    #[arg(long, default_value = "raw")]
    exchange: String,
    #[command(subcommand)]
    command: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Client {
    /// oslo-messaging-amqp, the client under oslo-messaging.
    Ours,
    /// The amqprs crate.
    Amqprs,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Consume requests and reply to calls.
    RpcServer {
        #[arg(long, default_value = "profiler_topic")]
        topic: String,
        /// Print a `done` line after this many requests.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Publish requests, waiting for replies unless --cast.
    RpcClient {
        #[arg(long, default_value = "profiler_topic")]
        topic: String,
        #[arg(long, default_value_t = 1000)]
        calls: u64,
        #[arg(long, short = 'c', default_value_t = 1)]
        concurrency: u32,
        #[arg(long, default_value_t = 100)]
        payload_size: usize,
        /// Bytes added to each body for oslo's envelope.
        #[arg(long, default_value_t = 330)]
        overhead: usize,
        #[arg(long)]
        cast: bool,
        #[arg(long)]
        fanout: bool,
        #[arg(long, default_value_t = 0)]
        warmup: u64,
    },
}

/// The implementation's name in the bench protocol.
fn implementation(client: Client) -> &'static str {
    match client {
        Client::Ours => "raw-ours",
        Client::Amqprs => "raw-amqprs",
    }
}

/// A client's summary line.
#[allow(clippy::too_many_arguments)]
fn summary(
    client: Client,
    calls: u64,
    concurrency: u32,
    payload: usize,
    cast: bool,
    fanout: bool,
    mut lat: Vec<f64>,
    errors: u64,
    start_ts: f64,
    wall: Duration,
) -> Summary {
    let secs = wall.as_secs_f64();
    Summary {
        mode: "rpc-client".to_owned(),
        implementation: implementation(client).to_owned(),
        cast,
        fanout,
        calls,
        ok: lat.len() as u64,
        errors,
        error_kinds: Value::Null,
        concurrency,
        payload_size: json!(payload),
        start_ts,
        end_ts: start_ts + secs,
        duration_s: secs,
        throughput: lat.len() as f64 / secs.max(1e-9),
        latency_ms: Latency::of(&mut lat),
    }
}

fn out(v: &impl serde::Serialize) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{}", serde_json::to_string(v).unwrap_or_default());
    let _ = o.flush();
}

/// Calls waiting for their reply, by correlation id.
#[derive(Clone, Default)]
struct Waiters(Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>);

impl Waiters {
    fn register(&self, id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.0.lock().unwrap().insert(id.to_owned(), tx);
        rx
    }

    /// Wakes the call a reply with this correlation id answers, if any.
    fn wake(&self, id: Option<String>) {
        if let Some(tx) = id.and_then(|id| self.0.lock().unwrap().remove(&id)) {
            let _ = tx.send(());
        }
    }
}

/// Whether the reply came within a minute (at once for casts, which wait for none).
async fn replied(rx: Option<oneshot::Receiver<()>>) -> bool {
    match rx {
        Some(rx) => tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .is_ok_and(|r| r.is_ok()),
        None => true,
    }
}

/// Runs `one(seq)` for `warmup` unmeasured operations, then for `calls` operations from
/// `concurrency` tasks; returns the latencies (ms) of those that succeeded, the failures, the
/// start time and the wall time. Both clients drive their load through it.
async fn drive<F, Fut>(
    one: F,
    warmup: u64,
    concurrency: u32,
    calls: u64,
) -> (Vec<f64>, u64, f64, Duration)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    for i in 0..warmup {
        one(u64::MAX - i).await;
    }
    let next = Arc::new(AtomicU64::new(0));
    let start_ts = now();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (next, one) = (next.clone(), one.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0);
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= calls {
                    break;
                }
                let t0 = Instant::now();
                if one(seq).await {
                    lat.push(t0.elapsed().as_secs_f64() * 1e3);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors += e;
    }
    (lat, errors, start_ts, started.elapsed())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

// ============================================================== our client

mod ours {
    use super::*;
    use oslo_messaging_amqp::{
        Channel, Confirm, ConnectParams, Connection, ConsumerEvent, ExchangeOptions, FieldTable,
        Login, Properties, QueueOptions,
    };

    pub(crate) async fn connect(url: &str, name: &str) -> Connection {
        let AmqpUrl {
            host,
            port,
            user,
            password,
            vhost,
        } = AmqpUrl::parse(url);
        let params = ConnectParams::new(host, port, Login::Plain { user, password })
            .vhost(vhost)
            .connection_name(name)
            .product("raw-amqp");
        Connection::open(&params).await.expect("connect")
    }

    async fn exchange(ch: &Channel, name: &str, kind: &str) {
        ch.exchange_declare(
            name,
            kind,
            ExchangeOptions::default().auto_delete(true),
            FieldTable::new(),
        )
        .await
        .expect("exchange.declare");
    }

    async fn queue(ch: &Channel, name: &str, exclusive: bool) -> String {
        let options = QueueOptions::default()
            .exclusive(exclusive)
            .auto_delete(true);
        ch.queue_declare(name, options, FieldTable::new())
            .await
            .expect("queue.declare")
            .name
    }

    async fn bind(ch: &Channel, q: &str, x: &str, key: &str) {
        ch.queue_bind(q, x, key, FieldTable::new())
            .await
            .expect("queue.bind");
    }

    fn props(reply_to: Option<&str>, correlation: Option<String>) -> Properties {
        Properties {
            content_type: Some("application/json".into()),
            content_encoding: Some("utf-8".into()),
            headers: Some(FieldTable::new()),
            delivery_mode: Some(2),
            priority: Some(0),
            reply_to: reply_to.map(str::to_owned),
            correlation_id: correlation,
            ..Properties::default()
        }
    }

    pub(crate) async fn server(url: &str, prefix: &str, topic: &str, count: Option<u64>) {
        let consume = connect(url, "raw-server-consume").await;
        let publish = connect(url, "raw-server-publish").await;
        let ch = consume.channel().await.unwrap();
        let x = format!("{prefix}_{topic}");
        let fx = format!("{x}_fanout");
        exchange(&ch, &x, "topic").await;
        exchange(&ch, &fx, "fanout").await;
        let q = queue(&ch, topic, false).await;
        bind(&ch, &q, &x, topic).await;
        let fq = queue(&ch, "", true).await;
        bind(&ch, &fq, &fx, "").await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        ch.consume_into(&q, "1", false, FieldTable::new(), tx.clone())
            .await
            .unwrap();
        ch.consume_into(&fq, "2", false, FieldTable::new(), tx)
            .await
            .unwrap();
        let pch = publish.channel().await.unwrap();
        pch.confirm_select().await.unwrap();
        let tally = Arc::new(Tally::default());
        out(&json!({"event": "ready", "impl": "raw-ours", "pid": std::process::id()}));
        let work = async {
            while let Some(ConsumerEvent::Delivery(_, d)) = rx.recv().await {
                ch.ack(d.delivery_tag).await.unwrap();
                if tally.hit(count) {
                    out(&tally.line("done", implementation(Client::Ours)));
                }
                if let Some(reply_to) = d.properties.reply_to.clone() {
                    let (pch, corr) = (pch.clone(), d.properties.correlation_id.clone());
                    tokio::spawn(async move {
                        let _ = pch
                            .publish(
                                "",
                                &reply_to,
                                true,
                                &props(None, corr),
                                // The simulator's info() returns its message: the reply is
                                // as big as the request.
                                &d.body,
                            )
                            .await;
                    });
                }
            }
        };
        tokio::select! {
            () = work => {}
            () = shutdown_signal() => {}
        }
        out(&tally.line("stopped", implementation(Client::Ours)));
        consume.close().await;
        publish.close().await;
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn client(
        url: &str,
        prefix: &str,
        topic: &str,
        calls: u64,
        concurrency: u32,
        body: Arc<Vec<u8>>,
        cast: bool,
        fanout: bool,
        warmup: u64,
    ) -> (Vec<f64>, u64, f64, Duration) {
        let publish = connect(url, "raw-client-publish").await;
        let consume = connect(url, "raw-client-replies").await;
        let pch = publish.channel().await.unwrap();
        pch.confirm_select().await.unwrap();
        let x = format!("{prefix}_{topic}");
        let fx = format!("{x}_fanout");
        exchange(&pch, &x, "topic").await;
        exchange(&pch, &fx, "fanout").await;
        let (exchange_name, key) = if fanout {
            (fx, String::new())
        } else {
            (x, topic.to_owned())
        };
        let waiters = Waiters::default();
        let cch = consume.channel().await.unwrap();
        let reply_q = queue(&cch, "", true).await;
        if !cast {
            let mut rx = cch
                .consume(&reply_q, "", false, FieldTable::new())
                .await
                .unwrap();
            let (waiters, cch) = (waiters.clone(), cch.clone());
            tokio::spawn(async move {
                while let Some(ConsumerEvent::Delivery(_, d)) = rx.recv().await {
                    let _ = cch.ack(d.delivery_tag).await;
                    let id = d.properties.correlation_id;
                    waiters.wake(id);
                }
            });
        }
        let one = move |seq: u64| {
            let (pch, waiters, body, exchange_name, key, reply_q) = (
                pch.clone(),
                waiters.clone(),
                body.clone(),
                exchange_name.clone(),
                key.clone(),
                reply_q.clone(),
            );
            async move {
                let id = format!("{seq:032x}");
                let rx = (!cast).then(|| waiters.register(&id));
                let p = props((!cast).then_some(reply_q.as_str()), Some(id));
                let confirmed = pch.publish(&exchange_name, &key, false, &p, &body).await;
                if !matches!(confirmed, Ok(Confirm::Ack)) {
                    return false;
                }
                replied(rx).await
            }
        };
        let (lat, errors, start_ts, wall) = drive(one, warmup, concurrency, calls).await;
        publish.close().await;
        consume.close().await;
        (lat, errors, start_ts, wall)
    }
}

// ============================================================== amqprs

mod with_amqprs {
    use super::*;
    use amqprs::callbacks::ChannelCallback;
    use amqprs::channel::{
        BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, Channel,
        ConfirmSelectArguments, ExchangeDeclareArguments, QueueBindArguments,
        QueueDeclareArguments,
    };
    use amqprs::connection::{Connection, OpenConnectionArguments};
    use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, FieldTable, Nack, Return};

    /// Confirms by delivery tag, completed by the channel callback.
    #[derive(Clone, Default)]
    struct Confirms {
        pending: Arc<Mutex<BTreeMap<u64, oneshot::Sender<bool>>>>,
    }

    impl Confirms {
        fn settle(&self, tag: u64, multiple: bool, ok: bool) {
            let mut p = self.pending.lock().unwrap();
            if multiple {
                let rest = p.split_off(&(tag + 1));
                for (_, tx) in std::mem::replace(&mut *p, rest) {
                    let _ = tx.send(ok);
                }
            } else if let Some(tx) = p.remove(&tag) {
                let _ = tx.send(ok);
            }
        }
    }

    struct Callback(Confirms);

    #[async_trait::async_trait]
    impl ChannelCallback for Callback {
        async fn close(
            &mut self,
            _: &Channel,
            _: CloseChannel,
        ) -> Result<(), amqprs::error::Error> {
            Ok(())
        }
        async fn cancel(&mut self, _: &Channel, _: Cancel) -> Result<(), amqprs::error::Error> {
            Ok(())
        }
        async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
            Ok(active)
        }
        async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
            self.0.settle(ack.delivery_tag(), ack.mutiple(), true);
        }
        async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
            self.0.settle(nack.delivery_tag(), nack.multiple(), false);
        }
        async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {
        }
    }

    /// A confirm-mode channel: publishes are numbered under a lock, as the broker numbers them.
    #[derive(Clone)]
    struct Publisher {
        ch: Channel,
        confirms: Confirms,
        seq: Arc<tokio::sync::Mutex<u64>>,
    }

    impl Publisher {
        async fn new(conn: &Connection) -> Self {
            let ch = conn.open_channel(None).await.unwrap();
            let confirms = Confirms::default();
            ch.register_callback(Callback(confirms.clone()))
                .await
                .unwrap();
            ch.confirm_select(ConfirmSelectArguments::default())
                .await
                .unwrap();
            Self {
                ch,
                confirms,
                seq: Arc::default(),
            }
        }

        async fn publish(
            &self,
            x: &str,
            key: &str,
            mandatory: bool,
            p: BasicProperties,
            body: Vec<u8>,
        ) -> bool {
            let rx = {
                let mut seq = self.seq.lock().await;
                *seq += 1;
                let (tx, rx) = oneshot::channel();
                self.confirms.pending.lock().unwrap().insert(*seq, tx);
                let args = BasicPublishArguments::new(x, key)
                    .mandatory(mandatory)
                    .finish();
                if self.ch.basic_publish(p, body, args).await.is_err() {
                    return false;
                }
                rx
            };
            rx.await.unwrap_or(false)
        }
    }

    async fn connect(url: &str, name: &str) -> Connection {
        let AmqpUrl {
            host,
            port,
            user,
            password: pass,
            vhost,
        } = AmqpUrl::parse(url);
        Connection::open(
            &OpenConnectionArguments::new(&host, port, &user, &pass)
                .virtual_host(&vhost)
                .connection_name(name)
                .finish(),
        )
        .await
        .expect("connect")
    }

    fn props(reply_to: Option<&str>, correlation: &str) -> BasicProperties {
        let mut p = BasicProperties::default();
        p.with_content_type("application/json")
            .with_content_encoding("utf-8")
            .with_headers(FieldTable::new())
            .with_delivery_mode(2)
            .with_priority(0)
            .with_correlation_id(correlation);
        if let Some(r) = reply_to {
            p.with_reply_to(r);
        }
        p.finish()
    }

    async fn declare(ch: &Channel, x: &str, fx: &str) {
        for (name, kind) in [(x, "topic"), (fx, "fanout")] {
            ch.exchange_declare(
                ExchangeDeclareArguments::new(name, kind)
                    .auto_delete(true)
                    .finish(),
            )
            .await
            .unwrap();
        }
    }

    pub(crate) async fn server(url: &str, prefix: &str, topic: &str, count: Option<u64>) {
        let consume = connect(url, "raw-amqprs-server-consume").await;
        let publish = connect(url, "raw-amqprs-server-publish").await;
        let ch = consume.open_channel(None).await.unwrap();
        let x = format!("{prefix}_{topic}");
        let fx = format!("{x}_fanout");
        declare(&ch, &x, &fx).await;
        ch.queue_declare(QueueDeclareArguments::new(topic).auto_delete(true).finish())
            .await
            .unwrap();
        ch.queue_bind(QueueBindArguments::new(topic, &x, topic))
            .await
            .unwrap();
        let (fq, _, _) = ch
            .queue_declare(QueueDeclareArguments::exclusive_server_named())
            .await
            .unwrap()
            .unwrap();
        ch.queue_bind(QueueBindArguments::new(&fq, &fx, ""))
            .await
            .unwrap();
        let (_, mut rx1) = ch
            .basic_consume_rx(BasicConsumeArguments::new(topic, "1"))
            .await
            .unwrap();
        let (_, mut rx2) = ch
            .basic_consume_rx(BasicConsumeArguments::new(&fq, "2"))
            .await
            .unwrap();
        let publisher = Publisher::new(&publish).await;
        let tally = Arc::new(Tally::default());
        out(&json!({"event": "ready", "impl": "raw-amqprs", "pid": std::process::id()}));
        let work = async {
            loop {
                let m = tokio::select! {
                    Some(m) = rx1.recv() => m,
                    Some(m) = rx2.recv() => m,
                    else => break,
                };
                let (Some(deliver), Some(p), Some(body)) =
                    (m.deliver, m.basic_properties, m.content)
                else {
                    continue;
                };
                let _ = ch
                    .basic_ack(BasicAckArguments::new(deliver.delivery_tag(), false))
                    .await;
                if tally.hit(count) {
                    out(&tally.line("done", implementation(Client::Amqprs)));
                }
                if let Some(reply_to) = p.reply_to().cloned() {
                    let corr = p.correlation_id().cloned().unwrap_or_default();
                    let publisher = publisher.clone();
                    tokio::spawn(async move {
                        publisher
                            .publish("", &reply_to, true, props(None, &corr), body)
                            .await;
                    });
                }
            }
        };
        tokio::select! {
            () = work => {}
            () = shutdown_signal() => {}
        }
        out(&tally.line("stopped", implementation(Client::Amqprs)));
        let _ = consume.close().await;
        let _ = publish.close().await;
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn client(
        url: &str,
        prefix: &str,
        topic: &str,
        calls: u64,
        concurrency: u32,
        body: Arc<Vec<u8>>,
        cast: bool,
        fanout: bool,
        warmup: u64,
    ) -> (Vec<f64>, u64, f64, Duration) {
        let publish = connect(url, "raw-amqprs-client-publish").await;
        let consume = connect(url, "raw-amqprs-client-replies").await;
        let publisher = Publisher::new(&publish).await;
        let x = format!("{prefix}_{topic}");
        let fx = format!("{x}_fanout");
        declare(&publisher.ch, &x, &fx).await;
        let (exchange_name, key) = if fanout {
            (fx, String::new())
        } else {
            (x, topic.to_owned())
        };
        let waiters = Waiters::default();
        let cch = consume.open_channel(None).await.unwrap();
        let (reply_q, _, _) = cch
            .queue_declare(QueueDeclareArguments::exclusive_server_named())
            .await
            .unwrap()
            .unwrap();
        if !cast {
            let (_, mut rx) = cch
                .basic_consume_rx(BasicConsumeArguments::new(&reply_q, ""))
                .await
                .unwrap();
            let (waiters, cch) = (waiters.clone(), cch.clone());
            tokio::spawn(async move {
                while let Some(m) = rx.recv().await {
                    if let Some(d) = &m.deliver {
                        let _ = cch
                            .basic_ack(BasicAckArguments::new(d.delivery_tag(), false))
                            .await;
                    }
                    let id = m
                        .basic_properties
                        .as_ref()
                        .and_then(|p| p.correlation_id().cloned());
                    waiters.wake(id);
                }
            });
        }
        let one = move |seq: u64| {
            let (publisher, waiters, body, exchange_name, key, reply_q) = (
                publisher.clone(),
                waiters.clone(),
                body.clone(),
                exchange_name.clone(),
                key.clone(),
                reply_q.clone(),
            );
            async move {
                let id = format!("{seq:032x}");
                let rx = (!cast).then(|| waiters.register(&id));
                let p = props((!cast).then_some(reply_q.as_str()), &id);
                if !publisher
                    .publish(&exchange_name, &key, false, p, body.to_vec())
                    .await
                {
                    return false;
                }
                replied(rx).await
            }
        };
        let (lat, errors, start_ts, wall) = drive(one, warmup, concurrency, calls).await;
        let _ = publish.close().await;
        let _ = consume.close().await;
        (lat, errors, start_ts, wall)
    }
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        match cli.command {
            Mode::RpcServer { topic, count } => match cli.client {
                Client::Ours => ours::server(&cli.url, &cli.exchange, &topic, count).await,
                Client::Amqprs => {
                    with_amqprs::server(&cli.url, &cli.exchange, &topic, count).await;
                }
            },
            Mode::RpcClient {
                topic,
                calls,
                concurrency,
                payload_size,
                overhead,
                cast,
                fanout,
                warmup,
            } => {
                let cast = cast || fanout;
                let body: Arc<Vec<u8>> = Arc::new(
                    (0..payload_size + overhead)
                        .map(|_| fastrand::lowercase() as u8)
                        .collect(),
                );
                let (lat, errors, start_ts, wall) = match cli.client {
                    Client::Ours => {
                        ours::client(
                            &cli.url,
                            &cli.exchange,
                            &topic,
                            calls,
                            concurrency,
                            body,
                            cast,
                            fanout,
                            warmup,
                        )
                        .await
                    }
                    Client::Amqprs => {
                        with_amqprs::client(
                            &cli.url,
                            &cli.exchange,
                            &topic,
                            calls,
                            concurrency,
                            body,
                            cast,
                            fanout,
                            warmup,
                        )
                        .await
                    }
                };
                out(&summary(
                    cli.client,
                    calls,
                    concurrency,
                    payload_size,
                    cast,
                    fanout,
                    lat,
                    errors,
                    start_ts,
                    wall,
                ));
            }
        }
    });
}
