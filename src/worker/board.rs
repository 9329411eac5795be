//! A worker's side of the load board: its slot, the counters ringleader keeps in it, and
//! the hints the application posts.

use std::sync::Mutex;

use ringleader_sys::shm::SharedWords;
use ringleader_sys::{AsFd, OwnedFd};

use crate::board::{Board, Hint, Slot};
use crate::error::{Error, ErrorKind, Result};

/// The mapped board and which slot is ours.
#[derive(Debug)]
pub(crate) struct WorkerBoard {
    mem: SharedWords,
    index: usize,
    /// Serialises posts: the hint ring has one producer.
    producer: Mutex<()>,
}

impl WorkerBoard {
    /// Maps the board the primary passed and checks that slot `index` is ours.
    pub(crate) fn attach(fd: &OwnedFd, index: usize, generation: u64) -> Result<WorkerBoard> {
        const OP: &str = "attach to the load board";
        let mem = SharedWords::attach(fd.as_fd()).map_err(|e| Error::io(OP, e))?;
        let board = Board::attach(mem.words())
            .map_err(|e| Error::new(ErrorKind::Board, OP).detail(e.to_string()))?;
        let slot = board
            .slot(index)
            .ok_or_else(|| Error::new(ErrorKind::Board, OP).detail(format!("no slot {index}")))?;
        if slot.generation() != generation {
            return Err(Error::new(ErrorKind::Board, OP)
                .detail(format!("slot {index} is not generation {generation}")));
        }
        // The mapping stays; the fd is no longer needed.
        Ok(WorkerBoard {
            mem,
            index,
            producer: Mutex::new(()),
        })
    }

    fn slot(&self) -> Option<Slot<'_>> {
        Board::trusted(self.mem.words()).slot(self.index)
    }

    pub(crate) fn taken(&self, n: u64) {
        if let Some(s) = self.slot() {
            s.add_taken(n);
        }
    }

    pub(crate) fn finished(&self, n: u64) {
        if let Some(s) = self.slot() {
            s.add_finished(n);
        }
    }

    pub(crate) fn set_load(&self, load: u64) {
        if let Some(s) = self.slot() {
            s.set_load(load);
        }
    }

    /// Posts a hint; false when the ring is full.
    pub(crate) fn post(&self, hint: Hint) -> bool {
        let _one_producer = self.producer.lock().unwrap_or_else(|e| e.into_inner());
        self.slot().is_some_and(|s| s.post(hint))
    }
}
