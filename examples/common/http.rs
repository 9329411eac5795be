//! HTTP/1.1 for the examples' plain workers (`hello`, `custom_loop`): every request gets
//! `hello world` and an `x-worker-id` header. One thread serves every connection from one
//! `mio` poll over non-blocking sockets, the way Node's event loop does: no thread per
//! connection, at most [`MAX_CLIENTS`] connections held at a time, and a worker that stops
//! (`SIGSTOP`, a debugger) holds only the connections its loop took, never a queue of its
//! own. A disconnected worker drains.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use ringleader::{Connection, TcpListener, Worker};

/// How long a keep-alive connection may stay idle.
pub(crate) const IDLE: Duration = Duration::from_secs(5);

/// How often idle connections are looked at: closed after [`IDLE`], or once idle this long
/// since the worker began to drain.
const DRAIN_CHECK: Duration = Duration::from_millis(100);

/// The most connections one worker holds; past it the rest wait where the primary can take
/// them back for another worker (or in the shared socket's queue), not here.
const MAX_CLIENTS: usize = 1024;

/// The largest request head and body a connection buffers.
const BUFFER: usize = 8192;

/// The answers waiting to be written on one connection, past which it reads no more
/// requests (pipelining without reading the answers) until they are written.
const MAX_OUTPUT: usize = 64 * 1024;

/// The listener's token; a connection's is its index in the slab plus one.
const LISTENER: Token = Token(0);

/// Serves every connection `listener` gives until the worker is disconnected (a roll, a
/// graceful stop) and its open connections have finished. Draining goes like a real
/// server's: the next response on each connection says `connection: close`, and a
/// connection idle for [`DRAIN_CHECK`] since the drain began, with no request begun, is
/// closed, so that a roll waits for no client and resets no request (a request half sent
/// is awaited and answered).
pub(crate) fn serve(listener: &TcpListener, worker: &Worker) -> io::Result<()> {
    let id = worker.id().to_string();
    listener.set_nonblocking(true)?;
    let mut poll = Poll::new()?;
    let fd = listener.as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&fd), LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(256);
    let mut clients = Clients::default();
    // Connections may wait on the listener that were not taken (at the bound, or after an
    // accept error): try again when one closes, and at each look.
    let mut more_waiting = true;
    // After an accept error (out of fds, say), accepting waits until the next look.
    let mut accept_after = Instant::now();
    // When the listener said the worker is disconnecting.
    let mut draining_since: Option<Instant> = None;
    let mut looked = Instant::now();
    loop {
        if draining_since.is_none()
            && more_waiting
            && clients.len() < MAX_CLIENTS
            && Instant::now() >= accept_after
        {
            more_waiting = false;
            match accept_all(
                listener,
                &mut poll,
                &mut clients,
                &id,
                !worker.is_connected(),
            ) {
                Ok(full) => more_waiting = full,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {
                    poll.registry().deregister(&mut SourceFd(&fd))?;
                    draining_since = Some(Instant::now());
                }
                Err(e) => {
                    eprintln!("worker {id}: accept: {e}");
                    more_waiting = true;
                    accept_after = Instant::now() + DRAIN_CHECK;
                }
            }
        }
        if draining_since.is_some() && clients.len() == 0 {
            return Ok(());
        }
        if looked.elapsed() >= DRAIN_CHECK {
            looked = Instant::now();
            if draining_since.is_none() && !worker.is_connected() {
                // The listener will say so too; the connections drain from now.
                draining_since = Some(looked);
            }
            let closed = clients.close_idle(&poll, draining_since);
            more_waiting |= closed > 0;
        }
        let timeout = (clients.len() > 0 || draining_since.is_some() || more_waiting)
            .then(|| DRAIN_CHECK.saturating_sub(looked.elapsed()));
        match poll.poll(&mut events, timeout) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        }
        let draining = draining_since.is_some() || !worker.is_connected();
        for event in &events {
            match event.token() {
                LISTENER => more_waiting = true,
                Token(n) => {
                    if clients.drive(n - 1, &id, draining) == Next::Close {
                        clients.close(n - 1, &poll);
                        more_waiting = true;
                    }
                }
            }
        }
    }
}

/// Accepts until nothing waits or the bound is reached (`Ok(true)`: connections may be
/// left). Each connection is served as it is taken, its request usually having come with
/// it, and is registered only if it stays open: a connection is held unanswered only while
/// its client has not sent a whole request.
fn accept_all(
    listener: &TcpListener,
    poll: &mut Poll,
    clients: &mut Clients,
    id: &str,
    draining: bool,
) -> io::Result<bool> {
    while clients.len() < MAX_CLIENTS {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        stream.set_nonblocking(true)?;
        // Answers are small: no Nagle delay behind the previous one.
        stream.set_nodelay(true)?;
        let mut client = Client::new(stream);
        if client.drive(id, draining) == Next::Close {
            continue;
        }
        let fd = client.stream.as_raw_fd();
        let n = clients.insert(client);
        poll.registry().register(
            &mut SourceFd(&fd),
            Token(n + 1),
            Interest::READABLE | Interest::WRITABLE,
        )?;
    }
    Ok(true)
}

/// What a connection does after it was driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    Open,
    Close,
}

