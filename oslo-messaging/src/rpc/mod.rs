//! Remote procedure calls: clients, servers, endpoints.
//!
//! A server serves [`Endpoint`]s on a [`Target`](crate::Target) (topic and server); a client
//! calls their methods by name, with keyword arguments, optionally in a namespace and at a
//! version. Requests and replies are exactly those of Python oslo.messaging, so Rust and Python
//! clients and servers mix freely.

mod client;
mod dispatcher;
mod endpoint;
mod error;
mod server;

pub use crate::serve::State;
#[cfg(feature = "driver-api")]
pub(crate) use client::wait_for_reply;
pub use client::{RpcClient, RpcClientBuilder};
pub use dispatcher::PING_METHOD;
pub use endpoint::{Endpoint, EndpointBuilder, Handler, NoArgs, Request};
pub use error::RpcError;
pub use server::{RpcServer, RpcServerBuilder};
