//! An io_uring ring with owned-buffer operations: the primary's event loop.
//!
//! Each operation takes ownership of what the kernel will touch (the buffer, the `msghdr`, a
//! reference to the fd) and keeps it in a slab until the completion arrives, so no memory the
//! kernel writes can be freed or moved early, and no fd number can be reused under an
//! operation in flight. Completions hand the buffers back.
//!
//! | operation | opcode | available since |
//! |---|---|---|
//! | [`Ring::recvmsg`] | `IORING_OP_RECVMSG` | 5.3 |
//! | [`Ring::poll`] | `IORING_OP_POLL_ADD` | 5.1 |
//! | [`Ring::poll_edges`] | `IORING_OP_POLL_ADD` + `IORING_POLL_ADD_MULTI` | 5.13 |
//! | [`Ring::accept_multishot`] | `IORING_OP_ACCEPT` + `IORING_ACCEPT_MULTISHOT` (one-shot before) | 5.19 (5.5) |
//! | [`Ring::accept_drain`] | `IORING_OP_ACCEPT` + `IORING_ACCEPT_DONTWAIT` | 6.10 |
//! | `SINGLE_ISSUER \| DEFER_TASKRUN` | setup flags | 6.1 |
//! | [`Ring::cancel`] | `IORING_OP_ASYNC_CANCEL` | 5.5 |
//! | [`Ring::hand_over`] | `IORING_OP_SENDMSG` linked to `IORING_OP_CLOSE`s, `IOSQE_CQE_SKIP_SUCCESS` | 5.17 |
//! | timeouts in [`Ring::wait`] | `IORING_FEAT_EXT_ARG` | 5.11 |
//!
//! 5.11 is the least [`Ring::probe`] takes; each later feature is in [`Features`], used only
//! where the probe found it, and [`Ring::probe_within`] turns any off, to run as an older
//! kernel does.
//!
//! # References
//! [`io_uring(7)`](https://man7.org/linux/man-pages/man7/io_uring.7.html),
//! [`io_uring_enter(2)`](https://man7.org/linux/man-pages/man2/io_uring_enter.2.html)

use std::io;
use std::sync::Arc;
use std::time::Duration;

use io_uring::{IoUring, Probe, opcode, squeue, types};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::poll::Flags as PollFlags;

mod accept;
mod features;
mod handoff;
mod recv;

pub use self::features::Features;
use self::handoff::{HANDOFF, HandoffState};
use self::recv::{RecvState, finish_recv};
use crate::scm::RECV_CMSG_SPACE;

/// `IORING_RECVSEND_POLL_FIRST`, from the kernel's `io_uring.h`.
const RECVSEND_POLL_FIRST: u16 = 1;

/// How long a wait for hand-off chains may last at most. They never block, so their
/// completions are there as the wait begins; this only bounds a miscount.
const CHAIN_GUARD: Duration = Duration::from_millis(10);

/// Marks the user_data of internal operations (cancellations) whose completions are dropped.
const INTERNAL: u64 = 1 << 63;
/// Identifies an operation in flight, for [`Ring::cancel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpId(usize);

