//! What a handler returns when it fails.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::error::{DISPATCHER_MODULE, RemoteError, RemoteException};
use crate::error::{Error, ErrorKind};

/// An error a handler returns; it reaches the caller as oslo's failure JSON.
///
/// The class and module are what a Python client sees: a failure from module `builtins`
/// (`ValueError`, `KeyError`, `TypeError`...) is re-raised by Python callers as that native
/// exception; any other becomes `oslo_messaging.RemoteError` there, and
/// [`ErrorKind::Remote`](crate::ErrorKind::Remote) in Rust callers.
///
/// Mark errors that are part of the method's contract with [`expected`](Self::expected): they
/// are logged at debug level instead of as failures (oslo's `expected_exceptions`).
///
/// # Examples
///
/// ```
/// use oslo_messaging::RpcError;
///
/// let e = RpcError::value_error("volume size must be positive");
/// assert_eq!((e.class(), e.module()), ("ValueError", "builtins"));
///
/// let e = RpcError::new("InstanceNotFound", "Instance 42 could not be found.")
///     .with_module("nova.exception")
///     .with_kwargs(serde_json::json!({"instance_id": 42}))
///     .expected();
/// assert!(e.is_expected());
/// assert_eq!(e.as_remote().kwargs()["instance_id"], 42);
/// ```
#[derive(Clone, PartialEq)]
pub struct RpcError {
    // Boxed: handlers return `Result<_, RpcError>` on every path, so keep it one pointer wide.
    remote: Box<RemoteError>,
    expected: bool,
}

impl RpcError {
    /// An error of `class` with `message`, in module `builtins` until
    /// [`with_module`](Self::with_module) says otherwise; `args` is `[message]`.
    pub fn new(class: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            remote: Box::new(RemoteError::new("builtins", class, message)),
            expected: false,
        }
    }

    /// Python's `ValueError`.
    pub fn value_error(message: impl Into<String>) -> Self {
        Self::new("ValueError", message)
    }

    /// Python's `TypeError`.
    pub fn type_error(message: impl Into<String>) -> Self {
        Self::new("TypeError", message)
    }

    /// Python's `RuntimeError`.
    pub fn runtime_error(message: impl Into<String>) -> Self {
        Self::new("RuntimeError", message)
    }

    /// Python's `NotImplementedError`.
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new("NotImplementedError", message)
    }

    /// Python's `KeyError` for `key`: the message is the key's `repr()`, the argument the key
    /// itself, as Python's `str(KeyError(k))`.
    pub fn key_error(key: impl Into<String>) -> Self {
        let key = key.into();
        let message = python_repr(&key);
        Self {
            remote: Box::new(
                RemoteError::new("builtins", "KeyError", message)
                    .with_args(vec![Value::String(key)]),
            ),
            expected: false,
        }
    }

    /// A runtime error describing any Rust error.
    pub fn from_error(err: &(dyn std::error::Error + 'static)) -> Self {
        Self::runtime_error(err.to_string())
    }

    /// Sets the module of the class.
    #[must_use]
    pub fn with_module(mut self, module: impl Into<String>) -> Self {
        self.remote = Box::new((*self.remote).with_module(module));
        self
    }

    /// Replaces the exception arguments (default `[message]`).
    #[must_use]
    pub fn with_args(mut self, args: Vec<Value>) -> Self {
        self.remote = Box::new((*self.remote).with_args(args));
        self
    }

    /// Sets keyword arguments (Nova-style exceptions carry them): anything that serializes
    /// to a JSON object, such as a struct or `json!({...})`. A value that serializes to
    /// something else leaves them empty, and says so in the log.
    #[must_use]
    pub fn with_kwargs(mut self, kwargs: impl Serialize) -> Self {
        self.remote = Box::new((*self.remote).with_kwargs(kwargs));
        self
    }

    /// The exception `E` (see [`RemoteException`]) with `message`: its class and module are
    /// `E`'s, and its fields travel as `kwargs`, so a Python caller that allows `E`'s module
    /// re-raises it as that class, and a Rust caller gets it back with
    /// [`Error::remote_as`](crate::Error::remote_as).
    ///
    /// # Examples
    ///
    /// ```
    /// use oslo_messaging::{RemoteException, RpcError};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct InstanceNotFound {
    ///     instance_id: String,
    /// }
    ///
    /// impl RemoteException for InstanceNotFound {
    ///     const MODULE: &'static str = "nova.exception";
    ///     const CLASS: &'static str = "InstanceNotFound";
    /// }
    ///
    /// let e = RpcError::exception(
    ///     "Instance vm-1 could not be found.",
    ///     &InstanceNotFound { instance_id: "vm-1".into() },
    /// );
    /// assert_eq!((e.module(), e.class()), ("nova.exception", "InstanceNotFound"));
    /// assert_eq!(e.as_remote().kwargs()["instance_id"], "vm-1");
    /// ```
    pub fn exception<E: RemoteException>(message: impl Into<String>, exception: &E) -> Self {
        Self::new(E::CLASS, message)
            .with_module(E::MODULE)
            .with_kwargs(exception)
    }

    /// Sets traceback lines sent to the caller (none by default: they leak internals).
    #[must_use]
    pub fn with_traceback(mut self, traceback: Vec<String>) -> Self {
        self.remote = Box::new((*self.remote).with_traceback(traceback));
        self
    }

    /// Marks the error as expected: part of the method's contract, logged at debug level.
    #[must_use]
    pub fn expected(mut self) -> Self {
        self.expected = true;
        self
    }

    /// Whether [`expected`](Self::expected) was set.
    pub fn is_expected(&self) -> bool {
        self.expected
    }

    /// The class name.
    pub fn class(&self) -> &str {
        self.remote.class()
    }

    /// The module name.
    pub fn module(&self) -> &str {
        self.remote.module()
    }

    /// The message.
    pub fn message(&self) -> &str {
        self.remote.message()
    }

    /// The failure as it goes on the wire.
    pub fn as_remote(&self) -> &RemoteError {
        &self.remote
    }

    /// Consumes the error, returning the wire failure.
    pub fn into_remote(self) -> RemoteError {
        *self.remote
    }

    pub(crate) fn no_such_method(method: &str) -> Self {
        Self::new(
            "NoSuchMethod",
            format!("Endpoint does not support RPC method {method}"),
        )
        .with_module(DISPATCHER_MODULE)
    }

    pub(crate) fn unsupported_version(version: &str, method: &str) -> Self {
        Self::new(
            "UnsupportedVersion",
            format!("Endpoint does not support RPC version {version}. Attempted method: {method}"),
        )
        .with_module(DISPATCHER_MODULE)
    }

    /// `true` for oslo's `NoSuchMethod` (the dispatcher found no endpoint with the method).
    pub fn is_no_such_method(&self) -> bool {
        self.remote.is_no_such_method()
    }

    /// `true` for oslo's `UnsupportedVersion` (no endpoint with the method takes the
    /// requested version or namespace).
    pub fn is_unsupported_version(&self) -> bool {
        self.remote.is_unsupported_version()
    }
}

