//! Steered listeners: the workers' own sockets in one `SO_REUSEPORT` group, placed by the
//! weights the primary sets from queue depths and hints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringleader_sys::listen::{self, Options};
use ringleader_sys::{OwnedFd, rendezvous, socket, steer};

use super::{Ctx, Listeners, MAX_UNTAKEN, Member, Pending, STEER_BUSY, starved};
use crate::ids::WorkerId;
use crate::primary::loads::WorkerLoad;

/// A queue this deep (a quarter of the hand-off bound) brings the checks to [`STEER_BUSY`].
pub(super) const STEER_DEEP: u64 = MAX_UNTAKEN / 4;
/// The longest gap between checks when all is quiet (the gap doubles up to it).
pub(super) const STEER_QUIET: Duration = Duration::from_millis(16);
/// The longest a stalled worker is steered around before it gets connections again
/// ([`stalled_steered`]).
pub(super) const STALLED_AROUND_MAX: Duration = Duration::from_millis(800);
/// How long after a worker left its socket is watched closely: connections whose handshake
/// was under way when the group stopped choosing it land in its queue a little later.
pub(super) const STEER_LINGER: Duration = Duration::from_millis(100);

/// A steered listener's `SO_REUSEPORT` group. Each worker listens on a socket of its own,
/// created by the primary, which keeps a copy of every one: none closes while the listener
/// lives, so a socket's place in the group (the order of `listen(2)` calls) never changes
/// and the weights the program is built from stay aligned with the places. The socket of a
/// worker that left stays in the group with weight 0; the primary empties its queue, and
/// the next worker to listen takes it over.
#[derive(Default)]
pub(super) struct Steering {
    pub(super) places: Vec<Place>,
    /// The weights of the program attached last (empty: none yet).
    pub(super) weights: Vec<u32>,
    /// Under a [`Sticky`](crate::policy::Sticky) policy, the places of the sticky program
    /// attached last: each open socket's seed and index, in place order.
    pub(super) sticky: Vec<(u32, u32)>,
    /// A worker left recently: watch closely until then.
    pub(super) linger_until: Option<Instant>,
    /// Its workers take no hand-off channel (socket-activated servers, Node workers): the
    /// queue of a place with a worker is never taken by the primary; a worker whose queue
    /// does not move counts as stalled ([`stalled_keeping`]). The queue of a place left
    /// without a worker goes to the others through the primary's relay when they are Node
    /// workers; a socket-activated server only accepts from its own socket, so there it
    /// waits for the worker that takes the place next.
    pub(super) keep_queues: bool,
}

pub(super) struct Place {
    pub(super) sock: Arc<OwnedFd>,
    pub(super) worker: Option<WorkerId>,
    /// Checks in a row that found its queue at the hand-off bound.
    pub(super) full_checks: u32,
    /// [`Steering::keep_queues`] groups: since when its queue has held connections without
    /// ever getting shorter, how long it was at the last check, and whether its worker was
    /// reported stalled since.
    pub(super) stuck: Option<Stuck>,
    /// A socket-activated server that has not been seen taking a connection yet: until
    /// when it may take to start, not counted stalled ([`crate::Settings::start_within`]).
    pub(super) starting: Option<Instant>,
    /// Other groups: its queue was emptied by the primary, the worker stalled, and is
    /// steered around until then ([`stalled_steered`]).
    pub(super) around_until: Option<Instant>,
    /// Its worker's stall, until it is seen taking connections again.
    pub(super) stall: Option<Stall>,
    /// Since when it gets connections again after it was steered around, a probe.
    pub(super) probing_since: Option<Instant>,
}

impl Steering {
    /// A group whose places are an old primary's workers' sockets, in their order, each
    /// free for the next worker that listens.
    pub(super) fn inherit(sockets: Vec<OwnedFd>) -> Steering {
        Steering {
            places: sockets
                .into_iter()
                .map(|sock| Place {
                    sock: Arc::new(sock),
                    worker: None,
                    full_checks: 0,
                    stuck: None,
                    starting: None,
                    around_until: None,
                    stall: None,
                    probing_since: None,
                })
                .collect(),
            ..Steering::default()
        }
    }

