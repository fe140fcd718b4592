//! RPC requests, as clients send them and servers receive them.

use std::time::Duration;

use serde_json::{Map, Value};

use super::*;
use crate::context::Context;

/// The content of an RPC request: what the client asks for, before transport keys are added.
///
/// # Examples
///
/// ```
/// use oslo_messaging::Context;
/// use oslo_messaging::wire::Request;
///
/// let mut req = Request::new("resize", serde_json::Map::new(), Context::new());
/// req.namespace = Some("compute".into());
/// assert_eq!(req.method, "resize");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Request {
    /// The method to call.
    pub method: String,
    /// The keyword arguments.
    pub args: Map<String, Value>,
    /// The endpoint namespace, when the target names one.
    pub namespace: Option<String>,
    /// The requested API version, when the target names one.
    pub version: Option<String>,
    /// The caller's context.
    pub context: Context,
}

impl Request {
    /// A request for `method` with keyword arguments `args` and the caller's `context`, in no
    /// namespace and at no version (set the fields for those).
    ///
    /// # Examples
    ///
    /// ```
    /// use oslo_messaging::Context;
    /// use oslo_messaging::wire::{self, Request};
    ///
    /// let args = serde_json::json!({"a": 1}).as_object().unwrap().clone();
    /// let mut req = Request::new("add", args, Context::new().with("user", "u"));
    /// req.version = Some("1.2".into());
    /// let body = wire::encode_request(&req, None, &wire::new_id());
    /// assert_eq!(wire::decode_request(&body)?.request, req);
    /// # Ok::<(), wire::WireError>(())
    /// ```
    pub fn new(method: impl Into<String>, args: Map<String, Value>, context: Context) -> Self {
        Self {
            method: method.into(),
            args,
            namespace: None,
            version: None,
            context,
        }
    }
}

/// The keys a call adds to a request so the server can answer.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use oslo_messaging::wire::CallInfo;
///
/// let info = CallInfo::new("msg-1", "reply_abc", Some(Duration::from_secs(30)));
/// assert_eq!(info.reply_q, "reply_abc");
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CallInfo<'a> {
    /// `_msg_id`: correlates the reply.
    pub msg_id: &'a str,
    /// `_reply_q`: the queue the reply goes to.
    pub reply_q: &'a str,
    /// `_timeout`: the call-monitor timeout; `null` when not monitoring.
    pub call_monitor_timeout: Option<Duration>,
}

impl<'a> CallInfo<'a> {
    /// The call keys: `_msg_id`, `_reply_q` and `_timeout`.
    pub fn new(msg_id: &'a str, reply_q: &'a str, call_monitor_timeout: Option<Duration>) -> Self {
        Self {
            msg_id,
            reply_q,
            call_monitor_timeout,
        }
    }
}

/// Encodes an RPC request, enveloped, exactly as Python's `_send` does.
///
/// # Examples
///
/// ```
/// use oslo_messaging::Context;
/// use oslo_messaging::wire::{self, CallInfo, Request};
///
/// let req = Request::new("ping", serde_json::Map::new(), Context::new());
/// let body = wire::encode_request(&req, Some(&CallInfo::new("m1", "reply_q1", None)), "u1");
/// let back = wire::decode_request(&body)?;
/// assert_eq!((back.msg_id.as_deref(), back.reply_q.as_deref()), (Some("m1"), Some("reply_q1")));
/// # Ok::<(), wire::WireError>(())
/// ```
pub fn encode_request(req: &Request, call: Option<&CallInfo<'_>>, unique_id: &str) -> Vec<u8> {
    super::envelope::encode_with(true, |out| {
        out.raw(b"{");
        let mut first = true;
        write_key(out, &mut first, "method");
        out.str(&req.method);
        write_key(out, &mut first, "args");
        out.object(&req.args);
        if let Some(ns) = &req.namespace {
            write_key(out, &mut first, "namespace");
            out.str(ns);
        }
        if let Some(v) = &req.version {
            write_key(out, &mut first, "version");
            out.str(v);
        }
        if let Some(call) = call {
            write_key(out, &mut first, "_msg_id");
            out.str(call.msg_id);
            write_key(out, &mut first, "_reply_q");
            out.str(call.reply_q);
            write_key(out, &mut first, "_timeout");
            match call.call_monitor_timeout {
                Some(d) => write_seconds(out, d),
                None => out.raw(b"null"),
            }
        }
        write_key(out, &mut first, "_unique_id");
        out.str(unique_id);
        write_context(out, &mut first, &req.context);
        out.raw(b"}");
    })
}

