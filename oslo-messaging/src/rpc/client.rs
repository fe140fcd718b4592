//! The RPC client: call, cast and fanout cast.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::context::Context;
use crate::driver::{CallParams, ReplyReceiver, Retry, SendParams, deadline_after};
use crate::error::{Error, ErrorKind, Result};
use crate::serializer::Serializer;
use crate::stats;
use crate::target::Target;
use crate::telemetry::{Measure, SendKind, Span};
use crate::transport::Transport;
use crate::version::Version;
use crate::wire;

/// Invokes methods on remote servers: cheap to clone, safe to share between tasks.
///
/// * [`call`](Self::call) sends a request and waits for the result (or error) of the one
///   server that takes it;
/// * [`cast`](Self::cast) sends a request and returns once the broker accepted it; with a
///   fanout target it reaches every server on the topic.
///
/// [`prepare`](Self::prepare) returns a copy with some target fields or options overridden, as
/// Python's `client.prepare(...)`.
///
/// # Examples
///
/// ```
/// use oslo_messaging::rpc::{Endpoint, Request, RpcClient, RpcError, RpcServer};
/// use oslo_messaging::{Context, Target, Transport};
/// use serde_json::{json, Value};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> oslo_messaging::Result<()> {
/// let transport = Transport::memory();
/// let echo = Endpoint::builder()
///     .method("echo", |req: Request<Value>| async move { Ok::<_, RpcError>(req.into_args()) })
///     .build()?;
/// let server = RpcServer::builder(&transport, Target::new("demo").with_server("host-1"))
///     .endpoint(echo)
///     .build()?;
/// server.start().await?;
///
/// let client = RpcClient::new(&transport, Target::new("demo"));
/// let reply: Value = client.call(&Context::new(), "echo", &json!({"x": 1})).await?;
/// assert_eq!(reply, json!({"x": 1}));
///
/// server.stop().await;
/// server.wait().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RpcClient {
    transport: Transport,
    target: Target,
    timeout: Option<Duration>,
    version_cap: Option<Version>,
    retry: Retry,
    call_monitor_timeout: Option<Duration>,
    at_least_once: bool,
    serializer: Option<Arc<dyn Serializer>>,
}

impl fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcClient")
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .field("version_cap", &self.version_cap)
            .field("retry", &self.retry)
            .field("call_monitor_timeout", &self.call_monitor_timeout)
            .field("at_least_once", &self.at_least_once)
            .finish_non_exhaustive()
    }
}

impl RpcClient {
    /// A client for `target` (its topic is required when sending).
    pub fn new(transport: &Transport, target: Target) -> Self {
        Self {
            transport: transport.clone(),
            target,
            timeout: None,
            version_cap: None,
            retry: Retry::Forever,
            call_monitor_timeout: None,
            at_least_once: false,
            serializer: None,
        }
    }

    /// Starts building a client for `target`, to set options (the same options as
    /// [`prepare`](Self::prepare) overrides).
    pub fn builder(transport: &Transport, target: Target) -> RpcClientBuilder {
        RpcClientBuilder {
            client: Self::new(transport, target),
        }
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The call timeout in effect.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or_else(|| {
            let secs = self.transport.config().default.rpc_response_timeout.max(0);
            Duration::from_secs(secs.unsigned_abs())
        })
    }

    /// Starts a copy of this client with some target fields or options overridden (Python's
    /// `prepare()`).
    ///
    /// # Examples
    ///
    /// ```
    /// use oslo_messaging::{RpcClient, Target, Transport, Version};
    ///
    /// let transport = Transport::memory();
    /// let client = RpcClient::new(&transport, Target::new("compute"));
    /// let to_host = client.prepare().server("host-1").version("5.1".parse()?).build()?;
    /// assert_eq!(to_host.target().server(), Some("host-1"));
    /// assert_eq!(to_host.target().version(), Some(&Version::new(5, 1)));
    /// # Ok::<(), oslo_messaging::Error>(())
    /// ```
    pub fn prepare(&self) -> RpcClientBuilder {
        RpcClientBuilder {
            client: self.clone(),
        }
    }

