//! Golden tests against messages captured from Python oslo.messaging 18.3.1 on a live broker
//! (`tests/fixtures/capture_python.py`): every body decodes, and re-encoding what was decoded
//! gives back the same bytes.

use std::time::Duration;

use oslo_messaging::wire::{self, CallInfo, Notification};
use serde_json::Value;

struct Captured {
    name: String,
    exchange: String,
    routing_key: String,
    properties: Value,
    body: String,
}

fn fixtures() -> Vec<Captured> {
    let text = include_str!("fixtures/python_18.3.1.json");
    let doc: Value = serde_json::from_str(text).expect("fixture JSON");
    assert_eq!(doc["oslo.messaging"], "18.3.1");
    doc["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| Captured {
            name: m["name"].as_str().unwrap().to_owned(),
            exchange: m["exchange"].as_str().unwrap().to_owned(),
            routing_key: m["routing_key"].as_str().unwrap().to_owned(),
            properties: m["properties"].clone(),
            body: m["body"].as_str().unwrap().to_owned(),
        })
        .collect()
}

fn reencode_request(body: &str) -> Vec<u8> {
    let r = wire::decode_request(body.as_bytes()).expect("request decodes");
    let unique_id = r.unique_id.clone().expect("_unique_id");
    let timeout = match &r.client_timeout {
        Value::Null => None,
        v => Some(Duration::from_secs_f64(
            v.as_f64().expect("numeric _timeout"),
        )),
    };
    match (&r.msg_id, &r.reply_q) {
        (Some(msg_id), Some(reply_q)) => {
            let info = CallInfo::new(msg_id, reply_q, timeout);
            wire::encode_request(&r.request, Some(&info), &unique_id)
        }
        _ => wire::encode_request(&r.request, None, &unique_id),
    }
}

fn reencode_reply(body: &str) -> Vec<u8> {
    let r = wire::decode_reply(body.as_bytes()).expect("reply decodes");
    let msg_id = r.msg_id.clone().expect("_msg_id");
    let unique_id = r.unique_id.clone().expect("_unique_id");
    if !r.ending && r.result.is_null() && r.failure.is_none() {
        return wire::encode_heartbeat(&msg_id, &unique_id);
    }
    assert!(r.ending, "single-message replies end");
    let outcome = match r.failure {
        Some(f) => Err(f),
        None => Ok(r.result),
    };
    wire::encode_reply(&msg_id, &unique_id, &outcome)
}

fn reencode_notification(body: &str) -> Vec<u8> {
    let n = wire::decode_notification(body.as_bytes()).expect("notification decodes");
    let envelope = body.starts_with("{\"oslo.version\"");
    let mut message = Notification::new(n.event_type.unwrap(), n.priority.unwrap(), n.payload);
    message.message_id = n.message_id.as_str().unwrap().to_owned();
    message.publisher_id = n.publisher_id;
    message.timestamp = n.timestamp.as_str().unwrap().to_owned();
    message.context = n.context;
    wire::encode_notification(&message, &n.unique_id.unwrap(), envelope)
}

#[test]
fn every_python_message_round_trips_byte_for_byte() {
    let all = fixtures();
    assert_eq!(all.len(), 20);
    for m in &all {
        let again = if m.name.starts_with("cast_") || m.name.starts_with("call_") {
            reencode_request(&m.body)
        } else if m.name.starts_with("reply_") {
            reencode_reply(&m.body)
        } else {
            reencode_notification(&m.body)
        };
        assert_eq!(
            String::from_utf8(again).unwrap(),
            m.body,
            "{}: our encoding differs from Python's",
            m.name
        );
    }
}

