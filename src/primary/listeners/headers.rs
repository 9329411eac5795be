//! Connections on a PROXY protocol listener whose header has not all come yet
//! ([`crate::ProxyProtocol`]): each waits here, watched for more bytes, until its whole
//! header waits in the socket (it then goes to the pending queue with the addresses the
//! header carries) or it is refused: a malformed or too long header, a client that hangs up
//! mid-header, or a deadline passed.
//!
//! Looking costs a `recv(MSG_PEEK)` and no copy kept: the header stays in the socket (see
//! [`crate::proxy_protocol`]). Between looks the socket's low-water mark (`SO_RCVLOWAT`) is
//! one byte more than was seen, so the watch fires when more has come, not again for the
//! same bytes; a wake-up with nothing more means the client has gone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringleader_sys::uring::OpId;
use ringleader_sys::{OwnedFd, socket};

use super::{ListenerId, MAX_PENDING, Pending};
use crate::policy::Addresses;
use crate::primary::driver::{Driver, Tag, dyn_fd, token};
use crate::proxy_protocol::{self, Header, Proxied};

/// One connection waiting for the rest of its header.
struct Waiting {
    listener: ListenerId,
    fd: Arc<OwnedFd>,
    by: Instant,
    /// How many bytes the last look saw.
    seen: usize,
    /// Whether it is watched (an epoll registration, or an io_uring poll once armed).
    watched: bool,
    /// The io_uring poll in flight.
    op: Option<OpId>,
}

/// What became of a connection looked at.
pub(super) enum Looked {
    /// Its whole header waits: on to a worker.
    Ready(Pending),
    /// Still waiting, watched.
    Waiting,
    /// Closed.
    Refused,
}

/// The connections waiting for their headers, by number (numbers come in arrival order).
#[derive(Default)]
pub(super) struct Headers {
    waiting: BTreeMap<u32, Waiting>,
    next: u32,
    /// Headers read whole.
    pub(super) read: u64,
    /// Connections refused.
    pub(super) refused: u64,
}

impl Headers {
    /// How many wait.
    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// A connection just accepted on a PROXY protocol listener: looked at once (a
    /// balancer's header usually comes in the first segment, often before the accept).
    pub(super) fn start(
        &mut self,
        driver: &mut Driver,
        listener: ListenerId,
        fd: OwnedFd,
        within: Duration,
    ) -> Looked {
        // Most often the whole header is there already (the listener defers its accepts
        // until data comes): then nothing is kept here.
        if let Ok((Header::Complete { proxied, .. }, _)) = proxy_protocol::peek(&fd) {
            self.read += 1;
            return Looked::Ready(ready(listener, fd, proxied));
        }
        if self.waiting.len() >= MAX_PENDING {
            // The oldest has waited longest for a header that does not come.
            if let Some((&oldest, _)) = self.waiting.iter().next() {
                self.refuse(driver, oldest);
            }
        }
        let number = self.next;
        self.next = self.next.wrapping_add(1);
        self.waiting.insert(
            number,
            Waiting {
                listener,
                fd: Arc::new(fd),
                by: Instant::now() + within,
                seen: 0,
                watched: false,
                op: None,
            },
        );
        self.look(driver, number)
    }

    /// The watch on connection `number` fired (`token`'s id); a late one, of a connection
    /// gone since, is nothing.
    pub(super) fn on_ready(&mut self, driver: &mut Driver, number: u32) -> Looked {
        let Some(w) = self.waiting.get_mut(&number) else {
            return Looked::Waiting;
        };
        // io_uring's poll is one-shot: it is over.
        w.op = None;
        self.look(driver, number)
    }

