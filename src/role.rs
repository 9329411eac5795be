//! Am I the primary or a worker? Read from the environment once (Node: `cluster.isPrimary`).

use std::sync::atomic::{AtomicBool, Ordering};

use ringleader_sys::env;

use crate::error::{Error, ErrorKind, Result};
use crate::primary::Primary;
use crate::worker::Worker;

/// The worker's id (Node: `NODE_UNIQUE_ID`).
pub(crate) const ENV_WORKER_ID: &str = "RINGLEADER_WORKER_ID";
/// The control channel's fd number (Node: `NODE_CHANNEL_FD`).
pub(crate) const ENV_CHANNEL_FD: &str = "RINGLEADER_CHANNEL_FD";
/// The scheduling policy (Node: `NODE_CLUSTER_SCHED_POLICY`).
pub const ENV_SCHED_POLICY: &str = "RINGLEADER_SCHED_POLICY";
/// `epoll` forces the fallback event loop.
pub const ENV_BACKEND: &str = "RINGLEADER_BACKEND";
/// Where the control channel sits in a worker.
pub(crate) const CHANNEL_FD: i32 = 3;
/// The load board's fd number in a worker.
pub(crate) const ENV_BOARD_FD: &str = "RINGLEADER_BOARD_FD";
/// The worker's board slot and its generation, `index:generation`.
pub(crate) const ENV_BOARD_SLOT: &str = "RINGLEADER_BOARD_SLOT";
/// Where the load board sits in a worker.
pub(crate) const BOARD_FD: i32 = 4;

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
    let bad = |what: String| Error::new(ErrorKind::Io, OP).detail(what);
    let id: u32 = id
        .to_str()
        .and_then(|s| s.parse().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| bad(format!("{ENV_WORKER_ID}={id:?} is not a worker id")))?;
    let fd_num: i32 = env::take_var(ENV_CHANNEL_FD)
        .and_then(|v| v.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or(CHANNEL_FD);
    let sock = match env::take_inherited_fd(fd_num) {
        Some(Ok(fd)) => fd,
        Some(Err(e)) => return Err(Error::io(OP, e)),
        None => return Err(bad(format!("no control channel at fd {fd_num}"))),
    };
    match ringleader_sys::socket::is_unix_stream(&sock) {
        Ok(true) => {}
        Ok(false) => return Err(bad(format!("fd {fd_num} is not a Unix stream socket"))),
        Err(e) => return Err(Error::io(OP, e)),
    }
    // The board is optional: a worker without one (no slot left, no memfd) works, unseen by
    // load-aware policies. A broken one is an error: the primary promised it.
    let board = match (env::take_var(ENV_BOARD_FD), env::take_var(ENV_BOARD_SLOT)) {
        (Some(fd), Some(slot)) => {
            let fd_num: i32 = fd
                .to_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(format!("{ENV_BOARD_FD}={fd:?} is not an fd number")))?;
            let (index, generation) = slot
                .to_str()
                .and_then(|s| s.split_once(':'))
                .and_then(|(i, g)| Some((i.parse().ok()?, g.parse().ok()?)))
                .ok_or_else(|| bad(format!("{ENV_BOARD_SLOT}={slot:?} is not index:generation")))?;
            let fd = match env::take_inherited_fd(fd_num) {
                Some(Ok(fd)) => fd,
                Some(Err(e)) => return Err(Error::io(OP, e)),
                None => return Err(bad(format!("no load board at fd {fd_num}"))),
            };
            Some(crate::worker::board::WorkerBoard::attach(
                &fd, index, generation,
            )?)
        }
        _ => None,
    };
    Worker::start(id, sock, board).map(Role::Worker)
}

/// Whether this process was started as a worker, without setting anything up.
pub fn is_worker() -> bool {
    WORKER_TAKEN.load(Ordering::Acquire) || std::env::var_os(ENV_WORKER_ID).is_some()
}
