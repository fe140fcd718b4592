//! The crate's error type.
//!
//! Every fallible operation returns [`Error`], an opaque value with a [`kind`](Error::kind) to match
//! on. The kinds map oslo.messaging's exception hierarchy:
//!
//! | [`ErrorKind`] | Python exception |
//! |---|---|
//! | [`Timeout`](ErrorKind::Timeout) | `MessagingTimeout` |
//! | [`DeliveryFailure`](ErrorKind::DeliveryFailure) | `MessageDeliveryFailure` |
//! | [`Undeliverable`](ErrorKind::Undeliverable) | `MessageUndeliverable` |
//! | [`InvalidTarget`](ErrorKind::InvalidTarget) | `InvalidTarget` |
//! | [`InvalidUrl`](ErrorKind::InvalidUrl) | `InvalidTransportURL` |
//! | [`Configuration`](ErrorKind::Configuration) | `ConfigurationError`, oslo.config errors |
//! | [`Remote`](ErrorKind::Remote) | `RemoteError` and re-raised remote exceptions |
//! | [`VersionCap`](ErrorKind::VersionCap) | `RPCVersionCapError` |
//! | [`AccessRefused`](ErrorKind::AccessRefused) | py-amqp's `AccessRefused` (bad credentials, vhost refused) |
//!
//! A failed `call` carries the [`RemoteError`] the server sent, exactly as the failure JSON
//! described it (class, module, message, traceback, args, kwargs); [`Error::remote_as`] turns
//! one into a Rust type of the caller's ([`RemoteException`]), as Python's
//! `allowed_remote_exmods` does.
//!
//! `Display` says what failed, then why (the source's text), each once: `cannot read config
//! file /etc/nova/nova.conf: No such file or directory (os error 2)`. The kind is not repeated
//! in the text; match on [`Error::kind`]. Messages that Python callers also see keep Python's
//! wording (a timeout reads `Timed out waiting for a reply to message ID ...`).

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

mod remote;

pub(crate) use remote::DISPATCHER_MODULE;
pub use remote::{RemoteError, RemoteException};

/// A `Result` whose error defaults to [`Error`].
///
/// # Examples
///
/// ```
/// fn exchange(url: &str) -> oslo_messaging::Result<String> {
///     Ok(oslo_messaging::Transport::from_url(url)?.control_exchange().to_owned())
/// }
/// assert_eq!(exchange("memory://").unwrap(), "openstack");
/// assert!(exchange("nosuch://").is_err());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The kinds of [`Error`].
///
/// New kinds may be added in minor releases, so a `match` needs a wildcard arm.
///
/// # Examples
///
/// ```
/// use oslo_messaging::{ErrorKind, Transport};
///
/// let err = Transport::from_url("rabbit://host/?heartbeat_rate=often").unwrap_err();
/// match err.kind() {
///     ErrorKind::Configuration => {}
///     other => panic!("unexpected {other}"),
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No reply arrived in time, or the call monitor saw no heartbeat in time
    /// (Python `MessagingTimeout`).
    Timeout,
    /// A publish failed after the allowed retries, or the broker refused it
    /// (Python `MessageDeliveryFailure`).
    DeliveryFailure,
    /// A mandatory publish found no queue (Python `MessageUndeliverable`).
    Undeliverable,
    /// The target misses a field its role needs, or a call was aimed at a fanout target.
    InvalidTarget,
    /// The transport URL could not be parsed or names an unknown driver.
    InvalidUrl,
    /// An option is unknown, has a bad value, or options conflict.
    Configuration,
    /// The remote side raised an error; see [`Error::remote_error`].
    Remote,
    /// The requested version is above the client's version cap.
    VersionCap,
    /// Arguments, a result or a payload could not be converted to or from JSON.
    Serialization,
    /// A message from the wire could not be understood (not JSON, bad envelope, missing fields).
    Protocol,
    /// The connection to the broker failed in a way not covered by another kind.
    Transport,
    /// The broker blocked publishing (memory or disk alarm).
    Blocked,
    /// The broker refused the credentials or the virtual host; retrying cannot help.
    AccessRefused,
    /// The transport, server or listener has been shut down.
    ShutDown,
    /// The server or listener was used out of order (for example started twice).
    InvalidState,
    /// A call's reply can no longer arrive: the direct reply-to channel it would come back on
    /// is gone (`rabbit_direct_reply_to`; with a reply queue, a reply published while the
    /// caller reconnects waits in the queue instead). The request may or may not have run.
    ReplyLost,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Timeout => "timed out",
            Self::DeliveryFailure => "delivery failed",
            Self::Undeliverable => "message undeliverable",
            Self::InvalidTarget => "invalid target",
            Self::InvalidUrl => "invalid transport URL",
            Self::Configuration => "configuration error",
            Self::Remote => "remote error",
            Self::VersionCap => "version cap exceeded",
            Self::Serialization => "serialization error",
            Self::Protocol => "protocol error",
            Self::Transport => "transport error",
            Self::Blocked => "connection blocked",
            Self::AccessRefused => "access refused",
            Self::ShutDown => "shut down",
            Self::InvalidState => "invalid state",
            Self::ReplyLost => "reply lost",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

