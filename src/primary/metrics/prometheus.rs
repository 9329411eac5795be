//! [`Metrics`] in Prometheus's text exposition format (version 0.0.4): names prefixed
//! `ringleader_`, counters ending in `_total`, durations in seconds, per-worker series
//! labelled `worker`.
//!
//! Written here rather than with a client crate: the format is a few lines per family, and
//! a client's registry of live counters would duplicate what the primary already counts.
//! The tests parse the output with a Prometheus text parser.

use std::fmt::Write;

use super::{Metrics, WorkerMetrics};
use crate::primary::state::WorkerState;

/// The text format's content type, for an HTTP answer.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family: its help, its type, and its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn start<'a>(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                // Label values here are numbers and fixed words: nothing to escape.
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// A counter or gauge of the whole cluster.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    Family::start(out, name, kind, help).sample(name, &[], value);
}

/// A per-worker family.
fn per_worker<T: std::fmt::Display>(
    out: &mut String,
    workers: &[WorkerMetrics],
    (name, kind, help): (&str, &str, &str),
    value: impl Fn(&WorkerMetrics) -> T,
) {
    let mut family = Family::start(out, name, kind, help);
    for w in workers {
        family.sample(name, &[("worker", &w.id.to_string())], value(w));
    }
}

/// A per-worker family with a sample for each worker that has a value.
fn per_worker_known<T: std::fmt::Display>(
    out: &mut String,
    workers: &[WorkerMetrics],
    (name, kind, help): (&str, &str, &str),
    value: impl Fn(&WorkerMetrics) -> Option<T>,
) {
    let mut family = Family::start(out, name, kind, help);
    for w in workers {
        if let Some(v) = value(w) {
            family.sample(name, &[("worker", &w.id.to_string())], v);
        }
    }
}

const STATES: [WorkerState; 5] = [
    WorkerState::Started,
    WorkerState::Online,
    WorkerState::Listening,
    WorkerState::Disconnected,
    WorkerState::Dead,
];

