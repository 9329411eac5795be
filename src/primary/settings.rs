//! Settings for spawning workers (Node: `cluster.setupPrimary(settings)`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use ringleader_sys::signal::Signal;
pub use ringleader_sys::spawn::Stdio;

use crate::policy::SharedPolicy;

/// How connections reach workers (Node: `cluster.schedulingPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scheduling {
    /// The primary accepts and hands each connection to a worker (Node: `SCHED_RR`, the
    /// default).
    #[default]
    RoundRobin,
    /// Workers share the listening socket and accept themselves (Node: `SCHED_NONE`).
    Shared,
    /// Every worker gets a listening socket of its own on the same port (`SO_REUSEPORT`); the
    /// kernel spreads connections by a hash of the client's address. The primary picks the
    /// port for `listen(0)`. Connections queued on a worker's socket when it dies are reset by
    /// the kernel, unlike round-robin's.
    ReusePort,
    /// Every worker gets a listening socket of its own on the same port, as with
    /// [`ReusePort`](Scheduling::ReusePort), and the primary steers: a classic BPF program on
    /// the `SO_REUSEPORT` group places each new connection in a worker's queue, by weights
    /// the primary sets from each worker's accept queue and its hints on the load board. The
    /// kernel does the placing, so the primary spends nothing per connection. It keeps a copy
    /// of every worker's socket: a worker that stops taking connections (its queue at the
    /// hand-off bound, paused, draining) gets none until it catches up, and what waits in its
    /// queue, or in the queue of a worker that died, is accepted by the primary and handed to
    /// the others, as round-robin does. TCP only: Unix sockets get round-robin hand-off, UDP
    /// is shared.
    Steered,
}

impl Scheduling {
    /// Parses `rr`, `none`, `reuseport` or `steer`, the values of `RINGLEADER_SCHED_POLICY` (Node:
    /// `NODE_CLUSTER_SCHED_POLICY`). The names of the other hand-off policies (`lc`, `p2c`,
    /// `weighted`, `sticky`) parse as round-robin hand-off too: the policy picks the worker.
    /// `steer-sticky` is steering with the [`Sticky`](crate::policy::Sticky) policy
    /// (`SharedPolicy::named("steer-sticky")`): the kernel places each client by its address.
    pub fn parse(s: &str) -> Option<Scheduling> {
        match s {
            "rr" => Some(Scheduling::RoundRobin),
            "steer" | "steer-sticky" => Some(Scheduling::Steered),
            _ if SharedPolicy::named(s).is_some() => Some(Scheduling::RoundRobin),
            "none" => Some(Scheduling::Shared),
            "reuseport" => Some(Scheduling::ReusePort),
            _ => None,
        }
    }
}

/// How workers are spawned. Every field left unset keeps its current value when passed to
/// [`Primary::setup`](crate::Primary::setup): settings accumulate, as in Node.
///
/// # Examples
/// ```
/// use ringleader::{Settings, Scheduling};
/// let settings = Settings::default()
///     .args(["--serve"])
///     .silent(true)
///     .scheduling(Scheduling::Shared);
/// assert_eq!(settings.get_silent(), Some(true));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub(crate) exec: Option<PathBuf>,
    pub(crate) args: Option<Vec<OsString>>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) env: Option<Vec<(OsString, OsString)>>,
    pub(crate) silent: Option<bool>,
    pub(crate) stdio: Option<[Stdio; 3]>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) scheduling: Option<Scheduling>,
    pub(crate) death_signal: Option<Option<Signal>>,
    pub(crate) policy: Option<SharedPolicy>,
    pub(crate) board_slots: Option<usize>,
    pub(crate) respawn: Option<Option<Respawn>>,
    pub(crate) take_back: Option<Option<Duration>>,
    pub(crate) ready_when_told: Option<bool>,
    pub(crate) kill_stalled: Option<Option<Duration>>,
    pub(crate) start_within: Option<Duration>,
    pub(crate) protocol: Option<WorkerProtocol>,
    pub(crate) max_memory: Option<Option<u64>>,
    pub(crate) cpu_affinity: Option<bool>,
    pub(crate) defer_accept: Option<Option<Duration>>,
    pub(crate) proxy_protocol: Option<Option<ProxyProtocol>>,
}

