//! What the host tells a load balancer: whether it is ready for traffic and how much it can
//! take, for `/readyz`, HAProxy's agent-check and `/status`. A lame-duck ([`Readiness`]'s
//! `draining`) says "not ready" while the host still serves, so that the balancer moves
//! its traffic away before listeners close and workers go.

use serde::Serialize;

/// The rules readiness follows, set by the supervisor or the application
/// ([`Primary::set_wanted_workers`](crate::Primary::set_wanted_workers),
/// [`Primary::set_draining`](crate::Primary::set_draining)).
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    /// How many listening workers make the host ready; `None`: every live worker.
    wanted: Option<usize>,
    /// The host's full capacity (the first `wanted`): the agent's weight is listening
    /// workers over it.
    full: Option<usize>,
    /// A lame-duck: not ready, whatever the workers do.
    pub(crate) draining: bool,
}

impl Readiness {
    pub(crate) fn want(&mut self, workers: usize) {
        self.wanted = Some(workers);
        self.full.get_or_insert(workers.max(1));
    }

    /// The host's health with `listening` workers listening of `live` ones.
    pub(crate) fn health(&self, listening: usize, live: usize) -> Health {
        let wanted = self.wanted.unwrap_or(live).max(1);
        let full = self.full.unwrap_or(wanted);
        let weight = (listening * 100 / full).min(100) as u32;
        let reason = if self.draining {
            Some("draining".to_owned())
        } else if listening == 0 {
            Some("no worker listens".to_owned())
        } else if listening < wanted {
            Some(format!("{listening} of {wanted} workers listen"))
        } else {
            None
        };
        Health {
            ready: reason.is_none(),
            draining: self.draining,
            listening,
            wanted,
            weight_percent: weight,
            reason,
        }
    }
}

/// How ready the host is for traffic ([`Primary::health`](crate::Primary::health)): what
/// `/readyz`, the agent ([`Primary::serve_agent`](crate::Primary::serve_agent)) and
/// `/status` say.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Health {
    /// Every wanted worker listens, and the host is not draining.
    pub ready: bool,
    /// A lame-duck: the host says it is not ready while it still serves.
    pub draining: bool,
    /// Workers listening now.
    pub listening: usize,
    /// Listening workers that make the host ready.
    pub wanted: usize,
    /// The share of its full capacity the host can serve: listening workers over the
    /// workers it was first asked to run, at most 100 (HAProxy's agent `N%`).
    pub weight_percent: u32,
    /// Why the host is not ready, in a few words; `None` when it is.
    pub reason: Option<String>,
}

impl Health {
    /// The line HAProxy's `agent-check` reads (its configuration manual, section 5.2):
    /// `drain` during a lame-duck, `down#no worker listens` when nothing serves, else
    /// `up ready N%` (`ready` undoes an earlier `drain`).
    pub fn agent_line(&self) -> String {
        if self.draining {
            "drain\n".to_owned()
        } else if self.listening == 0 {
            "down#no worker listens\n".to_owned()
        } else {
            format!("up ready {}%\n", self.weight_percent)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_when_every_wanted_worker_listens_and_not_draining() {
        let mut r = Readiness::default();
        r.want(2);
        assert_eq!(r.health(0, 2).reason.as_deref(), Some("no worker listens"));
        assert_eq!(r.health(0, 2).agent_line(), "down#no worker listens\n");
        let half = r.health(1, 2);
        assert!(!half.ready);
        assert_eq!(half.reason.as_deref(), Some("1 of 2 workers listen"));
        assert_eq!(half.agent_line(), "up ready 50%\n");
        assert!(r.health(2, 2).ready);
        assert_eq!(r.health(2, 2).agent_line(), "up ready 100%\n");
        r.draining = true;
        assert!(!r.health(2, 2).ready);
        assert_eq!(r.health(2, 2).agent_line(), "drain\n");
    }

    #[test]
    fn the_weight_is_over_the_first_capacity() {
        let mut r = Readiness::default();
        r.want(2);
        r.want(1); // one retired: ready, at half the capacity
        let h = r.health(1, 1);
        assert!(h.ready);
        assert_eq!(h.weight_percent, 50);
        r.want(3); // one more than at first: never above 100 %
        assert_eq!(r.health(3, 3).weight_percent, 100);
    }

    #[test]
    fn without_a_wanted_count_every_live_worker_must_listen() {
        let r = Readiness::default();
        assert!(!r.health(1, 2).ready);
        assert!(r.health(2, 2).ready);
    }
}
