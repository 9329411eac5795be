//! Clients that load a cluster until stopped, counting answers and failures: the fixture's
//! one-line answers, and HTTP/1.1 with keep-alive or `Connection: close` for `hello`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::WATCHDOG;

/// Client threads asking in a loop until stopped.
#[derive(Debug, Default)]
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    first_error: Arc<Mutex<Option<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// What a [`Load`] saw.
#[derive(Debug)]
pub struct Tally {
    /// Requests answered.
    pub ok: u64,
    /// Requests that failed.
    pub failed: u64,
    /// The first failure.
    pub first_error: Option<String>,
}

impl Load {
    /// No client yet.
    pub fn new() -> Load {
        Load::default()
    }

    /// Adds `n` clients, each calling `ask` in a loop: `Ok` counts as answered, `Err` as
    /// failed.
    pub fn clients(
        &mut self,
        n: usize,
        ask: impl Fn(&AtomicBool) -> Result<u64, String> + Clone + Send + 'static,
    ) {
        for _ in 0..n {
            let (stop, ok, failed, first, ask) = (
                self.stop.clone(),
                self.ok.clone(),
                self.failed.clone(),
                self.first_error.clone(),
                ask.clone(),
            );
            self.threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match ask(&stop) {
                        Ok(n) => ok.fetch_add(n, Ordering::Relaxed),
                        Err(e) => {
                            first.lock().expect("lock").get_or_insert(e);
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }));
        }
    }

    /// Requests answered so far.
    pub fn answered(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Requests failed so far, and the first failure.
    pub fn failed(&self) -> (u64, Option<String>) {
        (
            self.failed.load(Ordering::Relaxed),
            self.first_error.lock().expect("lock").clone(),
        )
    }

    /// Waits until `more` answers came beyond those so far; panics after [`WATCHDOG`] with
    /// what the clients saw.
    pub fn wait_for(&self, more: u64) {
        let (from, deadline) = (self.answered(), std::time::Instant::now() + WATCHDOG);
        while self.answered() < from + more {
            assert!(
                std::time::Instant::now() < deadline,
                "watchdog: {} answers of {more}; {} failed, the first: {:?}",
                self.answered() - from,
                self.failed.load(Ordering::Relaxed),
                self.first_error.lock().expect("lock")
            );
            std::thread::yield_now();
        }
    }

    /// Stops the clients and says what they saw.
    pub fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("client");
        }
        let first_error = self.first_error.lock().expect("lock").take();
        Tally {
            ok: self.ok.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            first_error,
        }
    }
}

/// One HTTP response read from `s`: its status line and headers (lower-cased), after which
/// its body was read. `Ok(None)`: the connection ended before the response's first byte.
fn response(s: &mut TcpStream) -> Result<Option<String>, String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) if head.is_empty() => return Ok(None),
            Err(e) if head.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Ok(None);
            }
            Ok(0) => return Err(format!("closed within a response: {head:?}")),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    if !head.starts_with("http/1.1 200") {
        return Err(format!("answer {head:?}"));
    }
    let length: Option<usize> = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok());
    match length {
        Some(length) => {
            let mut body = vec![0u8; length];
            s.read_exact(&mut body)
                .map_err(|e| format!("read the body: {e}"))?;
        }
        None if head.contains("transfer-encoding: chunked") => chunked_body(s)?,
        None => return Err(format!("no content-length in {head:?}")),
    }
    Ok(Some(head))
}

/// Reads a chunked body (Node's servers send one) to its last, empty chunk.
fn chunked_body(s: &mut TcpStream) -> Result<(), String> {
    let read_line = |s: &mut TcpStream| -> Result<String, String> {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            match s.read(&mut byte) {
                Ok(1) => line.push(byte[0]),
                Ok(_) => return Err("closed within a chunked body".into()),
                Err(e) => return Err(format!("read a chunk: {e}")),
            }
        }
        Ok(String::from_utf8_lossy(&line[..line.len() - 2]).into_owned())
    };
    loop {
        let size = usize::from_str_radix(read_line(s)?.trim(), 16)
            .map_err(|e| format!("a chunk size: {e}"))?;
        let mut chunk = vec![0u8; size + 2];
        s.read_exact(&mut chunk)
            .map_err(|e| format!("read a chunk: {e}"))?;
        if size == 0 {
            return Ok(());
        }
    }
}

/// HTTP/1.1 requests on one keep-alive connection to 127.0.0.1:`port` until the server says
/// `connection: close` or `stop` is set; the number answered. A request on a reused
/// connection that the server closed before any byte of its answer is sent again on a new
/// one, as HTTP clients do (RFC 9112, 9.3.1: the server may close an idle connection as the
/// request arrives); any other end counts as a failure.
pub fn keep_alive(port: u16, stop: &AtomicBool) -> Result<u64, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(WATCHDOG))
        .map_err(|e| e.to_string())?;
    let mut answered = 0;
    while !stop.load(Ordering::Relaxed) {
        let sent = s.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n");
        let head = match sent {
            Ok(()) => response(&mut s)?,
            Err(_) => None,
        };
        match head {
            None if answered > 0 => return Ok(answered),
            None => return Err("a new connection closed with no answer".into()),
            Some(head) => {
                answered += 1;
                if head.contains("connection: close") {
                    return Ok(answered);
                }
            }
        }
    }
    Ok(answered)
}

/// One HTTP/1.1 request with `connection: close` to 127.0.0.1:`port`.
pub fn close(port: u16) -> Result<u64, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(WATCHDOG))
        .map_err(|e| e.to_string())?;
    s.write_all(crate::GET_CLOSE)
        .map_err(|e| format!("write: {e}"))?;
    match response(&mut s)? {
        Some(_) => Ok(1),
        None => Err("closed with no answer".into()),
    }
}

/// POSTs with a small body on one keep-alive connection to 127.0.0.1:`port` (a load
/// balancer) until `stop` is set; each answer's `x-host` header goes to `answered`. A POST
/// cannot be sent again safely, so any end other than an answer counts as a failure.
pub fn post_keep_alive(
    port: u16,
    stop: &AtomicBool,
    answered: &(impl Fn(&str) + ?Sized),
) -> Result<u64, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(WATCHDOG))
        .map_err(|e| e.to_string())?;
    let mut count = 0;
    while !stop.load(Ordering::Relaxed) {
        s.write_all(b"POST /order HTTP/1.1\r\nhost: test\r\ncontent-length: 9\r\n\r\nitem=1234")
            .map_err(|e| format!("write: {e}"))?;
        let head = response(&mut s)?.ok_or("the connection closed with no answer to a POST")?;
        let host = head
            .lines()
            .find_map(|l| l.strip_prefix("x-host:"))
            .unwrap_or_default()
            .trim();
        answered(host);
        count += 1;
        if head.contains("connection: close") {
            return Ok(count);
        }
    }
    Ok(count)
}
