//! The oslo.messaging wire format, as pure functions: no I/O.
//!
//! Every driver goes through this module, so what the memory transport carries is byte for byte
//! what goes to RabbitMQ. The layouts (see the reference captures in the tests):
//!
//! * **Envelope** (RPC requests, replies, `messagingv2` notifications):
//!   `{"oslo.version": "2.0", "oslo.message": "<inner JSON, as a string>"}`.
//! * **RPC request**: `{"method", "args", ["namespace"], ["version"], ["_msg_id", "_reply_q",
//!   "_timeout"], "_unique_id", "_context_<key>"...}`; the reply keys only on calls.
//! * **Reply**: `{"result", "failure", "ending", "_msg_id", "_unique_id"}`; `failure` is itself
//!   a JSON string `{"class", "module", "message", "tb", "args", "kwargs"}`. A call-monitor
//!   heartbeat is a reply with `"ending": false` and nulls.
//! * **Notification**: `{"message_id", "publisher_id", "event_type", "priority", "payload",
//!   "timestamp", "_unique_id", "_context_<key>"...}`, enveloped (v2) or raw (v1).
//!
//! Output is byte-identical to Python's for the same content; input may be any valid JSON
//! (compact, raw UTF-8, any key order).

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::context::Context;

mod fast;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod json;
mod remote;

use crate::error::RemoteError;

/// The envelope version this library writes and accepts.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire::{self, ENVELOPE_VERSION};
///
/// let body = wire::wrap_envelope(b"{}");
/// assert!(String::from_utf8(body).unwrap().contains(ENVELOPE_VERSION));
/// ```
pub const ENVELOPE_VERSION: &str = "2.0";

const CONTEXT_PREFIX: &str = "_context_";

/// A message from the wire that could not be understood.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire::{self, WireError};
///
/// assert!(matches!(wire::decode_request(b"not json"), Err(WireError::NotJson(_))));
/// assert_eq!(wire::decode_request(b"{}").unwrap_err(), WireError::MissingField("method"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The body is not JSON (the text is the parser's complaint).
    NotJson(String),
    /// The body (or the envelope's inner message) is JSON but not an object.
    NotAnObject(&'static str),
    /// The envelope's `oslo.version` is not compatible with 2.0.
    UnsupportedEnvelopeVersion(String),
    /// The envelope's `oslo.message` is not a string.
    BadEnvelope,
    /// A required key is missing.
    MissingField(&'static str),
    /// A key has a value of the wrong JSON type.
    BadField {
        /// The key.
        field: &'static str,
        /// What it should have been.
        expected: &'static str,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotJson(e) => write!(f, "message body is not JSON: {e}"),
            Self::NotAnObject(what) => write!(f, "{what} is not a JSON object"),
            Self::UnsupportedEnvelopeVersion(v) => {
                write!(
                    f,
                    "unsupported envelope version {v:?} (expected {ENVELOPE_VERSION})"
                )
            }
            Self::BadEnvelope => f.write_str("envelope's oslo.message is not a JSON string"),
            Self::MissingField(k) => write!(f, "message has no {k:?} key"),
            Self::BadField { field, expected } => {
                write!(f, "message key {field:?} is not {expected}")
            }
        }
    }
}

impl std::error::Error for WireError {}

impl From<WireError> for crate::Error {
    fn from(e: WireError) -> Self {
        Self::with_source(crate::ErrorKind::Protocol, "cannot decode the message", e)
    }
}

/// A new `_unique_id` / `_msg_id`: a UUID4 as 32 lowercase hex digits, as Python's `uuid4().hex`.
///
/// # Examples
///
/// ```
/// let id = oslo_messaging::wire::new_id();
/// assert_eq!(id.len(), 32);
/// assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
/// ```
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

// ===== envelope =====

