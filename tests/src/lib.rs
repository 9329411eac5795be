//! Helpers for the integration tests: a watchdog around every wait, fd counting, and
//! children in their own process group that are killed on drop.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringleader::{Event, Primary, Settings};

pub mod load;

/// How long any single wait in a test may take before the test fails as hung.
pub const WATCHDOG: Duration = Duration::from_secs(30);

/// A primary (this test process) whose workers run the fixture, and the events it has
/// produced but the test has not looked at yet.
#[derive(Debug)]
pub struct Harness {
    /// The primary under test.
    pub primary: Primary,
    _share: Option<Share>,
    online: std::cell::RefCell<std::collections::BTreeSet<ringleader::WorkerId>>,
    stash: std::cell::RefCell<std::collections::VecDeque<Event>>,
}

impl Harness {
    /// A primary whose workers run `fixture` with no arguments.
    pub fn new(fixture: &str) -> Harness {
        let share = Share::take();
        let primary = Primary::new().expect("primary");
        primary
            .setup(Settings::default().exec(fixture).args(Vec::<String>::new()))
            .expect("setup");
        Harness {
            primary,
            _share: share,
            online: Default::default(),
            stash: Default::default(),
        }
    }

    /// Forks a worker in `mode` and returns its id.
    pub fn fork(&self, mode: &str) -> ringleader::WorkerId {
        self.primary
            .fork(&[("FIXTURE_MODE", mode)])
            .expect("fork")
            .id()
    }

    /// Runs the primary's loop (keeping the events for later) until `job`, run on another
    /// thread, is done: for clients that need the primary to accept for them.
    pub fn drive<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> T {
        let handle = std::thread::spawn(job);
        let deadline = Instant::now() + WATCHDOG;
        while !handle.is_finished() {
            assert!(
                Instant::now() < deadline,
                "watchdog: the job did not finish within {WATCHDOG:?}"
            );
            if let Some(e) = self
                .primary
                .next_event(Some(Duration::from_millis(5)))
                .expect("next event")
            {
                self.stash.borrow_mut().push_back(e);
            }
        }
        handle.join().expect("job panicked")
    }

    /// The events seen while driving and all that are ready now, without waiting.
    pub fn drain(&self) -> Vec<Event> {
        let mut out: Vec<Event> = self.stash.borrow_mut().drain(..).collect();
        while let Some(e) = self
            .primary
            .next_event(Some(Duration::ZERO))
            .expect("next event")
        {
            out.push(e);
        }
        out
    }

    /// The next event, or a panic after [`WATCHDOG`].
    pub fn next(&self) -> Event {
        if let Some(e) = self.stash.borrow_mut().pop_front() {
            return e;
        }
        match self.primary.next_event(Some(WATCHDOG)).expect("next event") {
            Some(e) => e,
            None => panic!("watchdog: no event within {WATCHDOG:?}"),
        }
    }

    /// Events until `pred` matches one, returned with all that came before it.
    pub fn until(&self, mut pred: impl FnMut(&Event) -> bool) -> Vec<Event> {
        let mut seen = Vec::new();
        loop {
            let stashed = self.stash.borrow_mut().pop_front();
            let e = match stashed
                .map(|e| Ok(Some(e)))
                .unwrap_or_else(|| self.primary.next_event(Some(WATCHDOG)))
                .expect("next event")
            {
                Some(e) => e,
                None => panic!(
                    "watchdog: no event within {WATCHDOG:?}; last events seen: {:?}; primary {:?}",
                    seen.iter()
                        .rev()
                        .take(20)
                        .rev()
                        .map(describe)
                        .collect::<Vec<_>>(),
                    self.primary
                ),
            };
            if let Event::Online { worker } = e {
                self.online.borrow_mut().insert(worker);
            }
            let stop = pred(&e);
            seen.push(e);
            if stop {
                return seen;
            }
        }
    }

