//! Workers' output, relayed a whole line at a time: each worker's stdout and stderr are
//! pipes that a thread of this process reads, and every line goes out in one write under the
//! stream's lock, so that two workers' lines never interleave inside a line. stderr stays
//! stderr. Each line starts with its worker's tag, `[worker N] ` (PM2's `N|app |`), unless
//! `--no-prefix`.
//!
//! Bounded: a line longer than `LONGEST` (a worker writing without newlines) goes out in
//! pieces of that size, each a line of its own with the tag (a newline ends each piece), so
//! memory stays flat, nothing is lost, and the worker is never held up for it. Without a
//! tag the pieces go out as they came, with no newline added. A worker whose output is not
//! read fast enough (the primary's own stdout is a full pipe) blocks in its own `write`, as
//! it would on a terminal; the primary's loop never waits for it: only these threads do.

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
    /// Relays `stdout` and `stderr` (a worker's pipes) to this process's own, each line
    /// after `tag`.
    pub(crate) fn start(
        &mut self,
        tag: Option<String>,
        stdout: Option<File>,
        stderr: Option<File>,
    ) {
        self.threads.retain(|t| !t.is_finished());
        let tag: Vec<u8> = tag.map(String::into_bytes).unwrap_or_default();
        if let Some(pipe) = stdout {
            let tag = tag.clone();
            self.threads
                .push(std::thread::spawn(move || relay(pipe, &tag, &io::stdout())));
        }
        if let Some(pipe) = stderr {
            self.threads
                .push(std::thread::spawn(move || relay(pipe, &tag, &io::stderr())));
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

/// Copies `pipe` to `out` line by line until the pipe closes, each line after `tag`.
fn relay(mut pipe: impl Read, tag: &[u8], out: &impl Locked) {
    let mut buf = vec![0u8; LONGEST];
    let mut filled = 0;
    // A line with its tag, for one write; at most a tag and `LONGEST` and a newline.
    let mut line_out = Vec::with_capacity(tag.len() + LONGEST + 1);
    let mut write = |line: &[u8]| {
        if tag.is_empty() {
            return out.write_line(line);
        }
        line_out.clear();
        line_out.extend_from_slice(tag);
        line_out.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            line_out.push(b'\n');
        }
        out.write_line(&line_out)
    };
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
                let _ = write(line);
            }
            buf.copy_within(upto..filled, 0);
            filled -= upto;
        }
    }
    if filled > 0 {
        let _ = write(&buf[..filled]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What was written, one entry per write.
    #[derive(Default)]
    struct Writes(std::sync::Mutex<Vec<Vec<u8>>>);

    impl Locked for Writes {
        fn write_line(&self, line: &[u8]) -> io::Result<()> {
            self.0.lock().expect("not poisoned").push(line.to_vec());
            Ok(())
        }
    }

    fn relayed(input: &[u8], tag: &str) -> Vec<Vec<u8>> {
        let out = Writes::default();
        relay(input, tag.as_bytes(), &out);
        out.0.into_inner().expect("not poisoned")
    }

    #[test]
    fn each_line_goes_out_whole_after_its_tag() {
        let writes = relayed(b"one\ntwo\nthree", "[worker 7] ");
        assert_eq!(
            writes,
            [
                &b"[worker 7] one\n"[..],
                b"[worker 7] two\n",
                b"[worker 7] three\n"
            ]
        );
        assert_eq!(relayed(b"one\ntwo", ""), [&b"one\n"[..], b"two"]);
    }

    #[test]
    fn a_line_without_a_newline_goes_out_in_tagged_pieces_and_nothing_is_lost() {
        let input = vec![b'x'; 2 * LONGEST + 10];
        let writes = relayed(&input, "[worker 1] ");
        assert_eq!(writes.len(), 3);
        for w in &writes {
            assert!(w.starts_with(b"[worker 1] x") && w.ends_with(b"x\n"));
            assert!(w.len() <= "[worker 1] ".len() + LONGEST + 1);
        }
        let xs: usize = writes
            .iter()
            .map(|w| w.iter().filter(|b| **b == b'x').count())
            .sum();
        assert_eq!(xs, input.len());
        // Untagged, the pieces go out as they came.
        assert_eq!(relayed(&input, "").concat(), input);
    }
}
