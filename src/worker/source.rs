//! Where a worker's listener takes its connections from, and how it waits for them.
//!
//! The primary decides the source: connections handed over on a channel of the listener's
//! own (round-robin), a copy of a socket every worker shares, or a socket of the worker's own
//! in a steered group with a hand-off channel beside it. Every source but a worker's
//! exclusive socket is watched through one epoll set, [`Source::fd`], readable whenever a
//! connection can be taken or the worker is disconnecting: its sockets and channel,
//! connections left over from a hand-off message that carried several (a bell rung while any
//! wait here, so that none is stranded behind a readiness that was consumed), and the
//! worker's stop bell. A blocking accept waits on it; an application's own loop watches it
//! and accepts, non-blocking, until `WouldBlock`.

use std::collections::VecDeque;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use ringleader_sys::epoll::{Epoll, Interest};
use ringleader_sys::poll::{self, Doorbell};
use ringleader_sys::scm::{self, Blocking};
use ringleader_sys::{AsFd, BorrowedFd, OwnedFd, socket};

use super::{Worker, lock};

/// What a source takes connections from.
enum From {
    /// Connections handed over by the primary, one per message.
    Handoff { channel: OwnedFd },
    /// A copy of the socket all workers share (non-blocking).
    Shared(OwnedFd),
    /// A socket of this worker's own in the primary's steered group (non-blocking), and a
    /// hand-off channel for connections the primary took from a queue.
    Steered { listener: OwnedFd, channel: OwnedFd },
    /// A socket of this worker's own (`exclusive`): the primary never knows it, and a
    /// disconnect does not stop it. Its own `O_NONBLOCK` says whether accepting waits.
    Own(OwnedFd),
}

/// A listener's source of connections (see the module docs).
pub(super) struct Source {
    from: From,
    /// Connections received in one message and not taken yet.
    queued: Mutex<VecDeque<OwnedFd>>,
    /// Rung while `queued` holds connections (`rung` says whether it is).
    bell: Doorbell,
    rung: AtomicBool,
    /// The epoll set of the sockets, the channel, the bell and the worker's stop bell (kept
    /// as a plain fd: listeners move between threads).
    ready: Option<OwnedFd>,
    /// `accept` returns `WouldBlock` rather than waiting.
    nonblocking: AtomicBool,
    /// Takes so far, for a steered source's turns between its socket and its channel.
    takes: AtomicU32,
}

/// A steered source reads its channel first once in this many takes.
const CHANNEL_TURN: u32 = 8;

/// The error a listener's accept returns once its worker is disconnecting.
pub(super) fn stopped() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the listener stopped: this worker is disconnecting",
    )
}

impl Source {
    fn with(from: From, worker: &Worker) -> io::Result<Source> {
        let bell = Doorbell::new()?;
        let ready = match &from {
            From::Own(_) => None,
            From::Handoff { channel } => Some(vec![channel.as_fd()]),
            From::Shared(sock) => Some(vec![sock.as_fd()]),
            From::Steered { listener, channel } => Some(vec![listener.as_fd(), channel.as_fd()]),
        }
        .map(|fds| {
            let set = Epoll::new()?;
            for fd in fds
                .into_iter()
                .chain([bell.as_fd(), worker.stopping().as_fd()])
            {
                set.add(fd, 0, Interest::READ)?;
            }
            Ok::<_, io::Error>(OwnedFd::from(set))
        })
        .transpose()?;
        Ok(Source {
            from,
            queued: Mutex::new(VecDeque::new()),
            bell,
            rung: AtomicBool::new(false),
            ready,
            nonblocking: AtomicBool::new(false),
            takes: AtomicU32::new(0),
        })
    }

    /// Round-robin: connections come on `channel`.
    pub(super) fn handoff(channel: OwnedFd, worker: &Worker) -> io::Result<Source> {
        Source::with(From::Handoff { channel }, worker)
    }

    /// A copy of the socket every worker shares.
    pub(super) fn shared(sock: OwnedFd, worker: &Worker) -> io::Result<Source> {
        Source::with(From::Shared(sock), worker)
    }

    /// A socket of this worker's own, which the primary never knows.
    pub(super) fn own(sock: OwnedFd, worker: &Worker) -> io::Result<Source> {
        Source::with(From::Own(sock), worker)
    }

