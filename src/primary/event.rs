//! What the primary observes.

use std::fmt;

use ringleader_sys::signal::Signal;

use crate::Error;
use crate::ids::WorkerId;
use crate::ipc::Message;
use crate::primary::Settings;

/// Something that happened in the cluster (Node: the `cluster` events).
///
/// Per worker the order is `Fork`, `Online`, any `Message`s, then `Disconnect` and `Exit`,
/// each exactly once. A worker that dies is reported `Disconnect` first, then `Exit`; a
/// worker that closed its channel earlier may be reported in either order, as in Node.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// [`Primary::setup`](crate::Primary::setup) ran, or a fork applied the settings (Node:
    /// `'setup'`). Boxed: the settings are large, and every other event would carry
    /// their size.
    Setup(Box<Settings>),
    /// A worker was spawned (Node: `'fork'`).
    Fork {
        /// Which.
        worker: WorkerId,
        /// Its process id.
        pid: u32,
    },
    /// The worker has started and said so, before any of its own code ran (Node: `'online'`).
    Online {
        /// Which.
        worker: WorkerId,
    },
    /// A worker took no connection for `stalled` while connections waited at it, and was
    /// killed ([`Settings::kill_stalled_after`], gunicorn's `timeout`); its `Exit` follows,
    /// and with [`Settings::respawn`] a replacement. What waited at it went to the others.
    StalledKilled {
        /// Which.
        worker: WorkerId,
        /// How long it had taken nothing.
        stalled: std::time::Duration,
    },
    /// A worker said it is ready to serve ([`Worker::ready`](crate::Worker::ready)); no Node
    /// counterpart. Once per worker.
    Ready {
        /// Which.
        worker: WorkerId,
    },
    /// A worker is listening (Node: `'listening'`).
    Listening {
        /// Which.
        worker: WorkerId,
        /// Where.
        address: Listening,
    },
    /// A message from a worker (Node: `'message'`).
    Message {
        /// From which.
        worker: WorkerId,
        /// Its bytes and fd.
        message: Message,
    },
    /// The worker's channel closed (Node: `'disconnect'`).
    Disconnect {
        /// Which.
        worker: WorkerId,
        /// Whether the end was voluntary (see `WorkerHandle::exited_after_disconnect`).
        exited_after_disconnect: bool,
    },
    /// The worker's process ended (Node: `'exit'`): exactly one of `code` and `signal` is set.
    Exit {
        /// Which.
        worker: WorkerId,
        /// The exit code, if it exited.
        code: Option<i32>,
        /// The signal that killed it.
        signal: Option<Signal>,
        /// Whether the end was voluntary: the primary's `kill()`/`disconnect()` or the worker's
        /// own `disconnect()`/`kill()`, as opposed to a crash or an `exit(n)`.
        exited_after_disconnect: bool,
    },
    /// A worker that exited unasked was replaced ([`Respawn`](crate::Respawn)), after
    /// `delay` (zero when it had run stably). Its `Fork` event came just before.
    Respawned {
        /// The new worker.
        worker: WorkerId,
        /// The worker it replaces.
        replaces: WorkerId,
        /// How long the primary waited before forking it.
        delay: std::time::Duration,
        /// The worker it replaces had booted (it served, then died); else it failed to boot
        /// or was killed before it booted.
        booted: bool,
    },
    /// A worker's line kept failing to boot: `exits` boot failures within `window`
    /// ([`Respawn`](crate::Respawn)). It is not replaced again.
    GaveUp {
        /// The last worker of the lineage, which exited.
        worker: WorkerId,
        /// Its lineage's boot failures within the window.
        exits: u32,
        /// The window.
        window: std::time::Duration,
    },
    /// A worker's resident set grew past [`Settings::max_memory`](crate::Settings::max_memory):
    /// a successor is forked, and once it is ready the worker leaves gracefully (`RollStep`).
    MemoryExceeded {
        /// Which.
        worker: WorkerId,
        /// Its resident set, in bytes.
        rss: u64,
        /// The limit, in bytes.
        limit: u64,
    },
    /// A rolling restart began ([`Primary::roll`](crate::Primary::roll)): `workers` will be
    /// replaced.
    RollStarted {
        /// How many.
        workers: usize,
    },
    /// A step of the roll: `new` is ready (it listens where `old` did), and `old` is asked
    /// to go; its queued connections move to the others.
    RollStep {
        /// The worker leaving.
        old: WorkerId,
        /// Its successor.
        new: WorkerId,
    },
    /// Every worker of the roll was replaced.
    RollDone {
        /// How many.
        replaced: usize,
        /// How long it took.
        took: std::time::Duration,
    },
    /// The roll stopped: successor `worker` exited or was not ready in time, and was killed.
    /// The workers not replaced yet keep serving.
    RollFailed {
        /// The successor.
        worker: WorkerId,
        /// What happened to it.
        reason: String,
    },
    /// An upgrade began ([`Primary::upgrade`](crate::Primary::upgrade)): the new primary runs
    /// as process `pid` and has this one's listening sockets.
    UpgradeStarted {
        /// The new primary's process id.
        pid: u32,
    },
    /// The new primary is ready (every one of its workers listens): this one has stopped
    /// accepting, hands what it holds to its workers, and disconnects them once they took
    /// it all; `AllDisconnected` follows, and then this primary may exit.
    UpgradeReady {
        /// The new primary's process id.
        pid: u32,
    },
    /// The upgrade stopped: the new primary exited or was not ready in time, and was killed.
    /// This primary keeps serving.
    UpgradeFailed {
        /// What happened.
        reason: String,
    },
    /// A lame-duck began ([`Primary::supervise`](crate::Primary::supervise)): for `delay`
    /// the host says it is not ready while it serves on, then it stops, rolls, upgrades or
    /// retires a worker. Shown to `supervise`'s `on_event` only.
    Draining {
        /// How long.
        delay: std::time::Duration,
    },
    /// Every worker that [`Primary::disconnect_all`](crate::Primary::disconnect_all) asked to
    /// leave has disconnected and exited (Node: the callback of `cluster.disconnect(cb)`).
    AllDisconnected,
    /// A signal watched with [`Primary::watch_signals`](crate::Primary::watch_signals)
    /// arrived.
    Signal(Signal),
    /// Something went wrong that is not the answer to a call. A worker's channel that breaks
    /// the protocol is closed after this event, and its `Disconnect` follows (Node: `'error'`).
    Error {
        /// The worker concerned, if any.
        worker: Option<WorkerId>,
        /// What went wrong.
        error: Error,
    },
}

