//! Sending notifications.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use super::Priority;
use super::routing::RoutingConfig;
use crate::context::Context;
use crate::driver::Retry;
use crate::error::{Error, Result};
use crate::serializer::Serializer;
use crate::target::Target;
use crate::telemetry::{NoteInfo, Span};
use crate::transport::Transport;
use crate::wire;

/// A notification the `test` driver captured (oslo's `_impl_test.NOTIFICATIONS` entry).
///
/// # Examples
///
/// ```
/// use oslo_messaging::notify::{Notifier, NotifyDriver};
/// use oslo_messaging::{Context, Transport};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> oslo_messaging::Result<()> {
/// let transport = Transport::memory();
/// let notifier = Notifier::builder(&transport).driver(NotifyDriver::Test).build()?;
/// notifier.error(&Context::new(), "volume.attach.error", &serde_json::json!({"id": 3})).await?;
/// let captured = &Notifier::captured(&transport)[0];
/// assert_eq!(captured.message.event_type, "volume.attach.error");
/// assert_eq!(captured.message.priority, "ERROR");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CapturedNotification {
    /// The context as sent (redacted).
    pub context: Context,
    /// The message.
    pub message: wire::Notification,
    /// The priority.
    pub priority: Priority,
    /// The retry budget it was sent with.
    pub retry: Retry,
}

/// The notification drivers (oslo's `oslo.messaging.notify.drivers`).
///
/// # Examples
///
/// ```
/// use oslo_messaging::notify::NotifyDriver;
///
/// let d: NotifyDriver = "messagingv2".parse()?;
/// assert_eq!(d, NotifyDriver::MessagingV2);
/// assert_eq!(NotifyDriver::Log.name(), "log");
/// assert!("kafka".parse::<NotifyDriver>().is_err());
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotifyDriver {
    /// `messagingv2`: the 2.0 envelope (the usual choice).
    MessagingV2,
    /// `messaging`: the raw 1.0 message, no envelope.
    Messaging,
    /// `log`: through `tracing`, passwords masked.
    Log,
    /// `noop`: nothing.
    Noop,
    /// `test`: captured in memory, see [`Notifier::captured`].
    Test,
    /// `routing`: to other drivers by the rules of `[oslo_messaging_notifications]
    /// routing_config`.
    Routing,
}

impl NotifyDriver {
    /// The driver's name in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Self::MessagingV2 => "messagingv2",
            Self::Messaging => "messaging",
            Self::Log => "log",
            Self::Noop => "noop",
            Self::Test => "test",
            Self::Routing => "routing",
        }
    }
}

impl std::str::FromStr for NotifyDriver {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "messagingv2" => Self::MessagingV2,
            "messaging" => Self::Messaging,
            "log" => Self::Log,
            "noop" => Self::Noop,
            "test" => Self::Test,
            "routing" => Self::Routing,
            other => {
                return Err(Error::config(format!(
                    "unknown notification driver {other:?} (known: messagingv2, messaging, log, noop, test, routing)"
                )));
            }
        })
    }
}

/// What the `test` driver captured on one transport.
#[derive(Debug, Default)]
struct Captured(std::sync::Mutex<Vec<CapturedNotification>>);

struct Shared {
    transport: Transport,
    drivers: Vec<NotifyDriver>,
    routing: Option<RoutingConfig>,
    topics: Vec<String>,
    serializer: Option<Arc<dyn Serializer>>,
}

