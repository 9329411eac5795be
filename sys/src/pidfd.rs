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

    /// The CPU time it has used, user and system, from `/proc/PID/stat` (`utime` and
    /// `stime`, in clock ticks). Its children's are not counted.
    ///
    /// # Errors
    /// Reading or parsing the file.
    pub fn cpu_time(&self) -> io::Result<std::time::Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        Ok(std::time::Duration::from_secs_f64(
            stat_ticks(&stat)? as f64 / rustix::param::clock_ticks_per_second() as f64,
        ))
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

/// `utime` plus `stime` of a `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself, so the fields are counted from
/// its last `)`: `state` is the first after it, `utime` the twelfth, `stime` the thirteenth.
fn stat_ticks(stat: &str) -> io::Result<u64> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "stat");
    let after = &stat[stat.rfind(')').ok_or_else(bad)? + 1..];
    let mut fields = after.split_ascii_whitespace().skip(11);
    let mut next =
        || -> io::Result<u64> { fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad) };
    Ok(next()? + next()?)
}

#[cfg(test)]
mod stat_tests {
    use super::*;

    #[test]
    fn ticks_are_read_past_a_command_name_with_spaces_and_parentheses() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 1 0 9 1 1";
        assert_eq!(stat_ticks(line).expect("parsed"), 22);
        assert!(stat_ticks("4242 (x) S 1").is_err());
        assert!(stat_ticks("no parenthesis").is_err());
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let me = PidFd::open(std::process::id()).expect("pidfd");
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::black_box(0);
        }
        assert!(me.cpu_time().expect("stat") > std::time::Duration::ZERO);
    }
}
