//! The request context (oslo's `ctxt`).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// oslo.utils' `_SANITIZE_KEYS`: a key containing any of these (case-insensitively) holds a
/// secret. Used to blank contexts before notifications leave the process, to mask `Debug`
/// output, and by the `log` notification driver.
pub(crate) const SANITIZE_KEYS: &[&str] = &[
    "adminpass",
    "admin_pass",
    "password",
    "admin_password",
    "auth_token",
    "new_pass",
    "auth_password",
    "secret_uuid",
    "secret",
    "sys_pswd",
    "token",
    "configdrive",
    "chappassword",
    "encrypted_key",
    "private_key",
    "fernetkey",
    "sslkey",
    "passphrase",
    "cephclusterfsid",
    "octaviaheartbeatkey",
    "rabbitcookie",
    "cephmanilaclientkey",
    "pacemakerremoteauthkey",
    "designaterndckey",
    "cephadminkey",
    "heatauthencryptionkey",
    "cephclientkey",
    "keystonecredential",
    "barbicansimplecryptokek",
    "cephrgwkey",
    "swifthashsuffix",
    "migrationsshkey",
    "cephmdskey",
    "cephmonkey",
    "chapsecret",
];

/// Whether `key` names a secret (a substring match on [`SANITIZE_KEYS`]).
pub(crate) fn is_secret_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    SANITIZE_KEYS.iter().any(|k| lower.contains(k))
}

/// Blanks (to `null`) the values of secret-looking keys, at any depth.
fn redact_value(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_secret_key(k) {
                        Value::Null
                    } else {
                        redact_value(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact_value).collect()),
        other => other.clone(),
    }
}

/// The context that travels with every RPC request and notification: a JSON object.
///
/// On the wire each key `k` becomes a top-level `_context_k` key beside the method, exactly as
/// Python's `pack_context` does, so contexts built by oslo.context's `RequestContext.to_dict()`
/// round-trip unchanged. Key order is kept.
///
/// Handlers see the caller's context plus `client_timeout` (the caller's call-monitor timeout, or
/// `null`), as Python endpoints do.
///
/// `Debug` output masks secrets such as `auth_token`.
///
/// # Examples
///
/// ```
/// use oslo_messaging::Context;
///
/// let ctx = Context::new()
///     .with("user", "alice")
///     .with("project_id", "p1")
///     .with("auth_token", "s3cr3t");
/// assert_eq!(ctx.get_str("user"), Some("alice"));
/// assert!(!format!("{ctx:?}").contains("s3cr3t"));
/// ```
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Context {
    values: Map<String, Value>,
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// A context holding the keys of `map`.
    pub fn from_map(map: Map<String, Value>) -> Self {
        Self { values: map }
    }

    /// A context from anything that serializes to a JSON object (a struct of the service's
    /// own, a `json!({...})`), or to `null` for an empty context.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Serialization`](crate::ErrorKind::Serialization) when `value` does not
    /// serialize, or serializes to something else.
    ///
    /// # Examples
    ///
    /// ```
    /// use oslo_messaging::Context;
    ///
    /// #[derive(serde::Serialize)]
    /// struct RequestContext<'a> {
    ///     user_id: &'a str,
    ///     request_id: &'a str,
    /// }
    ///
    /// let ctx = Context::from_serialize(&RequestContext { user_id: "u1", request_id: "req-1" })?;
    /// assert_eq!(ctx.get_str("request_id"), Some("req-1"));
    /// # Ok::<(), oslo_messaging::Error>(())
    /// ```
    pub fn from_serialize(value: &impl serde::Serialize) -> crate::Result<Self> {
        let value = serde_json::to_value(value).map_err(|e| {
            crate::Error::serialization(format!("a context does not serialize: {e}"))
        })?;
        match value {
            Value::Object(values) => Ok(Self { values }),
            Value::Null => Ok(Self::new()),
            other => Err(crate::Error::serialization(format!(
                "a context must be a JSON object, not {}",
                json_type_name(&other)
            ))),
        }
    }

    /// Returns the context with `key` set to `value`.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.values.insert(key.into(), value.into());
        self
    }

    /// Sets `key` to `value`, returning the previous value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        self.values.insert(key.into(), value.into())
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.values.shift_remove(key)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    /// The value of `key` when it is a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.values.get(key).and_then(Value::as_str)
    }

    /// The `request_id` key, which OpenStack services use to correlate logs.
    pub fn request_id(&self) -> Option<&str> {
        self.get_str("request_id")
    }

    /// The caller's call-monitor timeout in seconds, as servers see it (`client_timeout`).
    pub fn client_timeout(&self) -> Option<f64> {
        self.values.get("client_timeout").and_then(Value::as_f64)
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// `true` when the context has no keys.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The keys and values, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.values.iter()
    }

    /// The underlying JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.values
    }

    /// Consumes the context, returning the JSON object.
    pub fn into_map(self) -> Map<String, Value> {
        self.values
    }

    /// A copy with secrets set to `null` before a notification is sent, as oslo.context's
    /// `redacted_copy()` does for `auth_token`: here every key, at any depth, whose name
    /// contains one of oslo.utils' secret words (`password`, `token`, `secret`, ...).
    ///
    /// ```
    /// use oslo_messaging::Context;
    ///
    /// let ctx = Context::new().with("user", "u1").with("auth_token", "tok");
    /// let safe = ctx.redacted();
    /// assert_eq!(safe.get("auth_token"), Some(&serde_json::Value::Null));
    /// assert_eq!(safe.get_str("user"), Some("u1"));
    /// ```
    #[must_use]
    pub fn redacted(&self) -> Self {
        match redact_value(&Value::Object(self.values.clone())) {
            Value::Object(values) => Self { values },
            _ => Self::new(),
        }
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.values {
            if is_secret_key(k) && !v.is_null() {
                m.entry(k, &"***");
            } else {
                m.entry(k, &redact_value(v));
            }
        }
        m.finish()
    }
}

