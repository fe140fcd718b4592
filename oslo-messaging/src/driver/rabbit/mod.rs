//! The RabbitMQ driver (`rabbit://`, `kombu://`).
// Temporary while the driver on top of this client is being written.
#![allow(dead_code, unused_imports)]

pub(crate) mod amqp;
