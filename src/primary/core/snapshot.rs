//! The cluster as [`Metrics`] see it.

use super::{Core, WorkerState};
use crate::primary::health::Health;
use crate::primary::metrics::{Metrics, PrimaryMetrics, WorkerMetrics};
use crate::primary::settings::Scheduling;

impl Core {
    /// A snapshot of the workers and the counters.
    pub(crate) fn metrics(&self) -> Metrics {
        let stats = self.listeners.stats;
        let mut cluster = self.tally.cluster;
        cluster.accepted = stats.accepted;
        cluster.handed_over = stats.handed_over;
        cluster.taken_back = stats.taken_back;
        cluster.taken_from_stalled = stats.taken_from_stalled;
        cluster.closed_unserved = stats.closed_unserved;
        cluster.closed_gone = stats.closed_gone;
        cluster.accept_errors = stats.accept_errors;
        cluster.proxy_headers_read = stats.proxy_headers_read;
        cluster.proxy_headers_refused = stats.proxy_headers_refused;
        cluster.spilled = stats.spilled;
        let workers = self
            .workers
            .iter()
            .filter(|(_, w)| w.listed)
            .map(|(id, w)| {
                let load = self.loads.workers.get(id);
                WorkerMetrics {
                    id: *id,
                    pid: w.pid,
                    state: w.state,
                    uptime: w.uptime(),
                    phase: w.phase(),
                    restarts: self.tally.restarts(w.lineage()),
                    handed: load.map_or(0, |l| l.handed),
                    taken: load.map_or(0, |l| l.counts.taken),
                    finished: load.map_or(0, |l| l.counts.finished),
                    load: load.map_or(0, |l| l.counts.load),
                    // A worker with no board slot (a Node worker, a socket-activated server)
                    // reports nothing taken: the kernel's counts say what waits for it.
                    queued: match load {
                        Some(l) if l.on_board() => l.queued(),
                        _ => self.listeners.untaken_of(*id),
                    },
                    active: load.filter(|l| l.on_board()).map(|l| l.active()),
                    rss_bytes: w.pidfd.resident_bytes().ok().filter(|_| w.exit.is_none()),
                    cpu: w.pidfd.cpu_time().ok().filter(|_| w.exit.is_none()),
                }
            })
            .collect();
        let policy = match self.scheduling {
            Scheduling::RoundRobin => self
                .settings
                .policy
                .as_ref()
                .or(self.env_policy.as_ref())
                .map_or("rr", |p| p.name()),
            Scheduling::Shared => "none",
            Scheduling::ReusePort => "reuseport",
            Scheduling::Steered => "steer",
        };
        Metrics {
            primary: PrimaryMetrics {
                pid: std::process::id(),
                policy: policy.to_owned(),
                listeners: self.listeners.addresses(),
                uptime: self.tally.since.elapsed(),
            },
            workers,
            cluster,
            health: self.health(),
        }
    }

    /// How ready the host is: its listening workers against the readiness rules.
    pub(crate) fn health(&self) -> Health {
        let live = self
            .workers
            .values()
            .filter(|w| w.listed && w.connected && w.exit.is_none());
        let (mut listening, mut count) = (0, 0);
        for w in live {
            count += 1;
            listening += usize::from(w.state == WorkerState::Listening);
        }
        self.readiness.health(listening, count)
    }
}
