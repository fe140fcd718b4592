//! The INI dialect of oslo.config (`oslo_config/iniparser.py`).
//!
//! * `[section]` headers; group names other than `DEFAULT` are lower-cased.
//! * `key = value` or `key: value` (whichever separator comes first); key and value trimmed;
//!   a value wrapped in matching single or double quotes loses them.
//! * Lines starting with `#` or `;` are comments; blank lines end a value.
//! * A line starting with a space or tab continues the previous value (joined with `\n`).
//! * A key repeated in a section collects every value (multi-valued options use them all;
//!   others use the last).
//! * Dashes in keys read as underscores, as oslo.config's option `dest` names do.

use std::fmt;

/// A syntax error with its line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    line: usize,
    message: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// `(group, [(key, values)])`, in file order.
pub(crate) type Sections = Vec<(String, Vec<(String, Vec<String>)>)>;

pub(crate) fn parse(text: &str) -> Result<Sections, ParseError> {
    let mut sections: Sections = Vec::new();
    let mut current: Option<usize> = None;
    // The assignment being read: key and its lines so far.
    let mut pending: Option<(String, Vec<String>)> = None;

    let flush = |sections: &mut Sections,
                 current: Option<usize>,
                 pending: &mut Option<(String, Vec<String>)>,
                 line: usize|
     -> Result<(), ParseError> {
        let Some((key, lines)) = pending.take() else {
            return Ok(());
        };
        let Some(idx) = current else {
            return Err(ParseError {
                line,
                message: "option set before any [section] header",
            });
        };
        let value = lines.join("\n");
        let entries = &mut sections[idx].1;
        match entries.iter_mut().find(|(k, _)| *k == key) {
            Some((_, values)) => values.push(value),
            None => entries.push((key, vec![value])),
        }
        Ok(())
    };

    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = raw.trim_end();
        if line.is_empty() {
            flush(&mut sections, current, &mut pending, lineno)?;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            match &mut pending {
                Some((_, lines)) => lines.push(line.trim_start().to_owned()),
                None => {
                    return Err(ParseError {
                        line: lineno,
                        message: "unexpected continuation line",
                    });
                }
            }
            continue;
        }
        flush(&mut sections, current, &mut pending, lineno)?;
        if let Some(rest) = line.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(ParseError {
                    line: lineno,
                    message: "section header has no closing ']'",
                });
            };
            if name.is_empty() {
                return Err(ParseError {
                    line: lineno,
                    message: "section header has no name",
                });
            }
            let name = normalize_group(name);
            current = Some(match sections.iter().position(|(n, _)| *n == name) {
                Some(idx) => idx,
                None => {
                    sections.push((name, Vec::new()));
                    sections.len() - 1
                }
            });
        } else if line.starts_with(['#', ';']) {
            // A comment.
        } else {
            let colon = line.find(':');
            let equal = line.find('=');
            let split = match (colon, equal) {
                (None, None) => {
                    return Err(ParseError {
                        line: lineno,
                        message: "expected 'key = value'",
                    });
                }
                (None, Some(e)) => e,
                (Some(c), None) => c,
                (Some(c), Some(e)) => c.min(e),
            };
            let key = line[..split].trim().replace('-', "_");
            if key.is_empty() {
                return Err(ParseError {
                    line: lineno,
                    message: "empty key",
                });
            }
            let mut value = line[split + 1..].trim();
            if value.len() >= 2
                && (value.starts_with('"') || value.starts_with('\''))
                && value.as_bytes()[0] == value.as_bytes()[value.len() - 1]
            {
                value = &value[1..value.len() - 1];
            }
            pending = Some((key, vec![value.to_owned()]));
        }
    }
    flush(&mut sections, current, &mut pending, text.lines().count())?;
    Ok(sections)
}

