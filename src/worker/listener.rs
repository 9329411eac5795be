//! Listening in a worker (Node: `server.listen()` / `dgram.bind()` in a worker). The primary
//! decides how connections arrive ([`super::source`]): handed over on a channel of this
//! listener's own (round-robin), accepted here from a copy of a socket every worker shares,
//! or accepted from a socket of this worker's own that the primary steers connections to,
//! with a hand-off channel beside it (steered). UDP sockets are always shared.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use ringleader_sys::{AsFd, BorrowedFd, OwnedFd};

use super::Worker;
use super::connection::Connection;
use super::source::Source;
use crate::error::{Error, ErrorKind, Result};
use crate::ipc::frame::Kind;
use crate::ipc::listen::{self as proto, Key, Notice, Request, Transport};

/// Options of [`Worker::listen_tcp_with`] and [`Worker::listen_unix_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenOptions {
    /// `listen(2)` backlog; default 511, as Node's.
    pub backlog: Option<i32>,
    /// For `[::]`: IPv6 only, leaving the IPv4 port free (Node: `ipv6Only`).
    pub ipv6_only: bool,
    /// Unix sockets: everybody may connect (mode `0o666`, Node's `readableAll` +
    /// `writableAll`; the primary applies it).
    pub all_may_connect: bool,
    /// Bind in this worker alone, without the primary (Node: `exclusive: true`): no sharing,
    /// no `Listening` event, and a disconnect does not stop it.
    pub exclusive: bool,
}

impl ListenOptions {
    /// Sets the backlog.
    pub fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = Some(backlog);
        self
    }

    /// Sets IPv6-only.
    pub fn ipv6_only(mut self, on: bool) -> Self {
        self.ipv6_only = on;
        self
    }

    /// Binds in this worker alone (Node: `exclusive`).
    pub fn exclusive(mut self, on: bool) -> Self {
        self.exclusive = on;
        self
    }

    /// Makes a Unix socket connectable by every user.
    pub fn all_may_connect(mut self, on: bool) -> Self {
        self.all_may_connect = on;
        self
    }
}

/// What every kind of listener has: its key, its source, and the notice to the primary when
/// it closes.
struct Binding {
    worker: Worker,
    key: Key,
    source: Source,
    /// Each connection starts with a PROXY protocol header, read off in `accept`.
    proxy: bool,
}

impl Worker {
    /// Asks the primary for a listener under `key`; on success tells it the listener is up.
    fn bind(
        &self,
        key: Key,
        options: ListenOptions,
        transport_name: &str,
    ) -> Result<(Binding, String)> {
        const OP: &str = "listen";
        let tuple = (key.transport, key.address.clone(), key.port);
        let index = self.take_index(tuple.clone());
        let key = Key { index, ..key };
        let mode = options.all_may_connect.then_some(0o666);
        let reply = self.request_listen(|seq| {
            proto::encode(&Request {
                seq,
                key: key.clone(),
                backlog: options.backlog,
                ipv6_only: options.ipv6_only,
                mode,
            })
        });
        let failed = |e: Error| {
            self.free_index(tuple.clone(), index);
            Err(e)
        };
        let (reply, fd) = match reply {
            Ok(r) => r,
            Err(e) => return failed(e),
        };
        if let Some(errno) = reply.errno {
            let e = Error::io(OP, io::Error::from_raw_os_error(errno));
            let at = match (transport_name, key.address.contains(':')) {
                ("tcp" | "udp", true) => format!("[{}]:{}", key.address, key.port),
                ("tcp" | "udp", false) => format!("{}:{}", key.address, key.port),
                _ => key.address.clone(),
            };
            return failed(e.detail(format!("{transport_name} {at}")));
        }
        let (Some(fd), Some(local)) = (fd, reply.local) else {
            return failed(
                Error::new(ErrorKind::Protocol, OP).detail("listen reply without a socket"),
            );
        };
        let source = if reply.steered {
            Source::steered(fd, self).map_err(|e| (e, "the steered socket"))
        } else if reply.handoff {
            Source::handoff(fd, self).map_err(|e| (e, "the hand-off channel"))
        } else {
            Source::shared(fd, self).map_err(|e| (e, "the shared socket"))
        };
        let source = match source {
            Ok(s) => s,
            Err((e, what)) => return failed(Error::io(OP, e).detail(what)),
        };
        let binding = Binding {
            worker: self.clone(),
            key,
            source,
            proxy: reply.proxy_protocol,
        };
        let notice = Notice {
            key: binding.key.clone(),
            local: local.clone(),
        };
        self.notify(Kind::Listening, &proto::encode(&notice))?;
        Ok((binding, local))
    }