    /// Whether a request at `version` (default: the target's) passes the version cap.
    pub fn can_send_version(&self, version: Option<&Version>) -> bool {
        let version = version.or(self.target.version());
        crate::version::is_compatible(self.version_cap.as_ref(), version)
    }

    fn check_version_cap(&self) -> Result<()> {
        if self.can_send_version(None) {
            return Ok(());
        }
        let version = self
            .target
            .version()
            .map_or_else(|| "None".to_owned(), ToString::to_string);
        let cap = self.version_cap.map(|c| c.to_string()).unwrap_or_default();
        Err(Error::new(
            ErrorKind::VersionCap,
            format!(
                "Requested message version, {version} is incompatible.  It needs to be equal in major version and less than or equal in minor version as the specified version cap {cap}."
            ),
        ))
    }

    fn make_request(
        &self,
        ctx: &Context,
        method: &str,
        args: &(impl Serialize + ?Sized),
    ) -> Result<wire::Request> {
        self.check_version_cap()?;
        let value = serde_json::to_value(args).map_err(|e| {
            Error::serialization(format!("cannot serialize the arguments of {method}(): {e}"))
        })?;
        let args = match value {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => {
                return Err(Error::serialization(format!(
                    "the arguments of {method}() must serialize to a JSON object of keyword arguments, not {}",
                    crate::context::json_type_name(&other)
                )));
            }
        };
        let (context, args) = match &self.serializer {
            None => (ctx.clone(), args),
            Some(s) => {
                let mut out = Map::with_capacity(args.len());
                for (k, v) in args {
                    out.insert(k, s.serialize_entity(ctx, v)?);
                }
                (s.serialize_context(ctx)?, out)
            }
        };
        Ok(wire::Request {
            method: method.to_owned(),
            args,
            namespace: self.target.namespace().map(str::to_owned),
            version: self.target.version().map(ToString::to_string),
            context,
        })
    }

    /// Calls `method` with keyword arguments `args` and waits for its result.
    ///
    /// `args` must serialize to a JSON object (or `()`, for none); the result is deserialized
    /// into `R` (use `serde_json::Value` to take it as it comes).
    ///
    /// On RabbitMQ the call's timeout bounds the send (reconnecting while the broker is
    /// unreachable, as `retry` allows, and waiting for the broker to confirm the request), and
    /// the reply timer starts once the broker has the request, as in Python; so a call takes
    /// at most about twice its timeout.
    ///
    /// # Errors
    ///
    /// * [`ErrorKind::InvalidTarget`]: no topic, or a fanout target;
    /// * [`ErrorKind::VersionCap`]: the target version is above the cap;
    /// * [`ErrorKind::Serialization`]: arguments or result do not convert;
    /// * [`ErrorKind::Remote`]: the method raised; see [`Error::remote_error`];
    /// * [`ErrorKind::Timeout`]: no reply (or, with call monitoring, no heartbeat) in time; the
    ///   message names the request's message ID;
    /// * [`ErrorKind::Undeliverable`]: with at-least-once, no queue took the request;
    /// * [`ErrorKind::DeliveryFailure`], [`ErrorKind::ShutDown`]: the publish failed.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future (a `select!` branch losing, a `tokio::time::timeout`) forgets the
    /// call: its reply waiter is removed and a late reply is dropped. If the request was
    /// already published, the server still runs the method.
    pub async fn call<R: DeserializeOwned>(
        &self,
        ctx: &Context,
        method: &str,
        args: &(impl Serialize + ?Sized),
    ) -> Result<R> {
        if self.target.fanout() {
            return Err(Error::invalid_target(format!(
                "A call cannot be used with fanout (target {})",
                self.target
            )));
        }
        self.target.require_topic()?;
        let mut request = self.make_request(ctx, method, args)?;
        let span = self.transport.telemetry().send(
            &self.target,
            method,
            SendKind::Call,
            &mut request.context,
        );
        let log_span = tracing::debug_span!(
            "rpc_call",
            topic = self.target.topic(),
            method,
            msg_id = tracing::field::Empty,
            trace_id = span.trace_id().as_deref(),
        );
        let ending = Ending::start(self, method, SendKind::Call, span.clone());
        let result = self
            .call_traced(ctx, request, &span, &log_span)
            .instrument(log_span.clone())
            .await;
        ending.finish(&result);
        let result = result?;
        serde_json::from_value(result).map_err(|e| {
            Error::serialization(format!(
                "the result of {method}() does not convert to the expected type: {e}"
            ))
        })
    }

