//! The primary's two event loops behind one face: io_uring (the default) and epoll (the
//! fallback). Both report per-fd happenings with a token; [`super::core`] does the rest, so
//! the two behave the same.

use std::sync::Arc;
use std::time::Duration;

use ringleader_sys::epoll::{Epoll, Interest, Ready};
use ringleader_sys::poll::Flags;
use ringleader_sys::scm;
use ringleader_sys::uring::{Completion, OpId, Ring};
use ringleader_sys::{AsFd, BorrowedFd, OwnedFd};

use crate::ids::WorkerId;

/// Which event loop a primary runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// io_uring: receives, exits and signals complete in one ring.
    IoUring,
    /// epoll: readiness, then the system calls.
    Epoll,
}

/// What an fd registration is for; packed into the low bits of a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tag {
    Channel = 0,
    Exit = 1,
    Writable = 2,
    /// A listening socket; its id is the listener's, from 1 (token 3, id 0, is the signals').
    Accept = 3,
    /// A worker read from a hand-off channel it was full on ([`Driver::watch_taken`]).
    Taken = 4,
    /// The admin endpoint's epoll set ([`crate::Primary::serve_admin`]).
    Admin = 5,
    /// A connection whose PROXY protocol header has not all come; its id is its number
    /// while it waits (`listeners::headers`).
    Header = 6,
}

pub(crate) const SIGNALS: u64 = 3;

/// A token: the tag in the low [`TAG_BITS`], an id (a worker's or a listener's) in the next
/// 32, and for numbered tokens a generation in the rest.
const TAG_BITS: u32 = 3;
const GENERATION_SHIFT: u32 = TAG_BITS + 32;
const GENERATION_MASK: u32 = (1 << (64 - GENERATION_SHIFT)) - 1;

pub(crate) fn token(id: u32, tag: Tag) -> u64 {
    (u64::from(id) << TAG_BITS) | tag as u64
}

/// A token with a generation in its top bits, which tells a late completion of an earlier
/// operation (cancelled, or ended) from the current one's. Generations wrap.
pub(crate) fn numbered_token(id: u32, tag: Tag, generation: u32) -> u64 {
    (u64::from(generation & GENERATION_MASK) << GENERATION_SHIFT) | token(id, tag)
}

/// The generation [`numbered_token`] packed.
pub(crate) fn token_generation(token: u64) -> u32 {
    (token >> GENERATION_SHIFT) as u32 & GENERATION_MASK
}

pub(crate) fn untoken(token: u64) -> (u32, Option<Tag>) {
    let id = (token >> TAG_BITS) as u32;
    let tag = match token & ((1 << TAG_BITS) - 1) {
        0 => Some(Tag::Channel),
        1 => Some(Tag::Exit),
        2 => Some(Tag::Writable),
        3 if id > 0 => Some(Tag::Accept),
        4 => Some(Tag::Taken),
        5 => Some(Tag::Admin),
        6 => Some(Tag::Header),
        _ => None,
    };
    (id, tag)
}

/// An fd as the driver holds it while an operation is in flight.
pub(crate) fn dyn_fd<T: AsFd + 'static>(fd: &Arc<T>) -> Arc<dyn AsFd> {
    fd.clone()
}

/// Each backend keeps the hand-offs it made at once (`sendmsg`, then `close`: epoll, and
/// io_uring before 5.17) until the next [`Driver::wait`] or [`Driver::settle`] reports them,
/// as io_uring reports its chains: one route for a hand-off's outcome.
pub(crate) enum Driver {
    Uring(Box<Ring>, Vec<Handed>),
    Epoll(Epoll, Vec<Ready>, Vec<Handed>),
}

/// How one [`Driver::hand_over`] ended.
pub(crate) struct Handed {
    pub(crate) token: u64,
    /// The messages that carried them.
    pub(crate) messages: u64,
    /// Connections not delivered, still ours.
    pub(crate) unsent: Vec<OwnedFd>,
}

/// One thing the loop saw.
pub(crate) enum Happening {
    /// io_uring: a receive finished.
    Received(Completion),
    /// An fd is ready (epoll), or a poll finished (io_uring). `more`: the watch stays
    /// (epoll's registrations, io_uring's multishot polls).
    Ready {
        token: u64,
        read: bool,
        write: bool,
        more: bool,
    },
    /// A hand-off ended (both backends).
    Handed(Handed),
}

