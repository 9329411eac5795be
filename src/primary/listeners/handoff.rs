//! Handing accepted connections to workers: the policy's pick among workers with room, one
//! message per worker per turn, what wakes the loop while connections wait, and taking
//! connections back from workers that stall or drain (leaving: [`super::leave`]).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use ringleader_sys::{OwnedFd, socket};

use super::{
    Ctx, Listener, ListenerId, Listeners, MAX_PENDING, MAX_UNTAKEN, MAX_WAITING_FOR_ONE, Pending,
    STALLED_BOUND, STEER_BUSY,
};
use crate::error::{Error, ErrorKind};
use crate::ids::WorkerId;
use crate::policy::{Addresses, Candidate};
use crate::primary::driver::{Handed, Tag, dyn_fd, numbered_token, token_generation};
use crate::primary::event::Event;
use crate::primary::loads::{Loads, News, WorkerLoad};

/// How soon connections that wait for room look again when only the board can say that
/// room came (a worker paused, draining or at its capacity hint: shared memory wakes
/// nobody), or when this kernel cannot watch a hand-off channel for its worker's reads.
pub(super) const HELD_RECHECK: Duration = Duration::from_millis(1);

impl Listeners {
    /// Hands pending connections to workers: round-robin over those with fewer than
    /// `MAX_UNTAKEN` untaken, every connection of this turn for one worker in one hand-off
    /// ([`crate::primary::driver::Driver::hand_over`]: a message each, in one system call).
    pub(crate) fn dispatch(&mut self, cx: &mut Ctx<'_>) {
        if !self.by_key.is_empty() {
            self.read_board(cx);
        }
        if !self.unread.is_empty() || self.headers.len() > 0 {
            self.read_headers(cx);
        }
        if self.steer_at.is_some_and(|at| at <= Instant::now()) {
            self.steer(cx);
        }
        if self.stall_check_at.is_some_and(|at| at <= Instant::now()) {
            self.take_back_stalled(cx);
        }
        if self.pending.is_empty() {
            if self.paused() && !self.retiring {
                for h in self.by_key.values_mut() {
                    h.arm(cx.driver, 0);
                }
            }
            return;
        }
        let now = Instant::now();
        let mut batches: BTreeMap<(ListenerId, WorkerId), Vec<OwnedFd>> = BTreeMap::new();
        let mut left = VecDeque::new();
        // Connections left waiting for a full worker of their own (sticky), per worker.
        let mut waiting: BTreeMap<WorkerId, usize> = BTreeMap::new();
        let by_address = cx.loads.policy.wants_addresses();
        while let Some(mut p) = self.pending.pop_front() {
            let Some(key) = self.keys.get(&p.listener) else {
                continue;
            };
            let Some(h) = self.by_key.get_mut(key) else {
                continue;
            };
            if by_address && p.addresses.is_none() {
                p.addresses = Some(super::headers::addresses(&p.fd, h.proxy));
            }
            // The worker that handed it back only gets it again if nobody else can.
            let loads = &mut *cx.loads;
            let addresses = p.addresses.as_ref();
            let mut choice = pick(h, &batches, p.avoid, addresses, loads, false);
            if choice == Pick::NoOne && !p.strict {
                choice = pick(h, &batches, None, addresses, loads, false);
            }
            if let Pick::WaitsFor(wid) = choice {
                // One full worker's clients may not fill the queue: at the cap, the newest
                // goes to its next place, so that accepting never stops for them.
                if waiting.get(&wid).is_some_and(|n| *n >= MAX_WAITING_FOR_ONE) {
                    choice = pick(h, &batches, None, addresses, loads, true);
                    if let Pick::To(_) = choice {
                        self.stats.spilled += 1;
                    }
                }
            }
            match choice {
                // Its client left while it waited: a worker would only read end of file.
                Pick::To(_) if p.held && socket::peer_gone(&p.fd) => {
                    self.stats.closed_gone += 1;
                }
                Pick::To(wid) => {
                    batches.entry((p.listener, wid)).or_default().push(p.fd);
                }
                Pick::WaitsFor(wid) => {
                    *waiting.entry(wid).or_default() += 1;
                    left.push_back(Pending { held: true, ..p });
                }
                Pick::NoOne => left.push_back(Pending { held: true, ..p }),
            }
        }
        let mut sent_any = false;
        for ((hid, wid), fds) in batches {
            let Some(member) = self.member(hid, wid) else {
                left.extend(fds.into_iter().map(|fd| Pending::new(hid, fd)));
                continue;
            };
            // Counted as handed now (the policy's next pick must see them); what comes back
            // undelivered is uncounted in `on_handed`.
            let n = fds.len() as u64;
            member.untaken.set(member.untaken.get() + n);
            if self.take_back_after.is_some() {
                member.sent.borrow_mut().push_back((now, n));
                sent_any = true;
            }
            let send = match member.direct.borrow_mut().as_mut() {
                // Relayed by the primary itself (a Node worker): they wait here, countable
                // and ready to be taken back, until the relay sends them.
                Some(queue) => {
                    queue.extend(fds);
                    None
                }
                None => Some((dyn_fd(&member.tx), fds)),
            };
            self.stats.handed_over += n;
            cx.loads.get(wid).handed += n;
            if let Some((tx, fds)) = send {
                cx.driver.hand_over(&tx, fds, handoff_token(hid, wid));
            }
        }
        self.pending = left;
        if let (true, Some(after)) = (sent_any, self.take_back_after) {
            self.stall_check_at.get_or_insert(now + after);
        }
        // How the hand-offs ended comes with the next wait (`Core::turn`), on both backends.
        if self.pending.is_empty() {
            self.recheck_at = None;
            if self.watching > 0 {
                self.unwatch_all(cx);
            }
        } else {
            self.watch_held(cx);
        }
        let pending = self.pending.len();
        for h in self.by_key.values_mut() {
            if pending >= MAX_PENDING || self.retiring {
                h.pause(cx.driver);
            } else {
                h.arm(cx.driver, pending);
            }
        }
    }

