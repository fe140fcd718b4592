//! An AMQP 0-9-1 connection: the handshake, and one task that owns the socket.
//!
//! The I/O task reads and writes concurrently in one `select!` loop (a full socket never stops
//! it from reading `connection.blocked`, acks or heartbeats), demultiplexes frames to channels,
//! resolves RPC replies in order, tracks publisher confirms per channel (pipelined: any number
//! of publishes can wait for their confirm at once), matches `basic.return` to the publish it
//! returns, and sends heartbeats. Callers encode frames in their own task and hand them over;
//! nothing they do can block the I/O task.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::frame::{
    self, ContentHeader, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FieldTable,
    FieldValue, FrameError, Method, PROTOCOL_HEADER, Properties, RawFrame,
};

/// What went wrong on a connection or channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmqpError {
    /// The TCP connection could not be made.
    Connect(String),
    /// A step did not finish in time (connecting, the TLS or AMQP handshake, closing).
    Timeout(&'static str),
    /// TLS failed (certificate, host name, protocol).
    Tls(String),
    /// The broker refused the credentials (403, or a close right after the login).
    AuthenticationFailed(String),
    /// The broker closed the connection (320 forced, 530 vhost not allowed, 541...).
    ConnectionClosed {
        /// The AMQP reply code.
        code: u16,
        /// The broker's reason.
        text: String,
    },
    /// The broker closed a channel (404 not found, 406 precondition failed...).
    ChannelClosed {
        /// The AMQP reply code.
        code: u16,
        /// The broker's reason.
        text: String,
        /// The class of the method that failed.
        class_id: u16,
        /// The method that failed.
        method_id: u16,
    },
    /// A read or write failed, or the peer closed the socket.
    Io(String),
    /// Nothing arrived from the broker for two heartbeat periods.
    HeartbeatTimeout,
    /// The broker sent something this client does not understand.
    Protocol(String),
    /// This side closed the connection or channel.
    Closed,
    /// An argument AMQP cannot carry (a name over 255 bytes, say).
    Invalid(String),
}

impl AmqpError {
    /// Whether the connection as a whole is gone (as opposed to one channel).
    pub fn is_connection_level(&self) -> bool {
        !matches!(self, Self::ChannelClosed { .. } | Self::Invalid(_))
    }

    /// Whether retrying against the same broker cannot help (bad credentials, vhost refused).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::AuthenticationFailed(_)
                | Self::ConnectionClosed {
                    code: 403 | 530,
                    ..
                }
        )
    }

    /// The AMQP reply code, for broker-sent errors.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::ConnectionClosed { code, .. } | Self::ChannelClosed { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
            Self::Timeout(what) => write!(f, "{what} timed out"),
            Self::Tls(e) => write!(f, "TLS error: {e}"),
            Self::AuthenticationFailed(e) => write!(f, "authentication failed: {e}"),
            Self::ConnectionClosed { code, text } => {
                write!(f, "the broker closed the connection: {code} {text}")
            }
            Self::ChannelClosed { code, text, .. } => {
                write!(f, "the broker closed the channel: {code} {text}")
            }
            Self::Io(e) => write!(f, "connection lost: {e}"),
            Self::HeartbeatTimeout => {
                f.write_str("no heartbeat from the broker for two heartbeat periods")
            }
            Self::Protocol(e) => write!(f, "AMQP protocol error: {e}"),
            Self::Closed => f.write_str("closed"),
            Self::Invalid(e) => write!(f, "invalid AMQP argument: {e}"),
        }
    }
}

impl std::error::Error for AmqpError {}

impl From<FrameError> for AmqpError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLong(..) => Self::Invalid(e.to_string()),
            _ => Self::Protocol(e.to_string()),
        }
    }
}

/// How to log in.
#[derive(Clone, PartialEq, Eq)]
pub enum Login {
    /// SASL PLAIN.
    Plain {
        /// The user name.
        user: String,
        /// The password (never shown by `Debug`).
        password: String,
    },
    /// RabbitMQ's AMQPLAIN (py-amqp's default).
    AmqPlain {
        /// The user name.
        user: String,
        /// The password (never shown by `Debug`).
        password: String,
    },
    /// SASL EXTERNAL: the TLS client certificate is the identity.
    External,
    /// RabbitMQ's RABBIT-CR-DEMO test mechanism (sends the password in clear).
    CrDemo {
        /// The user name.
        user: String,
        /// The password (never shown by `Debug`).
        password: String,
    },
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, user) = match self {
            Self::Plain { user, .. } => ("PLAIN", Some(user)),
            Self::AmqPlain { user, .. } => ("AMQPLAIN", Some(user)),
            Self::External => ("EXTERNAL", None),
            Self::CrDemo { user, .. } => ("RABBIT-CR-DEMO", Some(user)),
        };
        f.debug_struct("Login")
            .field("mechanism", &name)
            .field("user", &user)
            .finish_non_exhaustive()
    }
}