#[test]
fn python_request_fields_decode_as_expected() {
    let all = fixtures();
    let get = |name: &str| all.iter().find(|m| m.name == name).unwrap();

    let call = wire::decode_request(get("call_monitored").body.as_bytes()).unwrap();
    assert_eq!(call.client_timeout, Value::from(2));
    assert!(call.reply_q.unwrap().starts_with("reply_"));
    assert_eq!(get("call_monitored").properties["expiration"], "1000");
    assert!(get("cast_to_server").properties.get("expiration").is_none());
    assert_eq!(get("cast_to_server").routing_key, "golden_topic.host1");
    assert_eq!(get("cast_fanout").exchange, "golden_topic_fanout");
    assert_eq!(get("cast_fanout").routing_key, "");

    let all_types = wire::decode_request(get("cast_all_types").body.as_bytes()).unwrap();
    let v = &all_types.request.args["value"];
    assert_eq!(v["u"], "café ☃ 😀");
    assert_eq!(v["big"], serde_json::json!(9_223_372_036_854_775_808_u64));
    assert_eq!(v["esc"], "quote\" back\\ nl\n tab\t del\u{7f}");

    let ns = wire::decode_request(get("cast_namespace_empty_context").body.as_bytes()).unwrap();
    assert_eq!(ns.request.namespace.as_deref(), Some("ns1"));
    assert!(ns.request.context.is_empty());

    let rc = wire::decode_request(get("cast_request_context").body.as_bytes()).unwrap();
    assert_eq!(
        rc.request.context.get_str("auth_token"),
        Some("tok"),
        "RPC sends the whole context"
    );
    assert_eq!(
        rc.request.context.get("roles"),
        Some(&serde_json::json!(["admin"]))
    );
}

#[test]
fn python_failures_decode_to_remote_errors() {
    let all = fixtures();
    let failure = |name: &str| {
        let m = all.iter().find(|m| m.name == name).unwrap();
        wire::decode_reply(m.body.as_bytes())
            .unwrap()
            .failure
            .unwrap()
    };
    let v = failure("reply_failure_valueerror");
    assert_eq!(
        (v.class(), v.module(), v.message()),
        ("ValueError", "builtins", "('bad value', 42)")
    );
    assert_eq!(v.args(), &[Value::from("bad value"), Value::from(42)]);
    assert!(v.traceback().last().unwrap().starts_with("ValueError"));

    let n = failure("reply_failure_nosuchmethod");
    assert_eq!(n.class(), "NoSuchMethod");
    assert_eq!(n.module(), "oslo_messaging.rpc.dispatcher");
    assert_eq!(n.message(), "Endpoint does not support RPC method nosuch");

    let u = failure("reply_failure_unsupportedversion");
    assert_eq!(
        u.message(),
        "Endpoint does not support RPC version 2.0. Attempted method: echo"
    );

    let t = failure("reply_failure_typeerror");
    assert_eq!((t.class(), t.module()), ("TypeError", "builtins"));
}

#[test]
fn python_notifications_decode() {
    let all = fixtures();
    let get = |name: &str| {
        let m = all.iter().find(|m| m.name == name).unwrap();
        (m, wire::decode_notification(m.body.as_bytes()).unwrap())
    };
    let (m, n) = get("notify_messagingv2_info");
    assert_eq!(m.routing_key, "golden_notifications.info");
    assert_eq!(n.priority.as_deref(), Some("INFO"));
    assert_eq!(
        n.context.get("auth_token"),
        Some(&Value::Null),
        "Python redacts the token"
    );
    let (_, n) = get("notify_messaging_error_dict_context");
    assert!(n.context.is_empty(), "Python drops plain-dict contexts");
    let (_, n) = get("notify_messagingv2_no_micros_no_publisher");
    assert_eq!(n.timestamp, "2026-11-22 01:56:03");
    assert_eq!(n.publisher_id, None);
    for m in &all {
        assert_eq!(
            m.properties["content_type"], "application/json",
            "{}",
            m.name
        );
        assert_eq!(m.properties["content_encoding"], "utf-8", "{}", m.name);
        assert_eq!(m.properties["delivery_mode"], 2, "{}", m.name);
        assert_eq!(m.properties["priority"], 0, "{}", m.name);
    }
}
