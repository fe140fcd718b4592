//! API versions and oslo's compatibility rule.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// An RPC API version, `major.minor` with an optional `.revision`.
///
/// An endpoint implementing version `I` can serve a request for version `R` when the majors are
/// equal and `R.minor <= I.minor`; when the minors are equal, the revisions are compared the same
/// way (a missing revision is 0). This is oslo's `version_is_compatible`.
///
/// # Examples
///
/// ```
/// use oslo_messaging::Version;
///
/// let implemented: Version = "1.3".parse().unwrap();
/// assert!(implemented.is_compatible_with(Some(&"1.2".parse().unwrap())));
/// assert!(!implemented.is_compatible_with(Some(&"1.4".parse().unwrap())));
/// assert!(!implemented.is_compatible_with(Some(&"2.0".parse().unwrap())));
/// assert!(!implemented.is_compatible_with(None));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    major: u32,
    minor: u32,
    revision: Option<u32>,
}

impl Version {
    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self {
            major,
            minor,
            revision: None,
        }
    }

    /// `major.minor.revision`.
    pub const fn with_revision(major: u32, minor: u32, revision: u32) -> Self {
        Self {
            major,
            minor,
            revision: Some(revision),
        }
    }

    /// The major number.
    pub const fn major(&self) -> u32 {
        self.major
    }

    /// The minor number.
    pub const fn minor(&self) -> u32 {
        self.minor
    }

    /// The revision, when the version has three parts.
    pub const fn revision(&self) -> Option<u32> {
        self.revision
    }

    /// Parses `X.Y` or `X.Y.Z` (decimal digits only).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Configuration`](crate::ErrorKind::Configuration) naming the bad string,
    /// in Python's words.
    pub fn parse(s: &str) -> Result<Self> {
        Self::parse_parts(s, |p| {
            if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                p.parse().ok()
            } else {
                None
            }
        })
        .ok_or_else(|| {
            Error::config(format!(
                "Version must contain a major and minor integer. Got {s}"
            ))
        })
    }

    /// Parses the way Python reads versions from the wire: each part as `int()` does
    /// (surrounding spaces and a `+` allowed), and parts after the third ignored.
    pub(crate) fn parse_lenient(s: &str) -> Option<Self> {
        let three: String = s.splitn(4, '.').take(3).collect::<Vec<_>>().join(".");
        Self::parse_parts(&three, |p| {
            let p = p.trim();
            p.strip_prefix('+').unwrap_or(p).parse().ok()
        })
    }

    fn parse_parts(s: &str, part: impl Fn(&str) -> Option<u32>) -> Option<Self> {
        let mut it = s.split('.');
        let major = part(it.next()?)?;
        let minor = part(it.next()?)?;
        let revision = match it.next() {
            Some(r) => Some(part(r)?),
            None => None,
        };
        if it.next().is_some() {
            return None;
        }
        Some(Self {
            major,
            minor,
            revision,
        })
    }

    /// Whether an endpoint implementing `self` can serve a request for `requested`
    /// (`None`, a request without a version, is never compatible).
    pub fn is_compatible_with(&self, requested: Option<&Self>) -> bool {
        let Some(req) = requested else {
            return false;
        };
        if req.major != self.major || req.minor > self.minor {
            return false;
        }
        !(req.minor == self.minor && req.revision.unwrap_or(0) > self.revision.unwrap_or(0))
    }
}

/// oslo's `version_is_compatible(imp_version, version)` over optional versions: an endpoint
/// without a version accepts everything.
pub(crate) fn is_compatible(implemented: Option<&Version>, requested: Option<&Version>) -> bool {
    implemented.is_none_or(|imp| imp.is_compatible_with(requested))
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.revision {
            Some(r) => write!(f, "{}.{}.{r}", self.major, self.minor),
            None => write!(f, "{}.{}", self.major, self.minor),
        }
    }
}

impl FromStr for Version {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    /// The matrix of oslo's `tests/test_utils.py::VersionIsCompatibleTestCase`.
    #[test]
    fn compatibility_matches_oslo() {
        let cases = [
            ("1.0", "1.0", true),
            ("1.0", "1.1", false),
            ("1.1", "1.0", true),
            ("1.0", "2.0", false),
            ("2.0", "1.0", false),
            ("1.1", "1.1.0", true),
            ("1.1.0", "1.1", true),
            ("1.1.1", "1.1.0", true),
            ("1.1.0", "1.1.1", false),
            ("1.2.0", "1.1.1", true),
            ("1.0", "1.0.1", false),
            ("2.5", "2.0", true),
            ("2.5.3", "2.5.2", true),
        ];
        for (imp, req, want) in cases {
            assert_eq!(
                v(imp).is_compatible_with(Some(&v(req))),
                want,
                "implemented {imp}, requested {req}"
            );
        }
    }

    #[test]
    fn none_rules() {
        assert!(is_compatible(None, None));
        assert!(is_compatible(None, Some(&v("9.9"))));
        assert!(!is_compatible(Some(&v("1.0")), None));
    }

    #[test]
    fn parse_and_display_round_trip() {
        for s in ["1.0", "2.15", "1.2.3", "0.0"] {
            assert_eq!(v(s).to_string(), s);
        }
    }

    #[test]
    fn strict_parse_rejects_garbage() {
        for s in [
            "", "1", "1.", ".1", "a.b", "1.2.3.4", "1.-2", " 1.2", "1.2 ",
        ] {
            let err = Version::parse(s).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("Version must contain a major and minor integer"),
                "{s:?}: {err}"
            );
        }
    }

    #[test]
    fn lenient_parse_reads_like_python_int() {
        assert_eq!(Version::parse_lenient(" 1.+2"), Some(Version::new(1, 2)));
        assert_eq!(Version::parse_lenient("2.0"), Some(Version::new(2, 0)));
        assert_eq!(Version::parse_lenient("2"), None);
        assert_eq!(Version::parse_lenient("x.0"), None);
        assert_eq!(
            Version::parse_lenient("1.2.3.4"),
            Some(Version::with_revision(1, 2, 3))
        );
    }
}