    /// Listens on a TCP address shared with the other workers (Node: `server.listen(port,
    /// host)` in a worker): port 0 gives every worker the same port. A bind error (such as
    /// `EADDRINUSE` or `EACCES`) comes back as [`ErrorKind::Io`] with its errno.
    ///
    /// # Errors
    /// The bind or listen error; [`ErrorKind::Disconnected`] without a primary.
    pub fn listen_tcp(&self, addr: impl ToSocketAddrs) -> Result<TcpListener> {
        self.listen_tcp_with(first_addr(addr)?, ListenOptions::default())
    }

    /// [`Worker::listen_tcp`] with options.
    ///
    /// # Errors
    /// As [`Worker::listen_tcp`].
    pub fn listen_tcp_with(&self, addr: SocketAddr, options: ListenOptions) -> Result<TcpListener> {
        let key = Key {
            transport: Transport::Tcp,
            address: addr.ip().to_string(),
            port: addr.port(),
            index: 0,
        };
        if options.exclusive {
            let opts = ringleader_sys::listen::Options {
                ipv6_only: options.ipv6_only,
                backlog: options.backlog.unwrap_or(511),
                ..Default::default()
            };
            let sock =
                ringleader_sys::listen::tcp(addr, &opts).map_err(|e| Error::io("listen", e))?;
            let local =
                ringleader_sys::listen::local_addr(&sock).map_err(|e| Error::io("listen", e))?;
            let binding = Binding {
                worker: self.clone(),
                key,
                source: Source::own(sock, self).map_err(|e| Error::io("listen", e))?,
                proxy: false,
            };
            return Ok(TcpListener { binding, local });
        }
        let (binding, local) = self.bind(key, options, "tcp")?;
        let local = local
            .parse()
            .map_err(|_| Error::new(ErrorKind::Protocol, "listen").detail("bad address"))?;
        Ok(TcpListener { binding, local })
    }

    /// Listens on the primary's listening TCP socket at fd number `fd` (Node:
    /// `server.listen({fd})` in a worker: "file descriptor N in the parent"), shared with the
    /// other workers that do the same.
    ///
    /// # Errors
    /// `EBADF` when the primary has nothing open at that number, `EINVAL` when it is not a
    /// listening TCP socket.
    pub fn listen_fd(&self, fd: i32) -> Result<TcpListener> {
        let key = Key {
            transport: Transport::Tcp,
            address: format!("fd:{fd}"),
            port: 0,
            index: 0,
        };
        let (binding, local) = self.bind(key, ListenOptions::default(), "fd")?;
        let local = local
            .parse()
            .map_err(|_| Error::new(ErrorKind::Protocol, "listen").detail("bad address"))?;
        Ok(TcpListener { binding, local })
    }

    /// Listens on a Unix stream socket at `path` (relative to this worker's directory), shared
    /// with the other workers (Node: `server.listen(path)` in a worker). The primary creates
    /// the socket file and removes it when the last worker closes the listener.
    ///
    /// # Errors
    /// `EADDRINUSE` when the path exists, `ENAMETOOLONG` beyond the ~108-byte `sun_path`
    /// (even after the primary's relative form), and what `bind(2)` returns.
    pub fn listen_unix(&self, path: impl AsRef<Path>) -> Result<UnixListener> {
        self.listen_unix_with(path, ListenOptions::default())
    }

    /// [`Worker::listen_unix`] with options.
    ///
    /// # Errors
    /// As [`Worker::listen_unix`].
    pub fn listen_unix_with(
        &self,
        path: impl AsRef<Path>,
        options: ListenOptions,
    ) -> Result<UnixListener> {
        let path = std::env::current_dir()
            .map_err(|e| Error::io("listen", e))?
            .join(path.as_ref());
        let address = path
            .to_str()
            .ok_or_else(|| Error::new(ErrorKind::Io, "listen").detail("path is not UTF-8"))?;
        let key = Key {
            transport: Transport::Unix,
            address: address.to_owned(),
            port: 0,
            index: 0,
        };
        let (binding, _) = self.bind(key, options, "unix")?;
        Ok(UnixListener { binding, path })
    }

