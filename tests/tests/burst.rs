//! A burst of idle connections under round-robin hand-off: the primary hands out everything it
//! holds as soon as workers take what they were given, whatever else happens (here nothing
//! else does), and is back to its own fds once the burst is gone. The primary runs in a
//! process of its own, so nothing but its own waits wakes its loop and its fds are counted
//! from outside.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ringleader_tests::{Spawned, WATCHDOG};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

/// One burst at a time: each opens thousands of connections and threads, and the fresh
/// requests after it are timed.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How long a fresh request after the burst may take to be answered. A wedged primary never
/// answers it (nothing wakes its loop); a loaded machine, with the workers still reading
/// thousands of hang-ups, has taken more than a second.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// What the cluster's primary reports on SIGUSR1.
#[derive(Debug, Clone, Copy)]
struct Stats {
    accepted: u64,
    taken: u64,
    finished: u64,
    closed_gone: u64,
}

struct Cluster {
    primary: Spawned,
    port: u16,
}

impl Cluster {
    fn start(policy: &str, workers: usize, mode: &str) -> Cluster {
        let primary = Spawned::start(
            FIXTURE,
            &["cluster", policy, &workers.to_string(), mode],
            &[],
        );
        let port = primary.expect_line("READY").parse().expect("port");
        Cluster { primary, port }
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.primary.pid()))
            .expect("the primary's fds")
            .count()
    }

    fn stats(&self) -> Stats {
        let pid = rustix::process::Pid::from_raw(self.primary.pid() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::USR1).expect("signal");
        let line = self.primary.expect_line("STATS");
        let n: Vec<u64> = line
            .split(' ')
            .map(|w| w.parse().expect("a count"))
            .collect();
        Stats {
            accepted: n[0],
            taken: n[2],
            finished: n[3],
            closed_gone: n[4],
        }
    }

    /// Waits until the primary's counts satisfy `done`; fails, saying `what`, after the
    /// watchdog.
    fn until(&self, what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
        let deadline = Instant::now() + WATCHDOG;
        loop {
            let stats = self.stats();
            if done(&stats) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "watchdog: {what} never came; last {stats:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A request that must be answered within [`ANSWER_WITHIN`].
    fn fresh_request(&self, i: usize) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(ANSWER_WITHIN)).expect("timeout");
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .expect("send");
        let mut answer = String::new();
        if let Err(e) = s.read_to_string(&mut answer) {
            panic!(
                "fresh request {i} not answered within {ANSWER_WITHIN:?} ({e}); the primary: {:?}",
                self.stats()
            );
        }
        assert!(answer.starts_with("hello from "), "answer {answer:?}");
    }
}

/// `n` connections opened at once: non-blocking connects, so that they land in the listen
/// backlog together, as a burst does, rather than one after another.
fn open_at_once(port: u16, n: usize) -> Vec<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    (0..n)
        .map(|_| {
            let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
            let fd = rustix::net::socket_with(AddressFamily::INET, SocketType::STREAM, flags, None)
                .expect("socket");
            match rustix::net::connect(&fd, &addr) {
                Ok(()) | Err(rustix::io::Errno::INPROGRESS) => fd,
                Err(e) => panic!("connect: {e}"),
            }
        })
        .collect()
}

/// `n` idle connections at once, held until the workers have taken every one (and, when
/// `workers_first`, until the workers' idle timeout closed them), then closed; then fresh
/// requests are answered at once and the primary's fds are back where they started. The
/// workers say what they took and closed on their output: asking the primary would wake its
/// loop, and a wake-up from outside is what hid the bug this guards against.
fn burst(policy: &str, n: usize, workers_first: bool) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let idle_ms = if workers_first { 300 } else { 60_000 };
    let cluster = Cluster::start(policy, 2, &format!("idle-http:{idle_ms}:0:127.0.0.1:0"));
    let before = cluster.fds();
    let clients = open_at_once(cluster.port, n);
    let (mut took, mut idle) = (0, 0);
    while took < n || (workers_first && idle < n) {
        match cluster.primary.expect_one_of(&["TOOK", "IDLE"]).0 {
            0 => took += 1,
            _ => idle += 1,
        }
    }
    drop(clients);
    for i in 0..20 {
        cluster.fresh_request(i);
    }
    let deadline = Instant::now() + WATCHDOG;
    while cluster.fds() != before {
        assert!(
            Instant::now() < deadline,
            "the primary holds {} fds more than before the burst: {:?}",
            cluster.fds() as i64 - before as i64,
            cluster.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = cluster.stats();
    assert_eq!(stats.accepted, n as u64 + 20, "{stats:?}");
}

#[test]
fn round_robin_600_idle_then_fresh_requests_are_answered() {
    burst("rr", 600, true);
}

#[test]
fn least_connections_600_idle_then_fresh_requests_are_answered() {
    burst("lc", 600, true);
}

#[test]
fn round_robin_3000_idle_then_fresh_requests_are_answered() {
    burst("rr", 3000, true);
}

#[test]
fn least_connections_3000_clients_close_first_then_fresh_requests_are_answered() {
    burst("lc", 3000, false);
}

#[test]
fn round_robin_600_clients_close_first_then_fresh_requests_are_answered() {
    burst("rr", 600, false);
}

/// A worker held back by its capacity hint takes the next connection as soon as it has
/// finished one: only the board says so, and the primary's loop must look again by itself.
#[test]
fn connections_held_by_a_capacity_hint_go_out_as_the_worker_finishes() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start("rr", 1, "capacity-1:127.0.0.1:0");
    let clients = Spawned::start(FIXTURE, &["clients", &cluster.port.to_string(), "20"], &[]);
    clients.expect_line("STARTED");
    assert_eq!(clients.expect_line("ANSWERS"), "20 0");
    let stats = cluster.until("every connection finished", |s| s.finished == 20);
    assert_eq!(stats.taken, 20);
}

/// Connections held for a worker at its capacity whose clients hang up meanwhile are closed
/// by the primary, not handed to the worker, and do not hold back the live one after them.
#[test]
fn held_connections_whose_clients_left_are_closed_by_the_primary() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start("rr", 1, "idle-http:60000:1:127.0.0.1:0");
    let mut first = TcpStream::connect(("127.0.0.1", cluster.port)).expect("connect");
    cluster.primary.expect_line("TOOK");
    let gone: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(("127.0.0.1", cluster.port)).expect("connect"))
        .collect();
    cluster.until("ten more accepted and held", |s| s.accepted == 11);
    drop(gone);
    // The worker finishes its one connection; the next it takes is a live one.
    first.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("send");
    let mut answer = String::new();
    first.read_to_string(&mut answer).expect("answer");
    cluster.fresh_request(0);
    let stats = cluster.until("the fresh request served", |s| s.finished == 2);
    assert_eq!((stats.taken, stats.closed_gone), (2, 10), "{stats:?}");
}
