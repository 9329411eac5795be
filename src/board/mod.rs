//! The load board: one shared-memory region, created by the primary and mapped by every
//! worker, where each worker publishes its load and posts scheduling hints. The primary
//! reads it with no round trip, and treats every value in it as an untrusted hint.
//!
//! # Layout (version 1)
//!
//! The region is an array of little-endian 64-bit words, accessed only with atomic
//! instructions. It is ABI: offsets, not pointers; a change of meaning is a new version.
//!
//! | words | what | written by |
//! |---|---|---|
//! | 0 | magic `"RLBOARD\0"` | primary |
//! | 1 | layout version (1) | primary |
//! | 2 | header length in words (16) | primary |
//! | 3 | slot length in words (64) | primary |
//! | 4 | number of slots | primary |
//! | 5 | hint ring capacity in entries (16) | primary |
//! | 16 + 64·i … | slot `i` | see below |
//!
//! Each slot is 512 bytes: four 128-byte lines (the size `crossbeam_utils::CachePadded`
//! uses on x86-64, where the prefetcher pulls lines in pairs), so that words written by
//! different processes never share a line. `HeaderLayout` and `SlotLayout` below are the
//! `#[repr(C)]` statement of both tables; the word offsets the code uses come from them.
//!
//! | slot word | what | written by |
//! |---|---|---|
//! | 0 | generation: bumped each time the slot is given to a new worker | primary, before the worker starts |
//! | 1 | connections taken from the hand-off queue | worker |
//! | 2 | connections finished (closed or detached) | worker |
//! | 3 | a load figure of the application's choosing | worker |
//! | 16 | hint ring head (entries read) | primary |
//! | 32 | hint ring tail (entries written) | worker |
//! | 48 … 63 | hint ring entries | worker |
//!
//! The primary zeroes a slot and bumps its generation before it forks the worker that gets
//! it, and gives a slot to a new worker only after the previous one has exited, so counts
//! never carry over from one worker to the next.

pub(crate) mod ring;
pub(crate) mod sync;

use self::ring::{HintRing, Pop};
use self::sync::{AtomicU64, Ordering};

/// `"RLBOARD\0"`, little-endian.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"RLBOARD\0");
/// The layout version this code writes and reads.
pub(crate) const VERSION: u64 = 1;
pub(crate) const RING_ENTRIES: usize = 16;

/// The header as it lies in memory. Never built: it states the ABI, and the word offsets
/// below are taken from it, with the sizes checked at compile time.
#[repr(C)]
#[allow(dead_code)]
struct HeaderLayout {
    magic: u64,
    version: u64,
    header_words: u64,
    slot_words: u64,
    slots: u64,
    ring_entries: u64,
    reserved: [u64; 10],
}

/// One worker's slot as it lies in memory: four 128-byte lines (the size
/// `crossbeam_utils::CachePadded` uses on x86-64), so that words written by different
/// processes never share one.
///
/// Spelled out with `#[repr(C)]` rather than built from `CachePadded`: the layout is a
/// contract between processes (a worker may be another build, of another version), and
/// `CachePadded`'s alignment is an implementation detail that differs by target and may
/// change between its releases. Nothing in this process's own memory is padded by hand.
#[repr(C, align(128))]
#[allow(dead_code)]
struct SlotLayout {
    // Line 0: the primary writes `generation` before the worker starts; the worker the rest.
    generation: u64,
    taken: u64,
    finished: u64,
    load: u64,
    reserved0: [u64; 12],
    // Line 1: the consumer's index, written by the primary.
    ring_head: u64,
    reserved1: [u64; 15],
    // Line 2: the producer's index, written by the worker.
    ring_tail: u64,
    reserved2: [u64; 15],
    // Line 3: the entries, written by the worker.
    ring: [u64; RING_ENTRIES],
}

const _: () = assert!(std::mem::size_of::<HeaderLayout>() == 128);
const _: () = assert!(std::mem::size_of::<SlotLayout>() == 512);

pub(crate) const HEADER_WORDS: usize = std::mem::size_of::<HeaderLayout>() / 8;
pub(crate) const SLOT_WORDS: usize = std::mem::size_of::<SlotLayout>() / 8;