    /// A socket for worker `id`: one a worker left behind, or a new one in the group.
    /// A successor of `replaces` (a rolling restart) takes over its predecessor's socket:
    /// both accept from it until the predecessor leaves, and the group keeps its size.
    /// `starting`: until when it may take to start ([`Place::starting`]).
    pub(super) fn join(
        &mut self,
        id: WorkerId,
        replaces: Option<WorkerId>,
        addr: SocketAddr,
        opts: &Options,
        starting: Option<Instant>,
    ) -> std::io::Result<Arc<OwnedFd>> {
        let place = replaces
            .and_then(|old| self.places.iter().position(|p| p.worker == Some(old)))
            .or_else(|| self.places.iter().position(|p| p.worker.is_none()));
        if let Some(p) = place.map(|i| &mut self.places[i]) {
            p.worker = Some(id);
            p.full_checks = 0;
            p.stuck = None;
            p.starting = starting;
            p.around_until = None;
            p.stall = None;
            p.probing_since = None;
            return Ok(p.sock.clone());
        }
        let sock = listen::tcp(addr, opts)?;
        // Non-blocking, for the primary's accepts and the worker's polling wait (the worker's
        // copy shares the flag).
        socket::set_nonblocking(&sock, true)?;
        let sock = Arc::new(sock);
        self.places.push(Place {
            sock: sock.clone(),
            worker: Some(id),
            full_checks: 0,
            stuck: None,
            starting,
            around_until: None,
            stall: None,
            probing_since: None,
        });
        Ok(sock)
    }

    pub(super) fn leave(&mut self, id: WorkerId) {
        for p in &mut self.places {
            if p.worker == Some(id) {
                p.worker = None;
                self.linger_until = Some(Instant::now() + STEER_LINGER);
            }
        }
    }
}

/// A queue that has not got shorter ([`Place::stuck`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Stuck {
    since: Instant,
    depth: u64,
    reported: bool,
}

/// One place of a steered group as a check finds it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Seen {
    /// Connections in its accept queue.
    pub(super) depth: u64,
    /// Its worker, and whether the board lets it take connections; `None`: it left.
    pub(super) worker: Option<(WorkerId, bool)>,
    /// Checks in a row that found its queue at the hand-off bound, before this one.
    pub(super) full_checks: u32,
    /// Its worker took nothing from its queue for the take-back deadline
    /// ([`stalled_steered`]): steered around, and its queue emptied, even when no other
    /// worker has room.
    pub(super) stalled: bool,
}

/// What a check decides for a group.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Plan {
    /// Each place's weight: 1 for a worker that may take more, 0 otherwise.
    pub(super) weights: Vec<u32>,
    /// The queues the primary empties: the place, the worker that must not get them back,
    /// and how many wait.
    pub(super) take: Vec<(usize, Option<WorkerId>, u64)>,
    /// Each place's count of full checks, this one included.
    pub(super) full_checks: Vec<u32>,
    /// Check again soon: a queue fills, or a worker is steered around.
    pub(super) busy: bool,
}

