//! Transport URLs: `driver://[user:pass@]host:port[,[user:pass@]host:port]/virtual_host?query`.

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::error::{Error, ErrorKind, Result};
use crate::secret::Secret;

/// The drivers compiled into this library, by URL scheme.
pub(crate) const KNOWN_SCHEMES: &[&str] = &["rabbit", "kombu", "kafka", "memory", "fake"];

/// Which driver a URL selects.
///
/// # Examples
///
/// ```
/// use oslo_messaging::TransportUrl;
/// use oslo_messaging::transport::DriverKind;
///
/// assert_eq!(TransportUrl::parse("kombu://h/")?.driver_kind()?, DriverKind::Rabbit);
/// assert_eq!(TransportUrl::parse("fake://")?.driver_kind()?, DriverKind::Memory);
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriverKind {
    /// The in-memory driver (`memory://`, or `fake://` as Python test configurations write it).
    Memory,
    /// The RabbitMQ driver (`rabbit://`, or its alias `kombu://`).
    Rabbit,
    /// The Kafka driver (`kafka://`), for notifications only, as in Python.
    Kafka,
}

/// One host of a [`TransportUrl`].
///
/// # Examples
///
/// ```
/// use oslo_messaging::TransportUrl;
///
/// let url = TransportUrl::parse("rabbit://u:p@rmq1:5672,u:p@rmq2/")?;
/// let hosts: Vec<_> = url.hosts().iter().map(|h| (h.hostname(), h.port())).collect();
/// assert_eq!(hosts, [(Some("rmq1"), Some(5672)), (Some("rmq2"), None)]);
/// assert_eq!(url.hosts()[0].password().map(|p| p.expose()), Some("p"));
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TransportHost {
    hostname: Option<String>,
    port: Option<u16>,
    username: Option<String>,
    password: Option<Secret>,
}

impl TransportHost {
    /// A host without credentials.
    pub fn new(hostname: impl Into<String>, port: Option<u16>) -> Self {
        Self {
            hostname: Some(hostname.into()),
            port,
            username: None,
            password: None,
        }
    }

    /// Adds credentials.
    #[must_use]
    pub fn with_credentials(
        mut self,
        username: impl Into<String>,
        password: impl Into<Secret>,
    ) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    /// The host name or address (IPv6 without brackets).
    pub fn hostname(&self) -> Option<&str> {
        self.hostname.as_deref()
    }

    /// The port, when given.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The user name, when given.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The password, when given. Its `Display` is masked; use [`Secret::expose`].
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    fn write_netloc(&self, out: &mut String, reveal: bool) {
        if self.username.is_some() || self.password.is_some() {
            if let Some(u) = &self.username {
                out.push_str(&quote(u, QUOTE_ALL));
            }
            if let Some(p) = &self.password {
                out.push(':');
                if reveal {
                    out.push_str(&quote(p.expose(), QUOTE_ALL));
                } else {
                    out.push_str("***");
                }
            }
            out.push('@');
        }
        if let Some(h) = &self.hostname {
            if h.contains(':') {
                out.push('[');
                out.push_str(h);
                out.push(']');
            } else {
                out.push_str(h);
            }
        }
        if let Some(p) = self.port {
            out.push(':');
            out.push_str(&p.to_string());
        }
    }
}

impl fmt::Debug for TransportHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportHost")
            .field("hostname", &self.hostname)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password)
            .finish()
    }
}

/// A parsed transport URL, as oslo's `TransportURL`.
///
/// Parsing follows `TransportURL.parse`: the scheme is required; hosts are separated by commas,
/// each with optional `user:pass@` (percent-decoded) and a port; IPv6 addresses go in brackets;
/// the path after the first `/` is the percent-decoded virtual host (`/` gives `""`, `//` and
/// `/%2F` give `/`, no path gives none); repeated query keys are joined with `,`.
///
/// `Display` and `Debug` mask passwords as `***`; [`to_string_with_password`] is the one way
/// to get them back.
///
/// [`to_string_with_password`]: Self::to_string_with_password
///
/// # Examples
///
/// ```
/// use oslo_messaging::TransportUrl;
///
/// let url = TransportUrl::parse("rabbit://nova:s3cret@rmq1:5672,nova:s3cret@rmq2/nova?ssl=true")?;
/// assert_eq!(url.hosts().len(), 2);
/// assert_eq!(url.virtual_host(), Some("nova"));
/// assert_eq!(url.query_value("ssl"), Some("true"));
/// assert_eq!(url.to_string(), "rabbit://nova:***@rmq1:5672,nova:***@rmq2/nova?ssl=true");
/// assert!(!format!("{url:?}").contains("s3cret"));
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct TransportUrl {
    scheme: String,
    virtual_host: Option<String>,
    hosts: Vec<TransportHost>,
    query: Vec<(String, String)>,
}

