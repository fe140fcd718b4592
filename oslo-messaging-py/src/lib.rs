//! The Rust engine as a driver for Python oslo.messaging: the extension module
//! `oslo_messaging_rs._engine`.
//!
//! The Python package `oslo_messaging_rs` (in `python/`) registers the `rabbitrs` driver with
//! oslo.messaging and subclasses oslo's driver classes; each of them holds one of the objects
//! below and does its work through it. Everything that talks to RabbitMQ runs on the engine's
//! runtime (see the `engine` module), off the GIL and off eventlet's hub.
//!
//! Errors cross as `EngineError(kind, message, detail)`; the shim raises oslo's own exception
//! classes from them.

mod convert;
mod engine;
mod logs;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use oslo_messaging::driver_api::{self, Acker, Control, Replier, SeenIds};
use oslo_messaging::wire;
use oslo_messaging::{Config, Context, ErrorKind, RemoteError, Retry, Target};
use pyo3::exceptions::{PyException, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde_json::Value;

use convert::{to_json, to_json_object, to_py, to_py_dict};
use engine::{InFlight, Mode, Pending, REPLY_DRAIN, submit, submit_with};

pyo3::create_exception!(
    _engine,
    EngineError,
    PyException,
    "An engine failure: args are (kind, message, detail)."
);

/// The Python form of a library error: `EngineError(kind, message, detail)`, where `detail`
/// is the failure's JSON for a remote error and `(exchange, routing_key)` for an
/// undeliverable message.
fn engine_error(py: Python<'_>, e: &oslo_messaging::Error) -> PyErr {
    let kind = match e.kind() {
        ErrorKind::Timeout => "timeout",
        ErrorKind::DeliveryFailure => "delivery_failure",
        ErrorKind::Undeliverable => "undeliverable",
        ErrorKind::Remote => "remote",
        ErrorKind::ShutDown => "shut_down",
        ErrorKind::InvalidTarget => "invalid_target",
        ErrorKind::InvalidUrl | ErrorKind::Configuration => "configuration",
        ErrorKind::Serialization => "serialization",
        ErrorKind::Blocked => "blocked",
        _ => "transport",
    };
    let detail: Py<PyAny> = if let Some(remote) = e.remote_error() {
        remote
            .to_json()
            .into_pyobject(py)
            .map_or_else(|_| py.None(), |s| s.into_any().unbind())
    } else if e.kind() == ErrorKind::Undeliverable {
        (e.exchange().unwrap_or(""), e.routing_key().unwrap_or(""))
            .into_pyobject(py)
            .map_or_else(|_| py.None(), |t| t.into_any().unbind())
    } else {
        py.None()
    };
    EngineError::new_err((kind, e.to_string(), detail))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn seconds(s: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        PyTypeError::new_err(format!("{what} must be a number of seconds ≥ 0, not {s}"))
    })
}

/// A target as the shim passes it: `(exchange, topic, server, fanout)`.
type TargetSpec = (Option<String>, String, Option<String>, bool);

fn target((exchange, topic, server, fanout): TargetSpec) -> Target {
    let mut t = Target::new(topic).with_fanout(fanout);
    if let Some(e) = exchange {
        t = t.with_exchange(e);
    }
    if let Some(s) = server {
        t = t.with_server(s);
    }
    t
}

/// Python's request message (`{"method", "args", ["namespace"], ["version"]}`) and context.
fn request(ctxt: &Bound<'_, PyAny>, message: &Bound<'_, PyAny>) -> PyResult<wire::Request> {
    let mut message = to_json_object(message, "the message")?;
    let Some(Value::String(method)) = message.remove("method") else {
        return Err(PyTypeError::new_err("the message has no method name"));
    };
    let args = match message.remove("args") {
        Some(Value::Object(a)) => a,
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(_) => return Err(PyTypeError::new_err("the message's args must be a dict")),
    };
    let context = Context::from_map(to_json_object(ctxt, "the context")?);
    let mut request = wire::Request::new(method, args, context);
    request.namespace = opt_string(message.remove("namespace"));
    request.version = opt_string(message.remove("version"));
    Ok(request)
}

fn opt_string(v: Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    }
}

fn none(py: Python<'_>) -> PyResult<Py<PyAny>> {
    Ok(py.None())
}

