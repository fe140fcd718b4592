//! One declaration per option: the struct field, its default, its text parser and its
//! description all come from the `options!` macro, so INI files, URL queries and the option
//! listing cannot disagree.

use super::SetError;
use crate::secret::Secret;

/// Describes one option, for listings and documentation.
///
/// # Examples
///
/// ```
/// use oslo_messaging::Config;
///
/// let rabbit = Config::list_opts()
///     .into_iter()
///     .find(|(group, _)| *group == "oslo_messaging_rabbit")
///     .unwrap();
/// let heartbeat = rabbit.1.iter().find(|o| o.name == "heartbeat_timeout_threshold").unwrap();
/// assert_eq!((heartbeat.kind, heartbeat.sample.as_str()), ("integer", "60"));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OptionInfo {
    /// The group, such as `oslo_messaging_rabbit`.
    pub group: &'static str,
    /// The option name.
    pub name: &'static str,
    /// The type and limits, in words.
    pub kind: &'static str,
    /// The default, as text.
    pub default: String,
    /// The default as a sample configuration file writes it (`<None>` when unset), as
    /// oslo-config-generator does.
    pub sample: String,
    /// What the option does.
    pub help: &'static str,
    /// Older names still accepted.
    pub deprecated_names: &'static [&'static str],
}

/// Limits of one option's value.
#[derive(Debug)]
pub(crate) struct Spec {
    pub(crate) group: &'static str,
    pub(crate) name: &'static str,
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
    pub(crate) choices: &'static [&'static str],
}

impl Spec {
    fn invalid(&self, value: &str, expected: impl std::fmt::Display) -> SetError {
        SetError::Invalid(format!(
            "[{}] {}: invalid value {value:?}: expected {expected}",
            self.group, self.name
        ))
    }

    fn check_range(&self, raw: &str, v: f64) -> Result<(), SetError> {
        if let Some(min) = self.min.filter(|&m| v < m) {
            return Err(self.invalid(raw, format_args!("a value of at least {min}")));
        }
        if let Some(max) = self.max.filter(|&m| v > m) {
            return Err(self.invalid(raw, format_args!("a value of at most {max}")));
        }
        Ok(())
    }
}

/// How one option type reads its text form.
pub(crate) trait OptValue: Sized {
    /// `values` holds every occurrence of the key in a file (single-valued options use the last).
    fn parse(values: &[String], spec: &Spec) -> Result<Self, SetError>;
    /// The value as text, for listings.
    fn describe(&self) -> String;
    /// The value as a config file would write it (for `$` substitution).
    fn text(&self) -> Option<String>;
    /// The value as oslo-config-generator writes a default in a sample file.
    fn sample(&self) -> String {
        self.text().unwrap_or_else(|| "<None>".to_owned())
    }
}

fn last(values: &[String]) -> &str {
    values.last().map_or("", String::as_str)
}

impl OptValue for bool {
    fn parse(values: &[String], spec: &Spec) -> Result<Self, SetError> {
        let raw = last(values);
        match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "on" | "yes" => Ok(true),
            "false" | "0" | "off" | "no" => Ok(false),
            _ => Err(spec.invalid(raw, "a boolean (true/false, yes/no, on/off, 1/0)")),
        }
    }

    fn describe(&self) -> String {
        self.to_string()
    }

    fn text(&self) -> Option<String> {
        Some(self.to_string())
    }
}

impl OptValue for i64 {
    fn parse(values: &[String], spec: &Spec) -> Result<Self, SetError> {
        let raw = last(values);
        let v: Self = raw
            .trim()
            .parse()
            .map_err(|_| spec.invalid(raw, "an integer"))?;
        // Option bounds are small; the conversion is exact for them.
        #[allow(clippy::cast_precision_loss)]
        spec.check_range(raw, v as f64)?;
        Ok(v)
    }

    fn describe(&self) -> String {
        self.to_string()
    }

    fn text(&self) -> Option<String> {
        Some(self.to_string())
    }
}

impl OptValue for f64 {
    fn parse(values: &[String], spec: &Spec) -> Result<Self, SetError> {
        let raw = last(values);
        let v: Self = raw
            .trim()
            .parse()
            .ok()
            .filter(|v: &Self| v.is_finite())
            .ok_or_else(|| spec.invalid(raw, "a number"))?;
        spec.check_range(raw, v)?;
        Ok(v)
    }

    fn describe(&self) -> String {
        format!("{self:?}")
    }

    fn text(&self) -> Option<String> {
        Some(self.to_string())
    }

    fn sample(&self) -> String {
        format!("{self:?}")
    }
}

impl OptValue for String {
    fn parse(values: &[String], spec: &Spec) -> Result<Self, SetError> {
        let raw = last(values);
        if !spec.choices.is_empty() && !spec.choices.contains(&raw) {
            return Err(spec.invalid(raw, format_args!("one of {}", spec.choices.join(", "))));
        }
        Ok(raw.to_owned())
    }

    fn describe(&self) -> String {
        format!("{self:?}")
    }

