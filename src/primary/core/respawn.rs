//! Replacing workers that exit unasked ([`Respawn`]): a worker that booted and died, or was
//! killed from outside, is always replaced (at once after a stable run, else after a short
//! growing delay); one that failed to boot is replaced after a longer growing delay, and not at all once its line
//! failed to boot too often within a window (a crash loop), which an event reports.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use ringleader_sys::pidfd::ExitStatus;
use ringleader_sys::signal::Signal;

use super::Core;
use crate::ids::WorkerId;
use crate::ipc::listen::Key;
use crate::primary::event::Event;
use crate::primary::settings::Respawn;

/// The primary's replacements: each lineage's recent boot failures and delays, and the
/// forks waiting for their time.
#[derive(Debug, Default)]
pub(crate) struct Respawns {
    /// By lineage (the id of its first worker).
    lineages: BTreeMap<WorkerId, Lineage>,
    /// Replacements to fork, in the order they were decided.
    due: Vec<Due>,
}

#[derive(Debug, Default)]
struct Lineage {
    /// When its recent boot failures happened, within the window.
    boot_failures: VecDeque<Instant>,
    /// The delay before its next replacement after a failed boot.
    delay: Duration,
    /// The last delay after a death of a booted worker; `None`: the next is replaced at once.
    served_delay: Option<Duration>,
    /// Where its last booted worker listened: a successor boots once it listens there too.
    listens: Vec<Key>,
}

#[derive(Debug)]
struct Due {
    at: Instant,
    lineage: WorkerId,
    replaces: WorkerId,
    env: Vec<(String, String)>,
    delay: Duration,
    booted: bool,
}

/// How a worker that exited unasked had fared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// It ran `stable_after`.
    Stable,
    /// It booted, and died sooner.
    Served,
    /// It was killed from outside before it booted (`SIGKILL`, `SIGTERM`…).
    KilledBooting,
    /// It exited, or died of its own signal, before it booted.
    BootFailure,
}

/// What to do about a worker that exited unasked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Fork its replacement after this delay.
    After(Duration),
    /// Its line failed to boot too often: `exits` boot failures within the window.
    GiveUp { exits: u32 },
}

impl Respawns {
    /// The decision for a worker of `lineage` that ended as `ended` at `now`.
    pub(crate) fn decide(
        &mut self,
        rules: &Respawn,
        lineage: WorkerId,
        ended: Ended,
        now: Instant,
    ) -> Decision {
        let l = self.lineages.entry(lineage).or_default();
        match ended {
            // Not the program's fault: replaced soon, whatever came before. A kill before
            // the boot leaves the boot failures counted as they were.
            Ended::Stable | Ended::Served | Ended::KilledBooting => {
                if ended != Ended::KilledBooting {
                    l.boot_failures.clear();
                    l.delay = Duration::ZERO;
                }
                let delay = match (ended, l.served_delay) {
                    (Ended::Stable, _) | (_, None) => Duration::ZERO,
                    (_, Some(d)) if d.is_zero() => rules.first_delay,
                    (_, Some(d)) => d * 2,
                }
                .min(rules.max_served_delay);
                l.served_delay = (ended != Ended::Stable).then_some(delay);
                Decision::After(delay)
            }
            Ended::BootFailure => {
                while l
                    .boot_failures
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) > rules.window)
                {
                    l.boot_failures.pop_front();
                }
                l.boot_failures.push_back(now);
                let exits = l.boot_failures.len() as u32;
                if exits >= rules.max_unstable.max(1) {
                    self.lineages.remove(&lineage);
                    return Decision::GiveUp { exits };
                }
                l.delay = if l.delay.is_zero() {
                    rules.first_delay
                } else {
                    (l.delay * 2).min(rules.max_delay)
                };
                Decision::After(l.delay.min(rules.max_delay))
            }
        }
    }

    /// Where `lineage`'s last booted worker listened.
    fn listens(&self, lineage: WorkerId) -> &[Key] {
        self.lineages.get(&lineage).map_or(&[], |l| &l.listens)
    }

    /// When the next replacement is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.due.iter().map(|d| d.at).min()
    }

    /// Whether a replacement waits.
    pub(crate) fn waiting(&self) -> bool {
        !self.due.is_empty()
    }
}

