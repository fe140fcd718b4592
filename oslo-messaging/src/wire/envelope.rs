//! The 2.0 envelope: `{"oslo.version": "2.0", "oslo.message": "<inner JSON>"}`.

use serde_json::{Map, Value};

use super::{WireError, json};

/// Wraps an inner JSON text (as written by [`json::to_string`]) in the 2.0 envelope.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire;
///
/// let body = wire::wrap_envelope(br#"{"a": 1}"#);
/// assert_eq!(body, br#"{"oslo.version": "2.0", "oslo.message": "{\"a\": 1}"}"#);
/// assert_eq!(wire::unwrap_envelope(&body).unwrap()["a"], 1);
/// ```
pub fn wrap_envelope(inner: &[u8]) -> Vec<u8> {
    if inner.iter().any(|&b| !(0x20..0x7f).contains(&b)) {
        let mut out = Vec::with_capacity(inner.len() + inner.len() / 8 + 48);
        out.extend_from_slice(b"{\"oslo.version\": \"2.0\", \"oslo.message\": ");
        json::write_str(&mut out, &String::from_utf8_lossy(inner));
        out.push(b'}');
        return out;
    }
    wrap_printable(inner)
}

/// How every envelope this crate writes starts (as Python's does): the inner message follows
/// as a JSON string.
pub(super) const ENVELOPE_HEAD: &[u8] = b"{\"oslo.version\": \"2.0\", \"oslo.message\": \"";

/// A byte buffer a thread reuses from message to message (see [`with_scratch`]).
pub(super) type Scratch = std::cell::RefCell<Vec<u8>>;

thread_local! {
    /// The inner text of the message this thread is encoding.
    static ENCODING: Scratch = const { std::cell::RefCell::new(Vec::new()) };
}

/// Scratch capacity kept between messages at most: a message up to about this size costs no
/// allocation; a larger one gets a buffer of its own, freed after it. (Threads that encode or
/// decode keep this much per buffer; the Python binding encodes on the caller's thread too.)
const SCRATCH_KEEP: usize = 256 << 10;

/// Runs `f` with this thread's buffer `scratch`, empty. It stays between messages, so a large
/// one is neither grown from nothing by doubling (copying it again at each step) nor freed:
/// glibc serves a 128 KiB buffer with a fresh mapping, faulted in page by page and returned at
/// each free, and trims the heap after large frees. Nothing nests, but if the buffer is in use
/// `f` gets a fresh one. (The encoder and the decoder keep a buffer each: sharing one made
/// `codec/call_encode_decode/65536` a third slower, the heap trimmed again.)
pub(super) fn with_scratch<R>(
    scratch: &'static std::thread::LocalKey<Scratch>,
    f: impl FnOnce(&mut Vec<u8>) -> R,
) -> R {
    scratch.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let out = f(&mut buf);
            if buf.capacity() > SCRATCH_KEEP {
                *buf = Vec::new();
            }
            out
        }
        Err(_) => f(&mut Vec::new()),
    })
}

/// Writes a message with `write`, in the 2.0 envelope (or, without `envelope`, as it is), into
/// this thread's scratch buffer, and returns it in a buffer of its own size. With the
/// envelope, `write` writes the inner message already escaped as the envelope's string
/// ([`json::JsonOut::nested`]): one pass over the text, not a second one to wrap it.
/// (Handing out the scratch itself, and giving the thread a new one, saves the copy but made
/// `codec/reply_encode_decode/65536` 60% slower: glibc trimmed the heap again.)
pub(crate) fn encode_with(envelope: bool, write: impl FnOnce(&mut json::JsonOut<'_>)) -> Vec<u8> {
    with_scratch(&ENCODING, |buf| {
        if envelope {
            buf.extend_from_slice(ENVELOPE_HEAD);
            write(&mut json::JsonOut::nested(buf));
            buf.extend_from_slice(b"\"}");
        } else {
            write(&mut json::JsonOut::plain(buf));
        }
        buf.as_slice().to_vec()
    })
}

/// [`wrap_envelope`] for inner text known to be printable ASCII (everything our encoders
/// write): only quotes and backslashes need escaping.
fn wrap_printable(inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(inner.len() + inner.len() / 8 + 48);
    out.extend_from_slice(ENVELOPE_HEAD);
    let mut start = 0;
    for i in memchr::memchr2_iter(b'"', b'\\', inner) {
        out.extend_from_slice(&inner[start..i]);
        out.push(b'\\');
        out.push(inner[i]);
        start = i + 1;
    }
    out.extend_from_slice(&inner[start..]);
    out.extend_from_slice(b"\"}");
    out
}

/// Parses a body and unwraps the envelope when there is one, as Python's `deserialize_msg`:
/// a JSON object without both envelope keys is returned as it is (v1 notifications).
///
/// # Errors
///
/// Non-JSON, a non-object, an envelope version other than 2.0, or an inner message that is not
/// a JSON object.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire;
///
/// // Enveloped or not, the inner object comes out.
/// assert_eq!(wire::unwrap_envelope(br#"{"a": 1}"#).unwrap()["a"], 1);
/// assert!(wire::unwrap_envelope(br#"{"oslo.version": "3.0", "oslo.message": "{}"}"#).is_err());
/// ```
pub fn unwrap_envelope(body: &[u8]) -> Result<Map<String, Value>, WireError> {
    let value = json::from_slice(body).map_err(|e| WireError::NotJson(e.to_string()))?;
    let Value::Object(mut outer) = value else {
        return Err(WireError::NotAnObject("message body"));
    };
    if !(outer.contains_key("oslo.version") && outer.contains_key("oslo.message")) {
        return Ok(outer);
    }
    match outer.get("oslo.version") {
        Some(Value::String(v)) if envelope_version_ok(v) => {}
        Some(other) => {
            let shown = match other {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            return Err(WireError::UnsupportedEnvelopeVersion(shown));
        }
        None => unreachable!("checked above"),
    }
    let Some(Value::String(inner)) = outer.remove("oslo.message") else {
        return Err(WireError::BadEnvelope);
    };
    match json::from_slice(inner.as_bytes()) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(WireError::NotAnObject("envelope's oslo.message")),
        Err(e) => Err(WireError::NotJson(e.to_string())),
    }
}

/// Python accepts an envelope version compatible with 2.0: major 2, minor and revision 0.
pub(crate) fn envelope_version_ok(v: &str) -> bool {
    crate::version::Version::parse_lenient(v)
        .is_some_and(|got| crate::version::Version::new(2, 0).is_compatible_with(Some(&got)))
}
