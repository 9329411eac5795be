//! `epoll(7)`: the fallback event loop for kernels or sandboxes without io_uring.

use std::io;
use std::time::Duration;

use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};

/// What to wait for on one fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interest {
    /// Readable (`EPOLLIN`, with `EPOLLRDHUP`).
    pub read: bool,
    /// Writable (`EPOLLOUT`).
    pub write: bool,
}

impl Interest {
    /// Readable only.
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };
}

/// One readiness report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The token given at registration.
    pub token: u64,
    /// Readable, or hung up / in error (a read will tell which).
    pub read: bool,
    /// Writable, or in error.
    pub write: bool,
}

/// An epoll instance (close-on-exec), level-triggered unless added with [`Epoll::add_edge`].
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<epoll::Event>,
}

impl std::fmt::Debug for Epoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoll").field("fd", &self.fd).finish()
    }
}

fn flags(i: Interest) -> EventFlags {
    let mut f = EventFlags::empty();
    if i.read {
        f |= EventFlags::IN | EventFlags::RDHUP;
    }
    if i.write {
        f |= EventFlags::OUT;
    }
    f
}

impl Epoll {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    ///
    /// # Errors
    /// What `epoll_create1(2)` returns.
    pub fn new() -> io::Result<Epoll> {
        Ok(Epoll {
            fd: epoll::create(CreateFlags::CLOEXEC)?,
            events: Vec::with_capacity(256),
        })
    }

    /// `EPOLL_CTL_ADD`.
    ///
    /// # Errors
    /// What `epoll_ctl(2)` returns.
    pub fn add(&self, fd: impl AsFd, token: u64, interest: Interest) -> io::Result<()> {
        Ok(epoll::add(
            &self.fd,
            fd,
            EventData::new_u64(token),
            flags(interest),
        )?)
    }

    /// `EPOLL_CTL_ADD` with `EPOLLET`: reported once when added if `fd` is ready then, and
    /// after that once each time the kernel signals new readiness (for `write`: each time the
    /// peer of a socket reads, freeing send buffer), however long it stays ready. Level
    /// watches cannot say "the peer read something" of a socket that is always writable.
    ///
    /// # Errors
    /// What `epoll_ctl(2)` returns.
    pub fn add_edge(&self, fd: impl AsFd, token: u64, interest: Interest) -> io::Result<()> {
        Ok(epoll::add(
            &self.fd,
            fd,
            EventData::new_u64(token),
            flags(interest) | EventFlags::ET,
        )?)
    }

    /// `EPOLL_CTL_MOD`.
    ///
    /// # Errors
    /// What `epoll_ctl(2)` returns.
    pub fn modify(&self, fd: impl AsFd, token: u64, interest: Interest) -> io::Result<()> {
        Ok(epoll::modify(
            &self.fd,
            fd,
            EventData::new_u64(token),
            flags(interest),
        )?)
    }

    /// `EPOLL_CTL_DEL`; an fd that is not registered is not an error.
    ///
    /// # Errors
    /// What `epoll_ctl(2)` returns, except `ENOENT`.
    pub fn delete(&self, fd: impl AsFd) -> io::Result<()> {
        match epoll::delete(&self.fd, fd) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// `epoll_wait(2)`: appends what is ready to `out`; `EINTR` returns with nothing.
    ///
    /// # Errors
    /// What `epoll_wait(2)` returns.
    pub fn wait(&mut self, out: &mut Vec<Ready>, timeout: Option<Duration>) -> io::Result<()> {
        let ts = timeout.map(|t| rustix::event::Timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(t.subsec_nanos()),
        });
        self.events.clear();
        match epoll::wait(
            &self.fd,
            rustix::buffer::spare_capacity(&mut self.events),
            ts.as_ref(),
        ) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let bad = EventFlags::ERR | EventFlags::HUP;
        for e in &self.events {
            let f = e.flags;
            out.push(Ready {
                token: e.data.u64(),
                read: f.intersects(EventFlags::IN | EventFlags::RDHUP | bad),
                write: f.intersects(EventFlags::OUT | bad),
            });
        }
        Ok(())
    }
}

impl AsFd for Epoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Epoll> for OwnedFd {
    /// The epoll fd alone, for a set that is only polled as a whole (readable when one of
    /// its fds is ready).
    fn from(e: Epoll) -> OwnedFd {
        e.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_write_watch_reports_each_read_of_the_peer() {
        let ep = &mut Epoll::new().expect("epoll");
        let (ours, theirs) = crate::socket::stream_pair().expect("pair");
        let write = Interest {
            read: false,
            write: true,
        };
        ep.add_edge(&ours, 7, write).expect("add");
        let wait = |ep: &mut Epoll, ms| {
            let mut out = Vec::new();
            ep.wait(&mut out, Some(Duration::from_millis(ms)))
                .expect("wait");
            out.iter().map(|r| (r.token, r.write)).collect::<Vec<_>>()
        };
        // Writable when added: reported once, and not again while nothing changes.
        assert_eq!(wait(ep, 5000), [(7, true)]);
        assert!(wait(ep, 0).is_empty());
        crate::scm::send(
            &ours,
            &[std::io::IoSlice::new(b"ab")],
            &[],
            crate::scm::Blocking::No,
        )
        .expect("send");
        assert!(wait(ep, 50).is_empty());
        let (mut buf, mut fds) = ([0u8; 2], Vec::new());
        crate::scm::recv(&theirs, &mut buf, &mut fds, crate::scm::Blocking::No).expect("recv");
        assert_eq!(wait(ep, 5000), [(7, true)]);
        assert!(wait(ep, 0).is_empty());
    }
}