    /// The send and the wait of a call, under its spans.
    async fn call_traced(
        &self,
        ctx: &Context,
        request: wire::Request,
        span: &Span,
        log_span: &tracing::Span,
    ) -> Result<Value> {
        let timeout = self.timeout();
        let receiver = self
            .transport
            .driver()
            .send(SendParams {
                target: self.target.clone(),
                request,
                call: Some(CallParams {
                    timeout,
                    call_monitor_timeout: self.call_monitor_timeout,
                }),
                retry: self.retry,
                at_least_once: self.at_least_once,
            })
            .await?
            .ok_or_else(|| Error::transport("the driver returned no reply receiver for a call"))?;
        log_span.record("msg_id", receiver.msg_id());
        span.event("request sent", Some(receiver.msg_id()));
        let result =
            wait_for_reply(receiver, timeout, self.call_monitor_timeout, span.clone()).await?;
        span.event("reply received", None);
        match &self.serializer {
            None => Ok(result),
            Some(s) => s.deserialize_entity(ctx, result),
        }
    }

    /// Sends `method` without waiting for a result; returns once the broker accepted it.
    /// With a fanout target, every server on the topic receives it.
    ///
    /// # Errors
    ///
    /// As [`call`](Self::call), except `Remote` and `Timeout`.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe as to delivery: dropping the future stops the retries, but a request
    /// already handed to the connection is sent, and the server runs it; only the broker's
    /// confirm goes unheard. Dropped before that, nothing is sent.
    pub async fn cast(
        &self,
        ctx: &Context,
        method: &str,
        args: &(impl Serialize + ?Sized),
    ) -> Result<()> {
        self.target.require_topic()?;
        let mut request = self.make_request(ctx, method, args)?;
        let span = self.transport.telemetry().send(
            &self.target,
            method,
            SendKind::Cast,
            &mut request.context,
        );
        let ending = Ending::start(self, method, SendKind::Cast, span);
        let sent = self
            .transport
            .driver()
            .send(SendParams {
                target: self.target.clone(),
                request,
                call: None,
                retry: self.retry,
                at_least_once: self.at_least_once,
            })
            .await;
        ending.finish(&sent);
        sent.map(drop)
    }
}

/// What a call or cast records when it ends (its span, its oslo.metrics measurement, its
/// counters); dropped unfinished, because the caller dropped the future, it records the
/// call as cancelled.
struct Ending<'a> {
    span: Span,
    measure: Option<Measure>,
    since: Option<std::time::Instant>,
    kind: &'static str,
    method: &'a str,
    _in_flight: stats::InFlight,
    done: bool,
}

impl<'a> Ending<'a> {
    fn start(client: &RpcClient, method: &'a str, kind: SendKind, span: Span) -> Self {
        let telemetry = client.transport.telemetry();
        Self {
            span,
            measure: telemetry.measure(&client.target, method, kind),
            since: stats::started(),
            kind: match kind {
                SendKind::Call => "call",
                SendKind::Cast if client.target.fanout() => "fanout",
                SendKind::Cast => "cast",
            },
            method,
            _in_flight: stats::InFlight::new(stats::RPC_CLIENT_IN_FLIGHT),
            done: false,
        }
    }

    fn finish<T>(mut self, result: &Result<T>) {
        self.done = true;
        if let Err(e) = result {
            self.span.fail(&e.to_string());
        }
        self.span.end();
        if let Some(m) = self.measure.take() {
            m.finish(result);
        }
        let outcome = stats::outcome(result.as_ref().err());
        stats::rpc_client(self.kind, self.method, outcome, self.since);
    }
}

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.span.fail("cancelled: the caller stopped waiting");
        self.span.end();
        if let Some(m) = self.measure.take() {
            m.cancelled();
        }
        stats::rpc_client(self.kind, self.method, "cancelled", self.since);
    }
}