type BoxError = Arc<dyn StdError + Send + Sync + 'static>;

/// The error of every fallible operation in this crate.
///
/// It is cheap to clone, so one failure (a lost reply connection, say) can be handed to many
/// waiting callers. Its text never contains a password: URLs are always rendered masked.
///
/// # Examples
///
/// ```
/// use oslo_messaging::{ErrorKind, TransportUrl};
///
/// let err = TransportUrl::parse("nosuch://host/").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidUrl);
/// assert!(err.to_string().contains("nosuch"));
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    remote: Option<RemoteError>,
    source: Option<BoxError>,
    /// Exchange and routing key of an undeliverable message.
    address: Option<(String, String)>,
}

impl Error {
    /// Creates an error of `kind` with a human-readable message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                remote: None,
                source: None,
                address: None,
            }),
        }
    }

    /// Creates an error of `kind` caused by `source`. `Display` shows the message, then the
    /// source's text: the message says what failed, not why.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                remote: None,
                source: Some(Arc::new(source)),
                address: None,
            }),
        }
    }

    /// Creates a [`Remote`](ErrorKind::Remote) error from the failure a server sent.
    pub fn remote(remote: RemoteError) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind: ErrorKind::Remote,
                message: String::new(),
                remote: Some(remote),
                source: None,
                address: None,
            }),
        }
    }

    /// Creates an [`Undeliverable`](ErrorKind::Undeliverable) error: no queue took a
    /// message published to `exchange` with `routing_key`; `message` says what was tried.
    pub(crate) fn undeliverable(
        exchange: impl Into<String>,
        routing_key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind: ErrorKind::Undeliverable,
                message: message.into(),
                remote: None,
                source: None,
                address: Some((exchange.into(), routing_key.into())),
            }),
        }
    }

    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The message: what failed, without the source's text that `Display` appends.
    pub fn message(&self) -> &str {
        match &self.inner.remote {
            Some(remote) => remote.message(),
            None => &self.inner.message,
        }
    }

    /// The failure the remote side sent, for [`ErrorKind::Remote`] errors.
    pub fn remote_error(&self) -> Option<&RemoteError> {
        self.inner.remote.as_ref()
    }

    /// `true` for [`ErrorKind::Timeout`].
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }

    /// `true` when the server has no endpoint with the method called (oslo's
    /// `NoSuchMethod`).
    pub fn is_no_such_method(&self) -> bool {
        self.remote_error()
            .is_some_and(RemoteError::is_no_such_method)
    }

    /// `true` when no endpoint of the server with the method takes the requested version
    /// or namespace (oslo's `UnsupportedVersion`).
    pub fn is_unsupported_version(&self) -> bool {
        self.remote_error()
            .is_some_and(RemoteError::is_unsupported_version)
    }

    /// The remote failure as `E`, when the server raised `E`'s class (see
    /// [`RemoteException`]); `None` for any other error.
    ///
    /// # Examples
    ///
    /// ```
    /// use oslo_messaging::rpc::{Endpoint, NoArgs, Request, RpcClient, RpcError, RpcServer};
    /// use oslo_messaging::{Context, RemoteException, Target, Transport};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Debug, Serialize, Deserialize)]
    /// struct InstanceNotFound {
    ///     instance_id: String,
    /// }
    ///
    /// impl RemoteException for InstanceNotFound {
    ///     const MODULE: &'static str = "nova.exception";
    ///     const CLASS: &'static str = "InstanceNotFound";
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> oslo_messaging::Result<()> {
    /// let transport = Transport::memory();
    /// let endpoint = Endpoint::builder()
    ///     .method("get", |_req: Request<NoArgs>| async {
    ///         let e = InstanceNotFound { instance_id: "vm-1".into() };
    ///         Err::<(), _>(RpcError::exception("Instance vm-1 could not be found.", &e))
    ///     })
    ///     .build()?;
    /// let server = RpcServer::builder(&transport, Target::new("compute").with_server("h1"))
    ///     .endpoint(endpoint)
    ///     .build()?;
    /// server.start().await?;
    ///
    /// let client = RpcClient::new(&transport, Target::new("compute"));
    /// let err = client.call::<()>(&Context::new(), "get", &NoArgs {}).await.unwrap_err();
    /// let not_found = err.remote_as::<InstanceNotFound>().expect("nova's exception");
    /// assert_eq!(not_found.instance_id, "vm-1");
    /// # server.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn remote_as<E: RemoteException>(&self) -> Option<E> {
        self.remote_error()?.to_exception()
    }

    /// The exchange of a message no queue took, for
    /// [`Undeliverable`](ErrorKind::Undeliverable) errors (Python's
    /// `MessageUndeliverable.exchange`).
    pub fn exchange(&self) -> Option<&str> {
        self.inner.address.as_ref().map(|(e, _)| e.as_str())
    }

    /// The routing key of a message no queue took, for
    /// [`Undeliverable`](ErrorKind::Undeliverable) errors (Python's
    /// `MessageUndeliverable.routing_key`).
    pub fn routing_key(&self) -> Option<&str> {
        self.inner.address.as_ref().map(|(_, k)| k.as_str())
    }

    pub(crate) fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Configuration, message)
    }

    pub(crate) fn invalid_target(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidTarget, message)
    }

    pub(crate) fn serialization(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Serialization, message)
    }

    pub(crate) fn shut_down(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ShutDown, message)
    }

    pub(crate) fn transport(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transport, message)
    }
}