    /// Connections wait because no worker may take more. What holds a worker back decides
    /// what wakes the loop when that changes: a worker at the bound of its hand-off channel
    /// gets a watch that reports its next read from the channel (the kernel's doing, no
    /// polling); a worker held back by the board (paused, draining, bad, or at its capacity
    /// hint) can only be looked at again, which the loop does after [`HELD_RECHECK`].
    pub(super) fn watch_held(&mut self, cx: &mut Ctx<'_>) {
        let mut held: Vec<u32> = self.pending.iter().map(|p| p.listener).collect();
        held.sort_unstable();
        held.dedup();
        let l = &mut *self;
        let mut recheck = false;
        for hid in held {
            let Some(h) = l.keys.get(&hid).and_then(|k| l.by_key.get_mut(k)) else {
                continue;
            };
            for (wid, m) in &mut h.members {
                let Some(m) = m else { continue };
                let load = cx.loads.workers.get(wid);
                recheck |= load.is_some_and(|w| !w.open() || w.full(w.queued()));
                if m.watch.is_some() || m.untaken.get() < MAX_UNTAKEN {
                    continue;
                }
                if m.direct.borrow().is_some() {
                    // Its relay takes from a queue here: the worker's answers, which wake
                    // the loop, make room; look again too, lest none comes.
                    recheck = true;
                    continue;
                }
                l.watches = l.watches.wrapping_add(1);
                let tok = numbered_token(*wid, Tag::Taken, l.watches);
                match cx.driver.watch_taken(&dyn_fd(&m.tx), tok) {
                    Ok(Some(op)) => {
                        m.watch = Some((token_generation(tok), op));
                        l.watching += 1;
                    }
                    // This kernel cannot watch it, or could not now: look again shortly.
                    Ok(None) | Err(_) => recheck = true,
                }
            }
        }
        let now = Instant::now();
        l.recheck_at = recheck.then(|| {
            l.recheck_at
                .filter(|at| *at > now)
                .unwrap_or(now + HELD_RECHECK)
        });
    }

    /// Nothing waits for room any more: the workers' reads need not wake the loop.
    pub(super) fn unwatch_all(&mut self, cx: &mut Ctx<'_>) {
        for h in self.by_key.values_mut() {
            for m in h.members.values_mut().flatten() {
                if m.unwatch(cx.driver) {
                    self.watching -= 1;
                }
            }
        }
    }

    /// A watched hand-off channel was read from (the dispatch after every wait hands out
    /// what now fits), or its watch ended (`more == false`: cancelled, or ended by the
    /// kernel), so that the next dispatch that finds the worker full watches again.
    pub(crate) fn on_taken(&mut self, worker: WorkerId, generation: u32, more: bool) {
        if more {
            return;
        }
        for h in self.by_key.values_mut() {
            if let Some(Some(m)) = h.members.get_mut(&worker) {
                if m.watch.is_some_and(|(g, _)| g == generation) {
                    m.watch = None;
                    self.watching -= 1;
                }
            }
        }
    }