impl Driver {
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Driver::Uring(..) => Backend::IoUring,
            Driver::Epoll(..) => Backend::Epoll,
        }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Driver::Uring(r, _) => r.as_fd(),
            Driver::Epoll(e, ..) => e.as_fd(),
        }
    }

    /// Starts watching `fd` for readability under `token`: a receive on io_uring for a
    /// channel (given `buf`), a one-shot poll otherwise.
    pub(crate) fn watch_read(
        &mut self,
        fd: &Arc<dyn AsFd>,
        token: u64,
        recv_buf: Option<Vec<u8>>,
    ) -> std::io::Result<Option<OpId>> {
        match self {
            Driver::Uring(ring, _) => match recv_buf {
                Some(buf) => ring.recvmsg(fd, buf, token).map(Some),
                None => ring.poll(fd, Flags::IN, token).map(Some),
            },
            Driver::Epoll(ep, ..) => ep.add(fd.as_fd(), token, Interest::READ).map(|()| None),
        }
    }

    /// Starts accepting on a listening socket: multishot accept on io_uring, readiness on
    /// epoll.
    pub(crate) fn accept(
        &mut self,
        fd: &Arc<dyn AsFd>,
        token: u64,
    ) -> std::io::Result<Option<OpId>> {
        match self {
            Driver::Uring(ring, _) => ring.accept_multishot(fd, token).map(Some),
            Driver::Epoll(ep, ..) => ep.add(fd.as_fd(), token, Interest::READ).map(|()| None),
        }
    }

    /// io_uring: accepts what waits on a listening socket now and ends (`EAGAIN`); epoll: as
    /// [`Driver::accept`] (the accept loop takes what waits when readiness comes).
    pub(crate) fn accept_waiting(
        &mut self,
        fd: &Arc<dyn AsFd>,
        token: u64,
    ) -> std::io::Result<Option<OpId>> {
        match self {
            Driver::Uring(ring, _) => ring.accept_drain(fd, token).map(Some),
            Driver::Epoll(..) => self.accept(fd, token),
        }
    }

    /// Whether accepting in rounds is possible: always on epoll, with
    /// `IORING_ACCEPT_DONTWAIT` (6.10) on io_uring.
    pub(crate) fn can_accept_in_rounds(&self) -> bool {
        match self {
            Driver::Uring(ring, _) => ring.features().accept_drain,
            Driver::Epoll(..) => true,
        }
    }

    /// Hands `fds` over the Unix stream socket `to`, each in a message of its own (one byte
    /// and one fd), and closes our copies of those delivered: with io_uring 5.17, a chain of
    /// `sendmsg` and `close` per connection ([`Ring::hand_over`]) that the next
    /// [`Driver::wait`] (or [`Driver::settle`]) runs, so that our copies are closed before
    /// the receiver can run; elsewhere at once (one `sendmmsg`, then the `close`s). Either way
    /// the outcome comes from the next wait or settle.
    ///
    /// One connection per message, because a worker that reads a message holds all of its
    /// fds: a worker stopped or stuck right after one read would keep connections its
    /// application never took, out of the primary's reach. With one each, what a worker has
    /// not taken is still in the channel, where the primary can take it back.
    pub(crate) fn hand_over(&mut self, to: &Arc<dyn AsFd>, fds: Vec<OwnedFd>, token: u64) {
        match self {
            Driver::Uring(ring, _) if ring.features().handoff => {
                for fd in fds {
                    ring.hand_over(to, vec![fd], token);
                }
            }
            Driver::Uring(_, sent) | Driver::Epoll(_, _, sent) => {
                sent.push(send_now(to.as_fd(), fds, token));
            }
        }
    }

    /// Whether hand-offs [`Driver::hand_over`] made have not been reported yet.
    /// For a loop outside this one ([`crate::Primary::as_fd`]): makes `bell` readable
    /// whenever io_uring has completions for this loop, which its own fd does not show
    /// until this thread enters the kernel. Nothing on epoll, whose fd shows its readiness.
    pub(crate) fn ring_bell_on_completions(&self, bell: BorrowedFd<'_>) -> std::io::Result<()> {
        match self {
            Driver::Uring(ring, _) => ring.register_eventfd(bell),
            Driver::Epoll(..) => Ok(()),
        }
    }

    /// Before control goes back to a loop outside: what was queued goes to the kernel, so
    /// that its outcome shows on the fds that loop watches.
    pub(crate) fn submit(&mut self) -> std::io::Result<()> {
        match self {
            Driver::Uring(ring, _) => ring.submit(),
            Driver::Epoll(..) => Ok(()),
        }
    }

    /// Whether outcomes wait in this process, where no fd shows them: the next wait returns
    /// them at once.
    pub(crate) fn holds_outcomes(&self) -> bool {
        match self {
            Driver::Uring(ring, sent) => ring.holds_completions() || !sent.is_empty(),
            Driver::Epoll(_, _, sent) => !sent.is_empty(),
        }
    }

    pub(crate) fn handoffs_pending(&self) -> bool {
        match self {
            Driver::Uring(ring, sent) => ring.handoffs_pending() || !sent.is_empty(),
            Driver::Epoll(_, _, sent) => !sent.is_empty(),
        }
    }

    /// Runs the hand-offs [`Driver::hand_over`] queued, without waiting for anything else,
    /// and appends how they ended to `out`, with those made at once. On an error the chains
    /// stay queued, and a later call (or wait) reports them.
    pub(crate) fn settle(&mut self, out: &mut Vec<Handed>) -> std::io::Result<()> {
        let ring = match self {
            Driver::Uring(ring, sent) => {
                out.append(sent);
                ring
            }
            Driver::Epoll(_, _, sent) => {
                out.append(sent);
                return Ok(());
            }
        };
        let mut done = Vec::new();
        let settled = ring.settle_handoffs(&mut done);
        out.extend(done.into_iter().filter_map(|c| match c {
            Completion::Handoff { token, result, fds } => Some(handed(token, result, fds)),
            _ => None,
        }));
        settled
    }

    /// io_uring: re-arms a one-shot read watch, and returns its operation (to cancel it);
    /// epoll: nothing (level-triggered, the registration stays).
    pub(crate) fn rearm_read(
        &mut self,
        fd: &Arc<dyn AsFd>,
        token: u64,
    ) -> std::io::Result<Option<OpId>> {
        match self {
            Driver::Uring(ring, _) => ring.poll(fd, Flags::IN, token).map(Some),
            Driver::Epoll(..) => Ok(None),
        }
    }

    /// Asks to hear when a channel becomes writable (`on`), or stops asking.
    pub(crate) fn want_write(
        &mut self,
        fd: &Arc<dyn AsFd>,
        id: WorkerId,
        on: bool,
    ) -> std::io::Result<()> {
        match self {
            Driver::Uring(ring, _) => {
                if on {
                    ring.poll(fd, Flags::OUT, token(id, Tag::Writable))?;
                }
                Ok(())
            }
            Driver::Epoll(ep, ..) => ep.modify(
                fd.as_fd(),
                token(id, Tag::Channel),
                Interest {
                    read: true,
                    write: on,
                },
            ),
        }
    }

    /// Starts watching a hand-off channel's sending end for the worker's reads: a report
    /// (under `token`) at once, then one each time the worker reads from the channel (the
    /// kernel frees send buffer and wakes writers), however often the queue changes between
    /// two looks. Edge-triggered `EPOLLOUT` on epoll, a multishot poll on io_uring. Ends with
    /// [`Driver::forget`]. `Ok(None)`: this kernel cannot (io_uring before 5.13).
    pub(crate) fn watch_taken(
        &mut self,
        tx: &Arc<dyn AsFd>,
        token: u64,
    ) -> std::io::Result<Option<Option<OpId>>> {
        let write = Interest {
            read: false,
            write: true,
        };
        match self {
            Driver::Uring(ring, _) if ring.features().poll_edges => ring
                .poll_edges(tx, Flags::OUT, token)
                .map(|op| Some(Some(op))),
            Driver::Uring(..) => Ok(None),
            Driver::Epoll(ep, ..) => ep.add_edge(tx.as_fd(), token, write).map(|()| Some(None)),
        }
    }

    /// Stops watching `fd`; an io_uring operation in flight is cancelled.
    pub(crate) fn forget(&mut self, fd: &Arc<dyn AsFd>, op: Option<OpId>) {
        match self {
            Driver::Uring(ring, _) => {
                if let Some(op) = op {
                    let _ = ring.cancel(op);
                }
            }
            Driver::Epoll(ep, ..) => {
                let _ = ep.delete(fd.as_fd());
            }
        }
    }

    /// Waits for what happens next (at most `timeout`) and appends it to `out`.
    pub(crate) fn wait(
        &mut self,
        out: &mut Vec<Happening>,
        timeout: Option<Duration>,
    ) -> std::io::Result<()> {
        match self {
            Driver::Uring(ring, sent) => {
                // What was handed over at once is reported now, without waiting.
                let timeout = if sent.is_empty() {
                    timeout
                } else {
                    Some(Duration::ZERO)
                };
                out.extend(sent.drain(..).map(Happening::Handed));
                let mut done = Vec::new();
                ring.wait(&mut done, timeout)?;
                out.extend(done.into_iter().map(|c| match c {
                    Completion::Poll {
                        token,
                        result,
                        more,
                    } => {
                        let flags = result.unwrap_or(Flags::ERR);
                        let bad = flags.intersects(Flags::ERR | Flags::HUP | Flags::NVAL);
                        Happening::Ready {
                            token,
                            read: bad || flags.intersects(Flags::IN | Flags::RDHUP),
                            write: bad || flags.contains(Flags::OUT),
                            more,
                        }
                    }
                    Completion::Handoff { token, result, fds } => {
                        Happening::Handed(handed(token, result, fds))
                    }
                    other => Happening::Received(other),
                }));
            }
            Driver::Epoll(ep, ready, sent) => {
                let timeout = if sent.is_empty() {
                    timeout
                } else {
                    Some(Duration::ZERO)
                };
                out.extend(sent.drain(..).map(Happening::Handed));
                ready.clear();
                ep.wait(ready, timeout)?;
                out.extend(ready.iter().map(|r| Happening::Ready {
                    token: r.token,
                    read: r.read,
                    write: r.write,
                    more: true,
                }));
            }
        }
        Ok(())
    }
}

