//! The engine's log events, handed to Python's `logging` from Python threads only.
//!
//! Runtime threads must not call into Python (under eventlet, `logging`'s locks are green), so
//! a `tracing` layer queues each event, and the shim drains the queue into the
//! `oslo_messaging_rs` logger whenever one of its threads returns from the engine. The queue is
//! bounded: past 10,000 waiting events, new ones are counted and dropped, and the count is
//! logged with the next drain.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::{Context, SubscriberExt};

const CAPACITY: usize = 10_000;

/// (Python level number, target, message).
type Record = (u8, String, String);

static QUEUE: Mutex<VecDeque<Record>> = Mutex::new(VecDeque::new());
static DROPPED: AtomicU64 = AtomicU64::new(0);

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
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut text = Text::default();
        event.record(&mut text);
        let level = match *event.metadata().level() {
            Level::ERROR => 40,
            Level::WARN => 30,
            Level::INFO => 20,
            Level::DEBUG => 10,
            Level::TRACE => 5,
        };
        let mut queue = QUEUE.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() >= CAPACITY {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        text.message.push_str(&text.fields);
        queue.push_back((level, event.metadata().target().to_owned(), text.message));
    }
}

/// Starts collecting the engine's events at `level` (a Python level number) and above. Only
/// the first call in a process installs the collector; later calls change nothing.
#[pyfunction]
pub(crate) fn install_logging(level: u32) {
    let filter = match level {
        0..=5 => LevelFilter::TRACE,
        6..=10 => LevelFilter::DEBUG,
        11..=20 => LevelFilter::INFO,
        21..=30 => LevelFilter::WARN,
        _ => LevelFilter::ERROR,
    };
    let subscriber = tracing_subscriber::registry().with(Queue.with_filter(filter));
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// The events waited so far, oldest first, as `(level, target, message)`, and how many were
/// dropped because the queue was full.
#[pyfunction]
pub(crate) fn drain_logs() -> (Vec<Record>, u64) {
    let records: Vec<Record> = QUEUE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain(..)
        .collect();
    (records, DROPPED.swap(0, Ordering::Relaxed))
}
