//! A lean AMQP 0-9-1 client: exactly what the RabbitMQ driver needs, nothing it does not.
//!
//! Why not an existing crate: the driver must advertise `connection.blocked` and
//! `authentication_failure_close` (amqprs 2.x hard-codes its client properties without them),
//! bound every step of connecting, and never panic on what the broker sends or on a cancelled
//! future (amqprs panics on cancelled or concurrent RPCs). This client is one task per
//! connection with pipelined RPCs and confirms; see `connection.rs`.

mod connection;
pub(crate) mod frame;

pub(crate) use connection::{
    AmqpError, Channel, Confirm, ConnectParams, Connection, ConsumerEvent, Delivery, Login, Stream,
    Upgrade,
};
pub(crate) use frame::{FieldTable, FieldValue, Method, Properties};

#[cfg(test)]
mod tests;
