//! Listening sockets as a cluster needs them: TCP (v4, v6, dual-stack), UDP and Unix stream
//! sockets created close-on-exec with Node's options, `accept4(2)`, and the depth of a socket's
//! receive queue.
//!
//! # References
//! [`socket(7)`](https://man7.org/linux/man-pages/man7/socket.7.html),
//! [`ipv6(7)`](https://man7.org/linux/man-pages/man7/ipv6.7.html),
//! [`unix(7)`](https://man7.org/linux/man-pages/man7/unix.7.html)

use std::io;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fd::{AsFd, OwnedFd};
use rustix::net::{self, AddressFamily, SocketAddrUnix, SocketFlags, SocketType, sockopt};

/// How to set up a listening or bound socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// `listen(2)` backlog (Node's default is 511).
    pub backlog: i32,
    /// `IPV6_V6ONLY` for an IPv6 address; `false` makes `[::]` accept IPv4 too.
    pub ipv6_only: bool,
    /// `SO_REUSEPORT`: several sockets share the port and the kernel spreads connections.
    pub reuse_port: bool,
    /// `SO_REUSEADDR` (UDP: several sockets bound to one port).
    pub reuse_addr: bool,
    /// TCP: `TCP_DEFER_ACCEPT` for this many seconds ([`set_defer_accept`]); `0`: off.
    pub defer_accept_secs: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backlog: 511,
            ipv6_only: false,
            reuse_port: false,
            reuse_addr: true,
            defer_accept_secs: 0,
        }
    }
}

fn family(addr: &SocketAddr) -> AddressFamily {
    if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    }
}

fn socket(addr: &SocketAddr, ty: SocketType, opts: &Options) -> io::Result<OwnedFd> {
    let fd = net::socket_with(family(addr), ty, SocketFlags::CLOEXEC, None)?;
    if opts.reuse_addr {
        sockopt::set_socket_reuseaddr(&fd, true)?;
    }
    if opts.reuse_port {
        sockopt::set_socket_reuseport(&fd, true)?;
    }
    if addr.is_ipv6() {
        sockopt::set_ipv6_v6only(&fd, opts.ipv6_only)?;
    }
    net::bind(&fd, addr)?;
    Ok(fd)
}

/// A listening TCP socket bound to `addr` (port 0 picks a free port; see [`local_addr`]).
///
/// # Errors
/// What `bind(2)`/`listen(2)` return: `EADDRINUSE`, `EACCES` (a privileged port), `EADDRNOTAVAIL`…
pub fn tcp(addr: SocketAddr, opts: &Options) -> io::Result<OwnedFd> {
    let fd = socket(&addr, SocketType::STREAM, opts)?;
    if opts.defer_accept_secs > 0 {
        set_defer_accept(&fd, opts.defer_accept_secs)?;
    }
    net::listen(&fd, opts.backlog)?;
    Ok(fd)
}

/// `TCP_DEFER_ACCEPT` on a TCP socket: a connection is queued for `accept(2)` only once its
/// client has sent data, or, with nothing sent, after about `secs` seconds (the kernel rounds
/// to its SYN-ACK retransmissions); `0` turns it off. For protocols whose client speaks first
/// (HTTP): nobody takes a connection before there is something to read on it.
///
/// # Errors
/// What `setsockopt(2)` returns (`EOPNOTSUPP` on a socket that is not TCP).
///
/// # References
/// [`tcp(7)`](https://man7.org/linux/man-pages/man7/tcp.7.html)
pub fn set_defer_accept(fd: impl AsFd, secs: u32) -> io::Result<()> {
    let secs = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    crate::socket::set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, secs)
}

/// A TCP socket bound to `addr` but not listening: it holds the port (with `reuse_port`, for a
/// `SO_REUSEPORT` group) without ever receiving a connection.
///
/// # Errors
/// What `bind(2)` returns.
pub fn reserve_tcp(addr: SocketAddr, opts: &Options) -> io::Result<OwnedFd> {
    socket(&addr, SocketType::STREAM, opts)
}

/// A UDP socket bound to `addr`.
///
/// # Errors
/// What `bind(2)` returns.
pub fn udp(addr: SocketAddr, opts: &Options) -> io::Result<OwnedFd> {
    socket(&addr, SocketType::DGRAM, opts)
}

/// A listening Unix stream socket at `path`, with its file mode set to `mode` when given
/// (Node's `readableAll`/`writableAll`).
///
/// # Errors
/// `EADDRINUSE` when the path exists, `ENAMETOOLONG` beyond `sun_path` (108 bytes), and what
/// `bind(2)`/`listen(2)`/`chmod(2)` return.
pub fn unix(path: &Path, backlog: i32, mode: Option<u32>) -> io::Result<OwnedFd> {
    let addr = SocketAddrUnix::new(path)?;
    let fd = net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    net::bind(&fd, &addr)?;
    if let Some(mode) = mode {
        rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(mode))?;
    }
    net::listen(&fd, backlog)?;
    Ok(fd)
}

