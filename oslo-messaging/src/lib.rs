//! OpenStack's messaging library (oslo.messaging) in Rust: RPC and notifications between
//! services, speaking the same wire protocol as the Python library, byte for byte.
//!
//! # The model
//!
//! * A [`Transport`] is a connection to a backend, chosen by URL: `rabbit://` for RabbitMQ,
//!   `memory://` for an in-process broker (tests, single-process use).
//! * A [`Target`] says where messages go: an exchange, a topic, optionally a server, a
//!   namespace and a version.
//! * An [`RpcServer`] serves [`Endpoint`]s on a topic and server; an [`RpcClient`] calls their
//!   methods ([`call`](RpcClient::call) waits for the result, [`cast`](RpcClient::cast) does not,
//!   a fanout cast reaches every server of the topic).
//! * A [`Notifier`] publishes notifications; a [`NotificationListener`] hands them to
//!   handlers by priority.
//!
//! # Example
//!
//! ```
//! use oslo_messaging::rpc::{Endpoint, Request, RpcClient, RpcError, RpcServer};
//! use oslo_messaging::{Context, ErrorKind, Target, Transport};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Resize {
//!     instance: String,
//!     flavor: String,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> oslo_messaging::Result<()> {
//! let transport = Transport::memory(); // or Transport::from_url("rabbit://...")?
//!
//! let compute = Endpoint::builder()
//!     .version("5.1".parse()?)
//!     .method("resize", |req: Request<Resize>| async move {
//!         let args = req.into_args();
//!         if args.flavor.is_empty() {
//!             return Err(RpcError::value_error("a flavor is required"));
//!         }
//!         Ok(format!("{} is now {}", args.instance, args.flavor))
//!     })
//!     .build()?;
//! let server = RpcServer::builder(&transport, Target::new("compute").with_server("host-1"))
//!     .endpoint(compute)
//!     .build()?;
//! server.start().await?;
//!
//! let client = RpcClient::new(&transport, Target::new("compute"))
//!     .prepare()
//!     .version("5.0".parse()?)
//!     .build()?;
//! let ctx = Context::new().with("request_id", "req-1");
//! let answer: String = client
//!     .call(&ctx, "resize", &serde_json::json!({"instance": "vm-1", "flavor": "m1.large"}))
//!     .await?;
//! assert_eq!(answer, "vm-1 is now m1.large");
//!
//! let err = client
//!     .call::<String>(&ctx, "resize", &serde_json::json!({"instance": "vm-1", "flavor": ""}))
//!     .await
//!     .unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::Remote);
//! assert_eq!(err.remote_error().unwrap().class(), "ValueError");
//!
//! server.stop().await;
//! server.wait().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Conventions
//!
//! * Things with options are made by a builder: `X::builder(..)`, bare setters
//!   (`.timeout(..)`, `.version(..)`), then `build()`, which is where every mistake is
//!   reported, as an [`Error`]. `prepare()` on a client or notifier returns the same builder,
//!   seeded with its settings.
//! * Values ([`Target`], [`notify::Notification`], [`RpcError`], [`RemoteError`]) are changed by
//!   `with_*` methods that return the changed value (a [`Context`] by `with(key, value)`);
//!   they cannot fail.
//! * A version you pass is a [`Version`] (`"1.3".parse()?`). What is a JSON object on the
//!   wire (call arguments, payloads, exception kwargs) is taken as `impl Serialize`; a context
//!   is a [`Context`], which [`Context::from_serialize`] makes from any serializable map.
//! * Every async method says in its docs what dropping its future leaves behind (cancel
//!   safety); every fallible one says when it fails.
//!
//! # Wire compatibility
//!
//! Requests, replies, call-monitor heartbeats, failures and notifications (v1 and v2) are
//! written exactly as Python oslo.messaging 18.3.1 writes them, and anything it writes is read;
//! see [`wire`]. Python and Rust clients, servers, notifiers and listeners mix on one broker.
//!
//! # Layers
//!
//! The user API ([`rpc`], [`notify`], [`transport`]) sits on pure wire and dispatch logic
//! ([`wire`], [`context`], [`version`]), which sits on a private driver contract with two
//! drivers: memory and RabbitMQ. Nothing above the RabbitMQ driver sees the AMQP client.

// Every public fallible function says when it fails.
#![warn(clippy::missing_errors_doc)]

pub mod config;
pub mod context;
mod driver;
#[cfg(feature = "driver-api")]
#[doc(hidden)]
pub mod driver_api;
pub mod error;
pub mod notify;
pub mod rpc;
mod secret;
mod serializer;
mod serve;
mod stats;
pub mod target;
pub mod telemetry;
pub mod transport;
mod url;
pub mod version;
pub mod wire;

pub use config::Config;
pub use context::Context;
pub use error::{Error, ErrorKind, RemoteError, RemoteException, Result};
pub use notify::{NotificationListener, Notifier, Priority};
pub use rpc::{Endpoint, Request, RpcClient, RpcError, RpcServer};
pub use secret::Secret;
pub use serializer::{NoOpSerializer, Serializer};
pub use serve::State;
pub use target::Target;
pub use transport::{Retry, Transport, TransportHost, TransportUrl};
pub use version::Version;

/// The README's examples, compiled and run as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