/// A finished operation.
#[derive(Debug)]
pub enum Completion {
    /// A [`Ring::recvmsg`] finished: `buf` holds `result` bytes (its length is set), `fds` what
    /// came with them. 0 bytes is end of file.
    Recv {
        /// The token given with the operation.
        token: u64,
        /// The buffer, given back.
        buf: Vec<u8>,
        /// The fds received, owned and close-on-exec.
        fds: Vec<OwnedFd>,
        /// Bytes received, or the error (`ECANCELED` after [`Ring::cancel`]; `InvalidData` for
        /// `MSG_CTRUNC`).
        result: io::Result<usize>,
    },
    /// A [`Ring::accept_multishot`] produced a connection (or failed). `more` is false when
    /// the kernel ended the operation: re-arm it to go on accepting.
    Accept {
        /// The token given with the operation.
        token: u64,
        /// The accepted connection, close-on-exec, or the error.
        result: io::Result<OwnedFd>,
        /// Whether the operation is still armed.
        more: bool,
    },
    /// A [`Ring::poll`] finished with the ready flags, or a [`Ring::poll_edges`] saw an edge.
    Poll {
        /// The token given with the operation.
        token: u64,
        /// The ready flags or the error.
        result: io::Result<PollFlags>,
        /// Whether the operation is still armed (a multishot poll that goes on).
        more: bool,
    },
    /// A [`Ring::hand_over`] ended: the fds were sent and our copies closed, or the `sendmsg`
    /// failed and the fds come back, still open.
    Handoff {
        /// The token given with the operation.
        token: u64,
        /// How many fds were delivered, or why none was.
        result: io::Result<usize>,
        /// The fds, given back when nothing was sent; empty otherwise.
        fds: Vec<OwnedFd>,
    },
}

#[repr(C, align(8))]
struct CmsgSpace([u8; RECV_CMSG_SPACE]);

enum OpKind {
    Recv(Box<RecvState>),
    Poll,
    /// A multishot poll: completions until cancelled or ended by the kernel.
    Edges,
    Accept,
    Handoff(Box<HandoffState>),
}

struct Op {
    token: u64,
    kind: OpKind,
    /// Holds the fd open until the completion arrives.
    _fd: Arc<dyn AsFd>,
}

/// An io_uring instance and its operations in flight.
pub struct Ring {
    ring: IoUring,
    ops: Vec<Option<Op>>,
    free: Vec<usize>,
    in_flight: usize,
    features: Features,
    /// Hand-offs queued or running, which [`Ring::settle_handoffs`] waits for.
    handoffs: usize,
    /// Operations in the hand-offs queued since the last [`Ring::settle_handoffs`].
    handoff_ops: usize,
    /// Hand-offs that ended, for [`Ring::settle_handoffs`].
    handed: Vec<Completion>,
    /// Completions reaped while settling hand-offs, for the next [`Ring::wait`].
    stash: Vec<Completion>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("fd", &self.ring.as_raw_fd())
            .field("in_flight", &self.in_flight)
            .field("features", &self.features)
            .finish()
    }
}

impl Ring {
    /// Creates a ring with `entries` submission slots and checks that the kernel has what the
    /// loop needs: RECVMSG, POLL_ADD, ASYNC_CANCEL and `IORING_FEAT_EXT_ARG`.
    ///
    /// # Errors
    /// `ENOSYS`/`EPERM` where io_uring is absent or forbidden (`kernel.io_uring_disabled`,
    /// seccomp); `Unsupported`, naming the missing feature, on an older kernel.
    pub fn probe(entries: u32) -> io::Result<Ring> {
        Ring::probe_within(entries, Features::ALL)
    }

