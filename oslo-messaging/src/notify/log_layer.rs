//! Log events as notifications: `tracing-subscriber` layers that do what Python's
//! `LoggingNotificationHandler` and `PublishErrorsHandler` do for `logging` records (feature
//! `tracing-layer`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context as LayerContext;

use super::{Notifier, NotifierBuilder, Priority};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::transport::Transport;

/// Events waiting to be published at most; beyond that they are dropped and counted.
const QUEUE: usize = 1024;

tokio::task_local! {
    /// Set while a layer's own task publishes: what the library logs then is not published
    /// again (no loop when the broker is away and publishing logs its failure).
    static PUBLISHING: ();
}

/// Publishes each log event at or above a level as a `logrecord` notification, as Python's
/// `oslo_messaging.LoggingNotificationHandler` does: the notification's priority is the
/// event's level (`TRACE` events are never sent: Python has no such level), the context is
/// empty, and the payload has the keys of a Python log record: `name` (the event's target),
/// `levelno` and `levelname` (Python's numbers and names: `WARN` is `30`, `WARNING`), `msg` (the
/// message), `pathname`, `lineno`, `funcName` (the module path), `thread` (the thread's
/// number), `processName` (the program's file name), `process` (the pid), `exc_info` (`null`)
/// and `extra` (the event's other fields, or `null`).
///
/// Events are published by a task of their own, from a bounded queue: logging never waits for
/// the broker, and what does not fit is dropped and counted ([`dropped`](Self::dropped)).
/// What the library logs from that task while publishing (a failed send, say) is not
/// published again; what its connection tasks log about the broker (a lost connection) is,
/// bounded by the queue.
///
/// # Examples
///
/// ```
/// use oslo_messaging::Transport;
/// use oslo_messaging::notify::LoggingNotificationLayer;
/// use tracing_subscriber::layer::SubscriberExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> oslo_messaging::Result<()> {
/// let transport = Transport::memory();
/// let layer = LoggingNotificationLayer::builder(&transport)
///     .publisher_id("compute.host-1")
///     .level(tracing::Level::ERROR)
///     .build()?;
/// let subscriber = tracing_subscriber::registry().with(layer);
/// tracing::subscriber::with_default(subscriber, || {
///     tracing::error!(instance = "vm-1", "the instance failed to boot");
/// });
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LoggingNotificationLayer {
    queue: mpsc::Sender<(Priority, Value)>,
    level: Level,
    dropped: Arc<AtomicU64>,
    shape: Shape,
}

/// Which Python handler a layer copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `LoggingNotificationHandler`: `logrecord`, the whole record.
    Record,
    /// `PublishErrorsHandler`: `error_notification`, `{"error": msg}`.
    Errors,
}

/// Builds a [`LoggingNotificationLayer`].
#[derive(Debug)]
#[must_use]
pub struct LoggingNotificationLayerBuilder {
    notifier: NotifierBuilder,
    level: Level,
}

impl LoggingNotificationLayerBuilder {
    /// The publisher id of the notifications (default: none, as Python's default).
    pub fn publisher_id(mut self, publisher_id: impl Into<String>) -> Self {
        self.notifier = self.notifier.publisher_id(publisher_id);
        self
    }

    /// The topics (default `[oslo_messaging_notifications] topics`).
    pub fn topics<I, T>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.notifier = self.notifier.topics(topics);
        self
    }

    /// The lowest level published (default `WARN`).
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// Starts the publishing task and returns the layer. The notification drivers are the
    /// configured ones (`[oslo_messaging_notifications] driver`).
    ///
    /// # Errors
    ///
    /// As [`NotifierBuilder::build`](super::NotifierBuilder::build); and
    /// [`ErrorKind::InvalidState`](crate::ErrorKind::InvalidState) outside a Tokio runtime.
    pub fn build(self) -> Result<LoggingNotificationLayer> {
        LoggingNotificationLayer::start(self.notifier.build()?, self.level, Shape::Record)
    }
}

impl LoggingNotificationLayer {
    /// Starts building a layer that publishes on `transport`.
    pub fn builder(transport: &Transport) -> LoggingNotificationLayerBuilder {
        LoggingNotificationLayerBuilder {
            notifier: Notifier::builder(transport),
            level: Level::WARN,
        }
    }

    /// Python's `PublishErrorsHandler`: each `ERROR` event becomes an `error_notification` from
    /// the publisher `error.publisher` with the payload `{"error": <message>}`, at priority
    /// `ERROR`, on the configured drivers and topics. `None` when the `log` notification
    /// driver is configured (publishing would log, and the log would publish, as Python
    /// guards against).
    ///
    /// # Errors
    ///
    /// As [`LoggingNotificationLayerBuilder::build`].
    pub fn errors(transport: &Transport) -> Result<Option<Self>> {
        let configured = transport.config().notifications.driver.as_deref();
        if configured.is_some_and(|d| d.iter().any(|d| d == "log")) {
            return Ok(None);
        }
        let notifier = Notifier::builder(transport)
            .publisher_id("error.publisher")
            .build()?;
        Self::start(notifier, Level::ERROR, Shape::Errors).map(Some)
    }

