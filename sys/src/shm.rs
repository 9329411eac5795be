//! Shared memory as a slice of 64-bit atomics: a `memfd_create(2)` file, sealed against
//! shrinking and growing, mapped `MAP_SHARED` with memmap2. The primary creates one; every
//! worker attaches to the same fd. What the words mean is the caller's business.

use std::io;
use std::sync::atomic::AtomicU64;

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{MemfdFlags, SealFlags};

use crate::{AsFd, BorrowedFd, OwnedFd};

/// A shared mapping seen as `&[AtomicU64]`.
pub struct SharedWords {
    map: MmapRaw,
    words: usize,
}

impl std::fmt::Debug for SharedWords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedWords")
            .field("words", &self.words)
            .finish()
    }
}

impl SharedWords {
    /// Creates a zeroed region of `words` 64-bit words: `memfd_create(2)` (close-on-exec,
    /// sealable), `ftruncate(2)`, then `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`, so nobody
    /// holding the fd can shrink it under a mapping (which would make reads fault with
    /// `SIGBUS`). Returns the fd to hand to other processes, and the creator's mapping.
    ///
    /// # Errors
    /// What the system calls return; `InvalidInput` for zero words.
    pub fn create(name: &str, words: usize) -> io::Result<(OwnedFd, SharedWords)> {
        if words == 0 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        rustix::fs::ftruncate(&fd, (words * 8) as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        let shared = SharedWords::attach(fd.as_fd())?;
        Ok((fd, shared))
    }

    /// Maps the region behind `fd`. Only sealed memfds are accepted: a file someone could
    /// shrink would turn every read into a possible `SIGBUS`.
    ///
    /// # Errors
    /// `InvalidData` when the fd is not sealed against shrinking or its size is not a
    /// non-zero multiple of 8; what `fstat(2)` and `mmap(2)` return.
    pub fn attach(fd: BorrowedFd<'_>) -> io::Result<SharedWords> {
        let seals = rustix::fs::fcntl_get_seals(fd)?;
        if !seals.contains(SealFlags::SHRINK) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "shared memory not sealed against shrinking",
            ));
        }
        let size = rustix::fs::fstat(fd)?.st_size;
        let size = usize::try_from(size).map_err(|_| io::ErrorKind::InvalidData)?;
        if size == 0 || size % 8 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "shared memory size is not a multiple of 8",
            ));
        }
        let map = MmapOptions::new().len(size).map_raw(&fd)?;
        Ok(SharedWords {
            map,
            words: size / 8,
        })
    }

    /// The mapping's words.
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page-aligned (so 8-byte aligned), `words * 8` bytes long,
        // readable and writable, and lives as long as `self`. The file cannot shrink (sealed,
        // checked in `attach`), so every page stays backed. `AtomicU64` has the size and
        // alignment of `u64`, and every bit pattern is a valid value; other processes touch
        // these bytes only through atomic instructions of the same width, which is what
        // the shared-memory contract of the board requires, so no access here is a data race
        // in the sense of the memory model.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<AtomicU64>(), self.words) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn two_mappings_of_one_memfd_see_each_other() {
        let (fd, a) = SharedWords::create("test", 512).expect("create");
        let b = SharedWords::attach(fd.as_fd()).expect("attach");
        assert_eq!(b.words().len(), 512);
        assert!(a.words().iter().all(|w| w.load(Ordering::Relaxed) == 0));
        a.words()[511].store(42, Ordering::Release);
        assert_eq!(b.words()[511].load(Ordering::Acquire), 42);
        let flags = rustix::io::fcntl_getfd(&fd).expect("flags");
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        // Nobody can shrink it under the mappings.
        assert!(rustix::fs::ftruncate(&fd, 8).is_err());
    }

    #[test]
    fn unsealed_or_odd_sized_files_are_refused() {
        let fd = rustix::fs::memfd_create("plain", MemfdFlags::CLOEXEC).expect("memfd");
        rustix::fs::ftruncate(&fd, 4096).expect("size");
        let err = SharedWords::attach(fd.as_fd()).expect_err("unsealed");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(SharedWords::create("zero", 0).is_err());
    }
}
