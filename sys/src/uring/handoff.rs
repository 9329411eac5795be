//! Hand-offs: a `sendmsg` of fds linked to a `close` of each of our copies, run in one
//! `io_uring_enter(2)`, and how each chain ended.

use std::io;
use std::sync::Arc;

use io_uring::{opcode, squeue, types};
use rustix::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

use super::{CHAIN_GUARD, CmsgSpace, Completion, Op, OpKind, Ring};
use crate::scm::{MAX_FDS, RECV_CMSG_SPACE};

/// The two bits that mark the user_data of a hand-off's operations, and which one each is.
/// Every operation of a chain posts a completion, whatever happens (the `close`s after a
/// failed `sendmsg` with `ECANCELED`), and the last `close`'s comes last.
pub(super) const HANDOFF: u64 = 0b11 << 61;
pub(super) const HANDOFF_SEND: u64 = 0b10 << 61;
pub(super) const HANDOFF_CLOSE: u64 = 0b01 << 61;
pub(super) const HANDOFF_LAST: u64 = 0b11 << 61;

/// What a hand-off's SENDMSG hands the kernel, and the fds its CLOSEs close; boxed so that
/// its address is stable while in flight.
pub(super) struct HandoffState {
    hdr: libc::msghdr,
    iov: libc::iovec,
    bytes: [u8; MAX_FDS],
    cmsg: CmsgSpace,
    /// Ours until the chain ends: closed by it, or given back if it was cancelled.
    fds: Vec<i32>,
    /// Why the `sendmsg` failed, once its completion said so.
    failed: Option<io::Error>,
}

impl Ring {
    /// The most fds one [`Ring::hand_over`] takes: [`MAX_FDS`], or fewer if the submission
    /// queue cannot hold the `sendmsg` and a `close` for each.
    pub fn max_handoff_fds(&self) -> usize {
        MAX_FDS.min(self.ring.params().sq_entries() as usize - 1)
    }