const GENERATION: usize = std::mem::offset_of!(SlotLayout, generation) / 8;
const TAKEN: usize = std::mem::offset_of!(SlotLayout, taken) / 8;
const FINISHED: usize = std::mem::offset_of!(SlotLayout, finished) / 8;
const LOAD: usize = std::mem::offset_of!(SlotLayout, load) / 8;
const RING_HEAD: usize = std::mem::offset_of!(SlotLayout, ring_head) / 8;
const RING_TAIL: usize = std::mem::offset_of!(SlotLayout, ring_tail) / 8;
const RING_AT: usize = std::mem::offset_of!(SlotLayout, ring) / 8;

/// Words a board of `slots` slots takes.
pub(crate) fn words_for(slots: usize) -> usize {
    HEADER_WORDS + slots * SLOT_WORDS
}

/// Why a region is not a board this code can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttachError {
    TooShort,
    Magic,
    Version(u64),
    Geometry,
}

impl std::fmt::Display for AttachError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttachError::TooShort => f.write_str("region shorter than its header says"),
            AttachError::Magic => f.write_str("not a ringleader board (bad magic)"),
            AttachError::Version(v) => {
                write!(f, "board layout version {v}, this build reads {VERSION}")
            }
            AttachError::Geometry => f.write_str("board header has sizes this build cannot use"),
        }
    }
}

/// A board over some words (a shared mapping, or plain memory in tests).
#[derive(Clone, Copy)]
pub(crate) struct Board<'a> {
    words: &'a [AtomicU64],
    slots: usize,
}

impl<'a> Board<'a> {
    /// Writes a fresh header over zeroed words (the primary, once).
    pub(crate) fn init(words: &'a [AtomicU64]) -> Result<Board<'a>, AttachError> {
        if words.len() < words_for(1) {
            return Err(AttachError::TooShort);
        }
        let slots = (words.len() - HEADER_WORDS) / SLOT_WORDS;
        let header = [
            MAGIC,
            VERSION,
            HEADER_WORDS as u64,
            SLOT_WORDS as u64,
            slots as u64,
            RING_ENTRIES as u64,
        ];
        for (w, v) in words.iter().zip(header) {
            w.store(v, Ordering::Relaxed);
        }
        Ok(Board { words, slots })
    }

    /// A board over words this process sized itself: the slot count comes from the length,
    /// never from a header another process could have overwritten.
    pub(crate) fn trusted(words: &'a [AtomicU64]) -> Board<'a> {
        let slots = words.len().saturating_sub(HEADER_WORDS) / SLOT_WORDS;
        Board { words, slots }
    }

    /// Checks the header of a region someone else wrote (a worker, at start; the fuzz
    /// target, on anything).
    pub(crate) fn attach(words: &'a [AtomicU64]) -> Result<Board<'a>, AttachError> {
        let word = |i: usize| words.get(i).map(|w| w.load(Ordering::Relaxed));
        if words.len() < HEADER_WORDS {
            return Err(AttachError::TooShort);
        }
        if word(0) != Some(MAGIC) {
            return Err(AttachError::Magic);
        }
        match word(1) {
            Some(VERSION) => {}
            Some(v) => return Err(AttachError::Version(v)),
            None => return Err(AttachError::TooShort),
        }
        let geometry = [HEADER_WORDS as u64, SLOT_WORDS as u64];
        if word(2) != Some(geometry[0])
            || word(3) != Some(geometry[1])
            || word(5) != Some(RING_ENTRIES as u64)
        {
            return Err(AttachError::Geometry);
        }
        let slots = word(4).and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
        if slots == 0 {
            return Err(AttachError::Geometry);
        }
        let need = slots
            .checked_mul(SLOT_WORDS)
            .and_then(|n| n.checked_add(HEADER_WORDS))
            .ok_or(AttachError::Geometry)?;
        if words.len() < need {
            return Err(AttachError::TooShort);
        }
        Ok(Board { words, slots })
    }

    #[cfg(test)]
    pub(crate) fn slots(&self) -> usize {
        self.slots
    }

    /// Slot `index`, if there is one.
    pub(crate) fn slot(&self, index: usize) -> Option<Slot<'a>> {
        if index >= self.slots {
            return None;
        }
        let at = HEADER_WORDS + index * SLOT_WORDS;
        Some(Slot {
            words: &self.words[at..at + SLOT_WORDS],
        })
    }
}

/// One worker's slot.
#[derive(Clone, Copy)]
pub(crate) struct Slot<'a> {
    words: &'a [AtomicU64],
}

/// A slot's counters as the primary read them, checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) taken: u64,
    pub(crate) finished: u64,
    pub(crate) load: u64,
}