    /// [`Ring::probe`], using no feature outside `allowed` even where the kernel has it: a
    /// ring that behaves as on an older kernel (`Features::of_kernel(5, 15)`), for tests.
    ///
    /// # Errors
    /// As [`Ring::probe`].
    pub fn probe_within(entries: u32, allowed: Features) -> io::Result<Ring> {
        // Completions are produced when this thread enters the kernel to wait (6.1), not by
        // interrupting it: cheaper, and exactly what a busy-polling loop does anyway. The ring
        // must then only ever be used from one thread, which the primary guarantees.
        let deferred_ring = || {
            IoUring::builder()
                .setup_clamp()
                .setup_single_issuer()
                .setup_defer_taskrun()
                .setup_taskrun_flag()
                .build(entries)
        };
        let (ring, deferred) = match allowed.deferred_task_run.then(deferred_ring) {
            Some(Ok(ring)) => (ring, true),
            Some(Err(e)) if e.raw_os_error() != Some(libc::EINVAL) => return Err(e),
            _ => (IoUring::builder().setup_clamp().build(entries)?, false),
        };
        if !ring.params().is_feature_ext_arg() {
            return Err(missing("IORING_FEAT_EXT_ARG (Linux 5.11)"));
        }
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for (code, name) in [
            (opcode::RecvMsg::CODE, "IORING_OP_RECVMSG (Linux 5.3)"),
            (opcode::PollAdd::CODE, "IORING_OP_POLL_ADD (Linux 5.1)"),
            (
                opcode::AsyncCancel::CODE,
                "IORING_OP_ASYNC_CANCEL (Linux 5.5)",
            ),
        ] {
            if !probe.is_supported(code) {
                return Err(missing(name));
            }
        }
        if !probe.is_supported(opcode::Accept::CODE) {
            return Err(missing("IORING_OP_ACCEPT (Linux 5.5)"));
        }
        let features = Features {
            multishot_accept: probe.is_supported(opcode::Socket::CODE),
            deferred_task_run: false,
            // A flag of the multishot accept.
            accept_drain: ring.params().is_feature_recvsend_bundle()
                && probe.is_supported(opcode::Socket::CODE),
            handoff: probe.is_supported(opcode::SendMsg::CODE)
                && probe.is_supported(opcode::Close::CODE)
                && ring.params().is_feature_skip_cqe_on_success(),
            poll_edges: ring.params().is_feature_resource_tagging(),
        };
        Ok(Ring {
            ring,
            ops: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            handoffs: 0,
            handoff_ops: 0,
            handed: Vec::new(),
            stash: Vec::new(),
            features: Features {
                deferred_task_run: deferred,
                ..features.and(allowed)
            },
        })
    }

    /// What the probe found beyond the required operations.
    pub fn features(&self) -> Features {
        self.features
    }

