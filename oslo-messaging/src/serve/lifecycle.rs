//! The start / stop / wait lifecycle shared by RPC servers and notification listeners.
//!
//! * `start` listens and spawns the poll loop plus a *finisher* task. The finisher waits for
//!   the stop signal, stops the listener (no new messages), waits for the poll loop (which runs
//!   what was already received and waits for its handlers), cleans the listener up and marks
//!   the lifecycle done. Doing this in a task of its own makes `wait` cancel-safe and lets
//!   any number of tasks wait.
//! * `stop` raises the signal (idempotent, also before `start`, which then refuses) and waits
//!   until no new message is taken.
//! * Dropping the last handle raises the signal too, so a forgotten server does not run on.
//!
//! No lock is held across an await.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::driver::ListenerControl;
use crate::error::{Error, ErrorKind, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Created,
    Starting,
    Started,
}

#[derive(Debug)]
struct Signals {
    stop: watch::Sender<bool>,
    /// The listener takes no new messages.
    stopped: watch::Sender<bool>,
    /// Handlers finished and the listener is cleaned up.
    done: watch::Sender<bool>,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    phase: Mutex<Phase>,
    signals: Arc<Signals>,
}

impl Lifecycle {
    pub(crate) fn new() -> Self {
        Self {
            phase: Mutex::new(Phase::Created),
            signals: Arc::new(Signals {
                stop: watch::channel(false).0,
                stopped: watch::channel(false).0,
                done: watch::channel(false).0,
            }),
        }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts: `listen` gets the stop signal and returns the poll loop's handle and the
    /// listener control.
    pub(crate) async fn start<F, Fut>(&self, what: &str, listen: F) -> Result<()>
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = Result<(JoinHandle<()>, Box<dyn ListenerControl>)>>,
    {
        {
            let mut phase = self.phase();
            if *self.signals.stop.borrow() {
                return Err(Error::new(
                    ErrorKind::InvalidState,
                    format!("the {what} was stopped before it started"),
                ));
            }
            if *phase != Phase::Created {
                return Err(Error::new(
                    ErrorKind::InvalidState,
                    format!("the {what} was already started"),
                ));
            }
            *phase = Phase::Starting;
        }
        // Cancel safety: a start dropped before it finished (a timeout around it) leaves the
        // lifecycle as it was, so it can be started again.
        let unstarted = Unstarted(self);
        let (poll, control) = listen(self.signals.stop.subscribe()).await?;
        std::mem::forget(unstarted);
        let signals = self.signals.clone();
        let mut stop = self.signals.stop.subscribe();
        tokio::spawn(async move {
            // A dropped sender (the last handle went away) also means stop.
            let _ = stop.wait_for(|s| *s).await;
            control.stop().await;
            signals.stopped.send_replace(true);
            if let Err(e) = poll.await {
                tracing::error!(error = %e, "a poll loop failed");
            }
            control.cleanup().await;
            signals.done.send_replace(true);
        });
        *self.phase() = Phase::Started;
        Ok(())
    }

    /// Raises the stop signal and, when started, waits until no new message is taken.
    pub(crate) async fn stop(&self) {
        self.signals.stop.send_replace(true);
        if *self.phase() == Phase::Started {
            let mut stopped = self.signals.stopped.subscribe();
            let _ = stopped.wait_for(|s| *s).await;
        }
    }

    /// Waits until stopped, handlers finished and the listener is cleaned up; at once when
    /// never started. Cancel-safe.
    pub(crate) async fn wait(&self) {
        if *self.phase() != Phase::Started {
            return;
        }
        let mut done = self.signals.done.subscribe();
        let _ = done.wait_for(|d| *d).await;
    }
}

/// Puts a lifecycle whose start failed or was cancelled back to `Created`.
struct Unstarted<'a>(&'a Lifecycle);

impl Drop for Unstarted<'_> {
    fn drop(&mut self) {
        *self.0.phase() = Phase::Created;
    }
}

impl Drop for Lifecycle {
    fn drop(&mut self) {
        self.signals.stop.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::BoxFuture;

    #[derive(Debug)]
    struct Quiet;

    impl ListenerControl for Quiet {
        fn stop(&self) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }

        fn cleanup(&self) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
    }

    #[tokio::test]
    async fn a_cancelled_or_failed_start_can_be_retried() {
        let lc = Lifecycle::new();
        // A start that never finishes (an unreachable broker), dropped by a timeout.
        let hung = lc.start("test", |_| std::future::pending());
        let cancelled = tokio::time::timeout(std::time::Duration::from_millis(10), hung).await;
        assert!(cancelled.is_err());
        // A start that fails.
        let err = lc
            .start("test", |_| async {
                Err(Error::new(ErrorKind::DeliveryFailure, "unreachable"))
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DeliveryFailure);
        // Then one that works; a second start is refused.
        lc.start("test", |_| async {
            Ok((
                tokio::spawn(async {}),
                Box::new(Quiet) as Box<dyn ListenerControl>,
            ))
        })
        .await
        .unwrap();
        let again = lc
            .start("test", |_| std::future::pending())
            .await
            .unwrap_err();
        assert_eq!(again.kind(), ErrorKind::InvalidState);
        lc.stop().await;
        lc.wait().await;
    }
}
