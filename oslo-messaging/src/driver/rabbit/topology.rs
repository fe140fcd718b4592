//! The exchanges, queues and bindings Python oslo.messaging declares, for the same options.
//!
//! Pure: each function returns what to declare; the driver sends it. Facts checked on the wire
//! against Python 18.3.1 (kombu 5.7, py-amqp 5.4):
//!
//! * Topic exchanges and the topic, `topic.server`, pool and notifier queues are durable when
//!   `amqp_durable_queues` or `rabbit_quorum_queue`, auto-delete when `amqp_auto_delete`; they
//!   never get `x-expires`.
//! * The fanout exchange `<topic>_fanout` is always auto-delete; it, the fanout queues and the
//!   reply queue are durable only with `rabbit_transient_quorum_queue` (or streams), never
//!   auto-delete, and carry `x-expires` (`rabbit_transient_queues_ttl`).
//! * Queue arguments are written in Python's order (`x-ha-policy`; or `x-queue-type`,
//!   `x-delivery-limit`, `x-max-in-memory-length`, `x-max-in-memory-bytes`; then `x-expires`),
//!   integers as signed 32-bit (64-bit above `i32::MAX`), strings as long strings. A stream
//!   fanout queue has only `x-queue-type: stream` and `x-max-age: "<ttl>s"`.

use super::amqp::{ExchangeOptions, FieldTable, FieldValue, QueueOptions};
use crate::config::RabbitOptions;

/// An exchange to declare.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ExchangeDecl {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) durable: bool,
    pub(crate) auto_delete: bool,
}

impl ExchangeDecl {
    /// The flags of its `exchange.declare`.
    pub(crate) fn options(&self) -> ExchangeOptions {
        ExchangeOptions::default()
            .durable(self.durable)
            .auto_delete(self.auto_delete)
    }
}

/// A queue to declare, with the exchange it is bound to (none for reply queues, which only
/// have the default exchange's implicit binding).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QueueDecl {
    pub(crate) name: String,
    pub(crate) durable: bool,
    pub(crate) auto_delete: bool,
    pub(crate) arguments: FieldTable,
    pub(crate) binding: Option<(ExchangeDecl, String)>,
}

impl QueueDecl {
    /// The flags of its `queue.declare`.
    pub(crate) fn options(&self) -> QueueOptions {
        QueueOptions::default()
            .durable(self.durable)
            .auto_delete(self.auto_delete)
    }

    /// The declaration Python's non-durable fallback makes after a `durable` mismatch: the
    /// exchange non-durable with the queue's auto-delete flag, the queue non-durable, the
    /// arguments unchanged.
    pub(crate) fn non_durable_fallback(&self) -> Self {
        let mut q = self.clone();
        q.durable = false;
        if let Some((ex, _)) = &mut q.binding {
            ex.durable = false;
            ex.auto_delete = self.auto_delete;
        }
        q
    }
}

/// py-amqp writes Python ints as signed 32-bit when they fit, else 64-bit.
pub(crate) fn int_field(v: i64) -> FieldValue {
    match i32::try_from(v) {
        Ok(small) if small != i32::MIN => FieldValue::I32(small),
        _ => FieldValue::I64(v),
    }
}

/// Topic exchanges and queues are durable with `amqp_durable_queues` or quorum queues.
fn durable(opts: &RabbitOptions) -> bool {
    opts.amqp_durable_queues || opts.rabbit_quorum_queue
}

/// Queue arguments as Python's `_get_queue_arguments(ha, ttl, quorum, quorum_config, stream)`.
fn queue_arguments(opts: &RabbitOptions, quorum: bool, ttl: i64, stream: bool) -> FieldTable {
    if stream {
        let mut args = FieldTable::new();
        args.insert("x-queue-type", FieldValue::str("stream"));
        if ttl > 0 {
            args.insert("x-max-age", FieldValue::str(&format!("{ttl}s")));
        }
        return args;
    }
    let mut args = FieldTable::new();
    if opts.rabbit_ha_queues {
        args.insert("x-ha-policy", FieldValue::str("all"));
    }
    if quorum {
        args.insert("x-queue-type", FieldValue::str("quorum"));
        if opts.rabbit_quorum_delivery_limit != 0 {
            args.insert(
                "x-delivery-limit",
                int_field(opts.rabbit_quorum_delivery_limit),
            );
        }
        if opts.rabbit_quorum_max_memory_length != 0 {
            args.insert(
                "x-max-in-memory-length",
                int_field(opts.rabbit_quorum_max_memory_length),
            );
        }
        if opts.rabbit_quorum_max_memory_bytes != 0 {
            args.insert(
                "x-max-in-memory-bytes",
                int_field(opts.rabbit_quorum_max_memory_bytes),
            );
        }
    }
    if ttl > 0 {
        args.insert("x-expires", int_field(ttl.saturating_mul(1000)));
    }
    args
}

