//! tokio support (feature `tokio`): every object of a worker and the primary, driven by a
//! tokio runtime through its readiness ([`AsyncFd`]), with the board's counts kept.
//!
//! - [`TcpListener`] and [`UnixListener`] accept asynchronously in every scheduling
//!   (round-robin hand-offs, shared, reuseport and steered sockets), yielding tokio streams
//!   in a [`Connection`] that still tells the board when it finishes;
//! - [`UdpSocket`] is a shared UDP socket as a tokio one;
//! - [`Worker::recv`] waits for the primary's messages;
//! - [`Primary::next_event`] runs a primary inside a tokio program (on a current-thread
//!   runtime or a `LocalSet`: the primary stays on one thread).
//!
//! # Where `role()` goes
//! [`role`](crate::role) must run before any thread starts, so before the runtime is built:
//! `#[tokio::main]` starts one first. Build the runtime in each branch instead:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ringleader::Role;
//! match ringleader::role()? {
//!     Role::Primary(primary) => {
//!         let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//!         rt.block_on(async move {
//!             let primary = ringleader::tokio::Primary::new(primary)?;
//!             primary.get_ref().fork(&[])?;
//!             loop {
//!                 let event = primary.next_event().await?;
//!                 println!("{event:?}");
//!             }
//!             # #[allow(unreachable_code)]
//!             Ok::<(), Box<dyn std::error::Error>>(())
//!         })?;
//!     }
//!     Role::Worker(worker) => {
//!         let rt = tokio::runtime::Runtime::new()?;
//!         rt.block_on(async move {
//!             let listener = worker.listen_tcp("127.0.0.1:8000")?;
//!             let listener = ringleader::tokio::TcpListener::new(listener)?;
//!             let mut connections = tokio::task::JoinSet::new();
//!             // `None` once the worker is disconnecting (a roll, a graceful stop).
//!             while let Some((mut stream, _peer)) = listener.accept().await? {
//!                 connections.spawn(async move {
//!                     use tokio::io::AsyncWriteExt;
//!                     let _ = stream.write_all(b"hello\n").await;
//!                 });
//!             }
//!             // Let the open connections finish, then exit 0.
//!             connections.join_all().await;
//!             Ok::<(), Box<dyn std::error::Error>>(())
//!         })?;
//!     }
//! }
//! # Ok(()) }
//! ```

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

use ::tokio::io::unix::AsyncFd;
use ringleader_sys::reactor::{Interest, register};

use crate::error::{Error, Result};
use crate::{Connection, Event, Message};

/// Whether `fd` is readable now, without waiting.
fn readable_now(fd: impl AsFd) -> bool {
    ringleader_sys::poll::poll(
        &[(&fd.as_fd(), ringleader_sys::poll::IN)],
        Some(std::time::Duration::ZERO),
    )
    .is_ok_and(|r| !r[0].is_empty())
}

