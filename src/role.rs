//! Am I the primary or a worker? Read from the environment once (Node: `cluster.isPrimary`).

use std::sync::atomic::{AtomicBool, Ordering};

use ringleader_sys::env;

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
/// variables is only sound then.
///
/// # Errors
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
    let Some(id) = env::take_var(ENV_WORKER_ID) else {
        return Primary::new().map(Role::Primary);
    };
    WORKER_TAKEN.store(true, Ordering::Release);
    Worker::from_environment(&id).map(Role::Worker)
}

/// Whether this process was started as a worker, without setting anything up.
pub fn is_worker() -> bool {
    WORKER_TAKEN.load(Ordering::Acquire) || std::env::var_os(ENV_WORKER_ID).is_some()
}
