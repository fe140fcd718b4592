//! JSON exactly as Python's `json.dumps` writes it, and a reader as liberal as `json.loads`.
//!
//! Python's default encoder (used by oslo.messaging through `oslo_serialization.jsonutils` and by
//! kombu) separates items with `", "` and keys from values with `": "`, escapes every character
//! outside printable ASCII as `\uXXXX` (`ensure_ascii=True`) and writes floats with `repr()`.
//! [`PythonFormatter`] does the same for `serde_json`, so our bytes equal Python's for the same
//! content and key order.
//!
//! Two differences are unavoidable with `serde_json` values and are documented: a non-finite
//! float is written as `null` (Python writes `NaN`/`Infinity`), and integers beyond 64 bits are
//! read as floats. When reading, the bare tokens `NaN`, `Infinity` and `-Infinity` that Python
//! emits are accepted and read as `null`.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::Value;
use serde_json::ser::{CharEscape, Formatter};

/// A `serde_json` formatter producing Python `json.dumps` output.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire::json::PythonFormatter;
/// use serde::Serialize;
///
/// let mut out = Vec::new();
/// let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
/// serde_json::json!({"a": [1, 2.5], "é": 1e20}).serialize(&mut ser).unwrap();
/// assert_eq!(String::from_utf8(out).unwrap(), r#"{"a": [1, 2.5], "\u00e9": 1e+20}"#);
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn write_f64<W: ?Sized + Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        let mut buf = ryu::Buffer::new();
        write_python_float(writer, buf.format_finite(value))
    }

    fn write_f32<W: ?Sized + Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        let mut buf = ryu::Buffer::new();
        write_python_float(writer, buf.format_finite(value))
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        write_ascii_escaped(writer, fragment)
    }

    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        char_escape: CharEscape,
    ) -> io::Result<()> {
        let s: &[u8] = match char_escape {
            CharEscape::Quote => b"\\\"",
            CharEscape::ReverseSolidus => b"\\\\",
            CharEscape::Solidus => b"/",
            CharEscape::Backspace => b"\\b",
            CharEscape::FormFeed => b"\\f",
            CharEscape::LineFeed => b"\\n",
            CharEscape::CarriageReturn => b"\\r",
            CharEscape::Tab => b"\\t",
            CharEscape::AsciiControl(byte) => {
                return write_u_escape(writer, u16::from(byte));
            }
        };
        writer.write_all(s)
    }

    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_u_escape<W: ?Sized + Write>(writer: &mut W, unit: u16) -> io::Result<()> {
    writer.write_all(&u_escape(unit))
}

/// Writes `fragment` (which holds no quote, backslash or control character: serde_json escapes
/// those itself) with everything outside printable ASCII escaped, as `ensure_ascii=True` does.
fn write_ascii_escaped<W: ?Sized + Write>(writer: &mut W, fragment: &str) -> io::Result<()> {
    let bytes = fragment.as_bytes();
    // Most text is printable ASCII: copy it in one go.
    let Some(first) = bytes.iter().position(|&b| b >= 0x7f) else {
        return writer.write_all(bytes);
    };
    writer.write_all(&bytes[..first])?;
    let fragment = &fragment[first..];
    let bytes = fragment.as_bytes();
    let mut start = 0;
    for (i, ch) in fragment.char_indices() {
        if (' '..='~').contains(&ch) {
            continue;
        }
        if start < i {
            writer.write_all(&bytes[start..i])?;
        }
        let mut units = [0u16; 2];
        for unit in ch.encode_utf16(&mut units) {
            write_u_escape(writer, *unit)?;
        }
        start = i + ch.len_utf8();
    }
    if start < bytes.len() {
        writer.write_all(&bytes[start..])?;
    }
    Ok(())
}

