//! What the kernel's io_uring offers beyond the least [`Ring::probe`](super::Ring::probe)
//! takes, by the release that brought it.

/// The features [`Ring::probe`](super::Ring::probe) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// `IORING_OP_ACCEPT` with `IORING_ACCEPT_MULTISHOT` (5.19), probed through
    /// `IORING_OP_SOCKET`, which arrived in the same release.
    pub multishot_accept: bool,
    /// `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN` (6.1): the ring must only be
    /// used from the thread that created it.
    pub deferred_task_run: bool,
    /// `IORING_ACCEPT_DONTWAIT` (6.10): [`Ring::accept_drain`](super::Ring::accept_drain). Told by
    /// `IORING_FEAT_RECVSEND_BUNDLE`, which came in the same release.
    pub accept_drain: bool,
    /// [`Ring::hand_over`](super::Ring::hand_over): `IORING_OP_SENDMSG`, `IORING_OP_CLOSE` and
    /// `IORING_FEAT_CQE_SKIP` (5.17).
    pub handoff: bool,
    /// [`Ring::poll_edges`](super::Ring::poll_edges): `IORING_POLL_ADD_MULTI` (5.13). Told by
    /// `IORING_FEAT_RSRC_TAGS`, which came in the same release.
    pub poll_edges: bool,
}

impl Features {
    /// Every feature this crate knows.
    pub const ALL: Features = Features {
        multishot_accept: true,
        deferred_task_run: true,
        accept_drain: true,
        handoff: true,
        poll_edges: true,
    };

    /// What a kernel of version `major.minor` has, by the release each feature came in: for
    /// running as an older kernel would ([`Ring::probe_within`](super::Ring::probe_within)).
    pub fn of_kernel(major: u32, minor: u32) -> Features {
        let at_least = |m: u32, n: u32| (major, minor) >= (m, n);
        Features {
            poll_edges: at_least(5, 13),
            handoff: at_least(5, 17),
            multishot_accept: at_least(5, 19),
            deferred_task_run: at_least(6, 1),
            accept_drain: at_least(6, 10),
        }
    }

    /// What both have.
    pub fn and(self, other: Features) -> Features {
        Features {
            multishot_accept: self.multishot_accept && other.multishot_accept,
            deferred_task_run: self.deferred_task_run && other.deferred_task_run,
            accept_drain: self.accept_drain && other.accept_drain,
            handoff: self.handoff && other.handoff,
            poll_edges: self.poll_edges && other.poll_edges,
        }
    }
}
