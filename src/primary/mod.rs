//! The primary's side (Node: `cluster` in the primary).

mod core;
mod driver;
mod event;
mod handle;
mod health;
mod listeners;
mod loads;
mod metrics;
mod outside;
mod settings;
mod state;
mod supervise;

use std::cell::{RefCell, RefMut};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Once;
use std::time::Duration;

use ringleader_sys::epoll::Epoll;
use ringleader_sys::signal::Signal;
use ringleader_sys::uring::{Features, Ring};
use ringleader_sys::{AsFd, BorrowedFd};

use self::core::Core;
pub use self::driver::Backend;
use self::driver::Driver;
pub use self::event::{AddressType, Event, Listening};
pub use self::handle::WorkerHandle;
pub use self::health::Health;
pub use self::listeners::HandoffStats;
pub use self::loads::Load;
pub use self::metrics::{ClusterMetrics, Metrics, Phase, PrimaryMetrics, WorkerMetrics};
pub use self::settings::{
    ProxyProtocol, Respawn, Roll, Scheduling, Settings, Stdio, Upgrade, WorkerProtocol,
};
pub use self::state::WorkerState;
pub use self::supervise::{DEFAULT_DRAIN_DELAY, Ending, Supervise};
use crate::contract::{ENV_BACKEND, ENV_SCHED_POLICY, ENV_URING_KERNEL};
use crate::error::{Error, ErrorKind, Result};
use crate::ids::WorkerId;
use crate::policy::SharedPolicy;

/// The primary: forks workers and reports what they do (Node: `cluster` when
/// `cluster.isPrimary`).
///
/// A `Primary` lives on the thread that created it (it is not `Send`): workers get
/// `PR_SET_PDEATHSIG` tied to the thread that spawned them. Clones are not offered; handles
/// ([`WorkerHandle`], [`Events`]) share it and can be used inside an event loop:
///
/// ```no_run
/// # use ringleader::{Event, Primary};
/// let primary = Primary::new()?;
/// primary.fork(&[])?;
/// for event in primary.events() {
///     if let Event::Exit { .. } = event? {
///         primary.fork(&[])?; // respawn
///     }
/// }
/// # Ok::<(), ringleader::Error>(())
/// ```
///
/// Dropping the primary kills (`SIGKILL`) and reaps the workers still running; call
/// [`Primary::disconnect_all`] and wait for [`Event::AllDisconnected`] for a graceful end.
pub struct Primary {
    core: Rc<RefCell<Core>>,
    /// What a loop outside drives the primary by ([`Primary::as_fd`]).
    outside: outside::Outside,
}

impl std::fmt::Debug for Primary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let core = self.core.borrow();
        f.debug_struct("Primary")
            .field("backend", &core.driver.backend())
            .field("workers", &core.workers.keys().collect::<Vec<_>>())
            .finish()
    }
}

static FALLBACK_NOTICE: Once = Once::new();