fn invalid(url_shown: &str, msg: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::InvalidUrl,
        format!("invalid transport URL {url_shown:?}: {msg}"),
    )
}

impl TransportUrl {
    /// Parses a URL.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidUrl`] for a missing scheme, a bad port or IPv6 address, or a scheme
    /// naming no known driver (the message lists the known ones). The URL in the message has
    /// its passwords masked.
    pub fn parse(url: &str) -> Result<Self> {
        let parsed = Self::parse_any_scheme(url)?;
        parsed.driver_kind()?;
        Ok(parsed)
    }

    fn parse_any_scheme(url: &str) -> Result<Self> {
        let shown = mask_password_in_raw(url);
        let (scheme, rest) =
            split_scheme(url).ok_or_else(|| invalid(&shown, "No scheme specified"))?;
        let scheme = scheme.to_ascii_lowercase();
        // urlsplit: fragment, then query, off the end; the netloc after "//".
        let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
        let (rest, query_text) = rest.split_once('?').unwrap_or((rest, ""));
        let (netloc, path) = match rest.strip_prefix("//") {
            Some(after) => match after.find('/') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            },
            None => ("", rest),
        };
        if netloc.contains('[') != netloc.contains(']') {
            return Err(invalid(&shown, "Invalid IPv6 URL"));
        }

        let virtual_host = path.strip_prefix('/').map(unquote);

        let mut hosts = Vec::new();
        let (mut with_creds, mut without_creds) = (0usize, 0usize);
        for part in netloc.split(',').filter(|p| !p.is_empty()) {
            let (creds, hostport) = match part.rsplit_once('@') {
                Some((c, h)) => (Some(c), h),
                None => (None, part),
            };
            let (username, password) = match creds {
                Some(c) => match c.split_once(':') {
                    Some((u, p)) => (Some(unquote(u)), Some(Secret::new(unquote(p)))),
                    None => (Some(unquote(c)), None),
                },
                None => (None, None),
            };
            let (hostname, port_text) = if let Some(bracketed) = hostport.strip_prefix('[') {
                let end = bracketed
                    .find(']')
                    .ok_or_else(|| invalid(&shown, "Invalid IPv6 URL"))?;
                let after = &bracketed[end + 1..];
                let port = after.split_once(':').map(|(_, p)| p);
                (Some(bracketed[..end].to_owned()), port)
            } else if hostport.matches(':').count() == 1 {
                let (h, p) = hostport.split_once(':').unwrap_or((hostport, ""));
                (Some(h.to_owned()), Some(p))
            } else {
                // oslo_utils.netutils.parse_host_port: no colon, or an unbracketed IPv6
                // address (two or more), is all host name.
                (Some(hostport.to_owned()), None)
            };
            let hostname = hostname.filter(|h| !h.is_empty());
            let port = match port_text {
                None | Some("") => None,
                Some(p) => Some(p.trim().parse::<u16>().map_err(|_| {
                    invalid(
                        &shown,
                        format_args!("invalid port {p:?} (expected 0 to 65535)"),
                    )
                })?),
            };
            if username.is_some() && password.is_some() {
                with_creds += 1;
            } else {
                without_creds += 1;
            }
            hosts.push(TransportHost {
                hostname,
                port,
                username,
                password,
            });
        }
        if with_creds > 0 && without_creds > 0 {
            tracing::warn!(
                url = %shown,
                "all hosts must be set with username/password or not at the same time"
            );
        }

