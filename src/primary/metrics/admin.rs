//! The admin endpoint ([`Primary::serve_admin`](crate::Primary::serve_admin)): `GET /metrics`
//! in Prometheus's text format and `GET /status` as JSON, served by the primary's own loop.
//!
//! Nothing here may stall hand-offs: every socket is non-blocking, and the loop watches one
//! epoll set of the listener and every admin connection (one registration in the driver,
//! whatever the backend). A connection gets [`MAX_REQUEST`] bytes for its request and
//! [`IDLE`] to send it; at [`MAX_CONNECTIONS`] at once, a new one replaces the one that has
//! waited longest without sending a byte; each answer closes its connection. A slow or
//! hostile client costs a few system calls per turn at most.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringleader_sys::OwnedFd;
use ringleader_sys::epoll::{Epoll, Interest, Ready};

use super::Metrics;
use super::prometheus::CONTENT_TYPE;

/// The most bytes of a request (line and headers; a body is not read).
pub(crate) const MAX_REQUEST: usize = 8 * 1024;
/// The most admin connections open at once.
pub(crate) const MAX_CONNECTIONS: usize = 32;
/// How long a connection may take to send its request and read its answer.
pub(crate) const IDLE: Duration = Duration::from_secs(5);
/// Connections accepted per turn of the loop.
const ACCEPTS_PER_TURN: usize = 64;

/// The listener's token in the set; connections count from 1.
const LISTENER: u64 = 0;

struct Conn {
    stream: TcpStream,
    request: Vec<u8>,
    /// The answer, once the request is read, and how much of it is written.
    answer: Option<(Vec<u8>, usize)>,
    deadline: Instant,
}

/// The endpoint's state (see the module docs).
pub(crate) struct Admin {
    listener: TcpListener,
    local: SocketAddr,
    set: Epoll,
    /// A copy of the set's fd, which the driver watches.
    watched: Arc<OwnedFd>,
    conns: BTreeMap<u64, Conn>,
    next: u64,
}

impl Admin {
    /// Listens on `addr`.
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Admin> {
        // SO_REUSEPORT: an upgrade's new primary binds the same address while the old one
        // still serves it.
        let opts = ringleader_sys::listen::Options {
            reuse_port: true,
            backlog: 64,
            ..Default::default()
        };
        let listener = TcpListener::from(ringleader_sys::listen::tcp(addr, &opts)?);
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let set = Epoll::new()?;
        set.add(&listener, LISTENER, Interest::READ)?;
        let watched = Arc::new(ringleader_sys::socket::dup(&set)?);
        Ok(Admin {
            listener,
            local,
            set,
            watched,
            conns: BTreeMap::new(),
            next: 1,
        })
    }

    pub(crate) fn local(&self) -> SocketAddr {
        self.local
    }

    /// The fd the driver watches: readable when the listener or a connection is ready.
    pub(crate) fn watched(&self) -> Arc<OwnedFd> {
        self.watched.clone()
    }

    /// When the oldest connection runs out of time.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().map(|c| c.deadline).min()
    }

    /// Handles what is ready, answering requests with `answer`, and closes connections that
    /// ran out of time.
    pub(crate) fn turn(&mut self, snapshot: impl Fn() -> Metrics) {
        let mut ready = Vec::new();
        let _ = self.set.wait(&mut ready, Some(Duration::ZERO));
        for r in ready {
            if r.token == LISTENER {
                self.accept();
            } else {
                self.serve(r, &snapshot);
            }
        }
        let now = Instant::now();
        let expired: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            self.close(t);
        }
    }

    fn accept(&mut self) {
        for _ in 0..ACCEPTS_PER_TURN {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(_) => return,
            };
            // Full: the connection idle longest that has sent nothing makes room (a scrape
            // must not wait behind clients that hold connections open); with none such, the
            // new one is closed as it comes (dropped here).
            if self.conns.len() >= MAX_CONNECTIONS {
                let silent = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.request.is_empty())
                    .min_by_key(|(_, c)| c.deadline)
                    .map(|(t, _)| *t);
                match silent {
                    Some(t) => self.close(t),
                    None => continue,
                }
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let token = self.next;
            self.next += 1;
            if self.set.add(&stream, token, Interest::READ).is_ok() {
                self.conns.insert(
                    token,
                    Conn {
                        stream,
                        request: Vec::new(),
                        answer: None,
                        deadline: Instant::now() + IDLE,
                    },
                );
            }
        }
    }

    fn serve(&mut self, ready: Ready, snapshot: &impl Fn() -> Metrics) {
        let token = ready.token;
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.answer.is_none() && ready.read {
            let mut buf = [0u8; 4096];
            match conn.stream.read(&mut buf) {
                Ok(0) => return self.close(token),
                Ok(n) => conn.request.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return self.close(token),
            }
            let Some(bytes) = respond(&conn.request, snapshot) else {
                return; // the request is not complete yet
            };
            conn.answer = Some((bytes, 0));
            let _ = self.set.modify(
                &conn.stream,
                token,
                Interest {
                    read: false,
                    write: true,
                },
            );
        }
        let Some((bytes, written)) = &mut conn.answer else {
            return;
        };
        while *written < bytes.len() {
            match conn.stream.write(&bytes[*written..]) {
                Ok(0) => return self.close(token),
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return self.close(token),
            }
        }
        self.close(token);
    }

    fn close(&mut self, token: u64) {
        if let Some(conn) = self.conns.remove(&token) {
            let _ = self.set.delete(&conn.stream);
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The answer to `request` once its head is complete (`None` before), or an error answer
/// for one that is malformed or too large.
fn respond(request: &[u8], snapshot: &impl Fn() -> Metrics) -> Option<Vec<u8>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let parsed = req.parse(request);
    let (status, kind, body) = match parsed {
        Ok(httparse::Status::Partial) if request.len() < MAX_REQUEST => return None,
        Ok(httparse::Status::Partial) => (
            "431 Request Header Fields Too Large",
            "text/plain",
            "request too large\n".to_owned(),
        ),
        Err(httparse::Error::TooManyHeaders) => (
            "431 Request Header Fields Too Large",
            "text/plain",
            "too many headers\n".to_owned(),
        ),
        Err(_) => ("400 Bad Request", "text/plain", "bad request\n".to_owned()),
        Ok(httparse::Status::Complete(_)) if req.method != Some("GET") => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        ),
        Ok(httparse::Status::Complete(_)) => match req.path {
            Some("/metrics") => ("200 OK", CONTENT_TYPE, snapshot().prometheus()),
            Some("/status") => (
                "200 OK",
                "application/json",
                serde_json::to_string(&snapshot()).unwrap_or_default() + "\n",
            ),
            _ => (
                "404 Not Found",
                "text/plain",
                "/metrics or /status\n".to_owned(),
            ),
        },
    };
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}