impl Login {
    fn mechanism(&self) -> &'static str {
        match self {
            Self::Plain { .. } => "PLAIN",
            Self::AmqPlain { .. } => "AMQPLAIN",
            Self::External => "EXTERNAL",
            Self::CrDemo { .. } => "RABBIT-CR-DEMO",
        }
    }

    fn response(&self) -> Result<Vec<u8>, FrameError> {
        Ok(match self {
            Self::Plain { user, password } => {
                let mut r = Vec::with_capacity(user.len() + password.len() + 2);
                r.push(0);
                r.extend_from_slice(user.as_bytes());
                r.push(0);
                r.extend_from_slice(password.as_bytes());
                r
            }
            Self::AmqPlain { user, password } => {
                let mut r = Vec::new();
                frame::Writer::new(&mut r).table_entries(&vec![
                    ("LOGIN".to_owned(), FieldValue::str(user)),
                    ("PASSWORD".to_owned(), FieldValue::str(password)),
                ])?;
                r
            }
            Self::External => Vec::new(),
            Self::CrDemo { user, .. } => user.as_bytes().to_vec(),
        })
    }
}

/// A stream to the broker, plain or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Wraps a TCP stream in TLS (or not); given by the caller so this module knows no TLS library.
pub type Upgrade = Arc<
    dyn Fn(
            TcpStream,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Box<dyn Stream>, AmqpError>> + Send>,
        > + Send
        + Sync,
>;

/// Everything needed to open a connection.
#[derive(Clone)]
pub struct ConnectParams {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Virtual host, such as `/`.
    pub vhost: String,
    /// How to log in.
    pub login: Login,
    /// Requested heartbeat in seconds (0: none).
    pub heartbeat: u16,
    /// Heartbeat checks per heartbeat period (oslo's `heartbeat_rate`).
    pub heartbeat_rate: u16,
    /// The `connection_name` client property (shown by the management UI).
    pub connection_name: String,
    /// The `product` client property.
    pub product: String,
    /// Bounds TCP connect, TLS and AMQP handshakes together.
    pub connect_timeout: Duration,
    /// Wraps the TCP stream before the handshake (TLS).
    pub upgrade: Option<Upgrade>,
}

impl fmt::Debug for ConnectParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectParams")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("vhost", &self.vhost)
            .field("login", &self.login)
            .field("heartbeat", &self.heartbeat)
            .field("tls", &self.upgrade.is_some())
            .finish_non_exhaustive()
    }
}

/// The client's preferred frame size (py-amqp's default).
const CLIENT_FRAME_MAX: u32 = 131_072;
/// Channels the client asks for.
const CLIENT_CHANNEL_MAX: u16 = 2047;
/// Read and write buffers shrink back to this after a burst made them larger.
const BUFFER_KEEP: usize = 256 * 1024;
/// Stop taking commands while this much is waiting to be written.
const WRITE_HIGH_WATER: usize = 4 << 20;
/// Largest message body accepted (RabbitMQ's own hard maximum is 512 MiB).
const MAX_BODY: u64 = 512 << 20;
/// How long a client-initiated close waits for `close-ok`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// How a publish ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirm {
    /// The broker took responsibility for it (or the channel is not in confirm mode).
    Ack,
    /// The broker refused it.
    Nack,
    /// A mandatory publish that no queue took (`basic.return`), then acknowledged.
    Returned {
        /// The AMQP reply code (312 `NO_ROUTE`).
        code: u16,
        /// The broker's reason.
        text: String,
    },
}

/// A message delivered to a consumer.
#[derive(Debug)]
pub struct Delivery {
    /// The tag to acknowledge or reject it with, on its channel.
    pub delivery_tag: u64,
    /// Its properties.
    pub properties: Properties,
    /// Its body.
    pub body: Vec<u8>,
}

/// What a consumer receives: deliveries and cancellations carry the consumer tag, so one
/// receiver can serve several consumers.
// Deliveries are the common case and move once through a channel: boxing them would only add
// an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum ConsumerEvent {
    /// A message for the consumer with this tag.
    Delivery(String, Delivery),
    /// The broker cancelled the consumer (its queue was deleted, failover...).
    Cancelled(String),
}

/// The error that ended a connection or channel: the first one set stays.
#[derive(Default)]
struct FirstError(Mutex<Option<AmqpError>>);

impl FirstError {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<AmqpError>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, e: AmqpError) {
        self.slot().get_or_insert(e);
    }

    fn get(&self) -> Option<AmqpError> {
        self.slot().clone()
    }
}

