//! A worker seen from the primary ([`WorkerHandle`]; Node: a `Worker` object there).

use std::cell::RefCell;
use std::rc::Rc;

use std::fs::File;

use ringleader_sys::signal::Signal;
use ringleader_sys::{AsFd, OwnedFd};

use super::acting;
use super::core::Core;
use super::loads::Load;
use super::state::WorkerState;
use crate::error::{Error, Result};
use crate::ids::WorkerId;
use crate::ipc::frame::Kind;

/// One worker, seen from the primary (Node: a `Worker` object in the primary).
#[derive(Clone)]
pub struct WorkerHandle {
    pub(super) core: Rc<RefCell<Core>>,
    pub(super) id: WorkerId,
    pub(super) pid: u32,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .finish()
    }
}

impl WorkerHandle {
    /// The worker's id (Node: `worker.id`).
    pub fn id(&self) -> WorkerId {
        self.id
    }

    /// The worker's process id (Node: `worker.process.pid`).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends a message (Node: `worker.send(message)`). Written at once if the socket has room,
    /// otherwise queued and written by the event loop; when more than 4 MiB are queued for this
    /// worker, `send` runs the loop (still reading from every worker) until the worker has read
    /// enough.
    ///
    /// # Errors
    /// [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) above [`MAX_PAYLOAD`](crate::MAX_PAYLOAD);
    /// [`ErrorKind::Disconnected`](crate::ErrorKind::Disconnected) once the channel is closed or closing;
    /// [`ErrorKind::NoSuchWorker`](crate::ErrorKind::NoSuchWorker) once the worker is gone.
    pub fn send(&self, data: &[u8]) -> Result<()> {
        acting(&self.core).send(self.id, Kind::User, data, None)
    }

    /// Sends a message with an fd (Node: `worker.send(message, handle)`). The primary's copy is
    /// closed once the kernel has passed it; on error the fd is given back
    /// ([`Error::take_fd`](crate::Error::take_fd)).
    ///
    /// # Errors
    /// As [`WorkerHandle::send`].
    pub fn send_fd(&self, data: &[u8], fd: OwnedFd) -> Result<()> {
        acting(&self.core).send(self.id, Kind::User, data, Some(fd))
    }

    /// Sends `value` as JSON.
    ///
    /// # Errors
    /// As [`WorkerHandle::send`], and [`ErrorKind::Json`](crate::ErrorKind::Json).
    pub fn send_json<T: serde::Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let data = serde_json::to_vec(value).map_err(|e| Error::json("send a JSON message", e))?;
        self.send(&data)
    }

    /// Sends a signal, `SIGTERM` when `None` (Node: `worker.kill([signal])`). Marks the end as
    /// voluntary: `exited_after_disconnect` is true, as Node's documentation promises.
    ///
    /// # Errors
    /// [`ErrorKind::NoSuchWorker`](crate::ErrorKind::NoSuchWorker) once the worker is gone; `EPERM` from
    /// `pidfd_send_signal(2)`.
    pub fn kill(&self, signal: Option<Signal>) -> Result<()> {
        acting(&self.core).kill(self.id, signal.unwrap_or(Signal::TERM))
    }

    /// The worker's load as the board shows it now: connections handed, taken and finished,
    /// its published load figure and its hints. Reading it also acts on what it finds (a bad
    /// slot is reported, a drain request served), as the hand-off would.
    pub fn load(&self) -> Load {
        let mut core = acting(&self.core);
        let (load, news) = core.loads.snapshot(self.id);
        core.with_listeners(|l, cx| l.act_on(cx, news));
        load
    }

    /// Asks the worker to disconnect gracefully (Node: `worker.disconnect()`): messages already
    /// sent are delivered, then the primary shuts down its writing half; the worker finishes
    /// and closes its end. The worker leaves [`Primary::workers`](crate::Primary::workers) at once; `Disconnect` and
    /// `Exit` follow, with `exited_after_disconnect` true.
    ///
    /// The worker's listeners stop at once (their `incoming()` ends and connections still
    /// queued for it go to other workers), and its channel closes without waiting for its
    /// open connections: `Disconnect` comes as soon as the channel is gone, while the process
    /// goes on serving what it holds and `Exit` comes when it is done. (Node delays the
    /// channel's close, and its `'disconnect'`, until the worker's servers have no
    /// connections left; the process lifetime is the same.)
    ///
    /// # Errors
    /// [`ErrorKind::NoSuchWorker`](crate::ErrorKind::NoSuchWorker) once the worker is gone.
    pub fn disconnect(&self) -> Result<()> {
        acting(&self.core).disconnect(self.id)
    }

    /// Whether the channel is open, as of the events delivered so far (Node:
    /// `worker.isConnected()`).
    pub fn is_connected(&self) -> bool {
        self.with_slot(|s| s.connected).unwrap_or(false)
    }

    /// Whether the process has ended, as of the events delivered so far (Node:
    /// `worker.isDead()`).
    pub fn is_dead(&self) -> bool {
        self.with_slot(|s| s.dead).unwrap_or(true)
    }

    /// Whether the worker is leaving by choice (Node: `worker.exitedAfterDisconnect`): after
    /// [`WorkerHandle::kill`], [`WorkerHandle::disconnect`] or the worker's own `disconnect()`.
    /// `None` once the worker is gone (the `Exit` event carried the value).
    pub fn exited_after_disconnect(&self) -> Option<bool> {
        self.with_slot(|s| s.exited_after_disconnect)
    }

    /// The worker's state (Node: `worker.state`); `Dead` once it is gone.
    pub fn state(&self) -> WorkerState {
        self.with_slot(|s| s.state).unwrap_or(WorkerState::Dead)
    }

    /// Reads the worker's bookkeeping; `None` once it is gone.
    fn with_slot<T>(&self, f: impl FnOnce(&super::core::WorkerEntry) -> T) -> Option<T> {
        self.core.borrow().workers.get(&self.id).map(f)
    }

    /// The primary's end of the worker's stdin, when it is piped ([`Settings::silent`](crate::Settings::silent)).
    pub fn take_stdin(&self) -> Option<File> {
        self.take_stdio(0)
    }

    /// The primary's end of the worker's stdout, when it is piped.
    pub fn take_stdout(&self) -> Option<File> {
        self.take_stdio(1)
    }

    /// The primary's end of the worker's stderr, when it is piped.
    pub fn take_stderr(&self) -> Option<File> {
        self.take_stdio(2)
    }

    fn take_stdio(&self, n: usize) -> Option<File> {
        acting(&self.core).workers.get_mut(&self.id)?.stdio[n].take()
    }

    /// A copy of the worker's pidfd (`pidfd_open(2)`), yours to close: to wait for the
    /// process (readable once it exited) or signal it from another loop. `None` once the
    /// worker is gone from the primary, or if the copy failed (out of fds).
    pub fn pidfd(&self) -> Option<OwnedFd> {
        self.core
            .borrow()
            .pidfd(self.id)?
            .as_fd()
            .try_clone_to_owned()
            .ok()
    }
}