/// A close-on-exec copy of this process's fd number `raw`, which must be a listening TCP socket
/// (Node's `listen({fd})`: "file descriptor N in the parent").
///
/// # Errors
/// `EBADF` when nothing is open at that number; `ENOTSOCK`/`EINVAL` when it is not a listening
/// TCP socket.
pub fn dup_listening_tcp(raw: i32) -> io::Result<OwnedFd> {
    if raw < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: the number is only borrowed for the fcntl that copies it; a number that is not
    // open makes the fcntl fail with EBADF.
    let borrowed = unsafe { rustix::fd::BorrowedFd::borrow_raw(raw) };
    let fd = rustix::io::fcntl_dupfd_cloexec(borrowed, 0)?;
    let listening = sockopt::socket_acceptconn(&fd)?;
    let stream = sockopt::socket_type(&fd)? == SocketType::STREAM;
    if !listening || !stream || local_addr(&fd).is_err() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(fd)
}

/// Whether `fd` is a listening stream socket (`SO_ACCEPTCONN`, `SO_TYPE`).
pub fn is_listening_tcp(fd: impl AsFd) -> bool {
    let fd = fd.as_fd();
    sockopt::socket_acceptconn(fd).unwrap_or(false)
        && sockopt::socket_type(fd).is_ok_and(|t| t == SocketType::STREAM)
}

/// `getsockname(2)` of an IP socket.
///
/// # Errors
/// `EINVAL`-style errors, or `InvalidInput` for a socket that is not IPv4/IPv6.
pub fn local_addr(fd: impl AsFd) -> io::Result<SocketAddr> {
    let addr = net::getsockname(fd)?;
    SocketAddr::try_from(addr)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))
}

/// Where a socket passed from elsewhere (an old primary, a service manager) is bound, and
/// what kind it is: enough to match it to a listen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bound {
    /// A TCP socket; `listening`: `listen(2)` was called on it (else it only holds the
    /// address, as a reuseport group's reservation does).
    Tcp {
        /// Its address.
        addr: SocketAddr,
        /// Whether it listens.
        listening: bool,
    },
    /// A UDP socket.
    Udp(SocketAddr),
    /// A Unix stream socket bound at a path (as `bind(2)` was given it: maybe relative).
    Unix(PathBuf),
}

/// What `fd` is bound to (`getsockname(2)`, `SO_TYPE`, `SO_ACCEPTCONN`).
///
/// # Errors
/// What those calls return; `InvalidInput` for other kinds of socket (a Unix socket with no
/// path, a raw one, a datagram Unix one).
pub fn bound(fd: impl AsFd) -> io::Result<Bound> {
    let fd = fd.as_fd();
    let other = || io::Error::new(io::ErrorKind::InvalidInput, "not a socket a listen can use");
    let ty = sockopt::socket_type(fd)?;
    let addr = net::getsockname(fd)?;
    if let Ok(ip) = SocketAddr::try_from(addr.clone()) {
        return match ty {
            SocketType::STREAM => Ok(Bound::Tcp {
                addr: ip,
                listening: sockopt::socket_acceptconn(fd)?,
            }),
            SocketType::DGRAM => Ok(Bound::Udp(ip)),
            _ => Err(other()),
        };
    }
    let unix = SocketAddrUnix::try_from(addr).map_err(|_| other())?;
    match (ty, unix.path_bytes()) {
        (SocketType::STREAM, Some(path)) => Ok(Bound::Unix(PathBuf::from(
            std::ffi::OsStr::from_bytes(path),
        ))),
        _ => Err(other()),
    }
}

/// `accept4(2)` with `SOCK_CLOEXEC`; `nonblocking` makes the *accepted* socket non-blocking
/// (`SOCK_NONBLOCK`). Whether the call itself waits depends on the listening socket's own
/// `O_NONBLOCK`; on a non-blocking listener, no pending connection is `WouldBlock`.
///
/// # Errors
/// What `accept4(2)` returns.
pub fn accept(fd: impl AsFd, nonblocking: bool) -> io::Result<OwnedFd> {
    let mut flags = SocketFlags::CLOEXEC;
    if nonblocking {
        flags |= SocketFlags::NONBLOCK;
    }
    Ok(net::accept_with(fd, flags)?)
}