/// Python's `repr()` of a `str`: single quotes unless the text holds a single quote and no
/// double quote; backslash, the quote, `\n`, `\r`, `\t` and other non-printable characters
/// escaped.
fn python_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if (0x80..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.remote.fmt(f)
    }
}

impl fmt::Debug for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcError")
            .field("remote", &self.remote)
            .field("expected", &self.expected)
            .finish()
    }
}

impl std::error::Error for RpcError {}

impl From<RemoteError> for RpcError {
    /// Passes a failure from a nested call through unchanged.
    fn from(remote: RemoteError) -> Self {
        Self {
            remote: Box::new(remote),
            expected: false,
        }
    }
}

impl From<Error> for RpcError {
    /// A remote failure passes through unchanged; a local error becomes the oslo exception of
    /// the same meaning (`MessagingTimeout`, `MessageDeliveryFailure`...).
    fn from(err: Error) -> Self {
        if let Some(remote) = err.remote_error() {
            return remote.clone().into();
        }
        let class = match err.kind() {
            ErrorKind::Timeout => "MessagingTimeout",
            ErrorKind::DeliveryFailure => "MessageDeliveryFailure",
            ErrorKind::Undeliverable => "MessageUndeliverable",
            ErrorKind::InvalidTarget => "InvalidTarget",
            ErrorKind::InvalidUrl => "InvalidTransportURL",
            ErrorKind::Configuration => "ConfigurationError",
            ErrorKind::VersionCap => "RPCVersionCapError",
            _ => "MessagingException",
        };
        let module = match err.kind() {
            ErrorKind::VersionCap => "oslo_messaging.rpc.client",
            _ => "oslo_messaging.exceptions",
        };
        // What failed and why: the message alone would drop the cause.
        Self::new(class, err.to_string()).with_module(module)
    }
}

