//! Accepting on round-robin listeners: arming and pausing, rounds, and the back-off when
//! the process runs out of fds.

use std::time::{Duration, Instant};

use ringleader_sys::listen;
use ringleader_sys::{OwnedFd, errno};

use super::{Ctx, Listener, ListenerId, Listeners, MAX_PENDING, Pending, starved};
use crate::ipc::listen::Key;
use crate::primary::driver::{Driver, Tag, dyn_fd, numbered_token, token_generation, untoken};

/// How long accepting pauses after the process ran out of fds or the kernel out of memory.
pub(super) const STARVED_BACKOFF: Duration = Duration::from_millis(5);

impl Listener {
    /// Starts accepting if this is a round-robin listener with workers and there is room.
    pub(super) fn arm(&mut self, driver: &mut Driver, pending: usize) {
        if !self.handoff || self.accepting || self.members.is_empty() || pending >= MAX_PENDING {
            return;
        }
        if let Some(at) = self.retry_at {
            if Instant::now() < at {
                return;
            }
            self.retry_at = None;
            self.starved = false;
        }
        self.generation = self.generation.wrapping_add(1);
        self.taken = 0;
        let (sock, tok) = (
            dyn_fd(&self.sock),
            numbered_token(self.id, Tag::Accept, self.generation),
        );
        // A round takes what arrived while the listener rested. When a round found nothing,
        // the next arming watches instead, and the first connection after the quiet spell is
        // handed over at once (then the listener rests: `Listeners::rest`).
        let round = self.rounds.is_some() && !self.quiet;
        let armed = if round {
            driver.accept_waiting(&sock, tok)
        } else {
            driver.accept(&sock, tok)
        };
        match armed {
            Ok(op) => {
                self.in_flight += u32::from(op.is_some());
                self.accept_op = op;
                self.accepting = true;
                self.draining = round && op.is_some();
            }
            // Out of memory for the registration: try again after a back-off.
            Err(_) => {
                self.retry_at = Some(Instant::now() + STARVED_BACKOFF);
                self.starved = true;
            }
        }
    }

    /// Stops accepting; the kernel's backlog holds what comes meanwhile.
    pub(super) fn pause(&mut self, driver: &mut Driver) {
        if self.accepting {
            self.accepting = false;
            self.draining = false;
            driver.forget(&dyn_fd(&self.sock), self.accept_op.take());
        }
    }
}

impl Listeners {
    /// Starts accepting on a round-robin listener that has workers and room.
    pub(super) fn arm_accept(&mut self, cx: &mut Ctx<'_>, key: &Key) {
        if self.retiring {
            return;
        }
        let pending = self.pending.len();
        if let Some(h) = self.by_key.get_mut(key) {
            h.arm(cx.driver, pending);
        }
    }

    pub(super) fn pause_accept(&mut self, cx: &mut Ctx<'_>, key: &Key) {
        if let Some(h) = self.by_key.get_mut(key) {
            h.pause(cx.driver);
        }
    }

