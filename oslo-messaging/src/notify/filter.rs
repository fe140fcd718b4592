//! Which notifications an endpoint wants (oslo's `NotificationFilter`).

use regex::Regex;
use serde_json::Value;

use crate::context::Context;
use crate::error::{Error, Result};

/// Screens notifications by regular expressions on their fields, as oslo's `NotificationFilter`.
///
/// Each pattern must match the *start* of the field (Python's `re.match`; end with `$` to match
/// the whole). Context, metadata and payload patterns apply to top-level keys: a notification
/// whose key is missing or is not a string does not match. All patterns must match.
///
/// # Examples
///
/// ```
/// use oslo_messaging::notify::NotificationFilter;
///
/// let f = NotificationFilter::new()
///     .publisher_id("^compute.*")?
///     .event_type("compute\\.instance\\.create")?
///     .payload("state", "^(active|error)$")?;
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct NotificationFilter {
    publisher_id: Option<Regex>,
    event_type: Option<Regex>,
    context: Vec<(String, Regex)>,
    metadata: Vec<(String, Regex)>,
    payload: Vec<(String, Regex)>,
}

fn compile(pattern: &str) -> Result<Regex> {
    Regex::new(&format!(r"\A(?:{pattern})")).map_err(|e| {
        Error::config(format!(
            "invalid notification filter pattern {pattern:?}: {e}"
        ))
    })
}

fn single_matches(re: Option<&Regex>, value: Option<&str>) -> bool {
    match re {
        None => true,
        Some(re) => value.is_some_and(|v| re.is_match(v)),
    }
}

fn keys_match(rules: &[(String, Regex)], data: Option<&serde_json::Map<String, Value>>) -> bool {
    if rules.is_empty() {
        return true;
    }
    let Some(data) = data else {
        return false;
    };
    rules.iter().all(|(k, re)| {
        data.get(k)
            .and_then(Value::as_str)
            .is_some_and(|v| re.is_match(v))
    })
}

impl NotificationFilter {
    /// A filter that lets everything through.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `publisher_id` to match.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Configuration`](crate::ErrorKind::Configuration) for a bad pattern.
    pub fn publisher_id(mut self, pattern: &str) -> Result<Self> {
        self.publisher_id = Some(compile(pattern)?);
        Ok(self)
    }

    /// Requires `event_type` to match.
    ///
    /// # Errors
    ///
    /// As [`publisher_id`](Self::publisher_id).
    pub fn event_type(mut self, pattern: &str) -> Result<Self> {
        self.event_type = Some(compile(pattern)?);
        Ok(self)
    }

    /// Requires context key `key` to be a string matching `pattern`.
    ///
    /// # Errors
    ///
    /// As [`publisher_id`](Self::publisher_id).
    pub fn context(mut self, key: &str, pattern: &str) -> Result<Self> {
        self.context.push((key.to_owned(), compile(pattern)?));
        Ok(self)
    }

    /// Requires metadata key `key` (`message_id` or `timestamp`) to be a string matching
    /// `pattern`.
    ///
    /// # Errors
    ///
    /// As [`publisher_id`](Self::publisher_id).
    pub fn metadata(mut self, key: &str, pattern: &str) -> Result<Self> {
        self.metadata.push((key.to_owned(), compile(pattern)?));
        Ok(self)
    }

    /// Requires payload key `key` to be a string matching `pattern`.
    ///
    /// # Errors
    ///
    /// As [`publisher_id`](Self::publisher_id).
    pub fn payload(mut self, key: &str, pattern: &str) -> Result<Self> {
        self.payload.push((key.to_owned(), compile(pattern)?));
        Ok(self)
    }

    /// Whether a notification passes.
    pub fn matches(
        &self,
        context: &Context,
        publisher_id: Option<&str>,
        event_type: Option<&str>,
        metadata: &serde_json::Map<String, Value>,
        payload: &Value,
    ) -> bool {
        single_matches(self.publisher_id.as_ref(), publisher_id)
            && single_matches(self.event_type.as_ref(), event_type)
            && keys_match(&self.context, Some(context.as_map()))
            && keys_match(&self.metadata, Some(metadata))
            && keys_match(&self.payload, payload.as_object())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(f: &NotificationFilter, publisher: Option<&str>, payload: Value) -> bool {
        let meta = json!({"message_id": "id1", "timestamp": "2024-01-02 03:04:05"});
        f.matches(
            &Context::new().with("user", "u"),
            publisher,
            Some("compute.create"),
            meta.as_object().unwrap(),
            &payload,
        )
    }

    /// The outputs of oslo's `NotificationFilter` (see the reference notes).
    #[test]
    fn matches_like_python_re_match() {
        let p = |pat| NotificationFilter::new().publisher_id(pat).unwrap();
        assert!(
            !check(&p("host"), Some("compute.host"), json!({})),
            "anchored at the start"
        );
        assert!(
            check(&p("compute"), Some("compute.host"), json!({})),
            "a prefix match"
        );
        assert!(
            !check(&p("COMPUTE"), Some("compute.host"), json!({})),
            "case-sensitive"
        );
        assert!(check(&p("(?i)COMPUTE"), Some("compute.host"), json!({})));
        assert!(!check(&p("compute$"), Some("compute.host"), json!({})));
        assert!(
            !check(&p("compute"), None, json!({})),
            "a missing field never matches"
        );

        let pl = NotificationFilter::new().payload("n", "1").unwrap();
        assert!(check(&pl, None, json!({"n": "12"})));
        assert!(
            !check(&pl, None, json!({"n": 1})),
            "non-strings never match"
        );
        assert!(
            !check(&pl, None, json!({"m": "1"})),
            "missing keys never match"
        );
        assert!(!check(&pl, None, json!({"n": {"x": "1"}})));
        assert!(
            !check(&pl, None, json!(null)),
            "a non-object payload never matches"
        );
        assert!(!check(&pl, None, json!(["n"])));

        let ctx = NotificationFilter::new().context("user", "u").unwrap();
        assert!(check(&ctx, None, json!(null)));
        let meta = NotificationFilter::new()
            .metadata("timestamp", "2024")
            .unwrap();
        assert!(check(&meta, None, json!(null)));

        assert!(
            check(&NotificationFilter::new(), None, json!(null)),
            "empty filter"
        );
    }

    #[test]
    fn bad_patterns_are_errors() {
        let err = NotificationFilter::new().event_type("(").unwrap_err();
        assert!(
            err.to_string()
                .contains("invalid notification filter pattern"),
            "{err}"
        );
    }
}