/// Waits for the final reply of a call, applying the call timeout and the call monitor.
///
/// A reply with a failure ends the call with that failure; a reply with a non-null result is
/// kept (the legacy two-message protocol sends the result first, then `ending`); `ending: true`
/// ends the call; a null, non-ending reply is a heartbeat and restarts the monitor timer.
pub(crate) async fn wait_for_reply(
    mut receiver: ReplyReceiver,
    timeout: Duration,
    call_monitor_timeout: Option<Duration>,
    span: Span,
) -> Result<Value> {
    let deadline = deadline_after(timeout);
    let mut monitor_deadline = call_monitor_timeout.map(deadline_after);
    let mut result = Value::Null;
    loop {
        let wake = monitor_deadline.map_or(deadline, |m| m.min(deadline));
        let reply = match tokio::time::timeout_at(wake, receiver.recv()).await {
            Ok(reply) => reply?,
            Err(_) => {
                return Err(Error::timeout(format!(
                    "Timed out waiting for a reply to message ID {}",
                    receiver.msg_id()
                )));
            }
        };
        if let Some(failure) = reply.failure {
            return Err(Error::remote(failure));
        }
        let heartbeat = reply.result.is_null() && !reply.ending;
        if !reply.result.is_null() {
            result = reply.result;
        }
        if reply.ending {
            return Ok(result);
        }
        if heartbeat {
            span.event("heartbeat received", Some(receiver.msg_id()));
            tracing::debug!(
                msg_id = receiver.msg_id(),
                "call-monitor heartbeat received"
            );
            if let Some(d) = call_monitor_timeout {
                monitor_deadline = Some(deadline_after(d));
            }
        }
    }
}

/// Builds an [`RpcClient`]: from defaults ([`RpcClient::builder`]) or from another client
/// ([`RpcClient::prepare`]).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use oslo_messaging::{Retry, RpcClient, Target, Transport};
///
/// let transport = Transport::memory();
/// let client = RpcClient::builder(&transport, Target::new("compute"))
///     .timeout(Duration::from_secs(30))
///     .call_monitor_timeout(Duration::from_secs(10))
///     .retry(Retry::Times(2))
///     .version_cap("5.1".parse()?)
///     .build()?;
/// assert_eq!(client.timeout(), Duration::from_secs(30));
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct RpcClientBuilder {
    client: RpcClient,
}

impl RpcClientBuilder {
    fn set_target(mut self, f: impl FnOnce(&mut Target)) -> Self {
        f(&mut self.client.target);
        self
    }

    /// Sets the exchange.
    pub fn exchange(self, exchange: impl Into<String>) -> Self {
        let e = exchange.into();
        self.set_target(|t| t.set_exchange(Some(e)))
    }

    /// Sets the topic.
    pub fn topic(self, topic: impl Into<String>) -> Self {
        let v = topic.into();
        self.set_target(|t| t.set_topic(Some(v)))
    }

    /// Sets the namespace.
    pub fn namespace(self, namespace: impl Into<String>) -> Self {
        let v = namespace.into();
        self.set_target(|t| t.set_namespace(Some(v)))
    }

    /// Sets the version requests ask for (`"5.1".parse()?`).
    pub fn version(self, version: Version) -> Self {
        self.set_target(|t| t.set_version(Some(version)))
    }

    /// Directs requests to one server.
    pub fn server(self, server: impl Into<String>) -> Self {
        let v = server.into();
        self.set_target(|t| t.set_server(Some(v)))
    }

    /// Sends casts to every server of the topic.
    pub fn fanout(mut self, fanout: bool) -> Self {
        self.client.target = self.client.target.with_fanout(fanout);
        self
    }

    /// Removes the server: requests go to the topic again (Python's `prepare(server=None)`).
    pub fn clear_server(self) -> Self {
        self.set_target(|t| t.set_server(None))
    }

    /// Removes the namespace.
    pub fn clear_namespace(self) -> Self {
        self.set_target(|t| t.set_namespace(None))
    }

    /// Removes the exchange: the transport's control exchange applies.
    pub fn clear_exchange(self) -> Self {
        self.set_target(|t| t.set_exchange(None))
    }

