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
//!   "timestamp", "_unique_id", "_context_<key>"...}`, enveloped (v2) or raw (v1). Over Kafka:
//!   `{"message_id", ..., "timestamp", "_context": {...}}`, always enveloped.
//!
//! Output is byte-identical to Python's for the same content; input may be any valid JSON
//! (compact, raw UTF-8, any key order).

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::context::Context;

mod envelope;
mod fast;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod json;
mod notification;
mod remote;
mod reply;
mod request;
mod time;

pub(crate) use envelope::envelope_version_ok;
pub use envelope::{unwrap_envelope, wrap_envelope};
#[cfg(any(test, feature = "fuzzing"))]
use notification::decode_notification_general;
pub use notification::{
    IncomingNotification, Notification, decode_kafka_notification, decode_notification,
    encode_kafka_notification, encode_notification,
};
#[cfg(any(test, feature = "fuzzing"))]
use reply::decode_reply_general;
pub use reply::{Reply, decode_reply, encode_heartbeat, encode_reply};
#[cfg(any(test, feature = "fuzzing"))]
use request::decode_request_general;
pub use request::{
    CallInfo, IncomingRequest, Request, decode_request, encode_request, reply_address,
};
#[cfg(test)]
use time::format_utc_timestamp;
pub use time::utc_timestamp_now;

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

// What the codecs share.

fn write_key(out: &mut json::JsonOut<'_>, first: &mut bool, key: &str) {
    if !*first {
        out.raw(b", ");
    }
    *first = false;
    out.str(key);
    out.raw(b": ");
}

fn write_context(out: &mut json::JsonOut<'_>, first: &mut bool, context: &Context) {
    let mut key = String::with_capacity(32);
    for (k, v) in context.iter() {
        key.clear();
        key.push_str(CONTEXT_PREFIX);
        key.push_str(k);
        write_key(out, first, &key);
        out.value(v);
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
fn write_seconds(out: &mut json::JsonOut<'_>, d: Duration) {
    if d.subsec_nanos() == 0 {
        out.raw(itoa::Buffer::new().format(d.as_secs()).as_bytes());
    } else {
        out.float(d.as_secs_f64());
    }
}

#[cfg(test)]
mod tests;