/// Wraps an inner JSON text (as written by [`json::to_string`]) in the 2.0 envelope.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire;
///
/// let body = wire::wrap_envelope(br#"{"a": 1}"#);
/// assert_eq!(body, br#"{"oslo.version": "2.0", "oslo.message": "{\"a\": 1}"}"#);
/// assert_eq!(wire::unwrap_envelope(&body).unwrap()["a"], 1);
/// ```
pub fn wrap_envelope(inner: &[u8]) -> Vec<u8> {
    if inner.iter().any(|&b| !(0x20..0x7f).contains(&b)) {
        let mut out = Vec::with_capacity(inner.len() + inner.len() / 8 + 48);
        out.extend_from_slice(b"{\"oslo.version\": \"2.0\", \"oslo.message\": ");
        json::write_str(&mut out, &String::from_utf8_lossy(inner));
        out.push(b'}');
        return out;
    }
    wrap_printable(inner)
}

/// [`wrap_envelope`] for inner text known to be printable ASCII (everything our encoders
/// write): only quotes and backslashes need escaping.
fn wrap_printable(inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(inner.len() + inner.len() / 8 + 48);
    out.extend_from_slice(b"{\"oslo.version\": \"2.0\", \"oslo.message\": \"");
    let mut start = 0;
    for i in memchr::memchr2_iter(b'"', b'\\', inner) {
        out.extend_from_slice(&inner[start..i]);
        out.push(b'\\');
        out.push(inner[i]);
        start = i + 1;
    }
    out.extend_from_slice(&inner[start..]);
    out.extend_from_slice(b"\"}");
    out
}

/// Parses a body and unwraps the envelope when there is one, as Python's `deserialize_msg`:
/// a JSON object without both envelope keys is returned as it is (v1 notifications).
///
/// # Errors
///
/// Non-JSON, a non-object, an envelope version other than 2.0, or an inner message that is not
/// a JSON object.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire;
///
/// // Enveloped or not, the inner object comes out.
/// assert_eq!(wire::unwrap_envelope(br#"{"a": 1}"#).unwrap()["a"], 1);
/// assert!(wire::unwrap_envelope(br#"{"oslo.version": "3.0", "oslo.message": "{}"}"#).is_err());
/// ```
pub fn unwrap_envelope(body: &[u8]) -> Result<Map<String, Value>, WireError> {
    let value = json::from_slice(body).map_err(|e| WireError::NotJson(e.to_string()))?;
    let Value::Object(mut outer) = value else {
        return Err(WireError::NotAnObject("message body"));
    };
    if !(outer.contains_key("oslo.version") && outer.contains_key("oslo.message")) {
        return Ok(outer);
    }
    match outer.get("oslo.version") {
        Some(Value::String(v)) if envelope_version_ok(v) => {}
        Some(other) => {
            let shown = match other {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            return Err(WireError::UnsupportedEnvelopeVersion(shown));
        }
        None => unreachable!("checked above"),
    }
    let Some(Value::String(inner)) = outer.remove("oslo.message") else {
        return Err(WireError::BadEnvelope);
    };
    match json::from_slice(inner.as_bytes()) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(WireError::NotAnObject("envelope's oslo.message")),
        Err(e) => Err(WireError::NotJson(e.to_string())),
    }
}

/// Python accepts an envelope version compatible with 2.0: major 2, minor and revision 0.
fn envelope_version_ok(v: &str) -> bool {
    crate::version::Version::parse_lenient(v)
        .is_some_and(|got| crate::version::Version::new(2, 0).is_compatible_with(Some(&got)))
}

fn write_key(out: &mut Vec<u8>, first: &mut bool, key: &str) {
    if !*first {
        out.extend_from_slice(b", ");
    }
    *first = false;
    json::write_str(out, key);
    out.extend_from_slice(b": ");
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    json::write_value(out, value);
}

fn write_context(out: &mut Vec<u8>, first: &mut bool, context: &Context) {
    let mut key = String::with_capacity(32);
    for (k, v) in context.iter() {
        key.clear();
        key.push_str(CONTEXT_PREFIX);
        key.push_str(k);
        write_key(out, first, &key);
        write_value(out, v);
    }
}

