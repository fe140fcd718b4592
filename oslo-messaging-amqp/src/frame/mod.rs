//! AMQP 0-9-1 framing, field tables, content headers and the methods oslo.messaging uses.
//!
//! Pure encoding and decoding: no I/O. Decoding never panics; truncated or malformed input is
//! a [`FrameError`]. [`codec`] holds the primitive types, [`table`] field tables, [`method`]
//! the methods (one table entry each), [`content`] content headers; this module the frames.

use std::fmt;

pub(crate) mod codec;
mod content;
pub(crate) mod method;
mod table;

pub(crate) use codec::Writer;
pub(crate) use content::ContentHeader;
pub use content::Properties;
pub(crate) use method::Method;
pub use table::{FieldTable, FieldValue};

pub(crate) const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
pub(crate) const FRAME_METHOD: u8 = 1;
pub(crate) const FRAME_HEADER: u8 = 2;
pub(crate) const FRAME_BODY: u8 = 3;
pub(crate) const FRAME_HEARTBEAT: u8 = 8;
pub(crate) const FRAME_END: u8 = 0xCE;
/// Frame header (type, channel, size) plus the end octet.
pub(crate) const FRAME_OVERHEAD: usize = 8;
pub(crate) const CLASS_BASIC: u16 = 60;

/// Malformed input or an argument AMQP cannot carry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The input ended inside a value.
    Truncated,
    /// Structurally wrong input (bad end octet, unknown value type...).
    Malformed(String),
    /// A method this client does not know.
    UnknownMethod(u16, u16),
    /// A value too long for its AMQP type (a short string over 255 bytes, say).
    TooLong(&'static str, usize),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated AMQP data"),
            Self::Malformed(m) => write!(f, "malformed AMQP data: {m}"),
            Self::UnknownMethod(c, m) => write!(f, "unknown AMQP method {c}.{m}"),
            Self::TooLong(what, n) => write!(f, "{what} of {n} bytes is too long for AMQP"),
        }
    }
}

/// Appends one frame whose payload `fill` writes.
pub(crate) fn frame(
    buf: &mut Vec<u8>,
    kind: u8,
    channel: u16,
    fill: impl FnOnce(&mut Vec<u8>) -> Result<(), FrameError>,
) -> Result<(), FrameError> {
    let start = buf.len();
    buf.push(kind);
    buf.extend_from_slice(&channel.to_be_bytes());
    buf.extend_from_slice(&[0; 4]);
    let payload_start = buf.len();
    if let Err(e) = fill(buf) {
        buf.truncate(start);
        return Err(e);
    }
    let size = buf.len() - payload_start;
    let size_u32 = u32::try_from(size).map_err(|_| {
        buf.truncate(start);
        FrameError::TooLong("frame", size)
    })?;
    buf[payload_start - 4..payload_start].copy_from_slice(&size_u32.to_be_bytes());
    buf.push(FRAME_END);
    Ok(())
}

/// Appends a method frame.
pub(crate) fn write_method(
    buf: &mut Vec<u8>,
    channel: u16,
    method: &Method,
) -> Result<(), FrameError> {
    frame(buf, FRAME_METHOD, channel, |b| method.encode(b))
}

