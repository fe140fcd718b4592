//! Field tables: the typed key-value maps of AMQP arguments and headers.

use super::FrameError;
use super::codec::{Reader, Writer};

/// A field table value. The variants follow RabbitMQ's type tags.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum FieldValue {
    /// `t`: a boolean.
    Bool(bool),
    /// `b`: a signed 8-bit integer.
    I8(i8),
    /// `B`: an unsigned 8-bit integer.
    U8(u8),
    /// `s`: a signed 16-bit integer.
    I16(i16),
    /// `u`: an unsigned 16-bit integer.
    U16(u16),
    /// `I`: a signed 32-bit integer.
    I32(i32),
    /// `i`: an unsigned 32-bit integer.
    U32(u32),
    /// `l`: a signed 64-bit integer.
    I64(i64),
    /// `f`: a 32-bit float.
    F32(f32),
    /// `d`: a 64-bit float.
    F64(f64),
    /// `D`: a decimal (scale, value).
    Decimal(u8, u32),
    /// `S`: a long string (bytes, usually UTF-8).
    LongStr(Vec<u8>),
    /// `A`: an array.
    Array(Vec<Self>),
    /// `T`: a timestamp, seconds since the epoch.
    Timestamp(u64),
    /// `F`: a nested table.
    Table(FieldTable),
    /// `V`: no value.
    Void,
    /// `x`: a byte array.
    Bytes(Vec<u8>),
}

impl FieldValue {
    /// A UTF-8 string value.
    pub fn str(s: &str) -> Self {
        Self::LongStr(s.as_bytes().to_vec())
    }

    /// The value as text, for string values.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::LongStr(b) | Self::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// An ordered field table: order is kept as given, which makes captures and tests stable.
///
/// # Examples
///
/// ```
/// use oslo_messaging_amqp::{FieldTable, FieldValue};
///
/// let mut args = FieldTable::new();
/// args.insert("x-queue-type", FieldValue::str("quorum"));
/// args.insert("x-expires", FieldValue::I32(1_800_000));
/// assert_eq!(args.get("x-queue-type").and_then(FieldValue::as_str), Some("quorum"));
/// assert_eq!(args.len(), 2);
/// assert!(args.get("missing").is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldTable(Vec<(String, FieldValue)>);

impl FieldTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `key` to `value`: in place when the key is there, else at the end.
    pub fn insert(&mut self, key: impl Into<String>, value: FieldValue) {
        let key = key.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.0.push((key, value)),
        }
    }

    /// The entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &FieldValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the table has no entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> Result<(), FrameError> {
        w.table_with(|w| self.encode_entries(w))
    }

    /// The entries without the length prefix (AMQPLAIN login responses).
    pub(crate) fn encode_entries(&self, w: &mut Writer<'_>) -> Result<(), FrameError> {
        for (k, v) in &self.0 {
            w.shortstr(k)?;
            v.encode(w)?;
        }
        Ok(())
    }

    pub(crate) fn decode(r: &mut Reader<'_>, depth: usize) -> Result<Self, FrameError> {
        if depth > MAX_NESTING {
            return Err(FrameError::Malformed(
                "field tables nested too deeply".into(),
            ));
        }
        let mut inner = r.nested()?;
        let mut t = Vec::new();
        while !inner.is_empty() {
            let k = inner.shortstr()?;
            let v = FieldValue::decode(&mut inner, depth + 1)?;
            t.push((k, v));
        }
        Ok(Self(t))
    }
}

impl From<Vec<(String, FieldValue)>> for FieldTable {
    fn from(entries: Vec<(String, FieldValue)>) -> Self {
        Self(entries)
    }
}

/// Compares with a list of entries, in order (handy in tests).
impl PartialEq<Vec<(String, FieldValue)>> for FieldTable {
    fn eq(&self, other: &Vec<(String, FieldValue)>) -> bool {
        &self.0 == other
    }
}