/// The open connections: a slab whose free places are reused.
#[derive(Default)]
struct Clients {
    places: Vec<Option<Client>>,
    free: Vec<usize>,
}

impl Clients {
    fn len(&self) -> usize {
        self.places.len() - self.free.len()
    }

    fn insert(&mut self, client: Client) -> usize {
        match self.free.pop() {
            Some(n) => {
                self.places[n] = Some(client);
                n
            }
            None => {
                self.places.push(Some(client));
                self.places.len() - 1
            }
        }
    }

    fn drive(&mut self, n: usize, id: &str, draining: bool) -> Next {
        match self.places.get_mut(n).and_then(Option::as_mut) {
            Some(client) => client.drive(id, draining),
            // Closed earlier in this round of events.
            None => Next::Open,
        }
    }

    fn close(&mut self, n: usize, poll: &Poll) {
        if let Some(client) = self.places.get_mut(n).and_then(Option::take) {
            let _ = poll
                .registry()
                .deregister(&mut SourceFd(&client.stream.as_raw_fd()));
            self.free.push(n);
        }
    }

    /// Closes the connections with no request begun that were idle for [`IDLE`], or for
    /// [`DRAIN_CHECK`] since the drain began; returns how many.
    fn close_idle(&mut self, poll: &Poll, draining_since: Option<Instant>) -> usize {
        let now = Instant::now();
        let idle: Vec<usize> = self
            .places
            .iter()
            .enumerate()
            .filter_map(|(n, c)| {
                let c = c.as_ref()?;
                if c.filled > 0 || c.written < c.output.len() {
                    return None;
                }
                let since = match draining_since {
                    Some(d) if now.saturating_duration_since(c.active.max(d)) >= DRAIN_CHECK => {
                        return Some(n);
                    }
                    _ => c.active,
                };
                (now.saturating_duration_since(since) >= IDLE).then_some(n)
            })
            .collect();
        for &n in &idle {
            self.close(n, poll);
        }
        idle.len()
    }
}

/// One connection: what it sent and was not answered yet, and the answers not yet written.
struct Client {
    stream: Connection<TcpStream>,
    input: Box<[u8; BUFFER]>,
    filled: usize,
    output: Vec<u8>,
    written: usize,
    /// Close once the answers are written.
    closing: bool,
    /// When it last sent something.
    active: Instant,
}

impl Client {
    fn new(stream: Connection<TcpStream>) -> Client {
        Client {
            stream,
            input: Box::new([0; BUFFER]),
            filled: 0,
            output: Vec::new(),
            written: 0,
            closing: false,
            active: Instant::now(),
        }
    }

    /// Writes what waits, answers what came, reads what more came: until the socket has
    /// nothing to read or no room to write (its next readiness comes then).
    fn drive(&mut self, id: &str, draining: bool) -> Next {
        loop {
            while self.written < self.output.len() {
                match self.stream.write(&self.output[self.written..]) {
                    Ok(0) => return Next::Close,
                    Ok(n) => self.written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Open,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Next::Close,
                }
            }
            self.output.clear();
            self.written = 0;
            if self.closing {
                return Next::Close;
            }
            if self.answer(id, draining) {
                continue;
            }
            match self.stream.read(&mut self.input[self.filled..]) {
                Ok(0) => return Next::Close,
                Ok(n) => {
                    self.filled += n;
                    self.active = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
    }

    /// Answers the complete requests in the buffer (pipelined ones too, up to
    /// [`MAX_OUTPUT`] of answers); says whether it answered any, or refused the connection
    /// (a malformed request, or one larger than the buffer).
    fn answer(&mut self, id: &str, draining: bool) -> bool {
        let mut any = false;
        while self.filled > 0 && self.output.len() < MAX_OUTPUT {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let used = match req.parse(&self.input[..self.filled]) {
                Ok(httparse::Status::Complete(used)) => used,
                Ok(httparse::Status::Partial) if self.filled < BUFFER => break,
                _ => return self.refuse(b"400 Bad Request"),
            };
            // A body (a POST's) is read and passed over: the answer is the same.
            let body = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .unwrap_or(0);
            if body > BUFFER - used {
                return self.refuse(b"413 Content Too Large");
            }
            if self.filled < used + body {
                break; // the rest of the body is on its way
            }
            let close = draining
                || req.version == Some(0)
                || req.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("connection")
                        && h.value.eq_ignore_ascii_case(b"close")
                });
            self.output.extend_from_slice(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 12\r\nx-worker-id: ",
            );
            self.output.extend_from_slice(id.as_bytes());
            if close {
                self.output.extend_from_slice(b"\r\nconnection: close");
            }
            self.output.extend_from_slice(b"\r\n\r\nhello world\n");
            self.input.copy_within(used + body..self.filled, 0);
            self.filled -= used + body;
            any = true;
            if close {
                // What else it sent is not answered.
                self.closing = true;
                self.filled = 0;
                break;
            }
        }
        any
    }

    /// Answers `status` and closes.
    fn refuse(&mut self, status: &[u8]) -> bool {
        self.output.extend_from_slice(b"HTTP/1.1 ");
        self.output.extend_from_slice(status);
        self.output
            .extend_from_slice(b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        self.closing = true;
        self.filled = 0;
        true
    }
}
