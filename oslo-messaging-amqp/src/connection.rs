//! The connection handle: cheap clones of a sender to the connection's I/O task.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::channel::{ChanShared, Channel};
use crate::error::Error;
use crate::frame::{FieldTable, FieldValue};
use crate::io::Command;

/// How long a client-initiated close waits for `close-ok`.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// The error that ended a connection or channel: the first one set stays.
#[derive(Default)]
pub(crate) struct FirstError(Mutex<Option<Error>>);

impl FirstError {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Error>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn set(&self, e: Error) {
        self.slot().get_or_insert(e);
    }

    pub(crate) fn get(&self) -> Option<Error> {
        self.slot().clone()
    }
}

pub(crate) struct Shared {
    pub(crate) error: FirstError,
    pub(crate) closed: watch::Sender<bool>,
    pub(crate) blocked: watch::Sender<Option<String>>,
    pub(crate) frame_max: usize,
    pub(crate) server_properties: FieldTable,
}

impl Shared {
    pub(crate) fn fail(&self, e: Error) {
        self.error.set(e);
        self.closed.send_replace(true);
    }

    pub(crate) fn error(&self) -> Error {
        self.error.get().unwrap_or(Error::Closed)
    }
}

/// A connection to the broker. Cheap to clone; the connection closes when the last clone is
/// dropped or [`close`](Self::close) is called.
#[derive(Clone)]
pub struct Connection {
    pub(crate) cmd: mpsc::Sender<Command>,
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("closed", &*self.shared.closed.borrow())
            .finish_non_exhaustive()
    }
}

/// A `channel.open` in flight. Dropped before its answer was read, it closes the channel: the
/// I/O task does when the answer cannot be delivered any more, and this does when the answer
/// was already there.
struct Opening<'a> {
    rx: oneshot::Receiver<Result<(u16, Arc<ChanShared>), Error>>,
    cmd: &'a mpsc::Sender<Command>,
    answered: bool,
}

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        self.rx.close();
        if let Ok(Ok((channel, shared))) = self.rx.try_recv() {
            let (reply, _) = oneshot::channel();
            // A full command queue leaves the channel open until the connection closes: rare,
            // and bounded by the number of abandoned opens.
            let _ = self.cmd.try_send(Command::CloseChannel {
                channel,
                shared,
                reply,
            });
        }
    }
}

impl Connection {
    pub(crate) fn from_parts(cmd: mpsc::Sender<Command>, shared: Arc<Shared>) -> Self {
        Self { cmd, shared }
    }

    pub(crate) async fn send(&self, cmd: Command) -> Result<(), Error> {
        self.cmd.send(cmd).await.map_err(|_| self.shared.error())
    }

    /// Opens a channel.
    ///
    /// # Errors
    ///
    /// The connection's error when it has ended; [`Error::Protocol`] when every channel number
    /// the broker allows is in use; the broker's refusal of `channel.open`.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a channel whose opening nobody waits for any more is closed (as soon as the
    /// broker confirms it, if it has not yet), so its number is not held.
    pub async fn channel(&self) -> Result<Channel, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::OpenChannel { reply: tx }).await?;
        let mut opening = Opening {
            rx,
            cmd: &self.cmd,
            answered: false,
        };
        let answer = (&mut opening.rx).await;
        opening.answered = true;
        let (id, shared) = answer.map_err(|_| self.shared.error())??;
        Ok(Channel::new(id, self.clone(), shared))
    }

    /// Why the connection ended, once it has.
    pub fn error(&self) -> Option<Error> {
        (*self.shared.closed.borrow()).then(|| self.shared.error())
    }

    /// Completes when the connection ends, with the reason.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only watches.
    pub async fn closed(&self) -> Error {
        let mut rx = self.shared.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
        self.shared.error()
    }

    /// The broker's `connection.blocked` reason while it blocks publishing.
    pub fn blocked(&self) -> Option<String> {
        self.shared.blocked.borrow().clone()
    }

    /// Watches the blocked state.
    pub fn watch_blocked(&self) -> watch::Receiver<Option<String>> {
        self.shared.blocked.subscribe()
    }

    /// The negotiated largest frame.
    pub fn frame_max(&self) -> usize {
        self.shared.frame_max
    }

    /// A server property (such as `version` or `cluster_name`).
    pub fn server_property(&self, key: &str) -> Option<String> {
        self.shared
            .server_properties
            .get(key)
            .and_then(FieldValue::as_str)
            .map(str::to_owned)
    }

    /// Closes the connection politely (waits a moment for `close-ok`).
    ///
    /// # Cancel safety
    ///
    /// Once the close is handed to the I/O task it goes ahead whether or not the future is
    /// still there; dropping the future only stops the wait for `close-ok`.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::Close { reply: tx }).await.is_ok() {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT * 2, rx).await;
        }
    }
}