    /// Waits for `n` Listening events; returns what they carried, in order.
    pub fn listening(&self, n: usize) -> Vec<ringleader::Listening> {
        let mut seen = Vec::new();
        self.until(|e| {
            if let Event::Listening { address, .. } = e {
                seen.push(address.clone());
            }
            seen.len() == n
        });
        seen
    }

    /// Events until worker `id` has both disconnected and exited, described.
    pub fn until_gone(&self, id: ringleader::WorkerId) -> Vec<String> {
        let (mut disconnected, mut exited) = (false, false);
        let seen = self.until(|e| {
            match e {
                Event::Disconnect { worker, .. } if *worker == id => disconnected = true,
                Event::Exit { worker, .. } if *worker == id => exited = true,
                _ => {}
            }
            disconnected && exited
        });
        seen.iter().map(describe).collect()
    }

    /// Waits for worker `id` to be online.
    pub fn online(&self, id: ringleader::WorkerId) {
        if self.online.borrow().contains(&id) {
            return;
        }
        self.until(|e| matches!(e, Event::Online { worker } if *worker == id));
    }
}

/// A short, comparable name for an event: `fork 1`, `exit 1 code=Some(0) signal=None ead=true`…
pub fn describe(e: &Event) -> String {
    match e {
        Event::Setup(_) => "setup".into(),
        Event::Fork { worker, .. } => format!("fork {worker}"),
        Event::Online { worker } => format!("online {worker}"),
        Event::Ready { worker } => format!("ready {worker}"),
        Event::StalledKilled { worker, stalled } => format!("stalled-killed {worker} {stalled:?}"),
        Event::Message { worker, message } => {
            let text: String = message.text().chars().take(40).collect();
            format!("message {worker} {text}")
        }
        Event::Disconnect {
            worker,
            exited_after_disconnect,
        } => {
            format!("disconnect {worker} ead={exited_after_disconnect}")
        }
        Event::Exit {
            worker,
            code,
            signal,
            exited_after_disconnect,
        } => {
            format!("exit {worker} code={code:?} signal={signal:?} ead={exited_after_disconnect}")
        }
        Event::AllDisconnected => "all-disconnected".into(),
        Event::Signal(s) => format!("signal {s}"),
        Event::Error { worker, error } => format!("error {worker:?} {}", error.report()),
        _ => "other".into(),
    }
}

/// The tests of one file run on threads of one process (under `cargo test`; nextest gives
/// each test a process of its own), so a test that counts this process's fds must have it to
/// itself. Every [`Harness`] and [`Spawned`] holds a share of the process; [`alone`] waits
/// until no other test holds one and keeps new ones out until it is dropped.
#[derive(Default)]
struct Gate {
    shares: usize,
    alone: bool,
    waiting_alone: usize,
}

static GATE: std::sync::Mutex<Gate> = std::sync::Mutex::new(Gate {
    shares: 0,
    alone: false,
    waiting_alone: 0,
});
static GATE_CHANGED: std::sync::Condvar = std::sync::Condvar::new();

