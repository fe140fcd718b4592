//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`), also replayed over their
//! corpora by this crate's tests on stable. Each takes arbitrary bytes, as a broker (or an
//! attacker between it and us) could send them, and must neither panic nor allocate beyond
//! what the input announces and the limits allow. Where a decode succeeds, encoding the result
//! and decoding it again must give the same bytes.

use crate::frame::codec::Reader;
use crate::frame::{
    ContentHeader, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FieldTable, Method,
    Properties, Writer, parse_frame,
};

/// The frame size this client asks for: the decoders see at most this much per frame.
const FRAME_MAX: usize = 131_072;

/// A byte stream from the broker: split into frames, each decoded as its type says, until
/// the bytes end or a frame is malformed.
pub fn frames(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((frame, used))) = parse_frame(rest, FRAME_MAX) {
        match frame.kind {
            FRAME_METHOD => method(frame.payload),
            FRAME_HEADER => content_header(frame.payload),
            FRAME_BODY | FRAME_HEARTBEAT => {}
            _ => break,
        }
        rest = &rest[used..];
    }
}

/// A method frame's payload (class, method, arguments).
///
/// # Panics
///
/// When a decoded method does not survive encoding and decoding again unchanged.
pub fn method(payload: &[u8]) {
    let Ok(m) = Method::decode(payload) else {
        return;
    };
    let mut once = Vec::new();
    if m.encode(&mut once).is_err() {
        return;
    }
    let again = Method::decode(&once).expect("an encoded method decodes");
    let mut twice = Vec::new();
    again.encode(&mut twice).expect("a decoded method encodes");
    assert_eq!(once, twice, "{m:?}");
}

/// A content header frame's payload (class, weight, body size, properties).
///
/// # Panics
///
/// When decoded properties do not survive encoding and decoding again unchanged.
pub fn content_header(payload: &[u8]) {
    let Ok(h) = ContentHeader::decode(payload) else {
        return;
    };
    let mut once = Vec::new();
    if h.properties.encode(&mut Writer::new(&mut once)).is_err() {
        return;
    }
    let again = Properties::decode(&mut Reader::new(&once)).expect("encoded properties decode");
    let mut twice = Vec::new();
    again
        .encode(&mut Writer::new(&mut twice))
        .expect("decoded properties encode");
    assert_eq!(once, twice, "{h:?}");
}

/// A field table (headers, arguments, client and server properties).
///
/// # Panics
///
/// When a decoded table does not survive encoding and decoding again unchanged.
pub fn field_table(data: &[u8]) {
    let Ok(t) = FieldTable::decode(&mut Reader::new(data), 0) else {
        return;
    };
    let mut once = Vec::new();
    if t.encode(&mut Writer::new(&mut once)).is_err() {
        return;
    }
    let again = FieldTable::decode(&mut Reader::new(&once), 0).expect("an encoded table decodes");
    let mut twice = Vec::new();
    again
        .encode(&mut Writer::new(&mut twice))
        .expect("a decoded table encodes");
    assert_eq!(once, twice, "{t:?}");
}

#[cfg(test)]
mod tests {
    use testkit::fuzz::replay;

    #[test]
    fn the_fuzz_corpora_replay_without_a_panic() {
        replay("amqp_frames", super::frames);
        replay("amqp_method", super::method);
        replay("amqp_content_header", super::content_header);
        replay("amqp_field_table", super::field_table);
    }
}
