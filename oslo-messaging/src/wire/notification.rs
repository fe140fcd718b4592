//! Notifications, raw (v1, `messaging`) or enveloped (v2, `messagingv2`).

use serde_json::{Map, Value};

use super::*;
use crate::context::Context;

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
    super::envelope::encode_with(envelope, |out| {
        out.raw(b"{");
        let mut first = true;
        write_notification_fields(out, &mut first, n);
        write_key(out, &mut first, "_unique_id");
        out.str(unique_id);
        write_context(out, &mut first, &n.context);
        out.raw(b"}");
    })
}

/// The fields Python's notifier builds, in its order.
fn write_notification_fields(out: &mut json::JsonOut<'_>, first: &mut bool, n: &Notification) {
    write_key(out, first, "message_id");
    out.str(&n.message_id);
    write_key(out, first, "publisher_id");
    match &n.publisher_id {
        Some(p) => out.str(p),
        None => out.raw(b"null"),
    }
    write_key(out, first, "event_type");
    out.str(&n.event_type);
    write_key(out, first, "priority");
    out.str(&n.priority);
    write_key(out, first, "payload");
    out.value(&n.payload);
    write_key(out, first, "timestamp");
    out.str(&n.timestamp);
}

/// Encodes a notification as Python's Kafka driver does (`pack_message`): always in the 2.0
/// envelope, with the context as one nested `_context` object (not `_context_*` keys) and no
/// `_unique_id`.
///
/// # Examples
///
/// ```
/// use oslo_messaging::{Context, wire};
///
/// let mut n = wire::Notification::new("image.update", "INFO", serde_json::json!({"id": 1}));
/// n.context = Context::new().with("user", "alice");
/// let body = wire::encode_kafka_notification(&n);
/// let text = String::from_utf8(body.clone()).unwrap();
/// assert!(text.contains(r#"\"_context\": {\"user\": \"alice\"}"#), "{text}");
/// let back = wire::decode_kafka_notification(&body)?;
/// assert_eq!(back.context.get("user"), Some(&serde_json::json!("alice")));
/// # Ok::<(), wire::WireError>(())
/// ```
pub fn encode_kafka_notification(n: &Notification) -> Vec<u8> {
    super::envelope::encode_with(true, |out| {
        out.raw(b"{");
        let mut first = true;
        write_notification_fields(out, &mut first, n);
        write_key(out, &mut first, "_context");
        out.object(n.context.as_map());
        out.raw(b"}");
    })
}

/// Decodes a notification as Python's Kafka driver does (`unpack_message`): enveloped or not,
/// with the context in a nested `_context` object. A message with `_context_*` keys instead
/// (as the AMQP drivers write them) is read too.
///
/// # Errors
///
/// Any [`WireError`]; also [`WireError::BadField`] when `_context` is not an object.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire;
///
/// let n = wire::decode_kafka_notification(br#"{"event_type": "x", "priority": "INFO", "_context": {"user": "u"}}"#)?;
/// assert_eq!(n.event_type.as_deref(), Some("x"));
/// assert!(wire::decode_kafka_notification(br#"{"_context": 1}"#).is_err());
/// # Ok::<(), wire::WireError>(())
/// ```
pub fn decode_kafka_notification(body: &[u8]) -> Result<IncomingNotification, WireError> {
    let mut map = unwrap_envelope(body)?;
    let context = match map.shift_remove("_context") {
        Some(Value::Object(ctx)) => Context::from_map(ctx),
        None | Some(Value::Null) => take_context(&mut map),
        Some(_) => {
            return Err(WireError::BadField {
                field: "_context",
                expected: "a JSON object",
            });
        }
    };
    Ok(notification_fields(map, context))
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

pub(crate) fn decode_notification_general(body: &[u8]) -> Result<IncomingNotification, WireError> {
    let mut map = unwrap_envelope(body)?;
    let context = take_context(&mut map);
    Ok(notification_fields(map, context))
}

/// The fields of a decoded notification; what Python reads with `.get()` may be missing.
fn notification_fields(mut map: Map<String, Value>, context: Context) -> IncomingNotification {
    let lenient_string = |map: &mut Map<String, Value>, k: &str| match map.shift_remove(k) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    IncomingNotification {
        publisher_id: lenient_string(&mut map, "publisher_id"),
        event_type: lenient_string(&mut map, "event_type"),
        priority: lenient_string(&mut map, "priority"),
        unique_id: lenient_string(&mut map, "_unique_id"),
        message_id: map.shift_remove("message_id").unwrap_or(Value::Null),
        payload: map.shift_remove("payload").unwrap_or(Value::Null),
        timestamp: map.shift_remove("timestamp").unwrap_or(Value::Null),
        context,
    }
}