    /// How many operations are in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn insert(&mut self, op: Op) -> usize {
        self.in_flight += 1;
        match self.free.pop() {
            Some(slot) => {
                self.ops[slot] = Some(op);
                slot
            }
            None => {
                self.ops.push(Some(op));
                self.ops.len() - 1
            }
        }
    }

    /// Takes the operation out of `slot` (its last completion came) and frees the slot.
    fn remove(&mut self, slot: usize) -> Option<Op> {
        let op = self.ops.get_mut(slot)?.take()?;
        self.free.push(slot);
        self.in_flight -= 1;
        Some(op)
    }

    /// Queues an entry, submitting first if the submission queue is full.
    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every pointer in `entry` refers to memory owned by an `Op` in `self.ops`
            // (or to nothing), which stays allocated and unmoved until its completion is reaped.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => self.reap_into(&mut Vec::new()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Queues a one-shot poll of `fd` for `flags`; the result comes as [`Completion::Poll`].
    ///
    /// # Errors
    /// When the submission queue cannot take it.
    pub fn poll(&mut self, fd: &Arc<dyn AsFd>, flags: PollFlags, token: u64) -> io::Result<OpId> {
        let slot = self.insert(Op {
            token,
            kind: OpKind::Poll,
            _fd: fd.clone(),
        });
        let entry = opcode::PollAdd::new(types::Fd(fd.as_fd().as_raw_fd()), poll_mask(flags))
            .build()
            .user_data(slot as u64);
        self.push(&entry)?;
        Ok(OpId(slot))
    }

    /// Queues a multishot, edge-triggered poll of `fd` for `flags`: one [`Completion::Poll`]
    /// (with `more`) at once if `fd` is ready now, then one each time the kernel signals
    /// readiness again (for `OUT` on a socket: each time its peer reads and frees send
    /// buffer), until [`Ring::cancel`] or the kernel ends it (`more == false`). Several
    /// signals before the completion is reaped give one completion. Available since 5.13
    /// (`IORING_POLL_ADD_MULTI`; edge-triggered unless `IORING_POLL_ADD_LEVEL`): needs
    /// [`Features::poll_edges`].
    ///
    /// # Errors
    /// When the submission queue cannot take it.
    pub fn poll_edges(
        &mut self,
        fd: &Arc<dyn AsFd>,
        flags: PollFlags,
        token: u64,
    ) -> io::Result<OpId> {
        let slot = self.insert(Op {
            token,
            kind: OpKind::Edges,
            _fd: fd.clone(),
        });
        let entry = opcode::PollAdd::new(types::Fd(fd.as_fd().as_raw_fd()), poll_mask(flags))
            .multi(true)
            .build()
            .user_data(slot as u64);
        self.push(&entry)?;
        Ok(OpId(slot))
    }

    /// Asks the kernel to cancel `op`; its completion still arrives (with `ECANCELED` unless it
    /// had already finished).
    ///
    /// # Errors
    /// When the submission queue cannot take it.
    pub fn cancel(&mut self, op: OpId) -> io::Result<()> {
        if self.ops.get(op.0).is_none_or(Option::is_none) {
            return Ok(());
        }
        let entry = opcode::AsyncCancel::new(op.0 as u64)
            .build()
            .user_data(INTERNAL);
        self.push(&entry)
    }

    /// Submits what is queued and waits until at least one completion is ready or `timeout`
    /// passes (`Some(ZERO)` does not wait), then appends every ready completion to `out`.
    /// Queued hand-offs ([`Ring::hand_over`]) run to their end first, within the same system
    /// call, and their [`Completion::Handoff`]s come too: so the thread sleeps only after
    /// them, and a receiver woken by one runs while it sleeps, rather than preempting it.
    ///
    /// # Errors
    /// What `io_uring_enter(2)` returns, except `EINTR` and `ETIME` (which return with what is
    /// ready).
    pub fn wait(&mut self, out: &mut Vec<Completion>, timeout: Option<Duration>) -> io::Result<()> {
        let timeout = if self.stash.is_empty() {
            timeout
        } else {
            // Completions reaped while settling hand-offs: ready now, with whatever else is.
            out.append(&mut self.stash);
            Some(Duration::ZERO)
        };
        if timeout.is_some_and(|t| t.is_zero()) && self.features.deferred_task_run && self.idle() {
            // Busy polling: nothing to submit, nothing completed, no completion work pending in
            // the kernel (IORING_SQ_TASKRUN), so no system call is needed to know it.
            return Ok(());
        }
        // Every operation of a queued hand-off posts one completion: waiting for that many
        // more makes the kernel run the chains to their end before it waits for anything else.
        let chains = std::mem::take(&mut self.handoff_ops);
        match timeout {
            // GETEVENTS with nothing to wait for still runs deferred completions.
            Some(t) if t.is_zero() && chains == 0 => self.enter(0, None)?,
            Some(t) if t.is_zero() => self.enter(chains, Some(CHAIN_GUARD))?,
            timeout => self.enter(chains + 1, timeout)?,
        }
        self.reap_into(out);
        out.append(&mut self.handed);
        Ok(())
    }

    /// One `io_uring_enter(2)`: submits what is queued, then waits until `min` completions are
    /// ready or `timeout` passes.
    ///
    /// The kernel runs completion work deferred to this thread (the operations after a
    /// chain's first, among others) before it looks at the completion queue, as long as less
    /// than `min` items of it ran; once it waits, it offers to reschedule between rounds of
    /// that work. This is what [`Ring::hand_over`]'s chains rely on: a receiver woken by a
    /// chain's `sendmsg` must not run before the chain's `close`s.
    fn enter(&mut self, min: usize, timeout: Option<Duration>) -> io::Result<()> {
        let submitter = self.ring.submitter();
        let res = match timeout {
            Some(t) => {
                let ts = types::Timespec::new()
                    .sec(t.as_secs())
                    .nsec(t.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                submitter.submit_with_args(min, &args)
            }
            None => submitter.submit_and_wait(min),
        };
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn idle(&mut self) -> bool {
        let mut sq = self.ring.submission();
        sq.sync();
        if !sq.is_empty() || sq.taskrun() || sq.cq_overflow() {
            return false;
        }
        drop(sq);
        let mut cq = self.ring.completion();
        cq.sync();
        cq.is_empty()
    }

    fn reap_into(&mut self, out: &mut Vec<Completion>) {
        let cqes: Vec<(u64, i32, u32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result(), c.flags()))
            .collect();
        for (user_data, res, flags) in cqes {
            if user_data & INTERNAL != 0 {
                continue;
            }
            if user_data & HANDOFF != 0 {
                self.reap_handoff(user_data, res);
                continue;
            }
            let slot = user_data as usize;
            if let Some(Some(Op {
                token,
                kind: OpKind::Edges,
                ..
            })) = self.ops.get(slot)
            {
                let token = *token;
                let more = io_uring::cqueue::more(flags);
                if !more {
                    self.remove(slot);
                }
                out.push(Completion::Poll {
                    token,
                    result: poll_result(res),
                    more,
                });
                continue;
            }
            if let Some(Some(Op {
                token,
                kind: OpKind::Accept,
                ..
            })) = self.ops.get(slot)
            {
                let token = *token;
                let more = io_uring::cqueue::more(flags);
                if !more {
                    self.remove(slot);
                }
                let result = if res < 0 {
                    Err(io::Error::from_raw_os_error(-res))
                } else {
                    // SAFETY: a successful accept CQE carries a new fd installed in our table
                    // for this completion only.
                    Ok(unsafe { OwnedFd::from_raw_fd(res) })
                };
                out.push(Completion::Accept {
                    token,
                    result,
                    more,
                });
                continue;
            }
            let Some(op) = self.remove(slot) else {
                continue;
            };
            out.push(match op.kind {
                OpKind::Poll => Completion::Poll {
                    token: op.token,
                    result: poll_result(res),
                    more: false,
                },
                OpKind::Recv(state) => finish_recv(op.token, state, res),
                OpKind::Accept | OpKind::Edges | OpKind::Handoff(_) => {
                    unreachable!("multishot and hand-off completions are handled above")
                }
            });
        }
    }
}

