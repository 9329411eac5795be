//! Workers over their memory limit ([`Settings::max_memory`]): once a second the primary
//! reads each worker's resident set, and replaces the first one over the limit gracefully,
//! as a roll of one ([`roll`](super::roll)): its successor is ready before it leaves, and
//! meanwhile it gets no new connections while another worker can take them.
//!
//! [`Settings::max_memory`]: crate::Settings::max_memory

use std::time::{Duration, Instant};

use super::Core;
use crate::ids::WorkerId;
use crate::primary::event::Event;
use crate::primary::settings::Roll;

/// How often the resident sets are read.
const EVERY: Duration = Duration::from_secs(1);

impl Core {
    /// When the resident sets are read next, with a limit set.
    pub(super) fn memory_due(&self) -> Option<Instant> {
        self.settings.max_memory.flatten().and(self.memory_at)
    }

    /// Reads the workers' resident sets if it is time. Each worker over the limit is
    /// reported once and gets no new connections from then on, while another worker can
    /// take them; the first of them is replaced unless a roll (or another replacement) is
    /// under way, and the next ones at the following reads.
    pub(super) fn check_memory(&mut self) {
        let Some(limit) = self.settings.max_memory.flatten() else {
            self.memory_at = None;
            return;
        };
        let now = Instant::now();
        if self.memory_at.is_some_and(|at| at > now) {
            return;
        }
        self.memory_at = Some(now + EVERY);
        let live = |w: &super::WorkerEntry| w.listed && !w.leaving() && w.exit.is_none();
        self.over_memory
            .retain(|id| self.workers.get(id).is_some_and(live));
        let over: Vec<(WorkerId, u64)> = self
            .workers
            .iter()
            .filter(|(_, w)| live(w))
            .filter_map(|(id, w)| {
                let rss = w.pidfd.resident_bytes().ok()?;
                (rss > limit).then_some((*id, rss))
            })
            .collect();
        for &(worker, rss) in &over {
            if !self.over_memory.insert(worker) {
                continue;
            }
            self.ready
                .push_back(Event::MemoryExceeded { worker, rss, limit });
            // It stops growing: the others take its share (round-robin and the hand-off
            // policies; a shared socket is not the primary's to steer).
            let others_open = self.workers.iter().any(|(id, w)| {
                *id != worker
                    && live(w)
                    && !self.over_memory.contains(id)
                    && self.loads.workers.get(id).is_none_or(|l| l.open())
            });
            if others_open {
                self.loads.get(worker).spared = true;
            }
        }
        if self.rolling.is_none() {
            if let Some(&(worker, _)) = over.first() {
                self.roll_one(worker, Roll::default());
            }
        }
    }
}