/// Splits `_context_*` keys off a decoded message into a [`Context`], as Python's
/// `unpack_context` does.
fn take_context(map: &mut Map<String, Value>) -> Context {
    if !map.keys().any(|k| k.starts_with(CONTEXT_PREFIX)) {
        return Context::new();
    }
    let taken = std::mem::take(map);
    let mut ctx = Map::new();
    for (k, v) in taken {
        match k.strip_prefix(CONTEXT_PREFIX) {
            Some(stripped) => {
                ctx.insert(stripped.to_owned(), v);
            }
            None => {
                map.insert(k, v);
            }
        }
    }
    Context::from_map(ctx)
}

fn take_opt_string(
    map: &mut Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, WireError> {
    match map.shift_remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(WireError::BadField {
            field,
            expected: "a string",
        }),
    }
}

/// Writes a duration in seconds as Python would have it: an integer when whole, else a float.
fn write_seconds(out: &mut Vec<u8>, d: Duration) {
    if d.subsec_nanos() == 0 {
        out.extend_from_slice(d.as_secs().to_string().as_bytes());
    } else {
        let _ = json::write(out, &d.as_secs_f64());
    }
}

// ===== RPC request =====

/// The content of an RPC request: what the client asks for, before transport keys are added.
///
/// # Examples
///
/// ```
/// use oslo_messaging::Context;
/// use oslo_messaging::wire::Request;
///
/// let mut req = Request::new("resize", serde_json::Map::new(), Context::new());
/// req.namespace = Some("compute".into());
/// assert_eq!(req.method, "resize");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Request {
    /// The method to call.
    pub method: String,
    /// The keyword arguments.
    pub args: Map<String, Value>,
    /// The endpoint namespace, when the target names one.
    pub namespace: Option<String>,
    /// The requested API version, when the target names one.
    pub version: Option<String>,
    /// The caller's context.
    pub context: Context,
}

impl Request {
    /// A request for `method` with keyword arguments `args` and the caller's `context`, in no
    /// namespace and at no version (set the fields for those).
    ///
    /// # Examples
    ///
    /// ```
    /// use oslo_messaging::Context;
    /// use oslo_messaging::wire::{self, Request};
    ///
    /// let args = serde_json::json!({"a": 1}).as_object().unwrap().clone();
    /// let mut req = Request::new("add", args, Context::new().with("user", "u"));
    /// req.version = Some("1.2".into());
    /// let body = wire::encode_request(&req, None, &wire::new_id());
    /// assert_eq!(wire::decode_request(&body)?.request, req);
    /// # Ok::<(), wire::WireError>(())
    /// ```
    pub fn new(method: impl Into<String>, args: Map<String, Value>, context: Context) -> Self {
        Self {
            method: method.into(),
            args,
            namespace: None,
            version: None,
            context,
        }
    }
}

/// The keys a call adds to a request so the server can answer.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use oslo_messaging::wire::CallInfo;
///
/// let info = CallInfo::new("msg-1", "reply_abc", Some(Duration::from_secs(30)));
/// assert_eq!(info.reply_q, "reply_abc");
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CallInfo<'a> {
    /// `_msg_id`: correlates the reply.
    pub msg_id: &'a str,
    /// `_reply_q`: the queue the reply goes to.
    pub reply_q: &'a str,
    /// `_timeout`: the call-monitor timeout; `null` when not monitoring.
    pub call_monitor_timeout: Option<Duration>,
}

impl<'a> CallInfo<'a> {
    /// The call keys: `_msg_id`, `_reply_q` and `_timeout`.
    pub fn new(msg_id: &'a str, reply_q: &'a str, call_monitor_timeout: Option<Duration>) -> Self {
        Self {
            msg_id,
            reply_q,
            call_monitor_timeout,
        }
    }
}

