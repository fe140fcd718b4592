//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`), also replayed over their
//! corpora by this crate's tests on stable. Each takes an arbitrary message body, as any
//! client on the broker could publish it, and must not panic. The fast decoders must agree
//! with the reference ones wherever they give an answer, and remote errors must survive
//! encoding and decoding again unchanged.

use super::{
    RemoteError, WireError, decode_notification_general, decode_reply_general,
    decode_request_general, fast, unwrap_envelope,
};

/// Where the fast decoder gives an answer, it must be the reference decoder's.
fn agree<T: PartialEq + std::fmt::Debug>(
    what: &str,
    quick: Option<T>,
    reference: Result<T, WireError>,
) {
    if let Some(quick) = quick {
        assert_eq!(
            Ok(quick),
            reference,
            "fast and reference {what} decoders disagree"
        );
    }
}

/// The 2.0 envelope around a message.
pub fn envelope(body: &[u8]) {
    let _ = unwrap_envelope(body);
}

/// An RPC request.
///
/// # Panics
///
/// When the fast decoder and the reference one disagree.
pub fn request(body: &[u8]) {
    agree("request", fast::request(body), decode_request_general(body));
}

/// A reply (result, failure, ending).
///
/// # Panics
///
/// When the fast decoder and the reference one disagree.
pub fn reply(body: &[u8]) {
    agree("reply", fast::reply(body), decode_reply_general(body));
}

/// A notification, enveloped (v2) or raw (v1).
///
/// # Panics
///
/// When the fast decoder and the reference one disagree.
pub fn notification(body: &[u8]) {
    agree(
        "notification",
        fast::notification(body),
        decode_notification_general(body),
    );
}

/// A remote error's failure JSON (class, module, message, traceback, args, kwargs).
///
/// # Panics
///
/// When a decoded failure does not survive encoding and decoding again unchanged.
pub fn remote_error(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(e) = RemoteError::from_json(text) else {
        return;
    };
    let once = e.to_json();
    let again = RemoteError::from_json(&once).expect("encoded failure JSON decodes");
    assert_eq!(again.to_json(), once);
}

#[cfg(test)]
mod tests {
    use testkit::fuzz::replay;

    #[test]
    fn the_fuzz_corpora_replay_without_a_panic() {
        replay("wire_envelope", super::envelope);
        replay("wire_request", super::request);
        replay("wire_reply", super::reply);
        replay("wire_notification", super::notification);
        replay("wire_remote_error", super::remote_error);
    }
}
