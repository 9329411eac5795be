//! A client that tells an answer from a failure from a hang: for the storm and the soak.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a client waits before its next request after one failed.
const RETRY_AFTER: Duration = Duration::from_millis(10);

/// What became of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 200.
    Answered = 0,
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

/// Waits until 127.0.0.1:`port` answers a request (at most 30 s).
///
/// # Panics
/// When it never does, naming `name`.
pub fn wait_answering(port: u16, hang: Duration, name: &str) {
    let up = Instant::now() + Duration::from_secs(30);
    while ask(port, hang) != Outcome::Answered {
        assert!(Instant::now() < up, "{name}: the cluster never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Clients asking in a loop, each request with `Connection: close`, counting the outcomes;
/// a client that failed waits 10 ms before it asks again.
#[derive(Debug)]
pub struct Clients {
    counts: Arc<[AtomicU64; 3]>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// What [`Clients`] counted: answered, failed, hung.
#[derive(Clone, Copy, Debug)]
pub struct Counted {
    /// Answered with a 200.
    pub answered: u64,
    /// Failed: the client knew at once.
    pub failed: u64,
    /// No answer and no error within the wait.
    pub hung: u64,
}

impl Clients {
    /// `n` clients of 127.0.0.1:`port`, a request hung after `hang`.
    pub fn start(n: usize, port: u16, hang: Duration) -> Clients {
        let counts = Arc::new([const { AtomicU64::new(0) }; 3]);
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let (counts, stop) = (counts.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let outcome = ask(port, hang);
                        if outcome == Outcome::Failed {
                            std::thread::sleep(RETRY_AFTER);
                        }
                        counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Clients {
            counts,
            stop,
            threads,
        }
    }

    /// Stops them, each after the request it has in flight (which may take up to the
    /// hang to count), and says what they counted.
    pub fn stop(self) -> Counted {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let [answered, failed, hung] = [0, 1, 2].map(|i| self.counts[i].load(Ordering::Relaxed));
        Counted {
            answered,
            failed,
            hung,
        }
    }
}