/// Lays out the shortest round-trip digits that `ryu` found the way Python's `repr(float)` does:
/// positional notation when the decimal exponent is in `-4..16`, otherwise `d.ddde+XX`.
fn write_python_float<W: ?Sized + Write>(writer: &mut W, ryu_text: &str) -> io::Result<()> {
    let (negative, text) = match ryu_text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, ryu_text),
    };
    let (mantissa, exp) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    // Digits without the dot, and the position of the dot within them.
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits: Vec<u8> = Vec::with_capacity(int_part.len() + frac_part.len());
    digits.extend_from_slice(int_part.as_bytes());
    digits.extend_from_slice(frac_part.as_bytes());
    // Value = 0.DIGITS * 10^decpt
    let mut decpt = i32::try_from(int_part.len()).unwrap_or(i32::MAX) + exp;
    let leading_zeros = digits.iter().take_while(|&&d| d == b'0').count();
    if leading_zeros == digits.len() {
        return writer.write_all(if negative { b"-0.0" } else { b"0.0" });
    }
    digits.drain(..leading_zeros);
    decpt -= i32::try_from(leading_zeros).unwrap_or(0);
    while digits.last() == Some(&b'0') {
        digits.pop();
    }

    if negative {
        writer.write_all(b"-")?;
    }
    let n = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    if -4 < decpt && decpt <= 16 {
        if decpt <= 0 {
            writer.write_all(b"0.")?;
            for _ in 0..-decpt {
                writer.write_all(b"0")?;
            }
            writer.write_all(&digits)
        } else if decpt >= n {
            writer.write_all(&digits)?;
            for _ in 0..decpt - n {
                writer.write_all(b"0")?;
            }
            writer.write_all(b".0")
        } else {
            let split = usize::try_from(decpt).unwrap_or(0);
            writer.write_all(&digits[..split])?;
            writer.write_all(b".")?;
            writer.write_all(&digits[split..])
        }
    } else {
        writer.write_all(&digits[..1])?;
        if digits.len() > 1 {
            writer.write_all(b".")?;
            writer.write_all(&digits[1..])?;
        }
        let e = decpt - 1;
        let sign = if e < 0 { '-' } else { '+' };
        write!(writer, "e{sign}{:02}", e.unsigned_abs())
    }
}

/// Serializes `value` as Python's `json.dumps` would.
///
/// # Errors
///
/// Fails when `value`'s `Serialize` implementation fails (a map with non-string keys, say).
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire::json;
///
/// assert_eq!(json::to_string(&serde_json::json!({"k": [true, null]})).unwrap(), r#"{"k": [true, null]}"#);
/// ```
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let mut out = Vec::with_capacity(128);
    write(&mut out, value)?;
    // The formatter writes only ASCII.
    String::from_utf8(out).map_err(|e| serde::ser::Error::custom(e.to_string()))
}

/// Appends `value`, serialized as Python's `json.dumps` would, to `out`.
///
/// # Errors
///
/// Fails when `value`'s `Serialize` implementation fails.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire::json;
///
/// let mut out = b"x=".to_vec();
/// json::write(&mut out, &vec![1.0_f64, 0.1]).unwrap();
/// assert_eq!(out, b"x=[1.0, 0.1]");
/// ```
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), serde_json::Error> {
    let mut ser = serde_json::Serializer::with_formatter(out, PythonFormatter);
    value.serialize(&mut ser)
}

/// Bytes that cannot appear as they are inside a Python (`ensure_ascii`) JSON string.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i < 0x20 || i >= 0x7f || i == b'"' as usize || i == b'\\' as usize;
        i += 1;
    }
    t
};

/// The index of the first byte that needs escaping, checking eight bytes at a time while they
/// are all plain printable ASCII (a word-at-a-time test: any byte below 0x20, at or above 0x7f,
/// or equal to `"` or `\\`).
fn first_needing_escape(bytes: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let has_zero_byte = |v: u64| v.wrapping_sub(LO) & !v & HI != 0;
    let mut i = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let suspicious = x & HI != 0
            || x.wrapping_sub(LO * 0x20) & !x & HI != 0
            || has_zero_byte(x ^ (LO * u64::from(b'"')))
            || has_zero_byte(x ^ (LO * u64::from(b'\\')))
            || has_zero_byte(x ^ (LO * 0x7f));
        if suspicious {
            break;
        }
        i += 8;
    }
    bytes[i..]
        .iter()
        .position(|&b| NEEDS_ESCAPE[usize::from(b)])
        .map(|p| p + i)
}

