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
//! The layout: [`Connection::open`] (`connect`: TCP, TLS, the handshake) starts the I/O task
//! (`io`: the only owner of the socket) and returns a [`Connection`] handle (`connection`);
//! [`Channel`] (`channel`) sends typed operations, publishes and consumes through it; `frame`
//! encodes and decodes (one table entry per method); [`Error`] (`error`) and [`Login`]
//! (`auth`) are what they say.
//!
//! ```no_run
//! use oslo_messaging_amqp::{
//!     Confirm, ConnectParams, Connection, ConsumerEvent, FieldTable, Login, Properties,
//!     QueueOptions,
//! };
//!
//! # async fn run() -> Result<(), oslo_messaging_amqp::Error> {
//! let login = Login::Plain { user: "guest".into(), password: "guest".into() };
//! let conn = Connection::open(&ConnectParams::new("127.0.0.1", 5672, login)).await?;
//! let ch = conn.channel().await?;
//! ch.queue_declare("example", QueueOptions::default().auto_delete(true), FieldTable::new())
//!     .await?;
//! ch.confirm_select().await?;
//! let props = Properties { content_type: Some("text/plain".into()), ..Properties::default() };
//! assert_eq!(ch.publish("", "example", true, &props, b"hello").await?, Confirm::Ack);
//! let mut consumer = ch.consume("example", "", false, FieldTable::new()).await?;
//! if let Some(ConsumerEvent::Delivery(_, d)) = consumer.recv().await {
//!     assert_eq!(d.body, b"hello");
//!     ch.ack(d.delivery_tag).await?;
//! }
//! conn.close().await;
//! # Ok(())
//! # }
//! ```

// Every public fallible function says when it fails.
#![warn(clippy::missing_errors_doc)]

mod auth;
mod channel;
mod connect;
mod connection;
mod error;
mod frame;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod io;

pub use auth::Login;
pub use channel::{
    Channel, Confirm, Consumer, ConsumerEvent, Delivery, ExchangeOptions, QueueOptions, QueueState,
};
pub use connect::{AsyncReadWrite, ConnectParams, Upgrade};
pub use connection::Connection;
pub use error::Error;
pub use frame::{FieldTable, FieldValue, FrameError, Properties};
