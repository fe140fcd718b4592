//! The failure a server sends back when a method raises, as data; its JSON form is in
//! [`crate::wire`].

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The module of oslo's dispatcher exceptions (`NoSuchMethod`, `UnsupportedVersion`).
pub(crate) const DISPATCHER_MODULE: &str = "oslo_messaging.rpc.dispatcher";

/// A Rust type for one exception class a remote service raises: the analogue of Python's
/// `allowed_remote_exmods`, which lets callers catch, say, nova's `InstanceNotFound` as its
/// own class instead of a generic `RemoteError`.
///
/// The value is built from the failure's `kwargs` (nova-style exceptions carry their fields
/// there), plus `message` from the failure's message when `kwargs` has none. Servers raise it
/// with [`RpcError::exception`](crate::rpc::RpcError::exception).
///
/// # Examples
///
/// ```
/// use oslo_messaging::{RemoteError, RemoteException};
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
/// // What a nova server sends:
/// let failure = RemoteError::from_json(
///     r#"{"class": "InstanceNotFound", "module": "nova.exception",
///         "message": "Instance vm-1 could not be found.", "tb": [],
///         "args": [], "kwargs": {"instance_id": "vm-1", "code": 404}}"#,
/// )?;
/// assert!(failure.is::<InstanceNotFound>());
/// let e: InstanceNotFound = failure.to_exception().unwrap();
/// assert_eq!(e.instance_id, "vm-1");
/// # Ok::<(), oslo_messaging::wire::WireError>(())
/// ```
pub trait RemoteException: Serialize + DeserializeOwned {
    /// The Python module of the class, such as `nova.exception`.
    const MODULE: &'static str;
    /// The class name, such as `InstanceNotFound`.
    const CLASS: &'static str;
}

/// An error raised on the remote side of a call, exactly as the failure JSON carries it:
/// `{"class", "module", "message", "tb", "args", "kwargs"}`.
///
/// Clients receive it inside an [`Error`](crate::Error) of kind
/// [`Remote`](crate::ErrorKind::Remote). No type is ever instantiated from these fields; they
/// are data. A Python client re-raises failures whose module is `builtins` as the native
/// exception (`ValueError`, `KeyError`...) built from `args` and `kwargs`, and turns any other
/// into `oslo_messaging.RemoteError`.
///
/// # Examples
///
/// ```
/// use oslo_messaging::RemoteError;
///
/// let e = RemoteError::new("builtins", "ValueError", "bad value");
/// assert_eq!(
///     e.to_json(),
///     r#"{"class": "ValueError", "module": "builtins", "message": "bad value", "tb": [], "args": ["bad value"], "kwargs": {}}"#
/// );
/// let back = RemoteError::from_json(&e.to_json()).unwrap();
/// assert_eq!(back, e);
/// ```
#[derive(Clone, PartialEq)]
pub struct RemoteError {
    pub(crate) class: String,
    pub(crate) module: String,
    pub(crate) message: String,
    pub(crate) traceback: Vec<String>,
    pub(crate) args: Vec<Value>,
    pub(crate) kwargs: Map<String, Value>,
}

impl RemoteError {
    /// A failure of class `module.class` with `message`; `args` is `[message]`, as for a Python
    /// exception built from one string.
    pub fn new(
        module: impl Into<String>,
        class: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let message = message.into();
        Self {
            class: class.into(),
            module: module.into(),
            args: vec![Value::String(message.clone())],
            message,
            traceback: Vec::new(),
            kwargs: Map::new(),
        }
    }

    /// Replaces the module of the class.
    #[must_use]
    pub fn with_module(mut self, module: impl Into<String>) -> Self {
        self.module = module.into();
        self
    }

    /// Replaces the exception arguments (`args`).
    #[must_use]
    pub fn with_args(mut self, args: Vec<Value>) -> Self {
        self.args = args;
        self
    }