/// What the workers forked from now on speak on their channel ([`Settings::worker_protocol`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerProtocol {
    /// ringleader's frames: a program built on this crate.
    #[default]
    Ringleader,
    /// Node.js's own IPC protocol: an unmodified Node.js cluster application (`node app.js`),
    /// whose `cluster.isWorker` branch then runs. Its messages are JSON values, one per
    /// [`Event::Message`](crate::Event::Message) and [`WorkerHandle::send`](crate::WorkerHandle::send).
    /// Every scheduling serves them: round-robin through the hand-off (the primary sends each
    /// connection as Node's `newconn` and keeps its copy until the worker's answer), shared,
    /// reuseport and steered sockets as Node handles. Under [`Scheduling::Steered`] the
    /// queue of a worker that died goes to the others as `newconn`s.
    Node,
    /// A socket-activated server, as systemd starts one (`sd_listen_fds(3)`): any program
    /// that serves on fd 3 on. It gets the sockets of [`Primary::activation_socket`] there,
    /// with `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID` (its own pid), and no channel:
    /// it is online and listening once it runs, and a graceful disconnect is `SIGTERM`.
    /// Under [`Scheduling::Shared`] every worker gets the same socket; under
    /// [`Scheduling::ReusePort`] and [`Scheduling::Steered`] a socket of its own in the
    /// port's group. The socket of a worker that dies stays in the group (steered around,
    /// under [`Scheduling::Steered`]) and the worker that replaces it (a respawn, a roll's
    /// successor) takes it with what queued there. Round-robin and the hand-off policies
    /// need workers that take handed connections: forking one under them fails with a
    /// settings error that says so.
    ///
    /// [`Primary::activation_socket`]: crate::Primary::activation_socket
    SocketActivated,
}

/// How long a handed-over connection may wait at a worker that does not take it before the
/// primary takes it back for another ([`Settings::take_back_after`]).
const DEFAULT_TAKE_BACK_AFTER: Duration = Duration::from_millis(50);

/// How long a socket-activated server may take to start ([`Settings::start_within`]).
const DEFAULT_START_WITHIN: Duration = Duration::from_secs(30);

/// How an upgrade of the primary goes ([`Primary::upgrade`](crate::Primary::upgrade)): the
/// program the new primary runs (default: this one, read again from disk), and how long it
/// may take to be ready (every one of its workers listening, wherever the old primary's
/// listeners were).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Upgrade {
    /// The new primary's program; `None`: `/proc/self/exe`'s path, as the file is now.
    pub exec: Option<PathBuf>,
    /// How long the new primary may take to be ready.
    pub ready_within: Duration,
}

impl Default for Upgrade {
    /// This program, 30 s to be ready.
    fn default() -> Self {
        Upgrade {
            exec: None,
            ready_within: Duration::from_secs(30),
        }
    }
}

impl Upgrade {
    /// The new primary's program.
    pub fn exec(mut self, path: impl Into<PathBuf>) -> Self {
        self.exec = Some(path.into());
        self
    }

    /// How long the new primary may take to be ready.
    pub fn ready_within(mut self, d: Duration) -> Self {
        self.ready_within = d;
        self
    }
}

/// Listeners whose connections start with HAProxy's PROXY protocol header, v1 or v2
/// ([`Settings::proxy_protocol`]): the TCP listeners on these ports, under round-robin
/// scheduling.
///
/// The primary reads each connection's header before it hands the connection over, and
/// refuses (closes) a connection whose header is malformed, longer than 4096 bytes, or not
/// complete within [`ProxyProtocol::within`] (default 3 s). The proxy speaks first, so such a
/// listener defers its accepts until the header begins to come (`TCP_DEFER_ACCEPT` for as
/// long as `within`, unless [`Settings::defer_accept`] sets it). The client address the header
/// carries is the one policies see ([`crate::policy::Sticky`] keys on it). A ringleader
/// worker's [`TcpListener::accept`](crate::TcpListener::accept) reads the header off and
/// returns that address, and [`Connection::proxied`](crate::Connection::proxied) gives
/// both; a Node worker gets the connection without the header.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use ringleader::{ProxyProtocol, Settings};
/// let settings = Settings::default()
///     .proxy_protocol(Some(ProxyProtocol::on_ports([8080]).within(Duration::from_secs(1))));
/// # let _ = settings;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyProtocol {
    pub(crate) ports: Vec<u16>,
    pub(crate) within: Duration,
}

