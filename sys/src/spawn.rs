//! Spawning a worker: `fork(2)` + `execve(2)` through `std::process::Command`, with chosen fds
//! inherited at fixed numbers, a pidfd, and `PR_SET_PDEATHSIG` armed in the child.
//!
//! # Implementation notes
//! Everything that could allocate (argv, envp, the fd plan) is prepared before the fork. In the
//! child, between fork and exec, only async-signal-safe system calls run: `prctl`, `getppid`,
//! `sigprocmask`, `signal`, `fcntl`, `dup2`, `close`, `close_range`. The child starts with an
//! empty signal mask and `SIGPIPE` at its default, which std's spawn no longer ensures: a
//! primary that blocks signals for its signalfd does not pass the mask on.
//!
//! The death signal fires when the *thread* that spawned the child exits, not the process
//! (prctl(2)), so spawn from the long-lived thread that owns the cluster. A primary that dies
//! between `fork` and `prctl` is caught by re-checking `getppid()` after arming.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio as StdStdio};

use rustix::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use crate::pidfd::PidFd;
use crate::signal::Signal;

/// What a standard stream of the child is connected to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stdio {
    /// The parent's own stream (the default).
    #[default]
    Inherit,
    /// A pipe whose other end the parent gets in [`Spawned`].
    Pipe,
    /// `/dev/null`.
    Null,
}

/// Everything needed to start one child.
#[derive(Debug)]
pub struct SpawnRequest<'a> {
    /// The program; a bare name is looked up in `PATH`.
    pub program: PathBuf,
    /// `argv[1..]`; `argv[0]` is `program`.
    pub args: Vec<OsString>,
    /// The child's whole environment (nothing else is inherited).
    pub env: Vec<(OsString, OsString)>,
    /// The working directory, or the parent's.
    pub cwd: Option<PathBuf>,
    /// `setuid(2)` in the child.
    pub uid: Option<u32>,
    /// `setgid(2)` in the child (supplementary groups are dropped when either is set).
    pub gid: Option<u32>,
    /// fd 0, 1, 2.
    pub stdio: [Stdio; 3],
    /// fds to inherit, each placed at the given number (3 or more) without close-on-exec.
    pub inherit: Vec<(BorrowedFd<'a>, RawFd)>,
    /// `PR_SET_PDEATHSIG`: the signal the child gets when the spawning thread exits.
    pub death_signal: Option<Signal>,
}

/// A started child.
#[derive(Debug)]
pub struct Spawned {
    /// Its pidfd (see [`crate::pidfd`]); reap it with [`PidFd::try_wait`].
    pub pidfd: PidFd,
    /// The parent's end of the child's stdin, when it was [`Stdio::Pipe`].
    pub stdin: Option<File>,
    /// The parent's end of the child's stdout, when it was [`Stdio::Pipe`].
    pub stdout: Option<File>,
    /// The parent's end of the child's stderr, when it was [`Stdio::Pipe`].
    pub stderr: Option<File>,
}

fn std_stdio(s: Stdio) -> StdStdio {
    match s {
        Stdio::Inherit => StdStdio::inherit(),
        Stdio::Pipe => StdStdio::piped(),
        Stdio::Null => StdStdio::null(),
    }
}

