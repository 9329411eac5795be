//! One turn of the loop: flush, busy-poll, wait, and turn what happened into events.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringleader_sys::uring::Completion;

use crossbeam_utils::Backoff;

use super::{Core, roll, upgrade};
use crate::error::{Error, Result};
use crate::primary::driver::{Happening, SIGNALS, Tag, dyn_fd, token, token_generation, untoken};
use crate::primary::event::Event;
use crate::primary::metrics::Admin;

impl Core {
    /// The next event: one ready now, or the first after turns of the loop. `Ok(None)` once
    /// `deadline` passed, or when nothing could produce another event ([`Core::idle`]).
    pub(crate) fn next_event(&mut self, deadline: Option<Instant>) -> Result<Option<Event>> {
        loop {
            if let Some(event) = self.deliver() {
                return Ok(Some(event));
            }
            if self.idle() {
                return Ok(None);
            }
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(None),
                },
                None => None,
            };
            self.turn(left)?;
        }
    }

    /// Runs the loop once: flushes, waits up to `timeout` (busy-polling first, see
    /// [`crate::tuning`]), and turns what happened into events.
    ///
    /// io_uring: connections handed over during the wait go out in the next one's system
    /// call (see [`ringleader_sys::uring::Ring::wait`]), which also sleeps: a worker woken by
    /// them runs while the primary sleeps instead of preempting it, one context switch less
    /// per round. When nothing came for the caller, that next wait is still this turn's;
    /// otherwise the hand-offs go out before the turn returns.
    pub(crate) fn turn(&mut self, timeout: Option<Duration>) -> Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            self.turn_once(left)?;
            if !self.driver.handoffs_pending() {
                return Ok(());
            }
            if !self.ready.is_empty() || left.is_some_and(|l| l.is_zero()) {
                self.settle_handoffs();
                return Ok(());
            }
        }
    }

    pub(super) fn turn_once(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.node_reads_due();
        self.flush_all();
        self.respawn_due();
        self.check_memory();
        self.roll_on();
        self.upgrade_on();
        if self
            .admin
            .as_ref()
            .and_then(Admin::next_deadline)
            .is_some_and(|at| at <= Instant::now())
        {
            self.admin_turn();
        }
        if !self.ready.is_empty() {
            return self.wait(Some(Duration::ZERO)).map(drop);
        }
        if let Some(at) = self.timed_work() {
            // A listener rests between rounds, or a replacement waits for its time: sleep
            // until then (or anything else), without busy polling, which would take
            // connections one by one again.
            let until = at.saturating_duration_since(Instant::now());
            return self
                .wait(Some(timeout.map_or(until, |t| t.min(until))))
                .map(drop);
        }
        let spin = match timeout {
            Some(t) => t.min(self.busy_poll),
            None => self.busy_poll,
        };
        if !spin.is_zero() {
            let start = Instant::now();
            // A hot spin first, for answers that come within microseconds; then a polite one:
            // when another task waits for this CPU (on a small machine, often the very worker
            // or client we wait for) it runs now, else `sched_yield` returns at once.
            let backoff = Backoff::new();
            while start.elapsed() < spin {
                // Any progress ends the turn, not only an event: a flush that made room is
                // what a sender held back by back-pressure waits for.
                if self.wait(Some(Duration::ZERO))? > 0 {
                    return Ok(());
                }
                backoff.snooze();
            }
        }
        self.wait(timeout.map(|t| t.saturating_sub(spin))).map(drop)
    }

    /// When work that comes due by itself is due next: a listener's next round or check,
    /// a respawn, a roll's or an upgrade's next look, the service manager's watchdog.
    fn timed_work(&self) -> Option<Instant> {
        [
            self.listeners.next_round(),
            self.respawns.next_due(),
            self.rolling.as_ref().and_then(roll::Rolling::next_deadline),
            self.manager.next_due(),
            self.memory_due(),
            self.upgrading.as_ref().map(upgrade::Upgrading::next_check),
            self.admin.as_ref().and_then(Admin::next_deadline),
            self.next_node_read(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// For a loop outside this one, after a turn: moves supervision on, submits what the
    /// turn queued, and says when the loop must run again whatever its fds show: now, when
    /// events or outcomes wait in this process; else when timed work is due.
    ///
    /// # Errors
    /// What submitting to the kernel returns.
    pub(crate) fn hand_back(&mut self) -> Result<Option<Instant>> {
        // What the turn's events moved on (a roll's step done, an upgrade's new primary
        // ready) takes its next step now: no fd would show it.
        self.respawn_due();
        self.check_memory();
        self.roll_on();
        self.upgrade_on();
        self.node_reads_due();
        self.flush_all();
        self.driver
            .submit()
            .map_err(|e| Error::io("submit to the kernel", e))?;
        if !self.ready.is_empty() || self.driver.holds_outcomes() {
            return Ok(Some(Instant::now()));
        }
        Ok(self.timed_work())
    }

    /// Serves the admin endpoint's ready connections and closes those out of time, then
    /// watches its set again (io_uring's watches are one-shot).
    fn admin_turn(&mut self) {
        let Some(mut admin) = self.admin.take() else {
            return;
        };
        admin.turn(|| self.metrics(), || self.health());
        let _ = self
            .driver
            .rearm_read(&dyn_fd(&admin.watched()), token(0, Tag::Admin));
        self.admin = Some(admin);
    }

    /// Starts the admin endpoint on `addr` ([`crate::Primary::serve_admin`]).
    pub(crate) fn serve_admin(&mut self, addr: SocketAddr) -> Result<SocketAddr> {
        self.serve_endpoint(
            addr,
            "serve the admin endpoint",
            Admin::http,
            Admin::serve_http,
        )
    }

    /// Starts HAProxy's agent on `addr` ([`crate::Primary::serve_agent`]).
    pub(crate) fn serve_agent(&mut self, addr: SocketAddr) -> Result<SocketAddr> {
        self.serve_endpoint(addr, "serve the agent", Admin::agent, Admin::serve_agent)
    }

    /// One of the admin endpoint's listeners: refused when `served` says it is, else bound
    /// by `serve`, the endpoint's set watched from its first listener on.
    fn serve_endpoint(
        &mut self,
        addr: SocketAddr,
        op: &'static str,
        served: fn(&Admin) -> Option<SocketAddr>,
        serve: fn(&mut Admin, SocketAddr) -> std::io::Result<SocketAddr>,
    ) -> Result<SocketAddr> {
        if let Some(at) = self.admin.as_ref().and_then(served) {
            return Err(Error::new(crate::ErrorKind::Settings, op)
                .detail(format!("it is served on {at} already")));
        }
        let admin = match self.admin.take() {
            Some(admin) => admin,
            None => {
                let admin = Admin::new().map_err(|e| Error::io(op, e))?;
                self.driver
                    .watch_read(&dyn_fd(&admin.watched()), token(0, Tag::Admin), None)
                    .map_err(|e| Error::io(op, e))?;
                admin
            }
        };
        let admin = self.admin.insert(admin);
        serve(admin, addr).map_err(|e| Error::io(op, e).detail(addr.to_string()))
    }

    /// One wait of the driver, and what it saw turned into events. Returns how many things
    /// happened.
    pub(super) fn wait(&mut self, timeout: Option<Duration>) -> Result<usize> {
        let mut happenings = std::mem::take(&mut self.happenings);
        let result = self.driver.wait(&mut happenings, timeout);
        let count = happenings.len();
        for h in happenings.drain(..) {
            match h {
                Happening::Received(Completion::Accept {
                    token: tok,
                    result,
                    more,
                }) => {
                    self.with_listeners(|l, cx| l.on_accepted(cx, tok, result, more));
                }
                Happening::Received(c) => self.on_received(c),
                Happening::Handed(h) => self.with_listeners(|l, cx| l.on_handed(cx, h)),
                Happening::Ready {
                    token,
                    read,
                    write,
                    more,
                } => self.on_ready(token, read, write, more),
            }
        }
        self.happenings = happenings;
        self.dispatch();
        self.node_pump_all();
        self.tell_manager();
        self.drop_held_listeners();
        result
            .map(|()| count)
            .map_err(|e| Error::io("wait for events", e))
    }

    pub(super) fn on_ready(&mut self, tok: u64, read: bool, write: bool, more: bool) {
        if tok == SIGNALS {
            if let Some(fd) = self.signals.clone() {
                while let Ok(Some(sig)) = fd.read() {
                    self.ready.push_back(Event::Signal(sig));
                }
                let _ = self.driver.rearm_read(&dyn_fd(&fd), SIGNALS);
            }
            return;
        }
        let (id, tag) = untoken(tok);
        match tag {
            Some(Tag::Exit) => self.on_exit(id),
            Some(Tag::Accept) => self.with_listeners(|l, cx| l.accept_ready(cx, id)),
            Some(Tag::Taken) => self.listeners.on_taken(id, token_generation(tok), more),
            Some(Tag::Admin) => self.admin_turn(),
            Some(Tag::Header) => self.with_listeners(|l, cx| l.on_header(cx, id)),
            Some(Tag::Writable) => {
                if let Some(s) = self.workers.get_mut(&id) {
                    s.write_armed = false;
                }
                self.flush(id);
            }
            Some(Tag::Channel) => {
                if write {
                    self.flush(id);
                }
                if read {
                    self.read_channel(id);
                }
            }
            None => {}
        }
    }
}
