//! The RPC server: consumes requests for a target and dispatches them to endpoints.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::dispatcher::{Dispatcher, heartbeat_interval};
use super::endpoint::Endpoint;
use super::error::RpcError;
use crate::driver::{IncomingRpc, ReplySink};
use crate::error::Result;
use crate::serializer::Serializer;
use crate::serve::{self, CatchUnwind, DedupCache, Intake, Lifecycle};
use crate::stats;
use crate::target::Target;
use crate::telemetry::{Span, Telemetry};
use crate::transport::Transport;
use crate::wire;

/// Serves endpoints on a target (`topic` and `server` required).
///
/// It consumes three queues, as Python servers do: `topic` (shared round-robin with the other
/// servers of the topic), `topic.server` (requests for this server only) and a fanout queue
/// (fanout casts). Requests are acknowledged on receipt, before dispatch (oslo's at-most-once).
/// Up to `executor_thread_pool_size` handlers (default 64) run at once; while a handler runs for
/// a caller that enabled call monitoring, the server sends heartbeats every half of the
/// caller's `_timeout`.
///
/// The lifecycle is Python's: [`start`](Self::start), [`stop`](Self::stop) (no new requests),
/// [`wait`](Self::wait) (in-flight handlers finish, then the listener is cleaned up). A handler
/// that panics answers its caller with a `RuntimeError`; the server keeps running.
///
/// Handlers run on the Tokio runtime: a CPU-bound or blocking handler must use
/// `tokio::task::spawn_blocking`, or it delays every other handler of its worker thread.
///
/// # Examples
///
/// ```
/// use oslo_messaging::rpc::{Endpoint, Request, RpcError, RpcServer};
/// use oslo_messaging::{Target, Transport};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> oslo_messaging::Result<()> {
/// let transport = Transport::memory();
/// let endpoint = Endpoint::builder()
///     .method("ping", |_req: Request<serde_json::Value>| async { Ok::<_, RpcError>("pong") })
///     .build()?;
/// let server = RpcServer::builder(&transport, Target::new("compute").with_server("host-1"))
///     .endpoint(endpoint)
///     .executor_pool_size(8)
///     .build()?;
/// server.start().await?;
/// // ... serve until shutdown ...
/// server.stop().await;
/// server.wait().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RpcServer {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    target: Target,
    dispatcher: Dispatcher,
    pool_size: u32,
    serializer: Option<Arc<dyn Serializer>>,
    lifecycle: Lifecycle,
}

impl fmt::Debug for RpcServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcServer")
            .field("target", &self.inner.target)
            .field("pool_size", &self.inner.pool_size)
            .field("dispatcher", &self.inner.dispatcher)
            .finish_non_exhaustive()
    }
}

impl RpcServer {
    /// Starts building a server for `target`.
    pub fn builder(transport: &Transport, target: Target) -> RpcServerBuilder {
        RpcServerBuilder {
            transport: transport.clone(),
            target,
            endpoints: Vec::new(),
            pool_size: None,
            ping: None,
            serializer: None,
        }
    }

    /// The target served.
    pub fn target(&self) -> &Target {
        &self.inner.target
    }

    /// Starts consuming. Returns once the queues are declared and consumed.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidState`](crate::ErrorKind::InvalidState) when already started or
    /// already stopped; driver errors when listening fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a start dropped before it returns (a timeout around it while the broker
    /// is unreachable) leaves the server unstarted, and it can be started again.
    pub async fn start(&self) -> Result<()> {
        let inner = &self.inner;
        inner
            .lifecycle
            .start("RPC server", |stop| async move {
                let listener = inner
                    .transport
                    .driver()
                    .listen(inner.target.clone())
                    .await?;
                let poll = tokio::spawn(poll_loop(
                    listener.incoming,
                    listener.replies,
                    inner.dispatcher.clone(),
                    inner.serializer.clone(),
                    inner.transport.telemetry().clone(),
                    inner.pool_size,
                    stop,
                ));
                Ok((poll, listener.control))
            })
            .await?;
        tracing::info!(target_ = %inner.target, "RPC server started");
        Ok(())
    }

    /// Stops taking new requests; returns once none is taken any more. Requests already
    /// received still run: [`wait`](Self::wait) for them. Stopping before starting makes
    /// [`start`](Self::start) refuse. Dropping the last handle of a running server stops it
    /// too.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the stop is signalled at the first poll and proceeds whether or not the
    /// future is awaited to its end; only the wait for it is dropped.
    pub async fn stop(&self) {
        self.inner.lifecycle.stop().await;
    }

