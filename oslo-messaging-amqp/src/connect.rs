//! Opening a connection: TCP, the optional TLS upgrade, and the AMQP handshake, all within
//! one timeout; then the I/O task takes the socket.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::auth::Login;
use crate::connection::{Connection, FirstError, Shared};
use crate::error::{Error, io_error};
use crate::frame::{
    self, FRAME_HEARTBEAT, FRAME_METHOD, FieldTable, FieldValue, Method, PROTOCOL_HEADER,
};
use crate::io::IoTask;

/// The client's preferred frame size (py-amqp's default).
const CLIENT_FRAME_MAX: u32 = 131_072;
/// Channels the client asks for.
const CLIENT_CHANNEL_MAX: u16 = 2047;

/// A byte stream to the broker, plain or TLS: what an [`Upgrade`] returns.
pub trait AsyncReadWrite: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AsyncReadWrite for T {}

/// Wraps a TCP stream in TLS (or not); given by the caller so this module knows no TLS library.
pub type Upgrade = Arc<
    dyn Fn(
            TcpStream,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Box<dyn AsyncReadWrite>, Error>> + Send>,
        > + Send
        + Sync,
>;

/// Everything needed to open a connection: [`new`](Self::new) with where and who, then
/// setters for the rest.
///
/// ```
/// use std::time::Duration;
/// use oslo_messaging_amqp::{ConnectParams, Login};
///
/// let params = ConnectParams::new("rmq1", 5672, Login::External)
///     .vhost("nova")
///     .heartbeat(30)
///     .connect_timeout(Duration::from_secs(2));
/// assert_eq!((params.vhost.as_str(), params.heartbeat), ("nova", 30));
/// ```
#[derive(Clone)]
#[non_exhaustive]
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

impl ConnectParams {
    /// Parameters for `host:port` with `login`; the rest defaults: virtual host `/`, a 60 s
    /// heartbeat checked twice a period, product `oslo-messaging-amqp`, no connection name, a
    /// 5 s connect timeout, no TLS.
    pub fn new(host: impl Into<String>, port: u16, login: Login) -> Self {
        Self {
            host: host.into(),
            port,
            vhost: "/".to_owned(),
            login,
            heartbeat: 60,
            heartbeat_rate: 2,
            connection_name: String::new(),
            product: "oslo-messaging-amqp".to_owned(),
            connect_timeout: Duration::from_secs(5),
            upgrade: None,
        }
    }

    /// The virtual host.
    #[must_use]
    pub fn vhost(mut self, vhost: impl Into<String>) -> Self {
        self.vhost = vhost.into();
        self
    }

    /// The heartbeat asked for, in seconds (0: none).
    #[must_use]
    pub fn heartbeat(mut self, seconds: u16) -> Self {
        self.heartbeat = seconds;
        self
    }

    /// Heartbeat checks per heartbeat period.
    #[must_use]
    pub fn heartbeat_rate(mut self, rate: u16) -> Self {
        self.heartbeat_rate = rate;
        self
    }

    /// The `connection_name` client property.
    #[must_use]
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = name.into();
        self
    }

    /// The `product` client property.
    #[must_use]
    pub fn product(mut self, product: impl Into<String>) -> Self {
        self.product = product.into();
        self
    }

    /// Bounds the TCP connect, TLS and AMQP handshakes together.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Wraps the TCP stream before the handshake (TLS).
    #[must_use]
    pub fn upgrade(mut self, upgrade: Upgrade) -> Self {
        self.upgrade = Some(upgrade);
        self
    }
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

async fn read_frame_owned(
    stream: &mut Box<dyn AsyncReadWrite>,
    buf: &mut Vec<u8>,
) -> Result<(u8, u16, Vec<u8>), Error> {
    loop {
        if let Some((f, used)) = frame::parse_frame(buf, 0)? {
            let out = (f.kind, f.channel, f.payload.to_vec());
            buf.drain(..used);
            return Ok(out);
        }
        buf.reserve(4096);
        let n = stream.read_buf(buf).await.map_err(io_error)?;
        if n == 0 {
            return Err(Error::Io(Arc::new(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the broker closed the socket",
            ))));
        }
    }
}

async fn read_method(
    stream: &mut Box<dyn AsyncReadWrite>,
    buf: &mut Vec<u8>,
) -> Result<Method, Error> {
    loop {
        let (kind, _channel, payload) = read_frame_owned(stream, buf).await?;
        match kind {
            FRAME_HEARTBEAT => {}
            FRAME_METHOD => return Ok(Method::decode(&payload)?),
            other => {
                return Err(Error::Protocol(format!(
                    "unexpected frame type {other} during the handshake"
                )));
            }
        }
    }
}