    /// io_uring: an accept produced a connection, or ended.
    pub(crate) fn on_accepted(
        &mut self,
        cx: &mut Ctx<'_>,
        tok: u64,
        result: std::io::Result<OwnedFd>,
        more: bool,
    ) {
        let listener = untoken(tok).0;
        let Some(key) = self.keys.get(&listener).cloned() else {
            return;
        };
        let Some(h) = self.by_key.get_mut(&key) else {
            return;
        };
        if !more {
            h.in_flight = h.in_flight.saturating_sub(1);
        }
        if self.retiring {
            // What was accepted still goes to this primary's workers. Once its last accept
            // has ended, a look at the queue takes what arrived while a cancelled accept
            // still waited on it: the kernel wakes one io_uring accept per connection, so
            // such a connection woke no one in the new primary, and would wait there for
            // the next one to come.
            let swept = !more && h.in_flight == 0;
            if let Ok(fd) = result {
                self.stats.accepted += 1;
                let proxy = h.proxy;
                self.arrived(listener, fd, proxy);
            }
            if swept {
                self.sweep(listener);
            }
            return;
        }
        // A late completion of an earlier arming (cancelled, or ended) delivers its
        // connection, but moves no state.
        let current = h.accepting && h.generation == token_generation(tok);
        let watching = current && h.rounds.is_some() && !h.draining;
        match result {
            Ok(fd) => {
                if current {
                    h.taken += 1;
                }
                self.stats.accepted += 1;
                let proxy = h.proxy;
                self.arrived(listener, fd, proxy);
                if self.pending.len() >= MAX_PENDING {
                    // Stop at once: completions already posted still arrive, nothing more.
                    self.pause_accept(cx, &key);
                    return;
                }
                if watching {
                    // The first connection after a quiet spell: it goes out this turn, the
                    // next ones gather until the next round.
                    self.rest(cx, &key);
                    return;
                }
            }
            Err(e) if starved(&e) => {
                if current {
                    self.back_off(cx, &key);
                }
                return;
            }
            Err(e) if e.raw_os_error() == Some(errno::ECANCELED) => {}
            // A round's end: nothing more waits.
            Err(e) if current && h.draining && e.raw_os_error() == Some(errno::EAGAIN) => {}
            Err(e) if current && h.draining && e.raw_os_error() == Some(errno::EINVAL) => {
                // A kernel without IORING_ACCEPT_DONTWAIT after all: one connection at a time.
                h.rounds = None;
            }
            // Other accept errors (ECONNABORTED…) concern one connection: skipped, as in Node.
            Err(_) => self.stats.accept_errors += 1,
        }
        if !more && current {
            let Some(h) = self.by_key.get_mut(&key) else {
                return;
            };
            h.accept_op = None;
            h.accepting = false;
            let drained = std::mem::take(&mut h.draining);
            if drained && h.rounds.is_some() && h.taken > 0 {
                self.rest(cx, &key);
            } else {
                h.quiet = drained;
                self.arm_accept(cx, &key);
            }
        }
    }

    /// A connection accepted on `listener`: pending for a worker, or, on a listener whose
    /// connections start with a PROXY protocol header (`proxy`), to be read first.
    fn arrived(&mut self, listener: ListenerId, fd: OwnedFd, proxy: bool) {
        if proxy {
            self.unread.push((listener, fd));
        } else {
            self.pending.push_back(Pending::new(listener, fd));
        }
    }

    /// Looks at the headers of the connections accepted since the last dispatch, and
    /// refuses those whose deadline passed: what is whole goes to the pending queue.
    pub(super) fn read_headers(&mut self, cx: &mut Ctx<'_>) {
        let within = self.proxy.as_ref().map_or(Duration::ZERO, |p| p.within);
        self.headers.expire(cx.driver, Instant::now());
        // Taken and put back, to keep its capacity.
        let mut unread = std::mem::take(&mut self.unread);
        for (listener, fd) in unread.drain(..) {
            let looked = self.headers.start(cx.driver, listener, fd, within);
            self.on_looked(looked);
        }
        self.unread = unread;
    }

    /// A connection waiting for its header has more to read (or has gone).
    pub(crate) fn on_header(&mut self, cx: &mut Ctx<'_>, number: u32) {
        let looked = self.headers.on_ready(cx.driver, number);
        self.on_looked(looked);
    }

    fn on_looked(&mut self, looked: super::headers::Looked) {
        if let super::headers::Looked::Ready(p) = looked {
            self.pending.push_back(p);
        }
        self.stats.proxy_headers_read = self.headers.read;
        self.stats.proxy_headers_refused = self.headers.refused;
    }

