//! The engine: one Tokio runtime per process, and the operations Python waits on.
//!
//! Every blocking entry point of the driver starts its work on the runtime and returns a
//! [`Pending`] at once. Python then waits for it the way its thread model allows: a plain
//! thread waits on a condition variable with the GIL released, in slices so that signal
//! handlers run; an eventlet green thread waits for a pipe to become readable through the hub
//! (`eventlet.hubs.trampoline`), so the hub never blocks. The result is converted to Python
//! objects on the Python thread that takes it: runtime threads never touch Python.
//!
//! Fork safety: the runtime belongs to the process that built it. A child process (after
//! `os.fork()`) gets a fresh runtime the first time it uses the engine; the parent's is
//! forgotten, not dropped, since its threads do not exist in the child.

use std::future::Future;
use std::io::{PipeReader, PipeWriter, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::Runtime;
use tokio::task::AbortHandle;

/// The runtime, and the process it belongs to.
static ENGINE: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This process's runtime, built on first use (and again in a forked child).
pub(crate) fn runtime() -> PyResult<Arc<Runtime>> {
    let pid = std::process::id();
    let mut engine = lock(&ENGINE);
    if let Some((owner, rt)) = engine.as_ref()
        && *owner == pid
    {
        return Ok(rt.clone());
    }
    if let Some(inherited) = engine.take() {
        // Its worker threads stayed in the parent: dropping it here could wait for them.
        std::mem::forget(inherited);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(engine_threads()?)
        .thread_name("oslo-messaging-rs")
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the messaging engine: {e}")))?;
    let rt = Arc::new(rt);
    *engine = Some((pid, rt.clone()));
    Ok(rt)
}

/// The environment variable that sets how many threads the engine runs (default 1).
const THREADS_VAR: &str = "OSLO_MESSAGING_RS_THREADS";

/// How many threads the engine runs: [`THREADS_VAR`], else one.
///
/// One is the default because it is the fastest measured: a Python process runs its own code
/// on one core at a time (the GIL), and with a single engine thread the engine's tasks (the
/// connection's I/O, the calls, the consumers) hand work to each other without waking another
/// thread. On a 2-core machine, one thread against two did 4-15% more calls a second and
/// spent 10-20% less CPU per call, with one call in flight and with 64.
fn engine_threads() -> PyResult<usize> {
    let Some(value) = std::env::var_os(THREADS_VAR) else {
        return Ok(1);
    };
    value
        .to_str()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
        .ok_or_else(|| {
            PyRuntimeError::new_err(format!(
                "{THREADS_VAR} must be a whole number from 1 to 64, not {value:?}"
            ))
        })
}

/// Converts a finished operation's output to Python, on the thread that takes it.
type Convert = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

#[derive(Default)]
struct State {
    outcome: Option<Convert>,
    done: bool,
    /// Made when an eventlet waiter asks for a file descriptor: readable once done.
    pipe: Option<(PipeReader, PipeWriter)>,
}

#[derive(Default)]
struct Slot {
    state: Mutex<State>,
    done: Condvar,
}

impl Slot {
    fn complete(&self, outcome: Convert) {
        let mut state = lock(&self.state);
        state.outcome = Some(outcome);
        state.done = true;
        if let Some((_, w)) = state.pipe.as_mut() {
            let _ = w.write_all(b"x");
        }
        drop(state);
        self.done.notify_all();
    }
}

/// An operation running on the engine. Python waits for it with [`wait`](Self::wait) (threads)
/// or on [`fileno`](Self::fileno) (eventlet), then takes its [`result`](Self::result).
#[pyclass(module = "oslo_messaging_rs._engine", frozen)]
pub(crate) struct Pending {
    slot: Arc<Slot>,
    /// Set for operations that must stop when nobody waits for them any more (a poll whose
    /// waiter was interrupted must not take the next message and drop it).
    abort_on_drop: Option<AbortHandle>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(task) = &self.abort_on_drop {
            task.abort();
        }
    }
}

/// Completes its slot with an error if the task ends without a result: it panicked, or was
/// aborted. Without it the Python waiter would wait forever.
struct Completion {
    slot: Arc<Slot>,
    completed: bool,
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.completed {
            self.slot.complete(Box::new(|_| {
                Err(PyRuntimeError::new_err(
                    "the engine's task ended without a result (it failed or was cancelled)",
                ))
            }));
        }
    }
}

/// How [`submit_with`] runs an operation.
#[derive(Clone, Copy)]
pub(crate) struct Mode {
    /// Cancel the work when its `Pending` is dropped (for waits whose result only matters to
    /// their waiter: polls, which are cancel-safe); otherwise it runs to its end even if
    /// nobody waits for it.
    abort_on_drop: bool,
    /// Poll the work once on the calling thread first, and spawn it only if it is not done.
    /// For operations that often finish at once and cheaply (taking a message that is already
    /// there, handing an ack to the connection): they then cost no thread wake-up at all.
    try_now: bool,
}