/// Adds `more` (a later file) to `into`: every value is appended, so single-valued options see
/// the later file's value last and multi-valued ones collect both.
pub(crate) fn merge(into: &mut Sections, more: Sections) {
    for (group, entries) in more {
        let idx = match into.iter().position(|(g, _)| *g == group) {
            Some(i) => i,
            None => {
                into.push((group, Vec::new()));
                into.len() - 1
            }
        };
        for (key, values) in entries {
            let target = &mut into[idx].1;
            match target.iter_mut().find(|(k, _)| *k == key) {
                Some((_, existing)) => existing.extend(values),
                None => target.push((key, values)),
            }
        }
    }
}

fn lookup<'a>(sections: &'a Sections, group: &str, key: &str) -> Option<&'a str> {
    sections
        .iter()
        .find(|(g, _)| g == group)
        .and_then(|(_, e)| e.iter().find(|(k, _)| k == key))
        .and_then(|(_, v)| v.last())
        .map(String::as_str)
}

/// Default values of known options, by group and name, for substitutions the files do not set.
pub(crate) type Defaults<'a> = &'a dyn Fn(&str, &str) -> Option<String>;

/// oslo.config's template substitution: `$name` and `${name}` read option `name` of the same
/// group, else `[DEFAULT]`; `${group.name}` reads another group; `$$` and `\$` are a literal `$`;
/// an unclosed `${` stays as it is. Options the files do not set resolve to their defaults.
///
/// Errors never quote the value: it may be a password.
pub(crate) fn substitute(
    value: &str,
    group: &str,
    sections: &Sections,
    defaults: Defaults<'_>,
) -> Result<String, String> {
    substitute_depth(value, group, sections, defaults, 0)
}

fn substitute_depth(
    value: &str,
    group: &str,
    sections: &Sections,
    defaults: Defaults<'_>,
    depth: usize,
) -> Result<String, String> {
    if !value.contains('$') {
        return Ok(value.to_owned());
    }
    if depth > 8 {
        return Err("substitution nests too deeply (a reference loop?)".to_owned());
    }
    let is_ident_start = |c: char| c == '_' || c.is_ascii_alphabetic();
    let is_ident = |c: char| c == '_' || c == '.' || c.is_ascii_alphanumeric();
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find(['$', '\\']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("\\$").or_else(|| tail.strip_prefix("$$")) {
            out.push('$');
            rest = after;
            continue;
        }
        if let Some(after) = tail.strip_prefix('\\') {
            out.push('\\');
            rest = after;
            continue;
        }
        let after = &tail[1..];
        let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => {
                    // Python's safe_substitute leaves it alone.
                    out.push('$');
                    rest = after;
                    continue;
                }
            }
        } else if after.starts_with(is_ident_start) {
            let end = after.find(|c: char| !is_ident(c)).unwrap_or(after.len());
            (&after[..end], end)
        } else {
            // A lone `$` stays as it is.
            out.push('$');
            rest = after;
            continue;
        };
        let found = match name.split_once('.') {
            Some((g, k)) => {
                let g = normalize_group(g);
                lookup(sections, &g, k)
                    .map(str::to_owned)
                    .or_else(|| defaults(&g, k))
            }
            None => lookup(sections, group, name)
                .or_else(|| lookup(sections, "DEFAULT", name))
                .map(str::to_owned)
                .or_else(|| defaults(group, name))
                .or_else(|| defaults("DEFAULT", name)),
        };
        let Some(found) = found else {
            return Err(
                "a $ substitution names an option that is neither set nor known".to_owned(),
            );
        };
        out.push_str(&substitute_depth(
            &found,
            group,
            sections,
            defaults,
            depth + 1,
        )?);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

