//! The comparison runner's load client: one thread, epoll, a fixed number of connections in
//! flight, non-blocking everything, so that one CPU drives tens of thousands of connections
//! per second. Three workloads:
//!
//! - `Conn`: connect, read the server's short answer to end of file, close, again;
//! - `ConnProxy`: `Conn` with a PROXY protocol v1 header sent first, as HAProxy's
//!   `send-proxy` does;
//! - `KeepAlive`: HTTP/1.1 requests one after another on each connection;
//! - `Close`: one HTTP request per connection (`Connection: close`).
//!
//! Latency is measured per operation (connect to end of file; request to full response).

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use ringleader_sys::epoll::{Epoll, Interest, Ready};
use rustix::net::{AddressFamily, SocketFlags, SocketType};

/// What each connection does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Workload {
    Conn,
    ConnProxy,
    KeepAlive,
    Close,
}

/// What a run measured.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    pub(crate) seconds: f64,
    /// Per-operation latency, microseconds (every operation).
    pub(crate) latencies_us: Vec<u32>,
}

impl Outcome {
    pub(crate) fn rate(&self) -> f64 {
        self.ops as f64 / self.seconds
    }

    pub(crate) fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }
}

const KEEP_ALIVE: &[u8] = b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";
const CLOSE: &[u8] = b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n";
const PROXY_HEADER: &[u8] = b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 8000\r\n";

struct Slot {
    fd: Option<OwnedFd>,
    started: Instant,
    /// Waiting for the connection to complete (HTTP sends first).
    connecting: bool,
    got: Vec<u8>,
}

/// Runs `workload` against 127.0.0.1:`port` with `inflight` connections for `duration`.
pub(crate) fn run(port: u16, workload: Workload, inflight: usize, duration: Duration) -> Outcome {
    let mut epoll = Epoll::new().expect("epoll");
    let addr = SocketAddrV4::new([127, 0, 0, 1].into(), port);
    let mut out = Outcome::default();
    let mut slots: Vec<Slot> = (0..inflight)
        .map(|_| Slot {
            fd: None,
            started: Instant::now(),
            connecting: false,
            got: Vec::with_capacity(256),
        })
        .collect();
    let start = Instant::now();
    let end = start + duration;
    for (i, slot) in slots.iter_mut().enumerate() {
        open(&epoll, &addr, i, slot, workload, &mut out);
    }
    let mut ready: Vec<Ready> = Vec::with_capacity(inflight);
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        if epoll
            .wait(&mut ready, Some(Duration::from_millis(50)))
            .is_err()
        {
            continue;
        }
        // Slots whose last connect failed at once try again.
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.fd.is_none() {
                open(&epoll, &addr, i, slot, workload, &mut out);
            }
        }
        for r in ready.drain(..) {
            let i = r.token as usize;
            let slot = &mut slots[i];
            let Some(fd) = slot.fd.as_ref() else { continue };
            if slot.connecting {
                if !r.write && !r.read {
                    continue;
                }
                slot.connecting = false;
                let request = match workload {
                    Workload::Close => CLOSE,
                    Workload::ConnProxy => PROXY_HEADER,
                    _ => KEEP_ALIVE,
                };
                if rustix::io::write(fd, request).is_err()
                    || epoll.modify(fd, r.token, Interest::READ).is_err()
                {
                    fail(&epoll, &addr, i, slot, workload, &mut out);
                }
                continue;
            }
            // Read what is there; decide whether the operation is complete.
            let mut eof = false;
            loop {
                match rustix::io::read(fd, &mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => slot.got.extend_from_slice(&buf[..n]),
                    Err(rustix::io::Errno::AGAIN) => break,
                    Err(_) => {
                        eof = true;
                        slot.got.clear();
                        break;
                    }
                }
            }
            match workload {
                Workload::Conn | Workload::ConnProxy => {
                    if eof {
                        if slot.got.is_empty() {
                            fail(&epoll, &addr, i, slot, workload, &mut out);
                        } else {
                            done(slot, &mut out);
                            open(&epoll, &addr, i, slot, workload, &mut out);
                        }
                    }
                }
                Workload::KeepAlive | Workload::Close => {
                    if response_complete(&slot.got) {
                        // The next request goes out before the bookkeeping.
                        let again = workload == Workload::KeepAlive
                            && !eof
                            && rustix::io::write(fd, KEEP_ALIVE).is_ok();
                        done(slot, &mut out);
                        if again {
                            slot.got.clear();
                            slot.started = Instant::now();
                        } else {
                            open(&epoll, &addr, i, slot, workload, &mut out);
                        }
                    } else if eof {
                        fail(&epoll, &addr, i, slot, workload, &mut out);
                    }
                }
            }
        }
    }
    out.seconds = start.elapsed().as_secs_f64();
    out
}

/// A whole `HTTP/1.1 200` response with `content-length`.
fn response_complete(got: &[u8]) -> bool {
    let Some(head_end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    got.len() >= head_end + 4 + len
}

fn done(slot: &mut Slot, out: &mut Outcome) {
    out.ops += 1;
    let us = slot.started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
    out.latencies_us.push(us);
}

fn fail(
    epoll: &Epoll,
    addr: &SocketAddrV4,
    i: usize,
    slot: &mut Slot,
    w: Workload,
    out: &mut Outcome,
) {
    out.errors += 1;
    open(epoll, addr, i, slot, w, out);
}

/// Closes the slot's connection, if any, and starts a new one (non-blocking connect).
fn open(
    epoll: &Epoll,
    addr: &SocketAddrV4,
    i: usize,
    slot: &mut Slot,
    w: Workload,
    out: &mut Outcome,
) {
    if let Some(old) = slot.fd.take() {
        let _ = epoll.delete(&old);
    }
    slot.got.clear();
    slot.started = Instant::now();
    let fd = match connect(addr) {
        Ok(fd) => fd,
        Err(_) => {
            out.errors += 1;
            return;
        }
    };
    // HTTP (and a PROXY header) goes first: wait for the connection to complete. The
    // short-connection server speaks first: wait for its answer.
    let (interest, connecting) = match w {
        Workload::Conn => (Interest::READ, false),
        _ => (
            Interest {
                read: true,
                write: true,
            },
            true,
        ),
    };
    if epoll.add(&fd, i as u64, interest).is_err() {
        out.errors += 1;
        return;
    }
    slot.connecting = connecting;
    slot.fd = Some(fd);
}

fn connect(addr: &SocketAddrV4) -> io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    let _ = rustix::net::sockopt::set_tcp_nodelay(&fd, true);
    match rustix::net::connect(&fd, addr) {
        Ok(()) | Err(rustix::io::Errno::INPROGRESS) => Ok(fd),
        Err(e) => Err(e.into()),
    }
}
