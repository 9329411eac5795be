//! A standard supervisor an application adopts in one call ([`Primary::supervise`]): its
//! workers forked and replaced with a back-off, and gunicorn's and nginx's signal
//! conventions.

use std::time::{Duration, Instant};

use ringleader_sys::signal::Signal;

use super::Primary;
use super::event::Event;
use super::settings::{Respawn, Roll, Settings, Upgrade};
use crate::error::Result;

/// What [`Primary::supervise`] runs: `workers` workers (forked with no `fork` environment),
/// replaced per [`Respawn`] when they exit unasked, rolled per [`Roll`] on `SIGHUP`, the
/// primary upgraded per [`Upgrade`] on `SIGUSR2`, and stopped gracefully within
/// `stop_within` on `SIGINT` and `SIGTERM`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Supervise {
    /// Workers to keep.
    pub workers: usize,
    /// How long workers may take to finish their connections when stopping gracefully.
    pub stop_within: Duration,
    /// How workers that exit unasked are replaced.
    pub respawn: Respawn,
    /// How `SIGHUP` replaces the workers.
    pub roll: Roll,
    /// How `SIGUSR2` upgrades the primary.
    pub upgrade: Upgrade,
    /// How long a lame-duck lasts before a stop, a roll, an upgrade or a retirement: the
    /// host says it is not ready ([`Primary::set_draining`]) and serves on, so that a load
    /// balancer moves away first. `None`: [`DEFAULT_DRAIN_DELAY`] when the primary serves
    /// readiness (the admin endpoint or the agent), zero otherwise.
    pub drain_delay: Option<Duration>,
    /// Replace a worker whose resident set grows past this many bytes, gracefully
    /// ([`Settings::max_memory`]). `None`: whatever the settings say (off by default).
    pub max_memory: Option<u64>,
    /// Pin each worker to a CPU ([`Settings::cpu_affinity`]).
    pub cpu_affinity: bool,
}

/// The lame-duck's default length when readiness is served: HAProxy's agent checked every
/// second (the README's configuration) sees it within a check or two, and Kubernetes has
/// removed the endpoint everywhere.
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(5);

impl Supervise {
    /// `workers` workers; 30 s to stop (gunicorn's graceful timeout) and the defaults of
    /// [`Respawn`], [`Roll`] and [`Upgrade`].
    pub fn new(workers: usize) -> Supervise {
        Supervise {
            workers,
            stop_within: Duration::from_secs(30),
            respawn: Respawn::default(),
            roll: Roll::default(),
            upgrade: Upgrade::default(),
            drain_delay: None,
            max_memory: None,
            cpu_affinity: false,
        }
    }

    /// Pin each worker to a CPU ([`Settings::cpu_affinity`]).
    pub fn cpu_affinity(mut self, pin: bool) -> Self {
        self.cpu_affinity = pin;
        self
    }

    /// Replace a worker whose resident set grows past `bytes`, gracefully
    /// ([`Settings::max_memory`]).
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.max_memory = Some(bytes);
        self
    }

    /// How long a lame-duck lasts ([`Supervise::drain_delay`]); zero turns it off.
    pub fn drain_delay(mut self, d: Duration) -> Self {
        self.drain_delay = Some(d);
        self
    }

    /// How long a graceful stop may take before the workers left are killed.
    pub fn stop_within(mut self, d: Duration) -> Self {
        self.stop_within = d;
        self
    }

    /// How workers that exit unasked are replaced.
    pub fn respawn(mut self, respawn: Respawn) -> Self {
        self.respawn = respawn;
        self
    }

    /// How `SIGHUP` rolls the workers.
    pub fn roll(mut self, roll: Roll) -> Self {
        self.roll = roll;
        self
    }

    /// How `SIGUSR2` upgrades the primary.
    pub fn upgrade(mut self, upgrade: Upgrade) -> Self {
        self.upgrade = upgrade;
        self
    }
}

/// How a supervised cluster ended ([`Primary::supervise`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ending {
    /// `SIGINT` or `SIGTERM`: every worker finished or was killed at the deadline.
    Stopped,
    /// `SIGQUIT`: every worker was killed at once.
    Quit,
    /// A new primary took over (`SIGUSR2`), and this one's workers are gone.
    Upgraded,
    /// Every worker kept exiting soon after it started and none is left.
    GaveUp,
}