/// The weights and rescues of one check, from queue depths and the board alone: a worker
/// whose queue is at the hand-off bound, or that is paused, draining or bad, gets weight 0;
/// the queue of a worker that left, may not take connections, or stayed at the bound for two
/// checks is emptied by the primary. When no worker may take more, the kernel spreads over
/// all live ones and only the queues of workers that left are emptied.
///
/// `sticky` (the [`Sticky`](crate::policy::Sticky) policy): a client must reach its own
/// worker while that worker takes connections, so a full queue neither closes a place nor is
/// emptied; the worker's clients wait for it in the kernel, as they would for a server of
/// their own.
pub(super) fn plan(places: &[Seen], sticky: bool) -> Plan {
    let mut plan = Plan {
        weights: Vec::with_capacity(places.len()),
        take: Vec::new(),
        full_checks: Vec::with_capacity(places.len()),
        busy: false,
    };
    for (i, p) in places.iter().enumerate() {
        plan.busy |= p.depth >= STEER_DEEP;
        let full_checks = if p.depth >= MAX_UNTAKEN {
            p.full_checks + 1
        } else {
            0
        };
        plan.full_checks.push(full_checks);
        let Some((wid, open)) = p.worker else {
            plan.weights.push(0);
            if p.depth > 0 {
                plan.take.push((i, None, p.depth));
            }
            continue;
        };
        let open = open && !p.stalled;
        let room = sticky || p.depth < MAX_UNTAKEN;
        plan.weights.push(u32::from(open && room));
        if p.depth > 0 && (!open || (full_checks >= 2 && !sticky)) {
            plan.take.push((i, Some(wid), p.depth));
        }
    }
    let live = places.iter().filter(|p| p.worker.is_some()).count();
    let open = plan.weights.iter().filter(|&&w| w > 0).count();
    if open == 0 {
        // Nobody has room: the kernel spreads over the live workers that take connections
        // (all live ones if every one is stalled), and the queues of stalled workers and of
        // places left without one are emptied.
        let taking = |p: &Seen| p.worker.is_some() && !p.stalled;
        let any_taking = places.iter().any(taking);
        for (w, p) in plan.weights.iter_mut().zip(places) {
            *w = u32::from(if any_taking {
                taking(p)
            } else {
                p.worker.is_some()
            });
        }
        let stalled: Vec<usize> = (0..places.len())
            .filter(|&i| any_taking && places[i].stalled)
            .collect();
        plan.take
            .retain(|(i, w, _)| w.is_none() || stalled.contains(i));
    }
    plan.busy |= open < live;
    plan
}

