//! A worker takes what its primary left it in the environment ([`crate::contract`]): its
//! id, its control channel and its load board, each read once and removed.

use std::ffi::OsStr;

use ringleader_sys::env;

use super::Worker;
use super::board::WorkerBoard;
use crate::contract::{CHANNEL_FD, ENV_BOARD_FD, ENV_BOARD_SLOT, ENV_CHANNEL_FD, ENV_WORKER_ID};
use crate::error::{Error, ErrorKind, Result};

impl Worker {
    /// Starts the worker whose id the primary passed as `id` (already taken from the
    /// environment), from the channel and board it left at their fds.
    pub(crate) fn from_environment(id: &OsStr) -> Result<Worker> {
        const OP: &str = "start as a worker";
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
                    .ok_or_else(|| {
                        bad(format!("{ENV_BOARD_SLOT}={slot:?} is not index:generation"))
                    })?;
                let fd = match env::take_inherited_fd(fd_num) {
                    Some(Ok(fd)) => fd,
                    Some(Err(e)) => return Err(Error::io(OP, e)),
                    None => return Err(bad(format!("no load board at fd {fd_num}"))),
                };
                Some(WorkerBoard::attach(&fd, index, generation)?)
            }
            _ => None,
        };
        Worker::start(id, sock, board)
    }
}