/// The topic exchange (`target.exchange or control_exchange`).
pub(crate) fn topic_exchange(opts: &RabbitOptions, name: &str) -> ExchangeDecl {
    ExchangeDecl {
        name: name.to_owned(),
        kind: "topic",
        durable: durable(opts),
        auto_delete: opts.amqp_auto_delete,
    }
}

/// The fanout exchange of `topic`.
pub(crate) fn fanout_exchange(opts: &RabbitOptions, topic: &str) -> ExchangeDecl {
    ExchangeDecl {
        name: format!("{topic}_fanout"),
        kind: "fanout",
        durable: opts.rabbit_transient_quorum_queue || opts.rabbit_stream_fanout,
        auto_delete: true,
    }
}

/// A queue bound to a topic exchange: an RPC server's `topic` or `topic.server` queue, a
/// notification listener's `<topic>.<priority>` or pool queue.
pub(crate) fn topic_queue(
    opts: &RabbitOptions,
    exchange: &str,
    queue: &str,
    routing_key: &str,
) -> QueueDecl {
    QueueDecl {
        name: queue.to_owned(),
        durable: durable(opts),
        auto_delete: opts.amqp_auto_delete,
        arguments: queue_arguments(opts, opts.rabbit_quorum_queue, 0, false),
        binding: Some((topic_exchange(opts, exchange), routing_key.to_owned())),
    }
}

/// The fanout queue of a server on `topic`; `unique` is a UUID hex or a queue-manager id.
pub(crate) fn fanout_queue(opts: &RabbitOptions, topic: &str, unique: &str) -> QueueDecl {
    let stream = opts.rabbit_stream_fanout;
    QueueDecl {
        name: if stream {
            format!("{topic}_fanout")
        } else {
            format!("{topic}_fanout_{unique}")
        },
        durable: opts.rabbit_transient_quorum_queue || stream,
        auto_delete: false,
        arguments: queue_arguments(
            opts,
            opts.rabbit_transient_quorum_queue,
            opts.rabbit_transient_queues_ttl,
            stream,
        ),
        binding: Some((fanout_exchange(opts, topic), topic.to_owned())),
    }
}

/// Whether fanout queues are deleted when their server stops (not with streams or stable
/// queue-manager names).
pub(crate) fn delete_fanout_on_close(opts: &RabbitOptions) -> bool {
    !opts.rabbit_stream_fanout && !opts.use_queue_manager
}

/// A client's reply queue (no binding: replies come through the default exchange).
pub(crate) fn reply_queue(opts: &RabbitOptions, name: &str) -> QueueDecl {
    QueueDecl {
        name: name.to_owned(),
        durable: opts.rabbit_transient_quorum_queue,
        auto_delete: false,
        arguments: queue_arguments(
            opts,
            opts.rabbit_transient_quorum_queue,
            opts.rabbit_transient_queues_ttl,
            false,
        ),
        binding: None,
    }
}

/// The queue a notifier creates for its routing key, so notifications wait for a listener.
pub(crate) fn notifier_queue(opts: &RabbitOptions, exchange: &str, routing_key: &str) -> QueueDecl {
    topic_queue(opts, exchange, routing_key, routing_key)
}

/// Consumer arguments: the stream offset for stream fanout queues, else
/// `x-cancel-on-ha-failover` when enabled.
pub(crate) fn consumer_arguments(
    opts: &RabbitOptions,
    stream_offset: Option<&StreamOffset>,
) -> FieldTable {
    match stream_offset {
        Some(offset) => [("x-stream-offset", offset.field())].into_iter().collect(),
        None if opts.enable_cancel_on_failover => {
            [("x-cancel-on-ha-failover", FieldValue::Bool(true))]
                .into_iter()
                .collect()
        }
        None => FieldTable::new(),
    }
}

