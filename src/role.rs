//! Am I the primary or a worker? Read from the environment once (Node: `cluster.isPrimary`).

use std::sync::atomic::{AtomicBool, Ordering};

use ringleader_sys::env::{self, thread_count};

use crate::contract::ENV_WORKER_ID;
use crate::error::{Error, ErrorKind, Result};
use crate::primary::Primary;
use crate::worker::Worker;

static WORKER_TAKEN: AtomicBool = AtomicBool::new(false);

/// What this process is.
#[derive(Debug)]
pub enum Role {
    /// The process that forks workers (Node: `cluster.isPrimary`).
    Primary(Primary),
    /// A worker, connected to its primary (Node: `cluster.isWorker`, `cluster.worker`).
    Worker(Worker),
}

/// Tells whether this process is the primary or a worker, and sets it up as such.
///
/// In a worker it takes the inherited control channel, removes ringleader's variables from
/// the environment (so the worker's own children are not mistaken for workers), starts the
/// channel's watcher thread and tells the primary the worker is online, all before it
/// returns. Call it first thing in `main`, before starting threads: removing environment
/// variables is only sound then, and a primary's signals reach its loop only from threads
/// started after they were blocked. It checks: a process that already runs other threads
/// (`#[tokio::main]` starts the runtime's first) gets an error that says so.
///
/// # Errors
/// [`ErrorKind::Settings`] when the process already runs other threads;
/// [`ErrorKind::RoleTaken`] when called twice in a worker; [`ErrorKind::Io`] when the
/// inherited channel is missing or is not a Unix stream socket, or a primary's event loop
/// cannot be created.
///
/// # Examples
/// ```no_run
/// match ringleader::role()? {
///     ringleader::Role::Primary(primary) => { primary.fork(&[])?; }
///     ringleader::Role::Worker(worker) => { worker.send(b"hello")?; }
/// }
/// # Ok::<(), ringleader::Error>(())
/// ```
pub fn role() -> Result<Role> {
    const OP: &str = "start as a worker";
    if WORKER_TAKEN.load(Ordering::Acquire) {
        return Err(Error::new(ErrorKind::RoleTaken, OP));
    }
    single_threaded()?;
    let Some(id) = env::take_var(ENV_WORKER_ID) else {
        return Primary::new().map(Role::Primary);
    };
    WORKER_TAKEN.store(true, Ordering::Release);
    Worker::from_environment(&id).map(Role::Worker)
}

/// Refuses a process that already runs other threads: a worker's environment cannot be
/// changed soundly then, and a primary's signals would not reach its loop (a `SIGHUP` meant
/// for a roll would kill the process in a thread that does not block it).
fn single_threaded() -> Result<()> {
    const OP: &str = "learn the process's role";
    let threads = thread_count().map_err(|e| Error::io(OP, e))?;
    if threads <= 1 {
        return Ok(());
    }
    Err(Error::new(ErrorKind::Settings, OP).detail(format!(
        "role() must run before any other thread starts, and this process has {threads} \
         threads: call it first in main; with tokio, build the runtime in each branch after \
         it, not with #[tokio::main] (see ringleader::tokio)"
    )))
}

/// Whether this process was started as a worker, without setting anything up.
pub fn is_worker() -> bool {
    WORKER_TAKEN.load(Ordering::Acquire) || std::env::var_os(ENV_WORKER_ID).is_some()
}