/// Appends a heartbeat frame.
pub(crate) fn write_heartbeat(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

/// Appends a `basic.publish` with its header and body frames, the body split by `frame_max`.
pub(crate) fn write_publish(
    buf: &mut Vec<u8>,
    channel: u16,
    method: &Method,
    properties: &Properties,
    body: &[u8],
    frame_max: usize,
) -> Result<(), FrameError> {
    let start = buf.len();
    let result = (|| {
        write_method(buf, channel, method)?;
        frame(buf, FRAME_HEADER, channel, |b| {
            let mut w = Writer::new(b);
            w.short(CLASS_BASIC);
            w.short(0);
            w.longlong(body.len() as u64);
            properties.encode(&mut w)
        })?;
        let chunk = frame_max.saturating_sub(FRAME_OVERHEAD).max(1);
        for part in body.chunks(chunk) {
            frame(buf, FRAME_BODY, channel, |b| {
                b.extend_from_slice(part);
                Ok(())
            })?;
        }
        Ok(())
    })();
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

/// A frame read from the wire, borrowing its payload.
#[derive(Debug, PartialEq)]
pub(crate) struct RawFrame<'a> {
    pub(crate) kind: u8,
    pub(crate) channel: u16,
    pub(crate) payload: &'a [u8],
}

/// Parses the first frame in `buf`: `Ok(None)` when more bytes are needed, else the frame and
/// the bytes it used. Frames over `frame_max` are an error (0: no limit).
pub(crate) fn parse_frame(
    buf: &[u8],
    frame_max: usize,
) -> Result<Option<(RawFrame<'_>, usize)>, FrameError> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let kind = buf[0];
    let channel = u16::from_be_bytes([buf[1], buf[2]]);
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    if frame_max > 0 && size + FRAME_OVERHEAD > frame_max {
        return Err(FrameError::Malformed(format!(
            "frame of {} bytes exceeds the negotiated frame_max {frame_max}",
            size + FRAME_OVERHEAD
        )));
    }
    let total = size + FRAME_OVERHEAD;
    if buf.len() < total {
        return Ok(None);
    }
    if buf[total - 1] != FRAME_END {
        return Err(FrameError::Malformed(format!(
            "bad frame end octet {:#04x}",
            buf[total - 1]
        )));
    }
    if !matches!(
        kind,
        FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
    ) {
        return Err(FrameError::Malformed(format!("unknown frame type {kind}")));
    }
    Ok(Some((
        RawFrame {
            kind,
            channel,
            payload: &buf[7..total - 1],
        },
        total,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_splits_the_body_by_frame_max() {
        let props = Properties {
            content_type: Some("application/json".into()),
            content_encoding: Some("utf-8".into()),
            headers: Some(FieldTable::new()),
            delivery_mode: Some(2),
            priority: Some(0),
            expiration: Some("60000".into()),
            ..Properties::default()
        };
        let method = Method::BasicPublish {
            exchange: "e".into(),
            routing_key: "k".into(),
            mandatory: false,
            immediate: false,
        };
        let body = vec![b'x'; 1000];
        let mut buf = Vec::new();
        write_publish(&mut buf, 1, &method, &props, &body, 300).unwrap();
        let mut rest = &buf[..];
        let mut kinds = Vec::new();
        let mut got_body = Vec::new();
        let mut header = None;
        while let Some((f, used)) = parse_frame(rest, 300).unwrap() {
            kinds.push(f.kind);
            match f.kind {
                FRAME_HEADER => header = Some(ContentHeader::decode(f.payload).unwrap()),
                FRAME_BODY => got_body.extend_from_slice(f.payload),
                _ => {}
            }
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        assert_eq!(
            kinds,
            [
                FRAME_METHOD,
                FRAME_HEADER,
                FRAME_BODY,
                FRAME_BODY,
                FRAME_BODY,
                FRAME_BODY
            ]
        );
        assert_eq!(got_body, body);
        let header = header.unwrap();
        assert_eq!(header.body_size, 1000);
        assert_eq!(header.properties, props);
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        // Every prefix of valid frames and arbitrary bytes.
        let mut valid = Vec::new();
        write_method(
            &mut valid,
            1,
            &Method::QueueDeclare {
                queue: "q".into(),
                passive: false,
                durable: false,
                exclusive: false,
                auto_delete: false,
                no_wait: false,
                arguments: [(
                    "a",
                    FieldValue::Table([("b", FieldValue::str("c"))].into_iter().collect()),
                )]
                .into_iter()
                .collect(),
            },
        )
        .unwrap();
        for n in 0..valid.len() {
            let _ = parse_frame(&valid[..n], 0);
            let _ = Method::decode(&valid[7..n.max(7)]);
            let _ = ContentHeader::decode(&valid[7..n.max(7)]);
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let len = (seed % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed & 0xff) as u8
                })
                .collect();
            let _ = Method::decode(&bytes);
            let _ = ContentHeader::decode(&bytes);
            let _ = parse_frame(&bytes, 4096);
        }
        assert_eq!(
            Method::decode(&[0, 99, 0, 1]),
            Err(FrameError::UnknownMethod(99, 1))
        );
        assert!(matches!(
            parse_frame(&[1, 0, 0, 0, 0, 0, 0, 0x00], 0),
            Err(FrameError::Malformed(_))
        ));
        assert!(parse_frame(&[1, 0, 0, 0xff, 0xff, 0xff, 0xff], 131_072).is_err());
    }
}