fn normalize_group(name: &str) -> String {
    if name == "DEFAULT" {
        name.to_owned()
    } else {
        name.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(s: &'a Sections, group: &str, key: &str) -> Option<&'a Vec<String>> {
        s.iter()
            .find(|(g, _)| g == group)
            .and_then(|(_, e)| e.iter().find(|(k, _)| k == key))
            .map(|(_, v)| v)
    }

    #[test]
    fn parses_oslo_dialect() {
        let text = "\
# leading comment
[DEFAULT]
transport_url = rabbit://u:p@h/
control_exchange: nova
quoted = \"a b\"
single = 'x'
mixed = a:b

[Oslo_Messaging_Notifications]
driver = messagingv2
driver = log
; another comment
routing-config = /etc/r.yaml
multi = first
  second
\tthird
";
        let s = parse(text).unwrap();
        assert_eq!(
            values(&s, "DEFAULT", "transport_url").unwrap(),
            &["rabbit://u:p@h/"]
        );
        assert_eq!(
            values(&s, "DEFAULT", "control_exchange").unwrap(),
            &["nova"]
        );
        assert_eq!(values(&s, "DEFAULT", "quoted").unwrap(), &["a b"]);
        assert_eq!(values(&s, "DEFAULT", "single").unwrap(), &["x"]);
        assert_eq!(values(&s, "DEFAULT", "mixed").unwrap(), &["a:b"]);
        let n = "oslo_messaging_notifications";
        assert_eq!(values(&s, n, "driver").unwrap(), &["messagingv2", "log"]);
        assert_eq!(values(&s, n, "routing_config").unwrap(), &["/etc/r.yaml"]);
        assert_eq!(values(&s, n, "multi").unwrap(), &["first\nsecond\nthird"]);
    }

    #[test]
    fn merge_appends_values_of_later_files() {
        let mut a = parse("[DEFAULT]\ns = one\nm = a\n").unwrap();
        merge(
            &mut a,
            parse("[DEFAULT]\ns = two\nm = b\n[x]\nk = v\n").unwrap(),
        );
        assert_eq!(values(&a, "DEFAULT", "s").unwrap(), &["one", "two"]);
        assert_eq!(values(&a, "DEFAULT", "m").unwrap(), &["a", "b"]);
        assert_eq!(values(&a, "x", "k").unwrap(), &["v"]);
    }

    #[test]
    fn substitution_follows_oslo_config() {
        let s = parse(
            "[DEFAULT]\nmy_ip = 10.0.0.5\nuser = nova\n\
             [oslo_messaging_rabbit]\nuser = rabbit-user\nport = 5672\n",
        )
        .unwrap();
        let defaults = |g: &str, k: &str| {
            (g == "DEFAULT" && k == "state_path").then(|| "/var/lib/nova".to_owned())
        };
        let sub = |v: &str, g: &str| substitute(v, g, &s, &defaults);
        assert_eq!(
            sub("rabbit://$user@$my_ip:5672/", "DEFAULT").unwrap(),
            "rabbit://nova@10.0.0.5:5672/"
        );
        assert_eq!(
            sub("$user", "oslo_messaging_rabbit").unwrap(),
            "rabbit-user"
        );
        assert_eq!(
            sub("${oslo_messaging_rabbit.port}x", "DEFAULT").unwrap(),
            "5672x"
        );
        assert_eq!(sub("a$$b \\$c $", "DEFAULT").unwrap(), "a$b $c $");
        assert_eq!(sub("no dollars", "DEFAULT").unwrap(), "no dollars");
        assert_eq!(
            sub("$state_path/ca.pem", "oslo_messaging_rabbit").unwrap(),
            "/var/lib/nova/ca.pem"
        );
        assert_eq!(
            sub("pa${ss", "DEFAULT").unwrap(),
            "pa${ss",
            "an unclosed brace stays"
        );
        let err = sub("pa$sword", "DEFAULT").unwrap_err();
        assert!(
            !err.contains("sword"),
            "errors never quote the value: {err}"
        );
        let looped = parse("[DEFAULT]\na = $b\nb = $a\n").unwrap();
        assert!(
            substitute("$a", "DEFAULT", &looped, &defaults)
                .unwrap_err()
                .contains("loop")
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let cases = [
            ("[DEFAULT\nx=1", "line 1: section header has no closing ']'"),
            ("[]\n", "line 1: section header has no name"),
            ("[DEFAULT]\njust words\n", "line 2: expected 'key = value'"),
            ("  indented\n", "line 1: unexpected continuation line"),
            ("x = 1\n", "option set before any [section] header"),
            ("[DEFAULT]\n= 1\n", "line 2: empty key"),
            (
                "[DEFAULT]\nx = 1\n\n y\n",
                "line 4: unexpected continuation line",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
