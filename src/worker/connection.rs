//! Connections taken from a hand-off listener, counted on the load board.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::sync::Arc;

use ringleader_sys::{AsFd, BorrowedFd};

use super::board::WorkerBoard;
use crate::proxy_protocol::Proxied;

/// A connection from a worker's listener: use it as the stream itself (it dereferences to
/// it, and reads and writes like it). When it is dropped, however the application drops it,
/// the load board counts it finished, which is what load-aware policies go by.
/// [`Connection::detach`] gives the plain stream instead; the application then says when it
/// is done with [`Worker::connection_finished`](crate::Worker::connection_finished), or
/// leaves it counted as active.
pub struct Connection<S> {
    stream: Option<S>,
    board: Option<Arc<WorkerBoard>>,
    /// What its PROXY protocol header said, on a listener that reads one.
    pub(crate) proxied: Option<Proxied>,
}

impl<S> Connection<S> {
    pub(crate) fn new(stream: S, board: Option<Arc<WorkerBoard>>) -> Connection<S> {
        if let Some(b) = &board {
            b.taken(1);
        }
        Connection {
            stream: Some(stream),
            board,
            proxied: None,
        }
    }

    /// Where the connection really came from and went to, as its PROXY protocol header
    /// said ([`ProxyProtocol`](crate::ProxyProtocol)): `None` on a listener without the
    /// protocol, and for a proxy's own connection (a `LOCAL` or `UNKNOWN` header).
    pub fn proxied(&self) -> Option<Proxied> {
        self.proxied
    }

    /// The plain stream, no longer counted: closing it does not tell the board.
    pub fn detach(mut self) -> S {
        self.board = None;
        self.stream
            .take()
            .expect("a connection holds its stream until dropped")
    }

    /// The plain stream, counted finished now (a connection handed back, for instance).
    pub(crate) fn finish(mut self) -> S {
        if let Some(b) = self.board.take() {
            b.finished(1);
        }
        self.stream
            .take()
            .expect("a connection holds its stream until dropped")
    }

    /// The same connection over another stream type made from this one (a tokio stream, say),
    /// still counted on the board. On failure the connection is counted finished.
    ///
    /// # Errors
    /// What `into` returns.
    pub fn try_map<T>(
        mut self,
        into: impl FnOnce(S) -> io::Result<T>,
    ) -> io::Result<Connection<T>> {
        let stream = self
            .stream
            .take()
            .expect("a connection holds its stream until dropped");
        let board = self.board.take();
        match into(stream) {
            Ok(stream) => Ok(Connection {
                stream: Some(stream),
                board,
                proxied: self.proxied,
            }),
            Err(e) => {
                if let Some(b) = board {
                    b.finished(1);
                }
                Err(e)
            }
        }
    }

    fn get(&self) -> &S {
        self.stream
            .as_ref()
            .expect("a connection holds its stream until dropped")
    }

    fn get_mut(&mut self) -> &mut S {
        self.stream
            .as_mut()
            .expect("a connection holds its stream until dropped")
    }
}

impl<S> Drop for Connection<S> {
    fn drop(&mut self) {
        // Close first, so the count never runs ahead of the client seeing the close.
        drop(self.stream.take());
        if let Some(b) = self.board.take() {
            b.finished(1);
        }
    }
}

impl<S> std::ops::Deref for Connection<S> {
    type Target = S;
    fn deref(&self) -> &S {
        self.get()
    }
}

impl<S> std::ops::DerefMut for Connection<S> {
    fn deref_mut(&mut self) -> &mut S {
        self.get_mut()
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Connection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Connection").field(self.get()).finish()
    }
}

impl<S: AsFd> AsFd for Connection<S> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.get().as_fd()
    }
}

impl<S: Read> Read for Connection<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.get_mut().read(buf)
    }
    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.get_mut().read_vectored(bufs)
    }
}

impl<S: Write> Write for Connection<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.get_mut().write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.get_mut().write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.get_mut().flush()
    }
}

#[cfg(feature = "tokio")]
mod tokio_io {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use super::Connection;

    impl<S: AsyncRead + Unpin> AsyncRead for Connection<S> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(self.get_mut().get_mut()).poll_read(cx, buf)
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for Connection<S> {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(self.get_mut().get_mut()).poll_write(cx, buf)
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(self.get_mut().get_mut()).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(self.get_mut().get_mut()).poll_shutdown(cx)
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(self.get_mut().get_mut()).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.get().is_write_vectored()
        }
    }
}