/// A poll's ready flags, or its error.
fn poll_result(res: i32) -> io::Result<PollFlags> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        // The bits' integer type depends on rustix's backend (u16 raw, i16 libc).
        Ok(PollFlags::from_bits_truncate(res as _))
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.in_flight == 0 {
            return;
        }
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(INTERNAL);
        // SAFETY: the cancel entry refers to no memory.
        let _ = unsafe { self.ring.submission().push(&cancel) };
        let mut sink = Vec::new();
        for _ in 0..50 {
            if self.in_flight == 0 {
                return;
            }
            if self
                .wait(&mut sink, Some(Duration::from_millis(20)))
                .is_err()
            {
                break;
            }
            sink.clear();
        }
        // The kernel may still own some buffers: leak them rather than free memory it writes.
        for op in self.ops.drain(..).flatten() {
            std::mem::forget(op);
        }
    }
}

impl Ring {
    /// Registers `eventfd`: the kernel signals it whenever a completion is posted and, on a
    /// ring whose completions wait for this thread (`DEFER_TASKRUN`), whenever one starts
    /// to wait. That is what wakes a loop outside this one, for which the ring's own fd
    /// stays unreadable until this thread enters the kernel. The kernel keeps its own
    /// reference: the caller may close its fd.
    ///
    /// # Errors
    /// What `io_uring_register(2)` returns (`EBUSY`: one is registered already).
    pub fn register_eventfd(&self, eventfd: BorrowedFd<'_>) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        self.ring.submitter().register_eventfd(eventfd.as_raw_fd())
    }

    /// Submits what is queued without waiting or reaping: for a loop that returns to another
    /// one, so that the operations it queued run (and their completions wake that loop).
    ///
    /// # Errors
    /// What `io_uring_enter(2)` returns, except `EINTR` and `EBUSY`.
    pub fn submit(&mut self) -> io::Result<()> {
        self.enter(0, None)
    }

