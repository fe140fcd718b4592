//! Which notifications an endpoint wants (oslo's `NotificationFilter`).

use regex::Regex;
use serde_json::Value;

use super::Notification;
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
/// use oslo_messaging::notify::{Notification, NotificationFilter, Priority};
///
/// let f = NotificationFilter::builder()
///     .publisher_id("^compute.*")
///     .event_type("compute\\.instance\\.create")
///     .payload("state", "^(active|error)$")
///     .build()?;
/// let n = Notification::new(
///     Priority::Info,
///     "compute.instance.create.end",
///     serde_json::json!({"state": "active"}),
/// )
/// .with_publisher_id("compute.host1");
/// assert!(f.matches(&n));
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
    /// Starts a filter; with no pattern it lets everything through.
    pub fn builder() -> NotificationFilterBuilder {
        NotificationFilterBuilder::default()
    }

    /// Whether `notification` passes.
    pub fn matches(&self, notification: &Notification) -> bool {
        let n = notification;
        single_matches(self.publisher_id.as_ref(), n.publisher_id.as_deref())
            && single_matches(self.event_type.as_ref(), n.event_type.as_deref())
            && keys_match(&self.context, Some(n.context.as_map()))
            && keys_match(&self.metadata, Some(&n.metadata))
            && keys_match(&self.payload, n.payload.as_object())
    }
}

/// Builds a [`NotificationFilter`]; the patterns are checked by [`build`](Self::build).
///
/// # Examples
///
/// ```
/// use oslo_messaging::notify::NotificationFilter;
///
/// let err = NotificationFilter::builder().event_type("(unclosed").build().unwrap_err();
/// assert!(err.to_string().contains("invalid notification filter pattern"));
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct NotificationFilterBuilder {
    publisher_id: Option<String>,
    event_type: Option<String>,
    context: Vec<(String, String)>,
    metadata: Vec<(String, String)>,
    payload: Vec<(String, String)>,
}

impl NotificationFilterBuilder {
    /// Requires `publisher_id` to match `pattern`.
    pub fn publisher_id(mut self, pattern: impl Into<String>) -> Self {
        self.publisher_id = Some(pattern.into());
        self
    }

    /// Requires `event_type` to match `pattern`.
    pub fn event_type(mut self, pattern: impl Into<String>) -> Self {
        self.event_type = Some(pattern.into());
        self
    }

    /// Requires context key `key` to be a string matching `pattern`.
    pub fn context(mut self, key: impl Into<String>, pattern: impl Into<String>) -> Self {
        self.context.push((key.into(), pattern.into()));
        self
    }

    /// Requires metadata key `key` (`message_id` or `timestamp`) to be a string matching
    /// `pattern`.
    pub fn metadata(mut self, key: impl Into<String>, pattern: impl Into<String>) -> Self {
        self.metadata.push((key.into(), pattern.into()));
        self
    }

    /// Requires payload key `key` to be a string matching `pattern`.
    pub fn payload(mut self, key: impl Into<String>, pattern: impl Into<String>) -> Self {
        self.payload.push((key.into(), pattern.into()));
        self
    }

    /// The filter.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Configuration`](crate::ErrorKind::Configuration) naming the first pattern
    /// that is not a valid regular expression.
    pub fn build(self) -> Result<NotificationFilter> {
        let keyed = |rules: Vec<(String, String)>| {
            rules
                .into_iter()
                .map(|(k, p)| compile(&p).map(|re| (k, re)))
                .collect::<Result<Vec<_>>>()
        };
        Ok(NotificationFilter {
            publisher_id: self.publisher_id.as_deref().map(compile).transpose()?,
            event_type: self.event_type.as_deref().map(compile).transpose()?,
            context: keyed(self.context)?,
            metadata: keyed(self.metadata)?,
            payload: keyed(self.payload)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Context;
    use crate::notify::Priority;
    use serde_json::json;

    fn check(f: &NotificationFilterBuilder, publisher: Option<&str>, payload: Value) -> bool {
        let f = f.clone().build().unwrap();
        let meta = json!({"message_id": "id1", "timestamp": "2024-01-02 03:04:05"});
        let mut n = Notification::new(Priority::Info, "compute.create", payload)
            .with_context(Context::new().with("user", "u"));
        n.publisher_id = publisher.map(str::to_owned);
        n.metadata = meta.as_object().unwrap().clone();
        f.matches(&n)
    }

    /// The outputs of oslo's `NotificationFilter` (see the reference notes).
    #[test]
    fn matches_like_python_re_match() {
        let p = |pat: &str| NotificationFilter::builder().publisher_id(pat);
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

        let pl = NotificationFilter::builder().payload("n", "1");
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

        let ctx = NotificationFilter::builder().context("user", "u");
        assert!(check(&ctx, None, json!(null)));
        let meta = NotificationFilter::builder().metadata("timestamp", "2024");
        assert!(check(&meta, None, json!(null)));

        assert!(
            check(&NotificationFilter::builder(), None, json!(null)),
            "empty filter"
        );
    }

    #[test]
    fn bad_patterns_fail_the_build() {
        for b in [
            NotificationFilter::builder().event_type("("),
            NotificationFilter::builder().payload("k", "[a"),
        ] {
            let err = b.build().unwrap_err();
            assert!(
                err.to_string()
                    .contains("invalid notification filter pattern"),
                "{err}"
            );
        }
    }
}