struct Shared {
    error: FirstError,
    closed: watch::Sender<bool>,
    blocked: watch::Sender<Option<String>>,
    frame_max: usize,
    server_properties: FieldTable,
}

impl Shared {
    fn fail(&self, e: AmqpError) {
        self.error.set(e);
        self.closed.send_replace(true);
    }

    fn error(&self) -> AmqpError {
        self.error.get().unwrap_or(AmqpError::Closed)
    }
}

struct ChanShared {
    error: FirstError,
}

impl ChanShared {
    fn fail(&self, e: AmqpError) {
        self.error.set(e);
    }

    fn error(&self) -> Option<AmqpError> {
        self.error.get()
    }
}

enum Command {
    OpenChannel {
        reply: ChannelOpened,
    },
    Rpc {
        channel: u16,
        frame: Vec<u8>,
        expect: (u16, u16),
        reply: oneshot::Sender<Result<Method, AmqpError>>,
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

/// A connection to the broker. Cheap to clone; the connection closes when the last clone is
/// dropped or [`close`](Self::close) is called.
#[derive(Clone)]
pub struct Connection {
    cmd: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("closed", &*self.shared.closed.borrow())
            .finish_non_exhaustive()
    }
}

/// A channel on a connection. Cheap to clone.
#[derive(Clone)]
pub struct Channel {
    id: u16,
    conn: Connection,
    shared: Arc<ChanShared>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

async fn read_frame_owned(
    stream: &mut Box<dyn Stream>,
    buf: &mut Vec<u8>,
) -> Result<(u8, u16, Vec<u8>), AmqpError> {
    loop {
        if let Some((f, used)) = frame::parse_frame(buf, 0)? {
            let out = (f.kind, f.channel, f.payload.to_vec());
            buf.drain(..used);
            return Ok(out);
        }
        buf.reserve(4096);
        let n = stream
            .read_buf(buf)
            .await
            .map_err(|e| AmqpError::Io(e.to_string()))?;
        if n == 0 {
            return Err(AmqpError::Io("the broker closed the socket".into()));
        }
    }
}

async fn read_method(stream: &mut Box<dyn Stream>, buf: &mut Vec<u8>) -> Result<Method, AmqpError> {
    loop {
        let (kind, _channel, payload) = read_frame_owned(stream, buf).await?;
        match kind {
            FRAME_HEARTBEAT => {}
            FRAME_METHOD => return Ok(Method::decode(&payload)?),
            other => {
                return Err(AmqpError::Protocol(format!(
                    "unexpected frame type {other} during the handshake"
                )));
            }
        }
    }
}

async fn send_method(stream: &mut Box<dyn Stream>, method: &Method) -> Result<(), AmqpError> {
    let mut buf = Vec::new();
    frame::write_method(&mut buf, 0, method)?;
    stream
        .write_all(&buf)
        .await
        .map_err(|e| AmqpError::Io(e.to_string()))?;
    stream
        .flush()
        .await
        .map_err(|e| AmqpError::Io(e.to_string()))
}

/// Client properties in py-amqp's order and keys (product, product_version, capabilities,
/// connection_name), so brokers and operators see the same shape.
fn client_properties(params: &ConnectParams) -> FieldTable {
    vec![
        ("product".into(), FieldValue::str(&params.product)),
        (
            "product_version".into(),
            FieldValue::str(env!("CARGO_PKG_VERSION")),
        ),
        (
            "capabilities".into(),
            FieldValue::Table(vec![
                (
                    "authentication_failure_close".into(),
                    FieldValue::Bool(true),
                ),
                ("connection.blocked".into(), FieldValue::Bool(true)),
                ("consumer_cancel_notify".into(), FieldValue::Bool(true)),
            ]),
        ),
        (
            "connection_name".into(),
            FieldValue::str(&params.connection_name),
        ),
    ]
}

/// A `connection.close` during the handshake: only an explicit refusal (403 bad credentials,
/// 530 vhost not allowed) is a login failure; anything else may pass and is retried.
fn close_during_handshake(code: u16, text: String) -> AmqpError {
    match code {
        403 | 530 => AmqpError::AuthenticationFailed(format!("{code} {text}")),
        _ => AmqpError::ConnectionClosed { code, text },
    }
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

/// Negotiated values of the handshake.
struct Tuned {
    channel_max: u16,
    frame_max: u32,
    heartbeat: u16,
    server_properties: FieldTable,
}

async fn handshake(
    stream: &mut Box<dyn Stream>,
    params: &ConnectParams,
) -> Result<Tuned, AmqpError> {
    stream
        .write_all(PROTOCOL_HEADER)
        .await
        .map_err(|e| AmqpError::Io(e.to_string()))?;
    let mut buf = Vec::with_capacity(4096);
    let Method::ConnectionStart {
        server_properties,
        mechanisms,
        ..
    } = read_method(stream, &mut buf).await?
    else {
        return Err(AmqpError::Protocol("expected connection.start".into()));
    };
    let mechanism = params.login.mechanism();
    if !mechanisms.split_whitespace().any(|m| m == mechanism) {
        return Err(AmqpError::AuthenticationFailed(format!(
            "the broker does not offer the {mechanism} login method (it offers: {mechanisms})"
        )));
    }
    send_method(
        stream,
        &Method::ConnectionStartOk {
            client_properties: client_properties(params),
            mechanism: mechanism.into(),
            response: params.login.response()?,
            locale: "en_US".into(),
        },
    )
    .await?;
    // We advertise authentication_failure_close, so a refused login comes as a 403 close; a
    // socket that just closes here is a network or broker failure, retried like any other.
    let (channel_max, frame_max, heartbeat) = loop {
        match read_method(stream, &mut buf).await? {
            Method::ConnectionSecure { .. } => {
                let Login::CrDemo { password, .. } = &params.login else {
                    return Err(AmqpError::Protocol("unexpected connection.secure".into()));
                };
                send_method(
                    stream,
                    &Method::ConnectionSecureOk {
                        response: format!("My password is {password}").into_bytes(),
                    },
                )
                .await?;
            }
            Method::ConnectionTune {
                channel_max,
                frame_max,
                heartbeat,
            } => break (channel_max, frame_max, heartbeat),
            Method::ConnectionClose { code, text, .. } => {
                return Err(close_during_handshake(code, text));
            }
            other => {
                return Err(AmqpError::Protocol(format!(
                    "unexpected {:?} during the handshake",
                    other.id()
                )));
            }
        }
    };
    let negotiate = |server: u32, client: u32| {
        if server == 0 || client == 0 {
            server.max(client)
        } else {
            server.min(client)
        }
    };
    let channel_max = negotiate(u32::from(channel_max), u32::from(CLIENT_CHANNEL_MAX)) as u16;
    let frame_max = negotiate(frame_max, CLIENT_FRAME_MAX);
    // py-amqp: the smaller non-zero value; a client asking for 0 disables heartbeats.
    let heartbeat = if params.heartbeat == 0 {
        0
    } else {
        negotiate(u32::from(heartbeat), u32::from(params.heartbeat)) as u16
    };
    send_method(
        stream,
        &Method::ConnectionTuneOk {
            channel_max,
            frame_max,
            heartbeat,
        },
    )
    .await?;
    send_method(
        stream,
        &Method::ConnectionOpen {
            vhost: params.vhost.clone(),
        },
    )
    .await?;
    match read_method(stream, &mut buf).await? {
        Method::ConnectionOpenOk => {}
        Method::ConnectionClose { code, text, .. } => {
            return Err(close_during_handshake(code, text));
        }
        other => {
            return Err(AmqpError::Protocol(format!(
                "expected connection.open-ok, got {:?}",
                other.id()
            )));
        }
    }
    if !buf.is_empty() {
        return Err(AmqpError::Protocol(
            "unexpected data after connection.open-ok".into(),
        ));
    }
    Ok(Tuned {
        channel_max,
        frame_max,
        heartbeat,
        server_properties,
    })
}

impl Connection {
    /// Connects, logs in and opens the virtual host, all within `params.connect_timeout`.
    pub async fn open(params: &ConnectParams) -> Result<Self, AmqpError> {
        let deadline = Instant::now() + params.connect_timeout;
        let addr = format!("{}:{}", params.host, params.port);
        let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(&addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(AmqpError::Connect(format!("{addr}: {e}"))),
            Err(_) => return Err(AmqpError::Timeout("connecting")),
        };
        let _ = tcp.set_nodelay(true);
        let mut stream: Box<dyn Stream> = match &params.upgrade {
            Some(upgrade) => match tokio::time::timeout_at(deadline, upgrade(tcp)).await {
                Ok(s) => s?,
                Err(_) => return Err(AmqpError::Timeout("the TLS handshake")),
            },
            None => Box::new(tcp),
        };
        let tuned = match tokio::time::timeout_at(deadline, handshake(&mut stream, params)).await {
            Ok(t) => t?,
            Err(_) => return Err(AmqpError::Timeout("the AMQP handshake")),
        };
        let (cmd_tx, cmd_rx) = mpsc::channel(1024);
        let (closed, _) = watch::channel(false);
        let (blocked, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            error: FirstError::default(),
            closed,
            blocked,
            frame_max: tuned.frame_max as usize,
            server_properties: tuned.server_properties,
        });
        let (reader, writer) = tokio::io::split(stream);
        let io = IoTask {
            reader,
            writer,
            needs_flush: false,
            rbuf: Vec::with_capacity(64 * 1024),
            wbuf: Vec::with_capacity(64 * 1024),
            wpos: 0,
            cmd_rx,
            channels: HashMap::new(),
            channel_max: tuned.channel_max.max(1),
            next_channel: 1,
            frame_max: tuned.frame_max as usize,
            heartbeat: (tuned.heartbeat > 0)
                .then(|| Duration::from_secs(u64::from(tuned.heartbeat))),
            heartbeat_rate: params.heartbeat_rate.max(1),
            last_read: Instant::now(),
            last_write: Instant::now(),
            shared: shared.clone(),
            closing: None,
        };
        tokio::spawn(io.run());
        Ok(Self {
            cmd: cmd_tx,
            shared,
        })
    }

    async fn send(&self, cmd: Command) -> Result<(), AmqpError> {
        self.cmd.send(cmd).await.map_err(|_| self.shared.error())
    }

    /// Opens a channel.
    pub async fn channel(&self) -> Result<Channel, AmqpError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::OpenChannel { reply: tx }).await?;
        let (id, shared) = rx.await.map_err(|_| self.shared.error())??;
        Ok(Channel {
            id,
            conn: self.clone(),
            shared,
        })
    }