impl Mode {
    /// Runs to its end even if nobody waits for it.
    pub(crate) const RUN: Self = Self {
        abort_on_drop: false,
        try_now: false,
    };
    /// As [`RUN`](Self::RUN), but polled once on the calling thread first (with the GIL held):
    /// for short operations that often finish at once, such as an ack handed to the
    /// connection.
    pub(crate) const QUICK: Self = Self {
        abort_on_drop: false,
        try_now: true,
    };
    /// A poll: tried on the calling thread first (a message already there is taken without a
    /// thread wake-up), and cancelled when its `Pending` is dropped.
    pub(crate) const POLL: Self = Self {
        abort_on_drop: true,
        try_now: true,
    };
}

/// Starts `work` on the engine as `mode` says; `convert` turns its output into Python objects
/// when taken.
pub(crate) fn submit_with<F, T>(
    work: F,
    convert: impl FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
    mode: Mode,
) -> PyResult<Pending>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let rt = runtime()?;
    let slot = Arc::new(Slot::default());
    let mut work = Box::pin(work);
    if mode.try_now {
        // In the runtime's context, so the work may spawn, sleep and register I/O as on one
        // of its threads. A `Pending` poll only registers a waker that does nothing; the
        // spawned task polls again at once and registers its own.
        let _context = rt.enter();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if let std::task::Poll::Ready(out) = work.as_mut().poll(&mut cx) {
            slot.complete(Box::new(move |py| convert(py, out)));
            return Ok(Pending {
                slot,
                abort_on_drop: None,
            });
        }
    }
    let mut completion = Completion {
        slot: slot.clone(),
        completed: false,
    };
    let task = rt.spawn(async move {
        let out = work.await;
        completion.completed = true;
        completion
            .slot
            .complete(Box::new(move |py| convert(py, out)));
    });
    Ok(Pending {
        slot,
        abort_on_drop: mode.abort_on_drop.then(|| task.abort_handle()),
    })
}

/// Starts `work`, which runs to its end even if nobody waits for it ([`Mode::RUN`]).
pub(crate) fn submit<F, T>(
    work: F,
    convert: impl FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
) -> PyResult<Pending>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    submit_with(work, convert, Mode::RUN)
}

/// Starts `work` on the engine with nobody waiting for it.
pub(crate) fn spawn<F>(work: F) -> PyResult<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    runtime()?.spawn(work);
    Ok(())
}

/// How long a cleanup waits for replies still being sent before it goes on without them.
pub(crate) const REPLY_DRAIN: Duration = Duration::from_secs(10);

/// Work handed to the engine that nobody waits for but a cleanup must not cut short: the
/// replies of a transport's RPC servers, sent after `reply()` returned.
#[derive(Clone, Default)]
pub(crate) struct InFlight(Arc<InFlightState>);

#[derive(Default)]
struct InFlightState {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One piece of in-flight work; done when dropped.
pub(crate) struct InFlightGuard(Arc<InFlightState>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl InFlight {
    /// Counts one more piece of work until the guard is dropped.
    pub(crate) fn enter(&self) -> InFlightGuard {
        self.0.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.0.clone())
    }

    /// Waits until no work is in flight, or `limit` passed; returns how many are left.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only waits.
    pub(crate) async fn drain(&self, limit: Duration) -> usize {
        let wait = async {
            loop {
                let idle = self.0.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.0.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
        self.0.count.load(Ordering::Acquire)
    }
}

/// Runs `f` inside the engine's runtime context (for constructors that may spawn).
pub(crate) fn enter<T>(f: impl FnOnce() -> T) -> PyResult<T> {
    let rt = runtime()?;
    let _guard = rt.enter();
    Ok(f())
}

#[pymethods]
impl Pending {
    /// Whether the operation finished.
    fn done(&self) -> bool {
        lock(&self.slot.state).done
    }

    /// Waits up to `timeout` seconds, with the GIL released; whether it finished.
    fn wait(&self, py: Python<'_>, timeout: f64) -> bool {
        let slot = self.slot.clone();
        let timeout = Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(Duration::MAX);
        py.detach(move || {
            let state = lock(&slot.state);
            let (state, _) = slot
                .done
                .wait_timeout_while(state, timeout, |s| !s.done)
                .unwrap_or_else(PoisonError::into_inner);
            state.done
        })
    }

    /// A file descriptor that becomes readable when the operation finished, for eventlet's
    /// hub. Owned by this object: do not close it.
    fn fileno(&self) -> PyResult<i32> {
        let mut state = lock(&self.slot.state);
        if state.pipe.is_none() {
            let (r, mut w) = std::io::pipe()
                .map_err(|e| PyRuntimeError::new_err(format!("cannot make a pipe: {e}")))?;
            if state.done {
                let _ = w.write_all(b"x");
            }
            state.pipe = Some((r, w));
        }
        Ok(state.pipe.as_ref().map_or(-1, |(r, _)| r.as_raw_fd()))
    }

    /// The operation's result, or its exception. Only once, and only when done.
    fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let convert = {
            let mut state = lock(&self.slot.state);
            if !state.done {
                return Err(PyRuntimeError::new_err("the operation has not finished"));
            }
            state.outcome.take()
        };
        match convert {
            Some(convert) => convert(py),
            None => Err(PyRuntimeError::new_err("the result was already taken")),
        }
    }
}
