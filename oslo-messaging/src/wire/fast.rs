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

use super::envelope::ENVELOPE_HEAD;
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
    memchr::memmem::find(haystack, needle).is_some()
}

/// Python's envelope unwrapped into a new buffer (the tests' form of
/// [`python_envelope_into`]).
#[cfg(test)]
fn python_envelope(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    python_envelope_into(body, &mut out)?;
    Some(out)
}

/// Unescapes the inner message of an envelope written as Python writes it: [`ENVELOPE_HEAD`],
/// one JSON string, then `"}`. The inner message is itself JSON, so its string only holds the
/// escapes `\"` and `\\` in practice; anything else (`\u`, a different layout) returns `None`
/// and the general parser takes over. One vectorised scan instead of serde's byte loop: this
/// is most of the cost of decoding large messages. Only UTF-8 without raw control characters
/// passes. The result goes into `out` (cleared first).
fn python_envelope_into(body: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let rest = body.strip_prefix(ENVELOPE_HEAD)?;
    out.clear();
    out.reserve(rest.len());
    let mut start = 0;
    loop {
        let i = start + memchr::memchr2(b'"', b'\\', &rest[start..])?;
        out.extend_from_slice(&rest[start..i]);
        if rest[i] == b'"' {
            // Raw control characters are not allowed in a JSON string, and the reference
            // decoder refuses text that is not UTF-8 (which unescaping cannot change).
            if !is_utf8_without_controls(&rest[..i]) {
                return None;
            }
            // The string's end: only `}` (and whitespace) may follow.
            let tail = &rest[i + 1..];
            let close = tail.iter().position(|b| !b.is_ascii_whitespace())?;
            if tail[close] != b'}' || !tail[close + 1..].iter().all(u8::is_ascii_whitespace) {
                return None;
            }
            return Some(());
        }
        match rest.get(i + 1)? {
            c @ (b'"' | b'\\' | b'/') => out.push(*c),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            _ => return None,
        }
        start = i + 2;
    }
}

/// Whether `bytes` holds an ASCII control character; branch-free per 64-byte block so the
/// compiler can vectorise it.
fn has_control(bytes: &[u8]) -> bool {
    let mut blocks = bytes.chunks_exact(64);
    for block in &mut blocks {
        if block.iter().fold(0u8, |acc, b| acc | u8::from(*b < 0x20)) != 0 {
            return true;
        }
    }
    blocks.remainder().iter().any(|b| *b < 0x20)
}

/// Whether `bytes` are UTF-8 without an ASCII control character: for ASCII text (all of
/// Python's, which escapes the rest), one pass checks both.
fn is_utf8_without_controls(bytes: &[u8]) -> bool {
    let mut blocks = bytes.chunks_exact(64);
    for (n, block) in (&mut blocks).enumerate() {
        let (control, high) = block.iter().fold((0u8, 0u8), |(c, h), b| {
            (c | u8::from(*b < 0x20), h | (b & 0x80))
        });
        if control != 0 {
            return false;
        }
        if high != 0 {
            // Not ASCII from here on: check the rest the plain way (the blocks before ended
            // with ASCII, so no character is cut).
            let tail = &bytes[n * 64..];
            return !has_control(tail) && std::str::from_utf8(tail).is_ok();
        }
    }
    let tail = blocks.remainder();
    !has_control(tail) && std::str::from_utf8(tail).is_ok()
}

/// Whether `bytes` hold a JSON object: serde would also fill a struct from an array, which the
/// reference decoder (like Python) refuses.
fn is_object(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

thread_local! {
    /// The unescaped inner message this thread is parsing.
    static UNESCAPED: super::envelope::Scratch = const { std::cell::RefCell::new(Vec::new()) };
}

/// Parses the inner message (the envelope's `oslo.message`, or the body itself) into `T`. Only
/// valid UTF-8 holding a JSON object passes: serde skips the strings of fields it ignores
/// without checking them, and the reference decoder (like Python) refuses a body that is not
/// UTF-8.
fn parse_inner<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
    fn parse<T: serde::de::DeserializeOwned>(inner: &[u8]) -> Option<T> {
        if !is_object(inner) {
            return None;
        }
        serde_json::from_slice(inner).ok()
    }
    // `Some` when the body has Python's layout, holding what the fast path made of it.
    fn enveloped<T: serde::de::DeserializeOwned>(
        body: &[u8],
        buf: &mut Vec<u8>,
    ) -> Option<Option<T>> {
        python_envelope_into(body, buf)?;
        Some(parse(buf))
    }
    // Unescaped into the thread's scratch buffer: a large message costs no allocation.
    if body.starts_with(ENVELOPE_HEAD)
        && let Some(parsed) = super::envelope::with_scratch(&UNESCAPED, |buf| enveloped(body, buf))
    {
        return parsed;
    }
    parse(&other_layout(body)?)
}