    fn text(&self) -> Option<String> {
        Some(self.clone())
    }
}

impl OptValue for Option<String> {
    fn parse(values: &[String], spec: &Spec) -> Result<Self, SetError> {
        let raw = String::parse(values, spec)?;
        Ok(Some(raw).filter(|s| !s.is_empty()))
    }

    fn describe(&self) -> String {
        self.as_ref()
            .map_or_else(|| "unset".to_owned(), |s| format!("{s:?}"))
    }

    fn text(&self) -> Option<String> {
        self.clone()
    }
}

impl OptValue for Secret {
    fn parse(values: &[String], _spec: &Spec) -> Result<Self, SetError> {
        Ok(Self::new(last(values)))
    }

    fn describe(&self) -> String {
        "(secret)".to_owned()
    }

    fn text(&self) -> Option<String> {
        Some(self.expose().to_owned())
    }
}

impl OptValue for Option<Secret> {
    fn parse(values: &[String], _spec: &Spec) -> Result<Self, SetError> {
        let raw = last(values);
        Ok((!raw.is_empty()).then(|| Secret::new(raw)))
    }

    fn describe(&self) -> String {
        self.as_ref()
            .map_or_else(|| "unset".to_owned(), |_| "(secret)".to_owned())
    }

    fn text(&self) -> Option<String> {
        self.as_ref().map(|s| s.expose().to_owned())
    }
}

/// A comma-separated list (oslo `ListOpt`).
impl OptValue for Vec<String> {
    fn parse(values: &[String], _spec: &Spec) -> Result<Self, SetError> {
        Ok(last(values)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect())
    }

    fn describe(&self) -> String {
        format!("{:?}", self.join(","))
    }

    fn text(&self) -> Option<String> {
        Some(self.join(","))
    }
}

/// A multi-valued string (oslo `MultiStrOpt`): each occurrence of the key is one item; the
/// option is "set" even when the only value is empty, which means "none".
impl OptValue for Option<Vec<String>> {
    fn parse(values: &[String], _spec: &Spec) -> Result<Self, SetError> {
        Ok(Some(
            values
                .iter()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }

    fn describe(&self) -> String {
        self.as_ref()
            .map_or_else(|| "unset".to_owned(), |v| format!("{:?}", v.join(",")))
    }

    fn text(&self) -> Option<String> {
        self.as_ref().map(|v| v.join(","))
    }

    fn sample(&self) -> String {
        self.as_ref().map(|v| v.join(",")).unwrap_or_default()
    }
}

macro_rules! options {
    (
        $(#[$smeta:meta])*
        pub struct $name:ident($group:literal) {
            $(
                $(#[doc = $doc:literal])*
                $field:ident : $ty:ty = $default:expr, $kind:literal
                $(, deprecated [$($dep:literal),* $(,)?])?
                $(, min $min:literal)?
                $(, max $max:literal)?
                $(, choices [$($choice:literal),* $(,)?])?
                ;
            )*
        }
    ) => {
        $(#[$smeta])*
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub struct $name {
            $(
                $(#[doc = $doc])*
                pub $field: $ty,
            )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        impl $name {
            /// The group name in configuration files.
            pub const GROUP: &'static str = $group;

            /// Every option of the group, with its type, default and help.
            pub fn options() -> Vec<$crate::config::OptionInfo> {
                let d = Self::default();
                vec![$(
                    $crate::config::OptionInfo {
                        group: $group,
                        name: stringify!($field),
                        kind: $kind,
                        default: $crate::config::opts::OptValue::describe(&d.$field),
                        sample: $crate::config::opts::OptValue::sample(&d.$field),
                        help: concat!($($doc),*).trim_ascii(),
                        deprecated_names: &[$($($dep),*)?],
                    },
                )*]
            }

            /// An option's value as a config file would write it, for `$` substitution.
            pub(crate) fn text_of(&self, name: &str) -> Option<String> {
                $(
                    if name == stringify!($field) {
                        return $crate::config::opts::OptValue::text(&self.$field);
                    }
                )*
                None
            }

            pub(crate) fn knows(name: &str) -> bool {
                $( name == stringify!($field) $( || [$($dep),*].contains(&name) )? || )* false
            }

            pub(crate) fn set(
                &mut self,
                name: &str,
                values: &[String],
            ) -> ::std::result::Result<(), $crate::config::SetError> {
                $(
                    if name == stringify!($field) $( || [$($dep),*].contains(&name) )? {
                        let min: Option<f64> = None $( .or(Some(f64::from($min))) )?;
                        let max: Option<f64> = None $( .or(Some(f64::from($max))) )?;
                        let spec = $crate::config::opts::Spec {
                            group: $group,
                            name: stringify!($field),
                            min,
                            max,
                            choices: &[$($($choice),*)?],
                        };
                        self.$field =
                            <$ty as $crate::config::opts::OptValue>::parse(values, &spec)?;
                        return Ok(());
                    }
                )*
                Err($crate::config::SetError::Unknown)
            }
        }
    };
}
