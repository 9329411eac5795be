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

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
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
    /// An environment variable the child gets set to its own pid, which only the child
    /// knows: socket activation's `LISTEN_PID`. The program is then looked up in the
    /// environment's `PATH` before the fork.
    pub pid_var: Option<&'a str>,
    /// The child leads a process group of its own (`setpgid(0, 0)` before the exec), so that
    /// it and whatever it starts can be signalled together ([`kill_group`]).
    pub own_group: bool,
    /// The child runs on this CPU only (`sched_setaffinity(2)` before the exec, so every
    /// thread it starts inherits it).
    pub cpu: Option<usize>,
}

/// The CPUs this process may run on (`sched_getaffinity(2)`), in order: what a worker can be
/// pinned to.
///
/// # Errors
/// What `sched_getaffinity(2)` returns.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    let set = rustix::thread::sched_getaffinity(None)?;
    Ok((0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&cpu| set.is_set(cpu))
        .collect())
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
    let cpus = req.cpu.map(|cpu| {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        set
    });
    let mut pid_exec = match req.pid_var {
        Some(name) => Some(PidExec::new(&req, name)?),
        None => None,
    };

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
    if req.own_group {
        cmd.process_group(0);
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
        if let Some(set) = &cpus {
            rustix::thread::sched_setaffinity(None, set)?;
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
        if let Some(exec) = &mut pid_exec {
            return Err(exec.exec());
        }
        Ok(())
    };
    // SAFETY: `child_setup` runs between fork and exec and calls only async-signal-safe
    // functions (sigprocmask, signal, prctl, getppid, fcntl, dup2, close, close_range, and
    // getpid and execve for `pid_var`) on memory allocated before the fork; it allocates
    // nothing and takes no locks.
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

/// An `execve(2)` prepared before the fork for a child whose environment names its own pid
/// ([`SpawnRequest::pid_var`]): std builds the environment before the fork and cannot add
/// to it after, so the child writes its pid into a slot reserved here and execs itself.
struct PidExec {
    path: CString,
    /// The strings the pointer arrays point into: kept alive with them.
    _strings: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// `NAME=` followed by room for the digits and a NUL: a leaked box, freed on drop.
    slot: *mut [u8],
    digits_at: usize,
}

// SAFETY: the raw pointers point into heap memory this value owns (`_strings`, `slot`) and
// are only read or written by the forked child, which has its own copy of the memory.
unsafe impl Send for PidExec {}
// SAFETY: as above; no method takes `&self` and touches the pointers.
unsafe impl Sync for PidExec {}

impl PidExec {
    fn new(req: &SpawnRequest<'_>, name: &str) -> io::Result<PidExec> {
        let path = find_program(&req.program, &req.env)?;
        let cstr = |s: &OsStr| {
            CString::new(s.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
        };
        let mut strings = Vec::with_capacity(1 + req.args.len() + req.env.len());
        strings.push(cstr(req.program.as_os_str())?);
        for a in &req.args {
            strings.push(cstr(a)?);
        }
        let argc = strings.len();
        for (k, v) in req
            .env
            .iter()
            .filter(|(k, _)| k.as_bytes() != name.as_bytes())
        {
            let mut entry = k.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            strings.push(cstr(OsStr::from_bytes(&entry))?);
        }
        let mut slot = format!("{name}=").into_bytes();
        let digits_at = slot.len();
        // A pid has at most 10 digits; the rest stays NUL.
        slot.resize(digits_at + 12, 0);
        let slot = Box::into_raw(slot.into_boxed_slice());
        let argv = strings[..argc]
            .iter()
            .map(|s| s.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        let envp = strings[argc..]
            .iter()
            .map(|s| s.as_ptr())
            .chain([slot.cast::<libc::c_char>().cast_const(), std::ptr::null()])
            .collect();
        Ok(PidExec {
            path,
            _strings: strings,
            argv,
            envp,
            slot,
            digits_at,
        })
    }

    /// In the child: writes its pid into the slot and execs. Returns only on failure.
    fn exec(&mut self) -> io::Error {
        // SAFETY: getpid has no preconditions.
        let mut pid = unsafe { libc::getpid() } as u32;
        let mut digits = [0u8; 10];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (pid % 10) as u8;
            n += 1;
            pid /= 10;
            if pid == 0 {
                break;
            }
        }
        // SAFETY: `slot` is this value's live allocation, which nothing else uses in the
        // child; the reference ends before execve reads the slot through `envp`.
        let slot = unsafe { &mut *self.slot };
        for (place, d) in slot[self.digits_at..]
            .iter_mut()
            .zip(digits[..n].iter().rev())
        {
            *place = *d;
        }
        // SAFETY: every pointer is to a NUL-terminated string this value owns, and both
        // arrays end with a null pointer; execve is async-signal-safe.
        unsafe { libc::execve(self.path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr()) };
        io::Error::last_os_error()
    }
}

impl Drop for PidExec {
    fn drop(&mut self) {
        // SAFETY: `slot` came from `Box::into_raw` in `new` and is freed only here.
        drop(unsafe { Box::from_raw(self.slot) });
    }
}

/// `program` as `execvp(3)` would find it: a path as it is, a bare name in the
/// environment's `PATH` (or the default search path).
fn find_program(program: &Path, env: &[(OsString, OsString)]) -> io::Result<CString> {
    let to_c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    if program.as_os_str().as_bytes().contains(&b'/') {
        return to_c(program);
    }
    let path = env.iter().find(|(k, _)| k == "PATH").map_or_else(
        || OsString::from("/usr/local/bin:/usr/bin:/bin"),
        |(_, v)| v.clone(),
    );
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map_or_else(
            || {
                Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} is not in PATH", program.display()),
                ))
            },
            |p| to_c(&p),
        )
}

/// Sends `signal` to every process of the group that `leader` leads (`kill(-leader, sig)`):
/// a worker spawned with [`SpawnRequest::own_group`] and whatever it started that stayed in
/// its group. Call it while the leader is not yet reaped (a zombie still holds its pid, so
/// the group id cannot name anyone else's group). No such group is not an error.
///
/// # Errors
/// What `kill(2)` returns, other than `ESRCH`.
///
/// # References
/// [`kill(2)`](https://man7.org/linux/man-pages/man2/kill.2.html)
pub fn kill_group(leader: u32, signal: Signal) -> io::Result<()> {
    let (Some(pgid), Some(sig)) = (
        rustix::process::Pid::from_raw(leader as i32),
        rustix::process::Signal::from_named_raw(signal.as_raw()),
    ) else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    match rustix::process::kill_process_group(pgid, sig) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
