//! Single-pass decoders for well-formed messages.
//!
//! The general decoders in the parent module build a JSON map and pick fields out of it; they
//! are the reference, and they alone report errors. These parse the envelope with the inner
//! text borrowed when possible, and the inner message straight into its fields. Whenever one of
//! them cannot handle a body (any error, a missing field), it returns `None` and the general
//! decoder runs, so behaviour and error messages stay those of the reference.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::{CONTEXT_PREFIX, IncomingNotification, IncomingRequest, RemoteError, Reply, Request};
use crate::context::Context;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "oslo.version", borrow)]
    version: Cow<'a, str>,
    #[serde(rename = "oslo.message", borrow)]
    message: Cow<'a, str>,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The inner message's bytes: the envelope's `oslo.message`, or the body itself.
fn inner(body: &[u8]) -> Option<Cow<'_, [u8]>> {
    if !contains(body, b"\"oslo.message\"") {
        return Some(Cow::Borrowed(body));
    }
    let env: Envelope<'_> = serde_json::from_slice(body).ok()?;
    if !super::envelope_version_ok(&env.version) {
        return None;
    }
    Some(match env.message {
        Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
        Cow::Owned(s) => Cow::Owned(s.into_bytes()),
    })
}

#[derive(Default)]
struct RequestFields {
    method: Option<String>,
    args: Option<Map<String, Value>>,
    namespace: Option<String>,
    version: Option<String>,
    msg_id: Option<String>,
    reply_q: Option<String>,
    timeout: Value,
    unique_id: Option<String>,
    context: Map<String, Value>,
}

impl<'de> Deserialize<'de> for RequestFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RequestFields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RPC request object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RequestFields, A::Error> {
                let mut r = RequestFields::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match &*key {
                        "method" => r.method = map.next_value()?,
                        "args" => r.args = map.next_value()?,
                        "namespace" => r.namespace = map.next_value()?,
                        "version" => r.version = map.next_value()?,
                        "_msg_id" => r.msg_id = map.next_value()?,
                        "_reply_q" => r.reply_q = map.next_value()?,
                        "_timeout" => r.timeout = map.next_value()?,
                        "_unique_id" => r.unique_id = map.next_value()?,
                        k => match k.strip_prefix(CONTEXT_PREFIX) {
                            Some(ctx_key) => {
                                r.context.insert(ctx_key.to_owned(), map.next_value()?);
                            }
                            None => {
                                map.next_value::<IgnoredAny>()?;
                            }
                        },
                    }
                }
                Ok(r)
            }
        }
        d.deserialize_map(V)
    }
}

pub(super) fn request(body: &[u8]) -> Option<IncomingRequest> {
    let inner = inner(body)?;
    let f: RequestFields = serde_json::from_slice(&inner).ok()?;
    Some(IncomingRequest {
        request: Request {
            method: f.method?,
            args: f.args.unwrap_or_default(),
            namespace: f.namespace,
            version: f.version,
            context: Context::from_map(f.context),
        },
        msg_id: f.msg_id,
        reply_q: f.reply_q,
        client_timeout: f.timeout,
        unique_id: f.unique_id,
    })
}

#[derive(Deserialize)]
struct ReplyFields {
    #[serde(default)]
    result: Value,
    #[serde(default)]
    failure: Option<String>,
    #[serde(default)]
    ending: Option<bool>,
    #[serde(rename = "_msg_id", default)]
    msg_id: Option<String>,
    #[serde(rename = "_unique_id", default)]
    unique_id: Option<String>,
}

pub(super) fn reply(body: &[u8]) -> Option<Reply> {
    let inner = inner(body)?;
    let f: ReplyFields = serde_json::from_slice(&inner).ok()?;
    let failure = match f.failure {
        None => None,
        Some(s) if s.is_empty() => None,
        Some(s) => Some(RemoteError::from_failure_value(Value::String(s))),
    };
    Some(Reply {
        msg_id: f.msg_id,
        result: f.result,
        failure,
        ending: f.ending.unwrap_or(false),
        unique_id: f.unique_id,
    })
}

#[derive(Default)]
struct NotificationFields {
    message_id: Value,
    publisher_id: Value,
    event_type: Value,
    priority: Value,
    payload: Value,
    timestamp: Value,
    unique_id: Value,
    context: Map<String, Value>,
}

impl<'de> Deserialize<'de> for NotificationFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NotificationFields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a notification object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<NotificationFields, A::Error> {
                let mut n = NotificationFields::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    match &*key {
                        "message_id" => n.message_id = map.next_value()?,
                        "publisher_id" => n.publisher_id = map.next_value()?,
                        "event_type" => n.event_type = map.next_value()?,
                        "priority" => n.priority = map.next_value()?,
                        "payload" => n.payload = map.next_value()?,
                        "timestamp" => n.timestamp = map.next_value()?,
                        "_unique_id" => n.unique_id = map.next_value()?,
                        k => match k.strip_prefix(CONTEXT_PREFIX) {
                            Some(ctx_key) => {
                                n.context.insert(ctx_key.to_owned(), map.next_value()?);
                            }
                            None => {
                                map.next_value::<IgnoredAny>()?;
                            }
                        },
                    }
                }
                Ok(n)
            }
        }
        d.deserialize_map(V)
    }
}

fn string(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        _ => None,
    }
}

pub(super) fn notification(body: &[u8]) -> Option<IncomingNotification> {
    let inner = inner(body)?;
    let n: NotificationFields = serde_json::from_slice(&inner).ok()?;
    Some(IncomingNotification {
        message_id: n.message_id,
        publisher_id: string(n.publisher_id),
        event_type: string(n.event_type),
        priority: string(n.priority),
        payload: n.payload,
        timestamp: n.timestamp,
        context: Context::from_map(n.context),
        unique_id: string(n.unique_id),
    })
}
