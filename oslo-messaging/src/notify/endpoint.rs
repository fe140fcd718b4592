//! Notification endpoints: handlers per priority, typed as RPC handlers are.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::Priority;
use super::filter::NotificationFilter;
use super::notification::{IntoNotificationResult, Notification, NotificationResult};
use crate::driver::BoxFuture;
use crate::error::{Error, Result};
use crate::serve::{CatchUnwind, State};

/// The erased forms of handlers, in a private module: the trait that produces them is sealed.
mod sealed {
    use super::{BoxFuture, Notification, NotificationResult};
    use std::sync::Arc;

    /// What a batch handler decided: for the whole group, and for the messages it could not
    /// take (their payload did not fit its type), by index in the batch it was given.
    #[derive(Debug, Default)]
    pub struct BatchOutcome {
        pub(crate) result: NotificationResult,
        pub(crate) unfit: Vec<usize>,
    }

    pub(super) type SingleFn =
        Arc<dyn Fn(Notification) -> BoxFuture<'static, NotificationResult> + Send + Sync>;
    pub(super) type BatchFn =
        Arc<dyn Fn(Vec<Notification>) -> BoxFuture<'static, BatchOutcome> + Send + Sync>;

    /// A handler with its types erased.
    #[derive(Clone)]
    pub enum Erased {
        Single(SingleFn),
        Batch(BatchFn),
    }

    impl std::fmt::Debug for Erased {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(match self {
                Self::Single(_) => "Erased::Single",
                Self::Batch(_) => "Erased::Batch",
            })
        }
    }

    /// Turns a handler into its erased form.
    pub trait Erase<M, S> {
        fn erase(self, state: S) -> Erased;
    }
}

pub(crate) use sealed::{BatchOutcome, Erased};

/// A function that can handle notifications of one priority.
///
/// Handlers take one notification or a batch, with or without state:
///
/// * `async fn(Notification<T>) -> R`
/// * `async fn(State<S>, Notification<T>) -> R`
/// * `async fn(Vec<Notification<T>>) -> R`: a batch (see
///   [`NotificationListenerBuilder::batch_size`](super::NotificationListenerBuilder::batch_size));
///   a listener without batching hands batches of one.
/// * `async fn(State<S>, Vec<Notification<T>>) -> R`
///
/// where `T: DeserializeOwned` is the payload's type (`serde_json::Value` to take it as it
/// comes), `S` the state given to
/// [`state`](NotificationEndpointBuilder::state), and `R` is `()`,
/// [`NotificationResult`], or a `Result` of either (an `Err` is logged and requeues, as an
/// exception does in Python).
///
/// A payload that does not fit `T` is an error for that notification alone, logged with the
/// field that did not fit: it is requeued when the listener allows requeue (else
/// acknowledged), and the handler is not called with it.
///
/// This trait is sealed: the shapes above are all there are.
///
/// # Examples
///
/// ```
/// use oslo_messaging::notify::{Notification, NotificationEndpoint, Priority};
///
/// #[derive(serde::Deserialize)]
/// struct Sample {
///     counter_volume: f64,
/// }
///
/// // One at a time, typed; and in batches, raw.
/// let endpoint = NotificationEndpoint::builder()
///     .on(Priority::Info, |n: Notification<Sample>| async move {
///         let _ = n.payload.counter_volume;
///     })
///     .on(Priority::Sample, |batch: Vec<Notification>| async move {
///         let _ = batch.len();
///     })
///     .build()?;
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot handle notifications",
    note = "handlers are `async fn(Notification<T>) -> R`, `async fn(Vec<Notification<T>>) -> R`, or either with a `State<S>` first, with T: DeserializeOwned and R: (), NotificationResult, or a Result of either"
)]
pub trait NotificationHandler<M, S>: sealed::Erase<M, S> + Send + Sync + 'static {}

impl<H, M, S> NotificationHandler<M, S> for H where H: sealed::Erase<M, S> + Send + Sync + 'static {}

/// Runs a handler's future, turning a panic into `Requeue`.
async fn guarded<Fut, R>(fut: Fut) -> NotificationResult
where
    Fut: Future<Output = R> + Send,
    R: IntoNotificationResult,
{
    CatchUnwind::new(fut).await.map_or_else(
        |panic| {
            tracing::error!(panic, "notification handler panicked");
            NotificationResult::Requeue
        },
        IntoNotificationResult::into_notification_result,
    )
}

