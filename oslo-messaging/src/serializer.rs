//! Hooks that convert entities and contexts on their way to and from the wire (oslo's
//! `Serializer`).

use std::fmt;

use serde_json::Value;

use crate::context::Context;
use crate::error::Result;

/// Converts entities (arguments, results, payloads) and contexts at the edge of the wire.
///
/// The client serializes the context and each argument; the server deserializes the context and
/// each argument, then serializes the result; the notifier serializes the payload and context.
/// Every method defaults to the identity, so an implementation overrides only what it needs.
///
/// # Examples
///
/// ```
/// use oslo_messaging::{Context, Result, Serializer};
/// use serde_json::Value;
///
/// /// Wraps every entity in oslo.versionedobjects-like `{"data": ...}`.
/// #[derive(Debug)]
/// struct Wrap;
///
/// impl Serializer for Wrap {
///     fn serialize_entity(&self, _ctx: &Context, entity: Value) -> Result<Value> {
///         Ok(serde_json::json!({ "data": entity }))
///     }
///     fn deserialize_entity(&self, _ctx: &Context, entity: Value) -> Result<Value> {
///         Ok(entity.get("data").cloned().unwrap_or(entity))
///     }
/// }
///
/// let ctx = Context::new();
/// let wire = Wrap.serialize_entity(&ctx, 5.into())?;
/// assert_eq!(Wrap.deserialize_entity(&ctx, wire)?, Value::from(5));
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
pub trait Serializer: Send + Sync + fmt::Debug + 'static {
    /// An entity on its way out.
    ///
    /// # Errors
    ///
    /// Whatever the implementation refuses; the send fails with that error.
    fn serialize_entity(&self, ctx: &Context, entity: Value) -> Result<Value> {
        let _ = ctx;
        Ok(entity)
    }

    /// An entity that came in.
    ///
    /// # Errors
    ///
    /// Whatever the implementation refuses.
    fn deserialize_entity(&self, ctx: &Context, entity: Value) -> Result<Value> {
        let _ = ctx;
        Ok(entity)
    }

    /// A context on its way out.
    ///
    /// # Errors
    ///
    /// Whatever the implementation refuses.
    fn serialize_context(&self, ctx: &Context) -> Result<Context> {
        Ok(ctx.clone())
    }

    /// A context that came in.
    ///
    /// # Errors
    ///
    /// Whatever the implementation refuses.
    fn deserialize_context(&self, ctx: Context) -> Result<Context> {
        Ok(ctx)
    }
}

/// The identity serializer (oslo's `NoOpSerializer`).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use oslo_messaging::{NoOpSerializer, RpcClient, Target, Transport};
///
/// let transport = Transport::memory();
/// let client = RpcClient::builder(&transport, Target::new("t"))
///     .serializer(Arc::new(NoOpSerializer))
///     .build()?;
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct NoOpSerializer;

impl Serializer for NoOpSerializer {}