/// Encodes an RPC request, enveloped, exactly as Python's `_send` does.
///
/// # Examples
///
/// ```
/// use oslo_messaging::Context;
/// use oslo_messaging::wire::{self, CallInfo, Request};
///
/// let req = Request::new("ping", serde_json::Map::new(), Context::new());
/// let body = wire::encode_request(&req, Some(&CallInfo::new("m1", "reply_q1", None)), "u1");
/// let back = wire::decode_request(&body)?;
/// assert_eq!((back.msg_id.as_deref(), back.reply_q.as_deref()), (Some("m1"), Some("reply_q1")));
/// # Ok::<(), wire::WireError>(())
/// ```
pub fn encode_request(req: &Request, call: Option<&CallInfo<'_>>, unique_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    let mut first = true;
    write_key(&mut out, &mut first, "method");
    json::write_str(&mut out, &req.method);
    write_key(&mut out, &mut first, "args");
    json::write_object(&mut out, &req.args);
    if let Some(ns) = &req.namespace {
        write_key(&mut out, &mut first, "namespace");
        json::write_str(&mut out, ns);
    }
    if let Some(v) = &req.version {
        write_key(&mut out, &mut first, "version");
        json::write_str(&mut out, v);
    }
    if let Some(call) = call {
        write_key(&mut out, &mut first, "_msg_id");
        json::write_str(&mut out, call.msg_id);
        write_key(&mut out, &mut first, "_reply_q");
        json::write_str(&mut out, call.reply_q);
        write_key(&mut out, &mut first, "_timeout");
        match call.call_monitor_timeout {
            Some(d) => write_seconds(&mut out, d),
            None => out.extend_from_slice(b"null"),
        }
    }
    write_key(&mut out, &mut first, "_unique_id");
    json::write_str(&mut out, unique_id);
    write_context(&mut out, &mut first, &req.context);
    out.push(b'}');
    wrap_printable(&out)
}

/// An RPC request as a server receives it.
///
/// # Examples
///
/// ```
/// use oslo_messaging::Context;
/// use oslo_messaging::wire::{self, Request};
///
/// let req = Request::new("cast_me", serde_json::Map::new(), Context::new());
/// let incoming = wire::decode_request(&wire::encode_request(&req, None, "u1"))?;
/// assert!(!incoming.wants_reply());
/// assert_eq!(incoming.unique_id.as_deref(), Some("u1"));
/// # Ok::<(), wire::WireError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct IncomingRequest {
    /// The request itself.
    pub request: Request,
    /// `_msg_id`: present on calls.
    pub msg_id: Option<String>,
    /// `_reply_q`: present on calls.
    pub reply_q: Option<String>,
    /// `_timeout`: the caller's call-monitor timeout (any JSON; `null` when absent).
    pub client_timeout: Value,
    /// `_unique_id`, for duplicate detection.
    pub unique_id: Option<String>,
}

impl IncomingRequest {
    /// `true` when the caller waits for a reply.
    pub fn wants_reply(&self) -> bool {
        self.msg_id.is_some()
    }
}

/// Decodes an RPC request body.
///
/// # Errors
///
/// Any [`WireError`]: not JSON, bad envelope, no `method`, fields of the wrong type.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire;
///
/// let body = br#"{"method": "echo", "args": {"x": 1}, "_context_user": "u", "_unique_id": "a"}"#;
/// let r = wire::decode_request(body)?;
/// assert_eq!((r.request.method.as_str(), r.request.context.get_str("user")), ("echo", Some("u")));
/// # Ok::<(), wire::WireError>(())
/// ```
pub fn decode_request(body: &[u8]) -> Result<IncomingRequest, WireError> {
    fast::request(body).map_or_else(|| decode_request_general(body), Ok)
}

/// The reference decoder: also the one that reports errors.
fn decode_request_general(body: &[u8]) -> Result<IncomingRequest, WireError> {
    let mut map = unwrap_envelope(body)?;
    let context = take_context(&mut map);
    let msg_id = take_opt_string(&mut map, "_msg_id")?;
    let reply_q = take_opt_string(&mut map, "_reply_q")?;
    let client_timeout = map.shift_remove("_timeout").unwrap_or(Value::Null);
    let unique_id = take_opt_string(&mut map, "_unique_id")?;
    let method = take_opt_string(&mut map, "method")?.ok_or(WireError::MissingField("method"))?;
    let args = match map.shift_remove("args") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(args)) => args,
        Some(_) => {
            return Err(WireError::BadField {
                field: "args",
                expected: "an object",
            });
        }
    };
    let namespace = take_opt_string(&mut map, "namespace")?;
    let version = take_opt_string(&mut map, "version")?;
    Ok(IncomingRequest {
        request: Request {
            method,
            args,
            namespace,
            version,
            context,
        },
        msg_id,
        reply_q,
        client_timeout,
        unique_id,
    })
}

