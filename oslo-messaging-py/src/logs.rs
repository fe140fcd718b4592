//! The engine's log events, handed to Python's `logging` from Python threads only.
//!
//! Runtime threads must not call into Python (under eventlet, `logging`'s locks are green), so
//! a `tracing` layer queues each event, and the shim drains the queue into the
//! `oslo_messaging_rs` logger whenever one of its threads returns from the engine. The queue is
//! bounded: past 10,000 waiting events, new ones are counted and dropped, and the count is
//! logged with the next drain.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, TryLockError};

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};

const CAPACITY: usize = 10_000;

/// (Python level number, target, message).
type Record = (u8, String, String);

static QUEUE: Mutex<VecDeque<Record>> = Mutex::new(VecDeque::new());
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// The lowest Python level number collected (the logger's effective level when the last
/// driver was made).
static THRESHOLD: AtomicU8 = AtomicU8::new(30);

fn python_level(level: Level) -> u8 {
    match level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG => 10,
        Level::TRACE => 5,
    }
}

struct Queue;

/// Writes an event's message, then its other fields as `key=value`.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for Queue {
    // The threshold can change: ask every time instead of caching per call site.
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        python_level(*metadata.level()) >= THRESHOLD.load(Ordering::Relaxed)
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut text = Text::default();
        event.record(&mut text);
        let level = python_level(*event.metadata().level());
        text.message.push_str(&text.fields);
        let record = (level, event.metadata().target().to_owned(), text.message);
        // Never block on the queue: after a fork, a lock held by a thread of the parent is
        // held forever in the child. A record that cannot get in is counted as dropped.
        for _ in 0..1000 {
            match QUEUE.try_lock() {
                Ok(mut queue) => {
                    if queue.len() >= CAPACITY {
                        break;
                    }
                    queue.push_back(record);
                    return;
                }
                Err(TryLockError::Poisoned(p)) => {
                    p.into_inner().push_back(record);
                    return;
                }
                Err(TryLockError::WouldBlock) => std::thread::yield_now(),
            }
        }
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Collects the engine's events at `level` (a Python level number) and above from now on.
/// The first call in a process installs the collector (unless the process has a `tracing`
/// subscriber already); later calls change the level.
#[pyfunction]
pub(crate) fn install_logging(level: u32) {
    THRESHOLD.store(u8::try_from(level).unwrap_or(u8::MAX), Ordering::Relaxed);
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Queue));
}

/// The events waited so far, oldest first, as `(level, target, message)`, and how many were
/// dropped because the queue was full.
#[pyfunction]
pub(crate) fn drain_logs() -> (Vec<Record>, u64) {
    // As in `on_event`: a queue locked at a fork stays locked in the child; skip it then.
    let records: Vec<Record> = match QUEUE.try_lock() {
        Ok(mut queue) => queue.drain(..).collect(),
        Err(TryLockError::Poisoned(p)) => p.into_inner().drain(..).collect(),
        Err(TryLockError::WouldBlock) => Vec::new(),
    };
    (records, DROPPED.swap(0, Ordering::Relaxed))
}