thread_local! {
    /// This thread's test holds the process alone: its own harnesses need no share.
    static ALONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn gate() -> std::sync::MutexGuard<'static, Gate> {
    GATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A test's share of this process (see [`alone`]); given back on drop.
#[derive(Debug)]
pub struct Share(());

impl Share {
    fn take() -> Option<Share> {
        if ALONE.with(std::cell::Cell::get) {
            return None;
        }
        let mut g = gate();
        while g.alone || g.waiting_alone > 0 {
            g = GATE_CHANGED.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.shares += 1;
        Some(Share(()))
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        gate().shares -= 1;
        GATE_CHANGED.notify_all();
    }
}

/// This process to the calling test alone while the guard lives: for tests that count
/// `/proc/self/fd`. Take it before the test's first harness or child.
#[derive(Debug)]
pub struct Alone(());

/// Waits until no other test of this process holds a share, then keeps new ones out.
pub fn alone() -> Alone {
    let mut g = gate();
    g.waiting_alone += 1;
    while g.alone || g.shares > 0 {
        g = GATE_CHANGED.wait(g).unwrap_or_else(|e| e.into_inner());
    }
    g.waiting_alone -= 1;
    g.alone = true;
    ALONE.with(|a| a.set(true));
    Alone(())
}

impl Drop for Alone {
    fn drop(&mut self) {
        ALONE.with(|a| a.set(false));
        gate().alone = false;
        GATE_CHANGED.notify_all();
    }
}

/// One request to a fixture worker serving on 127.0.0.1:`port` (`serve:` modes): its
/// `hello from <id>` answer, or what went wrong.
pub fn fetch_hello(port: u16) -> Result<String, String> {
    use std::io::Read;
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(WATCHDOG))
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("read: {e}"))?;
    if out.starts_with("hello from ") {
        Ok(out)
    } else {
        Err(format!("answer {out:?}"))
    }
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address `from` (bound before the
/// connect: 127.0.0.0/8 is all this host's), reads bounded by [`WATCHDOG`].
///
/// # Errors
/// What went wrong, as text.
pub fn connect_from(from: [u8; 4], port: u16) -> Result<std::net::TcpStream, String> {
    use rustix::net::{AddressFamily, SocketType};
    let from = std::net::SocketAddr::from((from, 0));
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None)
        .map_err(|e| e.to_string())?;
    rustix::net::bind(&fd, &from).map_err(|e| format!("bind {from}: {e}"))?;
    rustix::net::connect(&fd, &std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .map_err(|e| format!("connect: {e}"))?;
    let s = std::net::TcpStream::from(fd);
    s.set_read_timeout(Some(WATCHDOG))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// The example `name` (`target/<profile>/examples/name`; the test runs from
/// `target/<profile>/deps`), built with the `tokio` feature first if a plain
/// `cargo test -p ringleader-tests` left it out.
pub fn example(name: &str) -> std::path::PathBuf {
    built(
        &Path::new("examples").join(name),
        &["-p", "ringleader", "--features", "tokio", "--example", name],
    )
}

/// The `ringleader` command (`target/<profile>/ringleader`), built first if a plain
/// `cargo test -p ringleader-tests` left it out.
pub fn ringleader_command() -> std::path::PathBuf {
    built(Path::new("ringleader"), &["-p", "ringleader-cli"])
}

/// `target/<profile>/<relative>`, made by `cargo build -q <build>` unless it is there; one
/// build at a time.
fn built(relative: &Path, build: &[&str]) -> std::path::PathBuf {
    static BUILT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let exe = std::env::current_exe().expect("the test's path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = profile.join(relative);
    let _one_build = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = Command::new(cargo)
            .args(["build", "-q"])
            .args(build)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build");
        assert!(built.success(), "cargo build {build:?}");
    }
    path
}

/// `GET /`, asking the server to close once it answered ([`http_get`]'s request), for
/// clients that write it themselves.
pub const GET_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n";

/// The child processes of `pid` (a primary's: its workers).
pub fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// One `GET path` with `connection: close` to 127.0.0.1:`port`: the whole answer, head
/// and body, read until the server closed; or what failed.
pub fn http_get(port: u16, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(WATCHDOG))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    Ok(answer)
}

/// [`http_get`]'s answer as its status line and body; panics when there is none.
pub fn http_status(port: u16, path: &str) -> (String, String) {
    let answer = http_get(port, path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path}: no head in {answer:?}"));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// Asserts that `seen` holds worker `id`'s `StalledKilled`; returns the events described,
/// for later failure messages.
pub fn assert_stall_killed(seen: &[Event], id: ringleader::WorkerId) -> Vec<String> {
    let events: Vec<String> = seen.iter().map(describe).collect();
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::StalledKilled { worker, .. } if *worker == id)),
        "worker {id} was not killed as stalled: {events:?}"
    );
    events
}