impl Primary {
    /// Creates a primary with its event loop: io_uring when the kernel allows it, else epoll
    /// (said once on stderr). `RINGLEADER_BACKEND=epoll` forces epoll, `RINGLEADER_BACKEND=io_uring`
    /// insists on io_uring (an error where it is missing); `RINGLEADER_SCHED_POLICY`
    /// (`rr`, `none`, `reuseport`, or a hand-off policy: `lc`, `p2c`, `weighted`) sets the
    /// scheduling policy. [`role`](crate::role) calls this in the
    /// primary.
    ///
    /// # Errors
    /// [`ErrorKind::Settings`] for an unknown `RINGLEADER_SCHED_POLICY`; [`ErrorKind::Io`]
    /// when no event loop can be created.
    pub fn new() -> Result<Primary> {
        const OP: &str = "start the primary";
        let scheduling = match std::env::var(ENV_SCHED_POLICY) {
            Ok(v) => Scheduling::parse(&v).ok_or_else(|| {
                Error::new(ErrorKind::Settings, OP).detail(format!(
                    "{ENV_SCHED_POLICY}={v:?}: expected rr, none, reuseport, steer, lc, p2c, weighted, sticky or steer-sticky"
                ))
            })?,
            Err(_) => Scheduling::default(),
        };
        let features = match std::env::var(ENV_URING_KERNEL) {
            Ok(v) => v
                .split_once('.')
                .and_then(|(major, minor)| Some((major.parse().ok()?, minor.parse().ok()?)))
                .map(|(major, minor)| Features::of_kernel(major, minor))
                .ok_or_else(|| {
                    Error::new(ErrorKind::Settings, OP).detail(format!(
                        "{ENV_URING_KERNEL}={v:?}: expected a version like 5.15"
                    ))
                })?,
            Err(_) => Features::ALL,
        };
        let ring = || Ring::probe_within(256, features);
        let driver = match std::env::var(ENV_BACKEND).as_deref() {
            Ok("epoll") => Driver::Epoll(
                Epoll::new().map_err(|e| Error::io(OP, e))?,
                Vec::new(),
                Vec::new(),
            ),
            Ok("io_uring") => {
                Driver::Uring(Box::new(ring().map_err(|e| Error::io(OP, e))?), Vec::new())
            }
            Ok("") | Err(_) => match ring() {
                Ok(ring) => Driver::Uring(Box::new(ring), Vec::new()),
                Err(e) => {
                    FALLBACK_NOTICE.call_once(|| {
                        eprintln!(
                            "ringleader: io_uring unavailable ({e}); using the epoll backend"
                        );
                    });
                    Driver::Epoll(
                        Epoll::new().map_err(|e| Error::io(OP, e))?,
                        Vec::new(),
                        Vec::new(),
                    )
                }
            },
            Ok(other) => {
                return Err(Error::new(ErrorKind::Settings, OP).detail(format!(
                    "{ENV_BACKEND}={other:?}: expected io_uring or epoll"
                )));
            }
        };
        let outside = outside::Outside::new(&driver).map_err(|e| Error::io(OP, e))?;
        Ok(Primary {
            core: Rc::new(RefCell::new({
                let mut core = Core::new(driver, scheduling);
                core.env_policy = std::env::var(ENV_SCHED_POLICY)
                    .ok()
                    .and_then(|v| SharedPolicy::named(&v));
                // Sockets from socket activation, or from the old primary of an upgrade,
                // serve the listens bound where they are.
                let activated = ringleader_sys::systemd::listen_fds();
                core.listeners
                    .adopt(activated.into_iter().map(|(fd, _)| fd).collect());
                if let Some((channel, sockets)) = self::core::from_old_primary() {
                    core.listeners.adopt_upgrade(sockets);
                    core.upgrade_from = Some(channel);
                }
                core
            })),
            outside,
        })
    }

    /// Applies settings for the workers forked from now on (Node: `cluster.setupPrimary`).
    /// Settings accumulate: fields left unset keep their value. Queues [`Event::Setup`].
    ///
    /// # Errors
    /// [`ErrorKind::Settings`] when changing the scheduling policy after the first fork.
    pub fn setup(&self, settings: Settings) -> Result<()> {
        acting(&self.core).setup(settings)
    }

    /// Opens a listening TCP socket at `addr` for socket-activated workers
    /// ([`WorkerProtocol::SocketActivated`]) under the name `name` (their `LISTEN_FDNAMES`),
    /// and returns where it is bound (port 0: the port the kernel chose). Workers forked from
    /// now on get every such socket, in the order they were opened, at fd 3 on. The socket
    /// stays open while the primary lives, workers or not; an upgrade's new primary, opening
    /// the same address, takes it over with its queue.
    ///
    /// Set the scheduling first: it is fixed from here on.
    ///
    /// # Errors
    /// [`ErrorKind::Settings`] under round-robin (a socket-activated server takes no handed
    /// connection), for a name that is empty, longer than 255 bytes, holds `:` or is taken;
    /// the bind's error otherwise (its errno in [`Error::raw_os_error`]).
    ///
    /// # Examples
    /// ```no_run
    /// use ringleader::{Primary, Scheduling, Settings, WorkerProtocol};
    /// let primary = Primary::new()?;
    /// primary.setup(
    ///     Settings::default()
    ///         .exec("python3")
    ///         .args(["server.py"])
    ///         .scheduling(Scheduling::Steered)
    ///         .worker_protocol(WorkerProtocol::SocketActivated),
    /// )?;
    /// let local = primary.activation_socket("web", "127.0.0.1:8000".parse().unwrap())?;
    /// primary.fork(&[])?;
    /// primary.fork(&[])?;
    /// # let _ = local;
    /// # Ok::<(), ringleader::Error>(())
    /// ```
    ///
    /// [`WorkerProtocol::SocketActivated`]: crate::WorkerProtocol::SocketActivated
    pub fn activation_socket(
        &self,
        name: &str,
        addr: std::net::SocketAddr,
    ) -> Result<std::net::SocketAddr> {
        acting(&self.core).open_activated(name, addr)
    }

