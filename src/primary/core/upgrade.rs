//! Upgrading the primary in place ([`Upgrade`]): a new primary is started from a program
//! read again from disk and given every listening socket; once all its workers listen, it
//! says so, and this one stops accepting, lets its workers take what it accepted, and
//! disconnects them. A new primary that exits or is not ready in time is killed, and this one
//! keeps serving.
//!
//! The channel between the two generations carries fds and single bytes, nothing to parse:
//! the old primary sends its sockets, each with a byte that says what it was there
//! ([`Tag`]), and shuts down its writing half; the new one reads them to end of file, matches
//! them to its listens by where they are bound (as it does socket activation's), and writes
//! one byte when it is ready.

use std::ffi::OsString;
use std::io::IoSlice;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use ringleader_sys::pidfd::PidFd;
use ringleader_sys::scm::{self, Blocking, MAX_FDS};
use ringleader_sys::signal::Signal;
use ringleader_sys::socket::{self, How};
use ringleader_sys::spawn::{self, SpawnRequest, Stdio};
use ringleader_sys::{AsFd, OwnedFd, systemd};

use super::Core;
use crate::contract::{ENV_UPGRADE_FD, UPGRADE_FD};
use crate::error::{Error, ErrorKind, Result};
use crate::primary::event::Event;
use crate::primary::listeners::Tag;
use crate::primary::settings::Upgrade;

/// How often an upgrade under way is looked at: the new primary's byte, or its exit.
const UPGRADE_CHECK: Duration = Duration::from_millis(10);

/// An upgrade under way, on the old primary's side.
#[derive(Debug)]
pub(crate) struct Upgrading {
    child: PidFd,
    channel: OwnedFd,
    ready_by: Instant,
    /// The new primary is ready: this one retires.
    retiring: bool,
}

impl Upgrading {
    /// When the loop must look again.
    pub(crate) fn next_check(&self) -> Instant {
        Instant::now() + UPGRADE_CHECK
    }
}

