//! A client that tells an answer from a failure from a hang: for the storm and the soak.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// What became of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 200.
    Answered,
    /// An error the client sees (refused, reset, closed with no answer).
    Failed,
    /// No answer and no error within the wait.
    Hung,
}

/// One GET: answered (a 200), failed (an error the client sees), or hung (no answer and
/// no error within `hang`).
pub fn ask(port: u16, hang: Duration) -> Outcome {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = match TcpStream::connect_timeout(&addr, hang) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::TimedOut => return Outcome::Hung,
        Err(_) => return Outcome::Failed,
    };
    if s.set_read_timeout(Some(hang)).is_err()
        || s.write_all(b"GET / HTTP/1.1\r\nhost: storm\r\nconnection: close\r\n\r\n")
            .is_err()
    {
        return Outcome::Failed;
    }
    let mut answer = Vec::new();
    match s.read_to_end(&mut answer) {
        Ok(_) if answer.starts_with(b"HTTP/1.1 200") => Outcome::Answered,
        Ok(_) => Outcome::Failed,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Outcome::Hung,
        Err(_) => Outcome::Failed,
    }
}
