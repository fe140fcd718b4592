//! Content headers: a message's size and its basic-class properties.

use super::codec::{Reader, Writer};
use super::{FieldTable, FrameError};

/// Basic-class message properties: the fourteen of AMQP 0-9-1 (the protocol is final, so this
/// struct is complete and can be built with struct syntax).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    /// MIME type of the body, such as `application/json`.
    pub content_type: Option<String>,
    /// Encoding of the body, such as `utf-8`.
    pub content_encoding: Option<String>,
    /// Application headers.
    pub headers: Option<FieldTable>,
    /// 1 transient, 2 persistent.
    pub delivery_mode: Option<u8>,
    /// Priority, 0 to 9.
    pub priority: Option<u8>,
    /// Correlation id, for replies.
    pub correlation_id: Option<String>,
    /// Queue to reply to.
    pub reply_to: Option<String>,
    /// Per-message TTL in milliseconds, as text.
    pub expiration: Option<String>,
    /// Application message id.
    pub message_id: Option<String>,
    /// Seconds since the epoch.
    pub timestamp: Option<u64>,
    /// The message type (AMQP's `type`).
    pub kind: Option<String>,
    /// The user the broker checks the publisher against.
    pub user_id: Option<String>,
    /// The publishing application.
    pub app_id: Option<String>,
    /// Deprecated by AMQP; carried as is.
    pub cluster_id: Option<String>,
}

impl Properties {
    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> Result<(), FrameError> {
        let flags: [bool; 14] = [
            self.content_type.is_some(),
            self.content_encoding.is_some(),
            self.headers.is_some(),
            self.delivery_mode.is_some(),
            self.priority.is_some(),
            self.correlation_id.is_some(),
            self.reply_to.is_some(),
            self.expiration.is_some(),
            self.message_id.is_some(),
            self.timestamp.is_some(),
            self.kind.is_some(),
            self.user_id.is_some(),
            self.app_id.is_some(),
            self.cluster_id.is_some(),
        ];
        let mut word = 0u16;
        for (i, set) in flags.iter().enumerate() {
            if *set {
                word |= 1 << (15 - i);
            }
        }
        w.short(word);
        let opt_str = |w: &mut Writer<'_>, s: &Option<String>| -> Result<(), FrameError> {
            if let Some(s) = s {
                w.shortstr(s)?;
            }
            Ok(())
        };
        opt_str(w, &self.content_type)?;
        opt_str(w, &self.content_encoding)?;
        if let Some(h) = &self.headers {
            h.encode(w)?;
        }
        if let Some(v) = self.delivery_mode {
            w.octet(v);
        }
        if let Some(v) = self.priority {
            w.octet(v);
        }
        opt_str(w, &self.correlation_id)?;
        opt_str(w, &self.reply_to)?;
        opt_str(w, &self.expiration)?;
        opt_str(w, &self.message_id)?;
        if let Some(v) = self.timestamp {
            w.longlong(v);
        }
        opt_str(w, &self.kind)?;
        opt_str(w, &self.user_id)?;
        opt_str(w, &self.app_id)?;
        opt_str(w, &self.cluster_id)?;
        Ok(())
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        let word = r.short()?;
        // A set lowest bit means another flags word follows; none of its properties exist in
        // 0-9-1, so they are skipped.
        let mut more = word & 1 != 0;
        while more {
            more = r.short()? & 1 != 0;
        }
        let has = |i: u16| word & (1 << (15 - i)) != 0;
        let mut p = Self::default();
        if has(0) {
            p.content_type = Some(r.shortstr()?);
        }
        if has(1) {
            p.content_encoding = Some(r.shortstr()?);
        }
        if has(2) {
            p.headers = Some(FieldTable::decode(r, 0)?);
        }
        if has(3) {
            p.delivery_mode = Some(r.octet()?);
        }
        if has(4) {
            p.priority = Some(r.octet()?);
        }
        if has(5) {
            p.correlation_id = Some(r.shortstr()?);
        }
        if has(6) {
            p.reply_to = Some(r.shortstr()?);
        }
        if has(7) {
            p.expiration = Some(r.shortstr()?);
        }
        if has(8) {
            p.message_id = Some(r.shortstr()?);
        }
        if has(9) {
            p.timestamp = Some(r.longlong()?);
        }
        if has(10) {
            p.kind = Some(r.shortstr()?);
        }
        if has(11) {
            p.user_id = Some(r.shortstr()?);
        }
        if has(12) {
            p.app_id = Some(r.shortstr()?);
        }
        if has(13) {
            p.cluster_id = Some(r.shortstr()?);
        }
        Ok(p)
    }
}

/// A decoded content header.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ContentHeader {
    pub(crate) class_id: u16,
    pub(crate) body_size: u64,
    pub(crate) properties: Properties,
}

impl ContentHeader {
    pub(crate) fn decode(payload: &[u8]) -> Result<Self, FrameError> {
        let mut r = Reader::new(payload);
        let class_id = r.short()?;
        let _weight = r.short()?;
        let body_size = r.longlong()?;
        let properties = Properties::decode(&mut r)?;
        Ok(Self {
            class_id,
            body_size,
            properties,
        })
    }
}
