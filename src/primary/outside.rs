//! Driving the primary from a loop of the application's own ([`Primary::as_fd`]): one epoll
//! fd that turns readable whenever [`Primary::poll`] has work. It watches the loop's own
//! readiness (the epoll backend's fd; on io_uring, an eventfd the kernel signals for each
//! completion, since the ring's fd stays unreadable until this thread enters the kernel) and
//! a timer set after each poll for the work that comes due by itself: accept rounds, steer
//! and stall checks, respawn back-offs, rolls and upgrades. Level- and edge-triggered
//! watchers both work: a poll that leaves the fd readable rings the bell, a fresh edge.
//!
//! [`Primary::as_fd`]: crate::Primary::as_fd
//! [`Primary::poll`]: crate::Primary::poll

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use ringleader_sys::epoll::{Epoll, Interest};
use ringleader_sys::poll::{Doorbell, Timer};
use ringleader_sys::{AsFd, BorrowedFd};

use super::driver::Driver;

pub(crate) struct Outside {
    epoll: Epoll,
    timer: Timer,
    /// Rung by the kernel for io_uring's completions, and by the primary for work a call
    /// from the application queued.
    bell: Rc<Doorbell>,
    /// The bell is registered on the ring: done on first use, so that a primary nobody
    /// drives from outside pays nothing for it.
    rung: Cell<bool>,
    /// Registering it failed: the next poll says so.
    failed: Cell<Option<std::io::Error>>,
}

impl Outside {
    /// The fd, with the timer and the loop's readiness in it.
    pub(crate) fn new(driver: &Driver) -> std::io::Result<Outside> {
        let epoll = Epoll::new()?;
        let timer = Timer::new()?;
        let bell = Rc::new(Doorbell::new()?);
        epoll.add(&timer, 0, Interest::READ)?;
        epoll.add(&*bell, 1, Interest::READ)?;
        // Nested epoll: readable while the inner one has anything ready. io_uring's own fd
        // would not do (see the module docs); its bell stands in.
        if let Driver::Epoll(..) = driver {
            epoll.add(driver.fd(), 2, Interest::READ)?;
        }
        Ok(Outside {
            epoll,
            timer,
            bell,
            rung: Cell::new(false),
            failed: Cell::new(None),
        })
    }

    /// The fd an outside loop watches. The first call with the driver at hand makes
    /// io_uring ring the bell; if that fails, [`Outside::take_error`] says so.
    pub(crate) fn fd(&self, driver: Option<&Driver>) -> BorrowedFd<'_> {
        if let Some(driver) = driver.filter(|_| !self.rung.get()) {
            self.rung.set(true);
            if let Err(e) = driver.ring_bell_on_completions(self.bell.as_fd()) {
                self.failed.set(Some(e));
            }
            // Whatever happened before the loop came (events waiting, work queued) is its
            // first poll's.
            self.bell.ring();
        }
        self.epoll.as_fd()
    }

    /// The bell, for the primary to ring ([`Core::nudge_outside`]).
    ///
    /// [`Core::nudge_outside`]: super::core::Core::nudge_outside
    pub(crate) fn bell(&self) -> Rc<Doorbell> {
        self.bell.clone()
    }

    /// Why the fd cannot show io_uring's completions, once.
    pub(crate) fn take_error(&self) -> Option<std::io::Error> {
        self.failed.take()
    }

    /// Whether an outside loop watches (the fd was asked for).
    pub(crate) fn watched(&self) -> bool {
        self.rung.get()
    }

    /// Before a poll: what made the fd readable is consumed (the poll does the work).
    pub(crate) fn before(&self) {
        self.bell.clear();
        self.timer.clear();
    }

    /// After a poll: the timer fires when work next comes due (`None`: no such work).
    ///
    /// # Errors
    /// What `timerfd_settime(2)` returns.
    pub(crate) fn after(&self, due: Option<Instant>) -> std::io::Result<()> {
        self.timer
            .set(due.map(|at| at.saturating_duration_since(Instant::now())))?;
        // Still readable (the loop's fds hold more than one poll took): ring the bell, whose
        // wake-up is a fresh edge for an edge-triggered watcher (mio, tokio), which would
        // otherwise wait for one that never comes.
        let still = ringleader_sys::poll::poll(
            &[(&self.epoll.as_fd(), ringleader_sys::poll::IN)],
            Some(std::time::Duration::ZERO),
        )?;
        if !still[0].is_empty() {
            self.bell.ring();
        }
        Ok(())
    }
}