    /// The settings in force (Node: `cluster.settings`).
    pub fn settings(&self) -> Settings {
        self.core.borrow().settings.clone()
    }

    /// The scheduling policy (Node: `cluster.schedulingPolicy`).
    pub fn scheduling(&self) -> Scheduling {
        self.core.borrow().scheduling
    }

    /// Sets how long the loop checks for events without blocking before it sleeps (default:
    /// `RINGLEADER_BUSY_POLL_US`, 50 µs); zero turns busy polling off.
    pub fn set_busy_poll(&self, window: Duration) {
        acting(&self.core).busy_poll = window;
    }

    /// Sets the interval between accept rounds on round-robin listeners (default:
    /// `RINGLEADER_ACCEPT_ROUNDS_US`, 200 µs); zero accepts each connection as it comes.
    ///
    /// In rounds, a listener that just took connections stops accepting for this long and
    /// then takes, in one go, every connection that arrived meanwhile; each worker gets its
    /// share in one system call (a message per connection). The first connection after a quiet spell is taken at once, so
    /// only connections that arrive within the interval after others wait, by at most the
    /// interval. Under load this replaces a wake-up of the primary per connection by one per
    /// round (README, "Latency and CPU"; BENCHMARKS.md). Applies at once: a listener
    /// resting now starts its next round within the new interval (zero: now). On io_uring it
    /// needs Linux 6.10 (`IORING_ACCEPT_DONTWAIT`); older kernels accept each connection as
    /// it comes. There, a Node worker's channel is read once a round too while connections
    /// it was sent await its answer ([`WorkerProtocol::Node`](crate::WorkerProtocol::Node)).
    pub fn set_accept_rounds(&self, interval: Duration) {
        let mut core = acting(&self.core);
        core.with_listeners(|l, cx| l.set_accept_rounds(cx, interval));
    }

    /// The interval round-robin listeners accept in, or `None` when they accept each
    /// connection as it comes: rounds are off, or this kernel cannot (io_uring before 6.10).
    pub fn accept_rounds(&self) -> Option<Duration> {
        let core = self.core.borrow();
        core.listeners.rounds(&core.driver)
    }

    /// Writes out the messages collected from bursts of `send` calls now, without waiting for
    /// the next loop turn. (Every turn of the loop does this too; a lone message is written at
    /// once anyway.)
    pub fn flush(&self) {
        acting(&self.core).flush_all();
    }

    /// Counters of the round-robin connection hand-off so far.
    pub fn handoff_stats(&self) -> HandoffStats {
        self.core.borrow().listeners.stats
    }

    /// Which event loop runs.
    pub fn backend(&self) -> Backend {
        self.core.borrow().driver.backend()
    }

    /// Spawns a worker (Node: `cluster.fork(env)`): this program again, or
    /// [`Settings::exec`], with `env` merged over the settings' environment. The worker gets
    /// the next id (1, 2, 3…). Queues [`Event::Setup`] and [`Event::Fork`]; the first fork
    /// freezes the scheduling policy.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when spawning fails, e.g. `ENOENT` for a missing program.
    pub fn fork(&self, env: &[(&str, &str)]) -> Result<WorkerHandle> {
        let (id, pid) = acting(&self.core).fork(env)?;
        Ok(WorkerHandle {
            core: self.core.clone(),
            id,
            pid,
        })
    }

    /// The ids of the live workers (Node: `Object.keys(cluster.workers)`), in fork order. A
    /// worker leaves this list at once when the primary disconnects it, otherwise before the
    /// later of its `Disconnect` and `Exit` events is delivered.
    pub fn workers(&self) -> Vec<WorkerId> {
        self.core
            .borrow()
            .workers
            .iter()
            .filter(|(_, s)| s.listed)
            .map(|(id, _)| *id)
            .collect()
    }

