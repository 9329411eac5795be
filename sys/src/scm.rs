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

/// Sends each of `fds` in a message of its own (one byte and one `SCM_RIGHTS` fd), all in one
/// `sendmmsg(2)` with `MSG_DONTWAIT | MSG_NOSIGNAL`. A receiver reading one message then
/// holds one fd: it never takes more than it asked for (the kernel ends a read at the first
/// message carrying fds, and hands all of a message's fds to whoever reads its first byte).
/// Returns how many were sent, the first ones: `fds[sent..]` were not, and stay the caller's.
///
/// # Errors
/// What `sendmmsg(2)` returns when it sent none (`WouldBlock` when the socket's buffer is
/// full, `EPIPE` when the peer is gone).
///
/// # References
/// [`sendmmsg(2)`](https://man7.org/linux/man-pages/man2/sendmmsg.2.html)
pub fn send_each(sock: impl AsFd, fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    const ONE: usize = rustix::cmsg_space!(ScmRights(1));
    let byte = [b'c'];
    let iov = [IoSlice::new(&byte)];
    let mut spaces = vec![[MaybeUninit::<u8>::uninit(); ONE]; fds.len()];
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = spaces
        .iter_mut()
        .map(|space| SendAncillaryBuffer::new(space))
        .collect();
    for (control, fd) in controls.iter_mut().zip(fds) {
        if !control.push(SendAncillaryMessage::ScmRights(std::slice::from_ref(fd))) {
            return Err(io::Error::other("control buffer too small"));
        }
    }
    let mut messages: Vec<rustix::net::MMsgHdr<'_>> = controls
        .iter_mut()
        .map(|control| rustix::net::MMsgHdr::new(&iov, control))
        .collect();
    Ok(rustix::net::sendmmsg(
        sock,
        &mut messages,
        SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
    )?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socket::stream_pair;

    fn files(n: usize) -> Vec<std::fs::File> {
        (0..n)
            .map(|_| std::fs::File::open("/dev/null").expect("open"))
            .collect()
    }

    #[test]
    fn several_fds_ride_one_message_and_arrive_close_on_exec() {
        let (a, b) = stream_pair().expect("pair");
        let sent = files(3);
        let borrowed: Vec<BorrowedFd<'_>> = sent.iter().map(AsFd::as_fd).collect();
        assert_eq!(
            send(&a, &[IoSlice::new(b"abc")], &borrowed, Blocking::No).expect("send"),
            3
        );
        let (mut buf, mut fds) = ([0u8; 8], Vec::new());
        assert_eq!(recv(&b, &mut buf, &mut fds, Blocking::No).expect("recv"), 3);
        assert_eq!(fds.len(), 3);
        for fd in &fds {
            let flags = rustix::io::fcntl_getfd(fd).expect("getfd");
            assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        }
    }

    #[test]
    fn too_many_fds_is_an_error_and_nothing_leaks() {
        let (a, b) = stream_pair().expect("pair");
        let sent = files(MAX_FDS + 10);
        let borrowed: Vec<BorrowedFd<'_>> = sent.iter().map(AsFd::as_fd).collect();
        // More than this crate sends, but the kernel takes up to 253.
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS + 10))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&borrowed)));
        rustix::net::sendmsg(&a, &[IoSlice::new(b"x")], &mut control, SendFlags::empty())
            .expect("send");
        let (mut buf, mut fds) = ([0u8; 8], Vec::new());
        let err = recv(&b, &mut buf, &mut fds, Blocking::No).expect_err("truncated");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            fds.is_empty(),
            "the fds that did arrive are closed, not handed out"
        );
        assert!(
            send(&a, &[IoSlice::new(b"x")], &borrowed, Blocking::No).is_err(),
            "more than MAX_FDS refused"
        );
    }
}