        Ok(Self {
            scheme,
            virtual_host,
            hosts,
            query: parse_query(query_text),
        })
    }

    /// The scheme as written (lower-cased), such as `rabbit` or `kombu+memory`.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The driver name: the scheme up to any `+` (`kombu+memory` selects `kombu`).
    pub fn driver_name(&self) -> &str {
        self.scheme.split('+').next().unwrap_or_default()
    }

    /// The driver this URL selects.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidUrl`] for an unknown driver, listing the known schemes.
    pub fn driver_kind(&self) -> Result<DriverKind> {
        match self.driver_name() {
            "memory" | "fake" => Ok(DriverKind::Memory),
            "rabbit" | "kombu" => Ok(DriverKind::Rabbit),
            "kafka" => Ok(DriverKind::Kafka),
            other => Err(Error::new(
                ErrorKind::InvalidUrl,
                format!(
                    "unknown transport driver {other:?} in URL {}; known schemes: {}",
                    self,
                    KNOWN_SCHEMES.join(", ")
                ),
            )),
        }
    }

    /// The virtual host: `None` when the URL has no path.
    pub fn virtual_host(&self) -> Option<&str> {
        self.virtual_host.as_deref()
    }

    /// The hosts, in URL order.
    pub fn hosts(&self) -> &[TransportHost] {
        &self.hosts
    }

    /// The query parameters in order, repeated keys joined with `,`.
    pub fn query(&self) -> &[(String, String)] {
        &self.query
    }

    /// The value of query parameter `key`.
    pub fn query_value(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The URL with its passwords, as Python's `str(TransportURL)`. Never log it.
    pub fn to_string_with_password(&self) -> String {
        self.render(true)
    }

    fn render(&self, reveal: bool) -> String {
        let mut out = String::with_capacity(64);
        out.push_str(&self.scheme);
        out.push_str("://");
        for (i, h) in self.hosts.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            h.write_netloc(&mut out, reveal);
        }
        out.push('/');
        if let Some(vh) = self.virtual_host.as_deref().filter(|v| !v.is_empty()) {
            out.push_str(&quote(vh, QUOTE_PATH));
        }
        if !self.query.is_empty() {
            out.push('?');
            let pairs: Vec<String> = self
                .query
                .iter()
                .map(|(k, v)| format!("{}={}", quote_plus(k), quote_plus(v)))
                .collect();
            out.push_str(&pairs.join("&"));
        }
        out
    }
}

impl fmt::Display for TransportUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl fmt::Debug for TransportUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportUrl")
            .field("url", &self.render(false))
            .field("virtual_host", &self.virtual_host)
            .field("hosts", &self.hosts)
            .finish()
    }
}

impl std::str::FromStr for TransportUrl {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once(':')?;
    let mut chars = scheme.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first_ok && rest_ok).then_some((scheme, rest))
}