impl Metrics {
    /// The snapshot in Prometheus's text format, for a `/metrics` endpoint.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let o = &mut out;
        let mut family = Family::start(
            o,
            "ringleader_workers",
            "gauge",
            "Workers the primary lists, by state.",
        );
        for state in STATES {
            let n = self.workers.iter().filter(|w| w.state == state).count();
            family.sample("ringleader_workers", &[("state", state.name())], n);
        }
        let mut family = Family::start(
            o,
            "ringleader_worker_info",
            "gauge",
            "A worker's process id and state (always 1).",
        );
        for w in &self.workers {
            family.sample(
                "ringleader_worker_info",
                &[
                    ("worker", &w.id.to_string()),
                    ("pid", &w.pid.to_string()),
                    ("state", w.state.name()),
                ],
                1,
            );
        }
        let workers = &self.workers;
        per_worker(
            o,
            workers,
            (
                "ringleader_worker_uptime_seconds",
                "gauge",
                "How long the worker has run.",
            ),
            |w| w.uptime.as_secs_f64(),
        );
        per_worker(
            o,
            workers,
            (
                "ringleader_worker_restarts_total",
                "counter",
                "Workers its line of replacements had before it.",
            ),
            |w| w.restarts,
        );
        per_worker(
            o,
            workers,
            (
                "ringleader_worker_connections_handed_total",
                "counter",
                "Connections handed to the worker.",
            ),
            |w| w.handed,
        );
        per_worker(
            o,
            workers,
            (
                "ringleader_worker_connections_taken_total",
                "counter",
                "Connections the worker took from its queues.",
            ),
            |w| w.taken,
        );
        per_worker(
            o,
            workers,
            (
                "ringleader_worker_connections_finished_total",
                "counter",
                "Connections the worker finished.",
            ),
            |w| w.finished,
        );
        per_worker(
            o,
            workers,
            (
                "ringleader_worker_load",
                "gauge",
                "The load figure the worker published.",
            ),
            |w| w.load,
        );
        per_worker(
            o,
            workers,
            (
                "ringleader_worker_queued_connections",
                "gauge",
                "Connections waiting for the worker: handed and not taken, or in its own socket's accept queue.",
            ),
            |w| w.queued,
        );
        per_worker_known(
            o,
            workers,
            (
                "ringleader_worker_active_connections",
                "gauge",
                "Connections the worker took and has not finished (workers with a board slot).",
            ),
            |w| w.active,
        );
        per_worker_known(
            o,
            workers,
            (
                "ringleader_worker_resident_memory_bytes",
                "gauge",
                "The worker's resident set.",
            ),
            |w| w.rss_bytes,
        );
        per_worker_known(
            o,
            workers,
            (
                "ringleader_worker_cpu_seconds_total",
                "counter",
                "CPU time the worker has used, user and system.",
            ),
            |w| w.cpu.map(|d| d.as_secs_f64()),
        );
        single(
            o,
            "ringleader_primary_uptime_seconds",
            "gauge",
            "How long the primary has run.",
            self.primary.uptime.as_secs_f64(),
        );
        let c = &self.cluster;
        for (name, help, value) in [
            (
                "ringleader_connections_accepted_total",
                "Connections the primary accepted.",
                c.accepted,
            ),
            (
                "ringleader_connections_handed_over_total",
                "Connections put in a worker's queue, again after each return.",
                c.handed_over,
            ),
            (
                "ringleader_connections_taken_back_total",
                "Connections that came back from a worker.",
                c.taken_back,
            ),
            (
                "ringleader_connections_taken_from_stalled_total",
                "Connections taken back from a worker that did not take them in time.",
                c.taken_from_stalled,
            ),
            (
                "ringleader_connections_closed_unserved_total",
                "Connections closed because their listener had no worker left.",
                c.closed_unserved,
            ),
            (
                "ringleader_connections_closed_gone_total",
                "Connections whose client left while they waited in the primary.",
                c.closed_gone,
            ),
            (
                "ringleader_accept_errors_total",
                "Accepts that failed.",
                c.accept_errors,
            ),
            (
                "ringleader_connections_spilled_total",
                "Connections sent to their client's next place: too many waited for their own worker.",
                c.spilled,
            ),
            (
                "ringleader_proxy_headers_read_total",
                "PROXY protocol headers read whole.",
                c.proxy_headers_read,
            ),
            (
                "ringleader_proxy_headers_refused_total",
                "Connections refused for their PROXY protocol header.",
                c.proxy_headers_refused,
            ),
            (
                "ringleader_worker_exits_total",
                "Workers that exited.",
                c.exits,
            ),
            (
                "ringleader_respawns_total",
                "Workers forked to replace one that exited unasked.",
                c.respawns,
            ),
            (
                "ringleader_respawns_booted_total",
                "Of the respawns, those replacing a worker that had booted (it served, then died).",
                c.respawns_booted,
            ),
            (
                "ringleader_gave_up_total",
                "Lines of workers given up on after too many boot failures.",
                c.gave_up,
            ),
            (
                "ringleader_stalled_killed_total",
                "Workers killed for taking no connection too long.",
                c.stalled_killed,
            ),
            (
                "ringleader_memory_exceeded_total",
                "Workers replaced for growing past their memory limit.",
                c.memory_exceeded,
            ),
        ] {
            single(o, name, "counter", help, value);
        }
        let mut family = Family::start(
            o,
            "ringleader_rolls_total",
            "counter",
            "Rolling restarts, by outcome.",
        );
        family.sample(
            "ringleader_rolls_total",
            &[("outcome", "done")],
            c.rolls_done,
        );
        family.sample(
            "ringleader_rolls_total",
            &[("outcome", "failed")],
            c.rolls_failed,
        );
        let mut family = Family::start(
            o,
            "ringleader_upgrades_total",
            "counter",
            "Upgrades of the primary, by outcome.",
        );
        family.sample(
            "ringleader_upgrades_total",
            &[("outcome", "done")],
            c.upgrades_done,
        );
        family.sample(
            "ringleader_upgrades_total",
            &[("outcome", "failed")],
            c.upgrades_failed,
        );
        let h = &self.health;
        for (name, help, value) in [
            (
                "ringleader_ready",
                "1 when every wanted worker listens and the host is not draining (/readyz).",
                u64::from(h.ready),
            ),
            (
                "ringleader_draining",
                "1 during a lame-duck: the host says it is not ready while it still serves.",
                u64::from(h.draining),
            ),
            (
                "ringleader_workers_listening",
                "Workers listening now.",
                h.listening as u64,
            ),
            (
                "ringleader_workers_wanted",
                "Listening workers that make the host ready.",
                h.wanted as u64,
            ),
            (
                "ringleader_weight_percent",
                "The share of its full capacity the host can serve (the agent's weight).",
                u64::from(h.weight_percent),
            ),
        ] {
            single(o, name, "gauge", help, value);
        }
        out
    }
}