/// One rule: what failed, then why (the source), each once. The kind is not repeated (match
/// on [`Error::kind`] for that); an error without a message names its kind.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.remote {
            Some(remote) => write!(f, "the remote method raised {remote}")?,
            None if self.inner.message.is_empty() => write!(f, "{}", self.inner.kind)?,
            None => f.write_str(&self.inner.message)?,
        }
        match &self.inner.source {
            Some(source) => write!(f, ": {source}"),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        if let Some(remote) = &self.inner.remote {
            d.field("remote", remote);
        } else {
            d.field("message", &self.inner.message);
        }
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        if let Some((exchange, routing_key)) = &self.inner.address {
            d.field("exchange", exchange);
            d.field("routing_key", routing_key);
        }
        d.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_kind_and_message() {
        let e = Error::timeout("timed out waiting for a reply to message ID abc");
        assert_eq!(
            e.to_string(),
            "timed out waiting for a reply to message ID abc"
        );
        assert!(e.is_timeout());
    }

    #[test]
    fn remote_error_display_and_access() {
        let remote = RemoteError::new("builtins", "ValueError", "bad value");
        let e = Error::remote(remote);
        assert_eq!(e.kind(), ErrorKind::Remote);
        assert_eq!(e.message(), "bad value");
        assert_eq!(e.remote_error().unwrap().class(), "ValueError");
        assert_eq!(
            e.to_string(),
            "the remote method raised ValueError: bad value"
        );
    }

    #[test]
    fn source_is_kept() {
        let io = std::io::Error::other("boom");
        let e = Error::with_source(ErrorKind::Transport, "connection lost", io);
        assert_eq!(e.source().unwrap().to_string(), "boom");
        let cloned = e.clone();
        assert_eq!(cloned.to_string(), e.to_string());
        assert_eq!(cloned.to_string(), "connection lost: boom");
    }

    #[test]
    fn error_is_send_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
    }
}