/// A hand-off as system calls: one `sendmmsg` of a message per connection, then the
/// `close` of our copies (dropped) at once, while the receiver is only just waking up; a
/// later close would often come after the receiver closed its copy, and then it would pay
/// for the whole TCP teardown.
fn send_now(to: BorrowedFd<'_>, mut fds: Vec<OwnedFd>, token: u64) -> Handed {
    let mut messages = 0;
    while !fds.is_empty() {
        let n = fds.len().min(scm::MAX_FDS);
        let borrowed: Vec<BorrowedFd<'_>> = fds[..n].iter().map(AsFd::as_fd).collect();
        match scm::send_each(to, &borrowed) {
            Ok(sent) if sent > 0 => {
                messages += sent as u64;
                drop(borrowed);
                fds.drain(..sent);
            }
            _ => break,
        }
    }
    Handed {
        token,
        messages,
        unsent: fds,
    }
}

/// How a ring hand-off ended, from its completion.
fn handed(token: u64, result: std::io::Result<usize>, fds: Vec<OwnedFd>) -> Handed {
    Handed {
        token,
        messages: u64::from(result.is_ok_and(|n| n > 0)),
        unsent: fds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_with_their_tag_id_and_generation() {
        for tag in [
            Tag::Channel,
            Tag::Exit,
            Tag::Writable,
            Tag::Accept,
            Tag::Taken,
        ] {
            for id in [1, 2, 77, u32::MAX] {
                assert_eq!(untoken(token(id, tag)), (id, Some(tag)));
                let numbered = numbered_token(id, tag, 12345);
                assert_eq!(untoken(numbered), (id, Some(tag)));
                assert_eq!(token_generation(numbered), 12345);
            }
        }
        // Generations wrap within their bits, and never reach the id or the tag.
        let wrapped = numbered_token(5, Tag::Accept, u32::MAX);
        assert_eq!(untoken(wrapped), (5, Some(Tag::Accept)));
        assert_eq!(token_generation(wrapped), GENERATION_MASK);
        assert_eq!(token_generation(token(5, Tag::Accept)), 0);
        // The signals' token is no listener's.
        assert_eq!(untoken(SIGNALS), (0, None));
    }
}