/// Where a stream consumer (re)starts: `"last"` at first, then after the last message seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum StreamOffset {
    #[default]
    Last,
    Next(i64),
}

impl StreamOffset {
    fn field(self) -> FieldValue {
        match self {
            Self::Last => FieldValue::str("last"),
            Self::Next(n) => int_field(n),
        }
    }

    /// Records a delivery's `x-stream-offset` header.
    pub(crate) fn seen(&mut self, headers: Option<&FieldTable>) {
        let offset = headers
            .and_then(|h| h.get("x-stream-offset"))
            .and_then(|v| match v {
                FieldValue::I64(n) => Some(*n),
                FieldValue::I32(n) => Some(i64::from(*n)),
                FieldValue::U32(n) => Some(i64::from(*n)),
                _ => None,
            });
        if let Some(n) = offset {
            *self = Self::Next(n.saturating_add(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> RabbitOptions {
        RabbitOptions::default()
    }

    fn s(v: &str) -> FieldValue {
        FieldValue::str(v)
    }

    /// (a) defaults, as captured from Python on the wire.
    #[test]
    fn defaults() {
        let o = opts();
        let t = topic_queue(&o, "spec_a_ctl", "spec_a_t", "spec_a_t");
        assert!(!t.durable && !t.auto_delete && t.arguments.is_empty());
        let (ex, key) = t.binding.unwrap();
        assert_eq!(
            ex,
            ExchangeDecl {
                name: "spec_a_ctl".into(),
                kind: "topic",
                durable: false,
                auto_delete: false
            }
        );
        assert_eq!(key, "spec_a_t");

        let f = fanout_queue(&o, "spec_a_t", "277d");
        assert_eq!(f.name, "spec_a_t_fanout_277d");
        assert_eq!(
            f.arguments,
            vec![("x-expires".to_owned(), FieldValue::I32(1_800_000))]
        );
        let (fx, fkey) = f.binding.unwrap();
        assert_eq!(
            (fx.name.as_str(), fx.kind, fx.durable, fx.auto_delete),
            ("spec_a_t_fanout", "fanout", false, true)
        );
        assert_eq!(fkey, "spec_a_t");

        let r = reply_queue(&o, "reply_6d44");
        assert!(r.binding.is_none() && !r.durable && !r.auto_delete);
        assert_eq!(
            r.arguments,
            vec![("x-expires".to_owned(), FieldValue::I32(1_800_000))]
        );
        assert!(consumer_arguments(&o, None).is_empty());
    }

    /// (b) durable, (c) auto-delete: only the topic side follows them.
    #[test]
    fn durable_and_auto_delete_touch_only_topic_entities() {
        let o = RabbitOptions {
            amqp_durable_queues: true,
            amqp_auto_delete: true,
            ..opts()
        };
        let t = topic_queue(&o, "e", "t", "t");
        assert!(t.durable && t.auto_delete);
        assert!(t.binding.unwrap().0.durable);
        let f = fanout_queue(&o, "t", "u");
        assert!(!f.durable && !f.auto_delete);
        assert!(!reply_queue(&o, "r").durable);
        let n = notifier_queue(&o, "e", "n.info");
        assert_eq!(
            (n.name.as_str(), n.durable, n.auto_delete),
            ("n.info", true, true)
        );
    }

    /// (d) HA: `x-ha-policy` everywhere, before `x-expires`.
    #[test]
    fn ha_policy() {
        let o = RabbitOptions {
            rabbit_ha_queues: true,
            ..opts()
        };
        assert_eq!(
            topic_queue(&o, "e", "t", "t").arguments,
            vec![("x-ha-policy".to_owned(), s("all"))]
        );
        assert_eq!(
            reply_queue(&o, "r").arguments,
            vec![
                ("x-ha-policy".to_owned(), s("all")),
                ("x-expires".to_owned(), FieldValue::I32(1_800_000))
            ]
        );
    }

    /// (e)+(f) quorum and transient quorum, in Python's argument order.
    #[test]
    fn quorum_queues() {
        let o = RabbitOptions {
            rabbit_quorum_queue: true,
            rabbit_transient_quorum_queue: true,
            rabbit_quorum_delivery_limit: 5,
            rabbit_quorum_max_memory_length: 10,
            rabbit_quorum_max_memory_bytes: 1000,
            ..opts()
        };
        let four = vec![
            ("x-queue-type".to_owned(), s("quorum")),
            ("x-delivery-limit".to_owned(), FieldValue::I32(5)),
            ("x-max-in-memory-length".to_owned(), FieldValue::I32(10)),
            ("x-max-in-memory-bytes".to_owned(), FieldValue::I32(1000)),
        ];
        let t = topic_queue(&o, "e", "t", "t");
        assert!(t.durable);
        assert_eq!(t.arguments, four);
        assert!(t.binding.unwrap().0.durable);
        let mut with_ttl = four;
        with_ttl.push(("x-expires".to_owned(), FieldValue::I32(1_800_000)));
        let f = fanout_queue(&o, "t", "u");
        assert!(f.durable);
        assert_eq!(f.arguments, with_ttl);
        assert!(f.binding.unwrap().0.durable);
        assert_eq!(reply_queue(&o, "r").arguments, with_ttl);

        // (e) alone: reply and fanout stay classic.
        let e = RabbitOptions {
            rabbit_quorum_queue: true,
            ..opts()
        };
        assert_eq!(
            reply_queue(&e, "r").arguments,
            vec![("x-expires".to_owned(), FieldValue::I32(1_800_000))]
        );
        assert!(!fanout_queue(&e, "t", "u").durable);
    }

    /// (g) the transient TTL, and 64-bit integers above `i32::MAX`.
    #[test]
    fn transient_ttl() {
        let none = RabbitOptions {
            rabbit_transient_queues_ttl: 0,
            ..opts()
        };
        assert!(reply_queue(&none, "r").arguments.is_empty());
        let sixty = RabbitOptions {
            rabbit_transient_queues_ttl: 60,
            ..opts()
        };
        assert_eq!(
            fanout_queue(&sixty, "t", "u").arguments,
            vec![("x-expires".to_owned(), FieldValue::I32(60_000))]
        );
        let huge = RabbitOptions {
            rabbit_transient_queues_ttl: 3_000_000,
            ..opts()
        };
        assert_eq!(
            reply_queue(&huge, "r").arguments,
            vec![("x-expires".to_owned(), FieldValue::I64(3_000_000_000))]
        );
    }

    /// (i) stream fanout.
    #[test]
    fn stream_fanout() {
        let o = RabbitOptions {
            rabbit_stream_fanout: true,
            rabbit_qos_prefetch_count: 10,
            rabbit_transient_quorum_queue: true,
            ..opts()
        };
        let f = fanout_queue(&o, "spec_i_t", "ignored");
        assert_eq!(f.name, "spec_i_t_fanout");
        assert!(f.durable && !f.auto_delete);
        assert_eq!(
            f.arguments,
            vec![
                ("x-queue-type".to_owned(), s("stream")),
                ("x-max-age".to_owned(), s("1800s"))
            ]
        );
        assert!(!delete_fanout_on_close(&o));
        let mut off = StreamOffset::default();
        assert_eq!(
            consumer_arguments(&o, Some(&off)),
            vec![("x-stream-offset".to_owned(), s("last"))]
        );
        off.seen(Some(&FieldTable::from(vec![(
            "x-stream-offset".to_owned(),
            FieldValue::I64(2),
        )])));
        assert_eq!(
            consumer_arguments(&o, Some(&off)),
            vec![("x-stream-offset".to_owned(), FieldValue::I32(3))]
        );
    }

    /// (j) cancel on failover.
    #[test]
    fn cancel_on_failover() {
        let o = RabbitOptions {
            enable_cancel_on_failover: true,
            ..opts()
        };
        assert_eq!(
            consumer_arguments(&o, None),
            vec![("x-cancel-on-ha-failover".to_owned(), FieldValue::Bool(true))]
        );
    }

    #[test]
    fn durable_fallback_matches_python() {
        let o = RabbitOptions {
            amqp_durable_queues: true,
            ..opts()
        };
        let q = topic_queue(&o, "e", "t", "t").non_durable_fallback();
        assert!(!q.durable);
        let ex = q.binding.unwrap().0;
        assert!(!ex.durable && !ex.auto_delete);
    }
}