/// Whether a process killed by `signal` was killed from outside (an operator, the OOM
/// killer, a supervisor) rather than by its own fault (`SIGSEGV`, `SIGABRT`, `SIGPIPE`…).
fn killed_from_outside(signal: Option<Signal>) -> bool {
    signal.is_some_and(|s| {
        [
            Signal::KILL,
            Signal::TERM,
            Signal::INT,
            Signal::HUP,
            Signal::QUIT,
        ]
        .contains(&s)
    })
}

impl Core {
    /// How worker `id` (of `lineage`, started at `started`), which exited with `status`
    /// having listened as `listened` says, had fared; a booted worker's listeners become its
    /// lineage's.
    pub(super) fn ended(
        &mut self,
        id: WorkerId,
        lineage: WorkerId,
        started: Instant,
        status: ExitStatus,
        listened: crate::primary::listeners::Listened,
    ) -> Ended {
        let stable_after = match self.settings.respawn {
            Some(Some(rules)) => rules.stable_after,
            _ => Respawn::default().stable_after,
        };
        let Some(w) = self.workers.get(&id) else {
            return Ended::BootFailure;
        };
        let expected = self.respawns.listens(lineage);
        let booted = w.activated.is_none()
            && w.online_generated
            && self.told_ready(id)
            && !listened.refused
            && !listened.keys.is_empty()
            && expected.iter().all(|k| listened.keys.contains(k));
        if booted {
            self.respawns.lineages.entry(lineage).or_default().listens = listened.keys;
        }
        if started.elapsed() >= stable_after {
            Ended::Stable
        } else if booted {
            Ended::Served
        } else if killed_from_outside(status.signal) {
            Ended::KilledBooting
        } else {
            Ended::BootFailure
        }
    }

    /// Worker `id` (of `lineage`, forked with `env`) exited unasked, as `ended` says:
    /// replace it if the settings say so.
    pub(super) fn on_unasked_exit(
        &mut self,
        id: WorkerId,
        lineage: WorkerId,
        ended: Ended,
        env: Vec<(String, String)>,
    ) {
        let Some(Some(rules)) = self.settings.respawn else {
            return;
        };
        if self.rolling.as_ref().is_some_and(|r| r.starting(id)) {
            return; // a successor that failed fails the roll, and is not replaced
        }
        let now = Instant::now();
        match self.respawns.decide(&rules, lineage, ended, now) {
            Decision::After(delay) => self.respawns.due.push(Due {
                at: now + delay,
                lineage,
                replaces: id,
                env,
                delay,
                booted: matches!(ended, Ended::Stable | Ended::Served),
            }),
            Decision::GiveUp { exits } => self.ready.push_back(Event::GaveUp {
                worker: id,
                exits,
                window: rules.window,
            }),
        }
    }