/// `n` clients connected to 127.0.0.1:`port` at once, then each read to its end: their
/// answers (fixture workers' `hello from <id>` lines), or what went wrong.
pub fn burst(port: u16, n: usize) -> Vec<Result<String, String>> {
    use std::io::Read;
    let conns: Vec<_> = (0..n)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    conns
        .into_iter()
        .map(|mut c| {
            c.set_read_timeout(Some(WATCHDOG))
                .map_err(|e| e.to_string())?;
            let mut answer = String::new();
            c.read_to_string(&mut answer)
                .map(|_| answer)
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// Sends `sig` to process `pid`.
pub fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    rustix::process::kill_process(pid, sig).expect("signal");
}

/// Stops process `pid` (`SIGSTOP`) and waits until every one of its threads has stopped:
/// a process with more than one thread stops when each thread next checks its signals, and
/// on a loaded machine one may serve a while before it does.
pub fn stop(pid: u32) {
    signal(pid, rustix::process::Signal::STOP);
    let deadline = Instant::now() + WATCHDOG;
    // The state follows the command name, which may itself hold `)`.
    let stopped = |stat: &str| {
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        state.starts_with('T') || state.starts_with('t')
    };
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
        let all = tasks
            .flatten()
            .all(|t| std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| stopped(&s)));
        if all {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "watchdog: process {pid} did not stop"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `n` clients at once, each on a thread of its own calling `ask`: their results, in order.
pub fn at_once<T: Send + 'static>(
    n: usize,
    ask: impl Fn() -> T + Clone + Send + 'static,
) -> Vec<T> {
    let threads: Vec<_> = (0..n).map(|_| std::thread::spawn(ask.clone())).collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("client"))
        .collect()
}

/// The worker that replaced `old` (its `Respawned` event among `events`), if one did.
pub fn replacement_of(events: &[Event], old: ringleader::WorkerId) -> Option<ringleader::WorkerId> {
    events.iter().find_map(|e| match e {
        Event::Respawned {
            worker, replaces, ..
        } if *replaces == old => Some(*worker),
        _ => None,
    })
}

/// How many of a [`burst`]'s answers are a fixture worker's `hello from`.
pub fn hellos(answers: &[Result<String, String>]) -> usize {
    answers
        .iter()
        .filter(|a| a.as_ref().is_ok_and(|a| a.starts_with("hello from ")))
        .count()
}

/// A TCP port free on 127.0.0.1 now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a port")
}

/// How many fds this process has open. Counting tests hold [`alone`].
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Whether process `pid` exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Waits until `pid` is gone (exited, zombie or reaped); returns how long it took, or `None`
/// after `limit`.
pub fn wait_gone(pid: u32, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let pidfd = match rustix::process::Pid::from_raw(pid as i32)
        .map(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()))
    {
        Some(Ok(fd)) => fd,
        _ => return Some(start.elapsed()),
    };
    let mut fds = [rustix::event::PollFd::new(
        &pidfd,
        rustix::event::PollFlags::IN,
    )];
    let ts = rustix::event::Timespec {
        tv_sec: limit.as_secs() as i64,
        tv_nsec: 0,
    };
    match rustix::event::poll(&mut fds, Some(&ts)) {
        Ok(n) if n > 0 => Some(start.elapsed()),
        _ => None,
    }
}

#[derive(Debug)]
/// A child in its own process group, killed (the whole group) on drop, with its stdout lines
/// read by a thread.
pub struct Spawned {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Reads the child's stdout until every process that holds the pipe has closed it.
    reader: Option<std::thread::JoinHandle<()>>,
    _share: Option<Share>,
}

impl Spawned {
    /// Starts `program args` in a new process group.
    pub fn start(program: impl AsRef<Path>, args: &[&str], env: &[(&str, &str)]) -> Spawned {
        Spawned::start_with(program, args, env, Stdio::inherit(), false)
    }

