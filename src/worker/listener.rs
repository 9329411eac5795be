//! Listening in a worker (Node: `server.listen()` in a worker). The primary decides how
//! connections arrive: handed over one by one on a channel of this listener's own
//! (round-robin), or accepted here from a copy of a socket every worker shares.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Mutex;

use ringleader_sys::poll;
use ringleader_sys::scm::{self, Blocking};
use ringleader_sys::{AsFd, BorrowedFd, OwnedFd};

use super::{Worker, lock};
use crate::error::{Error, ErrorKind, Result};
use crate::ipc::frame::Kind;
use crate::ipc::listen::{self as proto, Key, Notice, Request, Transport};

/// Options of [`Worker::listen_tcp_with`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenOptions {
    /// `listen(2)` backlog; default 511, as Node's.
    pub backlog: Option<i32>,
    /// For `[::]`: IPv6 only, leaving the IPv4 port free (Node: `ipv6Only`).
    pub ipv6_only: bool,
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
}

enum Source {
    /// Connections handed over by the primary, a few fds per message.
    Handoff {
        channel: OwnedFd,
        queued: Mutex<VecDeque<OwnedFd>>,
    },
    /// A copy of the socket all workers share (`Scheduling::Shared`).
    Shared(std::net::TcpListener),
}

/// A TCP listener in a worker, sharing its port with the other workers (Node: a `net.Server`
/// listening in a worker). Accepted connections are plain [`std::net::TcpStream`]s; the
/// listener is [`AsFd`] (readable when a connection is waiting), so any poller can drive it.
/// Dropping it closes it and tells the primary, which hands connections still queued for it to
/// other workers.
pub struct TcpListener {
    worker: Worker,
    key: Key,
    local: SocketAddr,
    source: Source,
}

impl std::fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpListener")
            .field("local", &self.local)
            .field("handoff", &matches!(self.source, Source::Handoff { .. }))
            .finish()
    }
}

impl Worker {
    /// Listens on a TCP address shared with the other workers (Node: `server.listen(port,
    /// host)` in a worker): port 0 gives every worker the same port. A bind error (such as
    /// `EADDRINUSE` or `EACCES`) comes back as [`ErrorKind::Io`] with its errno.
    ///
    /// # Errors
    /// The bind or listen error; [`ErrorKind::Disconnected`] without a primary.
    pub fn listen_tcp(&self, addr: impl ToSocketAddrs) -> Result<TcpListener> {
        let addr = addr
            .to_socket_addrs()
            .map_err(|e| Error::io("listen", e))?
            .next()
            .ok_or_else(|| Error::new(ErrorKind::Io, "listen").detail("no address"))?;
        self.listen_tcp_with(addr, ListenOptions::default())
    }

    /// [`Worker::listen_tcp`] with options.
    ///
    /// # Errors
    /// As [`Worker::listen_tcp`].
    pub fn listen_tcp_with(&self, addr: SocketAddr, options: ListenOptions) -> Result<TcpListener> {
        const OP: &str = "listen";
        let tuple = (Transport::Tcp, addr.ip().to_string(), addr.port());
        let index = self.take_index(tuple.clone());
        let key = Key {
            transport: Transport::Tcp,
            address: tuple.1.clone(),
            port: addr.port(),
            index,
        };
        let reply = self.request_listen(|seq| {
            proto::encode(&Request {
                seq,
                key: key.clone(),
                backlog: options.backlog,
                ipv6_only: options.ipv6_only,
            })
        });
        let fail = |worker: &Worker, e: Error| {
            worker.free_index(tuple.clone(), index);
            Err(e)
        };
        let (reply, fd) = match reply {
            Ok(r) => r,
            Err(e) => return fail(self, e),
        };
        if let Some(errno) = reply.errno {
            return fail(
                self,
                Error::io(OP, io::Error::from_raw_os_error(errno)).detail(addr.to_string()),
            );
        }
        let local = reply.local.as_deref().and_then(|l| l.parse().ok());
        let (Some(fd), Some(local)) = (fd, local) else {
            return fail(
                self,
                Error::new(ErrorKind::Protocol, OP).detail("listen reply without a socket"),
            );
        };
        let source = if reply.handoff {
            Source::Handoff {
                channel: fd,
                queued: Mutex::new(VecDeque::new()),
            }
        } else {
            Source::Shared(std::net::TcpListener::from(fd))
        };
        let listener = TcpListener {
            worker: self.clone(),
            key,
            local,
            source,
        };
        let notice = Notice {
            key: listener.key.clone(),
            local: local.to_string(),
        };
        self.notify(Kind::Listening, &proto::encode(&notice))?;
        Ok(listener)
    }
}

impl TcpListener {
    /// The address every worker listens on (the primary's `getsockname`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits for the next connection (Node: a `'connection'` event).
    ///
    /// # Errors
    /// `ConnectionAborted` once the primary stopped handing connections to this worker (it
    /// disconnected it); what `accept4(2)`/`recvmsg(2)` return.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        match &self.source {
            Source::Shared(listener) => loop {
                // The shared socket is non-blocking: wait for it or for this worker to stop.
                match listener.accept() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    other => return other,
                }
                let stop = self.worker.stopping();
                let ready = poll::poll(&[(listener, poll::IN), (stop, poll::IN)], None)?;
                if ready[1].contains(poll::IN) {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "this worker is disconnecting: the listener stopped",
                    ));
                }
            },
            Source::Handoff { channel, queued } => {
                let mut queued = lock(queued);
                loop {
                    if let Some(fd) = queued.pop_front() {
                        let stream = TcpStream::from(fd);
                        // A client that already reset its connection has no peer address;
                        // there is nothing to serve.
                        if let Ok(peer) = stream.peer_addr() {
                            return Ok((stream, peer));
                        }
                        continue;
                    }
                    let (mut buf, mut fds) = ([0u8; 64], Vec::new());
                    let n = scm::recv(channel, &mut buf, &mut fds, Blocking::Yes)?;
                    if n == 0 && fds.is_empty() {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "the primary no longer hands connections to this listener",
                        ));
                    }
                    queued.extend(fds);
                }
            }
        }
    }

    /// The connections, until the listener stops (Node: `server.on('connection')`).
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }
}

/// The iterator of [`TcpListener::incoming`]; it ends when the primary stops handing
/// connections to this worker.
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;

    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        match self.listener.accept() {
            Ok((stream, _)) => Some(Ok(stream)),
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => None,
            Err(e) => Some(Err(e)),
        }
    }
}

impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.source {
            Source::Handoff { channel, .. } => channel.as_fd(),
            Source::Shared(listener) => listener.as_fd(),
        }
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        let notice = Notice {
            key: self.key.clone(),
            local: self.local.to_string(),
        };
        let _ = self.worker.notify(Kind::Close, &proto::encode(&notice));
        let tuple = (self.key.transport, self.key.address.clone(), self.key.port);
        self.worker.free_index(tuple, self.key.index);
    }
}
