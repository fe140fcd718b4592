//! The errors of connections and channels.

use std::fmt;
use std::sync::Arc;

use crate::frame::FrameError;

/// What went wrong on a connection or channel.
///
/// Cheap to clone: one failure reaches every caller waiting on the connection. `Display` says
/// what failed and why; [`source`](std::error::Error::source) gives the I/O error behind
/// [`Connect`](Self::Connect) and [`Io`](Self::Io).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// The TCP connection could not be made.
    Connect {
        /// `host:port`.
        addr: String,
        /// Why.
        source: Arc<std::io::Error>,
    },
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
    Io(Arc<std::io::Error>),
    /// Nothing arrived from the broker for two heartbeat periods.
    HeartbeatTimeout,
    /// The broker sent something this client does not understand.
    Protocol(String),
    /// This side closed the connection or channel.
    Closed,
    /// An argument AMQP cannot carry (a name over 255 bytes, say).
    Invalid(String),
}

impl Error {
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

    /// A `406 PRECONDITION_FAILED` channel close for a declaration whose `durable` flag differs
    /// from the existing exchange or queue's (oslo's non-durable fallback answers it).
    pub fn is_durable_mismatch(&self) -> bool {
        matches!(self, Self::ChannelClosed { code: 406, text, .. } if text.contains("inequivalent arg 'durable'"))
    }

    /// The AMQP reply code, for broker-sent errors.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::ConnectionClosed { code, .. } | Self::ChannelClosed { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The address is a field (and in `Debug`): callers say where they connected.
            Self::Connect { source, .. } => write!(f, "cannot connect: {source}"),
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

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect { source, .. } | Self::Io(source) => Some(&**source),
            _ => None,
        }
    }
}

impl From<FrameError> for Error {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLong(..) => Self::Invalid(e.to_string()),
            _ => Self::Protocol(e.to_string()),
        }
    }
}

/// An I/O error, shared (errors are cloned to every waiter).
pub(crate) fn io_error(e: std::io::Error) -> Error {
    Error::Io(Arc::new(e))
}