    /// Queues the hand-off of `fds` (1 to [`Ring::max_handoff_fds`]) over the Unix stream
    /// socket `to`: one `sendmsg(2)` of one byte per fd, the fds riding as `SCM_RIGHTS`
    /// (`MSG_DONTWAIT | MSG_NOSIGNAL`), linked to a `close` of each of our copies, which
    /// the kernel runs only if the `sendmsg` succeeded. [`Ring::settle_handoffs`] runs the
    /// chain and reports how it ended ([`Completion::Handoff`]); if the `sendmsg` failed,
    /// the fds come back with the error, still open.
    ///
    /// Why a chain rather than `sendmsg` then `close`: the chain runs inside one
    /// `io_uring_enter(2)`, so our copies are closed before the receiver (woken by the
    /// `sendmsg`, and often preempting this thread as it returns to user space) can serve
    /// the connection and close its own. Ours is then never the last reference, and its
    /// close never pays for the connection's TCP teardown.
    pub fn hand_over(&mut self, to: &Arc<dyn AsFd>, fds: Vec<OwnedFd>, token: u64) {
        let n = fds.len();
        if n == 0 || n > self.max_handoff_fds() {
            self.handed.push(Completion::Handoff {
                token,
                result: Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{n} fds in one hand-off; 1 to {}", self.max_handoff_fds()),
                )),
                fds,
            });
            return;
        }
        let mut state = Box::new(HandoffState {
            // SAFETY: an all-zero msghdr (null pointers, zero lengths) is a valid empty value;
            // the pointers are set below.
            hdr: unsafe { std::mem::zeroed() },
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            bytes: [b'c'; MAX_FDS],
            cmsg: CmsgSpace([0; RECV_CMSG_SPACE]),
            fds: fds.into_iter().map(IntoRawFd::into_raw_fd).collect(),
            failed: None,
        });
        let fds_len = (n * std::mem::size_of::<i32>()) as u32;
        state.iov.iov_base = state.bytes.as_mut_ptr().cast();
        state.iov.iov_len = n;
        state.hdr.msg_iov = &mut state.iov;
        state.hdr.msg_iovlen = 1;
        state.hdr.msg_control = state.cmsg.0.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is pure arithmetic; n <= MAX_FDS, for which `cmsg` has room.
        state.hdr.msg_controllen = unsafe { libc::CMSG_SPACE(fds_len) } as usize;
        // SAFETY: CMSG_FIRSTHDR only reads the msghdr's control pointer and length.
        let first = unsafe { libc::CMSG_FIRSTHDR(&state.hdr) };
        // SAFETY: `msg_control` points to `msg_controllen` (>= CMSG_SPACE(0)) zeroed, aligned
        // bytes, so the first header is non-null, aligned and inside the buffer.
        let cmsg = unsafe { &mut *first };
        cmsg.cmsg_level = libc::SOL_SOCKET;
        cmsg.cmsg_type = libc::SCM_RIGHTS;
        // SAFETY: CMSG_LEN is pure arithmetic.
        cmsg.cmsg_len = unsafe { libc::CMSG_LEN(fds_len) } as usize;
        // SAFETY: the header's data has room for `n` ints (CMSG_SPACE above), possibly
        // unaligned.
        let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<i32>();
        for (i, fd) in state.fds.iter().enumerate() {
            // SAFETY: `i < n` keeps the pointer within the data.
            let at = unsafe { data.add(i) };
            // SAFETY: `at` points to room for an int inside the buffer, possibly unaligned.
            unsafe { at.write_unaligned(*fd) };
        }
        let hdr: *const libc::msghdr = &state.hdr;
        let raw: Vec<i32> = state.fds.clone();
        let slot = self.insert(Op {
            token,
            kind: OpKind::Handoff(state),
            _fd: to.clone(),
        });
        let mut chain = Vec::with_capacity(n + 1);
        chain.push(
            opcode::SendMsg::new(types::Fd(to.as_fd().as_raw_fd()), hdr)
                .flags((libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as u32)
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(HANDOFF_SEND | slot as u64),
        );
        for (i, fd) in raw.iter().enumerate() {
            let close = opcode::Close::new(types::Fd(*fd)).build();
            chain.push(if i + 1 < n {
                close
                    .flags(squeue::Flags::IO_LINK)
                    .user_data(HANDOFF_CLOSE | slot as u64)
            } else {
                close.user_data(HANDOFF_LAST | slot as u64)
            });
        }
        // The chain goes in whole or not at all: a chain cut by a full queue would close our
        // copies whatever became of the sendmsg.
        for attempt in 0..2 {
            // SAFETY: the entries point into the `HandoffState` now owned by `self.ops`, which
            // stays allocated and unmoved until the chain's last completion is reaped.
            if unsafe { self.ring.submission().push_multiple(&chain) }.is_ok() {
                self.handoffs += 1;
                self.handoff_ops += chain.len();
                return;
            }
            if attempt == 0 {
                let _ = self.ring.submit();
            }
        }
        // Nothing of the chain was queued: the fds are still ours.
        let Some(Op {
            kind: OpKind::Handoff(state),
            ..
        }) = self.remove(slot)
        else {
            unreachable!("the slot was just filled with a hand-off");
        };
        self.handed.push(Completion::Handoff {
            token,
            result: Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the submission queue is full",
            )),
            fds: reclaim(state.fds),
        });
    }

    /// Whether hand-offs were queued that have not ended yet: the next [`Ring::wait`] (or
    /// [`Ring::settle_handoffs`]) runs them.
    pub fn handoffs_pending(&self) -> bool {
        self.handoffs > 0
    }

    /// Runs every hand-off queued by [`Ring::hand_over`] to its end, without waiting for
    /// anything else, and appends how each ended to `out`. Other completions reaped meanwhile
    /// are kept for the next [`Ring::wait`]. A chain never waits for its peer
    /// (`MSG_DONTWAIT`): this takes one `io_uring_enter(2)`.
    ///
    /// # Errors
    /// What `io_uring_enter(2)` returns, except `EINTR`, `EBUSY` and `ETIME`.
    pub fn settle_handoffs(&mut self, out: &mut Vec<Completion>) -> io::Result<()> {
        let mut reaped = Vec::new();
        while self.handoffs > 0 {
            let want = std::mem::take(&mut self.handoff_ops).max(1);
            self.enter(want, Some(CHAIN_GUARD))?;
            self.reap_into(&mut reaped);
            self.stash.append(&mut reaped);
        }
        out.append(&mut self.handed);
        Ok(())
    }

    /// A completion of a hand-off chain's operation: the `sendmsg`'s failure is kept, and
    /// the last `close`'s ends the chain.
    pub(super) fn reap_handoff(&mut self, user_data: u64, res: i32) {
        let slot = (user_data & !HANDOFF) as usize;
        let Some(Some(Op {
            kind: OpKind::Handoff(state),
            ..
        })) = self.ops.get_mut(slot)
        else {
            return;
        };
        let which = user_data & HANDOFF;
        if which == HANDOFF_SEND && res < 0 {
            state.failed = Some(io::Error::from_raw_os_error(-res));
        }
        if which == HANDOFF_LAST {
            if let Some(Op {
                token,
                kind: OpKind::Handoff(state),
                ..
            }) = self.remove(slot)
            {
                self.handoffs -= 1;
                self.handed.push(finish_handoff(token, state));
            }
        }
    }
}

