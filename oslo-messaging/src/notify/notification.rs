//! A received notification, and what its handler decided.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::Priority;
use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::serve::{Mismatch, from_json, from_json_owned, from_json_ref};

/// A notification as a listener hands it to handlers, with its payload as `T`
/// (`serde_json::Value` unless the handler asks for its own type).
///
/// # Examples
///
/// ```
/// use oslo_messaging::notify::{Notification, Priority};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Created {
///     instance_id: String,
/// }
///
/// let raw = Notification::new(
///     Priority::Info,
///     "compute.instance.create.end",
///     serde_json::json!({"instance_id": "vm-1", "state": "active"}),
/// );
/// let typed: Notification<Created> = raw.into_typed()?;
/// assert_eq!(typed.payload.instance_id, "vm-1");
/// assert_eq!(typed.event_type.as_deref(), Some("compute.instance.create.end"));
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Notification<T = Value> {
    /// The sender's (redacted) context, plus `client_timeout` as Python listeners see it.
    pub context: Context,
    /// `publisher_id`.
    pub publisher_id: Option<String>,
    /// `event_type`.
    pub event_type: Option<String>,
    /// The priority.
    pub priority: Priority,
    /// The payload.
    pub payload: T,
    /// `{"message_id": ..., "timestamp": ...}`, as received.
    pub metadata: Map<String, Value>,
}

impl<T> Notification<T> {
    /// A notification, for calling handlers directly in tests.
    pub fn new(priority: Priority, event_type: impl Into<String>, payload: T) -> Self {
        Self {
            context: Context::new(),
            publisher_id: None,
            event_type: Some(event_type.into()),
            priority,
            payload,
            metadata: Map::new(),
        }
    }

    /// Sets the publisher id (for tests, as [`new`](Self::new)).
    #[must_use]
    pub fn with_publisher_id(mut self, publisher_id: impl Into<String>) -> Self {
        self.publisher_id = Some(publisher_id.into());
        self
    }

    /// Sets the context (for tests, as [`new`](Self::new)).
    #[must_use]
    pub fn with_context(mut self, context: Context) -> Self {
        self.context = context;
        self
    }

    /// `metadata["message_id"]` when it is a string.
    pub fn message_id(&self) -> Option<&str> {
        self.metadata.get("message_id").and_then(Value::as_str)
    }

    /// `metadata["timestamp"]` when it is a string.
    pub fn timestamp(&self) -> Option<&str> {
        self.metadata.get("timestamp").and_then(Value::as_str)
    }

    /// The same notification with `f` applied to its payload.
    pub fn map_payload<U>(self, f: impl FnOnce(T) -> U) -> Notification<U> {
        Notification {
            context: self.context,
            publisher_id: self.publisher_id,
            event_type: self.event_type,
            priority: self.priority,
            payload: f(self.payload),
            metadata: self.metadata,
        }
    }
}

impl Notification<Value> {
    /// The notification with its payload converted to `T`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Serialization`] saying which field did not fit and why, as a handler
    /// taking `Notification<T>` reports it.
    pub fn into_typed<T: DeserializeOwned>(self) -> Result<Notification<T>> {
        self.convert(from_json::<T>)
    }

    /// As [`into_typed`](Self::into_typed), handing a `Value` payload over as it is (what
    /// handlers get).
    pub(crate) fn into_handler_type<T: DeserializeOwned + 'static>(
        self,
    ) -> Result<Notification<T>> {
        self.convert(from_json_owned::<T>)
    }

    fn convert<T>(
        self,
        read: impl FnOnce(Value) -> std::result::Result<T, Mismatch>,
    ) -> Result<Notification<T>> {
        let Self {
            context,
            publisher_id,
            event_type,
            priority,
            payload,
            metadata,
        } = self;
        match read(payload) {
            Ok(payload) => Ok(Notification {
                context,
                publisher_id,
                event_type,
                priority,
                payload,
                metadata,
            }),
            Err(e) => Err(payload_error::<T>(event_type.as_deref(), &e)),
        }
    }

    /// The payload as `T`, read without taking or copying it.
    ///
    /// # Errors
    ///
    /// As [`into_typed`](Self::into_typed).
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T> {
        from_json_ref::<T>(&self.payload)
            .map_err(|e| payload_error::<T>(self.event_type.as_deref(), &e))
    }
}

/// The error of a payload that does not fit a handler's type.
fn payload_error<T>(event_type: Option<&str>, e: &Mismatch) -> Error {
    Error::new(
        ErrorKind::Serialization,
        format!(
            "the payload of notification {} does not fit {}: {}",
            event_type.unwrap_or("(no event_type)"),
            std::any::type_name::<T>(),
            e.describe()
        ),
    )
}

/// What a handler decided (oslo's `NotificationResult`).
///
/// # Examples
///
/// ```
/// use oslo_messaging::notify::{Notification, NotificationEndpoint, NotificationResult, Priority};
///
/// // Put back what cannot be handled now (when the listener allows requeue).
/// let endpoint = NotificationEndpoint::builder()
///     .on(Priority::Info, |n: Notification| async move {
///         if n.payload.is_null() { NotificationResult::Requeue } else { NotificationResult::Handled }
///     })
///     .build()?;
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NotificationResult {
    /// Done: acknowledge the message.
    #[default]
    Handled,
    /// Put it back for another delivery (only when the listener allows requeue; otherwise it
    /// is acknowledged).
    Requeue,
}

/// What notification handlers may return.
///
/// `()` and `Handled` acknowledge; `Requeue` requeues; an `Err` is logged and counts as
/// `Requeue`, as an exception does in Python.
///
/// # Examples
///
/// ```
/// use oslo_messaging::notify::{IntoNotificationResult, NotificationResult};
///
/// assert_eq!(().into_notification_result(), NotificationResult::Handled);
/// let failed: Result<(), &str> = Err("database is down");
/// assert_eq!(failed.into_notification_result(), NotificationResult::Requeue);
/// ```
pub trait IntoNotificationResult {
    /// The decision.
    fn into_notification_result(self) -> NotificationResult;
}

impl IntoNotificationResult for NotificationResult {
    fn into_notification_result(self) -> NotificationResult {
        self
    }
}

impl IntoNotificationResult for () {
    fn into_notification_result(self) -> NotificationResult {
        NotificationResult::Handled
    }
}

impl<T: IntoNotificationResult, E: fmt::Display> IntoNotificationResult
    for std::result::Result<T, E>
{
    fn into_notification_result(self) -> NotificationResult {
        match self {
            Ok(v) => v.into_notification_result(),
            Err(e) => {
                tracing::error!(error = %e, "notification handler failed");
                NotificationResult::Requeue
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Created {
        id: u64,
    }

    #[test]
    fn a_payload_that_does_not_fit_says_where() {
        let n = Notification::new(Priority::Info, "x.create", json!({"id": "seven"}));
        let e = n.payload_as::<Created>().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Serialization);
        assert_eq!(
            e.to_string(),
            "the payload of notification x.create does not fit \
             oslo_messaging::notify::notification::tests::Created: \
             at id: invalid type: string \"seven\", expected u64"
        );
        let ok = Notification::new(Priority::Info, "x", json!({"id": 7}));
        assert_eq!(ok.payload_as::<Created>().unwrap(), Created { id: 7 });
        assert_eq!(
            ok.into_typed::<Created>().unwrap().payload,
            Created { id: 7 }
        );
    }
}
