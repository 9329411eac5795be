//! The hints ring: a bounded single-producer, single-consumer queue of 64-bit words, written
//! against atomics only, over memory someone else supplies (a slot of the shared board, or a
//! plain `Vec` in tests and loom models).
//!
//! The algorithm is Lamport's circular buffer for one producer and one consumer (L. Lamport,
//! "Proving the correctness of multiprocess programs", IEEE TSE 3(2), 1977), with
//! free-running 64-bit indices (the ring is full when `tail - head == capacity`, so no slot is
//! wasted and wrap-around never happens in practice) and, in place of Lamport's sequentially
//! consistent memory, one release/acquire pair per index:
//!
//! - the producer writes an entry, then publishes it with a release store of `tail`; the
//!   consumer's acquire load of `tail` makes the entry visible before it reads it;
//! - the consumer reads an entry, then frees it with a release store of `head`; the
//!   producer's acquire load of `head` orders that read before the entry is overwritten.
//!
//! The loom model below fails if the tail pair is weakened to relaxed. loom does not model
//! load buffering, so weakening the head pair goes unseen there: that pair rests on the
//! argument above (and on hardware, on x86-64's ordering of a load before a later store).
//!
//! Entries are atomics too, so a peer that breaks the protocol (a worker scribbling over
//! the board) causes wrong values, never undefined behaviour. The consumer trusts nothing:
//! indices that cannot be right end in [`Pop::Corrupt`].

use super::sync::{AtomicU64, Ordering, Word};

/// Where the ring's words are: `head` and `tail` on cache lines of their own (one written by
/// each side) and `entries` (a power of two in length).
pub(crate) struct HintRing<'a, W: Word = AtomicU64> {
    /// Entries read so far; written by the consumer only.
    pub(crate) head: &'a W,
    /// Entries written so far; written by the producer only.
    pub(crate) tail: &'a W,
    pub(crate) entries: &'a [W],
}

/// What [`HintRing::pop`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pop {
    Empty,
    Entry(u64),
    /// The producer's index is behind the consumer's or further ahead than the ring holds.
    Corrupt,
}