/// One transport: the connections of one URL and configuration, per process.
#[pyclass(module = "oslo_messaging_rs._engine", frozen)]
struct Transport {
    url: String,
    ini: String,
    exchange: String,
    /// The transport, the replies its RPC servers are still sending, and the process that
    /// built them: a forked child builds its own.
    inner: Mutex<Option<(u32, oslo_messaging::Transport, InFlight)>>,
}

impl Transport {
    fn build(&self, py: Python<'_>) -> PyResult<oslo_messaging::Transport> {
        let config = Config::builder()
            .ini_str(self.ini.clone())
            .control_exchange(self.exchange.clone())
            .build()
            .map_err(|e| engine_error(py, &e))?;
        engine::enter(|| oslo_messaging::Transport::with_config(&self.url, &config))?
            .map_err(|e| engine_error(py, &e))
    }

    fn get(&self, py: Python<'_>) -> PyResult<oslo_messaging::Transport> {
        Ok(self.get_with_replies(py)?.0)
    }

    fn get_with_replies(&self, py: Python<'_>) -> PyResult<(oslo_messaging::Transport, InFlight)> {
        let pid = std::process::id();
        let mut inner = lock(&self.inner);
        if let Some((owner, t, replies)) = inner.as_ref()
            && *owner == pid
        {
            return Ok((t.clone(), replies.clone()));
        }
        if let Some(inherited) = inner.take() {
            // Its connections and tasks belong to the parent process.
            std::mem::forget(inherited);
        }
        let t = self.build(py)?;
        let replies = InFlight::default();
        *inner = Some((pid, t.clone(), replies.clone()));
        Ok((t, replies))
    }
}

/// Waits (up to [`REPLY_DRAIN`]) for the replies still being sent, then says how many it
/// leaves behind.
async fn drain_replies(replies: &InFlight) {
    let left = replies.drain(REPLY_DRAIN).await;
    if left > 0 {
        tracing::warn!(
            left,
            "cleaning up with replies still unsent after {} s",
            REPLY_DRAIN.as_secs()
        );
    }
}

#[pymethods]
impl Transport {
    /// `url`: `rabbit://` with the hosts, credentials and virtual host, no query; `ini`: the
    /// `[oslo_messaging_rabbit]` options as the service's configuration resolves them;
    /// `exchange`: the default exchange.
    #[new]
    fn new(py: Python<'_>, url: String, ini: String, exchange: String) -> PyResult<Self> {
        let t = Self {
            url,
            ini,
            exchange,
            inner: Mutex::new(None),
        };
        t.get(py)?;
        Ok(t)
    }

    /// Sends a call; the pending result is the call's result.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (target, ctxt, message, timeout, call_monitor_timeout, retry, at_least_once))]
    fn call(
        &self,
        py: Python<'_>,
        target: TargetSpec,
        ctxt: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
        timeout: f64,
        call_monitor_timeout: Option<f64>,
        retry: i64,
        at_least_once: bool,
    ) -> PyResult<Pending> {
        let request = request(ctxt, message)?;
        let timeout = seconds(timeout, "timeout")?;
        // oslo treats any falsy call_monitor_timeout as no call monitoring.
        let monitor = call_monitor_timeout
            .filter(|s| *s > 0.0)
            .map(|s| seconds(s, "call_monitor_timeout"))
            .transpose()?;
        let transport = self.get(py)?;
        let target = self::target(target);
        submit(
            async move {
                driver_api::call(
                    &transport,
                    target,
                    request,
                    timeout,
                    monitor,
                    Retry::from_python(retry),
                    at_least_once,
                )
                .await
            },
            |py, out| match out {
                Ok(v) => Ok(to_py(py, &v)?.unbind()),
                Err(e) => Err(engine_error(py, &e)),
            },
        )
    }

    /// Sends a cast (fanout when the target says so).
    fn cast(
        &self,
        py: Python<'_>,
        target: TargetSpec,
        ctxt: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
        retry: i64,
        at_least_once: bool,
    ) -> PyResult<Pending> {
        let request = request(ctxt, message)?;
        let transport = self.get(py)?;
        let target = self::target(target);
        submit(
            async move {
                driver_api::cast(
                    &transport,
                    target,
                    request,
                    Retry::from_python(retry),
                    at_least_once,
                )
                .await
            },
            unit,
        )
    }

