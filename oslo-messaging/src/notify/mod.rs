//! Notifications: publishing events and listening for them.
//!
//! A [`Notifier`] sends notifications (`publisher_id`, `event_type`, priority, payload,
//! context) to `<topic>.<priority>` queues; a [`NotificationListener`] consumes them and hands
//! each to the [`NotificationEndpoint`] handlers of its priority, with the payload as the
//! handler's own type ([`Notification<T>`]), or as a [`NotificationStream`] to a loop of the
//! service's own. The messages are those of Python oslo.messaging (the `messagingv2` and
//! `messaging` drivers), so Rust and Python notifiers and listeners mix freely.

mod dispatch;
mod endpoint;
mod filter;
mod listener;
#[cfg(feature = "tracing-layer")]
mod log_layer;
#[cfg(feature = "tower")]
mod middleware;
mod notification;
mod notifier;
mod priority;
mod routing;
mod stream;

pub use crate::serve::State;
pub use endpoint::{NotificationEndpoint, NotificationEndpointBuilder, NotificationHandler};
pub use filter::{NotificationFilter, NotificationFilterBuilder};
pub use listener::{NotificationListener, NotificationListenerBuilder};
#[cfg(feature = "tracing-layer")]
pub use log_layer::{LoggingNotificationLayer, LoggingNotificationLayerBuilder};
#[cfg(feature = "tower")]
pub use middleware::{RequestNotifier, RequestNotifierLayer, RequestNotifierLayerBuilder};
pub use notification::{IntoNotificationResult, Notification, NotificationResult};
pub use notifier::{CapturedNotification, Notifier, NotifierBuilder, NotifyDriver};
pub use priority::Priority;
pub use stream::{Delivery, NotificationStream};