/// A hand-off's chain ended (its last `close` completed, or was cancelled).
pub(super) fn finish_handoff(token: u64, mut state: Box<HandoffState>) -> Completion {
    if let Some(e) = state.failed.take() {
        // The kernel cancelled every close of the chain: the fds are still ours.
        return Completion::Handoff {
            token,
            result: Err(e),
            fds: reclaim(state.fds),
        };
    }
    // Bytes went, and the fds with the first of them. If a close failed (it cannot, for fds
    // we own), the rest of the chain was cancelled: those numbers are forgotten, not reused.
    Completion::Handoff {
        token,
        result: Ok(state.fds.len()),
        fds: Vec::new(),
    }
}

/// Owns again the fds of a hand-off whose closes did not run.
fn reclaim(fds: Vec<i32>) -> Vec<OwnedFd> {
    fds.into_iter()
        // SAFETY: these numbers were ours (from `OwnedFd::into_raw_fd`), and the only
        // operations that could close them, the chain's closes, were never issued or were
        // cancelled; nothing else holds them.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poll::Flags as PollFlags;
    use crate::uring::tests::ring_with;
    use std::time::Duration;

    /// `n` loopback connections: the clients, and the server ends as the primary holds them.
    fn connections(n: usize) -> (Vec<std::net::TcpStream>, Vec<OwnedFd>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        (0..n)
            .map(|_| {
                let client = std::net::TcpStream::connect(addr).expect("connect");
                client
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                (client, OwnedFd::from(listener.accept().expect("accept").0))
            })
            .unzip()
    }

    fn settle(ring: &mut Ring) -> Vec<(u64, io::Result<usize>, Vec<OwnedFd>)> {
        let mut out = Vec::new();
        ring.settle_handoffs(&mut out).expect("settle");
        out.into_iter()
            .map(|c| match c {
                Completion::Handoff { token, result, fds } => (token, result, fds),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_handoff_delivers_the_fds_and_closes_our_copies() {
        let Some(mut ring) = ring_with(|f| f.handoff, "SENDMSG, CLOSE and CQE_SKIP (5.17)") else {
            return;
        };
        let (clients, fds) = connections(3);
        let (tx, rx) = crate::socket::stream_pair().expect("pair");
        let tx: Arc<dyn AsFd> = Arc::new(tx);
        // Something else in flight, completed while the hand-off settles: it must not be lost.
        let rx: Arc<dyn AsFd> = Arc::new(rx);
        ring.poll(&rx, PollFlags::IN, 5).expect("poll");
        ring.hand_over(&tx, fds, 7);
        let done = settle(&mut ring);
        assert_eq!(done.len(), 1);
        let (token, result, back) = &done[0];
        assert_eq!((*token, result.as_ref().ok(), back.len()), (7, Some(&3), 0));
        let (mut buf, mut received) = ([0u8; 8], Vec::new());
        let n = crate::scm::recv(&*rx, &mut buf, &mut received, crate::scm::Blocking::No)
            .expect("recv");
        assert_eq!((n, received.len()), (3, 3));
        // Our copies are closed: once the received ones go, each client reads end of file.
        drop(received);
        for mut c in clients {
            let mut byte = [0u8; 1];
            assert_eq!(std::io::Read::read(&mut c, &mut byte).expect("eof"), 0);
        }
        let mut out = Vec::new();
        ring.wait(&mut out, Some(Duration::ZERO)).expect("wait");
        assert!(
            matches!(out[..], [Completion::Poll { token: 5, .. }]),
            "{out:?}"
        );
    }

    #[test]
    fn a_wait_runs_queued_handoffs_first_and_then_waits_for_something_else() {
        let Some(mut ring) = ring_with(|f| f.handoff, "SENDMSG, CLOSE and CQE_SKIP (5.17)") else {
            return;
        };
        let (tx, rx) = crate::socket::stream_pair().expect("pair");
        let (tx, rx): (Arc<dyn AsFd>, Arc<dyn AsFd>) = (Arc::new(tx), Arc::new(rx));
        let (_clients, fds) = connections(4);
        // The hand-off's completions do not end the wait; what it causes (the receiving end
        // becomes readable) does, long before the timeout.
        ring.poll(&rx, PollFlags::IN, 5).expect("poll");
        ring.hand_over(&tx, fds, 7);
        assert!(ring.handoffs_pending());
        let start = std::time::Instant::now();
        let mut out = Vec::new();
        ring.wait(&mut out, Some(Duration::from_secs(5)))
            .expect("wait");
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );
        assert!(!ring.handoffs_pending());
        let handed: Vec<_> = out
            .iter()
            .filter_map(|c| match c {
                Completion::Handoff { token, result, fds } => {
                    Some((*token, result.as_ref().ok().copied(), fds.len()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(handed, [(7, Some(4), 0)]);
        assert!(
            out.iter()
                .any(|c| matches!(c, Completion::Poll { token: 5, .. })),
            "{out:?}"
        );
    }

    #[test]
    fn a_failed_handoff_gives_the_fds_back_open() {
        let Some(mut ring) = ring_with(|f| f.handoff, "SENDMSG, CLOSE and CQE_SKIP (5.17)") else {
            return;
        };
        // The receiver is gone (EPIPE), or its queue is full (EAGAIN: the chain never waits).
        let (gone, _) = crate::socket::stream_pair().expect("pair");
        let (full, peer) = crate::socket::stream_pair().expect("pair");
        while rustix::net::send(&full, &[0; 4096], rustix::net::SendFlags::DONTWAIT).is_ok() {}
        for (tx, errno) in [(gone, libc::EPIPE), (full, libc::EAGAIN)] {
            let (clients, fds) = connections(2);
            let tx: Arc<dyn AsFd> = Arc::new(tx);
            ring.hand_over(&tx, fds, 1);
            let mut done = settle(&mut ring);
            assert_eq!(done.len(), 1);
            let (_, result, back) = done.pop().expect("one");
            assert_eq!(result.expect_err("failed").raw_os_error(), Some(errno));
            assert_eq!(back.len(), 2);
            // Still open and still the connections: each answers its client.
            for (fd, mut c) in back.into_iter().zip(clients) {
                let mut s = std::net::TcpStream::from(fd);
                std::io::Write::write_all(&mut s, b"!").expect("write");
                let mut byte = [0u8; 1];
                std::io::Read::read_exact(&mut c, &mut byte).expect("read");
            }
        }
        drop(peer);
        // Nothing to settle is no system call and no result.
        assert!(settle(&mut ring).is_empty());
    }
}