    /// Replaces the keyword arguments (`kwargs`; Nova-style exceptions carry them): anything
    /// that serializes to a JSON object, such as a struct or `json!({...})`. A value that
    /// serializes to something else leaves them empty, and says so in the log.
    #[must_use]
    pub fn with_kwargs(mut self, kwargs: impl Serialize) -> Self {
        self.kwargs = kwargs_map(&kwargs);
        self
    }

    /// Replaces the traceback lines (`tb`).
    #[must_use]
    pub fn with_traceback(mut self, traceback: Vec<String>) -> Self {
        self.traceback = traceback;
        self
    }

    /// The exception class name, such as `ValueError` or `NoSuchMethod`.
    pub fn class(&self) -> &str {
        &self.class
    }

    /// The module of the class, such as `builtins` or `oslo_messaging.rpc.dispatcher`.
    pub fn module(&self) -> &str {
        &self.module
    }

    /// `str(exception)` on the remote side.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The remote traceback, one string per frame (Python's `traceback.format_exception`).
    pub fn traceback(&self) -> &[String] {
        &self.traceback
    }

    /// The exception's positional arguments.
    pub fn args(&self) -> &[Value] {
        &self.args
    }

    /// The exception's keyword arguments.
    pub fn kwargs(&self) -> &Map<String, Value> {
        &self.kwargs
    }

    /// `true` when the class is `name` in module `builtins` (`exceptions` counts too, as Python 2
    /// peers wrote it).
    pub fn is_builtin(&self, name: &str) -> bool {
        self.class == name && matches!(self.module.as_str(), "builtins" | "exceptions")
    }

    /// `true` when this failure is of `E`'s class and module.
    pub fn is<E: RemoteException>(&self) -> bool {
        self.class == E::CLASS && self.module == E::MODULE
    }

    /// The failure as `E`, when it is of `E`'s class and module and its `kwargs` (with
    /// `message` added when they lack one) deserialize into `E`; see [`RemoteException`].
    pub fn to_exception<E: RemoteException>(&self) -> Option<E> {
        if !self.is::<E>() {
            return None;
        }
        let mut fields = self.kwargs.clone();
        fields
            .entry("message")
            .or_insert_with(|| Value::String(self.message.clone()));
        match serde_json::from_value(Value::Object(fields)) {
            Ok(e) => Some(e),
            Err(error) => {
                tracing::debug!(class = E::CLASS, %error, "a remote exception's kwargs do not fit its Rust type");
                None
            }
        }
    }

    /// `true` for oslo's `NoSuchMethod`: the server has no endpoint with that method.
    pub fn is_no_such_method(&self) -> bool {
        self.class == "NoSuchMethod" && self.module == DISPATCHER_MODULE
    }

    /// `true` for oslo's `UnsupportedVersion`: no endpoint with the method implements the
    /// requested version (or namespace).
    pub fn is_unsupported_version(&self) -> bool {
        self.class == "UnsupportedVersion" && self.module == DISPATCHER_MODULE
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.module.is_empty() || self.module == "builtins" {
            write!(f, "{}: {}", self.class, self.message)
        } else {
            write!(f, "{}.{}: {}", self.module, self.class, self.message)
        }
    }
}

impl fmt::Debug for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteError")
            .field("class", &self.class)
            .field("module", &self.module)
            .field("message", &self.message)
            .field("args", &self.args)
            .field("kwargs", &self.kwargs)
            .field("traceback_lines", &self.traceback.len())
            .finish()
    }
}

impl std::error::Error for RemoteError {}

/// `kwargs` as a JSON object; anything else is logged and becomes `{}`.
fn kwargs_map(kwargs: &impl Serialize) -> Map<String, Value> {
    match serde_json::to_value(kwargs) {
        Ok(Value::Object(map)) => map,
        Ok(Value::Null) => Map::new(),
        Ok(other) => {
            // Only the type: the value may be user data.
            let kwargs_type = match other {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                _ => "boolean",
            };
            tracing::warn!(
                kwargs_type,
                "exception kwargs must serialize to a JSON object; sending none"
            );
            Map::new()
        }
        Err(error) => {
            tracing::warn!(%error, "exception kwargs do not serialize; sending none");
            Map::new()
        }
    }
}