    /// Binds a UDP socket shared with the other workers (Node: `dgram.bind()` in a worker):
    /// every worker gets a copy of one socket and the kernel gives each datagram to one of
    /// them. UDP is shared under every scheduling policy.
    ///
    /// # Errors
    /// The bind error with its errno.
    pub fn bind_udp(&self, addr: impl ToSocketAddrs) -> Result<UdpSocket> {
        let addr = first_addr(addr)?;
        let key = Key {
            transport: Transport::Udp,
            address: addr.ip().to_string(),
            port: addr.port(),
            index: 0,
        };
        let (binding, _) = self.bind(key, ListenOptions::default(), "udp")?;
        let Some(fd) = binding.source.shared_socket() else {
            return Err(Error::new(ErrorKind::Protocol, "bind").detail("UDP must be shared"));
        };
        let socket = std::net::UdpSocket::from(fd.try_clone().map_err(|e| Error::io("bind", e))?);
        Ok(UdpSocket {
            _binding: binding,
            socket,
        })
    }
}

fn first_addr(addr: impl ToSocketAddrs) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| Error::io("listen", e))?
        .next()
        .ok_or_else(|| Error::new(ErrorKind::Io, "listen").detail("no address"))
}

impl Binding {
    /// The next connection's fd, and whether it was handed over (the board counts those).
    fn accept(&self) -> io::Result<(OwnedFd, bool)> {
        self.source.accept(&self.worker)
    }

    /// Wraps a connection this binding produced: counted on the board when it came by
    /// hand-off (the primary's policies only see those).
    fn connection<S>(&self, stream: S, handed: bool) -> Connection<S> {
        Connection::new(stream, self.worker.board().filter(|_| handed))
    }

    fn reject(&self, fd: OwnedFd) -> Result<()> {
        if !self.source.hands_back() {
            return Ok(());
        }
        let notice = Notice {
            key: self.key.clone(),
            local: String::new(),
        };
        self.worker
            .send_frame(Kind::Reject, &proto::encode(&notice), Some(fd))
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.source.fd()
    }
}

impl Drop for Binding {
    fn drop(&mut self) {
        if !self.source.shared_with_primary() {
            return; // the primary never knew it
        }
        let notice = Notice {
            key: self.key.clone(),
            local: String::new(),
        };
        let _ = self.worker.notify(Kind::Close, &proto::encode(&notice));
        let tuple = (self.key.transport, self.key.address.clone(), self.key.port);
        self.worker.free_index(tuple, self.key.index);
    }
}

/// A TCP listener in a worker, sharing its port with the other workers (Node: a `net.Server`
/// listening in a worker). Accepted connections are plain [`std::net::TcpStream`]s in a
/// [`Connection`] that tells the board when they finish. Dropping the listener closes it and
/// tells the primary, which hands connections still queued for it to other workers.
///
/// # Its fd
/// [`AsFd`] and [`AsRawFd`] give an epoll fd, whatever the scheduling: readable when a
/// connection can be taken (from the hand-off channel, the shared socket, this worker's
/// steered socket, or left over from a hand-off message that carried several) and when the
/// worker is disconnecting (accept then returns `ConnectionAborted`). Watch it
/// level-triggered, or edge-triggered and accept until `WouldBlock`, from epoll, mio
/// (`SourceFd`), `polling`, or tokio (`AsyncFd`), after
/// [`set_nonblocking(true)`](TcpListener::set_nonblocking). It is not a listening socket:
/// `accept(2)` on it fails with `EINVAL`. A listener of the worker's own (`exclusive`) is
/// the listening socket itself.
///
/// # Examples
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::io::Write;
/// let ringleader::Role::Worker(worker) = ringleader::role()? else { return Ok(()) };
/// let listener = worker.listen_tcp("127.0.0.1:8000")?;
/// for stream in listener.incoming() {
///     stream?.write_all(b"hello\n")?;
/// }
/// # Ok(()) }
/// ```
pub struct TcpListener {
    binding: Binding,
    local: SocketAddr,
}

impl std::fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpListener")
            .field("local", &self.local)
            .finish()
    }
}

impl TcpListener {
    /// The address every worker listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits for the next connection (Node: a `'connection'` event), and its client's
    /// address.
    ///
    /// On a listener whose connections start with a PROXY protocol header
    /// ([`ProxyProtocol`](crate::ProxyProtocol)) the header is read off first, and the
    /// address is the one it carries (the socket's for a proxy's own connection, such as a
    /// health check); [`Connection::proxied`] gives both of its addresses.
    ///
    /// # Errors
    /// `ConnectionAborted` once this worker is disconnecting; what `accept4(2)`/`recvmsg(2)`
    /// return.
    pub fn accept(&self) -> io::Result<(Connection<TcpStream>, SocketAddr)> {
        loop {
            let (fd, handed) = self.binding.accept()?;
            let proxied = match self.binding.proxy {
                // The primary saw the whole header in the socket: only a client that reset
                // the connection since makes this fail, and it is gone.
                true => match crate::proxy_protocol::strip(&fd) {
                    Ok(proxied) => proxied,
                    Err(_) => {
                        drop(self.binding.connection(TcpStream::from(fd), handed));
                        continue;
                    }
                },
                false => None,
            };
            let mut stream = self.binding.connection(TcpStream::from(fd), handed);
            // A client that already reset its connection has no peer: nothing to serve.
            if let Ok(peer) = stream.peer_addr() {
                stream.proxied = proxied;
                return Ok((stream, proxied.map_or(peer, |p| p.source)));
            }
        }
    }