    /// Waits until the server is stopped (by [`stop`](Self::stop), possibly from another task)
    /// and every in-flight handler has replied and the listener is released. Returns at once
    /// when the server never started.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the shutdown proceeds in the background whether or not anyone waits.
    pub async fn wait(&self) {
        self.inner.lifecycle.wait().await;
    }

    /// Starts, serves until `shutdown` completes, then stops gracefully.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    ///
    /// # Cancel safety
    ///
    /// Dropped while serving, the server keeps running until [`stop`](Self::stop) is called
    /// or its last handle is dropped; dropped while starting, as [`start`](Self::start).
    pub async fn serve_until(&self, shutdown: impl Future<Output = ()>) -> Result<()> {
        self.start().await?;
        shutdown.await;
        self.stop().await;
        self.wait().await;
        Ok(())
    }
}

async fn poll_loop(
    incoming: tokio::sync::mpsc::UnboundedReceiver<IncomingRpc>,
    replies: Arc<dyn ReplySink>,
    dispatcher: Dispatcher,
    serializer: Option<Arc<dyn Serializer>>,
    telemetry: Telemetry,
    pool_size: u32,
    stop: watch::Receiver<bool>,
) {
    let mut intake = Intake::new(incoming, stop, pool_size);
    let mut seen = DedupCache::new();
    while let Some(request) = intake.next().await {
        let request = match request {
            IncomingRpc::Request(r) => r,
            IncomingRpc::Malformed { error, reply_to } => {
                tracing::error!(error = %error, "rejected a malformed RPC request");
                if let Some((msg_id, reply_q)) = reply_to {
                    let failure = RpcError::type_error(format!("malformed RPC request: {error}"))
                        .into_remote();
                    let replies = replies.clone();
                    tokio::spawn(async move {
                        if let Err(e) = replies.reply(&reply_q, &msg_id, Err(failure)).await {
                            tracing::warn!(msg_id, error = %e, "could not answer a malformed request");
                        }
                    });
                }
                continue;
            }
        };
        if let Some(id) = request.unique_id.as_deref()
            && !seen.insert(id)
        {
            tracing::warn!(unique_id = id, method = %request.request.method, "dropping a duplicate request");
            stats::duplicate("rpc");
            continue;
        }
        let span = telemetry.receive(
            &request.request.method,
            request.msg_id.as_deref(),
            &request.request.context,
        );
        let log_span = tracing::debug_span!(
            "rpc_request",
            method = request.request.method,
            msg_id = request.msg_id.as_deref(),
            trace_id = span.trace_id().as_deref(),
        );
        let job = handle(
            request,
            replies.clone(),
            dispatcher.clone(),
            serializer.clone(),
            span,
        )
        .instrument(log_span);
        if !intake.spawn(Box::pin(job)).await {
            break;
        }
    }
    intake.drain().await;
}

async fn handle(
    incoming: wire::IncomingRequest,
    replies: Arc<dyn ReplySink>,
    dispatcher: Dispatcher,
    serializer: Option<Arc<dyn Serializer>>,
    span: Span,
) {
    let wire::IncomingRequest {
        request,
        msg_id,
        reply_q,
        client_timeout,
        ..
    } = incoming;
    let method = request.method.clone();
    let reply_to = match (msg_id, reply_q) {
        (Some(id), Some(q)) => Some((id, q)),
        (Some(id), None) => {
            tracing::warn!(
                msg_id = id,
                method,
                "a call without _reply_q: no reply can be sent"
            );
            None
        }
        _ => None,
    };
    let heartbeats = match (&reply_to, heartbeat_interval(&client_timeout)) {
        (Some((id, q)), Some(interval)) => Some(spawn_heartbeats(
            replies.clone(),
            q.clone(),
            id.clone(),
            interval,
            span.clone(),
        )),
        _ => None,
    };
    let since = stats::started();
    let in_flight = stats::InFlight::new(stats::RPC_SERVER_IN_FLIGHT);
    let dispatch = span.scope(dispatcher.dispatch(request, client_timeout, serializer));
    let outcome = CatchUnwind::new(dispatch).await.unwrap_or_else(|panic| {
        tracing::error!(method, panic, "an RPC handler panicked");
        Err(RpcError::runtime_error(format!(
            "the handler of {method}() panicked: {panic}"
        )))
    });
    if let Some(hb) = heartbeats {
        hb.abort();
    }
    match &outcome {
        Ok(_) => tracing::trace!(method, "RPC request handled"),
        Err(e) if e.is_expected() => {
            tracing::debug!(method, error = %e, "expected exception during message handling");
        }
        Err(e) if e.is_no_such_method() && method.ends_with("_ignore_errors") => {
            tracing::debug!(method, "method not found");
        }
        Err(e) => tracing::error!(method, error = %e, "exception during message handling"),
    }
    if let Err(e) = &outcome {
        span.fail(&e.to_string());
    }
    drop(in_flight);
    let result = match &outcome {
        Ok(_) => "ok",
        Err(e) if e.is_no_such_method() => "no_such_method",
        Err(_) => "error",
    };
    // A method no endpoint has is a name from the wire: one label for all of them, so a
    // client cannot grow the series without bound.
    let label = if result == "no_such_method" {
        "(unknown)"
    } else {
        method.as_str()
    };
    stats::rpc_server(label, result, since);
    if let Some((msg_id, reply_q)) = reply_to {
        let outcome = outcome.map_err(RpcError::into_remote);
        if let Err(e) = replies.reply(&reply_q, &msg_id, outcome).await {
            tracing::warn!(msg_id, reply_q, method, error = %e, "could not send the reply");
            span.fail(&format!("could not send the reply: {e}"));
        }
    }
    span.end();
}

