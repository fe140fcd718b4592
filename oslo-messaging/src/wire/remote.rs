//! The failure JSON: `{"class", "module", "message", "tb", "args", "kwargs"}`, as Python's
//! `serialize_remote_exception` writes it.

use serde_json::{Map, Value};

use super::{WireError, json};
use crate::error::RemoteError;

impl RemoteError {
    /// The failure JSON, as Python's `serialize_remote_exception` writes it.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(96 + self.message.len());
        out.extend_from_slice(b"{\"class\": ");
        json::write_str(&mut out, &self.class);
        out.extend_from_slice(b", \"module\": ");
        json::write_str(&mut out, &self.module);
        out.extend_from_slice(b", \"message\": ");
        json::write_str(&mut out, &self.message);
        out.extend_from_slice(b", \"tb\": [");
        for (i, line) in self.traceback.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            json::write_str(&mut out, line);
        }
        out.extend_from_slice(b"], \"args\": [");
        for (i, arg) in self.args.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            json::write_value(&mut out, arg);
        }
        out.extend_from_slice(b"], \"kwargs\": ");
        json::write_object(&mut out, &self.kwargs);
        out.push(b'}');
        String::from_utf8(out).unwrap_or_default()
    }

    /// Parses failure JSON.
    ///
    /// # Errors
    ///
    /// [`WireError::NotJson`] or [`WireError::NotAnObject`]. Missing keys are not errors: Python
    /// reads them with defaults too.
    pub fn from_json(text: &str) -> Result<Self, WireError> {
        match json::from_slice(text.as_bytes()) {
            Ok(Value::Object(map)) => Ok(Self::from_map(map)),
            Ok(_) => Err(WireError::NotAnObject("failure")),
            Err(e) => Err(WireError::NotJson(e.to_string())),
        }
    }

    /// Reads the `failure` value of a reply however it came: a JSON string (the norm), an object
    /// (tolerated), or anything else (kept as the message of an anonymous failure).
    pub(crate) fn from_failure_value(v: Value) -> Self {
        match v {
            Value::String(text) => Self::from_json(&text).unwrap_or_else(|_| Self {
                class: String::new(),
                module: String::new(),
                message: text,
                traceback: Vec::new(),
                args: Vec::new(),
                kwargs: Map::new(),
            }),
            Value::Object(map) => Self::from_map(map),
            other => Self::new("", "", other.to_string()),
        }
    }

    fn from_map(mut map: Map<String, Value>) -> Self {
        let mut string = |k: &str| match map.shift_remove(k) {
            Some(Value::String(s)) => s,
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let class = string("class");
        let module = string("module");
        let message = string("message");
        let traceback = match map.shift_remove("tb") {
            Some(Value::Array(lines)) => lines
                .into_iter()
                .map(|l| match l {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect(),
            Some(Value::String(s)) => vec![s],
            _ => Vec::new(),
        };
        let args = match map.shift_remove("args") {
            Some(Value::Array(a)) => a,
            Some(Value::Null) | None => Vec::new(),
            Some(other) => vec![other],
        };
        let kwargs = match map.shift_remove("kwargs") {
            Some(Value::Object(k)) => k,
            _ => Map::new(),
        };
        Self {
            class,
            module,
            message,
            traceback,
            args,
            kwargs,
        }
    }
}
