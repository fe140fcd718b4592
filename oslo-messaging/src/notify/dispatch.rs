//! From a driver's message to handlers and back: conversion, Python's dispatch rules, and the
//! acknowledgement that ends each message.

use std::collections::BTreeMap;
use std::sync::Mutex as StdMutex;

use serde_json::{Map, Value};

use super::Priority;
use super::endpoint::{Erased, NotificationEndpoint};
use super::notification::{Notification, NotificationResult};
use crate::driver::{self, NotificationAcker};
use crate::serializer::Serializer;
use crate::serve::DedupCache;
use crate::telemetry::{NoteInfo, Span, Telemetry};
use tracing::Instrument;

/// One received notification, ready to dispatch; `notification` is `None` when it cannot be
/// handled (an unknown priority, a serializer that refused it) and is only acknowledged.
pub(crate) struct Received {
    pub(crate) notification: Option<Notification>,
    pub(crate) unique_id: Option<String>,
    pub(crate) acker: Box<dyn NotificationAcker>,
}

impl Received {
    /// `true` when the message is a copy of one acknowledged recently (oslo's duplicate
    /// check on `_unique_id`).
    pub(crate) fn is_duplicate(&self, seen: &StdMutex<DedupCache>) -> bool {
        self.unique_id
            .as_deref()
            .is_some_and(|id| lock(seen).contains(id))
    }
}

fn lock(seen: &StdMutex<DedupCache>) -> std::sync::MutexGuard<'_, DedupCache> {
    // A poisoned cache still holds valid ids.
    seen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The driver's message as handlers see it.
pub(crate) fn convert(
    incoming: driver::IncomingNotification,
    serializer: Option<&dyn Serializer>,
) -> Received {
    let driver::IncomingNotification { message, acker } = incoming;
    let unique_id = message.unique_id.clone();
    let priority_text = message.priority.clone().unwrap_or_default();
    let Some(priority) = Priority::from_wire(&priority_text) else {
        tracing::warn!(
            priority = priority_text,
            "unknown notification priority; acknowledging"
        );
        return Received {
            notification: None,
            unique_id,
            acker,
        };
    };
    let mut context = message.context;
    context.insert("client_timeout", Value::Null);
    let (context, payload) = match serializer {
        None => (context, message.payload),
        Some(s) => match s.deserialize_context(context).and_then(|ctx| {
            s.deserialize_entity(&ctx, message.payload)
                .map(|p| (ctx, p))
        }) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::error!(error = %e, "the serializer refused a notification; acknowledging");
                return Received {
                    notification: None,
                    unique_id,
                    acker,
                };
            }
        },
    };
    let mut metadata = Map::new();
    metadata.insert("message_id".into(), message.message_id);
    metadata.insert("timestamp".into(), message.timestamp);
    let mut notification = Notification::new(priority, String::new(), payload);
    notification.context = context;
    notification.publisher_id = message.publisher_id;
    notification.event_type = message.event_type;
    notification.metadata = metadata;
    Received {
        notification: Some(notification),
        unique_id,
        acker,
    }
}

/// Acknowledges (remembering its id, so a redelivered copy is dropped) or requeues.
pub(crate) async fn settle(received: Received, requeue: bool, seen: &StdMutex<DedupCache>) {
    let outcome = if requeue {
        received.acker.requeue().await
    } else {
        let done = received.acker.ack().await;
        if done.is_ok()
            && let Some(id) = &received.unique_id
        {
            lock(seen).insert(id);
        }
        done
    };
    if let Err(e) = outcome {
        tracing::error!(error = %e, "failed to acknowledge or requeue a notification");
    }
}

/// One message of a priority group: what handlers see, its acknowledgement, and whether a
/// handler asked to requeue it.
struct Slot {
    /// Taken by the last endpoint that handles its priority (the others get copies).
    notification: Option<Notification>,
    received: Received,
    requeue: bool,
    span: Span,
}

