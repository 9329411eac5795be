//! The unsafe floor of [ringleader](https://docs.rs/ringleader): thin, safe wrappers over the
//! Linux calls a cluster needs. It knows nothing of clusters.
//!
//! | module | what it wraps |
//! |---|---|
//! | [`scm`] | `sendmsg(2)`/`recvmsg(2)` with `SCM_RIGHTS` fd passing |
//! | [`socket`] | `socketpair(2)`, `shutdown(2)`, socket type checks |
//! | [`listen`] | listening TCP/UDP/Unix sockets with Node's options, `accept4(2)`, `FIONREAD` |
//! | [`spawn`] | exec of a worker with fds inherited at fixed numbers, a pidfd, `PR_SET_PDEATHSIG`, its own pid in its environment (`LISTEN_PID`) |
//! | [`pidfd`] | `pidfd_open(2)`, `pidfd_send_signal(2)`, `waitid(P_PIDFD)` |
//! | [`signal`] | signal numbers and names, `signalfd(2)` |
//! | [`steer`] | steering an `SO_REUSEPORT` group by weights (classic BPF), a listener's accept-queue depth |
//! | [`poll`] | `poll(2)` on one or two fds, `eventfd(2)`, `timerfd_create(2)` |
//! | `reactor` | fds registered with a tokio runtime (feature `tokio`) |
//! | [`epoll`] | `epoll(7)`, the fallback event loop |
//! | [`uring`] | an io_uring ring with a feature probe and owned-buffer operations |
//! | [`env`](mod@env) | reading and removing the worker's environment variables |
//! | [`systemd`] | socket activation (`LISTEN_FDS`) and `sd_notify(3)`, without libsystemd |
//!
//! Every fd this crate creates is close-on-exec; the only way an fd crosses `execve(2)` is
//! [`spawn::SpawnRequest::inherit`], explicitly and at a chosen number.
//!
//! # Portability
//! Linux only. pidfds need 5.3; the io_uring ring 5.11, and each later feature it uses is
//! probed and used only where found ([`uring::Features`]: 5.13, 5.17, 5.19, 6.1, 6.7, 6.10);
//! the rest is older.

#![cfg_attr(not(target_os = "linux"), allow(unused))]
#![deny(missing_docs)]
#[cfg(not(target_os = "linux"))]
compile_error!("ringleader-sys supports Linux only");

pub mod env;
pub mod epoll;
pub mod listen;
pub mod pidfd;
pub mod poll;
#[cfg(feature = "tokio")]
pub mod reactor;
pub mod rendezvous;
pub mod scm;
pub mod shm;
pub mod signal;
pub mod socket;
pub mod spawn;
pub mod steer;
pub mod systemd;
pub mod uring;

pub use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// The errno values callers of this crate need to tell apart.
pub mod errno {
    /// The operation was cancelled (an io_uring operation after `Ring::cancel`).
    pub const ECANCELED: i32 = libc::ECANCELED;
    /// No such process (already exited and reaped).
    pub const ESRCH: i32 = libc::ESRCH;
    /// The process is out of file descriptors.
    pub const EMFILE: i32 = libc::EMFILE;
    /// The system is out of file descriptors.
    pub const ENFILE: i32 = libc::ENFILE;
    /// The kernel is out of socket buffers.
    pub const ENOBUFS: i32 = libc::ENOBUFS;
    /// The kernel is out of memory.
    pub const ENOMEM: i32 = libc::ENOMEM;
    /// Nothing there right now (the end of an accept that takes what waits).
    pub const EAGAIN: i32 = libc::EAGAIN;
    /// Invalid argument (an io_uring flag the kernel does not know).
    pub const EINVAL: i32 = libc::EINVAL;
    /// Protocol not supported (a PROXY protocol listener under a scheduling where the
    /// workers accept by themselves).
    pub const EPROTONOSUPPORT: i32 = libc::EPROTONOSUPPORT;
}
