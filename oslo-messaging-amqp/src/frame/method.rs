//! The methods of AMQP 0-9-1 this client sends or receives, each written once: one entry of
//! the [`methods!`] table gives the variant, its class and method ids, and its arguments in
//! wire order, and the enum, [`Method::id`], [`Method::encode`] and [`Method::decode`] are
//! generated from it (the idea of amqprs' `impl_frame!`).

use super::codec::{Reader, Writer};
use super::{FieldTable, FrameError};

/// How one argument is written and read: `$kind` names an AMQP domain.
///
/// * `octet`, `short`, `long`, `longlong`: unsigned integers;
/// * `bit`: a flag; consecutive flags share octets;
/// * `shortstr`: a string of at most 255 bytes (longer is an error when writing);
/// * `reason`: a short string cut to 255 bytes when writing (close reasons);
/// * `longstr`: bytes; `text`: a long string read as UTF-8, lossily;
/// * `table`: a field table.
macro_rules! write_arg {
    ($w:ident, octet, $v:expr) => {
        $w.octet(*$v)
    };
    ($w:ident, short, $v:expr) => {
        $w.short(*$v)
    };
    ($w:ident, long, $v:expr) => {
        $w.long(*$v)
    };
    ($w:ident, longlong, $v:expr) => {
        $w.longlong(*$v)
    };
    ($w:ident, bit, $v:expr) => {
        $w.bit(*$v)
    };
    ($w:ident, shortstr, $v:expr) => {
        $w.shortstr($v)?
    };
    ($w:ident, reason, $v:expr) => {
        $w.shortstr(truncate($v, 255))?
    };
    ($w:ident, longstr, $v:expr) => {
        $w.longstr($v)?
    };
    ($w:ident, text, $v:expr) => {
        $w.longstr($v.as_bytes())?
    };
    ($w:ident, table, $v:expr) => {
        $v.encode(&mut $w)?
    };
}

macro_rules! read_arg {
    ($r:ident, octet) => {
        $r.octet()?
    };
    ($r:ident, short) => {
        $r.short()?
    };
    ($r:ident, long) => {
        $r.long()?
    };
    ($r:ident, longlong) => {
        $r.longlong()?
    };
    ($r:ident, bit) => {
        $r.bit()?
    };
    ($r:ident, shortstr) => {
        $r.shortstr()?
    };
    ($r:ident, reason) => {
        $r.shortstr()?
    };
    ($r:ident, longstr) => {
        $r.longstr()?
    };
    ($r:ident, text) => {
        String::from_utf8_lossy(&$r.longstr()?).into_owned()
    };
    ($r:ident, table) => {
        FieldTable::decode(&mut $r, 0)?
    };
}

/// Reserved arguments: written as their constant, read and dropped.
macro_rules! reserved {
    (write $w:ident, octet $v:literal) => {
        $w.octet($v)
    };
    (write $w:ident, short) => {
        $w.short(0)
    };
    (write $w:ident, shortstr) => {
        $w.shortstr("")?
    };
    (write $w:ident, longstr) => {
        $w.longstr(b"")?
    };
    (write $w:ident, bit) => {
        $w.bit(false)
    };
    (read $r:ident, octet $v:literal) => {
        let _ = $r.octet()?;
    };
    (read $r:ident, short) => {
        let _ = $r.short()?;
    };
    (read $r:ident, shortstr) => {
        let _ = $r.shortstr()?;
    };
    (read $r:ident, longstr) => {
        let _ = $r.longstr()?;
    };
    (read $r:ident, bit) => {
        let _ = $r.bit()?;
    };
}

/// The arguments of a method in wire order, comma-separated: `name: kind`, or a reserved one,
/// `[kind]` (with its constant for octets).
macro_rules! args {
    ($dir:ident $x:ident, $(,)?) => {};
    ($dir:ident $x:ident, [$($reserved:tt)*] $(, $($rest:tt)*)?) => {
        reserved!($dir $x, $($reserved)*);
        args!($dir $x, $($($rest)*)?);
    };
    (write $w:ident, $name:ident: $kind:ident $(, $($rest:tt)*)?) => {
        write_arg!($w, $kind, $name);
        args!(write $w, $($($rest)*)?);
    };
    (read $r:ident, $name:ident: $kind:ident $(, $($rest:tt)*)?) => {
        let $name = read_arg!($r, $kind);
        args!(read $r, $($($rest)*)?);
    };
}