    /// Sends a notification; `target` is `(exchange, "<topic>.<priority>")`.
    fn notify(
        &self,
        py: Python<'_>,
        target: (Option<String>, String),
        ctxt: &Bound<'_, PyAny>,
        message: &Bound<'_, PyAny>,
        envelope: bool,
        retry: i64,
    ) -> PyResult<Pending> {
        let mut m = to_json_object(message, "the notification")?;
        let text = |v: Option<Value>| opt_string(v).unwrap_or_default();
        let mut n = wire::Notification::new(
            text(m.remove("event_type")),
            text(m.remove("priority")),
            m.remove("payload").unwrap_or(Value::Null),
        );
        if let Some(id) = opt_string(m.remove("message_id")) {
            n.message_id = id;
        }
        n.publisher_id = opt_string(m.remove("publisher_id"));
        if let Some(ts) = opt_string(m.remove("timestamp")) {
            n.timestamp = ts;
        }
        n.context = Context::from_map(to_json_object(ctxt, "the context")?);
        let transport = self.get(py)?;
        let target = self::target((target.0, target.1, None, false));
        submit(
            async move {
                driver_api::notify(&transport, target, n, envelope, Retry::from_python(retry)).await
            },
            unit,
        )
    }

    /// Starts an RPC listener for `(exchange, topic, server)`; pending until its queues exist.
    fn listen(
        &self,
        py: Python<'_>,
        target: (Option<String>, String, Option<String>),
    ) -> PyResult<Pending> {
        let (transport, replies) = self.get_with_replies(py)?;
        let target = self::target((target.0, target.1, target.2, false));
        submit(
            async move { driver_api::listen(&transport, target).await },
            |py, out| match out {
                Ok(l) => {
                    let listener = RpcListener {
                        control: l.control(),
                        inner: Arc::new(tokio::sync::Mutex::new(l)),
                        replies,
                    };
                    Ok(Py::new(py, listener)?.into_any())
                }
                Err(e) => Err(engine_error(py, &e)),
            },
        )
    }

    /// Starts a notification listener for `[(exchange, "<topic>.<priority>")]`, on the shared
    /// queue `pool` when given.
    #[pyo3(signature = (targets, pool=None))]
    fn listen_for_notifications(
        &self,
        py: Python<'_>,
        targets: Vec<(Option<String>, String)>,
        pool: Option<String>,
    ) -> PyResult<Pending> {
        let transport = self.get(py)?;
        let targets = targets
            .into_iter()
            .map(|(e, t)| self::target((e, t, None, false)))
            .collect();
        submit(
            async move { driver_api::listen_for_notifications(&transport, targets, pool).await },
            |py, out| match out {
                Ok(l) => {
                    let listener = NotificationListener {
                        control: l.control(),
                        prefetch: l.prefetch(),
                        seen: l.seen_ids(),
                        inner: Arc::new(tokio::sync::Mutex::new(l)),
                    };
                    Ok(Py::new(py, listener)?.into_any())
                }
                Err(e) => Err(engine_error(py, &e)),
            },
        )
    }

    /// The broker's reason while it blocks publishing, else `None`.
    fn blocked(&self, py: Python<'_>) -> PyResult<Option<String>> {
        Ok(self.get(py)?.blocked())
    }

    /// Closes the connections, once the replies still being sent are sent (or after
    /// [`REPLY_DRAIN`]); later sends fail.
    fn cleanup(&self, py: Python<'_>) -> PyResult<Pending> {
        let (transport, replies) = self.get_with_replies(py)?;
        submit(
            async move {
                drain_replies(&replies).await;
                transport.cleanup().await
            },
            |py, ()| none(py),
        )
    }
}

fn unit(py: Python<'_>, out: oslo_messaging::Result<()>) -> PyResult<Py<PyAny>> {
    match out {
        Ok(()) => none(py),
        Err(e) => Err(engine_error(py, &e)),
    }
}

/// What a batch is collected from.
trait Source {
    type Item: Send;
    fn next(&mut self) -> impl std::future::Future<Output = Option<Self::Item>> + Send + '_;
}

impl Source for driver_api::RpcListener {
    type Item = driver_api::IncomingRequest;
    fn next(&mut self) -> impl std::future::Future<Output = Option<Self::Item>> + Send + '_ {
        // The inherent method, not this one.
        Self::next(self)
    }
}

impl Source for driver_api::NotificationListener {
    type Item = driver_api::IncomingNotification;
    fn next(&mut self) -> impl std::future::Future<Output = Option<Self::Item>> + Send + '_ {
        // The inherent method, not this one.
        Self::next(self)
    }
}

