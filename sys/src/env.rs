//! The worker's environment: read once, then removed so it does not reach the worker's own
//! children.

use std::ffi::OsString;
use std::sync::Mutex;

static ENV_LOCK: Mutex<()> = Mutex::new(());

/// Reads `name` and removes it from the process environment.
///
/// The removal goes through `std::env::remove_var`, which is only sound while no other thread
/// reads the environment through C (`getenv(3)`). Call this at the start of `main`, before the
/// program starts threads; ringleader calls it from `role()`, whose documentation says so.
pub fn take_var(name: &str) -> Option<OsString> {
    let _guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let value = std::env::var_os(name)?;
    // SAFETY: std's own environment accesses take its internal lock, so Rust readers are
    // serialised with this removal; the remaining hazard, a thread reading the environment
    // through C `getenv` at the same moment, is excluded by the documented contract above
    // (called at start-up, before other threads exist).
    unsafe { std::env::remove_var(name) };
    Some(value)
}

/// Takes ownership of the fd number `raw` that this process inherited from its parent, and
/// makes it close-on-exec.
///
/// Returns `None` when nothing is open at that number, or `Some(Err)` if the fd cannot be made
/// close-on-exec.
pub fn take_inherited_fd(raw: i32) -> Option<std::io::Result<rustix::fd::OwnedFd>> {
    use rustix::fd::{BorrowedFd, FromRawFd, OwnedFd};
    if raw < 0 {
        return None;
    }
    static TAKEN: Mutex<Vec<i32>> = Mutex::new(Vec::new());
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    if taken.contains(&raw) {
        return None;
    }
    // SAFETY: borrowing only for the duration of the fcntl below; an invalid number gives EBADF.
    let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
    let flags = match rustix::io::fcntl_getfd(borrowed) {
        Ok(flags) => flags,
        Err(_) => return None,
    };
    if let Err(e) = rustix::io::fcntl_setfd(borrowed, flags | rustix::io::FdFlags::CLOEXEC) {
        return Some(Err(e.into()));
    }
    taken.push(raw);
    // SAFETY: the fd is open (fcntl succeeded), it was placed at this number for this process
    // by its parent (the environment says so), and the `TAKEN` list ensures that at most one
    // OwnedFd is ever made for it.
    Some(Ok(unsafe { OwnedFd::from_raw_fd(raw) }))
}

/// How many threads this process has now (the entries of `/proc/self/task`).
///
/// # Errors
/// What reading `/proc/self/task` returns (no procfs mounted, for one).
pub fn thread_count() -> std::io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}