    /// A handle to a worker that has not yet been fully reported gone (Node:
    /// `cluster.workers[id]`, also for one already removed from that map by a disconnect).
    pub fn worker(&self, id: WorkerId) -> Option<WorkerHandle> {
        let pid = self.core.borrow().workers.get(&id)?.pid;
        Some(WorkerHandle {
            core: self.core.clone(),
            id,
            pid,
        })
    }

    /// Disconnects every worker (Node: `cluster.disconnect()`); [`Event::AllDisconnected`]
    /// follows once each has disconnected and exited (at once when there are none).
    ///
    /// # Errors
    /// Only what a single worker's disconnect returns.
    pub fn disconnect_all(&self) -> Result<()> {
        acting(&self.core).disconnect_all()
    }

    /// Replaces every worker now listed, [`Roll::at_once`] at a time, and reports each step
    /// as events (`RollStarted`, `RollStep`, `RollDone`, or `RollFailed`): PM2's reload,
    /// gunicorn's HUP, readiness-gated. Each successor is forked with its predecessor's `fork`
    /// environment and the settings in force now (set new ones first to roll out a new
    /// program or arguments). Once it listens wherever its predecessor did, the predecessor
    /// is disconnected: the connections queued for it go to the others, it finishes those it
    /// holds, and it is killed if it has not exited within [`Roll::stop_within`]. A successor
    /// that exits or is not ready within [`Roll::ready_within`] is killed and the roll stops;
    /// the workers not yet replaced keep serving. The roll runs as the loop runs.
    ///
    /// # Errors
    /// [`ErrorKind::Settings`] while a roll is under way: one at a time, a second request is
    /// refused rather than queued.
    pub fn roll(&self, roll: Roll) -> Result<()> {
        acting(&self.core).roll(roll)
    }

    /// Upgrades the primary in place (nginx's USR2, HAProxy's `-x`): starts a new primary
    /// from [`Upgrade::exec`] (default: this program, read again from disk) with the same
    /// arguments and environment, and hands it every socket it holds: each listener's
    /// (round-robin, shared, UDP, Unix, and the socket that holds a reuseport or steered
    /// port), every worker's own reuseport or steered socket in its group's order, and every
    /// socket of socket activation. The new primary's listens take them by where they are
    /// bound; its workers take the per-worker sockets one each, a steered group keeping its
    /// order. Once every one of its workers listens, wherever this primary's listeners were,
    /// it says so (`UpgradeReady`): this primary stops accepting and steering, lets its
    /// workers take what it accepted, and disconnects them (`AllDisconnected` follows: exit
    /// then); the queues of the sockets stay with the new generation. A new primary that
    /// exits or is not ready within [`Upgrade::ready_within`] is killed (`UpgradeFailed`),
    /// and this one keeps serving. Under systemd, `MAINPID=` names the new primary (the unit
    /// needs `NotifyAccess=all` for the new primary's own notifications).
    ///
    /// A new primary that runs fewer reuseport workers than this one leaves the sockets of
    /// the others unused: what waits in their queues when the old workers leave is reset, as
    /// when a reuseport worker exits (steered groups have the primary empty such queues).
    ///
    /// # Errors
    /// [`ErrorKind::Settings`] while an upgrade is under way; [`ErrorKind::Io`] when the new
    /// primary cannot be started.
    pub fn upgrade(&self, upgrade: Upgrade) -> Result<()> {
        acting(&self.core).upgrade(upgrade)
    }

    /// Reports `signals` as [`Event::Signal`] (through `signalfd(2)`) instead of their default
    /// action. Call it before starting other threads: a signal only reaches the signalfd while
    /// blocked in every thread. Workers start with a clean signal mask.
    ///
    /// # Errors
    /// [`ErrorKind::Settings`] if called twice, or when another thread already runs without
    /// these signals blocked (started before this call); [`ErrorKind::Io`] from `signalfd(2)`.
    pub fn watch_signals(&self, signals: &[Signal]) -> Result<()> {
        acting(&self.core).watch_signals(signals)
    }

