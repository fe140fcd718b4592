//! Where messages go: oslo's `Target`.

use crate::error::{Error, Result};
use crate::version::Version;

/// Identifies the destination of messages, as oslo's `Target`.
///
/// Which fields matter depends on the role:
///
/// | role | fields |
/// |---|---|
/// | RPC server | `topic` and `server` required; `exchange` optional |
/// | RPC endpoint | `namespace` and `version` |
/// | RPC client | `topic` required; everything else optional |
/// | notifier, listener | `topic` (and `exchange`) |
///
/// The exchange defaults to the transport's control exchange (`openstack` unless configured).
///
/// # Examples
///
/// ```
/// use oslo_messaging::{Target, Version};
///
/// let t = Target::new("compute")
///     .with_server("host-1")
///     .with_version(Version::new(5, 0));
/// assert_eq!(t.topic(), Some("compute"));
/// assert_eq!(t.server(), Some("host-1"));
/// assert_eq!(t.version().map(|v| v.to_string()), Some("5.0".into()));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Target {
    exchange: Option<String>,
    topic: Option<String>,
    namespace: Option<String>,
    version: Option<Version>,
    server: Option<String>,
    fanout: bool,
    legacy_namespaces: Vec<String>,
}

impl Target {
    /// A target for `topic`.
    pub fn new(topic: impl Into<String>) -> Self {
        Self {
            topic: Some(topic.into()),
            ..Self::default()
        }
    }

    /// A target with no field set (an endpoint's target before its namespace and version).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Sets the exchange; `None` means the transport's control exchange.
    #[must_use]
    pub fn with_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = Some(exchange.into());
        self
    }

    /// Sets the topic.
    #[must_use]
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Sets the namespace.
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Sets the version.
    #[must_use]
    pub fn with_version(mut self, version: Version) -> Self {
        self.version = Some(version);
        self
    }

    /// Sets the server, so messages go to that one server (`topic.server` queue).
    #[must_use]
    pub fn with_server(mut self, server: impl Into<String>) -> Self {
        self.server = Some(server.into());
        self
    }

    /// Sets fanout: a cast then reaches every server listening on the topic.
    #[must_use]
    pub fn with_fanout(mut self, fanout: bool) -> Self {
        self.fanout = fanout;
        self
    }

    /// Adds namespaces an endpoint also accepts, besides its own.
    #[must_use]
    pub fn with_legacy_namespaces<I, S>(mut self, namespaces: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.legacy_namespaces = namespaces.into_iter().map(Into::into).collect();
        self
    }

    pub(crate) fn set_exchange(&mut self, exchange: Option<String>) {
        self.exchange = exchange;
    }

    pub(crate) fn set_topic(&mut self, topic: Option<String>) {
        self.topic = topic;
    }

    pub(crate) fn set_namespace(&mut self, namespace: Option<String>) {
        self.namespace = namespace;
    }

    pub(crate) fn set_version(&mut self, version: Option<Version>) {
        self.version = version;
    }

    pub(crate) fn set_server(&mut self, server: Option<String>) {
        self.server = server;
    }

    /// The exchange, when set.
    pub fn exchange(&self) -> Option<&str> {
        self.exchange.as_deref()
    }

    /// The topic, when set.
    pub fn topic(&self) -> Option<&str> {
        self.topic.as_deref()
    }

    /// The namespace, when set.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The version, when set.
    pub fn version(&self) -> Option<&Version> {
        self.version.as_ref()
    }

    /// The server, when set.
    pub fn server(&self) -> Option<&str> {
        self.server.as_deref()
    }

    /// Whether the target is fanout.
    pub fn fanout(&self) -> bool {
        self.fanout
    }

    /// The namespaces accepted besides [`namespace`](Self::namespace).
    pub fn legacy_namespaces(&self) -> &[String] {
        &self.legacy_namespaces
    }

    /// Whether an endpoint with this target accepts a request in `namespace`: its own namespace
    /// (`None` matching `None`) or one of its legacy namespaces.
    pub fn accepts_namespace(&self, namespace: Option<&str>) -> bool {
        self.namespace.as_deref() == namespace
            || namespace.is_some_and(|ns| self.legacy_namespaces.iter().any(|l| l == ns))
    }

    /// The topic, or `InvalidTarget` with oslo's message for sends.
    pub(crate) fn require_topic(&self) -> Result<&str> {
        match self.topic.as_deref() {
            Some(t) if !t.is_empty() => Ok(t),
            _ => Err(Error::invalid_target(format!(
                "A topic is required to send (target {self})"
            ))),
        }
    }

    /// Checks a notification listener's target: a topic, with Python's message.
    pub(crate) fn require_listener_topic(&self) -> Result<&str> {
        match self.topic.as_deref() {
            Some(t) if !t.is_empty() => Ok(t),
            _ => Err(Error::invalid_target(format!(
                "A target must have topic specified (target {self})"
            ))),
        }
    }

    /// Checks an RPC server's target: topic and server both set.
    pub(crate) fn require_server_target(&self) -> Result<(&str, &str)> {
        match (self.topic.as_deref(), self.server.as_deref()) {
            (Some(t), Some(s)) if !t.is_empty() && !s.is_empty() => Ok((t, s)),
            _ => Err(Error::invalid_target(format!(
                "A server's target must have topic and server names specified (target {self})"
            ))),
        }
    }
}

impl std::fmt::Display for Target {
    /// Python's `repr(Target)` field list, for messages: `<Target topic=t, server=s>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(e) = &self.exchange {
            parts.push(format!("exchange={e}"));
        }
        if let Some(t) = &self.topic {
            parts.push(format!("topic={t}"));
        }
        if let Some(n) = &self.namespace {
            parts.push(format!("namespace={n}"));
        }
        if let Some(v) = &self.version {
            parts.push(format!("version={v}"));
        }
        if let Some(s) = &self.server {
            parts.push(format!("server={s}"));
        }
        if self.fanout {
            parts.push("fanout=True".to_owned());
        }
        write!(f, "<Target {}>", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        let t = Target::empty()
            .with_namespace("a")
            .with_legacy_namespaces(["b"]);
        assert!(t.accepts_namespace(Some("a")));
        assert!(t.accepts_namespace(Some("b")));
        assert!(!t.accepts_namespace(Some("c")));
        assert!(!t.accepts_namespace(None));
        assert!(Target::empty().accepts_namespace(None));
        assert!(!Target::empty().accepts_namespace(Some("a")));
    }

    #[test]
    fn role_validation() {
        assert!(Target::empty().require_topic().is_err());
        assert!(Target::new("").require_topic().is_err());
        assert_eq!(Target::new("t").require_topic().unwrap(), "t");
        let err = Target::new("t").require_server_target().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidTarget);
        assert!(err.to_string().contains("topic and server"), "{err}");
        assert_eq!(
            Target::new("t")
                .with_server("s")
                .require_server_target()
                .unwrap(),
            ("t", "s")
        );
    }

    #[test]
    fn display_lists_set_fields() {
        let t = Target::new("t").with_server("s").with_fanout(true);
        assert_eq!(t.to_string(), "<Target topic=t, server=s, fanout=True>");
    }
}