    /// A hand-off ended: what was not delivered is pending again (the worker's queue was
    /// full, or its channel broke), no longer counted as handed.
    pub(crate) fn on_handed(&mut self, cx: &mut Ctx<'_>, h: Handed) {
        let (hid, wid) = handoff_untoken(h.token);
        self.stats.handoff_messages += h.messages;
        if h.unsent.is_empty() {
            return;
        }
        let n = h.unsent.len() as u64;
        if let Some(member) = self.member(hid, wid) {
            member.untaken.set(member.untaken.get().saturating_sub(n));
            forget_newest(&mut member.sent.borrow_mut(), n);
        }
        self.stats.handed_over -= n;
        let w = cx.loads.get(wid);
        w.handed = w.handed.saturating_sub(n);
        self.pending
            .extend(h.unsent.into_iter().map(|fd| Pending::new(hid, fd)));
    }

    /// Runs the hand-offs queued on the ring now: before a worker's queue is read back, so
    /// that none is still on its way to it.
    pub(crate) fn settle_handoffs(&mut self, cx: &mut Ctx<'_>) {
        let mut handed = Vec::new();
        // On an error they stay queued, and the next wait reports them.
        let _ = cx.driver.settle(&mut handed);
        for h in handed {
            self.on_handed(cx, h);
        }
    }

    /// Reads the board: bad slots are reported once (and their workers get no more
    /// connections), draining workers give back what is queued for them.
    pub(super) fn read_board(&mut self, cx: &mut Ctx<'_>) {
        let news = cx.loads.refresh();
        self.act_on(cx, news);
    }

    /// Reports bad slots and takes back what draining workers had queued.
    pub(crate) fn act_on(&mut self, cx: &mut Ctx<'_>, news: News) {
        if self.steer_at.is_some() && !(news.bad.is_empty() && news.drain.is_empty()) {
            // Steer around them now.
            self.steer_at = Some(Instant::now());
            self.steer_gap = STEER_BUSY;
        }
        for (id, why) in news.bad {
            cx.out.events.push(Event::Error {
                worker: Some(id),
                error: Error::new(ErrorKind::Board, "read the load board").detail(format!(
                    "worker {id}'s slot: {why}; it gets no more connections"
                )),
            });
        }
        for id in news.drain {
            self.take_back_queued(cx, id);
        }
    }

    /// Takes back what waited at a worker longer than [`Listeners::take_back_after`]: its
    /// queue is read back from our copy of its end and goes to the others (to it again only
    /// if nobody else can take it), and until it takes a connection again it is sent one at
    /// a time. A worker stopped (`SIGSTOP`), stuck, or too slow to read its queue holds no
    /// client longer than the deadline. Checks come at the deadline of the oldest connection
    /// sent and not yet known to be taken, while any is. Under a
    /// [`Sticky`](crate::policy::Sticky) policy nothing is taken back from a worker that
    /// lives: its clients' sessions are there, so they wait for it, and a worker stuck for
    /// good is ended by [`crate::Settings::kill_stalled_after`].
    fn take_back_stalled(&mut self, cx: &mut Ctx<'_>) {
        self.stall_check_at = None;
        let Some(deadline) = self.take_back_after else {
            return;
        };
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut stalled = Vec::new();
        let sticky = cx.loads.policy.sticky().is_some();
        for h in self.by_key.values() {
            for (wid, m) in &h.members {
                let Some(m) = m else { continue };
                let mut sent = m.sent.borrow_mut();
                if sent.is_empty() {
                    continue;
                }
                let queued = m.queued();
                m.untaken.set(queued);
                let read = forget_oldest(&mut sent, queued);
                if read {
                    // It took a connection: no longer stalled, if it was.
                    m.stalled.set(false);
                    m.stalled_since.set(None);
                }
                match sent.front() {
                    Some(&(oldest, _)) if now.saturating_duration_since(oldest) >= deadline => {
                        stalled.push((h.id, *wid));
                    }
                    Some(&(oldest, _)) => {
                        let at = oldest + deadline;
                        next = Some(next.map_or(at, |n| n.min(at)));
                    }
                    None => {}
                }
            }
        }
        for (hid, wid) in stalled {
            let Some(m) = self.member(hid, wid) else {
                continue;
            };
            m.stalled.set(true);
            let since = m.stalled_since.get().unwrap_or(now);
            m.stalled_since.set(Some(since));
            // Stalled for too long (gunicorn's `timeout`): the worker is reported once, to
            // be killed.
            if let Some(limit) = self.kill_stalled_after {
                let stalled = now.saturating_duration_since(since) + deadline;
                if stalled >= limit && !cx.out.stalled.iter().any(|(w, _)| *w == wid) {
                    cx.out.stalled.push((wid, stalled));
                }
            }
            if sticky {
                // Its clients are its own: they wait for it (or for its end, when it is
                // killed as stalled), and the check comes again to see.
                let at = now + deadline;
                next = Some(next.map_or(at, |n| n.min(at)));
                continue;
            }
            let fds = m.read_back();
            self.stats.taken_from_stalled += fds.len() as u64;
            self.take_back(cx, wid, hid, fds, Some(wid));
        }
        self.stall_check_at = next;
    }