    /// A blocking iterator of events (Node: `cluster.on(...)`). It ends when nothing could
    /// produce another event: no worker is left and no signal is watched.
    pub fn events(&self) -> Events {
        Events {
            core: self.core.clone(),
        }
    }

    /// The next event, waiting at most `timeout` (`None`: as long as it takes). `Ok(None)` when
    /// the time ran out, or when nothing could produce another event. Like the iterator, it
    /// applies each event's bookkeeping only as the event is handed out.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when the event loop itself fails.
    pub fn next_event(&self, timeout: Option<Duration>) -> Result<Option<Event>> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        self.core.borrow_mut().next_event(deadline)
    }

    /// Runs the loop once, waiting at most `timeout` (`None`: until something happens), and
    /// appends the events to `out`, with the bookkeeping of all of them applied (use
    /// [`Primary::next_event`] to see the state between two events). Returns how many were
    /// added.
    ///
    /// For a loop outside (epoll, mio, `polling`, tokio's `AsyncFd`): watch
    /// [`Primary::as_fd`] for readability, level-triggered, and call this with a zero
    /// timeout whenever it is readable. The fd turns readable both when the primary has
    /// something to handle and when timed work comes due, so nothing else is needed; a loop
    /// that would rather wait with a timeout of its own can ask [`Primary::next_timeout`].
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when the event loop itself fails, or when the fd cannot show
    /// io_uring's completions (said once).
    pub fn poll(&self, out: &mut Vec<Event>, timeout: Option<Duration>) -> Result<usize> {
        const OP: &str = "drive the primary from an outside loop";
        let mut core = self.core.borrow_mut();
        if let Some(e) = self.outside.take_error() {
            return Err(Error::io(OP, e));
        }
        self.outside.before();
        let before = out.len();
        core.turn(timeout)?;
        while let Some(event) = core.deliver() {
            out.push(event);
        }
        if self.outside.watched() {
            let due = core.hand_back()?;
            self.outside.after(due).map_err(|e| Error::io(OP, e))?;
        }
        Ok(out.len() - before)
    }

    /// A snapshot of the workers (state, pid, uptime, restarts, connections handed, taken,
    /// finished and queued, load) and of the cluster's counters (accepted, handed over,
    /// taken back, closed unserved, accept errors, exits, respawns, rolls and upgrades done
    /// and failed). [`Metrics::prometheus`] writes it in Prometheus's text format.
    ///
    /// # Examples
    /// ```no_run
    /// # fn main() -> Result<(), ringleader::Error> {
    /// let primary = ringleader::Primary::new()?;
    /// let metrics = primary.metrics();
    /// println!("{} workers, {} connections accepted", metrics.workers.len(), metrics.cluster.accepted);
    /// print!("{}", metrics.prometheus());
    /// # Ok(()) }
    /// ```
    pub fn metrics(&self) -> Metrics {
        self.core.borrow().metrics()
    }

    /// Serves `GET /metrics` (Prometheus's text format) and `GET /status` (the same as JSON)
    /// on `addr`, from the primary's own loop, as it runs; returns the address bound (port 0
    /// picks one). Every answer closes its connection. Bounded so that no client can stall
    /// the hand-offs: sockets are non-blocking, a request may take 8 KiB and 5 s, and at 32
    /// connections at once a new one replaces the one silent longest. Bind it to loopback or a
    /// private address: it has no authentication.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when `addr` cannot be bound; [`ErrorKind::Settings`] when it is
    /// served already.
    pub fn serve_admin(&self, addr: impl std::net::ToSocketAddrs) -> Result<std::net::SocketAddr> {
        let addr = addr
            .to_socket_addrs()
            .map_err(|e| Error::io("serve the admin endpoint", e))?
            .next()
            .ok_or_else(|| {
                Error::new(ErrorKind::Io, "serve the admin endpoint").detail("no address")
            })?;
        acting(&self.core).serve_admin(addr)
    }

    /// Answers HAProxy's `agent-check` on `addr` (its configuration manual, section 5.2),
    /// from the primary's own loop: each connection gets one line and is closed. The line
    /// is [`Health::agent_line`]: `up ready N%` (N: listening workers over the host's
    /// full count, [`Primary::set_wanted_workers`]), `drain` during a lame-duck
    /// ([`Primary::set_draining`]), `down#no worker listens` when nothing serves. Returns
    /// the address bound. Bind it where only the balancer reaches: it has no
    /// authentication.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when `addr` cannot be bound; [`ErrorKind::Settings`] when it is
    /// served already.
    pub fn serve_agent(&self, addr: impl std::net::ToSocketAddrs) -> Result<std::net::SocketAddr> {
        const OP: &str = "serve the agent";
        let addr = addr
            .to_socket_addrs()
            .map_err(|e| Error::io(OP, e))?
            .next()
            .ok_or_else(|| Error::new(ErrorKind::Io, OP).detail("no address"))?;
        acting(&self.core).serve_agent(addr)
    }

    /// How ready the host is for traffic: what `GET /readyz`, the agent and `/status` say.
    pub fn health(&self) -> Health {
        self.core.borrow().health()
    }

    /// Starts or ends a lame-duck: while draining, the host says it is not ready (`/readyz`
    /// answers 503, the agent `drain`) and serves on as before, so that a load balancer
    /// moves its traffic away before workers go. [`Primary::supervise`] drains this way
    /// before every stop, roll, upgrade and retirement ([`Supervise::drain_delay`]).
    pub fn set_draining(&self, draining: bool) {
        acting(&self.core).readiness.draining = draining;
    }

    /// How many listening workers make the host ready. The first value is also the host's
    /// full capacity: the agent's weight is listening workers over it, at most 100 %.
    /// Without it, every live worker must listen. [`Primary::supervise`] sets it to its
    /// worker count, and follows `TTIN` and `TTOU`.
    pub fn set_wanted_workers(&self, workers: usize) {
        acting(&self.core).readiness.want(workers);
    }

    /// How long a loop outside may wait before it must call [`Primary::poll`] again even if
    /// [`Primary::as_fd`] stays unreadable (`Some(ZERO)`: now; `None`: only when it turns
    /// readable). The fd's own timer makes this optional; it suits loops that take a timeout
    /// rather than a timer. It also submits what the last poll queued.
    pub fn next_timeout(&self) -> Option<Duration> {
        match self.core.borrow_mut().hand_back() {
            Ok(due) => due.map(|at| at.saturating_duration_since(std::time::Instant::now())),
            // The next poll reports it.
            Err(_) => Some(Duration::ZERO),
        }
    }
}

