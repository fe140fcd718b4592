//! The `routing` notification driver's rules (oslo's `routing_config` YAML).

use crate::error::{Error, Result};

use super::Priority;

/// One driver's rules within a group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Rule {
    driver: String,
    accepted_events: Option<Vec<String>>,
    accepted_priorities: Option<Vec<String>>,
}

/// Routing groups: each maps driver names to the events and priorities they accept.
///
/// ```yaml
/// group_1:
///   messagingv2:
///     accepted_priorities: [info, error]
///   log:
///     accepted_events: ['compute.instance.*']
/// ```
///
/// A driver receives a notification when, in any group, every rule it has matches: events by
/// shell-style pattern (case-sensitive), priorities case-insensitively. A driver listed with no
/// rules receives everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RoutingConfig {
    rules: Vec<Rule>,
}

fn string_list(v: &serde_yaml_ng::Value, what: &str) -> Result<Vec<String>> {
    let seq = v
        .as_sequence()
        .ok_or_else(|| Error::config(format!("routing config: {what} must be a list")))?;
    seq.iter()
        .map(|item| match item {
            serde_yaml_ng::Value::String(s) => Ok(s.clone()),
            other => Err(Error::config(format!(
                "routing config: {what} holds {other:?}, not a string"
            ))),
        })
        .collect()
}

impl RoutingConfig {
    /// Parses the YAML text.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
            .map_err(|e| Error::config(format!("routing config is not valid YAML: {e}")))?;
        let mut rules = Vec::new();
        let groups = match &doc {
            serde_yaml_ng::Value::Null => return Ok(Self::default()),
            serde_yaml_ng::Value::Mapping(m) => m,
            _ => return Err(Error::config("routing config must be a mapping of groups")),
        };
        for (_group, drivers) in groups {
            let drivers = drivers.as_mapping().ok_or_else(|| {
                Error::config("routing config: each group must map driver names to rules")
            })?;
            for (driver, spec) in drivers {
                let driver = driver
                    .as_str()
                    .ok_or_else(|| Error::config("routing config: driver names must be strings"))?
                    .to_owned();
                let mut rule = Rule {
                    driver,
                    ..Rule::default()
                };
                if let Some(spec) = spec.as_mapping() {
                    for (k, v) in spec {
                        match k.as_str() {
                            Some("accepted_events") => {
                                rule.accepted_events = Some(string_list(v, "accepted_events")?)
                            }
                            Some("accepted_priorities") => {
                                rule.accepted_priorities =
                                    Some(string_list(v, "accepted_priorities")?);
                            }
                            _ => {}
                        }
                    }
                }
                rules.push(rule);
            }
        }
        Ok(Self { rules })
    }

    /// The driver names this notification goes to, without repeats, in file order.
    pub(crate) fn drivers_for(&self, event_type: &str, priority: Priority) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for rule in &self.rules {
            let events_ok = rule
                .accepted_events
                .as_ref()
                .is_none_or(|pats| pats.iter().any(|p| fnmatch(p, event_type)));
            let prio_ok = rule.accepted_priorities.as_ref().is_none_or(|pats| {
                pats.iter()
                    .any(|p| fnmatch(&p.to_lowercase(), priority.as_str()))
            });
            if events_ok && prio_ok && !out.contains(&rule.driver.as_str()) {
                out.push(&rule.driver);
            }
        }
        out
    }

    /// Every driver name the rules mention.
    pub(crate) fn driver_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.driver.as_str())
    }
}

/// Python's `fnmatch.fnmatchcase`: `*`, `?`, `[seq]` and `[!seq]`.
pub(crate) fn fnmatch(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn class_end(p: &[char], start: usize) -> Option<usize> {
        let mut j = start + 1;
        if p.get(j) == Some(&'!') {
            j += 1;
        }
        if p.get(j) == Some(&']') {
            j += 1;
        }
        while j < p.len() && p[j] != ']' {
            j += 1;
        }
        (j < p.len()).then_some(j)
    }
    fn class_matches(class: &[char], c: char) -> bool {
        let (negate, class) = match class.split_first() {
            Some(('!', rest)) => (true, rest),
            _ => (false, class),
        };
        let mut i = 0;
        let mut hit = false;
        while i < class.len() {
            if i + 2 < class.len() && class[i + 1] == '-' {
                hit |= class[i] <= c && c <= class[i + 2];
                i += 3;
            } else {
                hit |= class[i] == c;
                i += 1;
            }
        }
        hit != negate
    }
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => match class_end(p, 0) {
                Some(end) => {
                    !n.is_empty() && class_matches(&p[1..end], n[0]) && go(&p[end + 1..], &n[1..])
                }
                None => n.first() == Some(&'[') && go(&p[1..], &n[1..]),
            },
            Some(&c) => n.first() == Some(&c) && go(&p[1..], &n[1..]),
        }
    }
    go(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_like_python() {
        assert!(fnmatch("compute.instance.*", "compute.instance.create"));
        assert!(!fnmatch("compute.instance.*", "Compute.Instance.x"));
        assert!(fnmatch("*", ""));
        assert!(fnmatch("a?c", "abc"));
        assert!(fnmatch("[ab]x", "bx"));
        assert!(!fnmatch("[!ab]x", "bx"));
        assert!(fnmatch("[a-c]x", "cx"));
        assert!(fnmatch("[x", "[x"));
    }

    /// The classification Python's `_get_drivers_for_message` makes for the same file.
    #[test]
    fn drivers_for_follows_python() {
        let cfg = RoutingConfig::parse(
            "group_1:\n  test:\n    accepted_events: ['compute.instance.*', 'Foo.*']\n    accepted_priorities: [info, WARN]\n  noop: {}\n\
             group_2:\n  log:\n    accepted_priorities: ['error', 'crit*']\n",
        )
        .unwrap();
        assert_eq!(
            cfg.drivers_for("compute.instance.create", Priority::Info),
            ["test", "noop"]
        );
        assert_eq!(
            cfg.drivers_for("Compute.Instance.x", Priority::Info),
            ["noop"]
        );
        assert_eq!(cfg.drivers_for("Foo.bar", Priority::Warn), ["test", "noop"]);
        assert_eq!(cfg.drivers_for("x", Priority::Error), ["noop", "log"]);
        assert_eq!(cfg.drivers_for("x", Priority::Critical), ["noop", "log"]);
        assert_eq!(
            cfg.driver_names().collect::<Vec<_>>(),
            ["test", "noop", "log"]
        );
    }

    #[test]
    fn bad_documents_are_errors() {
        assert!(RoutingConfig::parse("- a\n- b\n").is_err());
        assert!(RoutingConfig::parse("g:\n  d:\n    accepted_events: 5\n").is_err());
        assert!(RoutingConfig::parse(":\n  - [").is_err());
        assert_eq!(RoutingConfig::parse("").unwrap(), RoutingConfig::default());
    }
}