    /// Connections handed to worker `id` came back untaken: counted as taken back, no
    /// longer queued for it, and pending again (for another worker if there is one).
    pub(super) fn take_back(
        &mut self,
        cx: &mut Ctx<'_>,
        id: WorkerId,
        listener: ListenerId,
        fds: Vec<OwnedFd>,
        avoid: Option<WorkerId>,
    ) {
        self.stats.taken_back += fds.len() as u64;
        let w = cx.loads.get(id);
        w.handed = w.handed.saturating_sub(fds.len() as u64);
        self.pending.extend(
            fds.into_iter()
                .map(|fd| Pending::back_from(listener, fd, avoid)),
        );
    }

    /// Reads back the connections queued for worker `id` on every listener, for others.
    pub(super) fn take_back_queued(&mut self, cx: &mut Ctx<'_>, id: WorkerId) {
        self.settle_handoffs(cx);
        let mut back = Vec::new();
        for h in self.by_key.values() {
            if let Some(Some(member)) = h.members.get(&id) {
                back.push((h.id, member.read_back()));
            }
        }
        for (listener, fds) in back {
            self.take_back(cx, id, listener, fds, Some(id));
        }
    }
}

/// What the policy sees of worker `worker`, or `None` if it may take no connection now:
/// `untaken` (the kernel's bound) plus this turn's `batched` reach [`MAX_UNTAKEN`], or its
/// board says it is paused, draining, bad, or at its capacity hint. The policy sees the
/// board's exact queue when the worker has a slot; the kernel's bound stays the hard limit
/// whatever the board says.
fn candidate(
    worker: WorkerId,
    untaken: u64,
    batched: u64,
    bound: u64,
    load: Option<&WorkerLoad>,
) -> Option<Candidate> {
    let untaken = untaken.saturating_add(batched);
    if untaken >= bound || load.is_some_and(|l| !l.open()) {
        return None;
    }
    let queued = match load {
        Some(l) if l.on_board() => l.queued().saturating_add(batched),
        _ => untaken,
    };
    if load.is_some_and(|l| l.full(queued)) {
        return None;
    }
    Some(offered(worker, queued, load))
}

/// Worker `worker` as a policy sees it, with `queued` connections waiting for it.
fn offered(worker: WorkerId, queued: u64, load: Option<&WorkerLoad>) -> Candidate {
    load.map_or_else(
        || WorkerLoad::default().candidate(worker, queued),
        |l| l.candidate(worker, queued),
    )
}

/// Forgets the `n` newest connections of a record of sends (they came back unsent).
fn forget_newest(sent: &mut VecDeque<(Instant, u64)>, mut n: u64) {
    while n > 0 {
        let Some(last) = sent.back_mut() else { return };
        let k = last.1.min(n);
        last.1 -= k;
        n -= k;
        if last.1 == 0 {
            sent.pop_back();
        }
    }
}

/// Keeps only the `queued` newest connections of a record of sends: the worker reads its
/// queue in order, so the others were taken. Says whether any was.
fn forget_oldest(sent: &mut VecDeque<(Instant, u64)>, queued: u64) -> bool {
    let mut total: u64 = sent.iter().map(|(_, n)| n).sum();
    let taken = total > queued;
    while total > queued {
        let Some(first) = sent.front_mut() else { break };
        let k = first.1.min(total - queued);
        first.1 -= k;
        total -= k;
        if first.1 == 0 {
            sent.pop_front();
        }
    }
    taken
}

