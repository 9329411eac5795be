//! `poll(2)` on a few fds, `eventfd(2)` to wake a poller, and `timerfd_create(2)` to wake
//! one at a time.

use std::io;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};
use rustix::fd::{AsFd, OwnedFd};

pub use rustix::event::PollFlags as Flags;

/// `poll(2)`: waits until one of `fds` is ready for its `(fd, interest)` or `timeout` passes.
/// Returns the readiness of each, in order (empty flags for those not ready). `EINTR` is
/// retried.
///
/// # Errors
/// What `poll(2)` returns.
pub fn poll(
    fds: &[(&dyn AsFd, PollFlags)],
    timeout: Option<Duration>,
) -> io::Result<Vec<PollFlags>> {
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|(fd, f)| PollFd::from_borrowed_fd(fd.as_fd(), *f))
        .collect();
    let ts = timeout.map(|t| rustix::event::Timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    loop {
        match rustix::event::poll(&mut pfds, ts.as_ref()) {
            Ok(_) => return Ok(pfds.iter().map(|p| p.revents()).collect()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A non-blocking, close-on-exec `eventfd(2)` used as a doorbell.
#[derive(Debug)]
pub struct Doorbell(OwnedFd);

impl Doorbell {
    /// # Errors
    /// What `eventfd(2)` returns.
    pub fn new() -> io::Result<Self> {
        let flags = rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK;
        Ok(Self(rustix::event::eventfd(0, flags)?))
    }

    /// Makes the doorbell readable.
    pub fn ring(&self) {
        // EAGAIN only when the counter is near overflow: it is readable then anyway.
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }

    /// Resets it to not readable.
    pub fn clear(&self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.0, &mut buf);
    }
}

impl AsFd for Doorbell {
    fn as_fd(&self) -> rustix::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// A non-blocking, close-on-exec `timerfd` on the monotonic clock: readable once the time
/// it was set to has come, until read.
#[derive(Debug)]
pub struct Timer(OwnedFd);

impl Timer {
    /// # Errors
    /// What `timerfd_create(2)` returns.
    pub fn new() -> io::Result<Self> {
        use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
        let flags = TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK;
        Ok(Self(timerfd_create(TimerfdClockId::Monotonic, flags)?))
    }

    /// Sets it to turn readable after `after` (zero: at once), or disarms it (`None`); either
    /// way it is not readable before then.
    ///
    /// # Errors
    /// What `timerfd_settime(2)` returns.
    pub fn set(&self, after: Option<Duration>) -> io::Result<()> {
        use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
        self.clear();
        // A zero value disarms: "at once" is the shortest time there is.
        let value = after.map_or(Duration::ZERO, |a| a.max(Duration::from_nanos(1)));
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: value.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: i64::from(value.subsec_nanos()),
            },
        };
        timerfd_settime(&self.0, TimerfdTimerFlags::empty(), &spec)?;
        Ok(())
    }

    /// Reads the expirations, so that it is not readable until it expires again.
    pub fn clear(&self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.0, &mut buf);
    }
}

impl AsFd for Timer {
    fn as_fd(&self) -> rustix::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// `POLLIN`, for callers that do not import rustix.
pub const IN: PollFlags = PollFlags::IN;
/// `POLLOUT`.
pub const OUT: PollFlags = PollFlags::OUT;
/// `POLLRDHUP`: the peer shut down its writing half.
pub const RDHUP: PollFlags = PollFlags::RDHUP;
/// `POLLHUP`: both halves are shut down (the peer closed).
pub const HUP: PollFlags = PollFlags::HUP;
/// `POLLERR`.
pub const ERR: PollFlags = PollFlags::ERR;
