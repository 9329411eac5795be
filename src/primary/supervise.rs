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
}

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
        }
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

impl Primary {
    /// Runs the cluster until it ends, the way gunicorn and nginx run theirs; `on_event` sees
    /// every event first (to log it, say). Call it in the primary after settings that are
    /// yours (scheduling, policy…), before starting other threads (it watches signals).
    ///
    /// | signal | what it does |
    /// |---|---|
    /// | `INT`, `TERM` | stop gracefully: every worker finishes its connections, and is killed after `stop_within` |
    /// | `QUIT` | stop at once: every worker is killed |
    /// | `HUP` | replace every worker ([`Primary::roll`]) |
    /// | `USR2` | upgrade the primary in place ([`Primary::upgrade`]); this one ends once its workers are gone |
    /// | `TTIN`, `TTOU` | one worker more, one fewer (never fewer than one) |
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
        self.setup(Settings::default().respawn(Some(supervise.respawn)))?;
        for _ in 0..supervise.workers.max(1) {
            self.fork(&[])?;
        }
        let mut stop_by: Option<Instant> = None;
        let mut ending = Ending::Stopped;
        loop {
            let timeout = stop_by.map(|t| t.saturating_duration_since(Instant::now()));
            let Some(event) = self.next_event(timeout)? else {
                if stop_by.take().is_some() {
                    // Graceful time is up: whoever still holds connections is stopped.
                    for id in self.workers() {
                        let _ = self.worker(id).map(|w| w.kill(Some(Signal::KILL)));
                    }
                    continue;
                }
                return Ok(ending);
            };
            on_event(self, &event);
            match event {
                Event::Signal(Signal::HUP) => {
                    // A roll under way already: this one is refused, and that is fine.
                    let _ = self.roll(supervise.roll);
                }
                Event::Signal(Signal::USR2) => {
                    let _ = self.upgrade(supervise.upgrade.clone());
                }
                Event::UpgradeReady { .. } => {
                    ending = Ending::Upgraded;
                    stop_by = Some(Instant::now() + supervise.stop_within);
                }
                Event::Signal(Signal::TTIN) => {
                    self.fork(&[])?;
                }
                Event::Signal(Signal::TTOU) => {
                    let workers = self.workers();
                    if let (Some(newest), true) = (workers.last(), workers.len() > 1) {
                        if let Some(w) = self.worker(*newest) {
                            w.disconnect()?;
                        }
                    }
                }
                Event::Signal(Signal::QUIT) => {
                    for id in self.workers() {
                        let _ = self.worker(id).map(|w| w.kill(Some(Signal::KILL)));
                    }
                    ending = Ending::Quit;
                }
                Event::Signal(Signal::INT | Signal::TERM) if stop_by.is_none() => {
                    stop_by = Some(Instant::now() + supervise.stop_within);
                    self.disconnect_all()?;
                }
                Event::GaveUp { .. } if self.workers().is_empty() => {
                    return Ok(Ending::GaveUp);
                }
                Event::AllDisconnected if stop_by.is_some() || ending != Ending::Stopped => {
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
