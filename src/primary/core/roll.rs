//! Rolling restarts ([`Roll`]): every worker replaced, a few at a time. A successor is forked
//! with its predecessor's `fork` environment and the settings in force now; once it listens
//! wherever its predecessor did, the predecessor is disconnected (its queued connections go
//! to the others) and killed if it has not exited in time. A successor that exits or is not
//! ready in time is killed, and the roll stops with the old workers still serving. A worker
//! over its memory limit is replaced the same way, as an unannounced roll of one
//! ([`memory`](super::memory)).

use std::collections::VecDeque;
use std::time::Instant;

use ringleader_sys::signal::Signal;

use super::{Core, WorkerState};
use crate::error::{Error, ErrorKind, Result};
use crate::ids::WorkerId;
use crate::primary::event::Event;
use crate::primary::settings::Roll;

/// A roll under way.
#[derive(Debug)]
pub(crate) struct Rolling {
    rules: Roll,
    started: Instant,
    /// Workers still to replace, in fork order.
    queue: VecDeque<WorkerId>,
    steps: Vec<Step>,
    replaced: usize,
    /// A roll the application asked for, told with `RollStarted` and `RollDone` (and to the
    /// service manager); else the replacement of a worker over its memory limit.
    announced: bool,
}

#[derive(Debug)]
struct Step {
    old: WorkerId,
    new: WorkerId,
    /// `None` while the successor gets ready; then when the predecessor must be gone.
    stop_by: Option<Instant>,
    /// When the successor must be ready.
    ready_by: Instant,
}

impl Rolling {
    /// When the roll needs the loop next, for a deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.steps
            .iter()
            .map(|s| s.stop_by.unwrap_or(s.ready_by))
            .min()
    }

    /// The worker `id` succeeds, if it is a successor of this roll.
    pub(crate) fn predecessor_of(&self, id: WorkerId) -> Option<WorkerId> {
        self.steps.iter().find(|s| s.new == id).map(|s| s.old)
    }

    /// Whether `id` is a successor not yet ready: its exit fails the roll rather than being
    /// replaced.
    pub(crate) fn starting(&self, id: WorkerId) -> bool {
        self.steps
            .iter()
            .any(|s| s.new == id && s.stop_by.is_none())
    }
}

impl Core {
    /// Starts a rolling restart of every worker now listed.
    ///
    /// # Errors
    /// [`ErrorKind::Settings`] while another roll is under way (one at a time).
    pub(crate) fn roll(&mut self, rules: Roll) -> Result<()> {
        let replacing = match self.rolling.take() {
            // A worker over its memory limit is being replaced: the roll goes on from there.
            Some(r) if !r.announced => r.steps,
            Some(r) => {
                self.rolling = Some(r);
                return Err(Error::new(ErrorKind::Settings, "roll the workers")
                    .detail("a roll is already under way"));
            }
            None => Vec::new(),
        };
        let queue: VecDeque<WorkerId> = self
            .workers
            .iter()
            .filter(|(id, w)| {
                w.listed
                    && !w.leaving()
                    && !replacing.iter().any(|s| s.old == **id || s.new == **id)
            })
            .map(|(id, _)| *id)
            .collect();
        self.ready.push_back(Event::RollStarted {
            workers: queue.len() + replacing.len(),
        });
        self.tell_manager_reloading(true);
        self.rolling = Some(Rolling {
            rules,
            started: Instant::now(),
            queue,
            steps: replacing,
            replaced: 0,
            announced: true,
        });
        self.roll_on();
        Ok(())
    }

    /// Replaces worker `old` as a roll of one, unannounced (it grew past its memory limit).
    pub(super) fn roll_one(&mut self, old: WorkerId, rules: Roll) {
        if self.rolling.is_some() {
            return;
        }
        self.rolling = Some(Rolling {
            rules,
            started: Instant::now(),
            queue: VecDeque::from([old]),
            steps: Vec::new(),
            replaced: 0,
            announced: false,
        });
        self.roll_on();
    }

