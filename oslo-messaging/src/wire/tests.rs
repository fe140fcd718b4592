//! Golden tests on the bytes captured from Python oslo.messaging in the reference.

use super::*;
use serde_json::json;

fn ctx() -> Context {
    Context::new()
        .with("user", "alice")
        .with("project_id", "p1")
        .with("request_id", "req-123")
}

/// The call captured verbatim in the reference (`Target(topic='demo', version='1.2')`).
const CALL: &str = r#"{"oslo.version": "2.0", "oslo.message": "{\"method\": \"echo\", \"args\": {\"value\": {\"a\": [1, 2, \"x\"], \"u\": \"caf\\u00e9\"}}, \"version\": \"1.2\", \"_msg_id\": \"65db6de7fdc54f00a5c3552dacfe3bb6\", \"_reply_q\": \"reply_d4902a819fab4dbba0c08fd084044f0a\", \"_timeout\": null, \"_unique_id\": \"7870927a196042f8aeb8fac721fbcf77\", \"_context_user\": \"alice\", \"_context_project_id\": \"p1\", \"_context_request_id\": \"req-123\"}"}"#;

const REPLY: &str = r#"{"oslo.version": "2.0", "oslo.message": "{\"result\": {\"a\": [1, 2, \"x\"], \"u\": \"caf\\u00e9\"}, \"failure\": null, \"ending\": true, \"_msg_id\": \"65db6de7fdc54f00a5c3552dacfe3bb6\", \"_unique_id\": \"0bd29a075dd84167bb87d7f0cd7a000f\"}"}"#;

const NOTIFY_V2: &str = r#"{"oslo.version": "2.0", "oslo.message": "{\"message_id\": \"9877ae02-d933-4e50-9273-8773cfc2b753\", \"publisher_id\": \"compute.host1\", \"event_type\": \"compute.instance.create.end\", \"priority\": \"INFO\", \"payload\": {\"id\": 1}, \"timestamp\": \"2026-11-22 01:56:03.142045\", \"_unique_id\": \"03de25f6d25143b2b9fb22d74a9fd673\"}"}"#;

const NOTIFY_V1: &str = r#"{"message_id": "a4ce283e-7208-4af9-b20c-94470740a02a", "publisher_id": "compute.host1", "event_type": "compute.instance.error", "priority": "ERROR", "payload": {"id": 3}, "timestamp": "2026-11-22 01:56:03.770642", "_unique_id": "d2c3d2a6dc3d4565804440965f4797c3"}"#;

fn echo_request() -> Request {
    Request {
        method: "echo".into(),
        args: json!({"value": {"a": [1, 2, "x"], "u": "café"}})
            .as_object()
            .unwrap()
            .clone(),
        namespace: None,
        version: Some("1.2".into()),
        context: ctx(),
    }
}

#[test]
fn call_request_is_byte_identical() {
    let info = CallInfo {
        msg_id: "65db6de7fdc54f00a5c3552dacfe3bb6",
        reply_q: "reply_d4902a819fab4dbba0c08fd084044f0a",
        call_monitor_timeout: None,
    };
    let body = encode_request(
        &echo_request(),
        Some(&info),
        "7870927a196042f8aeb8fac721fbcf77",
    );
    assert_eq!(std::str::from_utf8(&body).unwrap(), CALL);
}

#[test]
fn call_request_decodes() {
    let r = decode_request(CALL.as_bytes()).unwrap();
    assert_eq!(r.request, echo_request());
    assert_eq!(
        r.msg_id.as_deref(),
        Some("65db6de7fdc54f00a5c3552dacfe3bb6")
    );
    assert_eq!(
        r.reply_q.as_deref(),
        Some("reply_d4902a819fab4dbba0c08fd084044f0a")
    );
    assert_eq!(r.client_timeout, Value::Null);
    assert_eq!(
        r.unique_id.as_deref(),
        Some("7870927a196042f8aeb8fac721fbcf77")
    );
    assert!(r.wants_reply());
}

#[test]
fn cast_has_no_reply_keys() {
    let body = encode_request(&echo_request(), None, "673ba35aff4d4b089bac7d3175e751bc");
    let inner = unwrap_envelope(&body).unwrap();
    let keys: Vec<&str> = inner.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "method",
            "args",
            "version",
            "_unique_id",
            "_context_user",
            "_context_project_id",
            "_context_request_id"
        ]
    );
}