/// A scheduling hint a worker posts to the primary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hint {
    /// Give me no connections until I resume.
    Pause,
    /// Give me connections again.
    Resume,
    /// I can hold this many connections at once (taken and unfinished plus queued); 0
    /// removes the limit. Weighted policies use it as the worker's weight.
    Capacity(u32),
    /// Give me no more connections, and take back the ones queued for me: I am finishing.
    Drain,
}

impl Hint {
    /// One ring entry: the kind in the top byte, the value below.
    pub(crate) fn encode(self) -> u64 {
        match self {
            Hint::Pause => 1 << 56,
            Hint::Resume => 2 << 56,
            Hint::Capacity(n) => (3 << 56) | u64::from(n),
            Hint::Drain => 4 << 56,
        }
    }

    pub(crate) fn decode(entry: u64) -> Option<Hint> {
        let value = entry & ((1 << 56) - 1);
        match entry >> 56 {
            1 if value == 0 => Some(Hint::Pause),
            2 if value == 0 => Some(Hint::Resume),
            3 => u32::try_from(value).ok().map(Hint::Capacity),
            4 if value == 0 => Some(Hint::Drain),
            _ => None,
        }
    }
}

/// What the primary found wrong in a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BadSlot {
    /// The generation is not the one the primary wrote.
    Generation,
    /// More taken than handed, or more finished than taken.
    Counts,
    /// The ring's indices cannot be right, or an entry is no hint.
    HintRing,
}

impl std::fmt::Display for BadSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BadSlot::Generation => "its generation was overwritten",
            BadSlot::Counts => "its counters are impossible",
            BadSlot::HintRing => "its hint ring is corrupt",
        })
    }
}

impl<'a> Slot<'a> {
    fn ring(&self) -> HintRing<'a> {
        HintRing {
            head: &self.words[RING_HEAD],
            tail: &self.words[RING_TAIL],
            entries: &self.words[RING_AT..RING_AT + RING_ENTRIES],
        }
    }

    // The primary's side.

    /// Gives the slot to a new worker: zeroes it and sets `generation` (before the fork).
    pub(crate) fn assign(&self, generation: u64) {
        for w in &self.words[1..] {
            w.store(0, Ordering::Relaxed);
        }
        // Release: a worker that reads this generation (Acquire, at attach) sees the zeroes.
        self.words[GENERATION].store(generation, Ordering::Release);
    }

    pub(crate) fn generation(&self) -> u64 {
        self.words[GENERATION].load(Ordering::Acquire)
    }

    /// Reads the counters and checks them against what the primary knows: the generation it
    /// wrote and the connections it handed over.
    pub(crate) fn read(&self, generation: u64, handed: u64) -> Result<Counts, BadSlot> {
        if self.words[GENERATION].load(Ordering::Relaxed) != generation {
            return Err(BadSlot::Generation);
        }
        // Acquire on `finished` pairs with the release in `add_finished`: a connection is
        // counted taken before it is counted finished, so `taken` read after it is at least
        // as large, unless the worker lies.
        let finished = self.words[FINISHED].load(Ordering::Acquire);
        let taken = self.words[TAKEN].load(Ordering::Acquire);
        if taken > handed || finished > taken {
            return Err(BadSlot::Counts);
        }
        Ok(Counts {
            taken,
            finished,
            load: self.words[LOAD].load(Ordering::Relaxed),
        })
    }

    /// The next hint, if any.
    pub(crate) fn next_hint(&self) -> Result<Option<Hint>, BadSlot> {
        match self.ring().pop() {
            Pop::Empty => Ok(None),
            Pop::Corrupt => Err(BadSlot::HintRing),
            Pop::Entry(e) => Hint::decode(e).map(Some).ok_or(BadSlot::HintRing),
        }
    }

    // The worker's side.

    pub(crate) fn add_taken(&self, n: u64) {
        // Release: pairs with the primary's acquire in `read`.
        self.words[TAKEN].fetch_add(n, Ordering::Release);
    }

    pub(crate) fn add_finished(&self, n: u64) {
        // Release: pairs with the primary's acquire load of `finished` in `read`, ordering
        // the earlier `add_taken` of the same connection before it.
        self.words[FINISHED].fetch_add(n, Ordering::Release);
    }

    pub(crate) fn set_load(&self, load: u64) {
        self.words[LOAD].store(load, Ordering::Relaxed);
    }

    /// Posts a hint; false when the ring is full (the primary has not read the last 16).
    /// One producer at a time: the worker serialises calls.
    pub(crate) fn post(&self, hint: Hint) -> bool {
        self.ring().push(hint.encode())
    }

    /// Test and fuzz access to raw words.
    #[cfg(test)]
    pub(crate) fn raw(&self, word: usize) -> &AtomicU64 {
        &self.words[word]
    }
}