/// An RPC request as a server receives it.
///
/// # Examples
///
/// ```
/// use oslo_messaging::Context;
/// use oslo_messaging::wire::{self, Request};
///
/// let req = Request::new("cast_me", serde_json::Map::new(), Context::new());
/// let incoming = wire::decode_request(&wire::encode_request(&req, None, "u1"))?;
/// assert!(!incoming.wants_reply());
/// assert_eq!(incoming.unique_id.as_deref(), Some("u1"));
/// # Ok::<(), wire::WireError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct IncomingRequest {
    /// The request itself.
    pub request: Request,
    /// `_msg_id`: present on calls.
    pub msg_id: Option<String>,
    /// `_reply_q`: present on calls.
    pub reply_q: Option<String>,
    /// `_timeout`: the caller's call-monitor timeout (any JSON; `null` when absent).
    pub client_timeout: Value,
    /// `_unique_id`, for duplicate detection.
    pub unique_id: Option<String>,
}

impl IncomingRequest {
    /// `true` when the caller waits for a reply.
    pub fn wants_reply(&self) -> bool {
        self.msg_id.is_some()
    }
}

/// Decodes an RPC request body.
///
/// # Errors
///
/// Any [`WireError`]: not JSON, bad envelope, no `method`, fields of the wrong type.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire;
///
/// let body = br#"{"method": "echo", "args": {"x": 1}, "_context_user": "u", "_unique_id": "a"}"#;
/// let r = wire::decode_request(body)?;
/// assert_eq!((r.request.method.as_str(), r.request.context.get_str("user")), ("echo", Some("u")));
/// # Ok::<(), wire::WireError>(())
/// ```
pub fn decode_request(body: &[u8]) -> Result<IncomingRequest, WireError> {
    fast::request(body).map_or_else(|| decode_request_general(body), Ok)
}

/// The reference decoder: also the one that reports errors.
pub(crate) fn decode_request_general(body: &[u8]) -> Result<IncomingRequest, WireError> {
    let mut map = unwrap_envelope(body)?;
    let context = take_context(&mut map);
    let msg_id = take_opt_string(&mut map, "_msg_id")?;
    let reply_q = take_opt_string(&mut map, "_reply_q")?;
    let client_timeout = map.shift_remove("_timeout").unwrap_or(Value::Null);
    let unique_id = take_opt_string(&mut map, "_unique_id")?;
    let method = take_opt_string(&mut map, "method")?.ok_or(WireError::MissingField("method"))?;
    let args = match map.shift_remove("args") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(args)) => args,
        Some(_) => {
            return Err(WireError::BadField {
                field: "args",
                expected: "an object",
            });
        }
    };
    let namespace = take_opt_string(&mut map, "namespace")?;
    let version = take_opt_string(&mut map, "version")?;
    Ok(IncomingRequest {
        request: Request {
            method,
            args,
            namespace,
            version,
            context,
        },
        msg_id,
        reply_q,
        client_timeout,
        unique_id,
    })
}

/// Reads `_msg_id` and `_reply_q` from a body that may not decode as a request, so a server
/// can still send the caller a failure.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire;
///
/// // A request whose args are broken still says where its caller waits.
/// let body = br#"{"method": 7, "_msg_id": "m", "_reply_q": "reply_1"}"#;
/// assert!(wire::decode_request(body).is_err());
/// assert_eq!(wire::reply_address(body), Some(("m".into(), "reply_1".into())));
/// ```
pub fn reply_address(body: &[u8]) -> Option<(String, String)> {
    let map = unwrap_envelope(body).ok()?;
    let msg_id = map.get("_msg_id")?.as_str()?.to_owned();
    let reply_q = map.get("_reply_q")?.as_str()?.to_owned();
    Some((msg_id, reply_q))
}
