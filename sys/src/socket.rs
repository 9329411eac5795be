//! Unix stream socketpairs and the small socket calls around them.

use std::io;

use rustix::fd::{AsFd, OwnedFd};
use rustix::net::{self, AddressFamily, Shutdown, SocketFlags, SocketType};

/// `socketpair(2)`: a connected pair of `AF_UNIX`/`SOCK_STREAM` sockets, both close-on-exec.
///
/// # Errors
/// What `socketpair(2)` returns (`EMFILE`, `ENFILE`…).
///
/// # References
/// [`socketpair(2)`](https://man7.org/linux/man-pages/man2/socketpair.2.html)
pub fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Which half of a connection [`shutdown`] closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// No more sends: the peer reads end-of-file after the data already sent.
    Write,
    /// Both directions.
    Both,
}

/// `shutdown(2)`. `ENOTCONN` (the peer is already gone) counts as success.
///
/// # Errors
/// What `shutdown(2)` returns, except `ENOTCONN`.
pub fn shutdown(fd: impl AsFd, how: How) -> io::Result<()> {
    let how = match how {
        How::Write => Shutdown::Write,
        How::Both => Shutdown::Both,
    };
    match net::shutdown(fd, how) {
        Ok(()) | Err(rustix::io::Errno::NOTCONN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether `fd` is an `AF_UNIX` `SOCK_STREAM` socket (checked with `getsockopt(SO_TYPE)` and
/// `SO_DOMAIN`).
///
/// # Errors
/// `ENOTSOCK` and friends from `getsockopt(2)`.
pub fn is_unix_stream(fd: impl AsFd) -> io::Result<bool> {
    let fd = fd.as_fd();
    let ty = net::sockopt::socket_type(fd)?;
    let domain = net::sockopt::socket_domain(fd)?;
    Ok(ty == SocketType::STREAM && domain == AddressFamily::UNIX)
}

/// Sets or clears `O_NONBLOCK`.
///
/// # Errors
/// What `fcntl(2)` returns.
pub fn set_nonblocking(fd: impl AsFd, on: bool) -> io::Result<()> {
    let fd = fd.as_fd();
    let mut flags = rustix::fs::fcntl_getfl(fd)?;
    flags.set(rustix::fs::OFlags::NONBLOCK, on);
    rustix::fs::fcntl_setfl(fd, flags)?;
    Ok(())
}

/// Whether the peer of the connected stream socket `fd` has gone and left nothing to read:
/// `poll(2)` says it hung up or shut down its writing half (`POLLHUP`, `POLLERR`,
/// `POLLRDHUP`) and `FIONREAD` finds no byte waiting. A peer that sent something and then shut
/// down its writing half (a request, then `shutdown(SHUT_WR)`) has not gone.
pub fn peer_gone(fd: impl AsFd) -> bool {
    use rustix::event::{PollFd, PollFlags};
    let fd = fd.as_fd();
    let mut pfd = [PollFd::new(&fd, PollFlags::IN | PollFlags::RDHUP)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    if !matches!(rustix::event::poll(&mut pfd, Some(&zero)), Ok(1)) {
        return false;
    }
    let r = pfd[0].revents();
    if r.intersects(PollFlags::HUP | PollFlags::ERR) {
        return true;
    }
    r.contains(PollFlags::RDHUP) && rustix::io::ioctl_fionread(fd).is_ok_and(|n| n == 0)
}

/// `dup(2)` with close-on-exec (`F_DUPFD_CLOEXEC`).
///
/// # Errors
/// `EMFILE` and friends.
pub fn dup(fd: impl AsFd) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 0)?)
}

/// A connected socket's peer and local addresses (`getpeername(2)`, `getsockname(2)`);
/// `None` for either that is not an IP address (a Unix socket's) or cannot be read.
pub fn addresses(fd: impl AsFd) -> (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>) {
    let ip = |a: Option<rustix::net::SocketAddrAny>| a.and_then(|a| a.try_into().ok());
    let fd = fd.as_fd();
    (
        ip(rustix::net::getpeername(fd).ok().flatten()),
        ip(rustix::net::getsockname(fd).ok()),
    )
}

/// What waits to be read on the connected socket `fd`, copied into `buf` and left there
/// (`recv(2)` with `MSG_PEEK | MSG_DONTWAIT`): how many bytes, `0` at end of file.
///
/// # Errors
/// `WouldBlock` when nothing waits; what `recv(2)` returns.
pub fn peek(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    let flags = net::RecvFlags::PEEK | net::RecvFlags::DONTWAIT;
    Ok(net::recv(fd, buf, flags)?.0)
}

/// Reads exactly `buf.len()` bytes that already wait on the connected socket `fd` (seen by
/// [`peek`]), without waiting for more.
///
/// # Errors
/// `UnexpectedEof` if fewer wait; what `recv(2)` returns.
pub fn read_waiting(fd: impl AsFd, buf: &mut [u8]) -> io::Result<()> {
    let fd = fd.as_fd();
    let mut at = 0;
    while at < buf.len() {
        match net::recv(fd, &mut buf[at..], net::RecvFlags::DONTWAIT) {
            Ok((0, _)) | Err(rustix::io::Errno::AGAIN) => {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Ok((n, _)) => at += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `SO_RCVLOWAT`: the socket `fd` reads as readable (`poll(2)`, epoll, io_uring's poll) only
/// once `bytes` wait, or at end of file or an error. `1` is the default.
///
/// # Errors
/// What `setsockopt(2)` returns.
///
/// # References
/// [`socket(7)`](https://man7.org/linux/man-pages/man7/socket.7.html)
pub fn set_receive_low_water(fd: impl AsFd, bytes: usize) -> io::Result<()> {
    let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVLOWAT, bytes)
}

/// `setsockopt(2)` of an `int` option.
pub(crate) fn set_int_option(
    fd: impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the option value is a `c_int` that lives until the call returns, and its length
    // is given; the fd is borrowed for the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{Shutdown as Half, TcpListener, TcpStream};

    /// A connected loopback pair: (the client, the server's side).
    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        (client, listener.accept().expect("accept").0)
    }

    /// Waits until the server's side has seen what the client did (loopback: at once, but
    /// not before this returns).
    fn settled(server: &TcpStream) {
        let mut fds = [rustix::event::PollFd::new(
            server,
            rustix::event::PollFlags::IN | rustix::event::PollFlags::RDHUP,
        )];
        let ts = rustix::event::Timespec {
            tv_sec: 5,
            tv_nsec: 0,
        };
        rustix::event::poll(&mut fds, Some(&ts)).expect("poll");
    }

    #[test]
    fn a_peer_that_left_without_a_word_is_gone_one_that_sent_first_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (client, idle) = pair(&listener);
        assert!(!peer_gone(&idle), "a live, quiet client");
        drop(client);
        let (client, closed) = pair(&listener);
        drop(client);
        settled(&closed);
        assert!(peer_gone(&closed), "hung up having sent nothing");
        let (mut client, asked) = pair(&listener);
        client.write_all(b"GET /").expect("send");
        client.shutdown(Half::Write).expect("shutdown");
        settled(&asked);
        assert!(
            !peer_gone(&asked),
            "sent a request, then shut down its half"
        );
        drop(idle);
    }

    /// Whether `fd` reads as readable now.
    fn readable(fd: &TcpStream) -> bool {
        let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        rustix::event::poll(&mut fds, Some(&zero)).expect("poll") == 1
    }

    #[test]
    fn a_peek_leaves_the_bytes_a_low_water_mark_holds_readiness_back_until_more_come() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (mut client, server) = pair(&listener);
        let mut buf = [0u8; 16];
        assert_eq!(
            peek(&server, &mut buf).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
        client.write_all(b"PROXY").expect("send");
        settled(&server);
        assert_eq!(peek(&server, &mut buf).expect("peek"), 5);
        set_receive_low_water(&server, 6).expect("low water");
        assert!(!readable(&server), "5 bytes wait, 6 are asked for");
        client.write_all(b" TCP4").expect("send");
        settled(&server);
        assert!(readable(&server));
        set_receive_low_water(&server, 1).expect("low water");
        let mut head = [0u8; 6];
        read_waiting(&server, &mut head).expect("read");
        assert_eq!(&head, b"PROXY ");
        assert_eq!(peek(&server, &mut buf).expect("peek"), 4, "the rest stays");
        let mut more = [0u8; 5];
        assert_eq!(
            read_waiting(&server, &mut more).map_err(|e| e.kind()),
            Err(io::ErrorKind::UnexpectedEof),
            "only 4 wait"
        );
    }
}
