//! fds registered with a tokio runtime's reactor (feature `tokio`).
//!
//! tokio's `AsyncFd` registers a raw fd number and trusts its owner to keep it open and the
//! same; its constructors are `unsafe` for that. Here the registration owns a copy of the fd
//! (the same open file description, so the same readiness), which lives exactly as long as
//! the registration: nothing the caller does to its own fd can break it.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

pub use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Registers a copy of `fd` with the current tokio runtime for `interest`.
///
/// # Errors
/// What `fcntl(F_DUPFD_CLOEXEC)` or the registration returns (outside a runtime, for one).
pub fn register(fd: BorrowedFd<'_>, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    let copy = fd.try_clone_to_owned()?;
    // SAFETY: `copy` is an `OwnedFd` moved into the `AsyncFd`: it is open, and its number
    // stays the same, for as long as the `AsyncFd` holds it, which is the registration's life.
    unsafe { AsyncFd::register_with_interest(copy, interest) }.map_err(|e| e.into_parts().1)
}
