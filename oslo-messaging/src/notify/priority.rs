//! Notification priorities.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The priority of a notification; each has a method on [`Notifier`](super::Notifier) and a
/// handler slot on [`NotificationEndpoint`](super::NotificationEndpoint).
///
/// On the wire the priority is upper case (`INFO`) in the message and lower case in the routing
/// key (`notifications.info`). `warning` is an alias of [`Warn`](Self::Warn) when parsing user
/// input; a message whose priority is `WARNING` is unknown to listeners, as in Python.
///
/// # Examples
///
/// ```
/// use oslo_messaging::Priority;
///
/// let p: Priority = "warning".parse()?;
/// assert_eq!((p, p.as_str(), p.as_wire()), (Priority::Warn, "warn", "WARN"));
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// `AUDIT`.
    Audit,
    /// `DEBUG`.
    Debug,
    /// `INFO`.
    Info,
    /// `WARN`.
    Warn,
    /// `ERROR`.
    Error,
    /// `CRITICAL`.
    Critical,
    /// `SAMPLE`.
    Sample,
}

impl Priority {
    /// Every priority, in oslo's order.
    pub const ALL: [Self; 7] = [
        Self::Audit,
        Self::Debug,
        Self::Info,
        Self::Warn,
        Self::Error,
        Self::Critical,
        Self::Sample,
    ];

    /// The lower-case name, used in routing keys (`info`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audit => "audit",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Critical => "critical",
            Self::Sample => "sample",
        }
    }

    /// The upper-case name carried in messages (`INFO`).
    pub fn as_wire(self) -> &'static str {
        match self {
            Self::Audit => "AUDIT",
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::Error => "ERROR",
            Self::Critical => "CRITICAL",
            Self::Sample => "SAMPLE",
        }
    }

    /// Reads a priority from a received message, case-insensitively, as Python listeners do
    /// (`warning` is not a priority there).
    pub fn from_wire(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = Error;

    /// Case-insensitive; `warning` reads as [`Warn`](Self::Warn).
    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("warning") {
            return Ok(Self::Warn);
        }
        Self::from_wire(s).ok_or_else(|| {
            Error::config(format!(
                "unknown notification priority {s:?} (expected audit, debug, info, warn, error, critical or sample)"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(Priority::Warn.as_wire(), "WARN");
        assert_eq!(Priority::Info.as_str(), "info");
        assert_eq!(Priority::from_wire("INFO"), Some(Priority::Info));
        assert_eq!(Priority::from_wire("WARNING"), None);
        assert_eq!("warning".parse::<Priority>().unwrap(), Priority::Warn);
        assert!("loud".parse::<Priority>().is_err());
    }
}
