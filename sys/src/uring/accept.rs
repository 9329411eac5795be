//! Accepts: multishot (5.19), one that ends when the backlog is empty (6.10), or one
//! connection per operation on older kernels.

use std::io;
use std::sync::Arc;

use io_uring::{opcode, squeue, types};
use rustix::fd::{AsFd, AsRawFd};

use super::{Op, OpId, OpKind, Ring};

impl Ring {
    /// Queues a multishot `accept4(2)` on the listening socket `fd` with `SOCK_CLOEXEC`: one
    /// [`Completion::Accept`](super::Completion::Accept) per connection until the kernel ends it (`more == false`) or it is
    /// cancelled. The accepted fds are regular, so they can travel over `SCM_RIGHTS`.
    /// Multishot since 5.19 ([`Features::multishot_accept`](super::Features::multishot_accept)); before, one accept that ends
    /// with its connection (`more == false`: queue it again).
    ///
    /// # Errors
    /// When the submission queue cannot take it.
    pub fn accept_multishot(&mut self, fd: &Arc<dyn AsFd>, token: u64) -> io::Result<OpId> {
        self.queue_accept(fd, token, ACCEPT_MULTISHOT)
    }

    /// Queues an accept of every connection waiting on the listening socket `fd` right now,
    /// and no more: a multishot accept with `IORING_ACCEPT_DONTWAIT`, which posts one
    /// [`Completion::Accept`](super::Completion::Accept) per connection (`more == true`) and ends with `EAGAIN` when the
    /// backlog is empty instead of waiting for the next one. One submission and no system
    /// call per connection; the kernel does not wake this thread for later arrivals. Needs
    /// [`Features::accept_drain`](super::Features::accept_drain) (6.10; older kernels end it with `EINVAL`).
    ///
    /// # Errors
    /// When the submission queue cannot take it.
    pub fn accept_drain(&mut self, fd: &Arc<dyn AsFd>, token: u64) -> io::Result<OpId> {
        self.queue_accept(fd, token, ACCEPT_MULTISHOT | ACCEPT_DONTWAIT)
    }

    /// A multishot accept with `SOCK_CLOEXEC` and the accept flags `ioprio`.
    fn queue_accept(&mut self, fd: &Arc<dyn AsFd>, token: u64, ioprio: u16) -> io::Result<OpId> {
        let slot = self.insert(Op {
            token,
            kind: OpKind::Accept,
            _fd: fd.clone(),
        });
        if !self.features.multishot_accept {
            let entry = opcode::Accept::new(
                types::Fd(fd.as_fd().as_raw_fd()),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(slot as u64);
            self.push(&entry)?;
            return Ok(OpId(slot));
        }
        let mut entry = opcode::AcceptMulti::new(types::Fd(fd.as_fd().as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(slot as u64);
        set_ioprio(&mut entry, ioprio);
        self.push(&entry)?;
        Ok(OpId(slot))
    }
}

/// `IORING_ACCEPT_MULTISHOT` and `IORING_ACCEPT_DONTWAIT`, accept's flags in the SQE's
/// `ioprio` field (include/uapi/linux/io_uring.h).
pub(super) const ACCEPT_MULTISHOT: u16 = 1 << 0;
pub(super) const ACCEPT_DONTWAIT: u16 = 1 << 1;

/// Sets the `ioprio` field of an SQE, which the io-uring crate's accept builders fill with
/// `IORING_ACCEPT_MULTISHOT` alone.
pub(super) fn set_ioprio(entry: &mut squeue::Entry, ioprio: u16) {
    // `struct io_uring_sqe` (kernel ABI): opcode u8 at 0, flags u8 at 1, ioprio u16 at 2.
    const IOPRIO_OFFSET: usize = 2;
    const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);
    const _: () = assert!(std::mem::align_of::<squeue::Entry>() >= 2);
    let base: *mut squeue::Entry = entry;
    // SAFETY: `squeue::Entry` is `#[repr(C)]` around `struct io_uring_sqe` (64 bytes, checked
    // above), so offset 2 stays inside the entry.
    let field = unsafe { base.cast::<u8>().add(IOPRIO_OFFSET) }.cast::<u16>();
    // SAFETY: bytes 2..4 of the SQE are the u16 `ioprio`; the pointer comes from a unique
    // reference and is aligned for u16 (offset 2 of an at-least-2-aligned struct).
    unsafe { field.write(ioprio) };
}