/// Reads `_msg_id` and `_reply_q` from a body that may not decode as a request, so a server
/// can still send the caller a failure.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire;
///
/// // A request whose args are broken still says where its caller waits.
/// let body = br#"{"method": 7, "_msg_id": "m", "_reply_q": "reply_1"}"#;
/// assert!(wire::decode_request(body).is_err());
/// assert_eq!(wire::reply_address(body), Some(("m".into(), "reply_1".into())));
/// ```
pub fn reply_address(body: &[u8]) -> Option<(String, String)> {
    let map = unwrap_envelope(body).ok()?;
    let msg_id = map.get("_msg_id")?.as_str()?.to_owned();
    let reply_q = map.get("_reply_q")?.as_str()?.to_owned();
    Some((msg_id, reply_q))
}

// ===== replies =====

/// Encodes the final reply to a call: a result or a failure, with `"ending": true`.
///
/// # Examples
///
/// ```
/// use oslo_messaging::{RemoteError, wire};
///
/// let ok = wire::decode_reply(&wire::encode_reply("m", "u", &Ok(serde_json::json!(42))))?;
/// assert_eq!((ok.result, ok.ending), (serde_json::json!(42), true));
/// let failure = RemoteError::new("builtins", "ValueError", "bad");
/// let err = wire::decode_reply(&wire::encode_reply("m", "u2", &Err(failure)))?;
/// assert_eq!(err.failure.unwrap().class(), "ValueError");
/// # Ok::<(), wire::WireError>(())
/// ```
pub fn encode_reply(
    msg_id: &str,
    unique_id: &str,
    outcome: &Result<Value, RemoteError>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(b'{');
    let mut first = true;
    write_key(&mut out, &mut first, "result");
    match outcome {
        Ok(v) => write_value(&mut out, v),
        Err(_) => out.extend_from_slice(b"null"),
    }
    write_key(&mut out, &mut first, "failure");
    match outcome {
        Ok(_) => out.extend_from_slice(b"null"),
        Err(failure) => json::write_str(&mut out, &failure.to_json()),
    }
    write_key(&mut out, &mut first, "ending");
    out.extend_from_slice(b"true");
    write_reply_ids(&mut out, &mut first, msg_id, unique_id);
    out.push(b'}');
    wrap_printable(&out)
}

/// Encodes a call-monitor heartbeat: `{"result": null, "failure": null, "ending": false, ...}`.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire;
///
/// let hb = wire::decode_reply(&wire::encode_heartbeat("m", "u"))?;
/// assert!(!hb.ending && hb.result.is_null() && hb.failure.is_none());
/// # Ok::<(), wire::WireError>(())
/// ```
pub fn encode_heartbeat(msg_id: &str, unique_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"{\"result\": null, \"failure\": null, \"ending\": false");
    let mut first = false;
    write_reply_ids(&mut out, &mut first, msg_id, unique_id);
    out.push(b'}');
    wrap_printable(&out)
}

fn write_reply_ids(out: &mut Vec<u8>, first: &mut bool, msg_id: &str, unique_id: &str) {
    write_key(out, first, "_msg_id");
    json::write_str(out, msg_id);
    write_key(out, first, "_unique_id");
    json::write_str(out, unique_id);
}

/// One reply message as the caller receives it.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire;
///
/// let reply = wire::decode_reply(br#"{"result": "ok", "failure": null, "ending": true, "_msg_id": "m"}"#)?;
/// assert_eq!((reply.msg_id.as_deref(), reply.result.as_str()), (Some("m"), Some("ok")));
/// # Ok::<(), wire::WireError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Reply {
    /// `_msg_id` of the request it answers.
    pub msg_id: Option<String>,
    /// The result (`null` for heartbeats and failures).
    pub result: Value,
    /// The failure, when the remote method raised.
    pub failure: Option<RemoteError>,
    /// `false` for call-monitor heartbeats and the payload half of the legacy two-message reply.
    pub ending: bool,
    /// `_unique_id`.
    pub unique_id: Option<String>,
}

