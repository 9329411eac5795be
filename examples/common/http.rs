//! HTTP/1.1 for the examples' blocking workers (`hello`, `custom_loop`): every request gets
//! `hello world` and an `x-worker-id` header, and a disconnected worker drains.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ringleader::{Connection, Worker};

/// How long a keep-alive connection may stay idle.
pub(crate) const IDLE: Duration = Duration::from_secs(5);

/// How often an idle connection looks whether its worker is draining.
const DRAIN_CHECK: Duration = Duration::from_millis(100);

/// HTTP/1.1 with keep-alive: every request gets `hello world`. Once the worker is
/// disconnected (a roll, a graceful stop), it drains like a real server: the next response
/// on each connection says `connection: close`, and a connection idle for `DRAIN_CHECK`
/// since the drain began, with no request begun, is closed, so that a roll waits for no
/// client and resets no request (a request half sent is awaited and answered).
pub(crate) fn serve(mut stream: Connection<TcpStream>, worker: &Worker) -> io::Result<()> {
    let id = worker.id();
    stream.set_read_timeout(Some(DRAIN_CHECK))?;
    let mut buf = vec![0u8; 8192];
    let mut filled = 0;
    let mut idle_since = Instant::now();
    // When this connection first saw its worker disconnected.
    let mut draining_since = None;
    loop {
        let n = match stream.read(&mut buf[filled..]) {
            // A signal (SIGSTOP and SIGCONT of this worker, for one) interrupted the wait.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // Idle: closed after IDLE, or once idle for a DRAIN_CHECK since the worker
                // began to drain (a request sent just as the drain began is answered).
                if filled == 0 {
                    if !worker.is_connected() {
                        let since = *draining_since.get_or_insert_with(Instant::now);
                        idle_since = idle_since.max(since);
                        if idle_since.elapsed() >= DRAIN_CHECK {
                            return Ok(());
                        }
                    }
                    if idle_since.elapsed() >= IDLE {
                        return Ok(());
                    }
                }
                continue;
            }
            other => other?,
        };
        idle_since = Instant::now();
        if n == 0 {
            return Ok(());
        }
        filled += n;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let used = match req.parse(&buf[..filled]) {
                Ok(httparse::Status::Complete(used)) => used,
                Ok(httparse::Status::Partial) if filled < buf.len() => break,
                _ => {
                    stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")?;
                    return Ok(());
                }
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
            if body > buf.len() - used {
                stream.write_all(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")?;
                return Ok(());
            }
            if filled < used + body {
                break; // the rest of the body is on its way
            }
            let used = used + body;
            let close = !worker.is_connected()
                || req.version == Some(0)
                || req.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("connection")
                        && h.value.eq_ignore_ascii_case(b"close")
                });
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 12\r\nx-worker-id: {id}\r\n{}\r\nhello world\n",
                if close { "connection: close\r\n" } else { "" }
            );
            stream.write_all(response.as_bytes())?;
            if close {
                return Ok(());
            }
            buf.copy_within(used..filled, 0);
            filled -= used;
            if filled == 0 {
                break;
            }
        }
    }
}