impl<K: Into<String>> FromIterator<(K, FieldValue)> for FieldTable {
    fn from_iter<I: IntoIterator<Item = (K, FieldValue)>>(iter: I) -> Self {
        Self(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

/// How deep tables and arrays may nest in what the broker sends.
const MAX_NESTING: usize = 64;

impl FieldValue {
    fn encode(&self, w: &mut Writer<'_>) -> Result<(), FrameError> {
        match self {
            Self::Bool(b) => {
                w.octet(b't');
                w.octet(u8::from(*b));
            }
            Self::I8(x) => {
                w.octet(b'b');
                w.bytes(&x.to_be_bytes());
            }
            Self::U8(x) => {
                w.octet(b'B');
                w.octet(*x);
            }
            Self::I16(x) => {
                w.octet(b's');
                w.bytes(&x.to_be_bytes());
            }
            Self::U16(x) => {
                w.octet(b'u');
                w.short(*x);
            }
            Self::I32(x) => {
                w.octet(b'I');
                w.bytes(&x.to_be_bytes());
            }
            Self::U32(x) => {
                w.octet(b'i');
                w.long(*x);
            }
            Self::I64(x) => {
                w.octet(b'l');
                w.bytes(&x.to_be_bytes());
            }
            Self::F32(x) => {
                w.octet(b'f');
                w.bytes(&x.to_be_bytes());
            }
            Self::F64(x) => {
                w.octet(b'd');
                w.bytes(&x.to_be_bytes());
            }
            Self::Decimal(scale, x) => {
                w.octet(b'D');
                w.octet(*scale);
                w.long(*x);
            }
            Self::LongStr(s) => {
                w.octet(b'S');
                w.longstr(s)?;
            }
            Self::Array(items) => {
                w.octet(b'A');
                w.table_with(|w| items.iter().try_for_each(|item| item.encode(w)))?;
            }
            Self::Timestamp(x) => {
                w.octet(b'T');
                w.longlong(*x);
            }
            Self::Table(t) => {
                w.octet(b'F');
                t.encode(w)?;
            }
            Self::Void => w.octet(b'V'),
            Self::Bytes(b) => {
                w.octet(b'x');
                w.longstr(b)?;
            }
        }
        Ok(())
    }

    fn decode(r: &mut Reader<'_>, depth: usize) -> Result<Self, FrameError> {
        Ok(match r.octet()? {
            b't' => Self::Bool(r.octet()? != 0),
            b'b' => Self::I8(i8::from_be_bytes(r.array()?)),
            b'B' => Self::U8(r.octet()?),
            b's' => Self::I16(i16::from_be_bytes(r.array()?)),
            b'u' => Self::U16(r.short()?),
            b'I' => Self::I32(i32::from_be_bytes(r.array()?)),
            b'i' => Self::U32(r.long()?),
            b'l' => Self::I64(i64::from_be_bytes(r.array()?)),
            b'f' => Self::F32(f32::from_be_bytes(r.array()?)),
            b'd' => Self::F64(f64::from_be_bytes(r.array()?)),
            b'D' => Self::Decimal(r.octet()?, r.long()?),
            b'S' => Self::LongStr(r.longstr()?),
            b'A' => {
                if depth > MAX_NESTING {
                    return Err(FrameError::Malformed(
                        "field arrays nested too deeply".into(),
                    ));
                }
                let mut inner = r.nested()?;
                let mut items = Vec::new();
                while !inner.is_empty() {
                    items.push(Self::decode(&mut inner, depth + 1)?);
                }
                Self::Array(items)
            }
            b'T' => Self::Timestamp(r.longlong()?),
            b'F' => Self::Table(FieldTable::decode(r, depth + 1)?),
            b'V' => Self::Void,
            b'x' => Self::Bytes(r.longstr()?),
            other => {
                return Err(FrameError::Malformed(format!(
                    "unknown field type {other:#04x}"
                )));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_refused() {
        let mut t = FieldTable::new();
        for _ in 0..100 {
            t = FieldTable::from(vec![("n".to_owned(), FieldValue::Table(t))]);
        }
        let mut buf = Vec::new();
        t.encode(&mut Writer::new(&mut buf)).unwrap();
        assert!(FieldTable::decode(&mut Reader::new(&buf), 0).is_err());
    }

    #[test]
    fn insert_replaces_in_place() {
        let mut t: FieldTable = [("a", FieldValue::I32(1)), ("b", FieldValue::I32(2))]
            .into_iter()
            .collect();
        t.insert("a", FieldValue::I32(3));
        let keys: Vec<&str> = t.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(t.get("a"), Some(&FieldValue::I32(3)));
    }
}
