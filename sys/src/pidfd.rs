//! Process file descriptors: `pidfd_open(2)`, `pidfd_send_signal(2)` and `waitid(P_PIDFD)`.
//!
//! A pidfd names one process for good: no pid-reuse race when signalling or reaping, and it is
//! readable (`POLLIN`) once the process has exited, so an event loop can wait for it.

use std::io;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::process::{Pid, PidfdFlags, WaitId, WaitIdOptions};

use crate::signal::Signal;

/// How a process ended: exactly one of `code` and `signal` is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code, when the process exited by itself.
    pub code: Option<i32>,
    /// The signal that ended it, when it was killed.
    pub signal: Option<Signal>,
}

/// A pidfd for a child process.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: u32,
}

impl PidFd {
    /// `pidfd_open(2)` for `pid`. Race-free for an unreaped child of this process.
    ///
    /// # Errors
    /// `ESRCH` when there is no such process; `ENOSYS` before Linux 5.3.
    ///
    /// # References
    /// [`pidfd_open(2)`](https://man7.org/linux/man-pages/man2/pidfd_open.2.html)
    pub fn open(pid: u32) -> io::Result<PidFd> {
        let raw = i32::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let p = Pid::from_raw(raw).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let fd = rustix::process::pidfd_open(p, PidfdFlags::empty())?;
        Ok(PidFd { fd, pid })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its resident set in bytes, from `/proc/PID/statm` (pages, times the page size). The
    /// pidfd keeps the pid from being reused until the process is reaped; a process that
    /// exited and is not reaped yet has none (0).
    ///
    /// # Errors
    /// Reading or parsing the file.
    pub fn resident_bytes(&self) -> io::Result<u64> {
        let statm = std::fs::read_to_string(format!("/proc/{}/statm", self.pid))?;
        let pages: u64 = statm
            .split_ascii_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "statm"))?;
        Ok(pages * rustix::param::page_size() as u64)
    }

    /// `pidfd_send_signal(2)`. `ESRCH` (already exited) is reported as an error.
    ///
    /// # Errors
    /// `ESRCH` once the process has exited, `EPERM` without permission.
    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        let sig = rustix::process::Signal::from_named_raw(sig.as_raw())
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(rustix::process::pidfd_send_signal(&self.fd, sig)?)
    }

    /// Whether the process has exited, leaving it unreaped (`waitid(P_PIDFD, WEXITED |
    /// WNOHANG | WNOWAIT)`): its pid, and the process group it leads, stay its own until
    /// [`PidFd::try_wait`].
    ///
    /// # Errors
    /// `ECHILD` when it was already reaped.
    pub fn has_exited(&self) -> io::Result<bool> {
        loop {
            match rustix::process::waitid(
                WaitId::PidFd(self.fd.as_fd()),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                other => return Ok(other?.is_some()),
            }
        }
    }

    /// `waitid(P_PIDFD, WEXITED | WNOHANG)`: reaps the process if it has exited.
    ///
    /// # Errors
    /// `ECHILD` when it was already reaped.
    pub fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        let status = loop {
            match rustix::process::waitid(
                WaitId::PidFd(self.fd.as_fd()),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other?,
            }
        };
        Ok(status.and_then(|s| {
            if s.exited() {
                Some(ExitStatus {
                    code: s.exit_status(),
                    signal: None,
                })
            } else if s.killed() || s.dumped() {
                Some(ExitStatus {
                    code: None,
                    signal: s.terminating_signal().and_then(Signal::from_raw),
                })
            } else {
                None
            }
        }))
    }

    /// Waits (blocking) until the process exits and reaps it.
    ///
    /// # Errors
    /// As [`PidFd::try_wait`].
    pub fn wait(&self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            crate::poll::poll(&[(&self.fd, crate::poll::IN)], None)?;
        }
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