/// Where the encoders write JSON text: as it is, or already escaped as the content of a JSON
/// string, which is what the 2.0 envelope's `oslo.message` holds. Writing an inner message
/// escaped in the first place spares the envelope a second pass over the text. Everything
/// written is printable ASCII (Python's `ensure_ascii`), so nesting changes only `"` and `\`.
#[derive(Debug)]
pub(crate) struct JsonOut<'a> {
    buf: &'a mut Vec<u8>,
    nested: bool,
}

impl<'a> JsonOut<'a> {
    /// JSON text as it is.
    pub(crate) fn plain(buf: &'a mut Vec<u8>) -> Self {
        Self { buf, nested: false }
    }

    /// JSON text escaped as the content of a JSON string (no quotes around it).
    pub(crate) fn nested(buf: &'a mut Vec<u8>) -> Self {
        Self { buf, nested: true }
    }

    /// Bytes that read the same at both levels: punctuation, numbers, literals; never `"` or
    /// `\`.
    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        debug_assert!(!bytes.iter().any(|b| matches!(b, b'"' | b'\\')));
        self.buf.extend_from_slice(bytes);
    }

    fn quote(&mut self) {
        if self.nested {
            self.buf.extend_from_slice(b"\\\"");
        } else {
            self.buf.push(b'"');
        }
    }

    /// An escape sequence of a JSON string (`\n`, `\u00e9`...).
    fn escape(&mut self, sequence: &[u8]) {
        if !self.nested {
            self.buf.extend_from_slice(sequence);
            return;
        }
        for &b in sequence {
            if matches!(b, b'"' | b'\\') {
                self.buf.push(b'\\');
            }
            self.buf.push(b);
        }
    }

    /// A quoted, Python-escaped JSON string.
    pub(crate) fn str(&mut self, s: &str) {
        self.buf.reserve(s.len() + 4);
        self.quote();
        let bytes = s.as_bytes();
        let mut start = 0;
        while let Some(offset) = first_needing_escape(&bytes[start..]) {
            let i = start + offset;
            self.buf.extend_from_slice(&bytes[start..i]);
            let b = bytes[i];
            if b < 0x80 {
                match b {
                    b'"' => self.escape(b"\\\""),
                    b'\\' => self.escape(b"\\\\"),
                    b'\n' => self.escape(b"\\n"),
                    b'\r' => self.escape(b"\\r"),
                    b'\t' => self.escape(b"\\t"),
                    0x08 => self.escape(b"\\b"),
                    0x0c => self.escape(b"\\f"),
                    _ => self.escape(&u_escape(u16::from(b))),
                }
                start = i + 1;
            } else {
                // A multi-byte character: escape it as UTF-16 units.
                let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    self.escape(&u_escape(*unit));
                }
                start = i + ch.len_utf8();
            }
        }
        self.buf.extend_from_slice(&bytes[start..]);
        self.quote();
    }

    /// A float as Python's `repr` writes it (`null` when not finite, as serde_json has it).
    pub(crate) fn float(&mut self, f: f64) {
        if f.is_finite() {
            let _ = write_python_float(self.buf, ryu::Buffer::new().format_finite(f));
        } else {
            self.buf.extend_from_slice(b"null");
        }
    }

    /// A JSON value as Python's `json.dumps` writes it (a direct walk, faster than going
    /// through `serde`'s serializer for the trees messages carry).
    pub(crate) fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.raw(b"null"),
            Value::Bool(true) => self.raw(b"true"),
            Value::Bool(false) => self.raw(b"false"),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    self.raw(itoa::Buffer::new().format(u).as_bytes());
                } else if let Some(i) = n.as_i64() {
                    self.raw(itoa::Buffer::new().format(i).as_bytes());
                } else {
                    self.float(n.as_f64().unwrap_or(f64::NAN));
                }
            }
            Value::String(s) => self.str(s),
            Value::Array(items) => {
                self.raw(b"[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.raw(b", ");
                    }
                    self.value(item);
                }
                self.raw(b"]");
            }
            Value::Object(map) => self.object(map),
        }
    }

    /// A JSON object as Python's `json.dumps` writes it.
    pub(crate) fn object(&mut self, map: &serde_json::Map<String, Value>) {
        self.raw(b"{");
        for (i, (k, item)) in map.iter().enumerate() {
            if i > 0 {
                self.raw(b", ");
            }
            self.str(k);
            self.raw(b": ");
            self.value(item);
        }
        self.raw(b"}");
    }
}

