//! A lean AMQP 0-9-1 client: exactly what oslo-messaging's RabbitMQ driver needs, nothing it
//! does not. The driver is its only user in the library; the benchmarks use it directly to
//! measure the broker's ceiling without oslo-messaging's layers.
//!
//! Why not an existing crate: the driver must advertise `connection.blocked` and
//! `authentication_failure_close` (amqprs 2.x hard-codes its client properties without them),
//! bound every step of connecting, and never panic on what the broker sends or on a cancelled
//! future (amqprs panics on cancelled or concurrent RPCs). Here one task owns each connection;
//! RPCs and publisher confirms are pipelined, so concurrent publishers never wait on each
//! other's confirms.
//!
//! ```no_run
//! use std::time::Duration;
//! use oslo_messaging_amqp::{Confirm, ConnectParams, Connection, ConsumerEvent, Login, Method, Properties};
//!
//! # async fn run() -> Result<(), oslo_messaging_amqp::AmqpError> {
//! let conn = Connection::open(&ConnectParams {
//!     host: "127.0.0.1".into(),
//!     port: 5672,
//!     vhost: "/".into(),
//!     login: Login::Plain { user: "guest".into(), password: "guest".into() },
//!     heartbeat: 60,
//!     heartbeat_rate: 2,
//!     connection_name: "example".into(),
//!     product: "example".into(),
//!     connect_timeout: Duration::from_secs(5),
//!     upgrade: None,
//! })
//! .await?;
//! let ch = conn.channel().await?;
//! ch.rpc(
//!     &Method::QueueDeclare {
//!         queue: "example".into(),
//!         passive: false,
//!         durable: false,
//!         exclusive: false,
//!         auto_delete: true,
//!         no_wait: false,
//!         arguments: vec![],
//!     },
//!     (50, 11),
//! )
//! .await?;
//! ch.confirm_select().await?;
//! let props = Properties { content_type: Some("text/plain".into()), ..Properties::default() };
//! assert_eq!(ch.publish("", "example", true, &props, b"hello").await?, Confirm::Ack);
//! let (_tag, mut events) = ch.consume("example", "", false, vec![]).await?;
//! if let Some(ConsumerEvent::Delivery(_, d)) = events.recv().await {
//!     assert_eq!(d.body, b"hello");
//!     ch.ack(d.delivery_tag).await?;
//! }
//! conn.close().await;
//! # Ok(())
//! # }
//! ```

mod connection;
mod frame;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;

pub use connection::{
    AmqpError, Channel, Confirm, ConnectParams, Connection, ConsumerEvent, Delivery, Login, Stream,
    Upgrade,
};
pub use frame::{FieldTable, FieldValue, FrameError, Method, Properties, table_get};