impl From<Map<String, Value>> for Context {
    fn from(values: Map<String, Value>) -> Self {
        Self { values }
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Context {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            values: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

/// The name of a JSON value's type, for error messages.
pub(crate) fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_insertion_order() {
        let ctx = Context::new().with("b", 1).with("a", 2).with("c", 3);
        let keys: Vec<_> = ctx.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "a", "c"]);
    }

    #[test]
    fn from_serialize_rejects_non_objects() {
        assert!(Context::from_serialize(&json!([1])).is_err());
        assert!(Context::from_serialize(&json!(null)).unwrap().is_empty());
        let ctx = Context::from_serialize(&json!({"user": "u"})).unwrap();
        assert_eq!(ctx.get_str("user"), Some("u"));
    }

    #[test]
    fn debug_masks_secrets() {
        let ctx = Context::new()
            .with("auth_token", "tok-123")
            .with("admin_password", "pw")
            .with("user", "bob");
        let dbg = format!("{ctx:?}");
        assert!(!dbg.contains("tok-123"), "{dbg}");
        assert!(!dbg.contains("\"pw\""), "{dbg}");
        assert!(dbg.contains("bob"));
    }

    #[test]
    fn redacted_blanks_secrets_and_keeps_keys() {
        let ctx = Context::new()
            .with("user", "u")
            .with("auth_token", "t")
            .with("service_token", "s");
        let r = ctx.redacted();
        assert_eq!(r.len(), 3);
        assert_eq!(r.get("auth_token"), Some(&Value::Null));
        assert_eq!(r.get("service_token"), Some(&Value::Null));
        assert_eq!(r.get_str("user"), Some("u"));
    }

    #[test]
    fn redaction_matches_substrings_at_any_depth() {
        let ctx = Context::from_serialize(&serde_json::json!({
            "access_token": "a", "application_credential_secret": "b",
            "auth": {"token": "c", "user": "u"}, "list": [{"password": "d"}], "roles": ["admin"]
        }))
        .unwrap();
        let r = ctx.redacted();
        assert_eq!(
            Value::Object(r.into_map()),
            serde_json::json!({
                "access_token": null, "application_credential_secret": null,
                "auth": {"token": null, "user": "u"}, "list": [{"password": null}], "roles": ["admin"]
            })
        );
        let dbg = format!("{ctx:?}");
        for secret in ["\"a\"", "\"b\"", "\"c\"", "\"d\""] {
            assert!(!dbg.contains(secret), "{dbg}");
        }
    }

    #[test]
    fn client_timeout_reads_numbers() {
        let ctx = Context::new().with("client_timeout", 30);
        assert_eq!(ctx.client_timeout(), Some(30.0));
        assert_eq!(Context::new().client_timeout(), None);
    }
}