#[cfg(feature = "internals")]
/// For the micro-benchmarks: a board in plain memory with `slots` workers that have taken,
/// finished and published something, read the way the primary reads it.
pub(crate) struct BenchBoard {
    words: Vec<AtomicU64>,
}

#[cfg(feature = "internals")]
impl BenchBoard {
    pub(crate) fn new(slots: usize) -> BenchBoard {
        let words: Vec<AtomicU64> = (0..words_for(slots)).map(|_| AtomicU64::new(0)).collect();
        let board = Board::init(&words).unwrap_or_else(|_| Board::trusted(&words));
        for i in 0..slots {
            if let Some(slot) = board.slot(i) {
                slot.assign(1);
                slot.add_taken(10 + i as u64);
                slot.add_finished(i as u64);
                slot.set_load(i as u64);
            }
        }
        BenchBoard { words }
    }

    /// Every slot's counters and hints, as one dispatch reads them; returns a sum so that
    /// nothing is optimised away.
    pub(crate) fn read_all(&self) -> u64 {
        let board = Board::trusted(&self.words);
        let mut sum = 0;
        for i in 0..board.slots {
            if let Some(slot) = board.slot(i) {
                if let Ok(c) = slot.read(1, u64::MAX) {
                    sum += c.taken - c.finished + c.load;
                }
                while let Ok(Some(_)) = slot.next_hint() {
                    sum += 1;
                }
            }
        }
        sum
    }

    /// One hint posted and taken back through slot 0's ring.
    pub(crate) fn hint_round_trip(&self) -> bool {
        let board = Board::trusted(&self.words);
        board.slot(0).is_some_and(|s| {
            s.post(Hint::Capacity(3)) && s.next_hint() == Ok(Some(Hint::Capacity(3)))
        })
    }
}