    /// Steered: from the channel, whose first message carries this worker's socket.
    pub(super) fn steered(channel: OwnedFd, worker: &Worker) -> io::Result<Source> {
        let (mut buf, mut fds) = ([0u8; 1], Vec::new());
        scm::recv(&channel, &mut buf, &mut fds, Blocking::Yes)?;
        let listener = match (fds.pop(), fds.is_empty()) {
            (Some(listener), true) => listener,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the steered channel's first message must carry one socket",
                ));
            }
        };
        Source::with(From::Steered { listener, channel }, worker)
    }

    /// Whether the primary knows this source (hand-offs, shared and steered sockets).
    pub(super) fn shared_with_primary(&self) -> bool {
        !matches!(self.from, From::Own(_))
    }

    /// Whether connections can be handed back to the primary from here.
    pub(super) fn hands_back(&self) -> bool {
        matches!(self.from, From::Handoff { .. } | From::Steered { .. })
    }

    /// The shared socket, for a UDP "listener", which is one.
    pub(super) fn shared_socket(&self) -> Option<&OwnedFd> {
        match &self.from {
            From::Shared(sock) => Some(sock),
            _ => None,
        }
    }

    /// What to watch: readable when a connection can be taken or the worker stops (an
    /// exclusive socket: when a connection waits).
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        match (&self.ready, &self.from) {
            (Some(set), _) => set.as_fd(),
            (None, From::Own(sock)) => sock.as_fd(),
            (None, _) => unreachable!("only an exclusive socket has no epoll set"),
        }
    }

    /// Makes `accept` return `WouldBlock` instead of waiting (`true`), or wait (`false`).
    pub(super) fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        if let From::Own(sock) = &self.from {
            socket::set_nonblocking(sock, on)?;
        }
        self.nonblocking.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// The next connection's fd, and whether it was handed over (the board counts those).
    /// Non-blocking: `WouldBlock` when none waits; `ConnectionAborted` once the worker is
    /// disconnecting.
    pub(super) fn accept(&self, worker: &Worker) -> io::Result<(OwnedFd, bool)> {
        if let From::Own(sock) = &self.from {
            return ringleader_sys::listen::accept(sock, false).map(|fd| (fd, false));
        }
        let nonblocking = self.nonblocking.load(Ordering::Relaxed);
        // A blocking round-robin accept waits in `recvmsg` itself: one system call per
        // message, and the channel's end of file is the stop.
        let wait = !nonblocking && matches!(self.from, From::Handoff { .. });
        loop {
            if let Some(taken) = self.take(wait)? {
                return Ok(taken);
            }
            if !worker.is_connected() {
                return Err(stopped());
            }
            if nonblocking {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            // The set turns readable when the socket or the channel does, or the worker
            // stops.
            let set = self.ready.as_ref().map(OwnedFd::as_fd);
            let stop = worker.stopping();
            let fds: Vec<(&dyn AsFd, poll::Flags)> = match &set {
                Some(set) => vec![(set, poll::IN), (stop, poll::IN)],
                None => vec![(stop, poll::IN)],
            };
            poll::poll(&fds, None)?;
        }
    }

    /// What can be taken without waiting: a connection left from a message, one waiting on
    /// the socket, or the first of a new message (waiting for one if `wait`). `Ok(None)`:
    /// nothing now.
    fn take(&self, wait: bool) -> io::Result<Option<(OwnedFd, bool)>> {
        let mut queued = lock(&self.queued);
        if let Some(fd) = queued.pop_front() {
            self.quiet_if_empty(&queued);
            return Ok(Some((fd, true)));
        }
        let channel = match &self.from {
            From::Handoff { channel } => channel,
            From::Shared(sock) => return accept_now(sock).map(|c| c.map(|fd| (fd, false))),
            From::Steered { listener, channel } => {
                // The channel brings connections the primary took from a queue, which have
                // waited already: it goes first one take in `CHANNEL_TURN`, so that a
                // socket that never runs dry (all the load, when another worker is
                // stopped) cannot keep them waiting.
                let channel_first = self.takes.fetch_add(1, Ordering::Relaxed) % CHANNEL_TURN == 0;
                if channel_first {
                    if let Some(taken) = self.receive(channel, &mut queued, false)? {
                        return Ok(Some(taken));
                    }
                }
                if let Some(fd) = accept_now(listener)? {
                    return Ok(Some((fd, false)));
                }
                if channel_first {
                    return Ok(None);
                }
                channel
            }
            From::Own(_) => return Ok(None),
        };
        self.receive(channel, &mut queued, wait)
    }

    /// The first connection of the channel's next message (waiting for one if `wait`); the
    /// rest of that message, if it carries several, goes to `queued`.
    fn receive(
        &self,
        channel: &OwnedFd,
        queued: &mut VecDeque<OwnedFd>,
        wait: bool,
    ) -> io::Result<Option<(OwnedFd, bool)>> {
        let (mut buf, mut fds) = ([0u8; 64], Vec::new());
        let blocking = if wait { Blocking::Yes } else { Blocking::No };
        match scm::recv(channel, &mut buf, &mut fds, blocking) {
            Ok(0) if fds.is_empty() => Err(stopped()),
            Ok(_) => {
                let mut fds = fds.into_iter();
                let first = fds.next();
                queued.extend(fds);
                if !queued.is_empty() && !self.rung.swap(true, Ordering::Relaxed) {
                    self.bell.ring();
                }
                Ok(first.map(|fd| (fd, true)))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Silences the bell once nothing is left from a message.
    fn quiet_if_empty(&self, queued: &VecDeque<OwnedFd>) {
        if queued.is_empty() && self.rung.swap(false, Ordering::Relaxed) {
            self.bell.clear();
        }
    }
}

/// One `accept4` on a non-blocking socket: `Ok(None)` when nothing waits.
fn accept_now(sock: &OwnedFd) -> io::Result<Option<OwnedFd>> {
    match ringleader_sys::listen::accept(sock, false) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}