/// Collects up to `batch_size` items as oslo's `batch_poll_helper` does: the whole poll is
/// bounded by `batch_timeout`, or else `timeout`, from its start (unbounded when both are
/// `None`), and it ends at the first wait that times out or finds the source ended.
async fn batch<S: Source>(
    source: &mut S,
    batch_size: usize,
    batch_timeout: Option<Duration>,
    timeout: Option<Duration>,
) -> Vec<S::Item> {
    let deadline = batch_timeout
        .or(timeout)
        .and_then(|limit| tokio::time::Instant::now().checked_add(limit));
    let mut out = Vec::new();
    while out.len() < batch_size.max(1) {
        let next = match deadline {
            Some(d) => tokio::time::timeout_at(d, source.next())
                .await
                .ok()
                .flatten(),
            None => source.next().await,
        };
        match next {
            Some(x) => out.push(x),
            None => break,
        }
    }
    out
}

/// A listener's `poll`: a batch from `source`, each item made a Python object by `wrap`.
/// Cancelled if its waiter goes away: it must not take the next messages and drop them.
fn poll<S>(
    source: &Arc<tokio::sync::Mutex<S>>,
    batch_size: usize,
    batch_timeout: Option<f64>,
    timeout: Option<f64>,
    wrap: impl Fn(Python<'_>, S::Item) -> PyResult<Py<PyAny>> + Send + 'static,
) -> PyResult<Pending>
where
    S: Source + Send + 'static,
{
    let batch_timeout = batch_timeout
        .map(|s| seconds(s, "batch_timeout"))
        .transpose()?;
    let timeout = timeout.map(|s| seconds(s, "timeout")).transpose()?;
    let source = source.clone();
    submit_with(
        async move {
            let mut s = source.lock().await;
            batch(&mut *s, batch_size, batch_timeout, timeout).await
        },
        move |py, items| {
            let list = PyList::empty(py);
            for item in items {
                list.append(wrap(py, item)?)?;
            }
            Ok(list.into_any().unbind())
        },
        Mode::POLL,
    )
}

/// A listener's `stop`.
fn stop(control: &Control) -> PyResult<Pending> {
    let control = control.clone();
    submit(async move { control.stop().await }, |py, ()| none(py))
}

/// A listener's `cleanup`.
fn cleanup(control: &Control) -> PyResult<Pending> {
    let control = control.clone();
    submit(async move { control.cleanup().await }, |py, ()| none(py))
}

/// An RPC listener: requests, already acknowledged, in batches.
#[pyclass(module = "oslo_messaging_rs._engine", frozen)]
struct RpcListener {
    inner: Arc<tokio::sync::Mutex<driver_api::RpcListener>>,
    control: Control,
    /// Its transport's replies that are still being sent.
    replies: InFlight,
}

#[pymethods]
impl RpcListener {
    /// Up to `batch_size` requests, as `RpcIncoming` objects; an empty list when `timeout`
    /// passed first or the listener stopped and is drained.
    #[pyo3(signature = (batch_size=1, batch_timeout=None, timeout=None))]
    fn poll(
        &self,
        batch_size: usize,
        batch_timeout: Option<f64>,
        timeout: Option<f64>,
    ) -> PyResult<Pending> {
        let replies = self.replies.clone();
        poll(
            &self.inner,
            batch_size,
            batch_timeout,
            timeout,
            move |py, r| Ok(Py::new(py, RpcIncoming::new(py, r, replies.clone())?)?.into_any()),
        )
    }

    /// Stops taking requests; `poll` then hands out what was received, then empty lists.
    fn stop(&self) -> PyResult<Pending> {
        stop(&self.control)
    }

    /// Releases the listener's queues and connection, once the replies still being sent are
    /// sent (or after [`REPLY_DRAIN`]).
    fn cleanup(&self) -> PyResult<Pending> {
        let control = self.control.clone();
        let replies = self.replies.clone();
        submit(
            async move {
                drain_replies(&replies).await;
                control.cleanup().await
            },
            |py, ()| none(py),
        )
    }
}

/// One RPC request, as oslo's incoming message holds it.
#[pyclass(module = "oslo_messaging_rs._engine", frozen)]
struct RpcIncoming {
    /// The context, un-prefixed, plus `client_timeout`.
    #[pyo3(get)]
    ctxt: Py<PyDict>,
    /// `{"method", "args", ["namespace"], ["version"]}`.
    #[pyo3(get)]
    message: Py<PyDict>,
    #[pyo3(get)]
    msg_id: Option<String>,
    #[pyo3(get)]
    reply_q: Option<String>,
    #[pyo3(get)]
    unique_id: Option<String>,
    #[pyo3(get)]
    client_timeout: Py<PyAny>,
    replier: Option<Replier>,
    replies: InFlight,
}

impl RpcIncoming {
    fn new(
        py: Python<'_>,
        incoming: driver_api::IncomingRequest,
        replies: InFlight,
    ) -> PyResult<Self> {
        let replier = incoming.replier();
        let r = incoming.request;
        let ctxt = to_py_dict(py, r.request.context.as_map())?;
        let client_timeout = to_py(py, &r.client_timeout)?;
        ctxt.set_item("client_timeout", &client_timeout)?;
        let message = PyDict::new(py);
        message.set_item("method", &r.request.method)?;
        message.set_item("args", to_py_dict(py, &r.request.args)?)?;
        if let Some(ns) = &r.request.namespace {
            message.set_item("namespace", ns)?;
        }
        if let Some(v) = &r.request.version {
            message.set_item("version", v)?;
        }
        Ok(Self {
            ctxt: ctxt.unbind(),
            message: message.unbind(),
            msg_id: r.msg_id,
            reply_q: r.reply_q,
            unique_id: r.unique_id,
            client_timeout: client_timeout.unbind(),
            replier,
            replies,
        })
    }
}

#[pymethods]
impl RpcIncoming {
    /// Hands the final reply to the engine: `failure` (oslo's serialized exception, a JSON
    /// string) when set, else `result`; nothing for a cast. Returns at once: the engine sends
    /// it (confirmed by the broker, sent again while its reply queue is missing, as before)
    /// and logs a failure; the listener's and the transport's cleanup wait for it. A result
    /// that JSON cannot carry raises here.
    #[pyo3(signature = (result=None, failure=None))]
    fn reply(&self, result: Option<&Bound<'_, PyAny>>, failure: Option<&str>) -> PyResult<()> {
        let outcome = match failure {
            Some(f) => Err(RemoteError::from_json(f).map_err(|e| {
                PyTypeError::new_err(format!("the failure is not a serialized exception: {e}"))
            })?),
            None => Ok(match result {
                Some(r) => to_json(r, "the result")?,
                None => Value::Null,
            }),
        };
        let Some(replier) = self.replier.clone() else {
            return Ok(());
        };
        let in_flight = self.replies.enter();
        let msg_id = self.msg_id.clone().unwrap_or_default();
        engine::spawn(async move {
            let _in_flight = in_flight;
            if let Err(e) = replier.reply(outcome).await {
                tracing::warn!(msg_id, error = %e, "could not send a reply");
            }
        })
    }

    /// Sends a call-monitor heartbeat.
    fn heartbeat(&self) -> PyResult<Pending> {
        let replier = self.replier.clone();
        submit(
            async move {
                match replier {
                    Some(r) => r.heartbeat().await,
                    None => Ok(()),
                }
            },
            unit,
        )
    }
}

/// A notification listener: notifications in batches, each to acknowledge or requeue.
#[pyclass(module = "oslo_messaging_rs._engine", frozen)]
struct NotificationListener {
    inner: Arc<tokio::sync::Mutex<driver_api::NotificationListener>>,
    control: Control,
    prefetch: Option<usize>,
    seen: SeenIds,
}

#[pymethods]
impl NotificationListener {
    /// `rabbit_qos_prefetch_count` when set: batches are capped at it.
    #[getter]
    fn prefetch(&self) -> Option<usize> {
        self.prefetch
    }

    /// Up to `batch_size` notifications, as `NotificationIncoming` objects; an empty list when
    /// `timeout` passed first or the listener stopped and is drained.
    #[pyo3(signature = (batch_size=1, batch_timeout=None, timeout=None))]
    fn poll(
        &self,
        batch_size: usize,
        batch_timeout: Option<f64>,
        timeout: Option<f64>,
    ) -> PyResult<Pending> {
        let seen = self.seen.clone();
        poll(
            &self.inner,
            batch_size,
            batch_timeout,
            timeout,
            move |py, n| Ok(Py::new(py, NotificationIncoming::new(py, n, &seen)?)?.into_any()),
        )
    }

    /// Stops taking notifications; `poll` then hands out what was received, then empty lists.
    fn stop(&self) -> PyResult<Pending> {
        stop(&self.control)
    }

    /// Releases the listener's connection.
    fn cleanup(&self) -> PyResult<Pending> {
        cleanup(&self.control)
    }
}

/// One notification; acknowledge or requeue it once (dropped unsettled, it is requeued).
#[pyclass(module = "oslo_messaging_rs._engine", frozen)]
struct NotificationIncoming {
    /// The context, un-prefixed, plus `client_timeout` (`None`), as oslo's rabbit driver has
    /// it.
    #[pyo3(get)]
    ctxt: Py<PyDict>,
    /// `{"message_id", "publisher_id", "event_type", "priority", "payload", "timestamp"}`.
    #[pyo3(get)]
    message: Py<PyDict>,
    #[pyo3(get)]
    unique_id: Option<String>,
    acker: Mutex<Option<Acker>>,
    seen: SeenIds,
}

impl NotificationIncoming {
    fn new(
        py: Python<'_>,
        mut n: driver_api::IncomingNotification,
        seen: &SeenIds,
    ) -> PyResult<Self> {
        let acker = n.take_acker();
        let m = n.message;
        let ctxt = to_py_dict(py, m.context.as_map())?;
        ctxt.set_item("client_timeout", py.None())?;
        let message = PyDict::new(py);
        message.set_item("message_id", to_py(py, &m.message_id)?)?;
        message.set_item("publisher_id", &m.publisher_id)?;
        message.set_item("event_type", &m.event_type)?;
        message.set_item("priority", &m.priority)?;
        message.set_item("payload", to_py(py, &m.payload)?)?;
        message.set_item("timestamp", to_py(py, &m.timestamp)?)?;
        Ok(Self {
            ctxt: ctxt.unbind(),
            message: message.unbind(),
            unique_id: m.unique_id,
            acker: Mutex::new(acker),
            seen: seen.clone(),
        })
    }

    /// Pending until the ack or requeue is handed to the connection (oslo's "processed
    /// locally"); settling twice does nothing the second time.
    fn settle(&self, requeue: bool) -> PyResult<Pending> {
        let acker = lock(&self.acker).take();
        if !requeue && let Some(id) = &self.unique_id {
            // As oslo: the id joins the duplicate filter when the handler acknowledges.
            self.seen.insert(id);
        }
        submit_with(
            async move {
                let Some(acker) = acker else {
                    return;
                };
                let settled = if requeue {
                    acker.requeue().await
                } else {
                    acker.ack().await
                };
                if let Err(e) = settled {
                    tracing::warn!(error = %e, requeue, "could not settle a notification");
                }
            },
            |py, ()| none(py),
            Mode::QUICK,
        )
    }
}

#[pymethods]
impl NotificationIncoming {
    /// Acknowledges the notification; pending until the ack is handed to the connection
    /// (never fails for the broker: a lost ack means a redelivery, which the duplicate filter
    /// catches).
    fn acknowledge(&self) -> PyResult<Pending> {
        self.settle(false)
    }

    /// Requeues the notification; pending as [`acknowledge`](Self::acknowledge).
    fn requeue(&self) -> PyResult<Pending> {
        self.settle(true)
    }
}

/// The names of the `[oslo_messaging_rabbit]` options the engine reads.
#[pyfunction]
fn rabbit_option_names() -> Vec<&'static str> {
    Config::list_opts()
        .into_iter()
        .filter(|(group, _)| *group == "oslo_messaging_rabbit")
        .flat_map(|(_, opts)| opts.into_iter().map(|o| o.name))
        .collect()
}

#[pymodule]
fn _engine(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("EngineError", m.py().get_type::<EngineError>())?;
    m.add_class::<Transport>()?;
    m.add_class::<Pending>()?;
    m.add_class::<RpcListener>()?;
    m.add_class::<RpcIncoming>()?;
    m.add_class::<NotificationListener>()?;
    m.add_class::<NotificationIncoming>()?;
    m.add_function(wrap_pyfunction!(rabbit_option_names, m)?)?;
    m.add_function(wrap_pyfunction!(logs::install_logging, m)?)?;
    m.add_function(wrap_pyfunction!(logs::drain_logs, m)?)?;
    Ok(())
}