    /// Whether completions wait here, reaped already: the next [`Ring::wait`] returns them at
    /// once, and no fd shows them.
    pub fn holds_completions(&self) -> bool {
        !self.stash.is_empty() || !self.handed.is_empty()
    }
}

impl AsFd for Ring {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the ring fd lives as long as `self.ring`, which outlives the borrow.
        unsafe { BorrowedFd::borrow_raw(self.ring.as_raw_fd()) }
    }
}

fn missing(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, format!("io_uring lacks {what}"))
}

/// The poll flags as io_uring wants them. Their integer type depends on rustix's backend:
/// `u16` on the raw one, `i16` on the libc one (which Miri uses).
#[allow(clippy::unnecessary_cast)]
fn poll_mask(flags: PollFlags) -> u32 {
    u32::from(flags.bits() as u16)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A ring with the feature `has` checks, or `None` (and a line saying `what` is missing).
    pub(super) fn ring_with(has: fn(Features) -> bool, what: &str) -> Option<Ring> {
        match Ring::probe(64) {
            Ok(r) if has(r.features()) => Some(r),
            Ok(_) | Err(_) => {
                eprintln!("skipped: no io_uring with {what} here");
                None
            }
        }
    }

    /// A listening TCP socket on loopback, as the primary's loop holds it, and its address.
    fn loopback_listener() -> (Arc<dyn AsFd>, std::net::SocketAddr) {
        let listener =
            crate::listen::tcp("127.0.0.1:0".parse().expect("addr"), &Default::default())
                .expect("listen");
        let addr = crate::listen::local_addr(&listener).expect("addr");
        (Arc::new(listener), addr)
    }

    fn is_cloexec(fd: &OwnedFd) -> bool {
        rustix::io::fcntl_getfd(fd)
            .expect("flags")
            .contains(rustix::io::FdFlags::CLOEXEC)
    }

    #[test]
    fn features_come_with_their_kernel_releases() {
        let f = Features::of_kernel(5, 15);
        assert!(f.poll_edges && !f.handoff && !f.multishot_accept && !f.accept_drain);
        assert!(!f.deferred_task_run);
        assert_eq!(Features::of_kernel(6, 10), Features::ALL);
        assert_eq!(Features::of_kernel(7, 0).and(f), f);
    }

    #[test]
    fn a_ring_limited_to_an_older_kernel_accepts_one_connection_per_operation() {
        let Ok(mut ring) = Ring::probe_within(64, Features::of_kernel(5, 15)) else {
            eprintln!("skipped: no io_uring here");
            return;
        };
        assert_eq!(
            ring.features().and(Features::of_kernel(5, 15)),
            ring.features()
        );
        let (listener, addr) = loopback_listener();
        let _clients: Vec<_> = (0..2)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        for _ in 0..2 {
            ring.accept_multishot(&listener, 4).expect("queue");
            let mut out = Vec::new();
            while out.is_empty() {
                ring.wait(&mut out, Some(Duration::from_secs(5)))
                    .expect("wait");
            }
            match &out[..] {
                [
                    Completion::Accept {
                        token: 4,
                        result: Ok(fd),
                        more: false,
                    },
                ] => assert!(is_cloexec(fd)),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(ring.in_flight(), 0);
    }

    #[test]
    fn an_edge_poll_fires_when_the_peer_reads() {
        let Some(mut ring) = ring_with(|f| f.poll_edges, "IORING_POLL_ADD_MULTI (5.13)") else {
            return;
        };
        let (ours, theirs) = crate::socket::stream_pair().expect("pair");
        let ours: Arc<dyn AsFd> = Arc::new(ours);
        let op = ring.poll_edges(&ours, PollFlags::OUT, 7).expect("queue");
        let polls = |ring: &mut Ring, timeout| {
            let mut out = Vec::new();
            ring.wait(&mut out, Some(timeout)).expect("wait");
            out.into_iter()
                .map(|c| match c {
                    Completion::Poll {
                        token: 7,
                        result,
                        more,
                    } => (result.is_ok(), more),
                    other => panic!("unexpected {other:?}"),
                })
                .collect::<Vec<_>>()
        };
        // Writable now: one completion at once, and the poll stays armed.
        assert_eq!(polls(&mut ring, Duration::from_secs(5)), [(true, true)]);
        crate::scm::send(
            &*ours,
            &[std::io::IoSlice::new(b"ab")],
            &[],
            crate::scm::Blocking::No,
        )
        .expect("send");
        // Still writable, but no edge: nothing more until the peer reads.
        assert!(polls(&mut ring, Duration::from_millis(50)).is_empty());
        let mut buf = [0u8; 2];
        let mut fds = Vec::new();
        crate::scm::recv(&theirs, &mut buf, &mut fds, crate::scm::Blocking::No).expect("recv");
        assert_eq!(polls(&mut ring, Duration::from_secs(5)), [(true, true)]);
        ring.cancel(op).expect("cancel");
        assert_eq!(polls(&mut ring, Duration::from_secs(5)), [(false, false)]);
        assert_eq!(ring.in_flight(), 0);
    }

    #[test]
    fn a_drain_accepts_what_waits_then_ends_with_eagain() {
        let Some(mut ring) = ring_with(|f| f.accept_drain, "IORING_ACCEPT_DONTWAIT (6.10)") else {
            return;
        };
        let (listener, addr) = loopback_listener();
        crate::socket::set_nonblocking(&listener, true).expect("nonblocking");
        // Three waiting (a loopback connect returns once the connection is in the backlog).
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        for round in 0..2 {
            ring.accept_drain(&listener, 9).expect("queue");
            let mut out = Vec::new();
            while !out
                .iter()
                .any(|c| matches!(c, Completion::Accept { more: false, .. }))
            {
                ring.wait(&mut out, Some(Duration::from_secs(5)))
                    .expect("wait");
            }
            let (mut fds, mut last) = (0, None);
            for c in out {
                match c {
                    Completion::Accept {
                        token: 9,
                        result: Ok(fd),
                        more: true,
                    } => {
                        assert!(is_cloexec(&fd));
                        fds += 1;
                    }
                    Completion::Accept {
                        token: 9,
                        result: Err(e),
                        more: false,
                    } => last = e.raw_os_error(),
                    other => panic!("{other:?}"),
                }
            }
            // The first drain takes the three; the second finds nothing and does not wait.
            assert_eq!(fds, if round == 0 { 3 } else { 0 });
            assert_eq!(last, Some(libc::EAGAIN));
        }
        drop(clients);
    }

    #[test]
    fn multishot_accept_yields_each_connection_until_cancelled() {
        let Some(mut ring) = ring_with(|f| f.multishot_accept, "multishot accept (5.19)") else {
            return;
        };
        let (listener, addr) = loopback_listener();
        let op = ring.accept_multishot(&listener, 7).expect("arm");
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        let mut accepted = Vec::new();
        while accepted.len() < 3 {
            let mut out = Vec::new();
            ring.wait(&mut out, Some(Duration::from_secs(5)))
                .expect("wait");
            assert!(!out.is_empty(), "no completion within 5 s");
            for c in out {
                let Completion::Accept {
                    token: 7,
                    result,
                    more: true,
                } = c
                else {
                    panic!("{c:?}")
                };
                accepted.push(result.expect("accepted"));
            }
        }
        assert!(accepted.iter().all(is_cloexec));
        ring.cancel(op).expect("cancel");
        let mut out = Vec::new();
        while out.is_empty() {
            ring.wait(&mut out, Some(Duration::from_secs(5)))
                .expect("wait");
        }
        assert!(
            matches!(
                &out[0],
                Completion::Accept {
                    more: false,
                    result: Err(_),
                    ..
                }
            ),
            "{out:?}"
        );
        assert_eq!(ring.in_flight(), 0);
        drop(clients);
    }
}