impl ProxyProtocol {
    /// The TCP listeners on `ports` expect the header.
    pub fn on_ports(ports: impl IntoIterator<Item = u16>) -> ProxyProtocol {
        ProxyProtocol {
            ports: ports.into_iter().collect(),
            within: Duration::from_secs(3),
        }
    }

    /// How long a connection may take to send its whole header (default 3 s).
    pub fn within(mut self, d: Duration) -> ProxyProtocol {
        self.within = d;
        self
    }

    /// Whether a listener on `port` expects the header.
    pub(crate) fn covers(&self, port: u16) -> bool {
        self.ports.contains(&port)
    }
}

/// How a rolling restart goes ([`Primary::roll`](crate::Primary::roll)): `at_once` workers at
/// a time, each successor ready (listening where its predecessor did) within `ready_within`
/// or the roll stops, each predecessor gone within `stop_within` of being asked to
/// disconnect or killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Roll {
    /// Workers replaced at a time.
    pub at_once: usize,
    /// How long a successor may take to be ready.
    pub ready_within: Duration,
    /// How long a predecessor may take to finish its connections and exit.
    pub stop_within: Duration,
}

impl Default for Roll {
    /// One at a time, 30 s to be ready, 30 s to stop (gunicorn's graceful timeout).
    fn default() -> Self {
        Roll {
            at_once: 1,
            ready_within: Duration::from_secs(30),
            stop_within: Duration::from_secs(30),
        }
    }
}

impl Roll {
    /// Workers replaced at a time (at least one).
    pub fn at_once(mut self, n: usize) -> Self {
        self.at_once = n.max(1);
        self
    }

    /// How long a successor may take to be ready.
    pub fn ready_within(mut self, d: Duration) -> Self {
        self.ready_within = d;
        self
    }

    /// How long a predecessor may take to stop before it is killed.
    pub fn stop_within(mut self, d: Duration) -> Self {
        self.stop_within = d;
        self
    }
}

/// How the primary replaces workers that exit unasked ([`Settings::respawn`]).
///
/// It tells a worker that failed to boot from one that served and died:
///
/// - A worker **booted** once it was online (and, with [`Settings::ready_when_told`], said it
///   was ready) and listened wherever its predecessor did (the first of a line: anywhere),
///   with no listen refused; or once it ran `stable_after`. A socket-activated server, which
///   says nothing, counts as booted once it ran `stable_after`.
/// - A worker that **served and died** is always replaced: at once after a stable run (it ran
///   `stable_after`), else after a delay that starts at zero, then `first_delay`, doubling with
///   each such death up to `max_served_delay` (100 ms: under a storm of kills, a longer wait
///   keeps every worker away and clients wait for seconds). [`Event::Respawned`] says
///   `booted`.
/// - A worker that **failed to boot** (it exited, or died of its own signal such as `SIGSEGV`
///   or `SIGABRT`, before it booted) is replaced after a delay that starts at `first_delay`
///   and doubles up to `max_delay`. After `max_unstable` such failures within `window`, that
///   line is not replaced again, and [`Event::GaveUp`] says so.
/// - A worker killed from outside before it booted (`SIGKILL`, as the OOM killer sends,
///   `SIGTERM`, `SIGINT`, `SIGHUP`, `SIGQUIT`) is not its program's failure: it is replaced
///   as one that served is, and does not count toward giving up.
///
/// Each worker forked by the application starts a lineage of its own, counted apart: one
/// crashing worker does not stop the others' replacements. A worker that was asked to go
/// (`disconnect`, `kill`) is never replaced.
///
/// The rule is gunicorn's, which halts only when a worker fails to boot
/// (`WORKER_BOOT_ERROR`), with systemd's and PM2's numbers. systemd restarts after 100 ms and
/// stops a unit after 5 starts within 10 s, and PM2 stops after `max_restarts` exits within
/// `min_uptime`, whatever killed the process: a storm of kills (an OOM killer, a noisy
/// neighbour) ends the service there, and not here. PM2's back-off starts at 100 ms, grows to
/// 15 s, and resets once the process has run for 30 s. Here: 100 ms doubling to 5 s, stable
/// after 10 s of running, giving up after 5 boot failures within 30 s (at 100 ms, 200 ms,
/// 400 ms, 800 ms, 1.6 s, a worker that cannot start is given up on after about 3 s).
///
/// [`Event::Respawned`]: crate::Event::Respawned
/// [`Event::GaveUp`]: crate::Event::GaveUp
/// [`Settings::ready_when_told`]: crate::Settings::ready_when_told
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Respawn {
    /// The delay before replacing a worker that exited soon after it started.
    pub first_delay: Duration,
    /// The longest such delay.
    pub max_delay: Duration,
    /// The longest delay before replacing a worker that booted and died.
    pub max_served_delay: Duration,
    /// A worker that ran this long exited stably: it is replaced at once.
    pub stable_after: Duration,
    /// Boot failures within `window` after which a lineage is given up on.
    pub max_unstable: u32,
    /// See `max_unstable`.
    pub window: Duration,
}