/// The inner message of a body not in Python's exact envelope layout.
fn other_layout(body: &[u8]) -> Option<Cow<'_, [u8]>> {
    // serde skips unknown envelope fields unchecked too, and would read an array as one.
    std::str::from_utf8(body).ok()?;
    if !is_object(body) {
        return None;
    }
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
    let f: RequestFields = parse_inner(body)?;
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
    let f: ReplyFields = parse_inner(body)?;
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
    let n: NotificationFields = parse_inner(body)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_envelopes_unescape_in_one_scan() {
        let body = br#"{"oslo.version": "2.0", "oslo.message": "{\"a\": \"x\\\\y\", \"b\": 1}"}"#;
        assert_eq!(
            python_envelope(body).as_deref(),
            Some(&br#"{"a": "x\\y", "b": 1}"#[..])
        );
        // Trailing whitespace is fine; anything else after the string is not.
        let mut spaced = body.to_vec();
        spaced.extend_from_slice(b" \n");
        assert!(python_envelope(&spaced).is_some());
        for bad in [
            &br#"{"oslo.version": "2.0", "oslo.message": "{}", "x": 1}"#[..],
            br#"{"oslo.version": "2.0", "oslo.message": "{}"} }"#,
            br#"{"oslo.version": "2.0", "oslo.message": "{\u0041}"}"#,
            br#"{"oslo.version": "2.0", "oslo.message": "{}"#,
            b"{\"oslo.version\": \"2.0\", \"oslo.message\": \"{\n}\"}",
            br#"{"oslo.message": "{}", "oslo.version": "2.0"}"#,
        ] {
            assert_eq!(
                python_envelope(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// The one-pass check agrees with checking UTF-8 and control characters apart, wherever
    /// the odd byte is (before, inside or after a 64-byte block, after non-ASCII text).
    #[test]
    fn the_text_check_agrees_with_the_two_checks() {
        let reference = |b: &[u8]| std::str::from_utf8(b).is_ok() && !b.iter().any(|&c| c < 0x20);
        for len in [0, 1, 63, 64, 65, 130] {
            for pos in 0..len {
                for odd in [
                    &[0x00u8][..],
                    &[0x1f],
                    &[0x7f],
                    &[0xff],
                    &[0xc3, 0xa9],
                    &[0xc3],
                ] {
                    let mut text = vec![b'a'; len];
                    text.splice(pos..pos + 1, odd.iter().copied());
                    assert_eq!(
                        is_utf8_without_controls(&text),
                        reference(&text),
                        "{odd:x?} at {pos} of {len}"
                    );
                    // After a character that is not ASCII, further on.
                    let mut text = "é".repeat(len).into_bytes();
                    text.splice(pos..pos + 1, odd.iter().copied());
                    assert_eq!(
                        is_utf8_without_controls(&text),
                        reference(&text),
                        "{odd:x?} at {pos} of {len} after non-ASCII"
                    );
                }
            }
        }
    }

    #[test]
    fn other_layouts_still_decode_through_serde() {
        let reordered =
            br#"{"oslo.message": "{\"method\": \"m\", \"args\": {}}", "oslo.version": "2.0"}"#;
        let got = request(reordered).expect("decoded");
        assert_eq!(got.request.method, "m");
        let unicode =
            br#"{"oslo.version": "2.0", "oslo.message": "{\"method\": \"\u00e9\", \"args\": {}}"}"#;
        assert_eq!(request(unicode).expect("decoded").request.method, "\u{e9}");
    }
}