/// `\uXXXX` for one UTF-16 unit.
fn u_escape(unit: u16) -> [u8; 6] {
    [
        b'\\',
        b'u',
        HEX[usize::from(unit >> 12)],
        HEX[usize::from((unit >> 8) & 0xf)],
        HEX[usize::from((unit >> 4) & 0xf)],
        HEX[usize::from(unit & 0xf)],
    ]
}

/// Appends `s` as a quoted, Python-escaped JSON string.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    JsonOut::plain(out).str(s);
}

/// Appends a JSON value as Python's `json.dumps` writes it.
pub(crate) fn write_value(out: &mut Vec<u8>, v: &Value) {
    JsonOut::plain(out).value(v);
}

/// Appends a JSON object as Python's `json.dumps` writes it.
pub(crate) fn write_object(out: &mut Vec<u8>, map: &serde_json::Map<String, Value>) {
    JsonOut::plain(out).object(map);
}

/// Parses JSON, also accepting what Python's `json` accepts beyond the standard: the `NaN`,
/// `Infinity` and `-Infinity` tokens and numbers too large for a float (which Python reads as
/// infinite), all read as `null`, and escapes of lone UTF-16 surrogates such as `"\ud800"`
/// (read as U+FFFD, since a Rust string cannot hold them).
///
/// # Errors
///
/// Fails on anything else that is not JSON.
///
/// # Examples
///
/// ```
/// use oslo_messaging::wire::json;
///
/// let v = json::from_slice(br#"{"n": NaN, "big": 1e400}"#).unwrap();
/// assert!(v["n"].is_null() && v["big"].is_null(), "read as Python reads them: {v}");
/// ```
pub fn from_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let err = match serde_json::from_slice(bytes) {
        Ok(v) => return Ok(v),
        Err(err) => err,
    };
    let surrogates = replace_lone_surrogates(bytes);
    let fixed = surrogates.as_deref().unwrap_or(bytes);
    match replace_non_finite(fixed) {
        Some(both) => serde_json::from_slice(&both),
        None if surrogates.is_some() => serde_json::from_slice(fixed),
        None => Err(err),
    }
}

/// The UTF-16 unit of the `\uXXXX` escape at `bytes[i..]`, if there is one.
fn escape_at(bytes: &[u8], i: usize) -> Option<u16> {
    let hex = bytes.get(i..i + 6)?;
    if &hex[..2] != b"\\u" {
        return None;
    }
    u16::from_str_radix(std::str::from_utf8(&hex[2..]).ok()?, 16).ok()
}

/// Rewrites `\uXXXX` escapes of lone surrogates (a high one not followed by a low one, or a
/// low one alone) as `\ufffd`. Returns `None` when there is none, so the original error stands.
fn replace_lone_surrogates(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut replaced = false;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match escape_at(bytes, i) {
            Some(0xD800..=0xDBFF) => {
                if matches!(escape_at(bytes, i + 6), Some(0xDC00..=0xDFFF)) {
                    out.extend_from_slice(&bytes[i..i + 12]);
                    i += 12;
                } else {
                    out.extend_from_slice(b"\\ufffd");
                    replaced = true;
                    i += 6;
                }
            }
            Some(0xDC00..=0xDFFF) => {
                out.extend_from_slice(b"\\ufffd");
                replaced = true;
                i += 6;
            }
            // Any other escape (`\\` included) is copied whole, so its second byte is never
            // taken for the start of another escape.
            _ => {
                let end = (i + 2).min(bytes.len());
                out.extend_from_slice(&bytes[i..end]);
                i = end;
            }
        }
    }
    replaced.then_some(out)
}