    /// epoll: the listening socket is readable.
    pub(crate) fn accept_ready(&mut self, cx: &mut Ctx<'_>, listener: ListenerId) {
        let Some(key) = self.keys.get(&listener).cloned() else {
            return;
        };
        let (taken, starved) = self.take_waiting(listener, 64);
        if starved {
            self.back_off(cx, &key);
        } else if taken > 0 && self.by_key.get(&key).is_some_and(|h| h.rounds.is_some()) {
            self.rest(cx, &key);
        }
    }

    /// A retiring primary's last look at a queue that is the new primary's: what waits
    /// there now (at most [`MAX_PENDING`] pending). For want of fds, the new primary takes
    /// the rest.
    fn sweep(&mut self, listener: ListenerId) {
        self.take_waiting(listener, MAX_PENDING);
    }

    /// Accepts what waits on `listener` without waiting: at most `tries` accepts, while
    /// fewer than [`MAX_PENDING`] wait here. How many it took, and whether it stopped for
    /// want of fds or memory. A failure of one connection (`ECONNABORTED`…) is skipped.
    fn take_waiting(&mut self, listener: ListenerId, tries: usize) -> (usize, bool) {
        let Some((sock, proxy)) = self
            .keys
            .get(&listener)
            .and_then(|key| self.by_key.get(key))
            .map(|h| (h.sock.clone(), h.proxy))
        else {
            return (0, false);
        };
        let mut taken = 0;
        for _ in 0..tries {
            if self.pending.len() >= MAX_PENDING {
                break;
            }
            match listen::accept(&*sock, false) {
                Ok(fd) => {
                    taken += 1;
                    self.stats.accepted += 1;
                    self.arrived(listener, fd, proxy);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if starved(&e) => return (taken, true),
                Err(_) => self.stats.accept_errors += 1,
            }
        }
        (taken, false)
    }

    /// The round interval a round-robin listener gets: none where the backend cannot.
    pub(crate) fn rounds(&self, driver: &Driver) -> Option<Duration> {
        self.accept_rounds.filter(|_| driver.can_accept_in_rounds())
    }

    /// Accept rounds this far apart from now on ([`crate::Primary::set_accept_rounds`]).
    pub(crate) fn set_accept_rounds(&mut self, cx: &mut Ctx<'_>, interval: Duration) {
        self.accept_rounds = Some(interval).filter(|i| !i.is_zero());
        let rounds = self.rounds(cx.driver);
        let now = Instant::now();
        for h in self.by_key.values_mut() {
            if h.handoff {
                h.rounds = rounds;
                // A listener resting now starts its next round no later than one new interval
                // from now (a starved one keeps its back-off).
                if let (Some(at), Some(r), false) = (h.retry_at, rounds, h.starved) {
                    h.retry_at = Some(at.min(now + r));
                }
                if rounds.is_none() && !h.starved {
                    h.retry_at = None;
                }
            }
        }
    }

    /// In rounds: the listener took connections; it stops accepting until the next round,
    /// while the kernel's backlog gathers the next ones.
    pub(super) fn rest(&mut self, cx: &mut Ctx<'_>, key: &Key) {
        if let Some(h) = self.by_key.get_mut(key) {
            if let Some(gap) = h.rounds {
                h.pause(cx.driver);
                h.quiet = false;
                h.starved = false;
                h.retry_at = Some(Instant::now() + gap);
            }
        }
    }

    /// Accepting failed for want of fds or memory: the connection stays in the kernel's
    /// backlog, and accepting pauses for [`STARVED_BACKOFF`] rather than spinning (the loop
    /// re-checks paused listeners every millisecond).
    pub(super) fn back_off(&mut self, cx: &mut Ctx<'_>, key: &Key) {
        self.stats.starved += 1;
        if let Some(h) = self.by_key.get_mut(key) {
            h.pause(cx.driver);
            h.accept_op = None;
            h.retry_at = Some(Instant::now() + STARVED_BACKOFF);
            h.starved = true;
        }
    }
}