#[test]
fn call_monitor_timeout_is_an_integer_when_whole() {
    let info = CallInfo {
        msg_id: "m",
        reply_q: "q",
        call_monitor_timeout: Some(Duration::from_secs(2)),
    };
    let body = encode_request(&echo_request(), Some(&info), "u");
    assert!(
        std::str::from_utf8(&body)
            .unwrap()
            .contains(r#"\"_timeout\": 2, "#)
    );
    let info = CallInfo {
        call_monitor_timeout: Some(Duration::from_millis(2500)),
        ..info
    };
    let body = encode_request(&echo_request(), Some(&info), "u");
    assert!(
        std::str::from_utf8(&body)
            .unwrap()
            .contains(r#"\"_timeout\": 2.5, "#)
    );
}

#[test]
fn reply_is_byte_identical() {
    let result = json!({"a": [1, 2, "x"], "u": "café"});
    let body = encode_reply(
        "65db6de7fdc54f00a5c3552dacfe3bb6",
        "0bd29a075dd84167bb87d7f0cd7a000f",
        &Ok(result.clone()),
    );
    assert_eq!(std::str::from_utf8(&body).unwrap(), REPLY);
    let r = decode_reply(REPLY.as_bytes()).unwrap();
    assert_eq!(r.result, result);
    assert!(r.ending && r.failure.is_none());
}

#[test]
fn heartbeat_matches_capture() {
    let body = encode_heartbeat(
        "a36670b991b34854b33884fe8ff6f2e1",
        "29ff1e47e119416d8a932f85771316d3",
    );
    let inner = r#"{"result": null, "failure": null, "ending": false, "_msg_id": "a36670b991b34854b33884fe8ff6f2e1", "_unique_id": "29ff1e47e119416d8a932f85771316d3"}"#;
    assert_eq!(body, wrap_envelope(inner.as_bytes()));
    let r = decode_reply(&body).unwrap();
    assert!(!r.ending && r.result.is_null() && r.failure.is_none());
}

#[test]
fn failure_reply_carries_failure_json_as_a_string() {
    let failure = RemoteError::new("builtins", "ValueError", "('bad value', 42)")
        .with_args(vec![json!("bad value"), json!(42)]);
    let body = encode_reply("m", "u", &Err(failure.clone()));
    let inner = unwrap_envelope(&body).unwrap();
    assert_eq!(inner["result"], Value::Null);
    assert_eq!(
        inner["failure"],
        json!(
            r#"{"class": "ValueError", "module": "builtins", "message": "('bad value', 42)", "tb": [], "args": ["bad value", 42], "kwargs": {}}"#
        )
    );
    assert_eq!(decode_reply(&body).unwrap().failure, Some(failure));
}

fn v2_notification() -> Notification {
    Notification {
        message_id: "9877ae02-d933-4e50-9273-8773cfc2b753".into(),
        publisher_id: Some("compute.host1".into()),
        event_type: "compute.instance.create.end".into(),
        priority: "INFO".into(),
        payload: json!({"id": 1}),
        timestamp: "2026-11-22 01:56:03.142045".into(),
        context: Context::new(),
    }
}

#[test]
fn notifications_are_byte_identical() {
    let body = encode_notification(&v2_notification(), "03de25f6d25143b2b9fb22d74a9fd673", true);
    assert_eq!(std::str::from_utf8(&body).unwrap(), NOTIFY_V2);

    let v1 = Notification {
        message_id: "a4ce283e-7208-4af9-b20c-94470740a02a".into(),
        event_type: "compute.instance.error".into(),
        priority: "ERROR".into(),
        payload: json!({"id": 3}),
        timestamp: "2026-11-22 01:56:03.770642".into(),
        ..v2_notification()
    };
    let body = encode_notification(&v1, "d2c3d2a6dc3d4565804440965f4797c3", false);
    assert_eq!(std::str::from_utf8(&body).unwrap(), NOTIFY_V1);
}

#[test]
fn notifications_decode_with_or_without_envelope() {
    for body in [NOTIFY_V1, NOTIFY_V2] {
        let n = decode_notification(body.as_bytes()).unwrap();
        assert_eq!(n.publisher_id.as_deref(), Some("compute.host1"));
        assert!(n.unique_id.is_some());
        assert!(n.context.is_empty());
    }
}

#[test]
fn accepts_any_valid_json_form() {
    // Compact separators, raw UTF-8, a different key order, an object instead of a string for
    // the envelope's inner message is not valid (must be a string), but the rest is.
    let compact = "{\"oslo.message\":\"{\\\"_unique_id\\\":\\\"u\\\",\\\"args\\\":{\\\"v\\\":\\\"café\\\"},\\\"method\\\":\\\"m\\\"}\",\"oslo.version\":\"2.0\"}";
    let r = decode_request(compact.as_bytes()).unwrap();
    assert_eq!(r.request.method, "m");
    assert_eq!(r.request.args["v"], json!("café"));
    // Pre-envelope messages (a bare dict) are accepted, as Python does.
    let bare = br#"{"method": "m", "args": {}}"#;
    assert_eq!(decode_request(bare).unwrap().request.method, "m");
}

#[test]
fn bad_input_is_a_typed_error() {
    let cases: &[(&[u8], WireError)] = &[
        (b"not json", WireError::NotJson(String::new())),
        (b"[1, 2]", WireError::NotAnObject("message body")),
        (
            br#"{"oslo.version": "3.0", "oslo.message": "{}"}"#,
            WireError::UnsupportedEnvelopeVersion("3.0".into()),
        ),
        (
            br#"{"oslo.version": "2.1", "oslo.message": "{}"}"#,
            WireError::UnsupportedEnvelopeVersion("2.1".into()),
        ),
        (
            br#"{"oslo.version": "1.0", "oslo.message": "{}"}"#,
            WireError::UnsupportedEnvelopeVersion("1.0".into()),
        ),
        (
            br#"{"oslo.version": 2, "oslo.message": "{}"}"#,
            WireError::UnsupportedEnvelopeVersion("2".into()),
        ),
        (
            br#"{"oslo.version": "2.0", "oslo.message": {"method": "m"}}"#,
            WireError::BadEnvelope,
        ),
        (
            br#"{"oslo.version": "2.0", "oslo.message": "[]"}"#,
            WireError::NotAnObject("envelope's oslo.message"),
        ),
        (
            br#"{"oslo.version": "2.0", "oslo.message": "{\"args\": {}}"}"#,
            WireError::MissingField("method"),
        ),
        (
            br#"{"method": 5}"#,
            WireError::BadField {
                field: "method",
                expected: "a string",
            },
        ),
        (
            br#"{"method": "m", "args": [1]}"#,
            WireError::BadField {
                field: "args",
                expected: "an object",
            },
        ),
        (
            br#"{"method": "m", "_msg_id": 7}"#,
            WireError::BadField {
                field: "_msg_id",
                expected: "a string",
            },
        ),
    ];
    for (body, want) in cases {
        let got = decode_request(body).unwrap_err();
        match (want, &got) {
            (WireError::NotJson(_), WireError::NotJson(_)) => {}
            _ => assert_eq!(&got, want, "{}", String::from_utf8_lossy(body)),
        }
        // Every error converts to a Protocol error with readable text.
        let e: crate::Error = got.into();
        assert_eq!(e.kind(), crate::ErrorKind::Protocol);
    }
    assert!(decode_reply(b"\xff\xfe").is_err());
    assert!(decode_notification(b"").is_err());
}

#[test]
fn revision_zero_envelope_is_accepted_like_python() {
    let body = br#"{"oslo.version": "2.0.0", "oslo.message": "{\"method\": \"m\"}"}"#;
    assert!(decode_request(body).is_ok());
}

#[test]
fn python_timestamps() {
    assert_eq!(
        format_utc_timestamp(Duration::from_micros(1_795_312_563_142_045)),
        "2026-11-22 01:56:03.142045"
    );
    assert_eq!(
        format_utc_timestamp(Duration::from_secs(1_795_312_563)),
        "2026-11-22 01:56:03"
    );
    assert_eq!(
        format_utc_timestamp(Duration::from_secs(951_782_400)),
        "2000-02-29 00:00:00"
    );
    assert_eq!(format_utc_timestamp(Duration::ZERO), "1970-01-01 00:00:00");
    let now = utc_timestamp_now();
    assert_eq!(now.as_bytes()[10], b' ');
}

#[test]
fn ids_look_like_python_uuid_hex() {
    let id = new_id();
    assert_eq!(id.len(), 32);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
}

/// The fast decoders must agree with the reference decoders wherever they answer.
#[test]
fn fast_paths_agree_with_the_reference() {
    let fixtures: Value =
        serde_json::from_str(include_str!("../../tests/fixtures/python_18.3.1.json")).unwrap();
    let mut bodies: Vec<String> = fixtures["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect();
    bodies.extend(
        [
            CALL,
            REPLY,
            NOTIFY_V1,
            NOTIFY_V2,
            r#"{"method": "m", "args": null, "_context_a": 1, "_context_a": 2, "x": [1]}"#,
            r#"{"method": "m", "namespace": null, "version": null, "_timeout": "4"}"#,
            r#"{"oslo.message": "{\"method\": \"m\"}", "oslo.version": "2.0", "extra": 1}"#,
            r#"{"payload": {"oslo.message": "not an envelope"}, "method": "m"}"#,
            r#"{"result": 1, "failure": null, "ending": true, "_msg_id": "x"}"#,
            r#"{"result": null, "failure": "", "ending": 1}"#,
            r#"{"priority": null, "publisher_id": 5, "_context_user": "u"}"#,
        ]
        .map(str::to_owned),
    );
    for body in &bodies {
        let b = body.as_bytes();
        if let Some(fast) = fast::request(b) {
            assert_eq!(Ok(fast), decode_request_general(b), "{body}");
        }
        if let Some(fast) = fast::reply(b) {
            assert_eq!(Ok(fast), decode_reply_general(b), "{body}");
        }
        if let Some(fast) = fast::notification(b) {
            assert_eq!(Ok(fast), decode_notification_general(b), "{body}");
        }
    }
    // The fast paths do take the common shapes.
    assert!(fast::request(CALL.as_bytes()).is_some());
    assert!(fast::reply(REPLY.as_bytes()).is_some());
    assert!(fast::notification(NOTIFY_V1.as_bytes()).is_some());
    assert!(fast::notification(NOTIFY_V2.as_bytes()).is_some());
}
