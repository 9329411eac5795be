//! `recvmsg(2)` with fds: the owned state the kernel writes into, and the completion.

use std::io;
use std::sync::Arc;

use io_uring::{opcode, types};
use rustix::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use super::{CmsgSpace, Completion, Op, OpId, OpKind, RECVSEND_POLL_FIRST, Ring};
use crate::scm::{RECV_CMSG_SPACE, truncated};

/// What a RECVMSG hands the kernel; boxed so that its address is stable while in flight.
pub(super) struct RecvState {
    hdr: libc::msghdr,
    iov: libc::iovec,
    buf: Vec<u8>,
    cmsg: CmsgSpace,
}

impl Ring {
    /// Queues `recvmsg(2)` on `fd` into `buf` (its whole capacity; its length is ignored) with
    /// `MSG_CMSG_CLOEXEC`. The result comes as [`Completion::Recv`] with `token`.
    ///
    /// # Errors
    /// When the submission queue cannot take it.
    pub fn recvmsg(
        &mut self,
        fd: &Arc<dyn AsFd>,
        mut buf: Vec<u8>,
        token: u64,
    ) -> io::Result<OpId> {
        buf.clear();
        let mut state: Box<RecvState> = Box::new(RecvState {
            // SAFETY: an all-zero msghdr (null pointers, zero lengths) is a valid empty value;
            // the pointers are set below.
            hdr: unsafe { std::mem::zeroed() },
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            buf,
            cmsg: CmsgSpace([0; RECV_CMSG_SPACE]),
        });
        state.iov.iov_base = state.buf.as_mut_ptr().cast();
        state.iov.iov_len = state.buf.capacity();
        state.hdr.msg_iov = &mut state.iov;
        state.hdr.msg_iovlen = 1;
        state.hdr.msg_control = state.cmsg.0.as_mut_ptr().cast();
        state.hdr.msg_controllen = RECV_CMSG_SPACE;
        let hdr: *mut libc::msghdr = &mut state.hdr;
        let slot = self.insert(Op {
            token,
            kind: OpKind::Recv(state),
            _fd: fd.clone(),
        });
        // POLL_FIRST (5.19, ignored before): the receive is re-armed right after one
        // completed, so the socket is most likely empty; wait for data instead of trying.
        let entry = opcode::RecvMsg::new(types::Fd(fd.as_fd().as_raw_fd()), hdr)
            .ioprio(RECVSEND_POLL_FIRST)
            .flags(libc::MSG_CMSG_CLOEXEC as u32)
            .build()
            .user_data(slot as u64);
        self.push(&entry)?;
        Ok(OpId(slot))
    }
}

pub(super) fn finish_recv(token: u64, mut state: Box<RecvState>, res: i32) -> Completion {
    let mut fds = Vec::new();
    if res < 0 {
        let buf = std::mem::take(&mut state.buf);
        return Completion::Recv {
            token,
            buf,
            fds,
            result: Err(io::Error::from_raw_os_error(-res)),
        };
    }
    // SAFETY: the kernel wrote `msg_controllen` bytes of control messages into `state.cmsg`,
    // which `hdr.msg_control` points to; CMSG_FIRSTHDR/NXTHDR stay within that length.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&state.hdr) };
    while !cmsg.is_null() {
        // SAFETY: CMSG_FIRSTHDR/NXTHDR returned a non-null, aligned header inside the buffer.
        let header: &libc::cmsghdr = unsafe { &*cmsg };
        let (level, ty, len) = (header.cmsg_level, header.cmsg_type, header.cmsg_len);
        if level == libc::SOL_SOCKET && ty == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) is pure arithmetic.
            let header_len = unsafe { libc::CMSG_LEN(0) } as usize;
            let n = len.saturating_sub(header_len) / std::mem::size_of::<i32>();
            // SAFETY: the data of an SCM_RIGHTS message is `n` ints right after its header.
            let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<i32>();
            for i in 0..n {
                // SAFETY: `i < n` keeps the pointer within the message's data.
                let at = unsafe { data.add(i) };
                // SAFETY: `at` points to an initialised int, possibly unaligned.
                let raw = unsafe { at.read_unaligned() };
                // SAFETY: the kernel installed this fd in our table for this message only;
                // nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: `cmsg` is a valid header within the buffer described by `hdr`.
        cmsg = unsafe { libc::CMSG_NXTHDR(&state.hdr, cmsg) };
    }
    let mut buf = std::mem::take(&mut state.buf);
    if state.hdr.msg_flags & libc::MSG_CTRUNC != 0 {
        drop(fds);
        return Completion::Recv {
            token,
            buf,
            fds: Vec::new(),
            result: Err(truncated()),
        };
    }
    let n = (res as usize).min(buf.capacity());
    // SAFETY: the kernel initialised the first `n` bytes of the buffer's capacity.
    unsafe { buf.set_len(n) };
    Completion::Recv {
        token,
        buf,
        fds,
        result: Ok(n),
    }
}
