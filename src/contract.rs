//! The environment contract between a primary and the workers it spawns: the variables it
//! sets and the fd numbers it puts things at. The primary writes them (`primary/`), the
//! worker reads them once (`worker/`); nothing else does.

/// The worker's id (Node: `NODE_UNIQUE_ID`).
pub(crate) const ENV_WORKER_ID: &str = "RINGLEADER_WORKER_ID";
/// The control channel's fd number (Node: `NODE_CHANNEL_FD`).
pub(crate) const ENV_CHANNEL_FD: &str = "RINGLEADER_CHANNEL_FD";
/// The scheduling policy (Node: `NODE_CLUSTER_SCHED_POLICY`).
pub const ENV_SCHED_POLICY: &str = "RINGLEADER_SCHED_POLICY";
/// `epoll` forces the fallback event loop.
pub const ENV_BACKEND: &str = "RINGLEADER_BACKEND";
/// A kernel version, `major.minor` (`5.15`): the io_uring loop uses only the features that
/// kernel has, even where this one has more. For testing what older kernels run.
pub const ENV_URING_KERNEL: &str = "RINGLEADER_URING_KERNEL";
/// Where the control channel sits in a worker.
pub(crate) const CHANNEL_FD: i32 = 3;
/// The load board's fd number in a worker.
pub(crate) const ENV_BOARD_FD: &str = "RINGLEADER_BOARD_FD";
/// The worker's board slot and its generation, `index:generation`.
pub(crate) const ENV_BOARD_SLOT: &str = "RINGLEADER_BOARD_SLOT";
/// In a new primary started by an upgrade: the fd of the channel to the old one, which
/// passes the listening sockets and waits for the new one's readiness.
pub(crate) const ENV_UPGRADE_FD: &str = "RINGLEADER_UPGRADE_FD";
/// Where that channel sits in the new primary.
pub(crate) const UPGRADE_FD: i32 = 3;
/// Where the load board sits in a worker.
pub(crate) const BOARD_FD: i32 = 4;