/// The length of the JSON number at the start of `bytes`, if one is there.
fn number_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        .unwrap_or(bytes.len())
}

/// Rewrites, outside strings, the bare tokens `NaN`, `Infinity` and `-Infinity` and numbers
/// whose value is beyond a float's range as `null`. Returns `None` when there is none, so the
/// original error stands.
fn replace_non_finite(bytes: &[u8]) -> Option<Vec<u8>> {
    const TOKENS: [&[u8]; 3] = [b"-Infinity", b"Infinity", b"NaN"];
    let mut out = Vec::with_capacity(bytes.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut replaced = false;
    let mut i = 0;
    'outer: while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if b.is_ascii_digit()
            || (b == b'-' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            let n = number_len(&bytes[i..]);
            let token = &bytes[i..i + n];
            let huge = std::str::from_utf8(token)
                .ok()
                .and_then(|t| t.parse::<f64>().ok())
                .is_some_and(f64::is_infinite);
            if huge {
                out.extend_from_slice(b"null");
                replaced = true;
            } else {
                out.extend_from_slice(token);
            }
            i += n;
            continue;
        } else {
            for token in TOKENS {
                if bytes[i..].starts_with(token) {
                    out.extend_from_slice(b"null");
                    i += token.len();
                    replaced = true;
                    continue 'outer;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    replaced.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn float(v: f64) -> String {
        to_string(&v).unwrap()
    }

    /// Python's `json.loads` takes lone surrogate escapes; so do we, as U+FFFD. Pairs and
    /// escaped backslashes stay as they are.
    #[test]
    fn lone_surrogates_parse_as_replacement_characters() {
        assert_eq!(
            from_slice(br#"{"a": "x\ud800y", "b": "\udc00"}"#).unwrap(),
            json!({"a": "x\u{fffd}y", "b": "\u{fffd}"})
        );
        assert_eq!(
            from_slice(br#"["\ud83d\ude00", "\\ud800", NaN]"#).unwrap(),
            json!(["\u{1F600}", "\\ud800", null])
        );
        assert!(from_slice(br#"{"a": "\ud800"#).is_err());
    }

    /// Python reads a number beyond a float's range as infinite; we read it as `null`, as we
    /// read `Infinity`. Ordinary numbers are untouched.
    #[test]
    fn numbers_beyond_a_float_parse_as_null() {
        assert_eq!(
            from_slice(br#"{"a": 1e400, "b": -2E999, "c": [1.5, 10, -0.0], "s": "1e400"}"#)
                .unwrap(),
            json!({"a": null, "b": null, "c": [1.5, 10, -0.0], "s": "1e400"})
        );
    }

    /// Expected values are Python 3.11 `json.dumps(x)`.
    #[test]
    fn floats_match_python_repr() {
        let table: &[(f64, &str)] = &[
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123_456_789_012_345_680.0, "1.2345678901234568e+17"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.5e300, "1.5e+300"),
            (2.5e-300, "2.5e-300"),
            (std::f64::consts::PI, "3.141592653589793"),
            (1e22, "1e+22"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (-2.5, "-2.5"),
            (100.0, "100.0"),
            (123.456, "123.456"),
            (9_999_999_999_999_998.0, "9999999999999998.0"),
            (0.000_123, "0.000123"),
            (1.234e-5, "1.234e-05"),
        ];
        for (v, want) in table {
            assert_eq!(float(*v), *want, "formatting {v:e}");
        }
    }

    #[test]
    fn non_finite_floats_become_null() {
        assert_eq!(float(f64::NAN), "null");
        assert_eq!(float(f64::INFINITY), "null");
    }

    #[test]
    fn separators_and_nesting_match_python() {
        let v = json!({"a": [1, 2, "x"], "b": {}, "c": [], "d": null, "e": true});
        assert_eq!(
            to_string(&v).unwrap(),
            r#"{"a": [1, 2, "x"], "b": {}, "c": [], "d": null, "e": true}"#
        );
    }

    /// `json.dumps("é\u2028\U0001F600\x7f\x00/\"\\\n\t")` in Python 3.11.
    #[test]
    fn strings_are_ascii_escaped_like_python() {
        let s = "é\u{2028}\u{1F600}\u{7f}\u{0}/\"\\\n\t\u{8}\u{c}\r\u{1f}";
        assert_eq!(
            to_string(s).unwrap(),
            r#""\u00e9\u2028\ud83d\ude00\u007f\u0000/\"\\\n\t\b\f\r\u001f""#
        );
        assert_eq!(to_string("café").unwrap(), r#""caf\u00e9""#);
    }

    /// The direct walker and the serde formatter write the same bytes.
    #[test]
    fn value_walker_matches_the_formatter() {
        let v = json!({
            "s": "é\u{2028}\u{1F600}\u{7f}\u{0}/\"\\\n\t\u{8}\u{c}\r\u{1f} plain",
            "n": [0, -1, u64::MAX, i64::MIN, 0.1, 1e16, 1e-5, -0.0, 123.456],
            "nested": {"a": [], "b": {}, "c": [true, false, null]},
            "": "empty key"
        });
        let mut walked = Vec::new();
        write_value(&mut walked, &v);
        assert_eq!(String::from_utf8(walked).unwrap(), to_string(&v).unwrap());
    }

    /// Written nested (the envelope's inner message, in one pass) is written plain, then
    /// escaped as a JSON string: for every kind of value and escape.
    #[test]
    fn nested_output_is_the_plain_output_escaped_as_a_string() {
        let v = json!({
            "s": "é\u{2028}\u{1F600}\u{7f}\u{0}/\"\\\n\t\u{8}\u{c}\r\u{1f} plain \\\"",
            "n": [0, -1, u64::MAX, i64::MIN, 0.1, 1e16, 1e-5, -0.0, 123.456],
            "nested": {"a": [], "b": {}, "c": [true, false, null]},
            "k\"ey\\": "odd key"
        });
        let mut plain = Vec::new();
        write_value(&mut plain, &v);
        let mut nested = Vec::new();
        JsonOut::nested(&mut nested).value(&v);
        let mut want = Vec::new();
        write_str(&mut want, std::str::from_utf8(&plain).unwrap());
        assert_eq!(
            String::from_utf8(nested).unwrap(),
            std::str::from_utf8(&want[1..want.len() - 1]).unwrap()
        );
    }

    /// The word-at-a-time scan finds the same byte as a plain scan, wherever it is.
    #[test]
    fn escape_scan_matches_a_byte_scan() {
        for special in [0u8, 0x1f, b'"', b'\\', 0x7f, 0x80, 0xff, b' ', b'~', b'a'] {
            for pos in 0..20 {
                let mut bytes = vec![b'x'; 20];
                bytes[pos] = special;
                let want = bytes.iter().position(|&b| NEEDS_ESCAPE[usize::from(b)]);
                assert_eq!(
                    first_needing_escape(&bytes),
                    want,
                    "byte {special:#x} at {pos}"
                );
            }
        }
    }

    #[test]
    fn large_integers_are_exact() {
        assert_eq!(to_string(&json!(u64::MAX)).unwrap(), "18446744073709551615");
        assert_eq!(to_string(&json!(i64::MIN)).unwrap(), "-9223372036854775808");
    }

    #[test]
    fn reads_python_non_finite_tokens() {
        let v =
            from_slice(br#"{"a": NaN, "b": [Infinity, -Infinity], "c": "NaN Infinity"}"#).unwrap();
        assert_eq!(
            v,
            json!({"a": null, "b": [null, null], "c": "NaN Infinity"})
        );
    }

    #[test]
    fn reading_garbage_is_an_error() {
        assert!(from_slice(b"not json").is_err());
        assert!(from_slice(b"{\"a\": NaNx}").is_err());
        assert!(from_slice(b"").is_err());
    }

    #[test]
    fn escaped_quote_inside_string_does_not_confuse_token_scan() {
        let v = from_slice(br#"["a\"NaN", NaN]"#).unwrap();
        assert_eq!(v, json!(["a\"NaN", null]));
    }
}