/// Runs the non-blocking `accept` each time `ready` turns readable, until it takes a
/// connection; `None` once the listener stopped (`ConnectionAborted`: the worker is
/// disconnecting).
async fn accept_ready<T>(
    ready: &AsyncFd<OwnedFd>,
    mut accept: impl FnMut() -> io::Result<T>,
) -> io::Result<Option<T>> {
    loop {
        let mut guard = ready.readable().await?;
        match guard.try_io(|_| accept()) {
            Ok(Ok(accepted)) => return Ok(Some(accepted)),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionAborted => return Ok(None),
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
}

/// A worker's [`TcpListener`](crate::TcpListener), accepting asynchronously.
#[derive(Debug)]
pub struct TcpListener {
    ready: AsyncFd<OwnedFd>,
    listener: crate::TcpListener,
}

impl TcpListener {
    /// Makes `listener` non-blocking and registers it with the current runtime.
    ///
    /// # Errors
    /// What registering returns (outside a runtime, for one).
    pub fn new(listener: crate::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        Ok(TcpListener {
            ready: register(listener.as_fd(), Interest::READABLE)?,
            listener,
        })
    }

    /// The next connection, as a tokio stream still counted on the board; `None` once the
    /// worker is disconnecting (a roll, a graceful stop: the listener stops), so that the
    /// natural loop, `while let Some((stream, peer)) = listener.accept().await? { .. }`,
    /// ends cleanly and the worker can drain its connections and exit 0.
    ///
    /// # Errors
    /// What accepting returns.
    pub async fn accept(
        &self,
    ) -> io::Result<Option<(Connection<::tokio::net::TcpStream>, SocketAddr)>> {
        let accepted = accept_ready(&self.ready, || self.listener.accept()).await?;
        let Some((conn, peer)) = accepted else {
            return Ok(None);
        };
        let conn = conn.try_map(|s| {
            s.set_nonblocking(true)?;
            ::tokio::net::TcpStream::from_std(s)
        })?;
        Ok(Some((conn, peer)))
    }

    /// The listener itself.
    pub fn get_ref(&self) -> &crate::TcpListener {
        &self.listener
    }

    /// The address every worker listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.get_ref().local_addr()
    }
}

/// A worker's [`UnixListener`](crate::UnixListener), accepting asynchronously.
#[derive(Debug)]
pub struct UnixListener {
    ready: AsyncFd<OwnedFd>,
    listener: crate::UnixListener,
}

impl UnixListener {
    /// Makes `listener` non-blocking and registers it with the current runtime.
    ///
    /// # Errors
    /// What registering returns.
    pub fn new(listener: crate::UnixListener) -> io::Result<UnixListener> {
        listener.set_nonblocking(true)?;
        Ok(UnixListener {
            ready: register(listener.as_fd(), Interest::READABLE)?,
            listener,
        })
    }

    /// The next connection, as a tokio stream still counted on the board; `None` once the
    /// worker is disconnecting, as [`TcpListener::accept`].
    ///
    /// # Errors
    /// What accepting returns.
    pub async fn accept(&self) -> io::Result<Option<Connection<::tokio::net::UnixStream>>> {
        let Some(conn) = accept_ready(&self.ready, || self.listener.accept()).await? else {
            return Ok(None);
        };
        conn.try_map(|s| {
            s.set_nonblocking(true)?;
            ::tokio::net::UnixStream::from_std(s)
        })
        .map(Some)
    }

    /// The listener itself.
    pub fn get_ref(&self) -> &crate::UnixListener {
        &self.listener
    }
}

/// A worker's shared [`UdpSocket`](crate::UdpSocket) as a tokio one (it dereferences to
/// [`tokio::net::UdpSocket`]); dropping it tells the primary, as the original does.
#[derive(Debug)]
pub struct UdpSocket {
    socket: ::tokio::net::UdpSocket,
    _shared: crate::UdpSocket,
}

impl UdpSocket {
    /// Registers `socket` with the current runtime.
    ///
    /// # Errors
    /// What copying the socket or registering it returns.
    pub fn new(socket: crate::UdpSocket) -> io::Result<UdpSocket> {
        let copy = socket.try_clone()?;
        copy.set_nonblocking(true)?;
        Ok(UdpSocket {
            socket: ::tokio::net::UdpSocket::from_std(copy)?,
            _shared: socket,
        })
    }
}

impl std::ops::Deref for UdpSocket {
    type Target = ::tokio::net::UdpSocket;
    fn deref(&self) -> &::tokio::net::UdpSocket {
        &self.socket
    }
}

/// A [`Worker`](crate::Worker) whose messages are awaited.
#[derive(Debug)]
pub struct Worker {
    ready: AsyncFd<OwnedFd>,
    worker: crate::Worker,
}

impl Worker {
    /// Registers the worker's channel with the current runtime (once per worker).
    ///
    /// # Errors
    /// What registering returns.
    pub fn new(worker: crate::Worker) -> io::Result<Worker> {
        Ok(Worker {
            ready: register(worker.as_fd(), Interest::READABLE)?,
            worker,
        })
    }

    /// The next message from the primary; `None` once the channel has closed.
    ///
    /// # Errors
    /// As [`crate::Worker::recv`].
    pub async fn recv(&self) -> Result<Option<Message>> {
        loop {
            let worker = &self.worker;
            if let Some(message) = worker.try_recv()? {
                return Ok(Some(message));
            }
            if !worker.is_connected() {
                return Ok(None);
            }
            let mut guard = self
                .ready
                .readable()
                .await
                .map_err(|e| Error::io("receive from the primary", e))?;
            // Whatever is readable is read by the next try_recv; readiness comes again with
            // new bytes.
            if !readable_now(worker) {
                guard.clear_ready();
            }
        }
    }

    /// The worker itself: send, listen, hint.
    pub fn get_ref(&self) -> &crate::Worker {
        &self.worker
    }
}

/// A [`Primary`](crate::Primary) driven by a tokio runtime on its thread (a current-thread
/// runtime, or a `LocalSet`): the primary is not `Send`.
#[derive(Debug)]
pub struct Primary {
    ready: AsyncFd<OwnedFd>,
    primary: crate::Primary,
    events: RefCell<VecDeque<Event>>,
}

impl Primary {
    /// Registers the primary's fd ([`crate::Primary::as_fd`]) with the current runtime.
    ///
    /// # Errors
    /// What registering returns.
    pub fn new(primary: crate::Primary) -> io::Result<Primary> {
        Ok(Primary {
            ready: register(primary.as_fd(), Interest::READABLE)?,
            primary,
            events: RefCell::default(),
        })
    }

    /// The next event, once the loop has produced it.
    ///
    /// # Errors
    /// As [`crate::Primary::poll`].
    pub async fn next_event(&self) -> Result<Event> {
        loop {
            if let Some(event) = self.events.borrow_mut().pop_front() {
                return Ok(event);
            }
            let mut guard = self
                .ready
                .readable()
                .await
                .map_err(|e| Error::io("wait for the primary's loop", e))?;
            let primary = &self.primary;
            let mut out = Vec::new();
            primary.poll(&mut out, Some(std::time::Duration::ZERO))?;
            self.events.borrow_mut().extend(out);
            // Readiness is an edge for tokio: wait for the next only once this one is spent.
            if !readable_now(primary) {
                guard.clear_ready();
            }
        }
    }

    /// The primary itself: fork, settings, rolls, metrics.
    pub fn get_ref(&self) -> &crate::Primary {
        &self.primary
    }
}