/// Bytes waiting unread in a socket's receive queue (`FIONREAD`). On a Unix stream socket that
/// carries one byte per handed-over connection, it is the number of connections not yet taken.
///
/// # Errors
/// What `ioctl(2)` returns.
pub fn queued(fd: impl AsFd) -> io::Result<u64> {
    Ok(rustix::io::ioctl_fionread(fd)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn tcp_port_zero_dual_stack_and_accept() {
        let fd = tcp("[::]:0".parse().expect("addr"), &Options::default()).expect("listen");
        let port = local_addr(&fd).expect("name").port();
        assert_ne!(port, 0);
        // Dual stack: an IPv4 client reaches the [::] socket.
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let conn = accept(&fd, false).expect("accept");
        let flags = rustix::io::fcntl_getfd(&conn).expect("flags");
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        let mut conn = std::net::TcpStream::from(conn);
        conn.write_all(b"hi").expect("write");
        let mut buf = [0u8; 2];
        client.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"hi");
        crate::socket::set_nonblocking(&fd, true).expect("nonblocking");
        assert_eq!(
            accept(&fd, true).map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::WouldBlock)
        );
    }

    #[test]
    fn bound_tells_each_kind_of_socket_apart() {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let opts = Options::default();
        let listening = tcp(any, &opts).expect("tcp");
        let at = local_addr(&listening).expect("name");
        assert_eq!(
            bound(&listening).expect("bound"),
            Bound::Tcp {
                addr: at,
                listening: true
            }
        );
        let reserved = reserve_tcp(any, &opts).expect("reserve");
        assert!(matches!(
            bound(&reserved),
            Ok(Bound::Tcp {
                listening: false,
                ..
            })
        ));
        let udp = udp(any, &opts).expect("udp");
        assert_eq!(
            bound(&udp).expect("bound"),
            Bound::Udp(local_addr(&udp).expect("name"))
        );
        let dir = std::env::temp_dir().join(format!("rl-bound-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let unix = unix(&dir, 8, None).expect("unix");
        assert_eq!(bound(&unix).expect("bound"), Bound::Unix(dir.clone()));
        std::fs::remove_file(&dir).expect("unlink");
        let (a, _b) = crate::socket::stream_pair().expect("pair");
        assert!(bound(&a).is_err(), "an unnamed socket matches no listen");
    }

    #[test]
    fn bind_errors_carry_the_errno() {
        let opts = Options::default();
        let fd = tcp("127.0.0.1:0".parse().expect("addr"), &opts).expect("listen");
        let taken = local_addr(&fd).expect("name");
        let err = tcp(taken, &opts).expect_err("in use");
        assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE));
        // With SO_REUSEPORT on both, the port is shared.
        let shared = Options {
            reuse_port: true,
            ..opts
        };
        let a = tcp("127.0.0.1:0".parse().expect("addr"), &shared).expect("a");
        let b = tcp(local_addr(&a).expect("name"), &shared).expect("b shares the port");
        assert_eq!(local_addr(&a).expect("a"), local_addr(&b).expect("b"));
    }

    #[test]
    fn ipv6_only_leaves_ipv4_free() {
        // Another process's client socket may hold the same number as its ephemeral IPv4 port,
        // so try a few fresh ports; with IPV6_V6ONLY ignored, every attempt would fail.
        let only6 = Options {
            ipv6_only: true,
            ..Options::default()
        };
        let v4 = Options {
            reuse_addr: false,
            ..Options::default()
        };
        let free = (0..10).any(|_| {
            let fd = tcp("[::]:0".parse().expect("addr"), &only6).expect("listen");
            let port = local_addr(&fd).expect("name").port();
            tcp(SocketAddr::from(([0, 0, 0, 0], port)), &v4).is_ok()
        });
        assert!(free, "the IPv4 side of a v6-only port was never free");
    }

    #[test]
    fn unix_socket_mode_and_queue_depth() {
        let dir = std::env::temp_dir().join(format!("ringleader-sys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let fd = unix(&path, 16, Some(0o777)).expect("listen");
        let mode = std::fs::metadata(&path).expect("stat").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o777
        );
        assert_eq!(
            unix(&path, 16, None).expect_err("in use").raw_os_error(),
            Some(libc::EADDRINUSE)
        );
        drop(fd);
        std::fs::remove_dir_all(&dir).expect("cleanup");
        let (a, b) = crate::socket::stream_pair().expect("pair");
        rustix::io::write(&a, b"xyz").expect("write");
        assert_eq!(queued(&b).expect("fionread"), 3);
    }

    #[test]
    fn udp_binds_and_reports_its_port() {
        let fd = udp("127.0.0.1:0".parse().expect("addr"), &Options::default()).expect("bind");
        assert_ne!(local_addr(&fd).expect("name").port(), 0);
    }
}
