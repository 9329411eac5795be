//! What the cluster has done, for dashboards: [`Primary::metrics`](crate::Primary::metrics)
//! takes a snapshot ([`Metrics`]), [`Metrics::prometheus`] writes it in Prometheus's text
//! format, and the admin endpoint ([`Primary::serve_admin`](crate::Primary::serve_admin))
//! serves both from the primary's own loop.

mod admin;
mod prometheus;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

pub(crate) use self::admin::Admin;
use super::event::Event;
use super::health::Health;
use super::state::WorkerState;
use crate::ids::WorkerId;

/// A snapshot of the cluster ([`Primary::metrics`](crate::Primary::metrics)).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Metrics {
    /// The primary itself.
    pub primary: PrimaryMetrics,
    /// Every worker the primary lists, by id.
    pub workers: Vec<WorkerMetrics>,
    /// The cluster's counters since the primary started.
    pub cluster: ClusterMetrics,
    /// How ready the host is for traffic (what `/readyz` and the agent say).
    pub health: Health,
}

/// The primary in a [`Metrics`] snapshot.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PrimaryMetrics {
    /// Its process id.
    pub pid: u32,
    /// How connections reach the workers: `rr` (or the hand-off policy's name, such as
    /// `lc`), `none`, `reuseport` or `steer`, as `RINGLEADER_SCHED_POLICY` spells them.
    pub policy: String,
    /// Where its listeners are bound (`HOST:PORT`, or a Unix socket's path), in the order
    /// they were bound, the sockets of socket-activated workers among them.
    pub listeners: Vec<String>,
    /// How long it has run.
    #[serde(rename = "uptime_seconds", serialize_with = "seconds")]
    pub uptime: Duration,
}

/// What a worker is doing, in the words of `ringleader status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Phase {
    /// Forked, not listening yet.
    Starting,
    /// Listening: it gets connections.
    Listening,
    /// Asked to go gracefully: it gets no new connections and finishes its own.
    Draining,
    /// Its channel is gone or it was killed: it is on its way out.
    Stopping,
}

/// One worker in a [`Metrics`] snapshot.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct WorkerMetrics {
    /// Its id.
    pub id: WorkerId,
    /// Its process id.
    pub pid: u32,
    /// Its state (Node: `worker.state`).
    pub state: WorkerState,
    /// What it is doing: starting, listening, draining or stopping.
    pub phase: Phase,
    /// How long it has run.
    #[serde(rename = "uptime_seconds", serialize_with = "seconds")]
    pub uptime: Duration,
    /// How many workers its line of replacements had before it ([`Settings::respawn`]).
    ///
    /// [`Settings::respawn`]: crate::Settings::respawn
    pub restarts: u64,
    /// Connections handed to it (round-robin and the hand-off policies).
    pub handed: u64,
    /// Connections it took from its queues, by the board's count.
    pub taken: u64,
    /// Connections it finished, by the board's count.
    pub finished: u64,
    /// The load figure its application published on the board.
    pub load: u64,
    /// Connections waiting for it: handed to it and not taken yet, by the board's count; for
    /// a worker without a board slot (a Node worker, a socket-activated server), by the
    /// kernel's: its hand-off channels and its own socket's accept queue.
    pub queued: u64,
    /// Connections it took and has not finished, by the board's count; `None` for a worker
    /// without a board slot (a Node worker, a socket-activated server).
    pub active: Option<u64>,
    /// Its resident set in bytes (`/proc/PID/statm`); `None` once it cannot be read.
    pub rss_bytes: Option<u64>,
    /// The CPU time it has used, user and system (`/proc/PID/stat`); `None` once it cannot
    /// be read. Its own children's are not counted.
    #[serde(rename = "cpu_seconds", serialize_with = "maybe_seconds")]
    pub cpu: Option<Duration>,
}

/// The cluster's counters in a [`Metrics`] snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ClusterMetrics {
    /// Connections the primary accepted.
    pub accepted: u64,
    /// Connections put in a worker's queue (again after each return).
    pub handed_over: u64,
    /// Connections that came back from a worker (it left, rejected them, or stalled).
    pub taken_back: u64,
    /// Of those, taken back from a worker that did not take them in time.
    pub taken_from_stalled: u64,
    /// Connections closed unserved: their listener had no worker left.
    pub closed_unserved: u64,
    /// Connections whose client left while they waited in the primary.
    pub closed_gone: u64,
    /// Accepts that failed.
    pub accept_errors: u64,
    /// PROXY protocol listeners: headers the primary read whole.
    pub proxy_headers_read: u64,
    /// PROXY protocol listeners: connections refused for their header (malformed, too long,
    /// cut short, or late).
    pub proxy_headers_refused: u64,
    /// Sticky policies: connections sent to their client's next place because too many
    /// waited for their own, full worker.
    pub spilled: u64,
    /// Workers that exited.
    pub exits: u64,
    /// Workers forked to replace one that exited unasked.
    pub respawns: u64,
    /// Of those, replacing a worker that had booted: it served, then died.
    pub respawns_booted: u64,
    /// Lines of workers given up on after too many boot failures.
    pub gave_up: u64,
    /// Workers killed for taking no connection too long.
    pub stalled_killed: u64,
    /// Workers replaced for growing past their memory limit.
    pub memory_exceeded: u64,
    /// Rolling restarts that replaced every worker.
    pub rolls_done: u64,
    /// Rolling restarts that stopped on a failed successor.
    pub rolls_failed: u64,
    /// Upgrades whose new primary took over.
    pub upgrades_done: u64,
    /// Upgrades whose new primary failed.
    pub upgrades_failed: u64,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn maybe_seconds<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl Serialize for WorkerState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Counts of what the events said, kept as they are delivered, since the primary started.
#[derive(Debug)]
pub(crate) struct Tally {
    pub(crate) cluster: ClusterMetrics,
    /// Replacements per line of workers (by the id of its first).
    restarts: BTreeMap<WorkerId, u64>,
    /// When the primary started counting: its uptime.
    pub(crate) since: std::time::Instant,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            cluster: ClusterMetrics::default(),
            restarts: BTreeMap::new(),
            since: std::time::Instant::now(),
        }
    }
}

impl Tally {
    /// Counts `event` (each event is delivered once).
    pub(crate) fn count(&mut self, event: &Event) {
        let c = &mut self.cluster;
        match event {
            Event::Exit { .. } => c.exits += 1,
            Event::Respawned { booted, .. } => {
                c.respawns += 1;
                c.respawns_booted += u64::from(*booted);
            }
            Event::GaveUp { .. } => c.gave_up += 1,
            Event::StalledKilled { .. } => c.stalled_killed += 1,
            Event::MemoryExceeded { .. } => c.memory_exceeded += 1,
            Event::RollDone { .. } => c.rolls_done += 1,
            Event::RollFailed { .. } => c.rolls_failed += 1,
            Event::UpgradeReady { .. } => c.upgrades_done += 1,
            Event::UpgradeFailed { .. } => c.upgrades_failed += 1,
            _ => {}
        }
    }

    /// A replacement in the line of workers that began with `lineage`.
    pub(crate) fn restarted(&mut self, lineage: WorkerId) {
        *self.restarts.entry(lineage).or_default() += 1;
    }

    /// That line's replacements so far.
    pub(crate) fn restarts(&self, lineage: WorkerId) -> u64 {
        self.restarts.get(&lineage).copied().unwrap_or(0)
    }
}
