//! Node.js-style clusters for native Linux programs.
//!
//! A program starts as the **primary**; it forks **workers**, re-executions of itself (or any
//! other program), that share server ports, and talks to each over a control channel. The
//! primary either accepts connections itself and hands each to a worker
//! ([`Scheduling::RoundRobin`], the default), or lets the workers accept from a shared socket
//! ([`Scheduling::Shared`]) or from sockets of their own on one port
//! ([`Scheduling::ReusePort`]), which the primary can steer connections between by load
//! ([`Scheduling::Steered`]: the kernel places each connection, the primary spends nothing
//! per connection and rescues the queues of workers that stall or die).
//!
//! `examples/first.rs` (the README's example too): two workers share one port, and each
//! answers with its id.
//!
//! ```no_run
#![doc = include_str!("../examples/first.rs")]
//! ```
//!
//! # Features
//! - `tokio` (off by default: the core is runtime-free): the `ringleader::tokio` module,
//!   which drives listeners, workers and the primary from a tokio runtime. docs.rs builds
//!   the docs with it; `cargo doc --features tokio` does here.
//!
//! # Node → ringleader
//! | Node.js `cluster` | ringleader |
//! |---|---|
//! | `cluster.isPrimary` / `cluster.isWorker` | [`role()`] → [`Role::Primary`] / [`Role::Worker`] |
//! | `cluster.setupPrimary(settings)` | [`Primary::setup`] with [`Settings`] |
//! | `settings.exec`, `args`, `cwd`, `silent`, `stdio`, `uid`, `gid` | [`Settings::exec`], [`Settings::args`], [`Settings::cwd`], [`Settings::silent`], [`Settings::stdio`], [`Settings::uid`], [`Settings::gid`] |
//! | `cluster.schedulingPolicy`, `NODE_CLUSTER_SCHED_POLICY` | [`Primary::scheduling`], [`Settings::scheduling`], `RINGLEADER_SCHED_POLICY` |
//! | `cluster.fork(env)` | [`Primary::fork`] → [`WorkerHandle`] |
//! | `cluster.workers` | [`Primary::workers`], [`Primary::worker`] |
//! | `cluster.disconnect(cb)` | [`Primary::disconnect_all`], then [`Event::AllDisconnected`] |
//! | `cluster.on('setup' / 'fork' / 'online' / 'message' / 'disconnect' / 'exit')` | [`Primary::events`]: [`Event::Setup`], [`Event::Fork`], [`Event::Online`], [`Event::Message`], [`Event::Disconnect`], [`Event::Exit`] |
//! | `cluster.on('listening')`, `address` | [`Event::Listening`], [`Listening`], [`AddressType`] |
//! | `'error'` | [`Event::Error`] |
//! | `worker.id`, `worker.process.pid` | [`WorkerHandle::id`], [`WorkerHandle::pid`] |
//! | `worker.send(msg[, handle])` | [`WorkerHandle::send`], [`WorkerHandle::send_fd`], [`WorkerHandle::send_json`] |
//! | `worker.kill([signal])` | [`WorkerHandle::kill`] |
//! | `worker.disconnect()` | [`WorkerHandle::disconnect`] |
//! | `worker.isConnected()`, `worker.isDead()` | [`WorkerHandle::is_connected`], [`WorkerHandle::is_dead`] |
//! | `worker.exitedAfterDisconnect`, `worker.state` | [`WorkerHandle::exited_after_disconnect`], [`WorkerHandle::state`] |
//! | `cluster.worker.id` (in a worker) | [`Worker::id`] |
//! | `process.send(msg[, handle])` | [`Worker::send`], [`Worker::send_fd`], [`Worker::send_json`] |
//! | `process.on('message')` | [`Worker::recv`], [`Worker::try_recv`], [`Worker::recv_json`] |
//! | `cluster.worker.disconnect()`, `cluster.worker.kill()` | [`Worker::disconnect`], [`Worker::kill`] |
//! | `server.listen(port, host)` in a worker | [`Worker::listen_tcp`], [`Worker::listen_tcp_with`] ([`ListenOptions`]: `backlog`, `ipv6Only`) → [`TcpListener`] |
//! | `server.listen(path)` in a worker, `readableAll`/`writableAll` | [`Worker::listen_unix`], [`ListenOptions::all_may_connect`] → [`UnixListener`] |
//! | `dgram.bind()` in a worker | [`Worker::bind_udp`] → [`UdpSocket`] |
//! | `server.listen({fd})`, `listen({exclusive: true})` in a worker | [`Worker::listen_fd`], [`ListenOptions::exclusive`] |
//! | `accepted: false` (a worker at `maxConnections`) | [`TcpListener::reject`] |
//! | `server.on('connection')`, `server.close()` | [`TcpListener::incoming`] / [`TcpListener::accept`] → [`Connection`], dropping the listener |
//! | `SCHED_RR`, `SCHED_NONE`, `reusePort` | [`Scheduling::RoundRobin`], [`Scheduling::Shared`], [`Scheduling::ReusePort`] (and [`Scheduling::Steered`], which Node lacks) |
//! | `NODE_UNIQUE_ID`, `NODE_CHANNEL_FD` | `RINGLEADER_WORKER_ID`, `RINGLEADER_CHANNEL_FD` (removed from the worker's environment) |
//! | a Node.js worker (`cluster.fork()` of `node app.js`) | [`Settings::worker_protocol`]`(`[`WorkerProtocol::Node`]`)`: Node's own IPC protocol, every scheduling |
//! | (no counterpart) a socket-activated server as a worker | [`WorkerProtocol::SocketActivated`] with [`Primary::activation_socket`] (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`) |
//!
//! # Where ringleader differs from Node, on purpose
//! - `worker.kill()` from the primary sets `exited_after_disconnect`, as Node's documentation
//!   says (Node 20 itself does not: nodejs/node#51934).
//! - Every worker gets exactly one `Disconnect` and one `Exit`.
//! - Workers get `PR_SET_PDEATHSIG` (default `SIGKILL`) besides Node's exit-on-channel-close, so
//!   no worker survives a killed primary, even one stuck in a busy loop.
//! - A sender that outpaces its receiver is held back (above 4 MiB queued) instead of queueing
//!   without bound.
//! - Bursts of messages are coalesced into one write, and waits busy-poll for up to 50 µs
//!   before sleeping (`RINGLEADER_BUSY_POLL_US`); both are explained in the README's
//!   "Latency and CPU" section.
//! - A malformed frame from a worker closes that worker's channel with an [`Event::Error`];
//!   the primary goes on.
//! - Round-robin never loses an accepted connection: connections queued for a worker that dies,
//!   disconnects or closes its listener are handed to another one (Node leaks them and the
//!   client hangs), at most 16 untaken connections wait at one worker, and when every worker is
//!   saturated the primary stops accepting instead of queueing without bound. A listener whose
//!   last worker exited unasked waits for its replacement ([`Settings::respawn`]) with what it
//!   accepted, where Node closes it.
//! - A worker's `disconnect` closes its channel at once; its listeners stop (their `incoming()`
//!   ends) and the process keeps running until the application has finished its open
//!   connections and returns from `main`. (Node delays the `'disconnect'` event until the
//!   servers have closed.)
//!
//! # Beyond Node: the load board and hand-off policies
//! Node's only guard against overloading a worker is one unacknowledged connection each.
//! ringleader's primary reads every worker's load from shared memory, with no round trip:
//! - each [`Connection`] a worker takes from a round-robin listener is counted taken, and
//!   finished when it is dropped (or [`Worker::connection_finished`] after
//!   [`Connection::detach`]); [`Worker::publish_load`] adds a figure of the application's
//!   choosing;
//! - [`Worker::hint`] posts a [`Hint`]: pause, resume, a capacity, or drain (queued
//!   connections go to others);
//! - a [`policy::Policy`] picks among the workers that are open and under their bound:
//!   [`policy::RoundRobin`] (the default), [`policy::LeastConnections`],
//!   [`policy::PowerOfTwoChoices`], [`policy::Weighted`], [`policy::Sticky`] (each client
//!   to one worker, by its address), or your own, set with [`Settings::policy`] or
//!   `RINGLEADER_SCHED_POLICY=rr|lc|p2c|weighted|sticky|steer-sticky`;
//! - [`WorkerHandle::load`] shows what the primary sees; [`Primary::handoff_stats`] counts the
//!   hand-off as a whole.
//!
//! The board is untrusted input: a worker whose slot reads wrong (overwritten generation,
//! impossible counts, a corrupt ring) is reported once with [`ErrorKind::Board`] and gets no
//! more connections.
//!
//! # Kernel requirements
//! Linux 5.3 (pidfds); the io_uring loop needs 5.11 and uses each later feature only where the
//! probe finds it: edge-triggered polls 5.13, the linked hand-off 5.17, multishot accept 5.19
//! (one accept per connection before), deferred task run 6.1, accept rounds 6.10 (each
//! connection as it comes before). Where io_uring is missing or forbidden the primary falls back
//! to epoll, saying so once on stderr; `RINGLEADER_BACKEND=epoll` forces it, and
//! `RINGLEADER_URING_KERNEL=5.15` makes the io_uring loop use only what that kernel has (CI runs
//! the suite so too).

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#[cfg(not(target_os = "linux"))]
compile_error!("ringleader supports Linux only");