#[cfg(feature = "internals")]
/// For the fuzz target: a board over `bytes` (8 per word), attached as a worker does, then
/// every slot read and drained as the primary does, with `handed` as the primary's count.
/// Must neither panic nor loop: a hostile worker controls every one of these bytes.
pub(crate) fn fuzz_attach(bytes: &[u8], handed: u64) {
    let words: Vec<AtomicU64> = bytes
        .chunks_exact(8)
        .map(|c| AtomicU64::new(u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))
        .collect();
    for board in [Board::attach(&words).ok(), Some(Board::trusted(&words))]
        .into_iter()
        .flatten()
    {
        for i in 0..board.slots.min(64) {
            let Some(slot) = board.slot(i) else {
                continue;
            };
            let generation = slot.generation();
            if let Ok(c) = slot.read(generation, handed) {
                assert!(c.finished <= c.taken && c.taken <= handed);
            }
            // A ring can never yield more than it holds before it reads empty or corrupt.
            let mut n = 0;
            while let Ok(Some(_)) = slot.next_hint() {
                n += 1;
                assert!(n <= RING_ENTRIES, "the ring yielded more than it holds");
            }
            let _ = slot.post(Hint::Capacity(7));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(slots: usize) -> Vec<AtomicU64> {
        (0..words_for(slots)).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        assert_eq!((HEADER_WORDS, SLOT_WORDS), (16, 64));
        assert_eq!((GENERATION, TAKEN, FINISHED, LOAD), (0, 1, 2, 3));
        assert_eq!((RING_HEAD, RING_TAIL, RING_AT), (16, 32, 48));
        assert_eq!(MAGIC.to_le_bytes(), *b"RLBOARD\0");
    }

    #[test]
    fn a_fresh_board_attaches_and_slots_are_separate() {
        let words = region(4);
        let board = Board::init(&words).expect("init");
        assert_eq!(board.slots(), 4);
        let seen = Board::attach(&words).expect("attach");
        assert_eq!(seen.slots(), 4);
        assert!(seen.slot(4).is_none());
        let (a, b) = (seen.slot(0).expect("a"), seen.slot(3).expect("b"));
        a.assign(7);
        b.assign(1);
        a.add_taken(3);
        a.add_finished(1);
        a.set_load(99);
        assert_eq!(
            a.read(7, 5),
            Ok(Counts {
                taken: 3,
                finished: 1,
                load: 99
            })
        );
        assert_eq!(b.read(1, 0), Ok(Counts::default()));
    }

    #[test]
    fn headers_that_do_not_fit_are_refused() {
        let words = region(2);
        Board::init(&words).expect("init");
        words[1].store(2, Ordering::Relaxed);
        assert_eq!(Board::attach(&words).err(), Some(AttachError::Version(2)));
        words[1].store(VERSION, Ordering::Relaxed);
        words[4].store(3, Ordering::Relaxed);
        assert_eq!(Board::attach(&words).err(), Some(AttachError::TooShort));
        words[4].store(u64::MAX, Ordering::Relaxed);
        assert_eq!(Board::attach(&words).err(), Some(AttachError::Geometry));
        words[4].store(2, Ordering::Relaxed);
        words[0].store(0, Ordering::Relaxed);
        assert_eq!(Board::attach(&words).err(), Some(AttachError::Magic));
        assert_eq!(
            Board::attach(&words[..3]).err(),
            Some(AttachError::TooShort)
        );
    }

    #[test]
    fn reassigning_a_slot_forgets_the_previous_worker() {
        let words = region(1);
        let slot = Board::init(&words).expect("init").slot(0).expect("slot");
        slot.assign(1);
        slot.add_taken(10);
        slot.add_finished(4);
        assert!(slot.post(Hint::Pause));
        slot.assign(2);
        assert_eq!(slot.read(2, 0), Ok(Counts::default()));
        assert_eq!(slot.read(1, 0), Err(BadSlot::Generation));
        assert_eq!(slot.next_hint(), Ok(None));
    }

    #[test]
    fn impossible_counts_and_garbage_hints_are_bad() {
        let words = region(1);
        let slot = Board::init(&words).expect("init").slot(0).expect("slot");
        slot.assign(1);
        slot.add_taken(3);
        assert_eq!(
            slot.read(1, 2),
            Err(BadSlot::Counts),
            "more taken than handed"
        );
        slot.add_finished(4);
        assert_eq!(
            slot.read(1, 10),
            Err(BadSlot::Counts),
            "more finished than taken"
        );
        for hint in [Hint::Pause, Hint::Resume, Hint::Capacity(12), Hint::Drain] {
            assert!(slot.post(hint));
            assert_eq!(slot.next_hint(), Ok(Some(hint)));
        }
        slot.raw(RING_AT + 4).store(u64::MAX, Ordering::Relaxed);
        slot.raw(RING_TAIL).store(5, Ordering::Relaxed);
        assert_eq!(slot.next_hint(), Err(BadSlot::HintRing));
    }

    #[test]
    fn hints_round_trip_and_unknown_entries_do_not_decode() {
        for hint in [
            Hint::Pause,
            Hint::Resume,
            Hint::Capacity(0),
            Hint::Capacity(u32::MAX),
            Hint::Drain,
        ] {
            assert_eq!(Hint::decode(hint.encode()), Some(hint));
        }
        for junk in [0, 5 << 56, (1 << 56) | 1, (3 << 56) | (1 << 40)] {
            assert_eq!(Hint::decode(junk), None);
        }
    }
}
