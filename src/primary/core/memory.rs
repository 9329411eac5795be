//! Workers over their memory limit ([`Settings::max_memory`]): once a second the primary
//! reads each worker's resident set, and replaces the first one over the limit gracefully,
//! as a roll of one ([`roll`](super::roll)): its successor is ready before it leaves.
//!
//! [`Settings::max_memory`]: crate::Settings::max_memory

use std::time::{Duration, Instant};

use super::Core;
use crate::primary::event::Event;
use crate::primary::settings::Roll;

/// How often the resident sets are read.
const EVERY: Duration = Duration::from_secs(1);

impl Core {
    /// When the resident sets are read next, with a limit set.
    pub(super) fn memory_due(&self) -> Option<Instant> {
        self.settings.max_memory.flatten().and(self.memory_at)
    }

    /// Reads the workers' resident sets if it is time, and starts replacing the first one
    /// over the limit, unless a roll (or another replacement) is under way.
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
        if self.rolling.is_some() {
            return;
        }
        let over = self.workers.iter().find_map(|(id, w)| {
            if !w.listed || w.leaving() || w.exit.is_some() {
                return None;
            }
            let rss = w.pidfd.resident_bytes().ok()?;
            (rss > limit).then_some((*id, rss))
        });
        if let Some((worker, rss)) = over {
            self.ready
                .push_back(Event::MemoryExceeded { worker, rss, limit });
            self.roll_one(worker, Roll::default());
        }
    }
}