/// oslo's watchdog: a heartbeat every `interval` until aborted, or until one fails.
fn spawn_heartbeats(
    replies: Arc<dyn ReplySink>,
    reply_q: String,
    msg_id: String,
    interval: Duration,
    span: Span,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker =
            tokio::time::interval_at(crate::driver::deadline_after(interval), interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            tracing::debug!(msg_id, ?interval, "sending call-monitor heartbeat");
            if let Err(e) = replies.heartbeat(&reply_q, &msg_id).await {
                tracing::debug!(msg_id, error = %e, "call-monitor heartbeat failed");
                return;
            }
            span.event("heartbeat sent", None);
        }
    })
}

/// Builds an [`RpcServer`].
///
/// # Examples
///
/// ```
/// use oslo_messaging::rpc::{Endpoint, NoArgs, Request, RpcError, RpcServer};
/// use oslo_messaging::{Target, Transport};
///
/// let transport = Transport::memory();
/// let endpoint = Endpoint::builder()
///     .method("ping", |_r: Request<NoArgs>| async { Ok::<_, RpcError>("pong") })
///     .build()?;
/// let server = RpcServer::builder(&transport, Target::new("compute").with_server("host-1"))
///     .endpoint(endpoint)
///     .executor_pool_size(16)
///     .build()?;
/// // A target without a server is refused.
/// assert!(RpcServer::builder(&transport, Target::new("compute")).build().is_err());
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[must_use]
pub struct RpcServerBuilder {
    transport: Transport,
    target: Target,
    endpoints: Vec<Endpoint>,
    pool_size: Option<usize>,
    ping: Option<bool>,
    serializer: Option<Arc<dyn Serializer>>,
}

impl fmt::Debug for RpcServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcServerBuilder")
            .field("target", &self.target)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl RpcServerBuilder {
    /// Adds an endpoint; requests go to the first compatible endpoint, in the order added.
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoints.push(endpoint);
        self
    }

    /// Handlers run at once (default `[DEFAULT] executor_thread_pool_size`, 64).
    pub fn executor_pool_size(mut self, size: usize) -> Self {
        self.pool_size = Some(size);
        self
    }

    /// Adds the `oslo_rpc_server_ping` method (default `[DEFAULT] rpc_ping_enabled`).
    pub fn ping(mut self, enabled: bool) -> Self {
        self.ping = Some(enabled);
        self
    }

    /// Passes contexts, arguments and results through `serializer`.
    pub fn serializer(mut self, serializer: Arc<dyn Serializer>) -> Self {
        self.serializer = Some(serializer);
        self
    }

    /// The server (not yet started).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidTarget`](crate::ErrorKind::InvalidTarget) unless the target has topic and server;
    /// [`ErrorKind::Configuration`](crate::ErrorKind::Configuration) for a pool size of 0.
    pub fn build(self) -> Result<RpcServer> {
        self.target.require_server_target()?;
        let conf = &self.transport.config().default;
        let pool_size = serve::pool_size(self.pool_size, conf.executor_thread_pool_size)?;
        let ping = self.ping.unwrap_or(conf.rpc_ping_enabled);
        Ok(RpcServer {
            inner: Arc::new(Inner {
                dispatcher: Dispatcher::new(self.endpoints, ping),
                transport: self.transport,
                target: self.target,
                pool_size,
                serializer: self.serializer,
                lifecycle: Lifecycle::new(),
            }),
        })
    }
}