/// The worker the policy picks among those that may take a connection now: members of the
/// listener, open on the board (not paused, draining or bad), with room (untaken plus this
/// turn's batch below the bound, and below their capacity hint).
///
/// A [`Sticky`](crate::policy::Sticky) policy is offered the open members with or without
/// room: a client must reach its own worker, so when that one has no room the connection
/// waits for it ([`Pick::WaitsFor`]) rather than going to another; with `spill`, only
/// those with room, and the client goes to its next place.
pub(super) fn pick(
    h: &Listener,
    batches: &BTreeMap<(ListenerId, WorkerId), Vec<OwnedFd>>,
    avoid: Option<WorkerId>,
    addresses: Option<&Addresses>,
    loads: &mut Loads,
    spill: bool,
) -> Pick {
    let waits = loads.policy.sticky().is_some() && !spill;
    let mut candidates = Vec::with_capacity(h.members.len());
    let mut full = Vec::new();
    for (wid, m) in &h.members {
        let Some(m) = m else { continue };
        if avoid == Some(*wid) {
            continue;
        }
        let load = loads.workers.get(wid);
        if load.is_some_and(|l| !l.open()) {
            continue;
        }
        let batched = batches.get(&(h.id, *wid)).map_or(0, Vec::len) as u64;
        if m.untaken.get().saturating_add(batched) >= MAX_UNTAKEN {
            // The bound says full: ask the kernel how many are really still queued.
            m.untaken.set(m.queued());
        }
        let bound = if m.stalled.get() {
            STALLED_BOUND
        } else {
            MAX_UNTAKEN
        };
        match candidate(*wid, m.untaken.get(), batched, bound, load) {
            Some(c) => candidates.push(c),
            None if waits => {
                full.push(*wid);
                candidates.push(offered(*wid, m.untaken.get(), load));
            }
            None => {}
        }
    }
    if candidates.is_empty() {
        return Pick::NoOne;
    }
    let i = loads
        .policy
        .pick(addresses, &candidates)
        .min(candidates.len() - 1);
    let chosen = candidates[i].worker;
    if full.contains(&chosen) {
        Pick::WaitsFor(chosen)
    } else {
        Pick::To(chosen)
    }
}

/// Where a pending connection goes ([`pick`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pick {
    /// To this worker now.
    To(WorkerId),
    /// It waits for this worker, its own, which has no room now.
    WaitsFor(WorkerId),
    /// No worker may take it now.
    NoOne,
}

/// A hand-off's token: the listener and the worker.
pub(super) fn handoff_token(listener: ListenerId, worker: WorkerId) -> u64 {
    (u64::from(listener) << 32) | u64::from(worker)
}

pub(super) fn handoff_untoken(token: u64) -> (ListenerId, WorkerId) {
    ((token >> 32) as ListenerId, token as WorkerId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_at_the_bound_or_held_back_by_the_board_is_no_candidate() {
        assert!(candidate(1, MAX_UNTAKEN - 1, 1, MAX_UNTAKEN, None).is_none());
        assert_eq!(
            candidate(1, 3, 2, MAX_UNTAKEN, None).map(|c| (c.worker, c.queued)),
            Some((1, 5))
        );
        let mut paused = WorkerLoad::default();
        paused.paused = true;
        assert!(candidate(1, 0, 0, MAX_UNTAKEN, Some(&paused)).is_none());
        let mut draining = WorkerLoad::default();
        draining.draining = true;
        assert!(candidate(1, 0, 0, MAX_UNTAKEN, Some(&draining)).is_none());
    }

    #[test]
    fn a_capacity_hint_counts_active_and_queued_connections() {
        let mut load = WorkerLoad::default();
        load.capacity = Some(4);
        load.counts.taken = 3;
        load.counts.finished = 1;
        // Two active, one more queued by this batch: room for one more.
        assert!(candidate(1, 0, 1, MAX_UNTAKEN, Some(&load)).is_some());
        assert!(candidate(1, 0, 2, MAX_UNTAKEN, Some(&load)).is_none());
    }

    #[test]
    fn hand_off_tokens_round_trip() {
        for (listener, worker) in [(1, 1), (7, 300), (u32::MAX, u32::MAX)] {
            assert_eq!(
                handoff_untoken(handoff_token(listener, worker)),
                (listener, worker)
            );
        }
    }
}
