//! Ending a worker's channel: a graceful disconnect from either side, and the watcher thread
//! that turns the primary's half-close into the voluntary end and its hang-up into exit(0).

use std::time::Duration;

use ringleader_sys::AsFd;
use ringleader_sys::poll;
use ringleader_sys::scm::Blocking;
use ringleader_sys::socket::{self, How};

use super::{Shared, Worker, lock};
use crate::error::{Error, ErrorKind, Result};
use crate::ipc::frame::Kind;

impl Worker {
    /// Disconnects gracefully (Node: `cluster.worker.disconnect()`): tells the primary that
    /// this end is voluntary, waits for its acknowledgement, then closes the channel. Both
    /// sides then report `exited_after_disconnect() == true`. The process keeps running;
    /// it is the application's to finish its work and return from `main`.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] if the channel was already closed.
    pub fn disconnect(&self) -> Result<()> {
        {
            let mut state = lock(&self.shared.state);
            if state.closed {
                return Err(Error::new(ErrorKind::Disconnected, "disconnect"));
            }
            state.exited_after_disconnect = true;
        }
        self.send_frame(Kind::Disconnecting, &[], None)?;
        let mut state = lock(&self.shared.state);
        while !state.closed {
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        Ok(())
    }

    /// Ends this worker voluntarily (Node: `cluster.worker.kill()` in a worker): disconnects
    /// gracefully, then exits the process with code 0.
    pub fn kill(&self) -> ! {
        let _ = self.disconnect();
        std::process::exit(0)
    }

    /// Whether the channel is still open (Node: `worker.isConnected()`).
    pub fn is_connected(&self) -> bool {
        !lock(&self.shared.state).closed
    }

    /// Whether this worker is leaving by choice: it called [`Worker::disconnect`] or the primary
    /// asked it to (Node: `worker.exitedAfterDisconnect`).
    pub fn exited_after_disconnect(&self) -> bool {
        lock(&self.shared.state).exited_after_disconnect
    }

    /// Waits until the channel is closed, or `timeout` passes. Returns whether it is closed.
    pub fn wait_disconnected(&self, timeout: Option<Duration>) -> bool {
        let mut state = lock(&self.shared.state);
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        while !state.closed {
            match deadline {
                None => {
                    state = self
                        .shared
                        .changed
                        .wait(state)
                        .unwrap_or_else(|e| e.into_inner())
                }
                Some(d) => {
                    let now = std::time::Instant::now();
                    if now >= d {
                        return false;
                    }
                    state = self
                        .shared
                        .changed
                        .wait_timeout(state, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        true
    }

    pub(super) fn close(&self, voluntary: bool) {
        self.shared.close(voluntary);
    }
}

impl Shared {
    /// A reader saw end of file: the primary shut down its writing half (a voluntary end) or
    /// is gone. The same transition the watcher makes, so that whichever thread notices first
    /// leaves the state right.
    pub(super) fn on_end_of_file(&self) {
        let ready =
            poll::poll(&[(&self.sock, poll::RDHUP)], Some(Duration::ZERO)).unwrap_or_default();
        let hung_up = ready
            .first()
            .is_some_and(|f| f.intersects(poll::HUP | poll::ERR));
        if !hung_up {
            return self.close(true);
        }
        let state = lock(&self.state);
        if !state.closed && !state.exited_after_disconnect {
            // Node's rule: a worker whose channel ends without a disconnect exits with 0.
            std::process::exit(0);
        }
    }

    /// Shuts the channel down on our side (never `close`, so that no thread can poll or read a
    /// reused fd number); the fd itself is closed when the last `Worker` clone goes.
    pub(super) fn close(&self, voluntary: bool) {
        let mut state = lock(&self.state);
        if voluntary {
            state.exited_after_disconnect = true;
        }
        if !state.closed {
            state.closed = true;
            let _ = socket::shutdown(&self.sock, How::Both);
            self.stopping.ring();
        }
        self.changed.notify_all();
        self.doorbell.ring();
    }
}

/// The watcher thread's loop.
pub(super) fn watch(shared: &Shared) {
    loop {
        let flushing = lock(&shared.out).watcher_flushing;
        let mut interest = poll::RDHUP;
        if flushing {
            interest |= poll::OUT;
        }
        let ready = match poll::poll(
            &[(&shared.sock, interest), (&shared.doorbell, poll::IN)],
            None,
        ) {
            Ok(r) => r,
            Err(_) => return,
        };
        if ready[1].contains(poll::IN) {
            shared.doorbell.clear();
        }
        let sock = ready[0];
        if sock.intersects(poll::HUP | poll::ERR) {
            // The primary is gone (or we shut down ourselves).
            let state = lock(&shared.state);
            if !state.closed && !state.exited_after_disconnect {
                // Node's rule: a worker whose channel ends without a disconnect exits with 0.
                std::process::exit(0);
            }
            drop(state);
            shared.close(false);
            return;
        }
        if sock.contains(poll::RDHUP) {
            // The primary shut down its writing half: it asks us to disconnect, or it
            // acknowledged our disconnect. Either way this end is voluntary.
            shared.close(true);
            return;
        }
        if sock.contains(poll::OUT) || ready[1].contains(poll::IN) {
            let mut out = lock(&shared.out);
            match out.write(shared.sock.as_fd(), Blocking::No) {
                Ok(true) => out.watcher_flushing = false,
                Ok(false) => {}
                Err(_) => {
                    out.queue.discard();
                    out.watcher_flushing = false;
                }
            }
        }
        if lock(&shared.state).closed {
            return;
        }
    }
}
