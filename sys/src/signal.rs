//! Signal numbers with their names, and `signalfd(2)`.

use std::fmt;
use std::io;

use rustix::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

/// A signal number, printed by name (`SIGTERM`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signal(i32);

impl Signal {
    /// `SIGHUP`
    pub const HUP: Signal = Signal(libc::SIGHUP);
    /// `SIGINT`
    pub const INT: Signal = Signal(libc::SIGINT);
    /// `SIGQUIT`
    pub const QUIT: Signal = Signal(libc::SIGQUIT);
    /// `SIGABRT`
    pub const ABRT: Signal = Signal(libc::SIGABRT);
    /// `SIGKILL`
    pub const KILL: Signal = Signal(libc::SIGKILL);
    /// `SIGSEGV`
    pub const SEGV: Signal = Signal(libc::SIGSEGV);
    /// `SIGPIPE`
    pub const PIPE: Signal = Signal(libc::SIGPIPE);
    /// `SIGTERM`
    pub const TERM: Signal = Signal(libc::SIGTERM);
    /// `SIGUSR1`
    pub const USR1: Signal = Signal(libc::SIGUSR1);
    /// `SIGUSR2`
    pub const USR2: Signal = Signal(libc::SIGUSR2);
    /// `SIGCHLD`
    pub const CHLD: Signal = Signal(libc::SIGCHLD);
    /// `SIGSTOP`
    pub const STOP: Signal = Signal(libc::SIGSTOP);
    /// `SIGCONT`
    pub const CONT: Signal = Signal(libc::SIGCONT);
    /// `SIGTTIN` (gunicorn and nginx: one worker more)
    pub const TTIN: Signal = Signal(libc::SIGTTIN);
    /// `SIGTTOU` (gunicorn and nginx: one worker fewer)
    pub const TTOU: Signal = Signal(libc::SIGTTOU);

    /// A signal from its number; `None` outside `1..=SIGRTMAX`.
    pub fn from_raw(raw: i32) -> Option<Signal> {
        (1..=libc::SIGRTMAX()).contains(&raw).then_some(Signal(raw))
    }

    /// The number.
    pub fn as_raw(self) -> i32 {
        self.0
    }

    /// `"SIGTERM"`, or `"SIG42"` for an unnamed one.
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        let name = match self.0 {
            libc::SIGHUP => "SIGHUP",
            libc::SIGINT => "SIGINT",
            libc::SIGQUIT => "SIGQUIT",
            libc::SIGILL => "SIGILL",
            libc::SIGTRAP => "SIGTRAP",
            libc::SIGABRT => "SIGABRT",
            libc::SIGBUS => "SIGBUS",
            libc::SIGFPE => "SIGFPE",
            libc::SIGKILL => "SIGKILL",
            libc::SIGUSR1 => "SIGUSR1",
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGUSR2 => "SIGUSR2",
            libc::SIGPIPE => "SIGPIPE",
            libc::SIGALRM => "SIGALRM",
            libc::SIGTERM => "SIGTERM",
            libc::SIGCHLD => "SIGCHLD",
            libc::SIGCONT => "SIGCONT",
            libc::SIGSTOP => "SIGSTOP",
            libc::SIGTSTP => "SIGTSTP",
            libc::SIGTTIN => "SIGTTIN",
            libc::SIGTTOU => "SIGTTOU",
            libc::SIGXCPU => "SIGXCPU",
            libc::SIGSYS => "SIGSYS",
            n => return format!("SIG{n}").into(),
        };
        name.into()
    }

    /// Parses `"SIGTERM"`, `"TERM"` or `"15"`.
    pub fn parse(s: &str) -> Option<Signal> {
        if let Ok(n) = s.parse::<i32>() {
            return Signal::from_raw(n);
        }
        let s = s.strip_prefix("SIG").unwrap_or(s);
        (1..=31)
            .map(Signal)
            .find(|sig| sig.name().strip_prefix("SIG") == Some(s))
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A `signalfd(2)` for a set of signals, which it blocks in the calling thread.
///
/// # Portability
/// A signal reaches a signalfd only while it is blocked in every thread. Create this on the
/// main thread before other threads start, so that they inherit the mask. Spawned workers get a
/// clean mask back (the spawn resets it before `execve`).
#[derive(Debug)]
pub struct SignalFd {
    fd: OwnedFd,
}

impl SignalFd {
    /// Blocks `signals` in this thread (`pthread_sigmask(SIG_BLOCK)`) and opens a non-blocking,
    /// close-on-exec signalfd for them.
    ///
    /// # Errors
    /// `InvalidInput` for `SIGKILL`/`SIGSTOP`, and what `signalfd(2)` returns.
    ///
    /// # References
    /// [`signalfd(2)`](https://man7.org/linux/man-pages/man2/signalfd.2.html)
    pub fn new(signals: &[Signal]) -> io::Result<SignalFd> {
        if signals
            .iter()
            .any(|s| *s == Signal::KILL || *s == Signal::STOP)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "SIGKILL and SIGSTOP cannot be caught",
            ));
        }
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given.
        unsafe { libc::sigemptyset(set.as_mut_ptr()) };
        // SAFETY: initialised just above.
        let mut set = unsafe { set.assume_init() };
        for s in signals {
            // SAFETY: `set` is an initialised sigset and the number is a valid signal.
            if unsafe { libc::sigaddset(&mut set, s.0) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: `set` is valid; the old mask is not wanted.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: -1 asks for a new fd; `set` is valid for the call.
        let raw = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: signalfd returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(SignalFd { fd })
    }

    /// Reads one pending signal, or `None` when none is pending.
    ///
    /// # Errors
    /// What `read(2)` returns, other than `EAGAIN`.
    pub fn read(&self) -> io::Result<Option<Signal>> {
        let mut buf = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        match rustix::io::read(&self.fd, &mut buf) {
            Ok(n) if n == buf.len() => {
                // ssi_signo is the first field, a u32.
                let signo = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
                Ok(Signal::from_raw(signo as i32))
            }
            Ok(_) => Ok(None),
            Err(rustix::io::Errno::AGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// The threads of this process, other than the calling one, that do not block every one of
/// `signals` (their thread ids), read from `SigBlk` in `/proc/self/task/*/status`. A signal
/// that such a thread does not block takes its default action there (`SIGHUP` and `SIGTERM`
/// end the process) instead of reaching a [`SignalFd`].
///
/// # Errors
/// What reading `/proc/self/task` returns. A thread that exits while it is read is skipped.
///
/// # References
/// [`proc_pid_status(5)`](https://man7.org/linux/man-pages/man5/proc_pid_status.5.html)
pub fn threads_not_blocking(signals: &[Signal]) -> io::Result<Vec<u32>> {
    let wanted = signals.iter().fold(0u64, |mask, s| {
        mask | 1u64.checked_shl(s.0 as u32 - 1).unwrap_or(0)
    });
    let me = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task")? {
        let Some(tid) = entry?
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok())
        else {
            continue;
        };
        if tid == me {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
            continue;
        };
        let blocked = status
            .lines()
            .find_map(|l| l.strip_prefix("SigBlk:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0);
        if blocked & wanted != wanted {
            found.push(tid);
        }
    }
    Ok(found)
}

impl AsFd for SignalFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
