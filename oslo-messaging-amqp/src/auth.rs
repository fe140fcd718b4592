//! How to log in: the SASL mechanisms RabbitMQ offers.

use std::fmt;

use crate::frame::{FieldTable, FieldValue, FrameError, Writer};

/// How to log in. `Debug` never shows a password.
///
/// ```
/// use oslo_messaging_amqp::Login;
///
/// let login = Login::Plain { user: "nova".into(), password: "s3cret".into() };
/// assert!(!format!("{login:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Login {
    /// SASL PLAIN.
    Plain {
        /// The user name.
        user: String,
        /// The password (never shown by `Debug`).
        password: String,
    },
    /// RabbitMQ's AMQPLAIN (py-amqp's default).
    AmqPlain {
        /// The user name.
        user: String,
        /// The password (never shown by `Debug`).
        password: String,
    },
    /// SASL EXTERNAL: the TLS client certificate is the identity.
    External,
    /// RabbitMQ's RABBIT-CR-DEMO test mechanism (sends the password in clear).
    CrDemo {
        /// The user name.
        user: String,
        /// The password (never shown by `Debug`).
        password: String,
    },
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, user) = match self {
            Self::Plain { user, .. } => ("PLAIN", Some(user)),
            Self::AmqPlain { user, .. } => ("AMQPLAIN", Some(user)),
            Self::External => ("EXTERNAL", None),
            Self::CrDemo { user, .. } => ("RABBIT-CR-DEMO", Some(user)),
        };
        f.debug_struct("Login")
            .field("mechanism", &name)
            .field("user", &user)
            .finish_non_exhaustive()
    }
}

impl Login {
    pub(crate) fn mechanism(&self) -> &'static str {
        match self {
            Self::Plain { .. } => "PLAIN",
            Self::AmqPlain { .. } => "AMQPLAIN",
            Self::External => "EXTERNAL",
            Self::CrDemo { .. } => "RABBIT-CR-DEMO",
        }
    }

    pub(crate) fn response(&self) -> Result<Vec<u8>, FrameError> {
        Ok(match self {
            Self::Plain { user, password } => {
                let mut r = Vec::with_capacity(user.len() + password.len() + 2);
                r.push(0);
                r.extend_from_slice(user.as_bytes());
                r.push(0);
                r.extend_from_slice(password.as_bytes());
                r
            }
            Self::AmqPlain { user, password } => {
                let mut r = Vec::new();
                let entries: FieldTable = [
                    ("LOGIN", FieldValue::str(user)),
                    ("PASSWORD", FieldValue::str(password)),
                ]
                .into_iter()
                .collect();
                entries.encode_entries(&mut Writer::new(&mut r))?;
                r
            }
            Self::External => Vec::new(),
            Self::CrDemo { user, .. } => user.as_bytes().to_vec(),
        })
    }
}
