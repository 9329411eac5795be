//! The one place the board's atomics come from. The ring algorithm is written against
//! [`Word`], so the same code runs over the shared mapping's `std` atomics and, under
//! `--cfg loom`, over loom's, which explore every interleaving
//! (`RUSTFLAGS="--cfg loom" cargo test -p ringleader --lib loom`).

pub(crate) use std::sync::atomic::{AtomicU64, Ordering};

/// A 64-bit atomic word: what the ring needs of its memory.
pub(crate) trait Word {
    fn load(&self, order: Ordering) -> u64;
    fn store(&self, value: u64, order: Ordering);
}

impl Word for AtomicU64 {
    fn load(&self, order: Ordering) -> u64 {
        AtomicU64::load(self, order)
    }
    fn store(&self, value: u64, order: Ordering) {
        AtomicU64::store(self, value, order);
    }
}

#[cfg(loom)]
impl Word for loom::sync::atomic::AtomicU64 {
    fn load(&self, order: Ordering) -> u64 {
        loom::sync::atomic::AtomicU64::load(self, order)
    }
    fn store(&self, value: u64, order: Ordering) {
        loom::sync::atomic::AtomicU64::store(self, value, order);
    }
}
