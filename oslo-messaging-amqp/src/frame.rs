//! AMQP 0-9-1 framing, field tables, content headers and the methods oslo.messaging uses.
//!
//! Pure encoding and decoding: no I/O. Decoding never panics; truncated or malformed input is
//! a [`FrameError`].

use std::fmt;

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

// ===== field tables =====

/// A field table value. The variants follow RabbitMQ's type tags.
#[derive(Debug, Clone, PartialEq)]
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

/// An ordered field table (order is kept as given, which makes tests and captures stable).
pub type FieldTable = Vec<(String, FieldValue)>;

/// Looks a key up in a table.
///
/// ```
/// use oslo_messaging_amqp::{FieldValue, table_get};
///
/// let headers = vec![("compression".to_owned(), FieldValue::str("application/x-gzip"))];
/// let value = table_get(&headers, "compression").and_then(FieldValue::as_str);
/// assert_eq!(value, Some("application/x-gzip"));
/// assert!(table_get(&headers, "missing").is_none());
/// ```
pub fn table_get<'a>(t: &'a FieldTable, key: &str) -> Option<&'a FieldValue> {
    t.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

// ===== writer =====

/// Appends AMQP types to a buffer.
pub(crate) struct Writer<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>) -> Self {
        Self { buf }
    }

    pub(crate) fn octet(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn short(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn long(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn longlong(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn shortstr(&mut self, s: &str) -> Result<(), FrameError> {
        let len =
            u8::try_from(s.len()).map_err(|_| FrameError::TooLong("short string", s.len()))?;
        self.buf.push(len);
        self.buf.extend_from_slice(s.as_bytes());
        Ok(())
    }

    pub(crate) fn longstr(&mut self, b: &[u8]) -> Result<(), FrameError> {
        let len =
            u32::try_from(b.len()).map_err(|_| FrameError::TooLong("long string", b.len()))?;
        self.long(len);
        self.buf.extend_from_slice(b);
        Ok(())
    }

    /// Packs consecutive bit fields into one octet, first flag in the lowest bit.
    pub(crate) fn bits(&mut self, flags: &[bool]) {
        let mut v = 0u8;
        for (i, f) in flags.iter().enumerate() {
            if *f {
                v |= 1 << i;
            }
        }
        self.buf.push(v);
    }

    pub(crate) fn table(&mut self, t: &FieldTable) -> Result<(), FrameError> {
        let at = self.buf.len();
        self.long(0);
        for (k, v) in t {
            self.shortstr(k)?;
            self.value(v)?;
        }
        self.patch_len(at)
    }

    /// Writes the entries of a table without its length prefix (AMQPLAIN responses).
    pub(crate) fn table_entries(&mut self, t: &FieldTable) -> Result<(), FrameError> {
        for (k, v) in t {
            self.shortstr(k)?;
            self.value(v)?;
        }
        Ok(())
    }

    fn patch_len(&mut self, at: usize) -> Result<(), FrameError> {
        let len = self.buf.len() - at - 4;
        let len = u32::try_from(len).map_err(|_| FrameError::TooLong("field table", len))?;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    fn value(&mut self, v: &FieldValue) -> Result<(), FrameError> {
        match v {
            FieldValue::Bool(b) => {
                self.octet(b't');
                self.octet(u8::from(*b));
            }
            FieldValue::I8(x) => {
                self.octet(b'b');
                self.buf.extend_from_slice(&x.to_be_bytes());
            }
            FieldValue::U8(x) => {
                self.octet(b'B');
                self.octet(*x);
            }
            FieldValue::I16(x) => {
                self.octet(b's');
                self.buf.extend_from_slice(&x.to_be_bytes());
            }
            FieldValue::U16(x) => {
                self.octet(b'u');
                self.short(*x);
            }
            FieldValue::I32(x) => {
                self.octet(b'I');
                self.buf.extend_from_slice(&x.to_be_bytes());
            }
            FieldValue::U32(x) => {
                self.octet(b'i');
                self.long(*x);
            }
            FieldValue::I64(x) => {
                self.octet(b'l');
                self.buf.extend_from_slice(&x.to_be_bytes());
            }
            FieldValue::F32(x) => {
                self.octet(b'f');
                self.buf.extend_from_slice(&x.to_be_bytes());
            }
            FieldValue::F64(x) => {
                self.octet(b'd');
                self.buf.extend_from_slice(&x.to_be_bytes());
            }
            FieldValue::Decimal(scale, x) => {
                self.octet(b'D');
                self.octet(*scale);
                self.long(*x);
            }
            FieldValue::LongStr(s) => {
                self.octet(b'S');
                self.longstr(s)?;
            }
            FieldValue::Array(items) => {
                self.octet(b'A');
                let at = self.buf.len();
                self.long(0);
                for item in items {
                    self.value(item)?;
                }
                self.patch_len(at)?;
            }
            FieldValue::Timestamp(x) => {
                self.octet(b'T');
                self.longlong(*x);
            }
            FieldValue::Table(t) => {
                self.octet(b'F');
                self.table(t)?;
            }
            FieldValue::Void => self.octet(b'V'),
            FieldValue::Bytes(b) => {
                self.octet(b'x');
                self.longstr(b)?;
            }
        }
        Ok(())
    }
}

// ===== reader =====

/// Reads AMQP types from a slice; every read checks the length.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

const MAX_NESTING: usize = 64;

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end = self.pos.checked_add(n).ok_or(FrameError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(FrameError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn octet(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn short(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn long(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn longlong(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn shortstr(&mut self) -> Result<String, FrameError> {
        let len = usize::from(self.octet()?);
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    pub(crate) fn longstr(&mut self) -> Result<Vec<u8>, FrameError> {
        let len = self.long()? as usize;
        Ok(self.take(len)?.to_vec())
    }

    pub(crate) fn table(&mut self) -> Result<FieldTable, FrameError> {
        self.table_at(0)
    }

    fn table_at(&mut self, depth: usize) -> Result<FieldTable, FrameError> {
        if depth > MAX_NESTING {
            return Err(FrameError::Malformed(
                "field tables nested too deeply".into(),
            ));
        }
        let len = self.long()? as usize;
        let mut inner = Reader::new(self.take(len)?);
        let mut t = Vec::new();
        while inner.pos < inner.buf.len() {
            let k = inner.shortstr()?;
            let v = inner.value(depth + 1)?;
            t.push((k, v));
        }
        Ok(t)
    }

    fn value(&mut self, depth: usize) -> Result<FieldValue, FrameError> {
        Ok(match self.octet()? {
            b't' => FieldValue::Bool(self.octet()? != 0),
            b'b' => FieldValue::I8(i8::from_be_bytes(self.array()?)),
            b'B' => FieldValue::U8(self.octet()?),
            b's' => FieldValue::I16(i16::from_be_bytes(self.array()?)),
            b'u' => FieldValue::U16(self.short()?),
            b'I' => FieldValue::I32(i32::from_be_bytes(self.array()?)),
            b'i' => FieldValue::U32(self.long()?),
            b'l' => FieldValue::I64(i64::from_be_bytes(self.array()?)),
            b'f' => FieldValue::F32(f32::from_be_bytes(self.array()?)),
            b'd' => FieldValue::F64(f64::from_be_bytes(self.array()?)),
            b'D' => FieldValue::Decimal(self.octet()?, self.long()?),
            b'S' => FieldValue::LongStr(self.longstr()?),
            b'A' => {
                if depth > MAX_NESTING {
                    return Err(FrameError::Malformed(
                        "field arrays nested too deeply".into(),
                    ));
                }
                let len = self.long()? as usize;
                let mut inner = Reader::new(self.take(len)?);
                let mut items = Vec::new();
                while inner.pos < inner.buf.len() {
                    items.push(inner.value(depth + 1)?);
                }
                FieldValue::Array(items)
            }
            b'T' => FieldValue::Timestamp(self.longlong()?),
            b'F' => FieldValue::Table(self.table_at(depth + 1)?),
            b'V' => FieldValue::Void,
            b'x' => FieldValue::Bytes(self.longstr()?),
            other => {
                return Err(FrameError::Malformed(format!(
                    "unknown field type {other:#04x}"
                )));
            }
        })
    }

    fn bits(&mut self) -> Result<u8, FrameError> {
        self.octet()
    }

    fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos.min(self.buf.len())..]
    }
}

// ===== methods =====

/// The methods of AMQP 0-9-1 that this client sends or receives.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Method {
    ConnectionStart {
        server_properties: FieldTable,
        mechanisms: String,
        locales: String,
    },
    ConnectionStartOk {
        client_properties: FieldTable,
        mechanism: String,
        response: Vec<u8>,
        locale: String,
    },
    ConnectionSecure {
        challenge: Vec<u8>,
    },
    ConnectionSecureOk {
        response: Vec<u8>,
    },
    ConnectionTune {
        channel_max: u16,
        frame_max: u32,
        heartbeat: u16,
    },
    ConnectionTuneOk {
        channel_max: u16,
        frame_max: u32,
        heartbeat: u16,
    },
    ConnectionOpen {
        vhost: String,
    },
    ConnectionOpenOk,
    ConnectionClose {
        code: u16,
        text: String,
        class_id: u16,
        method_id: u16,
    },
    ConnectionCloseOk,
    ConnectionBlocked {
        reason: String,
    },
    ConnectionUnblocked,
    ChannelOpen,
    ChannelOpenOk,
    ChannelFlow {
        active: bool,
    },
    ChannelFlowOk {
        active: bool,
    },
    ChannelClose {
        code: u16,
        text: String,
        class_id: u16,
        method_id: u16,
    },
    ChannelCloseOk,
    ExchangeDeclare {
        exchange: String,
        kind: String,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        no_wait: bool,
        arguments: FieldTable,
    },
    ExchangeDeclareOk,
    ExchangeDelete {
        exchange: String,
        if_unused: bool,
        no_wait: bool,
    },
    ExchangeDeleteOk,
    QueueDeclare {
        queue: String,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        no_wait: bool,
        arguments: FieldTable,
    },
    QueueDeclareOk {
        queue: String,
        message_count: u32,
        consumer_count: u32,
    },
    QueueBind {
        queue: String,
        exchange: String,
        routing_key: String,
        no_wait: bool,
        arguments: FieldTable,
    },
    QueueBindOk,
    QueuePurge {
        queue: String,
        no_wait: bool,
    },
    QueuePurgeOk {
        message_count: u32,
    },
    QueueDelete {
        queue: String,
        if_unused: bool,
        if_empty: bool,
        no_wait: bool,
    },
    QueueDeleteOk {
        message_count: u32,
    },
    BasicQos {
        prefetch_size: u32,
        prefetch_count: u16,
        global: bool,
    },
    BasicQosOk,
    BasicConsume {
        queue: String,
        consumer_tag: String,
        no_local: bool,
        no_ack: bool,
        exclusive: bool,
        no_wait: bool,
        arguments: FieldTable,
    },
    BasicConsumeOk {
        consumer_tag: String,
    },
    BasicCancel {
        consumer_tag: String,
        no_wait: bool,
    },
    BasicCancelOk {
        consumer_tag: String,
    },
    BasicPublish {
        exchange: String,
        routing_key: String,
        mandatory: bool,
        immediate: bool,
    },
    BasicReturn {
        code: u16,
        text: String,
        exchange: String,
        routing_key: String,
    },
    BasicDeliver {
        consumer_tag: String,
        delivery_tag: u64,
        redelivered: bool,
        exchange: String,
        routing_key: String,
    },
    BasicAck {
        delivery_tag: u64,
        multiple: bool,
    },
    BasicReject {
        delivery_tag: u64,
        requeue: bool,
    },
    BasicNack {
        delivery_tag: u64,
        multiple: bool,
        requeue: bool,
    },
    ConfirmSelect {
        no_wait: bool,
    },
    ConfirmSelectOk,
}

impl Method {
    /// The (class, method) ids.
    pub(crate) fn id(&self) -> (u16, u16) {
        match self {
            Self::ConnectionStart { .. } => (10, 10),
            Self::ConnectionStartOk { .. } => (10, 11),
            Self::ConnectionSecure { .. } => (10, 20),
            Self::ConnectionSecureOk { .. } => (10, 21),
            Self::ConnectionTune { .. } => (10, 30),
            Self::ConnectionTuneOk { .. } => (10, 31),
            Self::ConnectionOpen { .. } => (10, 40),
            Self::ConnectionOpenOk => (10, 41),
            Self::ConnectionClose { .. } => (10, 50),
            Self::ConnectionCloseOk => (10, 51),
            Self::ConnectionBlocked { .. } => (10, 60),
            Self::ConnectionUnblocked => (10, 61),
            Self::ChannelOpen => (20, 10),
            Self::ChannelOpenOk => (20, 11),
            Self::ChannelFlow { .. } => (20, 20),
            Self::ChannelFlowOk { .. } => (20, 21),
            Self::ChannelClose { .. } => (20, 40),
            Self::ChannelCloseOk => (20, 41),
            Self::ExchangeDeclare { .. } => (40, 10),
            Self::ExchangeDeclareOk => (40, 11),
            Self::ExchangeDelete { .. } => (40, 20),
            Self::ExchangeDeleteOk => (40, 21),
            Self::QueueDeclare { .. } => (50, 10),
            Self::QueueDeclareOk { .. } => (50, 11),
            Self::QueueBind { .. } => (50, 20),
            Self::QueueBindOk => (50, 21),
            Self::QueuePurge { .. } => (50, 30),
            Self::QueuePurgeOk { .. } => (50, 31),
            Self::QueueDelete { .. } => (50, 40),
            Self::QueueDeleteOk { .. } => (50, 41),
            Self::BasicQos { .. } => (60, 10),
            Self::BasicQosOk => (60, 11),
            Self::BasicConsume { .. } => (60, 20),
            Self::BasicConsumeOk { .. } => (60, 21),
            Self::BasicCancel { .. } => (60, 30),
            Self::BasicCancelOk { .. } => (60, 31),
            Self::BasicPublish { .. } => (60, 40),
            Self::BasicReturn { .. } => (60, 50),
            Self::BasicDeliver { .. } => (60, 60),
            Self::BasicAck { .. } => (60, 80),
            Self::BasicReject { .. } => (60, 90),
            Self::BasicNack { .. } => (60, 120),
            Self::ConfirmSelect { .. } => (85, 10),
            Self::ConfirmSelectOk => (85, 11),
        }
    }

    /// Appends the method payload (ids and arguments).
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) -> Result<(), FrameError> {
        let (class, method) = self.id();
        let mut w = Writer::new(buf);
        w.short(class);
        w.short(method);
        match self {
            Self::ConnectionStart {
                server_properties,
                mechanisms,
                locales,
            } => {
                w.octet(0);
                w.octet(9);
                w.table(server_properties)?;
                w.longstr(mechanisms.as_bytes())?;
                w.longstr(locales.as_bytes())?;
            }
            Self::ConnectionStartOk {
                client_properties,
                mechanism,
                response,
                locale,
            } => {
                w.table(client_properties)?;
                w.shortstr(mechanism)?;
                w.longstr(response)?;
                w.shortstr(locale)?;
            }
            Self::ConnectionSecure { challenge } => w.longstr(challenge)?,
            Self::ConnectionSecureOk { response } => w.longstr(response)?,
            Self::ConnectionTune {
                channel_max,
                frame_max,
                heartbeat,
            }
            | Self::ConnectionTuneOk {
                channel_max,
                frame_max,
                heartbeat,
            } => {
                w.short(*channel_max);
                w.long(*frame_max);
                w.short(*heartbeat);
            }
            Self::ConnectionOpen { vhost } => {
                w.shortstr(vhost)?;
                w.shortstr("")?;
                w.bits(&[false]);
            }
            Self::ConnectionOpenOk => w.shortstr("")?,
            Self::ConnectionClose {
                code,
                text,
                class_id,
                method_id,
            }
            | Self::ChannelClose {
                code,
                text,
                class_id,
                method_id,
            } => {
                w.short(*code);
                w.shortstr(truncate(text, 255))?;
                w.short(*class_id);
                w.short(*method_id);
            }
            Self::ConnectionBlocked { reason } => w.shortstr(reason)?,
            Self::ConnectionCloseOk
            | Self::ConnectionUnblocked
            | Self::ChannelCloseOk
            | Self::ExchangeDeclareOk
            | Self::ExchangeDeleteOk
            | Self::QueueBindOk
            | Self::BasicQosOk
            | Self::ConfirmSelectOk => {}
            Self::ChannelOpen => w.shortstr("")?,
            Self::ChannelOpenOk => w.longstr(b"")?,
            Self::ChannelFlow { active } | Self::ChannelFlowOk { active } => w.bits(&[*active]),
            Self::ExchangeDeclare {
                exchange,
                kind,
                passive,
                durable,
                auto_delete,
                internal,
                no_wait,
                arguments,
            } => {
                w.short(0);
                w.shortstr(exchange)?;
                w.shortstr(kind)?;
                w.bits(&[*passive, *durable, *auto_delete, *internal, *no_wait]);
                w.table(arguments)?;
            }
            Self::ExchangeDelete {
                exchange,
                if_unused,
                no_wait,
            } => {
                w.short(0);
                w.shortstr(exchange)?;
                w.bits(&[*if_unused, *no_wait]);
            }
            Self::QueueDeclare {
                queue,
                passive,
                durable,
                exclusive,
                auto_delete,
                no_wait,
                arguments,
            } => {
                w.short(0);
                w.shortstr(queue)?;
                w.bits(&[*passive, *durable, *exclusive, *auto_delete, *no_wait]);
                w.table(arguments)?;
            }
            Self::QueueDeclareOk {
                queue,
                message_count,
                consumer_count,
            } => {
                w.shortstr(queue)?;
                w.long(*message_count);
                w.long(*consumer_count);
            }
            Self::QueueBind {
                queue,
                exchange,
                routing_key,
                no_wait,
                arguments,
            } => {
                w.short(0);
                w.shortstr(queue)?;
                w.shortstr(exchange)?;
                w.shortstr(routing_key)?;
                w.bits(&[*no_wait]);
                w.table(arguments)?;
            }
            Self::QueuePurge { queue, no_wait } => {
                w.short(0);
                w.shortstr(queue)?;
                w.bits(&[*no_wait]);
            }
            Self::QueuePurgeOk { message_count } | Self::QueueDeleteOk { message_count } => {
                w.long(*message_count);
            }
            Self::QueueDelete {
                queue,
                if_unused,
                if_empty,
                no_wait,
            } => {
                w.short(0);
                w.shortstr(queue)?;
                w.bits(&[*if_unused, *if_empty, *no_wait]);
            }
            Self::BasicQos {
                prefetch_size,
                prefetch_count,
                global,
            } => {
                w.long(*prefetch_size);
                w.short(*prefetch_count);
                w.bits(&[*global]);
            }
            Self::BasicConsume {
                queue,
                consumer_tag,
                no_local,
                no_ack,
                exclusive,
                no_wait,
                arguments,
            } => {
                w.short(0);
                w.shortstr(queue)?;
                w.shortstr(consumer_tag)?;
                w.bits(&[*no_local, *no_ack, *exclusive, *no_wait]);
                w.table(arguments)?;
            }
            Self::BasicConsumeOk { consumer_tag } | Self::BasicCancelOk { consumer_tag } => {
                w.shortstr(consumer_tag)?;
            }
            Self::BasicCancel {
                consumer_tag,
                no_wait,
            } => {
                w.shortstr(consumer_tag)?;
                w.bits(&[*no_wait]);
            }
            Self::BasicPublish {
                exchange,
                routing_key,
                mandatory,
                immediate,
            } => {
                w.short(0);
                w.shortstr(exchange)?;
                w.shortstr(routing_key)?;
                w.bits(&[*mandatory, *immediate]);
            }
            Self::BasicReturn {
                code,
                text,
                exchange,
                routing_key,
            } => {
                w.short(*code);
                w.shortstr(text)?;
                w.shortstr(exchange)?;
                w.shortstr(routing_key)?;
            }
            Self::BasicDeliver {
                consumer_tag,
                delivery_tag,
                redelivered,
                exchange,
                routing_key,
            } => {
                w.shortstr(consumer_tag)?;
                w.longlong(*delivery_tag);
                w.bits(&[*redelivered]);
                w.shortstr(exchange)?;
                w.shortstr(routing_key)?;
            }
            Self::BasicAck {
                delivery_tag,
                multiple,
            } => {
                w.longlong(*delivery_tag);
                w.bits(&[*multiple]);
            }
            Self::BasicReject {
                delivery_tag,
                requeue,
            } => {
                w.longlong(*delivery_tag);
                w.bits(&[*requeue]);
            }
            Self::BasicNack {
                delivery_tag,
                multiple,
                requeue,
            } => {
                w.longlong(*delivery_tag);
                w.bits(&[*multiple, *requeue]);
            }
            Self::ConfirmSelect { no_wait } => w.bits(&[*no_wait]),
        }
        Ok(())
    }

    /// Decodes a method frame's payload.
    pub(crate) fn decode(payload: &[u8]) -> Result<Self, FrameError> {
        let mut r = Reader::new(payload);
        let class = r.short()?;
        let method = r.short()?;
        let bit = |b: u8, i: u8| b & (1 << i) != 0;
        Ok(match (class, method) {
            (10, 10) => {
                let _major = r.octet()?;
                let _minor = r.octet()?;
                Self::ConnectionStart {
                    server_properties: r.table()?,
                    mechanisms: String::from_utf8_lossy(&r.longstr()?).into_owned(),
                    locales: String::from_utf8_lossy(&r.longstr()?).into_owned(),
                }
            }
            (10, 11) => Self::ConnectionStartOk {
                client_properties: r.table()?,
                mechanism: r.shortstr()?,
                response: r.longstr()?,
                locale: r.shortstr()?,
            },
            (10, 20) => Self::ConnectionSecure {
                challenge: r.longstr()?,
            },
            (10, 21) => Self::ConnectionSecureOk {
                response: r.longstr()?,
            },
            (10, 30) => Self::ConnectionTune {
                channel_max: r.short()?,
                frame_max: r.long()?,
                heartbeat: r.short()?,
            },
            (10, 31) => Self::ConnectionTuneOk {
                channel_max: r.short()?,
                frame_max: r.long()?,
                heartbeat: r.short()?,
            },
            (10, 40) => {
                let vhost = r.shortstr()?;
                let _ = r.shortstr()?;
                let _ = r.bits()?;
                Self::ConnectionOpen { vhost }
            }
            (10, 41) => Self::ConnectionOpenOk,
            (10, 50) => Self::ConnectionClose {
                code: r.short()?,
                text: r.shortstr()?,
                class_id: r.short()?,
                method_id: r.short()?,
            },
            (10, 51) => Self::ConnectionCloseOk,
            (10, 60) => Self::ConnectionBlocked {
                reason: r.shortstr()?,
            },
            (10, 61) => Self::ConnectionUnblocked,
            (20, 10) => Self::ChannelOpen,
            (20, 11) => Self::ChannelOpenOk,
            (20, 20) => Self::ChannelFlow {
                active: bit(r.bits()?, 0),
            },
            (20, 21) => Self::ChannelFlowOk {
                active: bit(r.bits()?, 0),
            },
            (20, 40) => Self::ChannelClose {
                code: r.short()?,
                text: r.shortstr()?,
                class_id: r.short()?,
                method_id: r.short()?,
            },
            (20, 41) => Self::ChannelCloseOk,
            (40, 10) => {
                let _ticket = r.short()?;
                let exchange = r.shortstr()?;
                let kind = r.shortstr()?;
                let b = r.bits()?;
                Self::ExchangeDeclare {
                    exchange,
                    kind,
                    passive: bit(b, 0),
                    durable: bit(b, 1),
                    auto_delete: bit(b, 2),
                    internal: bit(b, 3),
                    no_wait: bit(b, 4),
                    arguments: r.table()?,
                }
            }
            (40, 11) => Self::ExchangeDeclareOk,
            (40, 20) => {
                let _ticket = r.short()?;
                let exchange = r.shortstr()?;
                let b = r.bits()?;
                Self::ExchangeDelete {
                    exchange,
                    if_unused: bit(b, 0),
                    no_wait: bit(b, 1),
                }
            }
            (40, 21) => Self::ExchangeDeleteOk,
            (50, 10) => {
                let _ticket = r.short()?;
                let queue = r.shortstr()?;
                let b = r.bits()?;
                Self::QueueDeclare {
                    queue,
                    passive: bit(b, 0),
                    durable: bit(b, 1),
                    exclusive: bit(b, 2),
                    auto_delete: bit(b, 3),
                    no_wait: bit(b, 4),
                    arguments: r.table()?,
                }
            }
            (50, 11) => Self::QueueDeclareOk {
                queue: r.shortstr()?,
                message_count: r.long()?,
                consumer_count: r.long()?,
            },
            (50, 20) => {
                let _ticket = r.short()?;
                let queue = r.shortstr()?;
                let exchange = r.shortstr()?;
                let routing_key = r.shortstr()?;
                let b = r.bits()?;
                Self::QueueBind {
                    queue,
                    exchange,
                    routing_key,
                    no_wait: bit(b, 0),
                    arguments: r.table()?,
                }
            }
            (50, 21) => Self::QueueBindOk,
            (50, 30) => {
                let _ticket = r.short()?;
                let queue = r.shortstr()?;
                Self::QueuePurge {
                    queue,
                    no_wait: bit(r.bits()?, 0),
                }
            }
            (50, 31) => Self::QueuePurgeOk {
                message_count: r.long()?,
            },
            (50, 40) => {
                let _ticket = r.short()?;
                let queue = r.shortstr()?;
                let b = r.bits()?;
                Self::QueueDelete {
                    queue,
                    if_unused: bit(b, 0),
                    if_empty: bit(b, 1),
                    no_wait: bit(b, 2),
                }
            }
            (50, 41) => Self::QueueDeleteOk {
                message_count: r.long()?,
            },
            (60, 10) => Self::BasicQos {
                prefetch_size: r.long()?,
                prefetch_count: r.short()?,
                global: bit(r.bits()?, 0),
            },
            (60, 11) => Self::BasicQosOk,
            (60, 20) => {
                let _ticket = r.short()?;
                let queue = r.shortstr()?;
                let consumer_tag = r.shortstr()?;
                let b = r.bits()?;
                Self::BasicConsume {
                    queue,
                    consumer_tag,
                    no_local: bit(b, 0),
                    no_ack: bit(b, 1),
                    exclusive: bit(b, 2),
                    no_wait: bit(b, 3),
                    arguments: r.table()?,
                }
            }
            (60, 21) => Self::BasicConsumeOk {
                consumer_tag: r.shortstr()?,
            },
            (60, 30) => Self::BasicCancel {
                consumer_tag: r.shortstr()?,
                no_wait: bit(r.bits()?, 0),
            },
            (60, 31) => Self::BasicCancelOk {
                consumer_tag: r.shortstr()?,
            },
            (60, 40) => {
                let _ticket = r.short()?;
                let exchange = r.shortstr()?;
                let routing_key = r.shortstr()?;
                let b = r.bits()?;
                Self::BasicPublish {
                    exchange,
                    routing_key,
                    mandatory: bit(b, 0),
                    immediate: bit(b, 1),
                }
            }
            (60, 50) => Self::BasicReturn {
                code: r.short()?,
                text: r.shortstr()?,
                exchange: r.shortstr()?,
                routing_key: r.shortstr()?,
            },
            (60, 60) => Self::BasicDeliver {
                consumer_tag: r.shortstr()?,
                delivery_tag: r.longlong()?,
                redelivered: bit(r.bits()?, 0),
                exchange: r.shortstr()?,
                routing_key: r.shortstr()?,
            },
            (60, 80) => Self::BasicAck {
                delivery_tag: r.longlong()?,
                multiple: bit(r.bits()?, 0),
            },
            (60, 90) => Self::BasicReject {
                delivery_tag: r.longlong()?,
                requeue: bit(r.bits()?, 0),
            },
            (60, 120) => {
                let delivery_tag = r.longlong()?;
                let b = r.bits()?;
                Self::BasicNack {
                    delivery_tag,
                    multiple: bit(b, 0),
                    requeue: bit(b, 1),
                }
            }
            (85, 10) => Self::ConfirmSelect {
                no_wait: bit(r.bits()?, 0),
            },
            (85, 11) => Self::ConfirmSelectOk,
            (c, m) => return Err(FrameError::UnknownMethod(c, m)),
        })
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// ===== content =====

/// Basic-class message properties.
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
            w.table(h)?;
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
            p.headers = Some(r.table()?);
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
        let _ = r.rest();
        Ok(Self {
            class_id,
            body_size,
            properties,
        })
    }
}

// ===== frames =====

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

    fn round_trip(m: &Method) {
        let mut buf = Vec::new();
        write_method(&mut buf, 3, m).unwrap();
        let (f, used) = parse_frame(&buf, 0).unwrap().unwrap();
        assert_eq!(used, buf.len());
        assert_eq!((f.kind, f.channel), (FRAME_METHOD, 3));
        assert_eq!(&Method::decode(f.payload).unwrap(), m);
    }

    #[test]
    fn methods_round_trip() {
        let args: FieldTable = vec![
            ("x-expires".into(), FieldValue::I32(1_800_000)),
            ("x-queue-type".into(), FieldValue::str("quorum")),
            ("flag".into(), FieldValue::Bool(true)),
            (
                "nested".into(),
                FieldValue::Table(vec![(
                    "a".into(),
                    FieldValue::Array(vec![FieldValue::I64(-1), FieldValue::Void]),
                )]),
            ),
        ];
        for m in [
            Method::ConnectionStartOk {
                client_properties: args.clone(),
                mechanism: "PLAIN".into(),
                response: b"\0u\0p".to_vec(),
                locale: "en_US".into(),
            },
            Method::ConnectionTuneOk {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 60,
            },
            Method::ConnectionOpen { vhost: "/".into() },
            Method::ConnectionClose {
                code: 320,
                text: "CONNECTION_FORCED".into(),
                class_id: 0,
                method_id: 0,
            },
            Method::ConnectionBlocked {
                reason: "low on memory".into(),
            },
            Method::ExchangeDeclare {
                exchange: "openstack".into(),
                kind: "topic".into(),
                passive: false,
                durable: true,
                auto_delete: false,
                internal: false,
                no_wait: false,
                arguments: vec![],
            },
            Method::QueueDeclare {
                queue: "q".into(),
                passive: true,
                durable: false,
                exclusive: true,
                auto_delete: false,
                no_wait: false,
                arguments: args,
            },
            Method::QueueDeclareOk {
                queue: "q".into(),
                message_count: 7,
                consumer_count: 1,
            },
            Method::QueueBind {
                queue: "q".into(),
                exchange: "e".into(),
                routing_key: "k".into(),
                no_wait: false,
                arguments: vec![],
            },
            Method::QueueDelete {
                queue: "q".into(),
                if_unused: false,
                if_empty: true,
                no_wait: false,
            },
            Method::BasicQos {
                prefetch_size: 0,
                prefetch_count: 10,
                global: false,
            },
            Method::BasicConsume {
                queue: "q".into(),
                consumer_tag: "1".into(),
                no_local: false,
                no_ack: false,
                exclusive: false,
                no_wait: false,
                arguments: vec![("x-stream-offset".into(), FieldValue::str("last"))],
            },
            Method::BasicPublish {
                exchange: "".into(),
                routing_key: "reply_x".into(),
                mandatory: true,
                immediate: false,
            },
            Method::BasicReturn {
                code: 312,
                text: "NO_ROUTE".into(),
                exchange: "".into(),
                routing_key: "reply_x".into(),
            },
            Method::BasicDeliver {
                consumer_tag: "1".into(),
                delivery_tag: u64::MAX,
                redelivered: true,
                exchange: "openstack".into(),
                routing_key: "t".into(),
            },
            Method::BasicNack {
                delivery_tag: 9,
                multiple: true,
                requeue: false,
            },
            Method::ConfirmSelect { no_wait: false },
            Method::ChannelClose {
                code: 406,
                text: "PRECONDITION_FAILED".into(),
                class_id: 50,
                method_id: 10,
            },
        ] {
            round_trip(&m);
        }
    }

    #[test]
    fn publish_splits_the_body_by_frame_max() {
        let props = Properties {
            content_type: Some("application/json".into()),
            content_encoding: Some("utf-8".into()),
            headers: Some(vec![]),
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
                arguments: vec![(
                    "a".into(),
                    FieldValue::Table(vec![("b".into(), FieldValue::str("c"))]),
                )],
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

    #[test]
    fn deep_nesting_is_refused() {
        let mut t: FieldTable = vec![];
        for _ in 0..100 {
            t = vec![("n".into(), FieldValue::Table(t))];
        }
        let mut buf = Vec::new();
        Writer::new(&mut buf).table(&t).unwrap();
        assert!(Reader::new(&buf).table().is_err());
    }

    #[test]
    fn long_short_strings_are_errors() {
        let mut buf = Vec::new();
        let long = "x".repeat(256);
        let e = write_method(
            &mut buf,
            1,
            &Method::QueueDelete {
                queue: long,
                if_unused: false,
                if_empty: false,
                no_wait: false,
            },
        )
        .unwrap_err();
        assert_eq!(e, FrameError::TooLong("short string", 256));
        assert!(buf.is_empty(), "a failed frame leaves nothing behind");
    }
}