impl<W: Word> HintRing<'_, W> {
    fn mask(&self) -> u64 {
        debug_assert!(self.entries.len().is_power_of_two());
        self.entries.len() as u64 - 1
    }

    /// Producer side: appends `value`, or returns false when the ring is full.
    pub(crate) fn push(&self, value: u64) -> bool {
        // Only this side writes `tail`: its own last store is what it reads.
        let tail = self.tail.load(Ordering::Relaxed);
        // Acquire: pairs with the consumer's release store of `head` in `pop`, so its read of
        // the entry we are about to reuse has happened.
        let head = self.head.load(Ordering::Acquire);
        if tail.wrapping_sub(head) >= self.entries.len() as u64 {
            return false;
        }
        self.entries[(tail & self.mask()) as usize].store(value, Ordering::Relaxed);
        // Release: pairs with the consumer's acquire load of `tail` in `pop`, publishing the
        // entry written above.
        self.tail.store(tail.wrapping_add(1), Ordering::Release);
        true
    }

    /// Consumer side: takes the oldest entry.
    pub(crate) fn pop(&self) -> Pop {
        // Only this side writes `head`.
        let head = self.head.load(Ordering::Relaxed);
        // Acquire: pairs with the producer's release store of `tail` in `push`.
        let tail = self.tail.load(Ordering::Acquire);
        let queued = tail.wrapping_sub(head);
        if queued == 0 {
            return Pop::Empty;
        }
        if queued > self.entries.len() as u64 {
            return Pop::Corrupt;
        }
        let value = self.entries[(head & self.mask()) as usize].load(Ordering::Relaxed);
        // Release: pairs with the producer's acquire load of `head` in `push`: the entry has
        // been read before the producer may overwrite it.
        self.head.store(head.wrapping_add(1), Ordering::Release);
        Pop::Entry(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn fifo_full_and_empty() {
        let (head, tail, entries) = (AtomicU64::new(0), AtomicU64::new(0), words(4));
        let ring = HintRing {
            head: &head,
            tail: &tail,
            entries: &entries,
        };
        assert_eq!(ring.pop(), Pop::Empty);
        for round in 0..3u64 {
            for i in 0..4 {
                assert!(ring.push(round * 10 + i));
            }
            assert!(!ring.push(99), "full at capacity");
            for i in 0..4 {
                assert_eq!(ring.pop(), Pop::Entry(round * 10 + i));
            }
            assert_eq!(ring.pop(), Pop::Empty);
        }
    }

    #[test]
    fn indices_that_cannot_be_right_are_corrupt() {
        let (head, tail, entries) = (AtomicU64::new(10), AtomicU64::new(3), words(4));
        let ring = HintRing {
            head: &head,
            tail: &tail,
            entries: &entries,
        };
        assert_eq!(ring.pop(), Pop::Corrupt, "tail behind head");
        tail.store(15, Ordering::Relaxed);
        assert_eq!(ring.pop(), Pop::Corrupt, "more than capacity ahead");
        tail.store(11, Ordering::Relaxed);
        assert_eq!(ring.pop(), Pop::Entry(0));
    }

    #[test]
    fn wraps_around_the_index_space() {
        let start = u64::MAX - 2;
        let (head, tail, entries) = (AtomicU64::new(start), AtomicU64::new(start), words(2));
        let ring = HintRing {
            head: &head,
            tail: &tail,
            entries: &entries,
        };
        for i in 0..10 {
            assert!(ring.push(i));
            assert!(ring.push(i + 100));
            assert!(!ring.push(0));
            assert_eq!(ring.pop(), Pop::Entry(i));
            assert_eq!(ring.pop(), Pop::Entry(i + 100));
        }
    }

    #[test]
    fn one_producer_thread_one_consumer_thread() {
        const N: u64 = 20_000;
        let (head, tail, entries) = (AtomicU64::new(0), AtomicU64::new(0), words(8));
        std::thread::scope(|s| {
            let ring = HintRing {
                head: &head,
                tail: &tail,
                entries: &entries,
            };
            let producer = HintRing {
                head: &head,
                tail: &tail,
                entries: &entries,
            };
            s.spawn(move || {
                for i in 1..=N {
                    while !producer.push(i) {
                        std::hint::spin_loop();
                    }
                }
            });
            let mut next = 1;
            while next <= N {
                match ring.pop() {
                    Pop::Entry(v) => {
                        assert_eq!(v, next);
                        next += 1;
                    }
                    Pop::Empty => std::hint::spin_loop(),
                    Pop::Corrupt => panic!("corrupt"),
                }
            }
        });
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicU64;

    fn ring(w: &[AtomicU64]) -> HintRing<'_, AtomicU64> {
        HintRing {
            head: &w[0],
            tail: &w[1],
            entries: &w[2..4],
        }
    }

    /// Every interleaving of a producer pushing three values through a two-entry ring and a
    /// consumer popping three times, then draining: values arrive in order, none twice, none
    /// invented, and an entry is never read before it was written. Both sides run on spawned
    /// threads: loom explores nothing when the main thread races a thread that starts with
    /// an atomic load (tokio-rs/loom#392).
    #[test]
    fn ordered_and_complete_under_every_interleaving() {
        let mut model = loom::model::Builder::new();
        // Bounded, to keep CI short; three preemptions cover every reordering of one push
        // against one pop, and the wrap-around once the ring is full.
        model.preemption_bound = Some(3);
        model.check(|| {
            let words = Arc::new((0..4).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
            let theirs = words.clone();
            let producer = loom::thread::spawn(move || {
                let ring = ring(&theirs);
                let mut sent = 0;
                for v in 1..=3u64 {
                    if !ring.push(v) {
                        break;
                    }
                    sent = v;
                }
                sent
            });
            let ours = words.clone();
            let consumer = loom::thread::spawn(move || {
                let ring = ring(&ours);
                let mut got = Vec::new();
                for _ in 0..3 {
                    match ring.pop() {
                        Pop::Entry(v) => got.push(v),
                        Pop::Empty => {}
                        Pop::Corrupt => panic!("corrupt"),
                    }
                }
                got
            });
            let sent = producer.join().expect("producer");
            let mut got = consumer.join().expect("consumer");
            while let Pop::Entry(v) = ring(&words).pop() {
                got.push(v);
            }
            let want: Vec<u64> = (1..=sent).collect();
            assert_eq!(got, want);
        });
    }
}