impl From<serde_json::Error> for RpcError {
    fn from(err: serde_json::Error) -> Self {
        Self::value_error(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatcher_errors_match_python_text() {
        let e = RpcError::no_such_method("nosuch");
        assert_eq!(
            e.as_remote().to_json(),
            r#"{"class": "NoSuchMethod", "module": "oslo_messaging.rpc.dispatcher", "message": "Endpoint does not support RPC method nosuch", "tb": [], "args": ["Endpoint does not support RPC method nosuch"], "kwargs": {}}"#
        );
        let e = RpcError::unsupported_version("2.0", "echo");
        assert_eq!(
            e.message(),
            "Endpoint does not support RPC version 2.0. Attempted method: echo"
        );
        assert_eq!(e.module(), DISPATCHER_MODULE);
        assert!(RpcError::no_such_method("x").is_no_such_method());
    }

    #[test]
    fn key_error_looks_like_python() {
        let e = RpcError::key_error("k");
        assert_eq!(e.message(), "'k'");
        // Python: repr("it's"), repr('say "hi"'), repr('both \' "'), repr('a\nb\x01')
        assert_eq!(RpcError::key_error("it's").message(), "\"it's\"");
        assert_eq!(RpcError::key_error("say \"hi\"").message(), "'say \"hi\"'");
        assert_eq!(RpcError::key_error("both ' \"").message(), "'both \\' \"'");
        assert_eq!(RpcError::key_error("a\nb\u{1}é").message(), "'a\\nb\\x01é'");
        assert_eq!(e.as_remote().args(), &[Value::from("k")]);
    }

    #[test]
    fn local_errors_map_to_oslo_exceptions() {
        let e: RpcError = Error::timeout("Timed out waiting for a reply to message ID x").into();
        assert_eq!(
            (e.class(), e.module()),
            ("MessagingTimeout", "oslo_messaging.exceptions")
        );
        let remote = RemoteError::new("builtins", "ValueError", "bad");
        let e: RpcError = Error::remote(remote.clone()).into();
        assert_eq!(e.as_remote(), &remote);
    }

    #[test]
    fn an_rpc_error_is_a_std_error() {
        fn helper() -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
            Err(RpcError::value_error("bad size"))?
        }
        let e = helper().unwrap_err();
        assert_eq!(e.to_string(), "ValueError: bad size");
        assert!(e.downcast_ref::<RpcError>().is_some());
    }

    #[test]
    fn exceptions_travel_as_class_module_and_kwargs() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct QuotaExceeded {
            overs: Vec<String>,
            message: String,
        }
        impl RemoteException for QuotaExceeded {
            const MODULE: &'static str = "nova.exception";
            const CLASS: &'static str = "QuotaExceeded";
        }
        let sent = QuotaExceeded {
            overs: vec!["cores".into()],
            message: "Quota exceeded for cores".into(),
        };
        let e = RpcError::exception("Quota exceeded for cores", &sent);
        let wire = RemoteError::from_json(&e.as_remote().to_json()).unwrap();
        assert!(wire.is::<QuotaExceeded>());
        assert_eq!(wire.to_exception::<QuotaExceeded>(), Some(sent));
        // Another class, or kwargs that do not fit, give None rather than a wrong value.
        let other = RemoteError::new("nova.exception", "InstanceNotFound", "x");
        assert_eq!(other.to_exception::<QuotaExceeded>(), None);
        let bad = RemoteError::new("nova.exception", "QuotaExceeded", "x")
            .with_kwargs(serde_json::json!({"overs": 3}));
        assert_eq!(bad.to_exception::<QuotaExceeded>(), None);
        // `message` comes from the failure when kwargs lack it.
        let plain = RemoteError::new("nova.exception", "QuotaExceeded", "over")
            .with_kwargs(serde_json::json!({"overs": []}));
        assert_eq!(
            plain.to_exception::<QuotaExceeded>().unwrap().message,
            "over"
        );
        // kwargs that are not an object are dropped, never sent malformed.
        let e = RpcError::new("X", "m").with_kwargs(vec![1, 2]);
        assert!(e.as_remote().kwargs().is_empty());
    }

    #[test]
    fn with_module_keeps_the_rest() {
        let e = RpcError::new("X", "m")
            .with_args(vec![1.into()])
            .with_module("my.mod");
        assert_eq!(e.module(), "my.mod");
        assert_eq!(e.as_remote().args(), &[Value::from(1)]);
    }
}
