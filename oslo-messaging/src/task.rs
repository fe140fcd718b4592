//! Running user code without letting it take the process down.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

/// `now + after`, saturating far in the future instead of overflowing (a `Duration::MAX`
/// timeout means "very long", not a panic).
pub(crate) fn deadline_after(after: std::time::Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(100 * 365 * 24 * 3600))
}

/// A future that turns a panic while polling the inner future into an `Err` with the panic's
/// message, so a bad handler fails its own request and nothing else.
pub(crate) struct CatchUnwind<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> CatchUnwind<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self {
            inner: Box::pin(inner),
        }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.get_mut().inner.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(&*payload))),
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_saturate() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let d = deadline_after(std::time::Duration::MAX);
            assert!(
                d > tokio::time::Instant::now() + std::time::Duration::from_secs(3600 * 24 * 365)
            );
        });
    }

    #[tokio::test]
    async fn panics_become_errors() {
        let out = CatchUnwind::new(async { panic!("boom {}", 7) }).await;
        assert_eq!(out, Err::<(), _>("boom 7".to_owned()));
        let ok = CatchUnwind::new(async { 5 }).await;
        assert_eq!(ok, Ok(5));
    }
}
