//! The primary's side of the load board: it creates the region, gives each worker a slot
//! (zeroed, with a new generation) and takes it back once the worker has exited, reads the
//! counters and hints, and builds what a [`Policy`] sees.

use std::collections::BTreeMap;

use ringleader_sys::shm::SharedWords;
use ringleader_sys::{AsFd, BorrowedFd, OwnedFd};

use crate::board::{BadSlot, Board, Counts, Hint, words_for};
use crate::ids::WorkerId;
use crate::policy::{Candidate, SharedPolicy};

/// What the primary knows of one worker's load.
#[derive(Debug, Default)]
pub(crate) struct WorkerLoad {
    /// Its board slot and that slot's generation, if it got one.
    slot: Option<(usize, u64)>,
    /// Connections handed to it over all its listeners.
    pub(crate) handed: u64,
    pub(crate) counts: Counts,
    pub(crate) paused: bool,
    pub(crate) draining: bool,
    pub(crate) capacity: Option<u32>,
    /// Set once its slot read wrong: it gets no more connections.
    pub(crate) bad: Option<BadSlot>,
    /// Set by the primary: over its memory limit, it gets no new connections while its
    /// successor starts ([`crate::Settings::max_memory`]).
    pub(crate) spared: bool,
    /// Its place ([`Candidate::place`]): the first worker of its line of replacements; 0
    /// until it is set at the fork (then the worker's own id stands for it).
    pub(crate) place: WorkerId,
}

impl WorkerLoad {
    /// Whether a policy may be offered this worker at all.
    pub(crate) fn open(&self) -> bool {
        !self.paused && !self.draining && !self.spared && self.bad.is_none()
    }

    pub(crate) fn on_board(&self) -> bool {
        self.slot.is_some()
    }

    /// Handed over and not yet taken, by the board's count.
    pub(crate) fn queued(&self) -> u64 {
        self.handed.saturating_sub(self.counts.taken)
    }

    pub(crate) fn active(&self) -> u64 {
        self.counts.taken - self.counts.finished
    }

    /// The place of `worker` (whose load this is).
    pub(crate) fn place_of(&self, worker: WorkerId) -> WorkerId {
        if self.place == 0 { worker } else { self.place }
    }

    pub(crate) fn candidate(&self, worker: WorkerId, queued: u64) -> Candidate {
        Candidate::new(
            worker,
            queued,
            self.active(),
            self.counts.load,
            self.capacity,
        )
        .in_place(self.place_of(worker))
    }

    /// Whether a capacity hint says it holds all it can.
    pub(crate) fn full(&self, queued: u64) -> bool {
        self.capacity
            .is_some_and(|c| c > 0 && self.active() + queued >= u64::from(c))
    }
}

/// A worker's load as the primary last read it from the board
/// ([`WorkerHandle::load`](crate::WorkerHandle::load)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Load {
    /// Connections handed to it (all its listeners).
    pub handed: u64,
    /// Connections it took from its queues.
    pub taken: u64,
    /// Connections it finished (closed or detached).
    pub finished: u64,
    /// The load figure its application published.
    pub load: u64,
    /// It asked for no connections until it resumes.
    pub paused: bool,
    /// It asked to drain.
    pub draining: bool,
    /// Its capacity hint.
    pub capacity: Option<u32>,
    /// Its slot read wrong once: it gets no more connections.
    pub bad: bool,
    /// Whether it has a board slot at all.
    pub on_board: bool,
}

/// What reading a worker's slot turned up that the primary must act on.
#[derive(Debug, Default)]
pub(crate) struct News {
    /// Workers that asked to drain: their queued connections go to others.
    pub(crate) drain: Vec<WorkerId>,
    /// Workers whose slot just went bad, with why (reported once each).
    pub(crate) bad: Vec<(WorkerId, BadSlot)>,
}

pub(crate) struct Loads {
    region: Option<(OwnedFd, SharedWords)>,
    capacity: usize,
    free: Vec<usize>,
    generations: Vec<u64>,
    pub(crate) workers: BTreeMap<WorkerId, WorkerLoad>,
    pub(crate) policy: SharedPolicy,
}