impl Listeners {
    /// Checks steered listeners: each worker's accept queue and board hints set its weight
    /// (1, or 0 while its queue is at the hand-off bound or it is paused, draining or bad),
    /// a new program goes to the group when the weights changed, and the primary takes what
    /// waits in the queue of a worker that left, asked for no connections, or stayed at the
    /// bound for two checks in a row, for the others. Checks come every millisecond while
    /// anything waits or is steered around, and up to [`STEER_QUIET`] apart otherwise.
    pub(super) fn steer(&mut self, cx: &mut Ctx<'_>) {
        // A retiring primary's groups are the new one's to steer; a new primary's are the
        // old one's until it retires.
        if self.retiring || self.inherited.old_primary_serves {
            self.steer_at = None;
            return;
        }
        let now = Instant::now();
        let mut busy = false;
        let mut any = false;
        let mut taken = Vec::new();
        let kill_after = self.kill_stalled_after;
        let deadlines = (self.take_back_after, kill_after);
        for h in self.by_key.values_mut() {
            let Some(st) = &mut h.steering else { continue };
            any = true;
            if st.linger_until.is_some_and(|t| now < t) {
                busy = true;
            } else {
                st.linger_until = None;
            }
            let mut seen: Vec<Seen> = st
                .places
                .iter()
                .map(|p| Seen {
                    // Not a listener any more (cannot happen while we hold it): empty.
                    depth: u64::from(steer::accept_queue(&*p.sock).unwrap_or(0)),
                    worker: p
                        .worker
                        .map(|w| (w, cx.loads.workers.get(&w).is_none_or(WorkerLoad::open))),
                    full_checks: p.full_checks,
                    stalled: false,
                })
                .collect();
            // Under a sticky policy a live worker keeps its clients however slowly it takes
            // them (as a hand-off would): a stall is only reported, as for kept queues.
            let sticky = cx.loads.policy.sticky();
            let stalls_kept = st.keep_queues || sticky.is_some();
            if !stalls_kept {
                for (p, seen) in st.places.iter_mut().zip(&mut seen) {
                    if seen.worker.is_some() {
                        seen.stalled = stalled_steered(p, seen.depth, now, deadlines, cx);
                        busy |= p.around_until.is_some();
                    }
                }
            }
            let Plan {
                weights,
                mut take,
                full_checks,
                busy: soon,
            } = plan(&seen, sticky.is_some());
            busy |= soon;
            for (p, n) in st.places.iter_mut().zip(full_checks) {
                p.full_checks = n;
            }
            if let Some(prefixes) = sticky {
                // Sticky: the open sockets by their workers' places, hashed in the kernel
                // as the policy hashes; a closed one's clients go to their next place.
                let mut table: Vec<(WorkerId, WorkerId, u32)> = st
                    .places
                    .iter()
                    .zip(&weights)
                    .enumerate()
                    .filter(|(_, (_, w))| **w > 0)
                    .filter_map(|(i, (p, _))| {
                        let w = p.worker?;
                        let place = cx.loads.workers.get(&w).map_or(w, |l| l.place_of(w));
                        Some((place, w, i as u32))
                    })
                    .collect();
                table.sort_unstable();
                let table: Vec<(u32, u32)> = table
                    .into_iter()
                    .map(|(place, _, i)| (rendezvous::seed(place), i))
                    .collect();
                if !table.is_empty()
                    && table != st.sticky
                    && steer::steer_sticky(&*st.places[0].sock, &table, prefixes).is_ok()
                {
                    st.sticky = table;
                    self.stats.steerings += 1;
                }
            } else if weights != st.weights && weights.iter().any(|&w| w > 0) {
                // On failure the group keeps its program (or the kernel's hash), and the next
                // check tries again.
                if steer::steer(&*st.places[0].sock, &weights).is_ok() {
                    st.weights = weights;
                    self.stats.steerings += 1;
                }
            }
            if stalls_kept {
                for (p, seen) in st.places.iter_mut().zip(&seen) {
                    stalled_keeping(p, seen.depth, now, kill_after, cx);
                }
            }
            if st.keep_queues {
                // Relayed workers (Node's) can take what waits at a place left without a
                // worker; socket-activated servers only take from their own sockets.
                let relayed = h.members.values().flatten().any(Member::is_relayed);
                if !relayed {
                    continue;
                }
                take.retain(|(_, worker, _)| worker.is_none());
            }
            for (i, avoid, depth) in take {
                taken.push((h.id, st.places[i].sock.clone(), avoid, depth));
            }
        }
        for (listener, sock, avoid, depth) in taken {
            // What waited at the check; a connection arriving since stays for the next one
            // (and a worker that took some since only makes this stop early).
            for _ in 0..depth {
                match listen::accept(&*sock, false) {
                    Ok(fd) => {
                        self.stats.accepted += 1;
                        self.stats.taken_from_queues += 1;
                        self.pending.push_back(Pending {
                            strict: avoid.is_some(),
                            ..Pending::back_from(listener, fd, avoid)
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if starved(&e) => {
                        self.stats.starved += 1;
                        break;
                    }
                    Err(_) => self.stats.accept_errors += 1,
                }
            }
        }
        let l = &mut *self;
        if !any {
            l.steer_at = None;
            return;
        }
        l.steer_gap = if busy {
            STEER_BUSY
        } else {
            (l.steer_gap * 2).min(STEER_QUIET)
        };
        l.steer_at = Some(now + l.steer_gap);
    }
}

/// Follows a place's queue from check to check: since when it has held connections
/// without ever getting shorter (`None`: it is empty, got shorter, or has no worker). (A
/// worker that takes connections shortens its queue between checks, which come every few
/// milliseconds, even under load: once its queue reaches the bound, no more arrive.) The
/// clock runs only once the worker has started ([`Place::starting`]): a queue that gets
/// shorter shows it has.
fn stuck_since(p: &mut Place, depth: u64, now: Instant) -> Option<&mut Stuck> {
    let shrank = p.stuck.is_some_and(|s| depth < s.depth);
    if shrank || p.starting.is_some_and(|until| now >= until) {
        p.starting = None;
    }
    if p.worker.is_none() || depth == 0 {
        p.stuck = None;
        return None;
    }
    Some(match p.stuck {
        Some(s) if !shrank && p.starting.is_none() => p.stuck.insert(Stuck { depth, ..s }),
        // New, it got shorter (the worker takes connections), or the worker is starting.
        _ => p.stuck.insert(Stuck {
            since: now,
            depth,
            reported: false,
        }),
    })
}

/// A [`Steering::keep_queues`] place: a worker whose queue has held connections and never
/// got shorter for `kill_after` took none of them all that time; it is reported stalled,
/// once, and the worker that replaces it takes the place and its queue.
fn stalled_keeping(
    p: &mut Place,
    depth: u64,
    now: Instant,
    kill_after: Option<Duration>,
    cx: &mut Ctx<'_>,
) {
    let worker = p.worker;
    let (Some(worker), Some(stuck)) = (worker, stuck_since(p, depth, now)) else {
        return;
    };
    if let Some(after) = kill_after {
        let stalled = now.saturating_duration_since(stuck.since);
        if stalled >= after && !stuck.reported {
            stuck.reported = true;
            cx.out.stalled.push((worker, stalled));
        }
    }
}

/// A place whose worker takes handed connections too (the steered groups of ringleader
/// workers): whether it is to be steered around, its queue emptied for the others. That is
/// when its queue held connections and never got shorter for the take-back deadline
/// (`deadlines.0`, [`crate::Settings::take_back_after`]): the worker is stopped, stuck or too
/// busy, like a round-robin worker that leaves its hand-offs in the channel. It is then
/// steered around, for the deadline the first time and twice as long at each stall in a row
/// (up to [`STALLED_AROUND_MAX`]), and then gets connections again, a probe: a worker whose
/// queue gets shorter, or that leaves nothing in it for a deadline, is no longer stalled. A
/// worker stalled for `deadlines.1` ([`crate::Settings::kill_stalled_after`]) is reported,
/// once, to be killed.
fn stalled_steered(
    p: &mut Place,
    depth: u64,
    now: Instant,
    deadlines: (Option<Duration>, Option<Duration>),
    cx: &mut Ctx<'_>,
) -> bool {
    let (Some(deadline), Some(worker)) = (deadlines.0, p.worker) else {
        return false;
    };
    // While it is steered around the primary empties its queue: only a queue that got
    // shorter while the worker had connections to take says it took some.
    let took = p.around_until.is_none() && p.stuck.is_some_and(|s| depth < s.depth);
    if p.around_until.is_some_and(|until| now >= until) {
        p.around_until = None;
        p.probing_since = Some(now);
    }
    let stuck = stuck_since(p, depth, now).map(|s| s.since);
    let probed = p
        .probing_since
        .is_some_and(|t| now.saturating_duration_since(t) >= deadline);
    let clear = stuck.is_none() && p.around_until.is_none() && (p.stall.is_none() || probed);
    if took || clear {
        p.stall = None;
        p.probing_since = None;
        return false;
    }
    match stuck {
        Some(since) if now.saturating_duration_since(since) >= deadline => {
            let stall = p.stall.get_or_insert(Stall {
                since,
                in_a_row: 0,
                reported: false,
            });
            stall.in_a_row += 1;
            let around = deadline
                .saturating_mul(1 << (stall.in_a_row - 1).min(8))
                .min(STALLED_AROUND_MAX.max(deadline));
            p.around_until = Some(now + around);
            p.probing_since = None;
            // Its queue is about to be emptied: the clock of the next check starts afresh.
            p.stuck = None;
            let stalled = now.saturating_duration_since(stall.since);
            if deadlines.1.is_some_and(|limit| stalled >= limit) && !stall.reported {
                stall.reported = true;
                cx.out.stalled.push((worker, stalled));
            }
            true
        }
        // Not long enough yet, or an empty queue: steered around only while it is.
        _ => p.around_until.is_some(),
    }
}

/// A steered worker's stall ([`stalled_steered`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Stall {
    /// Since when it took nothing from its queue.
    since: Instant,
    /// Stalls in a row: each steers it around twice as long as the one before.
    in_a_row: u32,
    /// Reported to be killed ([`crate::Settings::kill_stalled_after`]).
    reported: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(depth: u64, worker: Option<(WorkerId, bool)>, full_checks: u32) -> Seen {
        Seen {
            depth,
            worker,
            full_checks,
            stalled: false,
        }
    }

    #[test]
    fn a_stalled_worker_is_steered_around_and_emptied_even_when_nobody_has_room() {
        let stalled = Seen {
            stalled: true,
            ..at(5, Some((1, true)), 0)
        };
        // The other worker is at the bound: nobody has room.
        let p = plan(&[stalled, at(MAX_UNTAKEN, Some((2, true)), 0)], false);
        assert_eq!(p.weights, [0, 1]);
        assert_eq!(p.take, [(0, Some(1), 5)]);
        // Every worker stalled: the kernel spreads over them all, and nothing is taken.
        let again = Seen {
            stalled: true,
            ..at(3, Some((2, true)), 0)
        };
        let p = plan(&[stalled, again], false);
        assert_eq!(p.weights, [1, 1]);
        assert!(p.take.is_empty());
    }

    #[test]
    fn quiet_open_workers_share_evenly_and_nothing_is_taken() {
        let p = plan(
            &[at(0, Some((1, true)), 0), at(1, Some((2, true)), 0)],
            false,
        );
        assert_eq!(p.weights, [1, 1]);
        assert!(p.take.is_empty() && !p.busy);
        assert_eq!(p.full_checks, [0, 0]);
    }

    #[test]
    fn a_full_queue_is_steered_around_then_emptied_on_the_second_check() {
        let places = [
            at(MAX_UNTAKEN, Some((1, true)), 0),
            at(0, Some((2, true)), 0),
        ];
        let first = plan(&places, false);
        assert_eq!(first.weights, [0, 1]);
        assert!(first.take.is_empty() && first.busy);
        let again = [
            at(MAX_UNTAKEN, Some((1, true)), first.full_checks[0]),
            places[1],
        ];
        assert_eq!(plan(&again, false).take, [(0, Some(1), MAX_UNTAKEN)]);
    }

    #[test]
    fn a_paused_worker_gets_nothing_and_its_queue_goes_to_others() {
        let p = plan(
            &[at(3, Some((1, false)), 0), at(0, Some((2, true)), 0)],
            false,
        );
        assert_eq!(p.weights, [0, 1]);
        assert_eq!(p.take, [(0, Some(1), 3)]);
    }

    #[test]
    fn a_left_socket_is_emptied_even_when_nobody_has_room() {
        let p = plan(
            &[at(2, None, 0), at(MAX_UNTAKEN, Some((2, false)), 5)],
            false,
        );
        // Nobody may take more: the kernel spreads over the live worker, whose own queue
        // stays; the left socket's is emptied.
        assert_eq!(p.weights, [0, 1]);
        assert_eq!(p.take, [(0, None, 2)]);
        assert!(p.busy);
    }

    #[test]
    fn under_sticky_a_full_queue_keeps_its_place_and_is_not_emptied() {
        let full = at(MAX_UNTAKEN, Some((1, true)), 3);
        let p = plan(&[full, at(0, Some((2, true)), 0)], true);
        assert_eq!(p.weights, [1, 1]);
        assert!(p.take.is_empty());
        // A worker that may not take connections, or left, still loses its place.
        let p = plan(
            &[
                at(4, Some((1, false)), 0),
                at(0, Some((2, true)), 0),
                at(2, None, 0),
            ],
            true,
        );
        assert_eq!(p.weights, [0, 1, 0]);
        assert_eq!(p.take, [(0, Some(1), 4), (2, None, 2)]);
    }
}