    /// Why the connection ended, once it has.
    pub fn error(&self) -> Option<AmqpError> {
        (*self.shared.closed.borrow()).then(|| self.shared.error())
    }

    /// Completes when the connection ends, with the reason.
    pub async fn closed(&self) -> AmqpError {
        let mut rx = self.shared.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
        self.shared.error()
    }

    /// The broker's `connection.blocked` reason while it blocks publishing.
    pub fn blocked(&self) -> Option<String> {
        self.shared.blocked.borrow().clone()
    }

    /// Watches the blocked state.
    pub fn watch_blocked(&self) -> watch::Receiver<Option<String>> {
        self.shared.blocked.subscribe()
    }

    /// The negotiated largest frame.
    pub fn frame_max(&self) -> usize {
        self.shared.frame_max
    }

    /// A server property (such as `version` or `cluster_name`).
    pub fn server_property(&self, key: &str) -> Option<String> {
        frame::table_get(&self.shared.server_properties, key)
            .and_then(FieldValue::as_str)
            .map(str::to_owned)
    }

    /// Closes the connection politely (waits a moment for `close-ok`).
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::Close { reply: tx }).await.is_ok() {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT * 2, rx).await;
        }
    }
}

impl Channel {
    /// The channel number.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Whether `other` is a handle to this very channel (not merely one with the same number,
    /// which a later channel may reuse).
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    fn check(&self) -> Result<(), AmqpError> {
        if let Some(e) = self.conn.error() {
            return Err(e);
        }
        match self.shared.error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Why the channel or its connection ended.
    pub fn error(&self) -> Option<AmqpError> {
        self.check().err()
    }

    fn dead(&self) -> AmqpError {
        self.shared
            .error()
            .unwrap_or_else(|| self.conn.shared.error())
    }

    async fn rpc_inner(
        &self,
        method: &Method,
        expect: (u16, u16),
        consumer: Option<mpsc::UnboundedSender<ConsumerEvent>>,
        starts_confirms: bool,
    ) -> Result<Method, AmqpError> {
        self.check()?;
        let mut frame = Vec::new();
        frame::write_method(&mut frame, self.id, method)?;
        let (tx, rx) = oneshot::channel();
        self.conn
            .send(Command::Rpc {
                channel: self.id,
                frame,
                expect,
                reply: tx,
                consumer,
                starts_confirms,
            })
            .await?;
        match rx.await {
            // The channel was gone when the command got there: say why it went.
            Ok(Err(AmqpError::Closed)) | Err(_) => Err(self.dead()),
            Ok(other) => other,
        }
    }

    /// Sends a synchronous method and waits for its reply.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves the channel consistent: if the method already went out, the
    /// broker still carries it out and its reply is discarded when it comes.
    pub async fn rpc(&self, method: &Method, expect: (u16, u16)) -> Result<Method, AmqpError> {
        self.rpc_inner(method, expect, None, false).await
    }

    /// Puts the channel in confirm mode: every later publish waits for the broker's ack.
    ///
    /// # Cancel safety
    ///
    /// The connection's task, not this future, switches the channel: once the request is
    /// handed over, the channel is in confirm mode for every later publish even if this
    /// future is dropped before the broker's `confirm.select-ok`, so no publish is ever
    /// reported as confirmed without the broker's ack. Dropped before the hand-over, the
    /// channel stays as it was.
    pub async fn confirm_select(&self) -> Result<(), AmqpError> {
        self.rpc_inner(
            &Method::ConfirmSelect { no_wait: false },
            (85, 11),
            None,
            true,
        )
        .await
        .map(|_| ())
    }

    /// Starts a consumer; returns its tag and its deliveries (which end when the consumer is
    /// cancelled or the channel closes).
    ///
    /// Dropping the receiver cancels the consumer (`basic.cancel`): deliveries that reach it
    /// afterwards are rejected and requeued once, for other consumers, instead of being
    /// redelivered to this one in a loop. Deliveries the receiver held unread when it was
    /// dropped stay unacknowledged until the channel closes, as with any unsettled delivery.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it returns drops the receiver with it, so a consumer the
    /// broker starts anyway is cancelled as above.
    pub async fn consume(
        &self,
        queue: &str,
        consumer_tag: &str,
        no_ack: bool,
        arguments: FieldTable,
    ) -> Result<(String, mpsc::UnboundedReceiver<ConsumerEvent>), AmqpError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let tag = self
            .consume_into(queue, consumer_tag, no_ack, arguments, tx)
            .await?;
        Ok((tag, rx))
    }