impl std::fmt::Debug for Loads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loads")
            .field("slots", &self.capacity)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl Loads {
    /// A board of `slots` slots, created at once so that the primary's fds do not change
    /// with its first fork. When the system refuses a memfd the cluster runs without a board
    /// (policies see no counts, hints are unavailable).
    pub(crate) fn new(slots: usize, policy: SharedPolicy) -> Loads {
        let region = SharedWords::create("ringleader-board", words_for(slots))
            .ok()
            .filter(|(_, mem)| Board::init(mem.words()).is_ok());
        Loads {
            region,
            capacity: slots,
            free: (0..slots).rev().collect(),
            generations: vec![0; slots],
            workers: BTreeMap::new(),
            policy,
        }
    }

    pub(crate) fn slots(&self) -> usize {
        self.capacity
    }

    fn board(&self) -> Option<Board<'_>> {
        // Sized by what the primary mapped, never by the header a worker could overwrite.
        self.region
            .as_ref()
            .map(|(_, mem)| Board::trusted(mem.words()))
    }

    /// The region's fd, for workers to inherit; `None` without a board.
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.region.as_ref().map(|(fd, _)| fd.as_fd())
    }

    /// Gives a slot to worker `id` (about to be forked). Returns the slot's index and
    /// generation for the worker's environment.
    pub(crate) fn assign(&mut self, id: WorkerId) -> Option<(usize, u64)> {
        self.fd()?;
        let index = self.free.pop()?;
        self.generations[index] += 1;
        let generation = self.generations[index];
        self.board()?.slot(index)?.assign(generation);
        self.workers.insert(
            id,
            WorkerLoad {
                slot: Some((index, generation)),
                ..WorkerLoad::default()
            },
        );
        Some((index, generation))
    }

    /// Worker `id` exited (or its fork failed after `assign`): its slot is free again, and
    /// the next owner gets a new generation.
    pub(crate) fn release(&mut self, id: WorkerId) {
        if let Some(WorkerLoad {
            slot: Some((index, _)),
            ..
        }) = self.workers.remove(&id)
        {
            // Reused last: a slot rests as long as possible before its next owner.
            self.free.insert(0, index);
        }
    }

    /// A snapshot of worker `id`'s load, after reading the board.
    pub(crate) fn snapshot(&mut self, id: WorkerId) -> (Load, News) {
        let news = self.refresh();
        let w = self.workers.get(&id);
        let load = w.map_or_else(Load::default, |w| Load {
            handed: w.handed,
            taken: w.counts.taken,
            finished: w.counts.finished,
            load: w.counts.load,
            paused: w.paused,
            draining: w.draining,
            capacity: w.capacity,
            bad: w.bad.is_some(),
            on_board: w.slot.is_some(),
        });
        (load, news)
    }

    pub(crate) fn get(&mut self, id: WorkerId) -> &mut WorkerLoad {
        self.workers.entry(id).or_default()
    }

    /// Reads every worker's counters and hints.
    pub(crate) fn refresh(&mut self) -> News {
        let mut news = News::default();
        let Some((_, mem)) = &self.region else {
            return news;
        };
        let board = Board::trusted(mem.words());
        for (&id, w) in &mut self.workers {
            let (Some((index, generation)), None) = (w.slot, w.bad) else {
                continue;
            };
            let Some(slot) = board.slot(index) else {
                continue;
            };
            let read = slot.read(generation, w.handed).and_then(|counts| {
                w.counts = counts;
                while let Some(hint) = slot.next_hint()? {
                    match hint {
                        Hint::Pause => w.paused = true,
                        Hint::Resume => {
                            w.paused = false;
                            w.draining = false;
                        }
                        Hint::Capacity(0) => w.capacity = None,
                        Hint::Capacity(n) => w.capacity = Some(n),
                        Hint::Drain => {
                            if !w.draining {
                                w.draining = true;
                                news.drain.push(id);
                            }
                        }
                    }
                }
                Ok(())
            });
            if let Err(why) = read {
                w.bad = Some(why);
                news.bad.push((id, why));
            }
        }
        news
    }
}