/// The kind of address a worker listens on (Node: `addressType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressType {
    /// TCP over IPv4 (Node: `4`).
    V4,
    /// TCP over IPv6 (Node: `6`).
    V6,
    /// A Unix stream socket; the address is its path (Node: `-1`).
    Unix,
    /// UDP over IPv4 (Node: `'udp4'`).
    Udp4,
    /// UDP over IPv6 (Node: `'udp6'`).
    Udp6,
}

/// Where a worker listens (Node: the address of the `'listening'` event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listening {
    /// The IP address, or a Unix socket's path.
    pub address: String,
    /// The port, the same for every worker that listened on port 0 (0 for Unix sockets).
    pub port: u16,
    /// Its kind.
    pub address_type: AddressType,
}

/// `127.0.0.1:8000`, `[::1]:8000`, `port 8000` (every address: Node's `listen(port)`), or
/// a Unix socket's path.
impl fmt::Display for Listening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.address_type {
            AddressType::Unix => f.write_str(&self.address),
            _ if self.address.is_empty() => write!(f, "port {}", self.port),
            _ if self.address.contains(':') => write!(f, "[{}]:{}", self.address, self.port),
            _ => write!(f, "{}:{}", self.address, self.port),
        }
    }
}

/// One line for a person: `Worker 2 listening on 127.0.0.1:8000`, `Worker 3 was killed by
/// SIGKILL`, `Worker 4 replaces worker 3 (after 100ms)`.
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Setup(_) => f.write_str("Settings applied"),
            Event::Fork { worker, pid } => write!(f, "Worker {worker} forked (pid {pid})"),
            Event::Online { worker } => write!(f, "Worker {worker} is online"),
            Event::StalledKilled { worker, stalled } => write!(
                f,
                "Worker {worker} took no connection for {stalled:?} while some waited: killed"
            ),
            Event::Ready { worker } => write!(f, "Worker {worker} is ready"),
            Event::Listening { worker, address } => {
                write!(f, "Worker {worker} listening on {address}")
            }
            Event::Message { worker, message } => write!(
                f,
                "Worker {worker} sent a message of {} bytes{}",
                message.data.len(),
                if message.fd.is_some() {
                    " and an fd"
                } else {
                    ""
                }
            ),
            Event::Disconnect { worker, .. } => write!(f, "Worker {worker} disconnected"),
            Event::Exit {
                worker,
                code,
                signal,
                ..
            } => match (code, signal) {
                (_, Some(signal)) => write!(f, "Worker {worker} was killed by {signal}"),
                (Some(code), None) => write!(f, "Worker {worker} exited with code {code}"),
                (None, None) => write!(f, "Worker {worker} exited"),
            },
            Event::Respawned {
                worker,
                replaces,
                delay,
                booted,
            } => {
                let what = if *booted { "served" } else { "did not boot" };
                write!(
                    f,
                    "Worker {worker} replaces worker {replaces}, which {what} (after {delay:?})"
                )
            }
            Event::GaveUp {
                worker,
                exits,
                window,
            } => write!(
                f,
                "Worker {worker} failed to boot {exits} times within {window:?}: \
                 not replacing it"
            ),
            Event::MemoryExceeded { worker, rss, limit } => write!(
                f,
                "Worker {worker} uses {} MiB, over its limit of {} MiB: replacing it",
                rss >> 20,
                limit >> 20
            ),
            Event::RollStarted { workers } => write!(f, "Replacing {workers} workers"),
            Event::RollStep { old, new } => {
                write!(f, "Worker {new} is ready; worker {old} leaves")
            }
            Event::RollDone { replaced, took } => {
                write!(f, "Replaced {replaced} workers in {took:?}")
            }
            Event::RollFailed { worker, reason } => {
                write!(f, "The roll stopped: worker {worker}: {reason}")
            }
            Event::UpgradeStarted { pid } => write!(f, "Starting a new primary ({pid})"),
            Event::UpgradeReady { pid } => {
                write!(f, "The new primary {pid} serves; this one retires")
            }
            Event::UpgradeFailed { reason } => {
                write!(f, "The upgrade stopped: the new primary: {reason}")
            }
            Event::AllDisconnected => f.write_str("Every worker has disconnected"),
            Event::Draining { delay } => write!(
                f,
                "Draining for {delay:?}: not ready for the balancer, serving on"
            ),
            Event::Signal(signal) => write!(f, "Primary got {signal}"),
            Event::Error {
                worker: Some(worker),
                error,
            } => write!(f, "Worker {worker}: {}", error.report()),
            Event::Error {
                worker: None,
                error,
            } => write!(f, "{}", error.report()),
        }
    }
}

impl Event {
    /// Whether this event is the routine bookkeeping of a worker's life (settings applied,
    /// forked, online, ready, a message, disconnected, all disconnected), which a log of the
    /// cluster usually leaves out: its exits, listens, rolls and failures tell the story.
    pub fn is_routine(&self) -> bool {
        matches!(
            self,
            Event::Setup(_)
                | Event::Fork { .. }
                | Event::Online { .. }
                | Event::Ready { .. }
                | Event::Message { .. }
                | Event::Disconnect { .. }
                | Event::AllDisconnected
        )
    }

    /// Whether this event tells of a failure (a crash loop given up, a stalled worker
    /// killed, a failed roll or upgrade, an error, a worker that exited unasked with a
    /// failure): the ones a program prints to stderr.
    pub fn is_failure(&self) -> bool {
        match self {
            Event::StalledKilled { .. }
            | Event::GaveUp { .. }
            | Event::RollFailed { .. }
            | Event::UpgradeFailed { .. }
            | Event::Error { .. } => true,
            Event::Exit {
                code,
                signal,
                exited_after_disconnect,
                ..
            } => !exited_after_disconnect && (signal.is_some() || *code != Some(0)),
            _ => false,
        }
    }
}