fn unquote(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn unquote_plus(s: &str) -> String {
    unquote(&s.replace('+', " "))
}

/// Python's `parse_qs` (blank values dropped) with repeated keys joined by `,`.
fn parse_query(q: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in q.split('&') {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        if v.is_empty() {
            continue;
        }
        let (k, v) = (unquote_plus(k), unquote_plus(v));
        match out.iter_mut().find(|(ek, _)| *ek == k) {
            Some((_, existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            None => out.push((k, v)),
        }
    }
    out
}

/// Python `quote(s, safe='')`: only letters, digits and `_.-~` stay as they are.
const QUOTE_ALL: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~');
/// Python `quote(s)` (`safe='/'`).
const QUOTE_PATH: &AsciiSet = &QUOTE_ALL.remove(b'/');

fn quote(s: &str, set: &'static AsciiSet) -> String {
    utf8_percent_encode(s, set).to_string()
}

fn quote_plus(s: &str) -> String {
    s.split(' ')
        .map(|part| quote(part, QUOTE_ALL))
        .collect::<Vec<_>>()
        .join("+")
}

/// Masks the credentials of a URL that may not parse, for error messages: everything between
/// `://` and the last `@` (a password may hold an unencoded `/`, `?`, `#` or `,`, so the
/// netloc cannot be trusted to end where a parser thinks).
pub(crate) fn mask_password_in_raw(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(url: &str) -> TransportUrl {
        TransportUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn host(
        h: Option<&str>,
        port: Option<u16>,
        user: Option<&str>,
        pass: Option<&str>,
    ) -> TransportHost {
        TransportHost {
            hostname: h.map(str::to_owned),
            port,
            username: user.map(str::to_owned),
            password: pass.map(Secret::new),
        }
    }

    /// The cases of oslo's `tests/test_urls.py::TestParseURL` and the reference table.
    #[test]
    fn parse_table() {
        let cases: Vec<(&str, Option<&str>, Vec<TransportHost>)> = vec![
            ("rabbit://", None, vec![]),
            ("rabbit://h", None, vec![host(Some("h"), None, None, None)]),
            (
                "rabbit://h/",
                Some(""),
                vec![host(Some("h"), None, None, None)],
            ),
            (
                "rabbit://h//",
                Some("/"),
                vec![host(Some("h"), None, None, None)],
            ),
            (
                "rabbit://h/%2F",
                Some("/"),
                vec![host(Some("h"), None, None, None)],
            ),
            (
                "rabbit://h/foo",
                Some("foo"),
                vec![host(Some("h"), None, None, None)],
            ),
            (
                "rabbit://h:10",
                None,
                vec![host(Some("h"), Some(10), None, None)],
            ),
            (
                "rabbit://u:p@h:5673/v",
                Some("v"),
                vec![host(Some("h"), Some(5673), Some("u"), Some("p"))],
            ),
            (
                "rabbit://u:p@h1:1,u2:p2@h2:2/vh",
                Some("vh"),
                vec![
                    host(Some("h1"), Some(1), Some("u"), Some("p")),
                    host(Some("h2"), Some(2), Some("u2"), Some("p2")),
                ],
            ),
            (
                "rabbit://us%40er:pa%3Ass@h/",
                Some(""),
                vec![host(Some("h"), None, Some("us@er"), Some("pa:ss"))],
            ),
            (
                "rabbit://us@er:pass@h/",
                Some(""),
                vec![host(Some("h"), None, Some("us@er"), Some("pass"))],
            ),
            (
                "rabbit://[::1]:5672/",
                Some(""),
                vec![host(Some("::1"), Some(5672), None, None)],
            ),
            (
                "rabbit://u:p@[fe80::1]/",
                Some(""),
                vec![host(Some("fe80::1"), None, Some("u"), Some("p"))],
            ),
            (
                "rabbit://u@h/",
                Some(""),
                vec![host(Some("h"), None, Some("u"), None)],
            ),
            (
                "rabbit://:p@h/",
                Some(""),
                vec![host(Some("h"), None, Some(""), Some("p"))],
            ),
            ("rabbit:///", Some(""), vec![]),
            ("fake://", None, vec![]),
            ("kombu+memory:////", Some("/"), vec![]),
            (
                "rabbit://h1,,h2/",
                Some(""),
                vec![
                    host(Some("h1"), None, None, None),
                    host(Some("h2"), None, None, None),
                ],
            ),
        ];
        for (url, vhost, hosts) in cases {
            let parsed = p(url);
            assert_eq!(parsed.virtual_host(), vhost, "{url}");
            assert_eq!(parsed.hosts(), hosts.as_slice(), "{url}");
        }
    }

    #[test]
    fn query_joins_repeats_and_drops_blanks() {
        let u = p("rabbit://h/?a=1&a=2&b=3&c=&d");
        assert_eq!(
            u.query(),
            &[
                ("a".to_owned(), "1,2".to_owned()),
                ("b".to_owned(), "3".to_owned())
            ]
        );
        assert_eq!(p("rabbit://h/?x=a+b%2C").query_value("x"), Some("a b,"));
    }

    /// `str(TransportURL.parse(conf, url))` in Python 18.3.1, passwords masked on our side.
    #[test]
    fn format_table() {
        let cases = [
            ("rabbit://", "rabbit:///"),
            ("rabbit://h", "rabbit://h/"),
            ("rabbit://h/", "rabbit://h/"),
            ("rabbit://h//", "rabbit://h//"),
            ("rabbit://h/%2F", "rabbit://h//"),
            ("rabbit://h/foo", "rabbit://h/foo"),
            ("rabbit://u:p@h:5673/v", "rabbit://u:p@h:5673/v"),
            (
                "rabbit://u:p@h1:1,u2:p2@h2:2/vh",
                "rabbit://u:p@h1:1,u2:p2@h2:2/vh",
            ),
            ("rabbit://us%40er:pa%3Ass@h/", "rabbit://us%40er:pa%3Ass@h/"),
            ("rabbit://[::1]:5672/", "rabbit://[::1]:5672/"),
            ("rabbit://u:p@[fe80::1]/", "rabbit://u:p@[fe80::1]/"),
            ("rabbit://h/?a=1&a=2&b=3", "rabbit://h/?a=1%2C2&b=3"),
            ("rabbit://u@h/", "rabbit://u@h/"),
            ("rabbit://:p@h/", "rabbit://:p@h/"),
            ("rabbit://h/a%20b", "rabbit://h/a%20b"),
            ("kombu+memory:////", "kombu+memory:////"),
        ];
        for (url, want) in cases {
            assert_eq!(p(url).to_string_with_password(), want, "{url}");
        }
    }

    #[test]
    fn passwords_never_show() {
        let u = p("rabbit://user:Sup3rS3cret@h1,other:Sup3rS3cret@h2/vh");
        for shown in [u.to_string(), format!("{u:?}"), format!("{:?}", u.hosts())] {
            assert!(!shown.contains("Sup3rS3cret"), "{shown}");
        }
        assert_eq!(u.to_string(), "rabbit://user:***@h1,other:***@h2/vh");
        assert_eq!(u.hosts()[0].password().unwrap().expose(), "Sup3rS3cret");
    }

    #[test]
    fn errors_are_clear_and_masked() {
        let e = TransportUrl::parse("no-scheme-here").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidUrl);
        assert!(e.to_string().contains("No scheme specified"), "{e}");

        let e = TransportUrl::parse("rabbit://u:Sup3r@h:notaport/").unwrap_err();
        assert!(e.to_string().contains("invalid port"), "{e}");
        assert!(!e.to_string().contains("Sup3r"), "{e}");

        // Unencoded separators inside a password must not leak it either.
        for url in [
            "rabbit://nova:p#ss@rmq:5672/",
            "rabbit://nova:pa,ss@rmq/",
            "rabbit://nova:p/ss@rmq/",
        ] {
            let text = match TransportUrl::parse(url) {
                Ok(u) => u.to_string(),
                Err(e) => e.to_string(),
            };
            assert!(
                !text.contains("ss@") && !text.contains("p#") && !text.contains("pa,"),
                "{url}: {text}"
            );
        }

        let e = TransportUrl::parse("amqp1://u:Sup3r@h/").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("unknown transport driver \"amqp1\""),
            "{text}"
        );
        assert!(
            text.contains("rabbit, kombu, kafka, memory, fake"),
            "{text}"
        );
        assert!(!text.contains("Sup3r"), "{text}");

        let e = TransportUrl::parse("rabbit://[::1/").unwrap_err();
        assert!(e.to_string().contains("Invalid IPv6 URL"), "{e}");
    }

    #[test]
    fn driver_selection() {
        assert_eq!(p("memory://").driver_kind().unwrap(), DriverKind::Memory);
        assert_eq!(p("fake://").driver_kind().unwrap(), DriverKind::Memory);
        assert_eq!(p("rabbit://").driver_kind().unwrap(), DriverKind::Rabbit);
        assert_eq!(p("kombu://h").driver_kind().unwrap(), DriverKind::Rabbit);
        assert_eq!(
            p("kafka://k1:9092").driver_kind().unwrap(),
            DriverKind::Kafka
        );
        assert_eq!(p("kombu+memory:////").driver_name(), "kombu");
        assert_eq!(p("RABBIT://h/").scheme(), "rabbit");
    }

    #[test]
    fn raw_masking_handles_unparseable_urls() {
        assert_eq!(
            mask_password_in_raw("rabbit://u:pw@h:x,v:pw2@h2/vh?q=1"),
            "rabbit://***@h2/vh?q=1"
        );
        assert_eq!(mask_password_in_raw("rabbit://u:p#w@h/"), "rabbit://***@h/");
        assert_eq!(mask_password_in_raw("rabbit://h/"), "rabbit://h/");
        assert_eq!(mask_password_in_raw("junk"), "junk");
    }

    #[test]
    fn unbracketed_ipv6_hosts_parse_as_python() {
        assert_eq!(p("rabbit://::1/").hosts()[0].hostname(), Some("::1"));
        assert_eq!(p("rabbit://::1/").to_string(), "rabbit://[::1]/");
        assert_eq!(p("rabbit://fe80::1:5672/").hosts()[0].port(), None);
    }
}
