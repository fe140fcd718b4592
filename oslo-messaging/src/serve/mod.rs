//! The server runtime shared by RPC servers and notification listeners: the start / stop /
//! wait [`Lifecycle`], the intake of messages into a bounded pool of handler tasks
//! ([`Intake`]), the duplicate filter ([`DedupCache`]) and the guard that turns a panicking
//! handler into an error ([`CatchUnwind`]).
//!
//! The RPC server and the listener only say what they do with one message; taking messages,
//! stopping, bounding concurrency and draining are done here once.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{Semaphore, watch};

use crate::driver::BoxFuture;
use crate::error::{Error, Result};

mod dedup;
mod handler;
mod lifecycle;
mod task;

pub(crate) use dedup::DedupCache;
pub use handler::State;
pub(crate) use handler::{Mismatch, from_json, from_json_owned, from_json_ref};
pub(crate) use lifecycle::Lifecycle;
pub(crate) use task::CatchUnwind;

/// The handler pool size: `configured`, else `[DEFAULT] executor_thread_pool_size`.
///
/// # Errors
///
/// [`ErrorKind::Configuration`](crate::ErrorKind::Configuration) for 0, a negative size or
/// one above what a semaphore can count.
pub(crate) fn pool_size(configured: Option<usize>, default: i64) -> Result<u32> {
    let size = configured.unwrap_or_else(|| usize::try_from(default).unwrap_or(0));
    u32::try_from(size)
        .ok()
        .filter(|&n| n > 0 && n as usize <= Semaphore::MAX_PERMITS)
        .ok_or_else(|| Error::config(format!("executor pool size must be at least 1, not {size}")))
}

/// Takes messages from a driver's channel until the stop signal, and runs handlers on a pool
/// of at most `size` tasks at once.
///
/// After the stop signal the driver delivers nothing new, but what it already delivered is
/// still handed out (an RPC request was acknowledged on receipt: dropping it would lose it),
/// until the channel ends.
pub(crate) struct Intake<T> {
    incoming: UnboundedReceiver<T>,
    stop: watch::Receiver<bool>,
    stopping: bool,
    permits: Arc<Semaphore>,
    size: u32,
}

impl<T> Intake<T> {
    pub(crate) fn new(
        incoming: UnboundedReceiver<T>,
        stop: watch::Receiver<bool>,
        size: u32,
    ) -> Self {
        Self {
            incoming,
            stop,
            stopping: false,
            permits: Arc::new(Semaphore::new(size as usize)),
            size,
        }
    }

    /// The next message; `None` once the channel ended.
    ///
    /// Cancel-safe: a message is only taken from the channel when this returns it.
    pub(crate) async fn next(&mut self) -> Option<T> {
        loop {
            if self.stopping {
                return self.incoming.recv().await;
            }
            tokio::select! {
                biased;
                r = self.incoming.recv() => return r,
                _ = self.stop.wait_for(|s| *s) => self.stopping = true,
            }
        }
    }

    /// One more message for a batch, waiting until `deadline` at most (forever when `None`);
    /// `Err(())` when the deadline passed, `Ok(None)` when the channel ended.
    pub(crate) async fn more(
        &mut self,
        deadline: Option<tokio::time::Instant>,
    ) -> std::result::Result<Option<T>, ()> {
        match deadline {
            Some(d) => tokio::time::timeout_at(d, self.incoming.recv())
                .await
                .map_err(|_| ()),
            None => Ok(self.incoming.recv().await),
        }
    }

    /// Runs `job` in a task of the pool, once a place is free. Returns `false` (without
    /// running it) only if the pool was closed, which it never is while the intake lives.
    ///
    /// The job comes boxed: a handler's future is large, and unboxed it would be copied into
    /// this future, the task's and the task cell (a Kafka listener's share of time in
    /// memmove fell from 14% to 7% when it came boxed).
    pub(crate) async fn spawn(&self, job: BoxFuture<'static, ()>) -> bool {
        if self.permits.available_permits() == 0 {
            crate::stats::pool_full();
        }
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return false;
        };
        tokio::spawn(async move {
            job.await;
            drop(permit);
        });
        true
    }

    /// Waits until every handler task has finished.
    pub(crate) async fn drain(self) {
        // Every handler holds a permit: taking them all waits for the last one.
        let _ = self.permits.acquire_many(self.size).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn pool_sizes_are_checked() {
        assert_eq!(pool_size(None, 64).unwrap(), 64);
        assert_eq!(pool_size(Some(3), 64).unwrap(), 3);
        for bad in [
            pool_size(Some(0), 64),
            pool_size(None, -1),
            pool_size(None, 0),
        ] {
            let e = bad.unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Configuration);
            assert!(e.to_string().contains("at least 1"), "{e}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_pool_bounds_handlers_and_drain_waits_for_them() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop) = watch::channel(false);
        let mut intake = Intake::new(rx, stop, 2);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        for _ in 0..5 {
            intake.next().await.unwrap();
            let (running, most, done) = (running.clone(), most.clone(), done.clone());
            intake
                .spawn(Box::pin(async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                }))
                .await;
        }
        // Stopped, what is still queued is handed out; then the channel's end ends it.
        tx.send(5).unwrap();
        stop_tx.send_replace(true);
        drop(tx);
        assert_eq!(intake.next().await, Some(5));
        assert_eq!(intake.next().await, None);
        intake.drain().await;
        assert_eq!(done.load(Ordering::SeqCst), 5);
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_waits_for_more_until_its_deadline() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u8>();
        let (_stop_tx, stop) = watch::channel(false);
        let mut intake = Intake::new(rx, stop, 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        tx.send(1).unwrap();
        assert_eq!(intake.more(Some(deadline)).await, Ok(Some(1)));
        assert_eq!(intake.more(Some(deadline)).await, Err(()));
        drop(tx);
        assert_eq!(intake.more(None).await, Ok(None));
    }
}