    /// Starts a consumer whose events go to `events` (shared by several consumers); returns
    /// its tag. When the receiver of `events` is dropped, every consumer feeding it is
    /// cancelled, as for [`consume`](Self::consume).
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped after the request went out, the broker may start the consumer
    /// anyway: its deliveries then reach `events` under a tag the caller never saw, until
    /// the receiver is dropped or the channel closes.
    pub async fn consume_into(
        &self,
        queue: &str,
        consumer_tag: &str,
        no_ack: bool,
        arguments: FieldTable,
        events: mpsc::UnboundedSender<ConsumerEvent>,
    ) -> Result<String, AmqpError> {
        let tx = events;
        let method = Method::BasicConsume {
            queue: queue.to_owned(),
            consumer_tag: consumer_tag.to_owned(),
            no_local: false,
            no_ack,
            exclusive: false,
            no_wait: false,
            arguments,
        };
        match self.rpc_inner(&method, (60, 21), Some(tx), false).await? {
            Method::BasicConsumeOk { consumer_tag } => Ok(consumer_tag),
            _ => Err(AmqpError::Protocol("expected basic.consume-ok".into())),
        }
    }

    /// Publishes a message. In confirm mode the future completes with the broker's verdict;
    /// otherwise once the frames are queued.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe as to the message: once its frames are handed to the connection's task
    /// it is sent whole (never cut between frames), and dropping the future only discards
    /// the broker's verdict. Dropped before the hand-over, nothing is sent.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        properties: &Properties,
        body: &[u8],
    ) -> Result<Confirm, AmqpError> {
        self.check()?;
        let mut frames = Vec::with_capacity(body.len() + 256);
        let method = Method::BasicPublish {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            mandatory,
            immediate: false,
        };
        frame::write_publish(
            &mut frames,
            self.id,
            &method,
            properties,
            body,
            self.conn.frame_max(),
        )?;
        // Whether the channel is in confirm mode is the connection task's to know: it answers
        // at once for a channel that is not.
        let key = if mandatory {
            return_key(routing_key, body)
        } else {
            0
        };
        let (tx, rx) = oneshot::channel();
        self.conn
            .send(Command::Publish {
                channel: self.id,
                frames,
                confirm: Some((tx, key)),
            })
            .await?;
        rx.await.map_err(|_| self.dead())
    }

    async fn send_frame(&self, method: &Method) -> Result<(), AmqpError> {
        self.check()?;
        let mut frame = Vec::new();
        frame::write_method(&mut frame, self.id, method)?;
        self.conn
            .send(Command::Send {
                channel: self.id,
                frame,
            })
            .await
    }

    /// Acknowledges a delivery.
    pub async fn ack(&self, delivery_tag: u64) -> Result<(), AmqpError> {
        self.send_frame(&Method::BasicAck {
            delivery_tag,
            multiple: false,
        })
        .await
    }

    /// Rejects a delivery, requeueing it or not.
    pub async fn reject(&self, delivery_tag: u64, requeue: bool) -> Result<(), AmqpError> {
        self.send_frame(&Method::BasicReject {
            delivery_tag,
            requeue,
        })
        .await
    }

    /// Closes the channel (its consumers end, publishes waiting for a confirm fail with
    /// [`AmqpError::Closed`]); waits a moment for the broker's `close-ok`.
    ///
    /// # Cancel safety
    ///
    /// Once the request is handed over the channel closes whether or not anyone waits.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .conn
            .send(Command::CloseChannel {
                channel: self.id,
                shared: self.shared.clone(),
                reply: tx,
            })
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, rx).await;
        }
    }

    /// Cancels a consumer (its deliveries end).
    ///
    /// # Cancel safety
    ///
    /// As [`rpc`](Self::rpc): once sent, the consumer is cancelled whether or not the future
    /// is still there for the reply.
    pub async fn cancel(&self, consumer_tag: &str) -> Result<(), AmqpError> {
        self.rpc(
            &Method::BasicCancel {
                consumer_tag: consumer_tag.to_owned(),
                no_wait: false,
            },
            (60, 31),
        )
        .await
        .map(|_| ())
    }
}