    fn start(notifier: Notifier, level: Level, shape: Shape) -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::new(
                crate::ErrorKind::InvalidState,
                "a logging notification layer is started inside a Tokio runtime",
            )
        })?;
        let (queue, mut rx) = mpsc::channel::<(Priority, Value)>(QUEUE);
        let event_type = match shape {
            Shape::Record => "logrecord",
            Shape::Errors => "error_notification",
        };
        runtime.spawn(PUBLISHING.scope((), async move {
            while let Some((priority, payload)) = rx.recv().await {
                // A failure is logged by the notifier, and not published again.
                let _ = notifier
                    .notify(&Context::new(), event_type, priority, &payload)
                    .await;
            }
        }));
        Ok(Self {
            queue,
            level,
            dropped: Arc::default(),
            shape,
        })
    }

    /// Events dropped because the queue was full (the broker slower than the logs).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Python's level number and name for a `tracing` level; `None` for `TRACE`.
fn python_level(level: Level) -> Option<(Priority, u32, &'static str)> {
    match level {
        Level::ERROR => Some((Priority::Error, 40, "ERROR")),
        Level::WARN => Some((Priority::Warn, 30, "WARNING")),
        Level::INFO => Some((Priority::Info, 20, "INFO")),
        Level::DEBUG => Some((Priority::Debug, 10, "DEBUG")),
        _ => None,
    }
}

/// The message and the other fields of an event.
#[derive(Default)]
struct Fields {
    message: String,
    extra: serde_json::Map<String, Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.message);
        } else {
            self.extra.insert(field.name().to_owned(), value.into());
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.extra.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.extra.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.extra.insert(field.name().to_owned(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.extra
                .insert(field.name().to_owned(), format!("{value:?}").into());
        }
    }
}

/// This program's file name (Python's `processName` is the process's name).
fn process_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(crate::config::default_processname)
}

fn thread_number() -> u64 {
    // `ThreadId` prints as `ThreadId(N)`; its number is stable for the thread's life.
    let text = format!("{:?}", std::thread::current().id());
    text.trim_start_matches("ThreadId(")
        .trim_end_matches(')')
        .parse()
        .unwrap_or(0)
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for LoggingNotificationLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: LayerContext<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > self.level || PUBLISHING.try_with(|()| ()).is_ok() {
            return;
        }
        let Some((priority, levelno, levelname)) = python_level(*meta.level()) else {
            return;
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        let payload = match self.shape {
            Shape::Errors => json!({"error": fields.message}),
            Shape::Record => json!({
                "name": meta.target(),
                "levelno": levelno,
                "levelname": levelname,
                "exc_info": Value::Null,
                "pathname": meta.file(),
                "lineno": meta.line(),
                "msg": fields.message,
                "funcName": meta.module_path(),
                "thread": thread_number(),
                "processName": process_name(),
                "process": std::process::id(),
                "extra": if fields.extra.is_empty() { Value::Null } else { Value::Object(fields.extra) },
            }),
        };
        if self.queue.try_send((priority, payload)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Priority;
    use tracing_subscriber::layer::SubscriberExt;

    #[tokio::test]
    async fn events_become_python_shaped_logrecords() {
        let conf = crate::Config::builder()
            .option("oslo_messaging_notifications", "driver", "test")
            .build()
            .unwrap();
        let t = Transport::memory_with_config(&conf);
        let layer = LoggingNotificationLayer::builder(&t)
            .publisher_id("svc.host")
            .level(Level::INFO)
            .build()
            .unwrap();
        let errors = LoggingNotificationLayer::errors(&t).unwrap().unwrap();
        let subscriber = tracing_subscriber::registry().with(layer).with(errors);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(instance = "vm-1", tries = 3, "boot failed");
            tracing::error!("disk full");
            tracing::debug!("below the level");
            tracing::trace!("never");
        });
        let captured = async {
            loop {
                let got = Notifier::captured(&t);
                if got.len() >= 3 {
                    return got;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), captured)
            .await
            .unwrap();
        assert_eq!(got.len(), 3, "{got:#?}");
        let warn = got.iter().find(|n| n.priority == Priority::Warn).unwrap();
        assert_eq!(warn.message.event_type, "logrecord");
        assert_eq!(warn.message.publisher_id.as_deref(), Some("svc.host"));
        let p = &warn.message.payload;
        assert_eq!(p["msg"], "boot failed");
        assert_eq!(p["levelno"], 30);
        assert_eq!(p["levelname"], "WARNING");
        assert_eq!(p["extra"], json!({"instance": "vm-1", "tries": 3}));
        assert_eq!(p["process"], std::process::id());
        let keys: Vec<_> = p.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "name",
                "levelno",
                "levelname",
                "exc_info",
                "pathname",
                "lineno",
                "msg",
                "funcName",
                "thread",
                "processName",
                "process",
                "extra"
            ]
        );
        let error_note = got
            .iter()
            .find(|n| n.message.event_type == "error_notification")
            .unwrap();
        assert_eq!(
            error_note.message.publisher_id.as_deref(),
            Some("error.publisher")
        );
        assert_eq!(error_note.message.payload, json!({"error": "disk full"}));
        assert_eq!(error_note.priority, Priority::Error);
    }

    #[tokio::test]
    async fn the_error_layer_stays_off_with_the_log_driver() {
        let conf = crate::Config::builder()
            .option("oslo_messaging_notifications", "driver", "log")
            .build()
            .unwrap();
        let t = Transport::memory_with_config(&conf);
        assert!(LoggingNotificationLayer::errors(&t).unwrap().is_none());
    }
}