pub(crate) mod board;
mod contract;
mod error;
mod ids;
mod ipc;
pub mod policy;
mod primary;
mod proxy_protocol;
mod role;
#[cfg(feature = "tokio")]
pub mod tokio;
mod tuning;
mod worker;

pub use board::Hint;

/// Hooks for ringleader's own fuzz targets (`fuzz/`) and micro-benchmarks, with the cargo
/// feature `internals`: not part of the API, no stability promise.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    pub use crate::ipc::frame;
    pub use crate::ipc::node;

    /// Feeds `chunks` one by one into the receive buffer the channels use, as reads would,
    /// and returns the frames (kind byte, payload) it yields, or the first error.
    ///
    /// # Errors
    /// The first [`frame::FrameError`] the buffer meets.
    pub fn inbound_frames(chunks: &[&[u8]]) -> Result<Vec<(u8, Vec<u8>)>, frame::FrameError> {
        let mut inbound = crate::ipc::buffers::Inbound::default();
        let mut out = Vec::new();
        for chunk in chunks {
            inbound.push_bytes(chunk);
            while let Some(frame) = inbound.next_frame()? {
                out.push((frame.kind as u8, frame.payload));
            }
        }
        Ok(out)
    }

    /// A board in plain memory for the micro-benchmarks (`benches/benches/micro.rs`).
    pub struct BenchBoard(crate::board::BenchBoard);

    impl std::fmt::Debug for BenchBoard {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("BenchBoard")
        }
    }

    impl BenchBoard {
        /// `slots` workers with counts and a load figure.
        pub fn new(slots: usize) -> BenchBoard {
            BenchBoard(crate::board::BenchBoard::new(slots))
        }
        /// Reads every slot as one dispatch does.
        pub fn read_all(&self) -> u64 {
            self.0.read_all()
        }
        /// Posts one hint and takes it back (the ring's push and pop).
        pub fn hint_round_trip(&self) -> bool {
            self.0.hint_round_trip()
        }
    }

    /// See the `board_attach` fuzz target.
    pub fn board_attach(bytes: &[u8], handed: u64) {
        crate::board::fuzz_attach(bytes, handed);
    }

    /// How the start of `bytes` reads as a PROXY protocol header (see the `proxy_header`
    /// fuzz target): `None` while it may still become one, else its length and the
    /// addresses it carries, or why it is refused.
    pub fn proxy_header(
        bytes: &[u8],
    ) -> Option<Result<(usize, Option<crate::Proxied>), &'static str>> {
        use crate::proxy_protocol::{Header, parse};
        match parse(bytes) {
            Header::Incomplete => None,
            Header::Complete { len, proxied } => Some(Ok((len, proxied))),
            Header::Malformed(why) => Some(Err(why)),
        }
    }

    /// The longest PROXY protocol header accepted.
    pub const MAX_PROXY_HEADER: usize = crate::proxy_protocol::MAX_HEADER;
}
/// The README's Rust blocks, compiled as doctests (the example is run by
/// `tests/tests/readme.rs`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use contract::{ENV_BACKEND, ENV_SCHED_POLICY, ENV_URING_KERNEL};
pub use error::{Error, ErrorKind, Report, Result};
pub use ids::WorkerId;
pub use ipc::Message;
pub use ipc::frame::MAX_PAYLOAD;
pub use policy::SharedPolicy;
pub use primary::{
    AddressType, Backend, ClusterMetrics, DEFAULT_DRAIN_DELAY, Ending, Event, Events, HandoffStats,
    Health, Listening, Load, Metrics, Phase, Primary, PrimaryMetrics, ProxyProtocol, Respawn, Roll,
    Scheduling, Settings, Stdio, Supervise, Upgrade, WorkerHandle, WorkerMetrics, WorkerProtocol,
    WorkerState,
};
pub use proxy_protocol::Proxied;
pub use ringleader_sys::signal::Signal;
pub use role::{Role, is_worker, role};
pub use tuning::{ENV_ACCEPT_ROUNDS_US, ENV_BUSY_POLL_US};
pub use worker::{
    Connection, Incoming, ListenOptions, TcpListener, UdpSocket, UnixListener, Worker,
};