/// Decodes a reply body.
///
/// # Errors
///
/// Any [`WireError`]; a `failure` that is not valid failure JSON is reported as a failure
/// carrying the raw text, not as an error.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire;
///
/// // Python's legacy two-message reply: the result first, then `ending`.
/// let first = wire::decode_reply(br#"{"result": 1, "ending": false, "_msg_id": "m"}"#)?;
/// assert!(!first.ending);
/// # Ok::<(), wire::WireError>(())
/// ```
pub fn decode_reply(body: &[u8]) -> Result<Reply, WireError> {
    fast::reply(body).map_or_else(|| decode_reply_general(body), Ok)
}

fn decode_reply_general(body: &[u8]) -> Result<Reply, WireError> {
    let mut map = unwrap_envelope(body)?;
    let msg_id = take_opt_string(&mut map, "_msg_id")?;
    let unique_id = take_opt_string(&mut map, "_unique_id")?;
    let result = map.shift_remove("result").unwrap_or(Value::Null);
    let failure = match map.shift_remove("failure") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(v) => Some(RemoteError::from_failure_value(v)),
    };
    let ending = match map.shift_remove("ending") {
        Some(Value::Bool(b)) => b,
        _ => false,
    };
    Ok(Reply {
        msg_id,
        result,
        failure,
        ending,
        unique_id,
    })
}

// ===== notifications =====

/// A notification as the notifier builds it.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire::Notification;
///
/// let n = Notification::new("compute.instance.exists", "INFO", serde_json::json!({}));
/// assert_eq!(n.message_id.len(), 36, "a hyphenated UUID4");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Notification {
    /// `message_id`: a hyphenated UUID4.
    pub message_id: String,
    /// Who sent it, such as `compute.host1` (`null` when unset, as Python allows).
    pub publisher_id: Option<String>,
    /// What happened, such as `compute.instance.create.end`.
    pub event_type: String,
    /// The priority in upper case, such as `INFO`.
    pub priority: String,
    /// The payload.
    pub payload: Value,
    /// Python's `str(datetime.utcnow())`: `YYYY-MM-DD HH:MM:SS[.ffffff]`.
    pub timestamp: String,
    /// The (already redacted) context.
    pub context: Context,
}

impl Notification {
    /// A notification of `event_type` at `priority` (upper case, as on the wire), with a new
    /// `message_id`, the current time, no publisher and an empty context (set the fields for
    /// those).
    ///
    /// # Examples
    ///
    /// ```
    /// use oslo_messaging::wire::{self, Notification};
    ///
    /// let mut n = Notification::new("compute.instance.create.end", "INFO", serde_json::json!({}));
    /// n.publisher_id = Some("compute.host1".into());
    /// let body = wire::encode_notification(&n, &wire::new_id(), true);
    /// let back = wire::decode_notification(&body)?;
    /// assert_eq!(back.publisher_id.as_deref(), Some("compute.host1"));
    /// # Ok::<(), wire::WireError>(())
    /// ```
    pub fn new(event_type: impl Into<String>, priority: impl Into<String>, payload: Value) -> Self {
        Self {
            message_id: uuid::Uuid::new_v4().hyphenated().to_string(),
            publisher_id: None,
            event_type: event_type.into(),
            priority: priority.into(),
            payload,
            timestamp: utc_timestamp_now(),
            context: Context::new(),
        }
    }
}