impl AsFd for Primary {
    /// An epoll fd, readable whenever [`Primary::poll`] has something to do: the event
    /// loop's readiness (io_uring's completions included, through an eventfd registered on
    /// the ring at the first call) and a timer for work that comes due by itself (accept
    /// rounds, steer and stall checks, respawn back-offs, rolls, upgrades). Watch it
    /// level-triggered.
    fn as_fd(&self) -> BorrowedFd<'_> {
        // Asked for while the primary is busy (from within its own call): the bell is rung
        // from the next call on.
        match self.core.try_borrow_mut() {
            Ok(mut core) => {
                let fd = self.outside.fd(Some(&core.driver));
                core.outside_bell = Some(self.outside.bell());
                fd
            }
            Err(_) => self.outside.fd(None),
        }
    }
}

impl AsRawFd for Primary {
    /// [`Primary::as_fd`]'s number, for APIs that take one (tokio's `AsyncFd`, mio's
    /// `SourceFd`).
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// The core, borrowed for a call from the application: when it returns, a loop outside
/// ([`Primary::as_fd`]) hears of any work the call queued (a fork's watches, a message to
/// send), which only the next poll submits.
pub(super) struct Acting<'a>(RefMut<'a, Core>);

pub(super) fn acting(core: &RefCell<Core>) -> Acting<'_> {
    Acting(core.borrow_mut())
}

impl std::ops::Deref for Acting<'_> {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.0
    }
}

impl std::ops::DerefMut for Acting<'_> {
    fn deref_mut(&mut self) -> &mut Core {
        &mut self.0
    }
}

impl Drop for Acting<'_> {
    fn drop(&mut self) {
        self.0.nudge_outside();
    }
}

/// The blocking event iterator of [`Primary::events`].
pub struct Events {
    core: Rc<RefCell<Core>>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}

impl Iterator for Events {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        self.core.borrow_mut().next_event(None).transpose()
    }
}