    /// Refuses the connections whose deadline passed.
    pub(super) fn expire(&mut self, driver: &mut Driver, now: Instant) {
        let late: Vec<u32> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.by <= now)
            .map(|(n, _)| *n)
            .collect();
        for n in late {
            self.refuse(driver, n);
        }
    }

    /// When the next deadline comes.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.waiting.values().map(|w| w.by).min()
    }

    /// Peeks at connection `number`'s header.
    fn look(&mut self, driver: &mut Driver, number: u32) -> Looked {
        let Some(w) = self.waiting.get_mut(&number) else {
            return Looked::Waiting;
        };
        let (header, seen) = match proxy_protocol::peek(&*w.fd) {
            // End of file before a whole header.
            Ok((_, 0)) => return self.refuse(driver, number),
            Ok(peeked) => peeked,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => (Header::Incomplete, 0),
            Err(_) => return self.refuse(driver, number),
        };
        match header {
            Header::Complete { proxied, .. } => {
                let w = self.forget(driver, number).expect("looked at just now");
                self.read += 1;
                if w.seen > 0 {
                    // Back to the default, for the worker's reads.
                    let _ = socket::set_receive_low_water(&*w.fd, 1);
                }
                let fd = Arc::try_unwrap(w.fd).or_else(|fd| socket::dup(&*fd));
                let Ok(fd) = fd else {
                    self.refused += 1;
                    return Looked::Refused;
                };
                Looked::Ready(ready(w.listener, fd, proxied))
            }
            Header::Malformed(_) => self.refuse(driver, number),
            // Woken with nothing more: end of file (or an error) mid-header.
            Header::Incomplete if seen > 0 && seen <= w.seen => self.refuse(driver, number),
            Header::Incomplete => {
                w.seen = seen;
                let fd = dyn_fd(&w.fd);
                let tok = token(number, Tag::Header);
                // Nothing seen yet: the default mark (one byte) is the one wanted.
                let marked = match seen {
                    0 => Ok(()),
                    _ => socket::set_receive_low_water(&*w.fd, seen + 1),
                };
                let watched = marked.and_then(|()| {
                    if w.watched {
                        driver.rearm_read(&fd, tok)
                    } else {
                        driver.watch_read(&fd, tok, None)
                    }
                });
                match watched {
                    Ok(op) => {
                        w.watched = true;
                        w.op = op;
                        Looked::Waiting
                    }
                    Err(_) => self.refuse(driver, number),
                }
            }
        }
    }

    /// Closes connection `number`.
    fn refuse(&mut self, driver: &mut Driver, number: u32) -> Looked {
        if self.forget(driver, number).is_some() {
            self.refused += 1;
        }
        Looked::Refused
    }

    /// Stops watching connection `number` and gives it up.
    fn forget(&mut self, driver: &mut Driver, number: u32) -> Option<Waiting> {
        let mut w = self.waiting.remove(&number)?;
        if w.watched {
            // epoll watches until told otherwise; io_uring's poll in flight is cancelled.
            driver.forget(&dyn_fd(&w.fd), w.op.take());
        }
        Some(w)
    }
}

/// A connection whose header was read whole, pending for a worker, with the addresses the
/// header carries for the policy (a proxy's own connection: its socket's, read if asked).
fn ready(listener: ListenerId, fd: OwnedFd, proxied: Option<Proxied>) -> Pending {
    let mut pending = Pending::new(listener, fd);
    pending.addresses = proxied.map(named);
    pending
}

/// The addresses a policy sees for connection `fd`: those its PROXY protocol header names,
/// on a listener that reads one (`proxy`; the header stays in the socket until a worker
/// takes the connection, so one that came back still has it), else the socket's.
pub(super) fn addresses(fd: &OwnedFd, proxy: bool) -> Addresses {
    let proxied = match proxy.then(|| proxy_protocol::peek(fd)) {
        Some(Ok((Header::Complete { proxied, .. }, _))) => proxied,
        _ => None,
    };
    proxied.map_or_else(
        || {
            let (client, local) = socket::addresses(fd);
            Addresses::new(client, local)
        },
        named,
    )
}

/// What a header names, as a policy sees it.
fn named(p: Proxied) -> Addresses {
    Addresses::new(Some(p.source), Some(p.destination))
}
