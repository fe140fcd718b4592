//! Notifications: publishing events and listening for them.
//!
//! A [`Notifier`] sends notifications (`publisher_id`, `event_type`, priority, payload,
//! context) to `<topic>.<priority>` queues; a [`NotificationListener`] consumes them and hands
//! each to the [`NotificationEndpoint`] handlers of its priority. The messages are those of
//! Python oslo.messaging (the `messagingv2` and `messaging` drivers), so Rust and Python
//! notifiers and listeners mix freely.

mod filter;
mod listener;
mod notifier;
mod priority;
mod routing;

pub use filter::NotificationFilter;
pub use listener::{
    BatchNotificationEndpoint, BatchNotificationListenerBuilder, IntoNotificationResult,
    Notification, NotificationEndpoint, NotificationListener, NotificationListenerBuilder,
    NotificationResult,
};
pub use notifier::{
    CapturedNotification, Notifier, NotifierBuilder, NotifyDriver, PrepareNotifier,
};
pub use priority::Priority;