    /// Removes the version (requests then mean 1.0).
    pub fn clear_version(self) -> Self {
        self.set_target(|t| t.set_version(None))
    }

    /// Sets the call timeout (default `[DEFAULT] rpc_response_timeout`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.client.timeout = Some(timeout);
        self
    }

    /// Caps the version of requests this client sends.
    pub fn version_cap(mut self, cap: Version) -> Self {
        self.client.version_cap = Some(cap);
        self
    }

    /// Sets how often a publish may reconnect (default: forever).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.client.retry = retry;
        self
    }

    /// Enables call monitoring: servers heartbeat every half of `timeout`, and a call fails
    /// when nothing arrives for `timeout` (the overall call timeout still applies).
    pub fn call_monitor_timeout(mut self, timeout: Duration) -> Self {
        self.client.call_monitor_timeout = Some(timeout);
        self
    }

    /// Turns call monitoring off.
    pub fn clear_call_monitor_timeout(mut self) -> Self {
        self.client.call_monitor_timeout = None;
        self
    }

    /// Publishes requests mandatory: a request no server's queue takes fails at once with
    /// [`ErrorKind::Undeliverable`] instead of timing out (oslo's
    /// `TransportOptions(at_least_once=True)`).
    pub fn at_least_once(mut self, at_least_once: bool) -> Self {
        self.client.at_least_once = at_least_once;
        self
    }

    /// Passes arguments, results and the context through `serializer`.
    pub fn serializer(mut self, serializer: Arc<dyn Serializer>) -> Self {
        self.client.serializer = Some(serializer);
        self
    }

    /// The client.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidTarget`] when the target has no topic: nothing could be sent.
    pub fn build(self) -> Result<RpcClient> {
        self.client.target.require_topic()?;
        Ok(self.client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::ReplyWaiters;
    use serde_json::json;
    use tokio::time::Instant;

    fn reply(result: Value, ending: bool) -> wire::Reply {
        wire::Reply {
            msg_id: Some("m".into()),
            result,
            failure: None,
            ending,
            unique_id: None,
        }
    }

    fn setup() -> (Arc<ReplyWaiters>, ReplyReceiver) {
        let w = Arc::new(ReplyWaiters::default());
        let r = w.register("m".into());
        (w, r)
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_with_the_message_id() {
        let (_w, r) = setup();
        let err = wait_for_reply(r, Duration::from_secs(5), None, Span::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(err.to_string().contains("message ID m"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_keep_a_monitored_call_alive() {
        let (w, r) = setup();
        let waiter = tokio::spawn(wait_for_reply(
            r,
            Duration::from_secs(3600),
            Some(Duration::from_secs(2)),
            Span::default(),
        ));
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert!(w.deliver(reply(Value::Null, false)));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(w.deliver(reply(json!(4), true)));
        assert_eq!(waiter.await.unwrap().unwrap(), json!(4));
    }

    #[tokio::test(start_paused = true)]
    async fn missing_heartbeat_fails_the_call_monitor() {
        let (w, r) = setup();
        let waiter = tokio::spawn(wait_for_reply(
            r,
            Duration::from_secs(3600),
            Some(Duration::from_secs(2)),
            Span::default(),
        ));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        w.deliver(reply(Value::Null, false));
        let err = waiter.await.unwrap().unwrap_err();
        assert!(err.is_timeout());
        // Failed at about 1.5 + 2 s, far before the 3600 s call timeout.
        assert!(Instant::now().elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn legacy_two_message_reply_keeps_the_result() {
        let (w, r) = setup();
        w.deliver(reply(json!({"a": 1}), false));
        w.deliver(reply(Value::Null, true));
        assert_eq!(
            wait_for_reply(r, Duration::from_secs(5), None, Span::default())
                .await
                .unwrap(),
            json!({"a": 1})
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failure_ends_the_call() {
        let (w, r) = setup();
        let mut f = reply(Value::Null, true);
        f.failure = Some(crate::RemoteError::new("builtins", "ValueError", "bad"));
        w.deliver(f);
        let err = wait_for_reply(r, Duration::from_secs(5), None, Span::default())
            .await
            .unwrap_err();
        assert_eq!(err.remote_error().unwrap().class(), "ValueError");
    }
}