impl Ending {
    /// The status the primary's process should exit with: 1 after giving up on a crash
    /// loop (so that a service manager sees the failure), 0 otherwise.
    pub fn exit_code(self) -> i32 {
        i32::from(self == Ending::GaveUp)
    }
}

/// The signals a supervisor watches.
const SIGNALS: [Signal; 7] = [
    Signal::INT,
    Signal::TERM,
    Signal::QUIT,
    Signal::HUP,
    Signal::USR2,
    Signal::TTIN,
    Signal::TTOU,
];

/// What a lame-duck waits to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    Stop,
    Roll,
    Upgrade,
    Retire,
}

/// What runs after a lame-duck, until the host is ready again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Underway {
    Roll,
    Upgrade,
    /// Until this worker is gone.
    Retire(crate::ids::WorkerId),
}

impl Primary {
    /// Runs the cluster until it ends, the way gunicorn and nginx run theirs; `on_event` sees
    /// every event first (to log it, say). Call it in the primary after settings that are
    /// yours (scheduling, policy…), before starting other threads (it watches signals).
    ///
    /// | signal | what it does |
    /// |---|---|
    /// | `INT`, `TERM` | stop gracefully: every worker finishes its connections, and is killed after `stop_within`; a second one skips the lame-duck |
    /// | `QUIT` | stop at once: every worker is killed |
    /// | `HUP` | replace every worker ([`Primary::roll`]) |
    /// | `USR2` | upgrade the primary in place ([`Primary::upgrade`]); this one ends once its workers are gone |
    /// | `TTIN`, `TTOU` | one worker more, one fewer (never fewer than one) |
    ///
    /// Behind a load balancer, a stop, a roll, an upgrade and a retirement (`TTOU`) begin
    /// with a lame-duck of [`Supervise::drain_delay`]: the host says it is not ready
    /// (`/readyz` answers 503, the agent `drain`; [`Event::Draining`] is shown to
    /// `on_event`) while it serves on, and only then do workers go; after a roll, an
    /// upgrade that failed, or a retirement, it is ready again. The host's wanted workers
    /// ([`Primary::set_wanted_workers`]) follow `TTIN` and `TTOU`.
    ///
    /// Workers that exit unasked are replaced ([`Settings::respawn`]); when every worker
    /// kept dying at start and none is left, it ends with [`Ending::GaveUp`].
    ///
    /// # Errors
    /// What [`Primary::watch_signals`], [`Primary::fork`] and the event loop return.
    pub fn supervise(
        &self,
        supervise: Supervise,
        mut on_event: impl FnMut(&Primary, &Event),
    ) -> Result<Ending> {
        self.watch_signals(&SIGNALS)?;
        let mut settings = Settings::default().respawn(Some(supervise.respawn));
        if let Some(bytes) = supervise.max_memory {
            settings = settings.max_memory(Some(bytes));
        }
        if supervise.cpu_affinity {
            settings = settings.cpu_affinity(true);
        }
        self.setup(settings)?;
        let mut wanted = supervise.workers.max(1);
        self.set_wanted_workers(wanted);
        let drain_delay = supervise.drain_delay.unwrap_or_else(|| {
            if self.core.borrow().admin.is_some() {
                DEFAULT_DRAIN_DELAY
            } else {
                Duration::ZERO
            }
        });
        for _ in 0..wanted {
            self.fork(&[])?;
        }
        // A stop (or an upgrade's retirement) under way, and its deadline until the kill.
        let mut stopping = false;
        let mut stop_by: Option<Instant> = None;
        let mut ending = Ending::Stopped;
        // The lame-duck under way: when it ends, and what follows.
        let mut lame_duck: Option<(Instant, Then)> = None;
        // The roll, upgrade or retirement under way after its lame-duck: the host is ready
        // again once it ends (a retired worker: once it is gone).
        let mut underway: Option<Underway> = None;
        loop {
            let due = [stop_by, lame_duck.map(|(at, _)| at)]
                .into_iter()
                .flatten()
                .min();
            let timeout = due.map(|t| t.saturating_duration_since(Instant::now()));
            let next = self.next_event(timeout)?;
            if let Some((at, then)) = lame_duck {
                if at <= Instant::now() {
                    lame_duck = None;
                    match then {
                        Then::Stop => {
                            stopping = true;
                            stop_by = Some(Instant::now() + supervise.stop_within);
                            self.disconnect_all()?;
                        }
                        Then::Roll => match self.roll(supervise.roll) {
                            Ok(()) => underway = Some(Underway::Roll),
                            Err(_) => self.set_draining(false),
                        },
                        Then::Upgrade => match self.upgrade(supervise.upgrade.clone()) {
                            Ok(()) => underway = Some(Underway::Upgrade),
                            Err(_) => self.set_draining(false),
                        },
                        Then::Retire => {
                            let workers = self.workers();
                            let newest = workers.last().copied().filter(|_| workers.len() > 1);
                            match newest.and_then(|id| self.worker(id)) {
                                Some(w) => {
                                    underway = Some(Underway::Retire(w.id()));
                                    wanted = (wanted - 1).max(1);
                                    self.set_wanted_workers(wanted);
                                    w.disconnect()?;
                                }
                                None => self.set_draining(false),
                            }
                        }
                    }
                }
            }
            let Some(event) = next else {
                if stop_by.is_some_and(|t| t <= Instant::now()) {
                    stop_by = None;
                    // Graceful time is up: whoever still holds connections is stopped, the
                    // disconnected (no longer in `workers()`) included.
                    self.core.borrow_mut().kill_every_process(Signal::KILL);
                    continue;
                }
                if let Some(at) = due {
                    // Nothing else can happen before then (no worker is left).
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    continue;
                }
                return Ok(ending);
            };
            on_event(self, &event);
            let quiet =
                lame_duck.is_none() && underway.is_none() && !stopping && ending == Ending::Stopped;
            let then = match event {
                Event::Signal(Signal::HUP) if quiet => Some(Then::Roll),
                Event::Signal(Signal::USR2) if quiet => Some(Then::Upgrade),
                Event::Signal(Signal::TTOU) if quiet && self.workers().len() > 1 => {
                    Some(Then::Retire)
                }
                Event::Signal(Signal::INT | Signal::TERM) if !stopping => {
                    if lame_duck.is_some_and(|(_, then)| then == Then::Stop) {
                        // Asked again: no more waiting for the balancer.
                        lame_duck = Some((Instant::now(), Then::Stop));
                        continue;
                    }
                    Some(Then::Stop)
                }
                _ => None,
            };
            if let Some(then) = then {
                self.set_draining(true);
                if !drain_delay.is_zero() {
                    on_event(self, &Event::Draining { delay: drain_delay });
                }
                // A stop overrides whatever waited; it runs at the next turn.
                lame_duck = Some((Instant::now() + drain_delay, then));
                continue;
            }
            let ended = match event {
                Event::RollDone { .. } | Event::RollFailed { .. } => {
                    underway == Some(Underway::Roll)
                }
                Event::UpgradeFailed { .. } => underway == Some(Underway::Upgrade),
                Event::Exit { worker, .. } => underway == Some(Underway::Retire(worker)),
                _ => false,
            };
            if ended {
                underway = None;
                if lame_duck.is_none() && !stopping {
                    self.set_draining(false);
                }
            }
            match event {
                Event::UpgradeReady { .. } => {
                    ending = Ending::Upgraded;
                    stopping = true;
                    stop_by = Some(Instant::now() + supervise.stop_within);
                }
                Event::Signal(Signal::TTIN) => {
                    wanted += 1;
                    self.set_wanted_workers(wanted);
                    self.fork(&[])?;
                }
                Event::Signal(Signal::QUIT) => {
                    self.core.borrow_mut().kill_every_process(Signal::KILL);
                    ending = Ending::Quit;
                }
                Event::GaveUp { .. } if self.workers().is_empty() => {
                    return Ok(Ending::GaveUp);
                }
                Event::AllDisconnected if stopping => {
                    return Ok(ending);
                }
                _ => {}
            }
            if ending == Ending::Quit && self.workers().is_empty() {
                return Ok(Ending::Quit);
            }
        }
    }
}