/// Encodes a notification; `envelope` selects the v2 (`messagingv2`) format, else the raw v1
/// (`messaging`) body.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire::{self, Notification};
///
/// let n = Notification::new("image.update", "INFO", serde_json::json!({"id": 1}));
/// let v1 = wire::encode_notification(&n, "u", false);
/// assert!(v1.starts_with(b"{\"message_id\""), "messaging (v1): no envelope");
/// let v2 = wire::encode_notification(&n, "u", true);
/// assert!(v2.starts_with(b"{\"oslo.version\""), "messagingv2: the envelope");
/// ```
pub fn encode_notification(n: &Notification, unique_id: &str, envelope: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    let mut first = true;
    write_key(&mut out, &mut first, "message_id");
    json::write_str(&mut out, &n.message_id);
    write_key(&mut out, &mut first, "publisher_id");
    match &n.publisher_id {
        Some(p) => json::write_str(&mut out, p),
        None => out.extend_from_slice(b"null"),
    }
    write_key(&mut out, &mut first, "event_type");
    json::write_str(&mut out, &n.event_type);
    write_key(&mut out, &mut first, "priority");
    json::write_str(&mut out, &n.priority);
    write_key(&mut out, &mut first, "payload");
    write_value(&mut out, &n.payload);
    write_key(&mut out, &mut first, "timestamp");
    json::write_str(&mut out, &n.timestamp);
    write_key(&mut out, &mut first, "_unique_id");
    json::write_str(&mut out, unique_id);
    write_context(&mut out, &mut first, &n.context);
    out.push(b'}');
    if envelope { wrap_printable(&out) } else { out }
}

/// A notification as a listener receives it. Fields Python reads with `.get()` are optional.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire;
///
/// let n = wire::decode_notification(br#"{"event_type": "x", "priority": "INFO", "payload": 1}"#)?;
/// assert_eq!((n.event_type.as_deref(), n.priority.as_deref()), (Some("x"), Some("INFO")));
/// assert!(n.publisher_id.is_none(), "what Python reads with .get() may be missing");
/// # Ok::<(), wire::WireError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct IncomingNotification {
    /// `message_id`, as received.
    pub message_id: Value,
    /// `publisher_id`.
    pub publisher_id: Option<String>,
    /// `event_type`.
    pub event_type: Option<String>,
    /// `priority`, as received (Python lower-cases it for dispatch).
    pub priority: Option<String>,
    /// `payload`.
    pub payload: Value,
    /// `timestamp`, as received.
    pub timestamp: Value,
    /// The context, from the `_context_*` keys.
    pub context: Context,
    /// `_unique_id`, for duplicate detection.
    pub unique_id: Option<String>,
}

/// Decodes a notification body, enveloped (v2) or raw (v1).
///
/// # Errors
///
/// Any [`WireError`].
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire;
///
/// assert!(wire::decode_notification(b"[1]").is_err());
/// # Ok::<(), wire::WireError>(())
/// ```
pub fn decode_notification(body: &[u8]) -> Result<IncomingNotification, WireError> {
    fast::notification(body).map_or_else(|| decode_notification_general(body), Ok)
}

fn decode_notification_general(body: &[u8]) -> Result<IncomingNotification, WireError> {
    let mut map = unwrap_envelope(body)?;
    let context = take_context(&mut map);
    let lenient_string = |map: &mut Map<String, Value>, k: &str| match map.shift_remove(k) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    Ok(IncomingNotification {
        publisher_id: lenient_string(&mut map, "publisher_id"),
        event_type: lenient_string(&mut map, "event_type"),
        priority: lenient_string(&mut map, "priority"),
        unique_id: lenient_string(&mut map, "_unique_id"),
        message_id: map.shift_remove("message_id").unwrap_or(Value::Null),
        payload: map.shift_remove("payload").unwrap_or(Value::Null),
        timestamp: map.shift_remove("timestamp").unwrap_or(Value::Null),
        context,
    })
}

/// Python's `str(datetime.utcnow())` for the current time: `YYYY-MM-DD HH:MM:SS.ffffff`, the
/// fraction left out when the microseconds are zero.
///
/// # Examples
///
/// ```
/// let ts = oslo_messaging::wire::utc_timestamp_now();
/// // Python's str(datetime.utcnow()): 2026-12-04 21:30:00.123456
/// assert_eq!(&ts[4..5], "-");
/// assert_eq!(&ts[10..11], " ");
/// ```
pub fn utc_timestamp_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format_utc_timestamp(now)
}

/// Formats a time since the Unix epoch as Python's `str(datetime)` does.
pub(crate) fn format_utc_timestamp(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let micros = since_epoch.subsec_micros();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    if micros == 0 {
        format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}")
    } else {
        format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}.{micros:06}")
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests;