/// Python's dispatch, for one-at-a-time and batch handlers alike.
///
/// Notifications are grouped by priority (in name order). For each group the endpoints run in
/// order, each on the messages its filter passes that no earlier handler requeued: a
/// one-at-a-time handler is called per message and a `Requeue` requeues that message; a batch
/// handler is called once with all of them and a `Requeue` requeues the whole group and stops
/// the rest. A message whose payload does not fit a handler's type is requeued alone. Requeues
/// happen only when `allow_requeue`; otherwise the message is acknowledged.
pub(crate) async fn dispatch(
    endpoints: &[NotificationEndpoint],
    batch: Vec<Received>,
    allow_requeue: bool,
    seen: &StdMutex<DedupCache>,
    telemetry: &Telemetry,
) {
    let mut groups: BTreeMap<&'static str, Vec<Slot>> = BTreeMap::new();
    for mut received in batch {
        match received.notification.take() {
            Some(notification) => {
                let span = telemetry.notification(
                    &NoteInfo {
                        event_type: notification.event_type.as_deref(),
                        publisher_id: notification.publisher_id.as_deref(),
                        priority: notification.priority.as_wire(),
                        message_id: notification.message_id().unwrap_or_default(),
                        topic: None,
                    },
                    &notification.context,
                );
                groups
                    .entry(notification.priority.as_str())
                    .or_default()
                    .push(Slot {
                        notification: Some(notification),
                        received,
                        requeue: false,
                        span,
                    });
            }
            None => settle(received, false, seen).await,
        }
    }
    for (priority, mut group) in groups {
        let requeue_all = run_group(endpoints, &mut group).await;
        for slot in group {
            let requeue = (slot.requeue || requeue_all) && allow_requeue;
            settle(slot.received, requeue, seen).await;
            crate::stats::notification(priority, requeue);
            if requeue {
                slot.span.event("requeued", None);
            }
            slot.span.end();
        }
    }
}

/// Runs the endpoints on one priority's messages, marking those to requeue; `true` when a
/// batch handler asked to requeue them all.
async fn run_group(endpoints: &[NotificationEndpoint], group: &mut [Slot]) -> bool {
    let Some(priority) = group
        .first()
        .and_then(|s| s.notification.as_ref())
        .map(|n| n.priority)
    else {
        return false;
    };
    // The last endpoint to handle this priority takes the notifications instead of copies.
    let last = endpoints
        .iter()
        .rposition(|ep| ep.handler(priority).is_some());
    for (k, ep) in endpoints.iter().enumerate() {
        let Some(handler) = ep.handler(priority) else {
            continue;
        };
        let hand_over = |slot: &mut Slot| {
            if Some(k) == last {
                slot.notification.take()
            } else {
                slot.notification.clone()
            }
        };
        let chosen: Vec<usize> = group
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.requeue && s.notification.as_ref().is_some_and(|n| ep.passes(n)))
            .map(|(i, _)| i)
            .collect();
        if chosen.is_empty() {
            continue;
        }
        match handler {
            Erased::Single(call) => {
                for &i in &chosen {
                    let slot = &mut group[i];
                    let log_span = slot.notification.as_ref().map(|n| {
                        tracing::debug_span!(
                            "notification",
                            event_type = n.event_type,
                            message_id = n.message_id(),
                            trace_id = slot.span.trace_id().as_deref(),
                        )
                    });
                    let Some(notification) = hand_over(slot) else {
                        continue;
                    };
                    let handled = slot
                        .span
                        .scope(call(notification))
                        .instrument(log_span.unwrap_or_else(tracing::Span::none))
                        .await;
                    if handled == NotificationResult::Requeue {
                        slot.requeue = true;
                    }
                }
            }
            Erased::Batch(call) => {
                let batch = chosen
                    .iter()
                    .filter_map(|&i| hand_over(&mut group[i]))
                    .collect();
                let outcome = call(batch).await;
                for u in outcome.unfit {
                    if let Some(&i) = chosen.get(u) {
                        group[i].requeue = true;
                    }
                }
                if outcome.result == NotificationResult::Requeue {
                    return true;
                }
            }
        }
    }
    false
}
