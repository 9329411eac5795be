//! The admin endpoint ([`Primary::serve_admin`](crate::Primary::serve_admin)): `GET
//! /metrics` in Prometheus's text format, `GET /status` as JSON, and Kubernetes' health
//! checks `GET /livez` and `GET /readyz`; and HAProxy's agent-check
//! ([`Primary::serve_agent`](crate::Primary::serve_agent)) on a port of its own: one line
//! per connection. Both are served by the primary's own loop.
//!
//! Nothing here may stall hand-offs: every socket is non-blocking, and the loop watches one
//! epoll set of the listeners and every admin connection (one registration in the driver,
//! whatever the backend). A connection gets [`MAX_REQUEST`] bytes for its request, which
//! must be whole within [`HEAD_WITHIN`], and [`IDLE`] in all; at [`MAX_CONNECTIONS`] at
//! once, a new one replaces the one whose request has waited longest unfinished (a client
//! that sends half a request holds a place for a second at most, and a scrape always gets
//! in); each answer closes its connection. A slow or hostile client costs a few system
//! calls per turn at most.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringleader_sys::OwnedFd;
use ringleader_sys::epoll::{Epoll, Interest, Ready};

use super::Metrics;
use super::prometheus::CONTENT_TYPE;
use crate::primary::health::Health;

/// The most bytes of a request (line and headers; a body is not read).
pub(crate) const MAX_REQUEST: usize = 8 * 1024;
/// The most admin connections open at once.
pub(crate) const MAX_CONNECTIONS: usize = 32;
/// How long a connection may take to send its request and read its answer.
pub(crate) const IDLE: Duration = Duration::from_secs(5);
/// How long a connection may take to send its whole request head.
pub(crate) const HEAD_WITHIN: Duration = Duration::from_secs(1);
/// Connections accepted per turn of the loop, per listener.
const ACCEPTS_PER_TURN: usize = 64;

/// The listeners' tokens in the set; connections count from 2.
const HTTP: u64 = 0;
const AGENT: u64 = 1;

struct Conn {
    stream: TcpStream,
    request: Vec<u8>,
    /// The answer, once the request is read, and how much of it is written.
    answer: Option<(Vec<u8>, usize)>,
    /// When its request must be whole (until it is), then when it must be gone.
    deadline: Instant,
}

/// The endpoints' state (see the module docs).
pub(crate) struct Admin {
    set: Epoll,
    /// A copy of the set's fd, which the driver watches.
    watched: Arc<OwnedFd>,
    http: Option<(TcpListener, SocketAddr)>,
    agent: Option<(TcpListener, SocketAddr)>,
    conns: BTreeMap<u64, Conn>,
    next: u64,
}

impl Admin {
    pub(crate) fn new() -> io::Result<Admin> {
        let set = Epoll::new()?;
        let watched = Arc::new(ringleader_sys::socket::dup(&set)?);
        Ok(Admin {
            set,
            watched,
            http: None,
            agent: None,
            conns: BTreeMap::new(),
            next: 2,
        })
    }

    /// Serves HTTP on `addr`; the address bound.
    pub(crate) fn serve_http(&mut self, addr: SocketAddr) -> io::Result<SocketAddr> {
        let bound = self.listen(addr, HTTP)?;
        let local = bound.1;
        self.http = Some(bound);
        Ok(local)
    }

    /// Serves the agent on `addr`; the address bound.
    pub(crate) fn serve_agent(&mut self, addr: SocketAddr) -> io::Result<SocketAddr> {
        let bound = self.listen(addr, AGENT)?;
        let local = bound.1;
        self.agent = Some(bound);
        Ok(local)
    }

    fn listen(&self, addr: SocketAddr, token: u64) -> io::Result<(TcpListener, SocketAddr)> {
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
        self.set.add(&listener, token, Interest::READ)?;
        Ok((listener, local))
    }

    /// Where HTTP is served, if it is.
    pub(crate) fn http(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|(_, a)| *a)
    }

    /// Where the agent is served, if it is.
    pub(crate) fn agent(&self) -> Option<SocketAddr> {
        self.agent.as_ref().map(|(_, a)| *a)
    }

    /// The fd the driver watches: readable when a listener or a connection is ready.
    pub(crate) fn watched(&self) -> Arc<OwnedFd> {
        self.watched.clone()
    }

    /// When the next connection runs out of time.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().map(|c| c.deadline).min()
    }

    /// Handles what is ready, answering from `snapshot` (the whole cluster) or `health`
    /// (readiness alone, for the agent and `/readyz`), and closes connections that ran out
    /// of time.
    pub(crate) fn turn(&mut self, snapshot: impl Fn() -> Metrics, health: impl Fn() -> Health) {
        let mut ready = Vec::new();
        let _ = self.set.wait(&mut ready, Some(Duration::ZERO));
        for r in ready {
            match r.token {
                HTTP => self.accept(),
                AGENT => self.answer_agents(&health),
                _ => self.serve(r, &snapshot, &health),
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

    /// The agent's line to each connection waiting, which is then closed. A fresh socket's
    /// send buffer takes a line this short whole.
    fn answer_agents(&mut self, health: &impl Fn() -> Health) {
        let Some((listener, _)) = &self.agent else {
            return;
        };
        let mut line = None;
        for _ in 0..ACCEPTS_PER_TURN {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let line = line.get_or_insert_with(|| health().agent_line());
            let _ = stream.set_nonblocking(true);
            let _ = stream.write(line.as_bytes());
        }
    }

    fn accept(&mut self) {
        for _ in 0..ACCEPTS_PER_TURN {
            let Some((listener, _)) = &self.http else {
                return;
            };
            let stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(_) => return,
            };
            // Full: the connection whose request has waited longest unfinished makes room (a
            // scrape must not wait behind clients that hold connections open half-sent);
            // with none such (every one is being answered), the new one is closed as it comes.
            if self.conns.len() >= MAX_CONNECTIONS {
                let unfinished = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.answer.is_none())
                    .min_by_key(|(t, _)| **t)
                    .map(|(t, _)| *t);
                match unfinished {
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
                        deadline: Instant::now() + HEAD_WITHIN,
                    },
                );
            }
        }
    }

    fn serve(
        &mut self,
        ready: Ready,
        snapshot: &impl Fn() -> Metrics,
        health: &impl Fn() -> Health,
    ) {
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
            let Some(bytes) = respond(&conn.request, snapshot, health) else {
                return; // the request is not complete yet
            };
            conn.answer = Some((bytes, 0));
            // Whole: the rest of its time to read the answer.
            conn.deadline += IDLE - HEAD_WITHIN;
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
fn respond(
    request: &[u8],
    snapshot: &impl Fn() -> Metrics,
    health: &impl Fn() -> Health,
) -> Option<Vec<u8>> {
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
            // The loop that answers this is the loop that must turn.
            Some("/livez") => ("200 OK", "text/plain", "ok\n".to_owned()),
            Some("/readyz") => match health().reason {
                None => ("200 OK", "text/plain", "ready\n".to_owned()),
                Some(reason) => (
                    "503 Service Unavailable",
                    "text/plain",
                    format!("not ready: {reason}\n"),
                ),
            },
            Some("/status") => (
                "200 OK",
                "application/json",
                serde_json::to_string(&snapshot()).unwrap_or_default() + "\n",
            ),
            _ => (
                "404 Not Found",
                "text/plain",
                "/metrics, /status, /livez or /readyz\n".to_owned(),
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
