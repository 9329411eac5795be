//! `sendmsg(2)`/`recvmsg(2)` with `SCM_RIGHTS`: bytes and file descriptors on one Unix socket.
//!
//! Received fds are owned at once (`MSG_CMSG_CLOEXEC`, so none leaks into a later exec), and a
//! truncated control message (`MSG_CTRUNC`) is an error, never a silent loss.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// How many fds one `sendmsg` may carry here, and one `recvmsg` accepts. The kernel's own
/// limit is `SCM_MAX_FD` (253).
pub const MAX_FDS: usize = 64;

const CMSG_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS));

/// Whether a call may block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocking {
    /// Block until the call can make progress.
    Yes,
    /// `MSG_DONTWAIT`: fail with `WouldBlock` instead.
    No,
}

/// `sendmsg(2)` of `bufs` with `fds` attached as one `SCM_RIGHTS` control message, with
/// `MSG_NOSIGNAL`. The fds travel with the first byte sent; a partial write still delivers them
/// all.
///
/// # Errors
/// What `sendmsg(2)` returns (`EAGAIN` as `WouldBlock` when `blocking` is [`Blocking::No`],
/// `EPIPE` when the peer is gone), and `InvalidInput` for more than [`MAX_FDS`] fds.
///
/// # References
/// [`sendmsg(2)`](https://man7.org/linux/man-pages/man2/sendmsg.2.html),
/// [`unix(7)`](https://man7.org/linux/man-pages/man7/unix.7.html)
pub fn send(
    sock: impl AsFd,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
    blocking: Blocking,
) -> io::Result<usize> {
    let mut flags = SendFlags::NOSIGNAL;
    if blocking == Blocking::No {
        flags |= SendFlags::DONTWAIT;
    }
    if fds.is_empty() {
        return Ok(rustix::net::sendmsg(
            sock,
            bufs,
            &mut SendAncillaryBuffer::default(),
            flags,
        )?);
    }
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} fds in one message; at most {MAX_FDS}", fds.len()),
        ));
    }
    let mut space = [MaybeUninit::<u8>::uninit(); CMSG_SPACE];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("control buffer too small"));
    }
    Ok(rustix::net::sendmsg(sock, bufs, &mut control, flags)?)
}

/// `recvmsg(2)` into `buf` with `MSG_CMSG_CLOEXEC`; fds that arrive are appended to `fds`.
/// Returns the number of bytes read: 0 means end of file.
///
/// # Errors
/// What `recvmsg(2)` returns, and `InvalidData` when the control message was truncated
/// (`MSG_CTRUNC`: the peer sent more than [`MAX_FDS`] fds at once); the fds that did arrive
/// are closed then.
pub fn recv(
    sock: impl AsFd,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    blocking: Blocking,
) -> io::Result<usize> {
    let mut space = [MaybeUninit::<u8>::uninit(); CMSG_SPACE];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if blocking == Blocking::No {
        flags |= RecvFlags::DONTWAIT;
    }
    let msg = rustix::net::recvmsg(sock, &mut [IoSliceMut::new(buf)], &mut control, flags)?;
    let before = fds.len();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) {
        fds.truncate(before);
        return Err(truncated());
    }
    Ok(msg.bytes)
}

pub(crate) fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("control message truncated (MSG_CTRUNC): more than {MAX_FDS} fds in one message"),
    )
}

pub(crate) const RECV_CMSG_SPACE: usize = CMSG_SPACE;
