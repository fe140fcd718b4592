//! oslo.messaging for Rust.
#![forbid(unsafe_code)]

pub mod config;
pub mod context;
mod dedup;
mod driver;
pub mod error;
pub mod notify;
pub mod rpc;
mod secret;
mod serializer;
pub mod target;
mod task;
pub mod transport;
pub mod version;
pub mod wire;

pub use config::Config;
pub use context::Context;
pub use error::{Error, ErrorKind, RemoteError, Result};
pub use notify::{NotificationListener, Notifier, Priority};
pub use rpc::{Endpoint, Request, RpcClient, RpcError, RpcServer};
pub use secret::Secret;
pub use serializer::{NoOpSerializer, Serializer};
pub use target::Target;
pub use transport::{Retry, Transport, TransportHost, TransportUrl};
pub use version::Version;