    /// Makes [`TcpListener::accept`] return `WouldBlock` when no connection waits, instead of
    /// waiting (`true`), or wait again (`false`). For a loop of the application's own: watch
    /// the listener's fd ([`AsFd`]) for readability and accept until `WouldBlock`. The
    /// connections it returns are blocking, as `std`'s are; make them non-blocking as your
    /// loop needs.
    ///
    /// # Errors
    /// What `fcntl(2)` returns, for a listener of this worker's own (`exclusive`).
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.binding.source.set_nonblocking(nonblocking)
    }

    /// Hands a connection back to the primary, which gives it to another worker (Node: a
    /// worker at `maxConnections`): nothing is lost because this worker cannot take it. On a
    /// listener that is neither round-robin nor steered it is closed instead (there is nobody to
    /// hand it to).
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] without a primary; the stream is given back
    /// ([`Error::take_fd`]).
    ///
    /// On a listener with the PROXY protocol the connection's header has been read, and no
    /// other worker could learn its client: it is not handed back, and the error gives it
    /// back to you to serve or close ([`ErrorKind::Settings`]).
    pub fn reject(&self, stream: Connection<TcpStream>) -> Result<()> {
        let fd = OwnedFd::from(stream.finish());
        if self.binding.proxy {
            return Err(Error::new(ErrorKind::Settings, "reject a connection")
                .detail(
                    "its PROXY protocol header has been read: another worker could not \
                     learn its client",
                )
                .with_fd(Some(fd)));
        }
        self.binding.reject(fd)
    }

    /// The connections, until the listener stops (Node: `server.on('connection')`).
    pub fn incoming(&self) -> Incoming<'_, Connection<TcpStream>> {
        Incoming {
            next: Box::new(move || self.accept().map(|(s, _)| s)),
        }
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.binding.fd()
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// A Unix stream socket listener in a worker, shared with the other workers.
pub struct UnixListener {
    binding: Binding,
    path: PathBuf,
}

impl std::fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixListener")
            .field("path", &self.path)
            .finish()
    }
}

impl UnixListener {
    /// The socket's absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next connection.
    ///
    /// # Errors
    /// As [`TcpListener::accept`].
    pub fn accept(&self) -> io::Result<Connection<UnixStream>> {
        let (fd, handed) = self.binding.accept()?;
        Ok(self.binding.connection(UnixStream::from(fd), handed))
    }

    /// As [`TcpListener::set_nonblocking`].
    ///
    /// # Errors
    /// As [`TcpListener::set_nonblocking`].
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.binding.source.set_nonblocking(nonblocking)
    }

    /// The connections, until the listener stops.
    pub fn incoming(&self) -> Incoming<'_, Connection<UnixStream>> {
        Incoming {
            next: Box::new(move || self.accept()),
        }
    }
}

impl AsFd for UnixListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.binding.fd()
    }
}

impl AsRawFd for UnixListener {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// A UDP socket shared with the other workers; use it as a [`std::net::UdpSocket`]
/// (it dereferences to one). Dropping it tells the primary.
pub struct UdpSocket {
    _binding: Binding,
    socket: std::net::UdpSocket,
}

impl std::fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpSocket")
            .field("socket", &self.socket)
            .finish()
    }
}

impl std::ops::Deref for UdpSocket {
    type Target = std::net::UdpSocket;
    fn deref(&self) -> &std::net::UdpSocket {
        &self.socket
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// The iterator of `incoming()`: connections until the listener stops (this worker is
/// disconnecting).
pub struct Incoming<'a, T> {
    next: Box<dyn FnMut() -> io::Result<T> + 'a>,
}

impl<T> std::fmt::Debug for Incoming<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Incoming")
    }
}

impl<T> Iterator for Incoming<'_, T> {
    type Item = io::Result<T>;

    fn next(&mut self) -> Option<io::Result<T>> {
        match (self.next)() {
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => None,
            other => Some(other),
        }
    }
}