    /// [`Spawned::start`] with a pipe to its standard input ([`Spawned::write_line`]).
    pub fn start_piped(program: impl AsRef<Path>, args: &[&str], env: &[(&str, &str)]) -> Spawned {
        Spawned::start_with(program, args, env, Stdio::piped(), false)
    }

    /// [`Spawned::start`] with `/dev/null` as its standard input (as under systemd or nohup).
    pub fn start_without_stdin(
        program: impl AsRef<Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Spawned {
        Spawned::start_with(program, args, env, Stdio::null(), false)
    }

    /// [`Spawned::start`] with its stderr lines read too, among the stdout ones.
    pub fn start_with_stderr(
        program: impl AsRef<Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Spawned {
        Spawned::start_with(program, args, env, Stdio::inherit(), true)
    }

    /// Writes `line` and a newline to the child's standard input ([`Spawned::start_piped`]).
    pub fn write_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("started with a pipe");
        writeln!(stdin, "{line}").expect("write to the child");
    }

    fn start_with(
        program: impl AsRef<Path>,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Stdio,
        stderr: bool,
    ) -> Spawned {
        let share = Share::take();
        let mut cmd = Command::new(program.as_ref());
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(stdin)
            .stdout(Stdio::piped())
            .process_group(0);
        if stderr {
            cmd.stderr(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("spawn fixture");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Spawned {
            child,
            lines,
            reader: Some(reader),
            _share: share,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line that starts with `prefix`, without the prefix; panics after
    /// [`WATCHDOG`].
    pub fn expect_line(&self, prefix: &str) -> String {
        self.expect_one_of(&[prefix]).1
    }

    /// The next stdout line that starts with one of `prefixes`: which one, and the rest of
    /// the line; panics after [`WATCHDOG`].
    pub fn expect_one_of(&self, prefixes: &[&str]) -> (usize, String) {
        let deadline = Instant::now() + WATCHDOG;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("watchdog: no line");
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("watchdog: no {prefixes:?} line"));
            for (i, prefix) in prefixes.iter().enumerate() {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return (i, rest.trim().to_owned());
                }
            }
        }
    }

    /// Waits for `n` lines from a primary (a `hello` example, `ringleader run`) saying a
    /// worker listens: `Worker N listening on …`.
    pub fn expect_listening(&self, n: usize) {
        self.expect_workers(n, "listening on");
    }

    /// Waits for `n` lines `Worker …` that contain `what`.
    pub fn expect_workers(&self, n: usize, what: &str) {
        let mut seen = 0;
        while seen < n {
            if self.expect_line("Worker ").contains(what) {
                seen += 1;
            }
        }
    }

    /// Every line until the child closes its output, once it has exited by itself (its
    /// exit code with them); panics after [`WATCHDOG`].
    pub fn lines_until_exit(&mut self) -> (Option<i32>, Vec<String>) {
        let deadline = Instant::now() + WATCHDOG;
        let mut lines = Vec::new();
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("watchdog: no exit; lines so far: {lines:?}"));
            match self.lines.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("watchdog: no exit; lines so far: {lines:?}")
                }
            }
        }
        (self.wait(), lines)
    }

    /// Waits for the child to exit by itself and reaps it; its exit code.
    pub fn wait(&mut self) -> Option<i32> {
        self.child.wait().ok().and_then(|s| s.code())
    }

    /// Sends SIGKILL to the child itself (not its group).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(pgid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The pipe's read end closes with the reader, once the group's last writer is gone:
        // before this test's share is given back, so that a test counting fds next does not
        // see it close under its feet. Bounded: a process outside the group may hold it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.reader.as_ref().is_some_and(|r| !r.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self
            .reader
            .as_ref()
            .is_some_and(std::thread::JoinHandle::is_finished)
        {
            let _ = self.reader.take().map(std::thread::JoinHandle::join);
        }
    }
}