impl Core {
    /// Starts a new primary and hands it the listening sockets.
    ///
    /// # Errors
    /// [`ErrorKind::Settings`] while an upgrade is under way; [`ErrorKind::Io`] when the new
    /// primary cannot be started or given the sockets.
    pub(crate) fn upgrade(&mut self, up: Upgrade) -> Result<()> {
        const OP: &str = "upgrade the primary";
        if self.upgrading.is_some() {
            return Err(Error::new(ErrorKind::Settings, OP).detail("an upgrade is under way"));
        }
        let program = match up.exec {
            Some(p) => p,
            None => std::env::current_exe().map_err(|e| Error::io(OP, e))?,
        };
        let (ours, theirs) = socket::stream_pair().map_err(|e| Error::io(OP, e))?;
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        env.push((ENV_UPGRADE_FD.into(), UPGRADE_FD.to_string().into()));
        let spawned = spawn::spawn(SpawnRequest {
            program,
            args: std::env::args_os().skip(1).collect(),
            env,
            cwd: None,
            uid: None,
            gid: None,
            stdio: [Stdio::Inherit; 3],
            inherit: vec![(theirs.as_fd(), UPGRADE_FD)],
            // It outlives this primary: that is the point.
            death_signal: None,
            pid_var: None,
            own_group: false,
            cpu: None,
        })
        .map_err(|e| Error::io(OP, e))?;
        drop(theirs);
        let child = spawned.pidfd;
        let sockets: Vec<(Tag, BorrowedFd<'_>)> = self.listeners.upgrade_sockets();
        let sent = sockets.chunks(MAX_FDS).try_for_each(|chunk| {
            // One byte per socket, saying what it was here ([`Tag`]).
            let tags: Vec<u8> = chunk.iter().map(|(tag, _)| tag.byte()).collect();
            let fds: Vec<_> = chunk.iter().map(|(_, fd)| *fd).collect();
            scm::send(&ours, &[IoSlice::new(&tags)], &fds, Blocking::Yes).map(drop)
        });
        drop(sockets);
        let sent = sent
            .and_then(|()| socket::shutdown(&ours, How::Write))
            .and_then(|()| socket::set_nonblocking(&ours, true));
        if let Err(e) = sent {
            // It died before it took them (a program that is no primary, say): a failed
            // upgrade, not a failed call.
            let _ = child.signal(Signal::KILL);
            reap(&child);
            self.ready.push_back(Event::UpgradeFailed {
                reason: format!("it did not take the sockets: {e}"),
            });
            return Ok(());
        }
        let pid = child.pid();
        self.upgrading = Some(Upgrading {
            child,
            channel: ours,
            ready_by: Instant::now() + up.ready_within,
            retiring: false,
        });
        self.ready.push_back(Event::UpgradeStarted { pid });
        Ok(())
    }

    /// Moves an upgrade on: the new primary's readiness or failure, then this primary's
    /// retirement once its workers have taken everything it accepted.
    pub(super) fn upgrade_on(&mut self) {
        let Some(u) = self.upgrading.as_mut() else {
            return;
        };
        if u.retiring {
            // Hand-offs the last dispatch queued on the ring (or that ended with
            // connections left over) are seen neither in the pending queue nor in a
            // worker's channel until they are settled: without this, the workers could be
            // disconnected with a connection on its way to one of them, which would then
            // have no one to go to.
            self.settle_handoffs();
            if self.listeners.handed_all() {
                self.upgrading = None;
                let _ = self.disconnect_all();
            }
            return;
        }
        let mut byte = [0u8; 1];
        let mut fds = Vec::new();
        let failure = match scm::recv(&u.channel, &mut byte, &mut fds, Blocking::No) {
            Ok(1) => None,
            Ok(_) => Some("it closed the channel before it was ready".to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = u.child.try_wait() {
                    Some(format!("it exited ({status:?}) before it was ready"))
                } else if Instant::now() >= u.ready_by {
                    Some("it was not ready in time".to_owned())
                } else {
                    return;
                }
            }
            Err(e) => Some(format!("its channel failed: {e}")),
        };
        if let Some(reason) = failure {
            let _ = u.child.signal(Signal::KILL);
            reap(&u.child);
            self.upgrading = None;
            self.ready.push_back(Event::UpgradeFailed { reason });
            return;
        }
        let pid = u.child.pid();
        u.retiring = true;
        self.listeners.retire(&mut self.driver);
        if self.manager_listens() {
            let _ = systemd::notify(&format!("MAINPID={pid}"));
        }
        self.ready.push_back(Event::UpgradeReady { pid });
    }
}

/// Waits (briefly: it was SIGKILLed) for a child and reaps it.
fn reap(child: &PidFd) {
    let _ = ringleader_sys::poll::poll(
        &[(child, ringleader_sys::poll::IN)],
        Some(Duration::from_secs(5)),
    );
    let _ = child.try_wait();
}

/// In a new primary started by an upgrade: the channel to the old one and the sockets it
/// passed, each with the byte that says what it was there ([`Tag`]), read to the channel's
/// end. `None` in any other process.
pub(crate) fn from_old_primary() -> Option<(OwnedFd, Vec<(u8, OwnedFd)>)> {
    ringleader_sys::env::take_var(ENV_UPGRADE_FD)?;
    let channel = ringleader_sys::env::take_inherited_fd(UPGRADE_FD)?.ok()?;
    let mut sockets = Vec::new();
    let mut buf = [0u8; MAX_FDS];
    loop {
        let mut fds = Vec::new();
        match scm::recv(&channel, &mut buf, &mut fds, Blocking::Yes) {
            Ok(0) | Err(_) => break,
            // A byte per fd; an fd without its byte (cannot happen) is closed.
            Ok(n) => sockets.extend(buf[..n].iter().copied().zip(fds)),
        }
    }
    Some((channel, sockets))
}