    /// Forks the replacements whose time has come. A fork that fails is reported and counts
    /// as a boot failure of the lineage.
    pub(super) fn respawn_due(&mut self) {
        let now = Instant::now();
        let (ready, later): (Vec<Due>, Vec<Due>) = std::mem::take(&mut self.respawns.due)
            .into_iter()
            .partition(|d| d.at <= now);
        self.respawns.due = later;
        for d in ready {
            let env: Vec<(&str, &str)> = d
                .env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            match self.fork_in(&env, Some(d.lineage)) {
                Ok((worker, _)) => {
                    self.tally.restarted(d.lineage);
                    self.ready.push_back(Event::Respawned {
                        worker,
                        replaces: d.replaces,
                        delay: d.delay,
                        booted: d.booted,
                    });
                }
                Err(error) => {
                    self.ready.push_back(Event::Error {
                        worker: Some(d.replaces),
                        error,
                    });
                    self.on_unasked_exit(d.replaces, d.lineage, Ended::BootFailure, d.env);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn boot_failures_back_off_then_give_up_and_a_stable_run_resets() {
        let rules = Respawn::default();
        let mut r = Respawns::default();
        let t0 = Instant::now();
        let delays: Vec<Decision> = (0..4)
            .map(|i| r.decide(&rules, 1, Ended::BootFailure, t0 + ms(i)))
            .collect();
        assert_eq!(delays, [100, 200, 400, 800].map(|n| Decision::After(ms(n))));
        assert_eq!(
            r.decide(&rules, 1, Ended::BootFailure, t0 + ms(5)),
            Decision::GiveUp { exits: 5 }
        );
        // Another lineage is counted apart; a stable run resets its back-off.
        assert_eq!(
            r.decide(&rules, 2, Ended::BootFailure, t0),
            Decision::After(ms(100))
        );
        assert_eq!(
            r.decide(&rules, 2, Ended::Stable, t0),
            Decision::After(Duration::ZERO)
        );
        assert_eq!(
            r.decide(&rules, 2, Ended::BootFailure, t0),
            Decision::After(ms(100))
        );
    }

    #[test]
    fn workers_that_served_are_always_replaced_after_a_short_capped_delay() {
        let rules = Respawn::default();
        let mut r = Respawns::default();
        let t0 = Instant::now();
        let delays: Vec<Decision> = (0..8)
            .map(|i| r.decide(&rules, 1, Ended::Served, t0 + ms(i)))
            .collect();
        assert_eq!(
            delays,
            [0, 100, 100, 100, 100, 100, 100, 100].map(|n| Decision::After(ms(n)))
        );
        // A longer cap lets the delay grow.
        let rules = Respawn::default().max_served_delay(Duration::from_secs(1));
        let mut r = Respawns::default();
        let delays: Vec<Decision> = (0..7)
            .map(|i| r.decide(&rules, 1, Ended::Served, t0 + ms(i)))
            .collect();
        assert_eq!(
            delays,
            [0, 100, 200, 400, 800, 1000, 1000].map(|n| Decision::After(ms(n)))
        );
        // A stable run starts it over.
        assert_eq!(
            r.decide(&rules, 1, Ended::Stable, t0),
            Decision::After(ms(0))
        );
        assert_eq!(
            r.decide(&rules, 1, Ended::Served, t0),
            Decision::After(ms(0))
        );
    }

    #[test]
    fn kills_before_boot_back_off_but_never_give_up_and_serving_clears_boot_failures() {
        let rules = Respawn::default().give_up_after(2, Duration::from_secs(30));
        let mut r = Respawns::default();
        let t0 = Instant::now();
        for i in 0..20 {
            let d = r.decide(&rules, 1, Ended::KilledBooting, t0 + ms(i));
            assert!(matches!(d, Decision::After(_)), "{d:?}");
        }
        assert_eq!(
            r.decide(&rules, 1, Ended::KilledBooting, t0),
            Decision::After(rules.max_served_delay)
        );
        // One boot failure, then a worker that served: the failure is forgotten.
        assert!(matches!(
            r.decide(&rules, 2, Ended::BootFailure, t0),
            Decision::After(_)
        ));
        r.decide(&rules, 2, Ended::Served, t0);
        assert!(matches!(
            r.decide(&rules, 2, Ended::BootFailure, t0),
            Decision::After(_)
        ));
        assert_eq!(
            r.decide(&rules, 2, Ended::BootFailure, t0),
            Decision::GiveUp { exits: 2 }
        );
    }

    #[test]
    fn boot_failures_older_than_the_window_are_forgotten_and_the_delay_is_capped() {
        let rules = Respawn::default().give_up_after(3, Duration::from_secs(1));
        let mut r = Respawns::default();
        let t0 = Instant::now();
        for i in 0..10 {
            // Two seconds apart: never three within the window.
            let d = r.decide(
                &rules,
                1,
                Ended::BootFailure,
                t0 + Duration::from_secs(2 * i),
            );
            assert!(matches!(d, Decision::After(_)), "{d:?}");
        }
        assert_eq!(
            r.decide(&rules, 1, Ended::BootFailure, t0 + Duration::from_secs(20)),
            Decision::After(rules.max_delay)
        );
    }

    #[test]
    fn kills_from_outside_are_told_from_the_workers_own_faults() {
        assert!(killed_from_outside(Some(Signal::KILL)));
        assert!(killed_from_outside(Some(Signal::TERM)));
        assert!(!killed_from_outside(Some(Signal::SEGV)));
        assert!(!killed_from_outside(Some(Signal::ABRT)));
        assert!(!killed_from_outside(None));
    }
}