/// Starts the child described by `req`.
///
/// # Errors
/// `InvalidInput` for an inherited fd placed below 3 or twice at one number; what
/// `fork(2)`/`execve(2)` return (an exec failure such as `ENOENT` is reported here, not as an
/// exit of the child); what `pidfd_open(2)` returns (the child is killed and reaped then).
pub fn spawn(req: SpawnRequest<'_>) -> io::Result<Spawned> {
    let mut plan: Vec<(RawFd, RawFd)> = Vec::with_capacity(req.inherit.len());
    for (fd, target) in &req.inherit {
        if *target < 3 || plan.iter().any(|(_, t)| t == target) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot inherit an fd at number {target}"),
            ));
        }
        plan.push((fd.as_raw_fd(), *target));
    }
    let above = plan.iter().map(|(_, t)| *t).max().unwrap_or(2) + 1;
    let mut temps: Vec<RawFd> = vec![-1; plan.len()];
    let mut sorted_targets: Vec<RawFd> = plan.iter().map(|(_, t)| *t).collect();
    sorted_targets.sort_unstable();
    let parent = std::process::id() as libc::pid_t;
    let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set it is given.
    unsafe { libc::sigemptyset(empty.as_mut_ptr()) };
    // SAFETY: initialised just above.
    let empty = unsafe { empty.assume_init() };
    let death_signal = req.death_signal.map(Signal::as_raw);

    let mut cmd = Command::new(&req.program);
    cmd.args(&req.args)
        .env_clear()
        .envs(req.env.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str())))
        .stdin(std_stdio(req.stdio[0]))
        .stdout(std_stdio(req.stdio[1]))
        .stderr(std_stdio(req.stdio[2]));
    if let Some(dir) = &req.cwd {
        cmd.current_dir(dir);
    }
    if let Some(gid) = req.gid {
        cmd.gid(gid);
    }
    if let Some(uid) = req.uid {
        cmd.uid(uid);
    }
    let child_setup = move || -> io::Result<()> {
        // A clean start: nothing blocked (a primary blocks the signals its signalfd reads)
        // and SIGPIPE back to its default (the Rust runtime ignores it); handlers are reset by
        // the exec itself. std's spawn no longer does either for us.
        // SAFETY: sigprocmask is async-signal-safe; `empty` was made before the fork.
        if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: signal(2) is async-signal-safe and SIG_DFL needs no handler.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        if let Some(sig) = death_signal {
            // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no memory.
            if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl: then no signal will come.
            // SAFETY: getppid has no preconditions.
            if unsafe { libc::getppid() } != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
        }
        // Two phases, so that no source is overwritten before it is copied: first every source
        // above the highest target, then each into place (dup2 clears close-on-exec).
        for (i, (src, _)) in plan.iter().enumerate() {
            // SAFETY: fcntl(F_DUPFD_CLOEXEC) on an fd the parent kept open across the fork.
            let tmp = unsafe { libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, above) };
            if tmp < 0 {
                return Err(io::Error::last_os_error());
            }
            temps[i] = tmp;
        }
        for (i, (_, target)) in plan.iter().enumerate() {
            // SAFETY: `temps[i]` is the copy made above; `target` is a number we own in the
            // child (any fd there was close-on-exec and is replaced on purpose).
            if unsafe { libc::dup2(temps[i], *target) } < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: closing our temporary copy, which nothing else uses.
            unsafe { libc::close(temps[i]) };
        }
        // Everything else is made close-on-exec, including fds this process inherited without
        // the flag: the worker gets exactly what was chosen. close_range(2) needs 5.11; on
        // older kernels only our own (already close-on-exec) fds are guaranteed.
        let mut from: libc::c_uint = 3;
        for target in &sorted_targets {
            let target = *target as libc::c_uint;
            if target > from {
                // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on fds.
                unsafe {
                    libc::syscall(
                        libc::SYS_close_range,
                        from,
                        target - 1,
                        libc::CLOSE_RANGE_CLOEXEC,
                    )
                };
            }
            from = target + 1;
        }
        // SAFETY: as above, up to the highest possible fd.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                from,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
        Ok(())
    };
    // SAFETY: `child_setup` runs between fork and exec and calls only async-signal-safe
    // functions (sigprocmask, signal, prctl, getppid, fcntl, dup2, close, close_range) on
    // memory allocated before the fork; it allocates nothing and takes no locks.
    unsafe { cmd.pre_exec(child_setup) };

    let mut child = cmd.spawn()?;
    let pidfd = match PidFd::open(child.id()) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let stdin = child.stdin.take().map(|s| File::from(OwnedFd::from(s)));
    let stdout = child.stdout.take().map(|s| File::from(OwnedFd::from(s)));
    let stderr = child.stderr.take().map(|s| File::from(OwnedFd::from(s)));
    // `Child` neither kills nor reaps on drop; the pidfd does both from here on.
    drop(child);
    Ok(Spawned {
        pidfd,
        stdin,
        stdout,
        stderr,
    })
}
