//! Workers' output, relayed a whole line at a time: each worker's stdout and stderr are
//! pipes that a thread of this process reads, and every line goes out in one write under the
//! stream's lock, so that two workers' lines never interleave inside a line. stderr stays
//! stderr.
//!
//! Bounded: a line longer than `LONGEST` (a worker writing without newlines) goes out in
//! pieces of that size, so memory stays flat and the worker is never held up for it. A
//! worker whose output is not read fast enough blocks in its own `write`, as it would on
//! a terminal; the primary's loop never waits for it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most one line may buffer before it goes out in pieces.
const LONGEST: usize = 64 * 1024;

/// The relay threads of every worker so far.
#[derive(Default)]
pub(crate) struct Relays {
    threads: Vec<JoinHandle<()>>,
}

impl Relays {
    /// Relays `stdout` and `stderr` (a worker's pipes) to this process's own.
    pub(crate) fn start(&mut self, stdout: Option<File>, stderr: Option<File>) {
        self.threads.retain(|t| !t.is_finished());
        if let Some(pipe) = stdout {
            self.threads
                .push(std::thread::spawn(move || relay(pipe, &io::stdout())));
        }
        if let Some(pipe) = stderr {
            self.threads
                .push(std::thread::spawn(move || relay(pipe, &io::stderr())));
        }
    }

    /// Waits up to `limit` for the workers' last lines (their pipes close as they exit; a
    /// child a worker left behind may hold one open).
    pub(crate) fn finish(self, limit: Duration) {
        let deadline = Instant::now() + limit;
        for t in self.threads {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// A stream whose lock keeps one line's write whole.
trait Locked {
    fn write_line(&self, line: &[u8]) -> io::Result<()>;
}

impl Locked for io::Stdout {
    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        let mut out = self.lock();
        out.write_all(line)?;
        out.flush()
    }
}

impl Locked for io::Stderr {
    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        self.lock().write_all(line)
    }
}

/// Copies `pipe` to `out` line by line until the pipe closes.
fn relay(mut pipe: File, out: &impl Locked) {
    let mut buf = vec![0u8; LONGEST];
    let mut filled = 0;
    loop {
        let n = match pipe.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        filled += n;
        // Every whole line, then the rest if it fills the buffer.
        let whole = buf[..filled]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let upto = if whole == 0 && filled == LONGEST {
            filled
        } else {
            whole
        };
        if upto > 0 {
            for line in buf[..upto].split_inclusive(|b| *b == b'\n') {
                let _ = out.write_line(line);
            }
            buf.copy_within(upto..filled, 0);
            filled -= upto;
        }
    }
    if filled > 0 {
        let _ = out.write_line(&buf[..filled]);
    }
}