impl Default for Respawn {
    fn default() -> Self {
        Respawn {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_served_delay: Duration::from_millis(100),
            stable_after: Duration::from_secs(10),
            max_unstable: 5,
            window: Duration::from_secs(30),
        }
    }
}

impl Respawn {
    /// The first delay (and the back-off's base).
    pub fn first_delay(mut self, delay: Duration) -> Self {
        self.first_delay = delay;
        self
    }

    /// The longest delay.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// The longest delay before replacing a worker that booted and died.
    pub fn max_served_delay(mut self, delay: Duration) -> Self {
        self.max_served_delay = delay;
        self
    }

    /// How long a worker must run for its exit to count as stable.
    pub fn stable_after(mut self, ran: Duration) -> Self {
        self.stable_after = ran;
        self
    }

    /// Give up after `exits` boot failures within `window`.
    pub fn give_up_after(mut self, exits: u32, window: Duration) -> Self {
        self.max_unstable = exits;
        self.window = window;
        self
    }
}

impl Settings {
    /// The program workers run (Node: `exec`). Default: this program (`/proc/self/exe`).
    pub fn exec(mut self, path: impl Into<PathBuf>) -> Self {
        self.exec = Some(path.into());
        self
    }

    /// Arguments after the program name (Node: `args`). Default: this program's own.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// The workers' working directory (Node: `cwd`). Default: the primary's.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// The workers' base environment, replacing the primary's (the `fork(env)` pairs are
    /// merged over it). Default: the primary's environment.
    pub fn env<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        self.env = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// Pipe the workers' stdin, stdout and stderr to the primary instead of sharing its own
    /// (Node: `silent`); read them with `WorkerHandle::take_stdout` and friends.
    pub fn silent(mut self, silent: bool) -> Self {
        self.silent = Some(silent);
        self
    }

    /// stdin, stdout and stderr one by one; overrides [`Settings::silent`] (Node: `stdio`).
    pub fn stdio(mut self, stdin: Stdio, stdout: Stdio, stderr: Stdio) -> Self {
        self.stdio = Some([stdin, stdout, stderr]);
        self
    }

    /// `setuid(2)` in the worker (Node: `uid`).
    pub fn uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    /// `setgid(2)` in the worker (Node: `gid`).
    pub fn gid(mut self, gid: u32) -> Self {
        self.gid = Some(gid);
        self
    }

    /// The scheduling policy. Read from `RINGLEADER_SCHED_POLICY` when the primary starts;
    /// frozen at the first fork.
    pub fn scheduling(mut self, scheduling: Scheduling) -> Self {
        self.scheduling = Some(scheduling);
        self
    }