/// Identifies a mandatory publish in the `basic.return` that may come back for it: returns carry
/// no delivery tag, so the routing key and body are matched.
fn return_key(routing_key: &str, body: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    routing_key.hash(&mut h);
    body.hash(&mut h);
    h.finish() | 1
}

/// Where a new channel's number and shared state go once the broker opened it.
type ChannelOpened = oneshot::Sender<Result<(u16, Arc<ChanShared>), AmqpError>>;

struct PendingRpc {
    expect: (u16, u16),
    reply: Option<oneshot::Sender<Result<Method, AmqpError>>>,
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
    fn fail(&mut self, e: &AmqpError) {
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

struct IoTask {
    reader: tokio::io::ReadHalf<Box<dyn Stream>>,
    writer: tokio::io::WriteHalf<Box<dyn Stream>>,
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
    Exit(AmqpError),
}

impl IoTask {
    async fn run(mut self) {
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
                    Ok(0) => Step::Exit(AmqpError::Io("the broker closed the socket".into())),
                    Ok(_) => {
                        self.last_read = Instant::now();
                        self.handle_input()
                    }
                    Err(e) => Step::Exit(AmqpError::Io(e.to_string())),
                },
                // Writing and flushing share one branch (both need the writer); a pending flush
                // (TLS under back-pressure) never stops the reads.
                w = write_or_flush(&mut self.writer, &self.wbuf[self.wpos..], want_write),
                    if want_write || self.needs_flush => match w {
                    Ok(Written::Bytes(0)) => Step::Exit(AmqpError::Io("the socket refused more data".into())),
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
                    Err(e) => Step::Exit(AmqpError::Io(e.to_string())),
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
        if matches!(reason, AmqpError::HeartbeatTimeout | AmqpError::Io(_)) {
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

    fn fail_all(&mut self, e: &AmqpError) {
        if !matches!(e, AmqpError::Closed) {
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
            return Step::Exit(AmqpError::Closed);
        }
        let Some(h) = self.heartbeat else {
            return Step::Continue;
        };
        if now.duration_since(self.last_read) > h * 2 {
            return Step::Exit(AmqpError::HeartbeatTimeout);
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
                    let _ = reply.send(Err(AmqpError::Protocol(format!(
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
                self.write_method(id, &Method::ChannelOpen);
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
                    let _ = reply.send(Err(AmqpError::Closed));
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
                    step = self.protocol_error(AmqpError::from(e));
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

    fn protocol_error(&mut self, e: AmqpError) -> Step {
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
            other => self.protocol_error(AmqpError::Protocol(format!(
                "unexpected frame type {other}"
            ))),
        }
    }

    fn on_connection_method(&mut self, m: Method) -> Step {
        match m {
            Method::ConnectionClose { code, text, .. } => {
                self.write_method(0, &Method::ConnectionCloseOk);
                if code == 320 {
                    tracing::warn!(code, text, "the broker closed the connection");
                }
                Step::Exit(AmqpError::ConnectionClosed { code, text })
            }
            Method::ConnectionCloseOk if self.closing.is_some() => Step::Exit(AmqpError::Closed),
            Method::ConnectionBlocked { reason } => {
                tracing::warn!(reason, "the broker blocked publishing on this connection");
                self.shared.blocked.send_replace(Some(reason));
                Step::Continue
            }
            Method::ConnectionUnblocked => {
                tracing::info!("the broker unblocked publishing on this connection");
                self.shared.blocked.send_replace(None);
                Step::Continue
            }
            other => self.protocol_error(AmqpError::Protocol(format!(
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
            return self.protocol_error(AmqpError::Protocol(
                "a method arrived inside a message".into(),
            ));
        }
        match m {
            Method::ChannelClose {
                code,
                text,
                class_id,
                method_id,
            } => {
                let e = AmqpError::ChannelClosed {
                    code,
                    text,
                    class_id,
                    method_id,
                };
                tracing::debug!(channel, error = %e, "the broker closed a channel");
                if let Some(mut ch) = self.channels.remove(&channel) {
                    ch.fail(&e);
                }
                self.write_method(channel, &Method::ChannelCloseOk);
            }
            Method::ChannelCloseOk => {
                if let Some(mut ch) = self.channels.remove(&channel) {
                    ch.fail(&AmqpError::Closed);
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
                    return self.protocol_error(AmqpError::Protocol(format!(
                        "unexpected method {:?} on channel {channel}",
                        reply.id()
                    )));
                };
                if reply.id() != pending.expect {
                    return self.protocol_error(AmqpError::Protocol(format!(
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
            return self.protocol_error(AmqpError::Protocol("unexpected content header".into()));
        }
        if header.body_size > MAX_BODY {
            return self.protocol_error(AmqpError::Protocol(format!(
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
            return self.protocol_error(AmqpError::Protocol("unexpected content body".into()));
        };
        let Some(header) = &incoming.header else {
            return self
                .protocol_error(AmqpError::Protocol("content body before its header".into()));
        };
        let size = header.body_size;
        incoming.body.extend_from_slice(payload);
        let have = incoming.body.len() as u64;
        if have > size {
            return self.protocol_error(AmqpError::Protocol(
                "content body longer than announced".into(),
            ));
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

fn reject_command(cmd: Command, e: &AmqpError) {
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
    use super::*;
    use tokio::net::TcpListener;

    /// The next method a client sent, read from `s` into `buf`.
    async fn next_method(s: &mut TcpStream, buf: &mut Vec<u8>) -> Method {
        loop {
            if let Some((f, used)) = frame::parse_frame(buf, 0).unwrap() {
                let m = Method::decode(f.payload).unwrap();
                buf.drain(..used);
                return m;
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the client hung up");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// A broker that logs the client in, opens channel 1, then sends `hostile` and waits
    /// until the client hangs up.
    async fn fake_broker(hostile: Vec<u8>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut header = [0u8; 8];
            s.read_exact(&mut header).await.unwrap();
            let mut buf = Vec::new();
            let send = |m: Method| {
                let mut out = Vec::new();
                frame::write_method(&mut out, 0, &m).unwrap();
                out
            };
            s.write_all(&send(Method::ConnectionStart {
                server_properties: vec![],
                mechanisms: "PLAIN".into(),
                locales: "en_US".into(),
            }))
            .await
            .unwrap();
            assert!(matches!(
                next_method(&mut s, &mut buf).await,
                Method::ConnectionStartOk { .. }
            ));
            s.write_all(&send(Method::ConnectionTune {
                channel_max: 10,
                frame_max: 131_072,
                heartbeat: 0,
            }))
            .await
            .unwrap();
            next_method(&mut s, &mut buf).await; // tune-ok
            next_method(&mut s, &mut buf).await; // open
            s.write_all(&send(Method::ConnectionOpenOk)).await.unwrap();
            assert_eq!(next_method(&mut s, &mut buf).await, Method::ChannelOpen);
            let mut out = Vec::new();
            frame::write_method(&mut out, 1, &Method::ChannelOpenOk).unwrap();
            out.extend_from_slice(&hostile);
            s.write_all(&out).await.unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        });
        port
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

    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    async fn connect(port: u16) -> Connection {
        Connection::open(&ConnectParams {
            host: "127.0.0.1".into(),
            port,
            vhost: "/".into(),
            login: Login::Plain {
                user: "u".into(),
                password: "p".into(),
            },
            heartbeat: 0,
            heartbeat_rate: 2,
            connection_name: "fake".into(),
            product: "tests".into(),
            connect_timeout: Duration::from_secs(5),
            upgrade: None,
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_body_announced_above_the_limit_is_refused_before_allocating_it() {
        let before = rss_kib();
        let port = fake_broker(delivery(MAX_BODY + 1, 0)).await;
        let conn = connect(port).await;
        let _ch = conn.channel().await.unwrap();
        let err = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .expect("the connection is closed at once");
        assert!(
            matches!(&err, AmqpError::Protocol(t) if t.contains("exceeds")),
            "{err:?}"
        );
        let grew = rss_kib().saturating_sub(before);
        println!("refused a {} byte body; RSS grew {grew} KiB", MAX_BODY + 1);
        assert!(grew < 8 * 1024, "RSS grew {grew} KiB");
    }

    #[tokio::test]
    async fn a_large_announced_body_is_not_reserved_up_front() {
        let before = rss_kib();
        // Within the limit, but only 10 bytes ever come: nothing near 500 MiB is reserved.
        let port = fake_broker(delivery(500 << 20, 10)).await;
        let conn = connect(port).await;
        let _ch = conn.channel().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(conn.error().is_none());
        let grew = rss_kib().saturating_sub(before);
        println!("a 500 MiB body announced, 10 bytes sent: RSS grew {grew} KiB");
        assert!(grew < 8 * 1024, "RSS grew {grew} KiB");
        conn.close().await;
    }
}