/// Sends notifications (oslo's `Notifier`): cheap to clone, safe to share.
///
/// Each notification goes to every configured driver; the messaging drivers publish it once
/// per topic to `<topic>.<priority>` on the control exchange. The context is redacted first
/// (`auth_token` and other secrets become `null`).
///
/// Drivers come from [`NotifierBuilder::driver`], else from `[oslo_messaging_notifications]
/// driver`. When neither names any, the notifier sends nothing (as Python does, so a deployment
/// that leaves `driver` unset never fills `notifications.*` queues nobody reads); the first
/// such notifier says so once in the log.
///
/// # Examples
///
/// ```
/// use oslo_messaging::notify::{Notifier, NotifyDriver, Priority};
/// use oslo_messaging::{Context, Transport};
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> oslo_messaging::Result<()> {
/// let transport = Transport::memory();
/// let notifier = Notifier::builder(&transport)
///     .publisher_id("compute.host1")
///     .driver(NotifyDriver::Test)
///     .build()?;
/// notifier.info(&Context::new(), "compute.instance.create.end", &json!({"id": 1})).await?;
///
/// let sent = Notifier::captured(&transport);
/// assert_eq!(sent[0].priority, Priority::Info);
/// assert_eq!(sent[0].message.event_type, "compute.instance.create.end");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Notifier {
    shared: Arc<Shared>,
    publisher_id: Option<String>,
    retry: Retry,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("publisher_id", &self.publisher_id)
            .field("drivers", &self.shared.drivers)
            .field("topics", &self.shared.topics)
            .field("retry", &self.retry)
            .finish()
    }
}