    /// Which worker gets each handed-over connection under [`Scheduling::RoundRobin`]:
    /// [`RoundRobin`](crate::policy::RoundRobin) (Node's, the default),
    /// [`LeastConnections`](crate::policy::LeastConnections),
    /// [`PowerOfTwoChoices`](crate::policy::PowerOfTwoChoices),
    /// [`Weighted`](crate::policy::Weighted), or any [`Policy`](crate::policy::Policy). `RINGLEADER_SCHED_POLICY`
    /// (`rr`, `lc`, `p2c`, `weighted`) sets it when the primary starts; frozen at the first
    /// fork.
    pub fn policy(mut self, policy: SharedPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// How many workers the load board has room for (default 256, 512 bytes each). Workers
    /// beyond it run without a slot: policies see no counts for them and they cannot post
    /// hints. Frozen at the first fork.
    pub fn board_slots(mut self, slots: usize) -> Self {
        self.board_slots = Some(slots);
        self
    }

    /// The signal a worker gets when the primary's thread that spawned it dies
    /// (`PR_SET_PDEATHSIG`); `None` leaves only Node's rule (a ringleader worker exits when
    /// its channel closes). Default: `SIGKILL`, so no worker outlives a killed primary even in
    /// a busy loop.
    pub fn death_signal(mut self, signal: Option<Signal>) -> Self {
        self.death_signal = Some(signal);
        self
    }

    /// Take back a connection handed to a worker (round-robin and the hand-off policies)
    /// that has not taken it within `after`, and hand it to another; the stalled worker is
    /// then sent one connection at a time until it takes one again. A worker stopped,
    /// stuck, or too slow to read its queue then holds no client longer than about `after`,
    /// while the bound of 16 untaken connections per worker stays the cap. `None` turns it
    /// off. Default: 50 ms (a hand-off is normally taken within microseconds; a worker
    /// busy for longer than this with the connections it has is better skipped). Every
    /// connection travels in a message of its own, so a worker holds only those its
    /// application took; the rest are still in the channel, and come back. Under
    /// [`Scheduling::Steered`], a worker's accept queue that held connections and never got
    /// shorter for `after` is emptied the same way, and the worker steered around: for
    /// `after`, twice as long at each stall in a row (up to 800 ms), then it gets
    /// connections again.
    pub fn take_back_after(mut self, after: Option<Duration>) -> Self {
        self.take_back = Some(after.filter(|a| !a.is_zero()));
        self
    }

    /// TCP listeners made from now on hold each connection in the kernel until its client
    /// has sent something, or for about `wait` (`TCP_DEFER_ACCEPT`, nginx's `deferred`,
    /// HAProxy's `defer-accept`): for protocols whose client speaks first, such as HTTP. The
    /// primary then accepts, and a worker takes, only connections with a request to read, so
    /// a worker stopped or stuck holds no connection still waiting for its request, and a
    /// client that connects and sends nothing costs no worker anything. Never for a protocol
    /// whose server speaks first (SMTP, MySQL): its clients would wait `wait` for a greeting.
    /// Applies to round-robin, shared, reuseport and steered listeners (and to a socket
    /// passed by systemd, which is changed for everyone holding it). Default: `None`, off;
    /// whole seconds, at least one.
    pub fn defer_accept(mut self, wait: Option<Duration>) -> Self {
        self.defer_accept = Some(wait.filter(|w| !w.is_zero()));
        self
    }

    /// Listeners whose connections start with a PROXY protocol header, which the primary
    /// reads ([`ProxyProtocol`]); `None` (the default): none. Round-robin scheduling only:
    /// under the others the workers accept by themselves, and a listen on a port named here
    /// is refused with `EPROTONOSUPPORT`.
    pub fn proxy_protocol(mut self, proxy: Option<ProxyProtocol>) -> Self {
        self.proxy_protocol = Some(proxy);
        self
    }

    /// What the workers forked from now on speak on their channel: ringleader's frames (the
    /// default) or Node.js's protocol, for unmodified Node cluster applications
    /// ([`WorkerProtocol`]). Set [`Settings::exec`] and [`Settings::args`] to run them
    /// (`node`, `["app.js"]`).
    pub fn worker_protocol(mut self, protocol: WorkerProtocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Kill a worker (SIGKILL) that has taken no connection for `after` while connections
    /// waited at it past the take-back deadline (gunicorn's `timeout`, 30 s there): stuck in
    /// a loop or a deadlock, it would otherwise be sent a probe connection forever. Its
    /// connections went to the others already ([`Settings::take_back_after`]);
    /// [`Event::StalledKilled`](crate::Event::StalledKilled) reports it, and with
    /// [`Settings::respawn`] a new worker replaces it. Round-robin and the hand-off
    /// policies; and steered workers that take no handed connection (Node workers,
    /// socket-activated servers), when their socket's queue has held connections and never
    /// got shorter for `after`: what waited there goes to the other Node workers through the
    /// primary's relay, and a socket-activated server's replacement takes the socket with its
    /// queue. `None`
    /// turns it off. Default: off (a worker stopped on purpose, by a debugger say, is not
    /// killed).
    pub fn kill_stalled_after(mut self, after: Option<Duration>) -> Self {
        self.kill_stalled = Some(after.filter(|a| !a.is_zero()));
        self
    }

    /// How long a socket-activated server may take to start before
    /// [`Settings::kill_stalled_after`] counts it stalled: until it is first seen taking a
    /// connection from its socket, or for `within` after it was spawned, connections waiting
    /// at it are taken for its start-up, not for a stall. (A Node or ringleader worker starts
    /// when it listens: it has no socket before.) Default: 30 s (puma's
    /// `worker_boot_timeout` is 60 s, PM2's `listen_timeout` 3 s). Without it, a replacement
    /// slow to start (an interpreter on a loaded machine) would be killed as stalled on the
    /// queue it inherited, and its replacements after it.
    pub fn start_within(mut self, within: Duration) -> Self {
        self.start_within = Some(within);
        self
    }

    /// Replace a worker whose resident set grew past `bytes` (PM2's `max_memory_restart`),
    /// gracefully: a successor is forked, and once it is ready (listening wherever the
    /// worker did) the worker is disconnected and finishes what it holds, as in a roll of one
    /// worker. [`Event::MemoryExceeded`](crate::Event::MemoryExceeded) says so, then the
    /// roll's `RollStep` (and `RollFailed` if the successor fails; the worker then serves
    /// on, and is tried again). The primary reads each worker's resident set from
    /// `/proc/PID/statm` once a second (PM2: every 30 s); one worker is replaced at a time,
    /// and none while a roll is under way (which replaces it anyway). From the read that
    /// finds it over, a worker gets no new connections while another worker can take them
    /// (round-robin and the hand-off policies), so it stops growing while its successor
    /// starts. `None` turns it off. Default: off.
    pub fn max_memory(mut self, bytes: Option<u64>) -> Self {
        self.max_memory = Some(bytes.filter(|b| *b > 0));
        self
    }

    /// Pin each worker to one CPU (nginx's `worker_cpu_affinity auto`): the workers forked
    /// by the application take the CPUs the primary may use (`sched_getaffinity(2)`) in
    /// turn, the first worker the first CPU, and a replacement (a respawn, a roll's
    /// successor) its predecessor's. Set in the child before the exec, so every thread it
    /// starts inherits it. Fewer cache misses and migrations for a worker per core; on a
    /// shared machine, a busy CPU slows its worker down, so it is off by default.
    pub fn cpu_affinity(mut self, pin: bool) -> Self {
        self.cpu_affinity = Some(pin);
        self
    }

    /// Parses a memory size for [`Settings::max_memory`] as command lines write it: bytes,
    /// or a whole number with `K`, `M` or `G` (optionally followed by `B` or `iB`), powers of
    /// 1024 as PM2's `max_memory_restart` and systemd's `MemoryMax=` read them (the `bytesize`
    /// crate reads `M` as 10^6, hence no crate here).
    ///
    /// ```
    /// use ringleader::Settings;
    /// assert_eq!(Settings::parse_memory("150M"), Some(150 << 20));
    /// assert_eq!(Settings::parse_memory("2GiB"), Some(2 << 30));
    /// assert_eq!(Settings::parse_memory("4096"), Some(4096));
    /// assert_eq!(Settings::parse_memory("1.5G"), None);
    /// ```
    pub fn parse_memory(s: &str) -> Option<u64> {
        let s = s.trim();
        let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(digits);
        let number: u64 = number.parse().ok()?;
        let shift = match unit.to_ascii_uppercase().as_str() {
            "" | "B" => 0,
            "K" | "KB" | "KIB" => 10,
            "M" | "MB" | "MIB" => 20,
            "G" | "GB" | "GIB" => 30,
            _ => return None,
        };
        number.checked_mul(1 << shift)
    }

    /// Replace workers that exit unasked, backing off from crash loops ([`Respawn`]);
    /// `None` turns it off. Default: off, as in Node (the application decides, on `Exit`).
    pub fn respawn(mut self, respawn: Option<Respawn>) -> Self {
        self.respawn = Some(respawn);
        self
    }

    /// When a worker counts as ready to serve: `false` (the default), once it listens (a
    /// roll's successor: wherever its predecessor did); `true`, once it also says so with
    /// [`Worker::ready`](crate::Worker::ready), for applications that warm up (caches,
    /// connections to backends) after they listen. Readiness gates a roll's next step, an
    /// upgrade's hand-over, and systemd's `READY=1`. A worker told to say so that never does
    /// fails a roll or an upgrade at their `ready_within`.
    pub fn ready_when_told(mut self, told: bool) -> Self {
        self.ready_when_told = Some(told);
        self
    }

    /// The program set with [`Settings::exec`].
    pub fn get_exec(&self) -> Option<&std::path::Path> {
        self.exec.as_deref()
    }

    /// The arguments set with [`Settings::args`].
    pub fn get_args(&self) -> Option<&[OsString]> {
        self.args.as_deref()
    }

    /// Whether workers are silent.
    pub fn get_silent(&self) -> Option<bool> {
        self.silent
    }

    /// The distribution policy, if set.
    pub fn get_policy(&self) -> Option<&SharedPolicy> {
        self.policy.as_ref()
    }

    /// The scheduling policy, if set.
    pub fn get_scheduling(&self) -> Option<Scheduling> {
        self.scheduling
    }

    /// Fields set in `newer` override ours (Node: `{...cluster.settings, ...options}`).
    pub(crate) fn merge(&mut self, newer: Settings) {
        macro_rules! take {
            ($($f:ident),*) => { $( if newer.$f.is_some() { self.$f = newer.$f; } )* };
        }
        take!(
            exec,
            args,
            cwd,
            env,
            silent,
            stdio,
            uid,
            gid,
            scheduling,
            death_signal,
            policy,
            board_slots,
            respawn,
            take_back,
            ready_when_told,
            kill_stalled,
            start_within,
            protocol,
            max_memory,
            cpu_affinity,
            defer_accept,
            proxy_protocol
        );
    }

    /// How long a socket-activated server may take to start ([`Settings::start_within`]).
    pub(crate) fn start_deadline(&self) -> Duration {
        self.start_within.unwrap_or(DEFAULT_START_WITHIN)
    }

    /// `TCP_DEFER_ACCEPT`'s seconds in force ([`Settings::defer_accept`]); `0`: off.
    pub(crate) fn defer_accept_secs(&self) -> u32 {
        self.defer_accept
            .flatten()
            .map_or(0, |w| u32::try_from(w.as_secs().max(1)).unwrap_or(u32::MAX))
    }

    /// The take-back deadline in force.
    pub(crate) fn take_back_deadline(&self) -> Option<Duration> {
        self.take_back.unwrap_or(Some(DEFAULT_TAKE_BACK_AFTER))
    }

    pub(crate) fn stdio_or_default(&self) -> [Stdio; 3] {
        self.stdio.unwrap_or(if self.silent == Some(true) {
            [Stdio::Pipe; 3]
        } else {
            [Stdio::Inherit; 3]
        })
    }
}