async fn send_method(stream: &mut Box<dyn AsyncReadWrite>, method: &Method) -> Result<(), Error> {
    let mut buf = Vec::new();
    frame::write_method(&mut buf, 0, method)?;
    stream.write_all(&buf).await.map_err(io_error)?;
    stream.flush().await.map_err(io_error)
}

/// Client properties in py-amqp's order and keys (product, product_version, capabilities,
/// connection_name), so brokers and operators see the same shape.
fn client_properties(params: &ConnectParams) -> FieldTable {
    FieldTable::from(vec![
        ("product".to_owned(), FieldValue::str(&params.product)),
        (
            "product_version".into(),
            FieldValue::str(env!("CARGO_PKG_VERSION")),
        ),
        (
            "capabilities".into(),
            FieldValue::Table(FieldTable::from(vec![
                (
                    "authentication_failure_close".into(),
                    FieldValue::Bool(true),
                ),
                ("connection.blocked".into(), FieldValue::Bool(true)),
                ("consumer_cancel_notify".into(), FieldValue::Bool(true)),
            ])),
        ),
        (
            "connection_name".into(),
            FieldValue::str(&params.connection_name),
        ),
    ])
}

/// A `connection.close` during the handshake: only an explicit refusal (403 bad credentials,
/// 530 vhost not allowed) is a login failure; anything else may pass and is retried.
fn close_during_handshake(code: u16, text: String) -> Error {
    match code {
        403 | 530 => Error::AuthenticationFailed(format!("{code} {text}")),
        _ => Error::ConnectionClosed { code, text },
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
    stream: &mut Box<dyn AsyncReadWrite>,
    params: &ConnectParams,
) -> Result<Tuned, Error> {
    stream.write_all(PROTOCOL_HEADER).await.map_err(io_error)?;
    let mut buf = Vec::with_capacity(4096);
    let Method::ConnectionStart {
        server_properties,
        mechanisms,
        ..
    } = read_method(stream, &mut buf).await?
    else {
        return Err(Error::Protocol("expected connection.start".into()));
    };
    let mechanism = params.login.mechanism();
    if !mechanisms.split_whitespace().any(|m| m == mechanism) {
        return Err(Error::AuthenticationFailed(format!(
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
                    return Err(Error::Protocol("unexpected connection.secure".into()));
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
                return Err(Error::Protocol(format!(
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
        Method::ConnectionOpenOk {} => {}
        Method::ConnectionClose { code, text, .. } => {
            return Err(close_during_handshake(code, text));
        }
        other => {
            return Err(Error::Protocol(format!(
                "expected connection.open-ok, got {:?}",
                other.id()
            )));
        }
    }
    if !buf.is_empty() {
        return Err(Error::Protocol(
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
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] when TCP fails, [`Error::Timeout`] when a step does not finish in
    /// time, [`Error::Tls`] from the upgrade, [`Error::AuthenticationFailed`] for refused
    /// credentials or a mechanism the broker does not offer, [`Error::ConnectionClosed`] for
    /// another refusal (a virtual host this user may not open), [`Error::Io`] and
    /// [`Error::Protocol`] for a broken handshake.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropped before it returns, the half-open socket is closed and nothing is
    /// left running.
    pub async fn open(params: &ConnectParams) -> Result<Self, Error> {
        let deadline = Instant::now() + params.connect_timeout;
        let addr = format!("{}:{}", params.host, params.port);
        let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(&addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(Error::Connect {
                    addr,
                    source: Arc::new(e),
                });
            }
            Err(_) => return Err(Error::Timeout("connecting")),
        };
        let _ = tcp.set_nodelay(true);
        let mut stream: Box<dyn AsyncReadWrite> = match &params.upgrade {
            Some(upgrade) => match tokio::time::timeout_at(deadline, upgrade(tcp)).await {
                Ok(s) => s?,
                Err(_) => return Err(Error::Timeout("the TLS handshake")),
            },
            None => Box::new(tcp),
        };
        let tuned = match tokio::time::timeout_at(deadline, handshake(&mut stream, params)).await {
            Ok(t) => t?,
            Err(_) => return Err(Error::Timeout("the AMQP handshake")),
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
        let io = IoTask::new(
            stream,
            cmd_rx,
            tuned.channel_max.max(1),
            tuned.frame_max as usize,
            (tuned.heartbeat > 0).then(|| Duration::from_secs(u64::from(tuned.heartbeat))),
            params.heartbeat_rate.max(1),
            shared.clone(),
        );
        tokio::spawn(io.run());
        Ok(Self::from_parts(cmd_tx, shared))
    }
}
