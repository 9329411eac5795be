//! Replacing workers that exit unasked ([`Respawn`]): at once after a stable run, after a
//! growing delay while a lineage keeps failing soon after it starts, and not at all once it
//! failed too often within a window (a crash loop), which an event reports.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::Core;
use crate::ids::WorkerId;
use crate::primary::event::Event;
use crate::primary::settings::Respawn;

/// The primary's replacements: each lineage's recent quick exits and delay, and the forks
/// waiting for their time.
#[derive(Debug, Default)]
pub(crate) struct Respawns {
    /// By lineage (the id of its first worker).
    lineages: BTreeMap<WorkerId, Lineage>,
    /// Replacements to fork, in the order they were decided.
    due: Vec<Due>,
}

#[derive(Debug, Default)]
struct Lineage {
    /// When its recent quick exits happened, within the window.
    quick_exits: VecDeque<Instant>,
    /// The delay before its next replacement after a quick exit.
    delay: Duration,
}

#[derive(Debug)]
struct Due {
    at: Instant,
    lineage: WorkerId,
    replaces: WorkerId,
    env: Vec<(String, String)>,
    delay: Duration,
}

/// What to do about a worker that exited unasked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Fork its replacement after this delay.
    After(Duration),
    /// It failed too often: `exits` quick exits within the window.
    GiveUp { exits: u32 },
}

impl Respawns {
    /// The decision for a worker of `lineage` that exited at `now` after running `ran`.
    pub(crate) fn decide(
        &mut self,
        rules: &Respawn,
        lineage: WorkerId,
        ran: Duration,
        now: Instant,
    ) -> Decision {
        let l = self.lineages.entry(lineage).or_default();
        if ran >= rules.stable_after {
            l.quick_exits.clear();
            l.delay = Duration::ZERO;
            return Decision::After(Duration::ZERO);
        }
        while l
            .quick_exits
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > rules.window)
        {
            l.quick_exits.pop_front();
        }
        l.quick_exits.push_back(now);
        let exits = l.quick_exits.len() as u32;
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

    /// When the next replacement is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.due.iter().map(|d| d.at).min()
    }

    /// Whether a replacement waits.
    pub(crate) fn waiting(&self) -> bool {
        !self.due.is_empty()
    }
}

impl Core {
    /// Worker `id` (of `lineage`, started at `started`, forked with `env`) exited: replace it
    /// if the settings say so and it was not asked to go.
    pub(super) fn on_unasked_exit(
        &mut self,
        id: WorkerId,
        lineage: WorkerId,
        started: Instant,
        env: Vec<(String, String)>,
    ) {
        let Some(Some(rules)) = self.settings.respawn else {
            return;
        };
        if self.rolling.as_ref().is_some_and(|r| r.starting(id)) {
            return; // a successor that failed fails the roll, and is not replaced
        }
        let now = Instant::now();
        let ran = now.saturating_duration_since(started);
        match self.respawns.decide(&rules, lineage, ran, now) {
            Decision::After(delay) => self.respawns.due.push(Due {
                at: now + delay,
                lineage,
                replaces: id,
                env,
                delay,
            }),
            Decision::GiveUp { exits } => self.ready.push_back(Event::GaveUp {
                worker: id,
                exits,
                window: rules.window,
            }),
        }
    }

    /// Forks the replacements whose time has come. A fork that fails is reported and counts
    /// as a quick exit of the lineage.
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
                    });
                }
                Err(error) => {
                    self.ready.push_back(Event::Error {
                        worker: Some(d.replaces),
                        error,
                    });
                    self.on_unasked_exit(d.replaces, d.lineage, now, d.env);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_exits_back_off_then_give_up_and_a_stable_run_resets() {
        let rules = Respawn::default();
        let mut r = Respawns::default();
        let t0 = Instant::now();
        let quick = Duration::from_millis(10);
        let delays: Vec<Decision> = (0..4)
            .map(|i| r.decide(&rules, 1, quick, t0 + Duration::from_millis(i)))
            .collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800].map(|ms| Decision::After(Duration::from_millis(ms)))
        );
        assert_eq!(
            r.decide(&rules, 1, quick, t0 + Duration::from_millis(5)),
            Decision::GiveUp { exits: 5 }
        );
        // Another lineage is counted apart; a stable run resets its back-off.
        assert_eq!(
            r.decide(&rules, 2, quick, t0),
            Decision::After(Duration::from_millis(100))
        );
        assert_eq!(
            r.decide(&rules, 2, Duration::from_secs(60), t0),
            Decision::After(Duration::ZERO)
        );
        assert_eq!(
            r.decide(&rules, 2, quick, t0),
            Decision::After(Duration::from_millis(100))
        );
    }

    #[test]
    fn quick_exits_older_than_the_window_are_forgotten_and_the_delay_is_capped() {
        let rules = Respawn::default().give_up_after(3, Duration::from_secs(1));
        let mut r = Respawns::default();
        let t0 = Instant::now();
        let quick = Duration::from_millis(10);
        for i in 0..10 {
            // Two seconds apart: never three within the window.
            let d = r.decide(&rules, 1, quick, t0 + Duration::from_secs(2 * i));
            assert!(matches!(d, Decision::After(_)), "{d:?}");
        }
        assert_eq!(
            r.decide(&rules, 1, quick, t0 + Duration::from_secs(20)),
            Decision::After(rules.max_delay)
        );
    }
}