/// The table: for each method, its docs, variant, class and method ids, its fields (with
/// their Rust types), and its arguments in wire order.
macro_rules! methods {
    ($(
        $(#[$doc:meta])*
        $variant:ident($class:literal, $method:literal) { $($field:ident: $ty:ty),* $(,)? }
            => [$($args:tt)*];
    )*) => {
        /// The methods of AMQP 0-9-1 that this client sends or receives.
        #[derive(Debug, Clone, PartialEq)]
        pub(crate) enum Method {
            $(
                $(#[$doc])*
                $variant { $($field: $ty),* },
            )*
        }

        impl Method {
            /// The (class, method) ids.
            pub(crate) fn id(&self) -> (u16, u16) {
                match self {
                    $(Self::$variant { .. } => ($class, $method),)*
                }
            }

            /// Appends the method payload (ids and arguments).
            pub(crate) fn encode(&self, buf: &mut Vec<u8>) -> Result<(), FrameError> {
                let mut w = Writer::new(buf);
                match self {
                    $(
                        Self::$variant { $($field),* } => {
                            w.short($class);
                            w.short($method);
                            args!(write w, $($args)*);
                        }
                    )*
                }
                Ok(())
            }

            /// Decodes a method frame's payload.
            pub(crate) fn decode(payload: &[u8]) -> Result<Self, FrameError> {
                let mut r = Reader::new(payload);
                let ids = (r.short()?, r.short()?);
                match ids {
                    $(
                        ($class, $method) => {
                            args!(read r, $($args)*);
                            Ok(Self::$variant { $($field),* })
                        }
                    )*
                    (c, m) => Err(FrameError::UnknownMethod(c, m)),
                }
            }
        }
    };
}

methods! {
    /// `connection.start`: the broker's first word.
    ConnectionStart(10, 10) { server_properties: FieldTable, mechanisms: String, locales: String }
        => [[octet 0], [octet 9], server_properties: table, mechanisms: text, locales: text];
    /// `connection.start-ok`: the login.
    ConnectionStartOk(10, 11) {
        client_properties: FieldTable, mechanism: String, response: Vec<u8>, locale: String,
    } => [client_properties: table, mechanism: shortstr, response: longstr, locale: shortstr];
    /// `connection.secure`: a login challenge.
    ConnectionSecure(10, 20) { challenge: Vec<u8> } => [challenge: longstr];
    /// `connection.secure-ok`: the answer to a challenge.
    ConnectionSecureOk(10, 21) { response: Vec<u8> } => [response: longstr];
    /// `connection.tune`: the broker's limits.
    ConnectionTune(10, 30) { channel_max: u16, frame_max: u32, heartbeat: u16 }
        => [channel_max: short, frame_max: long, heartbeat: short];
    /// `connection.tune-ok`: the limits agreed.
    ConnectionTuneOk(10, 31) { channel_max: u16, frame_max: u32, heartbeat: u16 }
        => [channel_max: short, frame_max: long, heartbeat: short];
    /// `connection.open`: the virtual host.
    ConnectionOpen(10, 40) { vhost: String } => [vhost: shortstr, [shortstr], [bit]];
    /// `connection.open-ok`.
    ConnectionOpenOk(10, 41) {} => [[shortstr]];
    /// `connection.close`: either side ends the connection, saying why.
    ConnectionClose(10, 50) { code: u16, text: String, class_id: u16, method_id: u16 }
        => [code: short, text: reason, class_id: short, method_id: short];
    /// `connection.close-ok`.
    ConnectionCloseOk(10, 51) {} => [];
    /// `connection.blocked`: the broker stops reading publishes (a resource alarm).
    ConnectionBlocked(10, 60) { reason: String } => [reason: shortstr];
    /// `connection.unblocked`.
    ConnectionUnblocked(10, 61) {} => [];
    /// `channel.open`.
    ChannelOpen(20, 10) {} => [[shortstr]];
    /// `channel.open-ok`.
    ChannelOpenOk(20, 11) {} => [[longstr]];
    /// `channel.flow`: pause or resume deliveries.
    ChannelFlow(20, 20) { active: bool } => [active: bit];
    /// `channel.flow-ok`.
    ChannelFlowOk(20, 21) { active: bool } => [active: bit];
    /// `channel.close`: either side ends the channel, saying why.
    ChannelClose(20, 40) { code: u16, text: String, class_id: u16, method_id: u16 }
        => [code: short, text: reason, class_id: short, method_id: short];
    /// `channel.close-ok`.
    ChannelCloseOk(20, 41) {} => [];
    /// `exchange.declare`.
    ExchangeDeclare(40, 10) {
        exchange: String, kind: String, passive: bool, durable: bool, auto_delete: bool,
        internal: bool, no_wait: bool, arguments: FieldTable,
    } => [
        [short], exchange: shortstr, kind: shortstr, passive: bit, durable: bit,
        auto_delete: bit, internal: bit, no_wait: bit, arguments: table,
    ];
    /// `exchange.declare-ok`.
    ExchangeDeclareOk(40, 11) {} => [];
    /// `exchange.delete`.
    ExchangeDelete(40, 20) { exchange: String, if_unused: bool, no_wait: bool }
        => [[short], exchange: shortstr, if_unused: bit, no_wait: bit];
    /// `exchange.delete-ok`.
    ExchangeDeleteOk(40, 21) {} => [];
    /// `queue.declare`.
    QueueDeclare(50, 10) {
        queue: String, passive: bool, durable: bool, exclusive: bool, auto_delete: bool,
        no_wait: bool, arguments: FieldTable,
    } => [
        [short], queue: shortstr, passive: bit, durable: bit, exclusive: bit, auto_delete: bit,
        no_wait: bit, arguments: table,
    ];
    /// `queue.declare-ok`: the queue's name (chosen by the broker when asked for none) and
    /// counts.
    QueueDeclareOk(50, 11) { queue: String, message_count: u32, consumer_count: u32 }
        => [queue: shortstr, message_count: long, consumer_count: long];
    /// `queue.bind`.
    QueueBind(50, 20) {
        queue: String, exchange: String, routing_key: String, no_wait: bool,
        arguments: FieldTable,
    } => [
        [short], queue: shortstr, exchange: shortstr, routing_key: shortstr, no_wait: bit,
        arguments: table,
    ];
    /// `queue.bind-ok`.
    QueueBindOk(50, 21) {} => [];
    /// `queue.purge`.
    QueuePurge(50, 30) { queue: String, no_wait: bool }
        => [[short], queue: shortstr, no_wait: bit];
    /// `queue.purge-ok`.
    QueuePurgeOk(50, 31) { message_count: u32 } => [message_count: long];
    /// `queue.delete`.
    QueueDelete(50, 40) { queue: String, if_unused: bool, if_empty: bool, no_wait: bool }
        => [[short], queue: shortstr, if_unused: bit, if_empty: bit, no_wait: bit];
    /// `queue.delete-ok`: how many messages went with the queue.
    QueueDeleteOk(50, 41) { message_count: u32 } => [message_count: long];
    /// `basic.qos`: the prefetch.
    BasicQos(60, 10) { prefetch_size: u32, prefetch_count: u16, global: bool }
        => [prefetch_size: long, prefetch_count: short, global: bit];
    /// `basic.qos-ok`.
    BasicQosOk(60, 11) {} => [];
    /// `basic.consume`.
    BasicConsume(60, 20) {
        queue: String, consumer_tag: String, no_local: bool, no_ack: bool, exclusive: bool,
        no_wait: bool, arguments: FieldTable,
    } => [
        [short], queue: shortstr, consumer_tag: shortstr, no_local: bit, no_ack: bit,
        exclusive: bit, no_wait: bit, arguments: table,
    ];
    /// `basic.consume-ok`: the consumer's tag.
    BasicConsumeOk(60, 21) { consumer_tag: String } => [consumer_tag: shortstr];
    /// `basic.cancel`: either side ends a consumer.
    BasicCancel(60, 30) { consumer_tag: String, no_wait: bool }
        => [consumer_tag: shortstr, no_wait: bit];
    /// `basic.cancel-ok`.
    BasicCancelOk(60, 31) { consumer_tag: String } => [consumer_tag: shortstr];
    /// `basic.publish` (its content follows in a header and body frames).
    BasicPublish(60, 40) { exchange: String, routing_key: String, mandatory: bool, immediate: bool }
        => [[short], exchange: shortstr, routing_key: shortstr, mandatory: bit, immediate: bit];
    /// `basic.return`: a mandatory publish no queue took (its content follows).
    BasicReturn(60, 50) { code: u16, text: String, exchange: String, routing_key: String }
        => [code: short, text: shortstr, exchange: shortstr, routing_key: shortstr];
    /// `basic.deliver`: a message for a consumer (its content follows).
    BasicDeliver(60, 60) {
        consumer_tag: String, delivery_tag: u64, redelivered: bool, exchange: String,
        routing_key: String,
    } => [
        consumer_tag: shortstr, delivery_tag: longlong, redelivered: bit, exchange: shortstr,
        routing_key: shortstr,
    ];
    /// `basic.ack`: a delivery handled, or (from the broker) a publish confirmed.
    BasicAck(60, 80) { delivery_tag: u64, multiple: bool }
        => [delivery_tag: longlong, multiple: bit];
    /// `basic.reject`.
    BasicReject(60, 90) { delivery_tag: u64, requeue: bool }
        => [delivery_tag: longlong, requeue: bit];
    /// `basic.nack`: (from the broker) a publish refused.
    BasicNack(60, 120) { delivery_tag: u64, multiple: bool, requeue: bool }
        => [delivery_tag: longlong, multiple: bit, requeue: bit];
    /// `confirm.select`: publisher confirms on.
    ConfirmSelect(85, 10) { no_wait: bool } => [no_wait: bit];
    /// `confirm.select-ok`.
    ConfirmSelectOk(85, 11) {} => [];
}

impl Method {
    /// The ids of the reply a synchronous method waits for (`queue.declare` waits for
    /// `queue.declare-ok`), or `None` for one without a reply.
    pub(crate) fn reply_id(&self) -> Option<(u16, u16)> {
        self.is_request().then(|| {
            let (class, method) = self.id();
            (class, method + 1)
        })
    }

    /// Whether the method is a synchronous request with a `-ok` reply.
    fn is_request(&self) -> bool {
        matches!(
            self,
            Self::ChannelOpen {}
                | Self::ChannelClose { .. }
                | Self::ExchangeDeclare { .. }
                | Self::ExchangeDelete { .. }
                | Self::QueueDeclare { .. }
                | Self::QueueBind { .. }
                | Self::QueuePurge { .. }
                | Self::QueueDelete { .. }
                | Self::BasicQos { .. }
                | Self::BasicConsume { .. }
                | Self::BasicCancel { .. }
                | Self::ConfirmSelect { .. }
        )
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::FieldValue;

    /// One value of every method, with fields set to something distinctive.
    pub(crate) fn samples() -> Vec<Method> {
        let args: FieldTable = vec![
            ("x-expires".into(), FieldValue::I32(1_800_000)),
            ("x-queue-type".into(), FieldValue::str("quorum")),
            ("flag".into(), FieldValue::Bool(true)),
            (
                "nested".into(),
                FieldValue::Table(
                    vec![(
                        "a".into(),
                        FieldValue::Array(vec![FieldValue::I64(-1), FieldValue::Void]),
                    )]
                    .into(),
                ),
            ),
        ]
        .into();
        vec![
            Method::ConnectionStart {
                server_properties: args.clone(),
                mechanisms: "PLAIN AMQPLAIN".into(),
                locales: "en_US".into(),
            },
            Method::ConnectionStartOk {
                client_properties: args.clone(),
                mechanism: "PLAIN".into(),
                response: b"\0u\0p".to_vec(),
                locale: "en_US".into(),
            },
            Method::ConnectionSecure {
                challenge: b"chal".to_vec(),
            },
            Method::ConnectionSecureOk {
                response: b"resp".to_vec(),
            },
            Method::ConnectionTune {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 60,
            },
            Method::ConnectionTuneOk {
                channel_max: 2046,
                frame_max: 131_071,
                heartbeat: 59,
            },
            Method::ConnectionOpen {
                vhost: "/vh".into(),
            },
            Method::ConnectionOpenOk {},
            Method::ConnectionClose {
                code: 320,
                text: "CONNECTION_FORCED".into(),
                class_id: 1,
                method_id: 2,
            },
            Method::ConnectionCloseOk {},
            Method::ConnectionBlocked {
                reason: "low on memory".into(),
            },
            Method::ConnectionUnblocked {},
            Method::ChannelOpen {},
            Method::ChannelOpenOk {},
            Method::ChannelFlow { active: true },
            Method::ChannelFlowOk { active: false },
            Method::ChannelClose {
                code: 406,
                text: "PRECONDITION_FAILED".into(),
                class_id: 50,
                method_id: 10,
            },
            Method::ChannelCloseOk {},
            Method::ExchangeDeclare {
                exchange: "openstack".into(),
                kind: "topic".into(),
                passive: false,
                durable: true,
                auto_delete: false,
                internal: true,
                no_wait: false,
                arguments: args.clone(),
            },
            Method::ExchangeDeclareOk {},
            Method::ExchangeDelete {
                exchange: "x".into(),
                if_unused: true,
                no_wait: false,
            },
            Method::ExchangeDeleteOk {},
            Method::QueueDeclare {
                queue: "q".into(),
                passive: true,
                durable: false,
                exclusive: true,
                auto_delete: false,
                no_wait: true,
                arguments: args.clone(),
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
                no_wait: true,
                arguments: args.clone(),
            },
            Method::QueueBindOk {},
            Method::QueuePurge {
                queue: "p".into(),
                no_wait: true,
            },
            Method::QueuePurgeOk { message_count: 3 },
            Method::QueueDelete {
                queue: "q".into(),
                if_unused: false,
                if_empty: true,
                no_wait: true,
            },
            Method::QueueDeleteOk { message_count: 4 },
            Method::BasicQos {
                prefetch_size: 5,
                prefetch_count: 10,
                global: true,
            },
            Method::BasicQosOk {},
            Method::BasicConsume {
                queue: "q".into(),
                consumer_tag: "1".into(),
                no_local: true,
                no_ack: false,
                exclusive: true,
                no_wait: false,
                arguments: args,
            },
            Method::BasicConsumeOk {
                consumer_tag: "ctag".into(),
            },
            Method::BasicCancel {
                consumer_tag: "ctag".into(),
                no_wait: true,
            },
            Method::BasicCancelOk {
                consumer_tag: "ctag2".into(),
            },
            Method::BasicPublish {
                exchange: String::new(),
                routing_key: "reply_x".into(),
                mandatory: true,
                immediate: true,
            },
            Method::BasicReturn {
                code: 312,
                text: "NO_ROUTE".into(),
                exchange: "ex".into(),
                routing_key: "reply_x".into(),
            },
            Method::BasicDeliver {
                consumer_tag: "1".into(),
                delivery_tag: u64::MAX,
                redelivered: true,
                exchange: "openstack".into(),
                routing_key: "t".into(),
            },
            Method::BasicAck {
                delivery_tag: 8,
                multiple: true,
            },
            Method::BasicReject {
                delivery_tag: 10,
                requeue: true,
            },
            Method::BasicNack {
                delivery_tag: 9,
                multiple: true,
                requeue: false,
            },
            Method::ConfirmSelect { no_wait: true },
            Method::ConfirmSelectOk {},
        ]
    }

    /// The bytes the hand-written encoder this table replaced wrote for [`samples`], one
    /// line per method: `(class, method) hex`.
    const GOLDEN: &str = include_str!("method_golden.txt");

    #[test]
    fn every_method_encodes_as_before_and_decodes_back() {
        let golden: Vec<&str> = GOLDEN.lines().collect();
        let samples = samples();
        assert_eq!(golden.len(), samples.len());
        assert_eq!(samples.len(), 44, "one sample per method");
        for (m, line) in samples.iter().zip(golden) {
            let mut buf = Vec::new();
            m.encode(&mut buf).unwrap();
            let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(format!("{:?} {hex}", m.id()), line, "{m:?}");
            assert_eq!(&Method::decode(&buf).unwrap(), m);
        }
    }

    #[test]
    fn requests_know_their_reply() {
        let declare = Method::QueueDeclare {
            queue: String::new(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            no_wait: false,
            arguments: FieldTable::new(),
        };
        assert_eq!(declare.reply_id(), Some((50, 11)));
        assert_eq!(Method::ChannelOpen {}.reply_id(), Some((20, 11)));
        assert_eq!(
            Method::ConfirmSelect { no_wait: false }.reply_id(),
            Some((85, 11))
        );
        assert_eq!(Method::BasicQosOk {}.reply_id(), None);
        assert_eq!(
            Method::BasicAck {
                delivery_tag: 1,
                multiple: false
            }
            .reply_id(),
            None
        );
        // Every request's reply is a method this table knows.
        for m in samples() {
            if let Some((c, id)) = m.reply_id() {
                assert!(
                    samples().iter().any(|r| r.id() == (c, id)),
                    "{m:?} waits for an unknown reply"
                );
            }
        }
    }

    #[test]
    fn close_reasons_are_cut_at_255_bytes_and_names_refused() {
        let close = Method::ChannelClose {
            code: 406,
            text: "é".repeat(200),
            class_id: 0,
            method_id: 0,
        };
        let mut buf = Vec::new();
        close.encode(&mut buf).unwrap();
        let Method::ChannelClose { text, .. } = Method::decode(&buf).unwrap() else {
            panic!("a channel.close")
        };
        assert_eq!(text.len(), 254, "cut on a character boundary");
        let long = Method::QueueDelete {
            queue: "x".repeat(256),
            if_unused: false,
            if_empty: false,
            no_wait: false,
        };
        assert_eq!(
            long.encode(&mut Vec::new()),
            Err(FrameError::TooLong("short string", 256))
        );
    }
}