macro_rules! priority_methods {
    ($($(#[$m:meta])* $name:ident => $prio:ident;)*) => {
        $(
            $(#[$m])*
            ///
            /// # Errors
            ///
            /// As [`notify`](Self::notify).
            ///
            /// # Cancel safety
            ///
            /// As [`notify`](Self::notify).
            pub async fn $name(&self, ctx: &Context, event_type: &str, payload: &(impl Serialize + ?Sized)) -> Result<()> {
                self.notify(ctx, event_type, Priority::$prio, payload).await
            }
        )*
    };
}

impl Notifier {
    /// Starts building a notifier on `transport`.
    pub fn builder(transport: &Transport) -> NotifierBuilder {
        NotifierBuilder {
            transport: transport.clone(),
            base: None,
            publisher_id: None,
            drivers: Vec::new(),
            topics: None,
            retry: None,
            serializer: None,
        }
    }

    /// Notifications the `test` driver captured through `transport`, oldest first (Python's
    /// `_impl_test.NOTIFICATIONS`, kept per transport).
    pub fn captured(transport: &Transport) -> Vec<CapturedNotification> {
        transport
            .extension::<Captured>()
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The publisher id.
    pub fn publisher_id(&self) -> Option<&str> {
        self.publisher_id.as_deref()
    }

    /// `false` when notifications go nowhere (no driver, or only `noop`).
    pub fn is_enabled(&self) -> bool {
        self.shared.drivers.iter().any(|d| *d != NotifyDriver::Noop)
    }

    /// A builder for a notifier sharing this one's drivers, topics and serializer, with
    /// another publisher id or retry (Python's `prepare()`).
    ///
    /// # Examples
    ///
    /// ```
    /// use oslo_messaging::notify::{Notifier, NotifyDriver};
    /// use oslo_messaging::{Retry, Transport};
    ///
    /// let transport = Transport::memory();
    /// let notifier = Notifier::builder(&transport)
    ///     .driver(NotifyDriver::MessagingV2)
    ///     .publisher_id("compute.host1")
    ///     .build()?;
    /// let quick = notifier.prepare().retry(Retry::Times(0)).build()?;
    /// assert_eq!(quick.publisher_id(), Some("compute.host1"));
    /// # Ok::<(), oslo_messaging::Error>(())
    /// ```
    pub fn prepare(&self) -> NotifierBuilder {
        NotifierBuilder {
            transport: self.shared.transport.clone(),
            base: Some(self.shared.clone()),
            publisher_id: self.publisher_id.clone(),
            drivers: Vec::new(),
            topics: None,
            retry: Some(self.retry),
            serializer: None,
        }
    }

    priority_methods! {
        /// Sends an `AUDIT` notification.
        audit => Audit;
        /// Sends a `DEBUG` notification.
        debug => Debug;
        /// Sends an `INFO` notification.
        info => Info;
        /// Sends a `WARN` notification.
        warn => Warn;
        /// Sends a `WARN` notification (Python's `warning`, an alias of `warn`).
        warning => Warn;
        /// Sends an `ERROR` notification.
        error => Error;
        /// Sends a `CRITICAL` notification.
        critical => Critical;
        /// Sends a `SAMPLE` notification.
        sample => Sample;
    }

    /// Sends a notification of `priority`.
    ///
    /// Every driver and topic is tried even when one fails; the first failure is returned.
    /// (Python only logs such failures; ignore the result to get that behaviour.)
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Serialization`](crate::ErrorKind::Serialization) when the payload does not
    /// serialize, or the first driver error (a delivery failure after `retry` ran out, say).
    ///
    /// # Cancel safety
    ///
    /// As [`RpcClient::cast`](crate::rpc::RpcClient::cast): dropping the future stops what is
    /// still to be sent (the next drivers and topics, retries), but a copy already handed to
    /// the connection is delivered.
    pub async fn notify(
        &self,
        ctx: &Context,
        event_type: &str,
        priority: Priority,
        payload: &(impl Serialize + ?Sized),
    ) -> Result<()> {
        let payload = serde_json::to_value(payload).map_err(|e| {
            Error::serialization(format!("cannot serialize the payload of {event_type}: {e}"))
        })?;
        let serializer = self.shared.serializer.as_deref();
        let payload = match serializer {
            Some(s) => s.serialize_entity(ctx, payload)?,
            None => payload,
        };
        let safe = ctx.redacted();
        let mut context = match serializer {
            Some(s) => s.serialize_context(&safe)?,
            None => safe,
        };
        let message_id = uuid::Uuid::new_v4().hyphenated().to_string();
        let telemetry = self.shared.transport.telemetry();
        let span = if telemetry.is_on() {
            let topics = self.shared.topics.join(",");
            let note = NoteInfo {
                event_type: Some(event_type),
                publisher_id: self.publisher_id.as_deref(),
                priority: priority.as_wire(),
                message_id: &message_id,
                topic: Some(&topics),
            };
            telemetry.publish(&note, &mut context)
        } else {
            Span::default()
        };
        let message = wire::Notification {
            message_id,
            publisher_id: self.publisher_id.clone(),
            event_type: event_type.to_owned(),
            priority: priority.as_wire().to_owned(),
            payload,
            timestamp: wire::utc_timestamp_now(),
            context,
        };
        let sent = self.send_all(&message, event_type, priority).await;
        if let Err(e) = &sent {
            span.fail(&e.to_string());
        }
        span.end();
        sent
    }

    /// Sends `message` through every configured driver; the first error, after trying all.
    async fn send_all(
        &self,
        message: &wire::Notification,
        event_type: &str,
        priority: Priority,
    ) -> Result<()> {
        let mut first_error = None;
        for driver in &self.shared.drivers {
            if *driver == NotifyDriver::Routing {
                let routing = self.shared.routing.as_ref();
                let targets: Vec<NotifyDriver> = routing
                    .map(|r| {
                        r.drivers_for(event_type, priority)
                            .into_iter()
                            .filter_map(|name| name.parse().ok())
                            .filter(|d| *d != NotifyDriver::Routing)
                            .collect()
                    })
                    .unwrap_or_default();
                for d in targets {
                    if let Err(e) = self.send_with(d, message, priority).await {
                        first_error.get_or_insert(e);
                    }
                }
            } else if let Err(e) = self.send_with(*driver, message, priority).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn send_with(
        &self,
        driver: NotifyDriver,
        message: &wire::Notification,
        priority: Priority,
    ) -> Result<()> {
        match driver {
            NotifyDriver::MessagingV2 | NotifyDriver::Messaging => {
                let envelope = driver == NotifyDriver::MessagingV2;
                let mut first_error = None;
                for topic in &self.shared.topics {
                    let target = Target::new(format!("{topic}.{}", priority.as_str()));
                    let sent = self
                        .shared
                        .transport
                        .driver()
                        .send_notification(target, message.clone(), envelope, self.retry)
                        .await;
                    if let Err(e) = sent {
                        tracing::error!(
                            topic,
                            event_type = message.event_type,
                            error = %e,
                            "could not send notification"
                        );
                        first_error.get_or_insert(e);
                    }
                }
                first_error.map_or(Ok(()), Err)
            }
            NotifyDriver::Log => {
                log_notification(message, priority);
                Ok(())
            }
            NotifyDriver::Noop | NotifyDriver::Routing => Ok(()),
            NotifyDriver::Test => {
                self.shared
                    .transport
                    .extension::<Captured>()
                    .0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(CapturedNotification {
                        context: message.context.clone(),
                        message: message.clone(),
                        priority,
                        retry: self.retry,
                    });
                Ok(())
            }
        }
    }
}

use crate::context::{SANITIZE_KEYS, is_secret_key};

/// Masks `key=value` secrets inside a string (oslo.utils' `mask_password`, first pattern).
fn mask_string(s: &str) -> String {
    static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        let keys = SANITIZE_KEYS.join("|");
        regex::Regex::new(&format!(r#"(?i)((?:{keys})[0-9]*\s*=\s*)[^\s'"]+"#))
            .expect("a valid pattern")
    });
    RE.replace_all(s, "${1}***").into_owned()
}

/// oslo.utils' `mask_dict_password`: values of secret-looking keys become `***`; nested
/// objects are masked first (so a secret key holding an object keeps its masked object);
/// strings have `key=value` secrets masked.
pub(crate) fn mask_secrets(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, v) in map {
                let masked = if v.is_object() {
                    mask_secrets(v)
                } else if is_secret_key(k) {
                    Value::String("***".to_owned())
                } else {
                    mask_secrets(v)
                };
                out.insert(k.clone(), masked);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(mask_secrets).collect()),
        Value::String(s) => Value::String(mask_string(s)),
        other => other.clone(),
    }
}

/// The `log` driver: the message (without its context), passwords masked, as JSON at the
/// priority's level. Python's logger has no `audit` or `sample` level; they are logged at info.
fn log_notification(message: &wire::Notification, priority: Priority) {
    let mut shown = Map::new();
    shown.insert("message_id".into(), message.message_id.clone().into());
    shown.insert("publisher_id".into(), message.publisher_id.clone().into());
    shown.insert("event_type".into(), message.event_type.clone().into());
    shown.insert("priority".into(), message.priority.clone().into());
    shown.insert("payload".into(), message.payload.clone());
    shown.insert("timestamp".into(), message.timestamp.clone().into());
    let text = wire::json::to_string(&mask_secrets(&Value::Object(shown))).unwrap_or_default();
    let event_type = message.event_type.as_str();
    match priority {
        Priority::Debug => {
            tracing::debug!(target: "oslo.messaging.notification", event_type, "{text}")
        }
        Priority::Info | Priority::Audit | Priority::Sample => {
            tracing::info!(target: "oslo.messaging.notification", event_type, "{text}");
        }
        Priority::Warn => {
            tracing::warn!(target: "oslo.messaging.notification", event_type, "{text}")
        }
        Priority::Error | Priority::Critical => {
            tracing::error!(target: "oslo.messaging.notification", event_type, "{text}");
        }
    }
}

/// Builds a [`Notifier`]: from the configuration ([`Notifier::builder`]) or from another
/// notifier ([`Notifier::prepare`]).
///
/// # Examples
///
/// ```
/// use oslo_messaging::notify::{Notifier, NotifyDriver};
/// use oslo_messaging::{Retry, Transport};
///
/// let transport = Transport::memory();
/// let notifier = Notifier::builder(&transport)
///     .driver(NotifyDriver::MessagingV2)
///     .topics(["notifications", "audit"])
///     .publisher_id("volume.host2")
///     .retry(Retry::Times(3))
///     .build()?;
/// assert!(notifier.is_enabled());
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[must_use]
pub struct NotifierBuilder {
    transport: Transport,
    /// The notifier prepared from, whose drivers, topics and serializer are shared.
    base: Option<Arc<Shared>>,
    publisher_id: Option<String>,
    drivers: Vec<NotifyDriver>,
    topics: Option<Vec<String>>,
    retry: Option<Retry>,
    serializer: Option<Arc<dyn Serializer>>,
}

impl fmt::Debug for NotifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifierBuilder")
            .field("publisher_id", &self.publisher_id)
            .field("drivers", &self.drivers)
            .field("topics", &self.topics)
            .field("prepared", &self.base.is_some())
            .finish_non_exhaustive()
    }
}

impl NotifierBuilder {
    /// Sets the publisher id, such as `compute.host1`.
    pub fn publisher_id(mut self, publisher_id: impl Into<String>) -> Self {
        self.publisher_id = Some(publisher_id.into());
        self
    }

    /// Adds a driver (overriding the configured list).
    pub fn driver(mut self, driver: NotifyDriver) -> Self {
        self.drivers.push(driver);
        self
    }

    /// Sets the topics (default `[oslo_messaging_notifications] topics`, `notifications`).
    pub fn topics<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.topics = Some(topics.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the publish retry budget (default `[oslo_messaging_notifications] retry`, forever).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Passes payloads and contexts through `serializer`.
    pub fn serializer(mut self, serializer: Arc<dyn Serializer>) -> Self {
        self.serializer = Some(serializer);
        self
    }

    /// The notifier.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Configuration`](crate::ErrorKind::Configuration) for an unknown driver name
    /// in the configuration, a `routing` driver whose `routing_config` file cannot be read or
    /// parsed or names an unknown driver, or drivers, topics or a serializer set on a
    /// [prepared](Notifier::prepare) notifier (it shares its parent's, as in Python).
    pub fn build(self) -> Result<Notifier> {
        if let Some(shared) = self.base {
            if !self.drivers.is_empty() || self.topics.is_some() || self.serializer.is_some() {
                return Err(Error::config(
                    "a prepared notifier shares its parent's drivers, topics and serializer: only publisher_id and retry can change",
                ));
            }
            return Ok(Notifier {
                shared,
                publisher_id: self.publisher_id,
                retry: self.retry.unwrap_or_default(),
            });
        }
        let conf = &self.transport.config().notifications;
        let drivers = if !self.drivers.is_empty() {
            self.drivers
        } else {
            match &conf.driver {
                Some(names) => names
                    .iter()
                    .map(|n| n.parse())
                    .collect::<Result<Vec<NotifyDriver>>>()?,
                None => Vec::new(),
            }
        };
        if drivers.is_empty() {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::info!(
                    "no notification driver is configured ([oslo_messaging_notifications] driver): notifications are not sent"
                );
            });
        }
        let routing = if drivers.contains(&NotifyDriver::Routing) {
            Some(load_routing(&conf.routing_config)?)
        } else {
            None
        };
        let topics = self.topics.unwrap_or_else(|| conf.topics.clone());
        let retry = self.retry.unwrap_or(Retry::from_python(conf.retry));
        Ok(Notifier {
            shared: Arc::new(Shared {
                transport: self.transport,
                drivers,
                routing,
                topics,
                serializer: self.serializer,
            }),
            publisher_id: self.publisher_id,
            retry,
        })
    }
}

fn load_routing(path: &str) -> Result<RoutingConfig> {
    if path.is_empty() {
        return Err(Error::config(
            "the routing notification driver needs [oslo_messaging_notifications] routing_config",
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::with_source(
            crate::ErrorKind::Configuration,
            format!("cannot read routing_config {path}"),
            e,
        )
    })?;
    let cfg = RoutingConfig::parse(&text)?;
    for name in cfg.driver_names() {
        let d: NotifyDriver = name.parse()?;
        if d == NotifyDriver::Routing {
            return Err(Error::config(
                "routing_config cannot route to the routing driver itself",
            ));
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What oslo.utils' `mask_dict_password` produced for the same input (reference notes).
    #[test]
    fn masking_follows_oslo_utils() {
        let input = json!({
            "password": "p", "nested": {"auth_token": "t", "x": "y"}, "token_count": 3,
            "pw": {"password": {"a": "b"}}, "lst": ["password=abc"], "u": "é"
        });
        let out = mask_secrets(&input);
        assert_eq!(
            out,
            json!({
                "password": "***", "nested": {"auth_token": "***", "x": "y"}, "token_count": "***",
                "pw": {"password": {"a": "b"}}, "lst": ["password=***"], "u": "é"
            })
        );
    }

    #[test]
    fn driver_names_round_trip() {
        for d in [
            NotifyDriver::MessagingV2,
            NotifyDriver::Messaging,
            NotifyDriver::Log,
            NotifyDriver::Noop,
            NotifyDriver::Test,
            NotifyDriver::Routing,
        ] {
            assert_eq!(d.name().parse::<NotifyDriver>().unwrap(), d);
        }
        assert!("kafka".parse::<NotifyDriver>().is_err());
    }
}