fn single<T, Fut, R>(call: impl Fn(Notification<T>) -> Fut + Send + Sync + 'static) -> Erased
where
    T: DeserializeOwned + Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoNotificationResult,
{
    let call = Arc::new(call);
    Erased::Single(Arc::new(move |n: Notification| {
        let call = call.clone();
        Box::pin(async move {
            match n.into_handler_type::<T>() {
                // The handler is called inside the guard: a panic before it returns its
                // future is caught too.
                Ok(typed) => guarded(async move { call(typed).await }).await,
                Err(e) => {
                    tracing::error!(error = %e, "a notification does not fit its handler");
                    NotificationResult::Requeue
                }
            }
        })
    }))
}

fn batch<T, Fut, R>(call: impl Fn(Vec<Notification<T>>) -> Fut + Send + Sync + 'static) -> Erased
where
    T: DeserializeOwned + Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoNotificationResult,
{
    let call = Arc::new(call);
    Erased::Batch(Arc::new(move |batch: Vec<Notification>| {
        let call = call.clone();
        Box::pin(async move {
            let mut typed = Vec::with_capacity(batch.len());
            let mut unfit = Vec::new();
            for (i, n) in batch.into_iter().enumerate() {
                match n.into_handler_type::<T>() {
                    Ok(t) => typed.push(t),
                    Err(e) => {
                        tracing::error!(error = %e, "a notification does not fit its handler");
                        unfit.push(i);
                    }
                }
            }
            let result = if typed.is_empty() {
                NotificationResult::Handled
            } else {
                guarded(async move { call(typed).await }).await
            };
            BatchOutcome { result, unfit }
        })
    }))
}

impl<F, Fut, T, R, S> sealed::Erase<(Notification<T>,), S> for F
where
    F: Fn(Notification<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    T: DeserializeOwned + Send + 'static,
    R: IntoNotificationResult,
{
    fn erase(self, _state: S) -> Erased {
        single(self)
    }
}

impl<F, Fut, T, R, S> sealed::Erase<(State<S>, Notification<T>), S> for F
where
    F: Fn(State<S>, Notification<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    T: DeserializeOwned + Send + 'static,
    R: IntoNotificationResult,
    S: Clone + Send + Sync + 'static,
{
    fn erase(self, state: S) -> Erased {
        single(move |n| self(State(state.clone()), n))
    }
}

impl<F, Fut, T, R, S> sealed::Erase<(Vec<Notification<T>>,), S> for F
where
    F: Fn(Vec<Notification<T>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    T: DeserializeOwned + Send + 'static,
    R: IntoNotificationResult,
{
    fn erase(self, _state: S) -> Erased {
        batch(self)
    }
}

impl<F, Fut, T, R, S> sealed::Erase<(State<S>, Vec<Notification<T>>), S> for F
where
    F: Fn(State<S>, Vec<Notification<T>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    T: DeserializeOwned + Send + 'static,
    R: IntoNotificationResult,
    S: Clone + Send + Sync + 'static,
{
    fn erase(self, state: S) -> Erased {
        batch(move |b| self(State(state.clone()), b))
    }
}

/// Handlers per priority, with an optional filter: a Python notification endpoint (its
/// `info`, `error`... methods and its `filter_rule`).
///
/// # Examples
///
/// ```
/// use oslo_messaging::State;
/// use oslo_messaging::notify::{
///     Notification, NotificationEndpoint, NotificationFilter, NotificationResult, Priority,
/// };
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Created {
///     instance_id: String,
/// }
///
/// #[derive(Clone)]
/// struct Inventory;
///
/// let endpoint = NotificationEndpoint::builder()
///     .filter(NotificationFilter::builder().event_type(r"compute\.instance\.").build()?)
///     .state(Inventory)
///     .on(Priority::Info, |State(_inv): State<Inventory>, n: Notification<Created>| async move {
///         println!("{} created", n.payload.instance_id);
///     })
///     .on(Priority::Error, |_n: Notification| async { NotificationResult::Requeue })
///     .build()?;
/// assert_eq!(endpoint.priorities().collect::<Vec<_>>(), [Priority::Info, Priority::Error]);
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[derive(Clone)]
pub struct NotificationEndpoint {
    filter: Option<NotificationFilter>,
    handlers: Vec<(Priority, Erased)>,
}

impl fmt::Debug for NotificationEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotificationEndpoint")
            .field("filter", &self.filter)
            .field("priorities", &self.priorities().collect::<Vec<_>>())
            .finish()
    }
}

impl NotificationEndpoint {
    /// Starts an endpoint without handlers, filter or state.
    pub fn builder() -> NotificationEndpointBuilder<()> {
        NotificationEndpointBuilder {
            filter: None,
            state: (),
            handlers: Vec::new(),
        }
    }

    /// The priorities handled, in the order registered.
    pub fn priorities(&self) -> impl Iterator<Item = Priority> + '_ {
        self.handlers.iter().map(|(p, _)| *p)
    }

    pub(crate) fn handler(&self, priority: Priority) -> Option<&Erased> {
        self.handlers
            .iter()
            .find(|(p, _)| *p == priority)
            .map(|(_, h)| h)
    }

    pub(crate) fn passes(&self, n: &Notification) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(n))
    }
}

/// Builds a [`NotificationEndpoint`]; `S` is the state handed to handlers.
///
/// # Examples
///
/// ```
/// use oslo_messaging::notify::{Notification, NotificationEndpoint, Priority};
///
/// let endpoint = NotificationEndpoint::builder()
///     .on(Priority::Error, |n: Notification| async move { println!("{:?}", n.event_type) })
///     .build()?;
/// assert_eq!(endpoint.priorities().collect::<Vec<_>>(), [Priority::Error]);
/// # Ok::<(), oslo_messaging::Error>(())
/// ```
#[must_use]
pub struct NotificationEndpointBuilder<S> {
    filter: Option<NotificationFilter>,
    state: S,
    handlers: Vec<(Priority, Erased)>,
}

impl<S> fmt::Debug for NotificationEndpointBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotificationEndpointBuilder")
            .field("filter", &self.filter)
            .field(
                "priorities",
                &self.handlers.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<S: Clone + Send + Sync + 'static> NotificationEndpointBuilder<S> {
    /// Only notifications passing `filter` reach this endpoint's handlers.
    pub fn filter(mut self, filter: NotificationFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Hands `state` to handlers registered after this call (as `State<S2>`).
    pub fn state<S2: Clone + Send + Sync + 'static>(
        self,
        state: S2,
    ) -> NotificationEndpointBuilder<S2> {
        NotificationEndpointBuilder {
            filter: self.filter,
            state,
            handlers: self.handlers,
        }
    }

    /// Handles notifications of `priority` with `handler` (see [`NotificationHandler`]).
    pub fn on<M, H>(mut self, priority: Priority, handler: H) -> Self
    where
        H: NotificationHandler<M, S>,
    {
        let erased = handler.erase(self.state.clone());
        self.handlers.push((priority, erased));
        self
    }

    /// The endpoint.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Configuration`](crate::ErrorKind::Configuration) when a priority has two
    /// handlers.
    pub fn build(self) -> Result<NotificationEndpoint> {
        for (i, (p, _)) in self.handlers.iter().enumerate() {
            if self.handlers[..i].iter().any(|(q, _)| q == p) {
                return Err(Error::config(format!(
                    "the {} priority has two handlers in one notification endpoint",
                    p.as_str()
                )));
            }
        }
        Ok(NotificationEndpoint {
            filter: self.filter,
            handlers: self.handlers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(serde::Deserialize)]
    struct Created {
        id: u64,
    }

    fn info(payload: serde_json::Value) -> Notification {
        Notification::new(Priority::Info, "x.created", payload)
    }

    #[tokio::test]
    async fn typed_handlers_get_their_payload_or_an_error() {
        let ep = NotificationEndpoint::builder()
            .state(10u64)
            .on(
                Priority::Info,
                |State(base): State<u64>, n: Notification<Created>| async move {
                    assert_eq!(base + n.payload.id, 17);
                },
            )
            .on(
                Priority::Sample,
                |b: Vec<Notification<Created>>| async move {
                    assert_eq!(b.iter().map(|n| n.payload.id).sum::<u64>(), 3);
                    NotificationResult::Requeue
                },
            )
            .build()
            .unwrap();
        let Some(Erased::Single(one)) = ep.handler(Priority::Info) else {
            panic!("a single handler")
        };
        assert_eq!(
            one(info(json!({"id": 7}))).await,
            NotificationResult::Handled
        );
        // Does not fit: requeue (when allowed), without calling the handler.
        assert_eq!(
            one(info(json!({"id": "x"}))).await,
            NotificationResult::Requeue
        );
        let Some(Erased::Batch(many)) = ep.handler(Priority::Sample) else {
            panic!("a batch handler")
        };
        let out = many(vec![
            info(json!({"id": 1})),
            info(json!({})),
            info(json!({"id": 2})),
        ])
        .await;
        assert_eq!(out.result, NotificationResult::Requeue);
        assert_eq!(out.unfit, [1]);
    }

    #[tokio::test]
    async fn a_panicking_handler_requeues() {
        let ep = NotificationEndpoint::builder()
            .on(Priority::Info, |n: Notification| async move {
                assert!(n.payload.is_null(), "boom");
            })
            .build()
            .unwrap();
        let Some(Erased::Single(h)) = ep.handler(Priority::Info) else {
            panic!("a single handler")
        };
        assert_eq!(h(info(json!(1))).await, NotificationResult::Requeue);
        assert_eq!(h(info(json!(null))).await, NotificationResult::Handled);
    }

    #[test]
    fn a_priority_handled_twice_fails_the_build() {
        let err = NotificationEndpoint::builder()
            .on(Priority::Info, |_n: Notification| async {})
            .on(Priority::Info, |_n: Notification| async {})
            .build()
            .unwrap_err();
        assert!(
            err.to_string().contains("info priority has two handlers"),
            "{err}"
        );
    }
}
