//! Replies and call-monitor heartbeats.

use serde_json::Value;

use super::*;
use crate::error::RemoteError;

/// Encodes the final reply to a call: a result or a failure, with `"ending": true`.
///
/// # Examples
///
/// ```
/// use oslo_messaging::{RemoteError, wire};
///
/// let ok = wire::decode_reply(&wire::encode_reply("m", "u", &Ok(serde_json::json!(42))))?;
/// assert_eq!((ok.result, ok.ending), (serde_json::json!(42), true));
/// let failure = RemoteError::new("builtins", "ValueError", "bad");
/// let err = wire::decode_reply(&wire::encode_reply("m", "u2", &Err(failure)))?;
/// assert_eq!(err.failure.unwrap().class(), "ValueError");
/// # Ok::<(), wire::WireError>(())
/// ```
pub fn encode_reply(
    msg_id: &str,
    unique_id: &str,
    outcome: &Result<Value, RemoteError>,
) -> Vec<u8> {
    super::envelope::encode_with(true, |out| {
        out.raw(b"{");
        let mut first = true;
        write_key(out, &mut first, "result");
        match outcome {
            Ok(v) => out.value(v),
            Err(_) => out.raw(b"null"),
        }
        write_key(out, &mut first, "failure");
        match outcome {
            Ok(_) => out.raw(b"null"),
            Err(failure) => out.str(&failure.to_json()),
        }
        write_key(out, &mut first, "ending");
        out.raw(b"true");
        write_reply_ids(out, &mut first, msg_id, unique_id);
        out.raw(b"}");
    })
}

/// Encodes a call-monitor heartbeat: `{"result": null, "failure": null, "ending": false, ...}`.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire;
///
/// let hb = wire::decode_reply(&wire::encode_heartbeat("m", "u"))?;
/// assert!(!hb.ending && hb.result.is_null() && hb.failure.is_none());
/// # Ok::<(), wire::WireError>(())
/// ```
pub fn encode_heartbeat(msg_id: &str, unique_id: &str) -> Vec<u8> {
    super::envelope::encode_with(true, |out| {
        out.raw(b"{");
        let mut first = true;
        write_key(out, &mut first, "result");
        out.raw(b"null");
        write_key(out, &mut first, "failure");
        out.raw(b"null");
        write_key(out, &mut first, "ending");
        out.raw(b"false");
        write_reply_ids(out, &mut first, msg_id, unique_id);
        out.raw(b"}");
    })
}

fn write_reply_ids(out: &mut json::JsonOut<'_>, first: &mut bool, msg_id: &str, unique_id: &str) {
    write_key(out, first, "_msg_id");
    out.str(msg_id);
    write_key(out, first, "_unique_id");
    out.str(unique_id);
}

/// One reply message as the caller receives it.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire;
///
/// let reply = wire::decode_reply(br#"{"result": "ok", "failure": null, "ending": true, "_msg_id": "m"}"#)?;
/// assert_eq!((reply.msg_id.as_deref(), reply.result.as_str()), (Some("m"), Some("ok")));
/// # Ok::<(), wire::WireError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Reply {
    /// `_msg_id` of the request it answers.
    pub msg_id: Option<String>,
    /// The result (`null` for heartbeats and failures).
    pub result: Value,
    /// The failure, when the remote method raised.
    pub failure: Option<RemoteError>,
    /// `false` for call-monitor heartbeats and the payload half of the legacy two-message reply.
    pub ending: bool,
    /// `_unique_id`.
    pub unique_id: Option<String>,
}

/// Decodes a reply body.
///
/// # Errors
///
/// Any [`WireError`]; a `failure` that is not valid failure JSON is reported as a failure
/// carrying the raw text, not as an error.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire;
///
/// // Python's legacy two-message reply: the result first, then `ending`.
/// let first = wire::decode_reply(br#"{"result": 1, "ending": false, "_msg_id": "m"}"#)?;
/// assert!(!first.ending);
/// # Ok::<(), wire::WireError>(())
/// ```
pub fn decode_reply(body: &[u8]) -> Result<Reply, WireError> {
    fast::reply(body).map_or_else(|| decode_reply_general(body), Ok)
}

pub(crate) fn decode_reply_general(body: &[u8]) -> Result<Reply, WireError> {
    let mut map = unwrap_envelope(body)?;
    let msg_id = take_opt_string(&mut map, "_msg_id")?;
    let unique_id = take_opt_string(&mut map, "_unique_id")?;
    let result = map.shift_remove("result").unwrap_or(Value::Null);
    let failure = match map.shift_remove("failure") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(v) => Some(RemoteError::from_failure_value(v)),
    };
    let ending = match map.shift_remove("ending") {
        Some(Value::Bool(b)) => b,
        _ => false,
    };
    Ok(Reply {
        msg_id,
        result,
        failure,
        ending,
        unique_id,
    })
}