    /// Moves the roll on: successors that are ready retire their predecessors, gone
    /// predecessors end their step, new steps start, and deadlines are enforced.
    pub(super) fn roll_on(&mut self) {
        let Some(mut r) = self.rolling.take() else {
            return;
        };
        let now = Instant::now();
        let mut failed = None;
        let mut done = Vec::new();
        for (i, step) in r.steps.iter_mut().enumerate() {
            match step.stop_by {
                None => {
                    let alive = self
                        .workers
                        .get(&step.new)
                        .is_some_and(|w| w.exit.is_none());
                    if !alive {
                        failed = Some((step.new, "it exited before it was ready".to_owned()));
                        break;
                    }
                    if self.ready_to_replace(step.new, step.old) {
                        self.ready.push_back(Event::RollStep {
                            old: step.old,
                            new: step.new,
                        });
                        step.stop_by = Some(now + r.rules.stop_within);
                        // Gone already (it crashed meanwhile): nothing to disconnect.
                        let _ = self.disconnect(step.old);
                    } else if now >= step.ready_by {
                        failed = Some((
                            step.new,
                            format!("it was not ready within {:?}", r.rules.ready_within),
                        ));
                        break;
                    }
                }
                Some(stop_by) => {
                    let gone = self.workers.get(&step.old).is_none_or(|w| w.exit.is_some());
                    if gone {
                        done.push(i);
                    } else if now >= stop_by {
                        let _ = self.kill(step.old, Signal::KILL);
                    }
                }
            }
        }
        if let Some((worker, reason)) = failed {
            let _ = self.kill(worker, Signal::KILL);
            self.ready.push_back(Event::RollFailed { worker, reason });
            if r.announced {
                self.tell_manager_reloading(false);
            }
            return;
        }
        for i in done.into_iter().rev() {
            r.steps.remove(i);
            r.replaced += 1;
        }
        while r.steps.len() < r.rules.at_once.max(1) {
            let Some(old) = r.queue.pop_front() else {
                break;
            };
            let Some(w) = self.workers.get(&old).filter(|w| w.listed && !w.leaving()) else {
                continue; // gone meanwhile: nothing to replace
            };
            let (lineage, env) = (w.lineage, w.env.clone());
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            self.replacing = Some(old);
            let forked = self.fork_in(&env, Some(lineage));
            self.replacing = None;
            match forked {
                Ok((new, _)) => r.steps.push(Step {
                    old,
                    new,
                    stop_by: None,
                    ready_by: now + r.rules.ready_within,
                }),
                Err(error) => {
                    self.ready.push_back(Event::Error {
                        worker: Some(old),
                        error,
                    });
                    self.ready.push_back(Event::RollFailed {
                        worker: old,
                        reason: "its successor could not be forked".to_owned(),
                    });
                    if r.announced {
                        self.tell_manager_reloading(false);
                    }
                    return;
                }
            }
        }
        if r.steps.is_empty() && r.queue.is_empty() {
            if r.announced {
                self.ready.push_back(Event::RollDone {
                    replaced: r.replaced,
                    took: r.started.elapsed(),
                });
                self.tell_manager_reloading(false);
            }
            return;
        }
        self.rolling = Some(r);
    }

    /// Whether `new` is online and listens wherever `old` does, and its `Listening` has
    /// been handed out (so that the step is told after it, in the order it happened).
    fn ready_to_replace(&self, new: WorkerId, old: WorkerId) -> bool {
        let Some(entry) = self.workers.get(&new) else {
            return false;
        };
        if !entry.online_generated || !self.told_ready(new) {
            return false;
        }
        let theirs = self.listeners.keys_of(old);
        let ours = self.listeners.keys_of(new);
        theirs.iter().all(|k| ours.contains(k))
            && (theirs.is_empty() || entry.state == WorkerState::Listening)
    }
}
