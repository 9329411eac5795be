//! Listeners the primary holds for its workers (Node: `RoundRobinHandle`, `SharedHandle`).
//!
//! Round-robin: the primary accepts (multishot accept on io_uring, an `accept4` loop on
//! epoll) and hands connections to workers over a socketpair of each (worker, listener): one
//! byte and one fd per connection, every connection of a turn for one worker in one
//! `sendmsg`. The primary keeps a copy of the worker's receiving end, so it can count the
//! connections the worker has not taken yet (`FIONREAD`) and take them back when the worker
//! leaves: no accepted connection is lost with a worker. The primary closes its copy of each
//! connection as soon as it is handed over. Shared: every worker gets a copy of the listening
//! socket and accepts itself. Steered: every worker gets a listening socket of its own in one
//! `SO_REUSEPORT` group whose classic BPF program the primary rewrites as loads change, plus
//! a hand-off channel for what the primary takes from a queue (see [`Steering`]).

mod accept;
mod bind;
mod handoff;
mod headers;
mod inherit;
mod leave;
mod protocol;
mod steer;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringleader_sys::scm::{self, Blocking};
use ringleader_sys::uring::OpId;
use ringleader_sys::{OwnedFd, errno, listen};

use self::bind::Local;
pub(crate) use self::inherit::Tag;
pub(crate) use self::protocol::Taker;
use self::steer::Steering;
use super::driver::{Driver, dyn_fd};
use super::event::Event;
use super::loads::Loads;
use crate::ids::WorkerId;
use crate::ipc::frame::Kind;
use crate::ipc::listen::{Key, Transport};
use crate::policy::Addresses;

/// Connections handed to a worker and not yet taken, beyond which it gets no more.
pub(crate) const MAX_UNTAKEN: u64 = 16;

/// Accepted connections waiting for a worker, beyond which the primary stops accepting and
/// leaves the rest in the kernel's backlog. Exact on epoll; on io_uring a multishot accept
/// drains what the listen backlog holds in one pass before its cancellation takes effect, so
/// the queue can exceed this by at most one backlog (511 by default).
const MAX_PENDING: usize = 256;

/// The most connections that wait in the primary for one full worker of their own (the
/// [`Sticky`](crate::policy::Sticky) policy's): past it the newest go to their next place,
/// so that one stuck worker's clients cannot fill the queue ([`MAX_PENDING`]) and stop the
/// accepts of everyone else.
const MAX_WAITING_FOR_ONE: usize = MAX_PENDING / 4;

/// Whether an accept error means the process or the system is short of resources (the
/// connection itself is fine and stays queued in the kernel).
fn starved(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(errno::EMFILE | errno::ENFILE | errno::ENOBUFS | errno::ENOMEM)
    )
}

/// How often steered listeners are checked while a queue holds connections, a worker is
/// steered around, or a worker left lately.
const STEER_BUSY: Duration = Duration::from_millis(1);

/// The most connections a stalled worker is sent at a time: one, a probe of whether it takes
/// connections again.
const STALLED_BOUND: u64 = 1;

/// A listener's id: 1, 2, 3… in the order they were bound.
pub(crate) type ListenerId = u32;

/// What listener work needs besides the listeners, owned by the rest of the primary: the
/// event loop's driver, the board's view of the workers, and where what the work produces
/// goes (frames for workers, events for the user), delivered by the caller when it returns.
pub(crate) struct Ctx<'a> {
    pub(crate) driver: &'a mut Driver,
    pub(crate) loads: &'a mut Loads,
    pub(crate) out: &'a mut Outbox,
}

/// Frames for workers and events for the user that listener work produced, in order.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) frames: Vec<(WorkerId, Kind, Vec<u8>, Option<OwnedFd>)>,
    pub(crate) events: Vec<Event>,
    /// Workers stalled past [`crate::Settings::kill_stalled_after`], and for how long.
    pub(crate) stalled: Vec<(WorkerId, Duration)>,
}

impl Outbox {
    fn send(&mut self, id: WorkerId, kind: Kind, payload: &[u8], fd: Option<OwnedFd>) {
        self.frames.push((id, kind, payload.to_vec(), fd));
    }
}

struct Member {
    /// The primary's sending end (shared with hand-offs in flight on the ring).
    tx: Arc<OwnedFd>,
    /// A copy of the worker's receiving end: queue depth, and connections to take back.
    rx: OwnedFd,
    /// An upper bound on the connections the worker has not taken: the last `FIONREAD` plus
    /// what was sent since. The kernel is asked again only when this reaches the limit.
    untaken: std::cell::Cell<u64>,
    /// While connections wait for room: the watch on `tx` that reports the worker's reads
    /// ([`Driver::watch_taken`]), by its number and its io_uring operation.
    watch: Option<(u32, Option<OpId>)>,
    /// When connections were sent, and how many each time, oldest first, as far as the
    /// worker may not have read them: the age of the oldest it has not taken.
    sent: std::cell::RefCell<VecDeque<(Instant, u64)>>,
    /// Connections waited here past the take-back deadline: until it takes one again it is
    /// sent one at a time, a probe ([`STALLED_BOUND`]).
    stalled: std::cell::Cell<bool>,
    /// Since when it has taken no connection while some waited past the deadline.
    stalled_since: std::cell::Cell<Option<Instant>>,
    /// A worker the primary relays connections to itself (a Node worker): its connections
    /// wait here, not in the channel, until the relay takes them one at a time
    /// ([`Listeners::take_direct`]).
    direct: std::cell::RefCell<Option<VecDeque<OwnedFd>>>,
}

impl Member {
    /// A member whose connections wait here for the primary's relay (a Node worker's), not
    /// in a hand-off channel: the pair it is given is never written to.
    fn relayed() -> std::io::Result<Member> {
        let (tx, rx) = ringleader_sys::socket::stream_pair()?;
        let member = Member::new(tx, rx);
        *member.direct.borrow_mut() = Some(VecDeque::new());
        Ok(member)
    }

    /// A member handed connections through the channel `tx`, of which `rx` is a copy of the
    /// worker's end.
    fn new(tx: OwnedFd, rx: OwnedFd) -> Member {
        Member {
            tx: Arc::new(tx),
            rx,
            untaken: std::cell::Cell::new(0),
            watch: None,
            sent: Default::default(),
            stalled: std::cell::Cell::new(false),
            stalled_since: std::cell::Cell::new(None),
            direct: std::cell::RefCell::new(None),
        }
    }

    /// Whether its connections wait here for the primary's relay.
    fn is_relayed(&self) -> bool {
        self.direct.borrow().is_some()
    }

    /// The connections queued for the worker and not taken yet (`FIONREAD` on our copy of
    /// its end, or the relay's queue).
    fn queued(&self) -> u64 {
        match &*self.direct.borrow() {
            Some(q) => q.len() as u64,
            None => listen::queued(&self.rx).unwrap_or(0),
        }
    }

    /// The connections still queued for the worker, read back from our copy of its end (and
    /// the relay's queue).
    fn read_back(&self) -> Vec<OwnedFd> {
        let mut fds: Vec<OwnedFd> = self
            .direct
            .borrow_mut()
            .as_mut()
            .map(|q| q.drain(..).collect())
            .unwrap_or_default();
        let mut buf = [0u8; 256];
        while let Ok(n) = scm::recv(&self.rx, &mut buf, &mut fds, Blocking::No) {
            if n == 0 {
                break;
            }
        }
        self.untaken.set(0);
        self.sent.borrow_mut().clear();
        fds
    }

    /// Ends the watch on the worker's reads, if there is one; says whether there was.
    fn unwatch(&mut self, driver: &mut Driver) -> bool {
        let Some((_, op)) = self.watch.take() else {
            return false;
        };
        driver.forget(&dyn_fd(&self.tx), op);
        true
    }
}

struct Listener {
    id: ListenerId,
    sock: Arc<OwnedFd>,
    local: Local,
    /// The socket file the primary created, removed when the listener goes.
    unix_path: Option<PathBuf>,
    handoff: bool,
    /// Its connections start with a PROXY protocol header, which the primary reads.
    proxy: bool,
    /// Every worker using the listener; round-robin ones have a hand-off channel.
    members: BTreeMap<WorkerId, Option<Member>>,
    accept_op: Option<OpId>,
    accepting: bool,
    /// io_uring accepts armed whose last completion has not come. A cancelled one may still
    /// wait on the socket's queue, where it takes wake-ups meant for whoever else accepts.
    in_flight: u32,
    /// Accepting waits until then: the listener rests between rounds, or an accept failed
    /// for want of resources (fds, memory), an error that will not clear by itself.
    retry_at: Option<Instant>,
    /// Counts armings; completions of an earlier one carry an older number in their token.
    generation: u32,
    /// Connections taken since the last arming.
    taken: u32,
    /// Accepting in rounds this far apart ([`crate::tuning`]); `None`: each connection as
    /// it comes.
    rounds: Option<Duration>,
    /// io_uring, in rounds: the accept in flight takes what waits and ends (a round), rather
    /// than watching for the next connection (after a round found nothing).
    draining: bool,
    /// In rounds: the last round found nothing, so the next arming watches.
    quiet: bool,
    /// `retry_at` is a back-off after an accept failed for want of resources, not a rest.
    starved: bool,
    /// Steered: the group of the workers' own sockets (`sock` is then a bound socket that
    /// holds the port and never listens).
    steering: Option<Steering>,
    /// Reuseport: the primary's copy of each worker's own socket, for a roll's successor to
    /// take over; dropped when the worker leaves.
    own_sockets: BTreeMap<WorkerId, Arc<OwnedFd>>,
    /// Reuseport: the sockets of workers that exited unasked, kept with their queues for
    /// the replacements (the next workers to listen take them first).
    spare_sockets: Vec<Arc<OwnedFd>>,
    /// The primary's own (socket-activated workers'): kept while the primary lives, even
    /// with no worker.
    pinned: bool,
    /// Its last worker exited unasked and a replacement is coming: it waits for it, with
    /// what it accepted ([`Listeners::drop_held`] ends it if none comes).
    held: bool,
}

/// An accepted connection waiting for a worker.
struct Pending {
    listener: ListenerId,
    fd: OwnedFd,
    /// The worker that handed it back: another one gets it if there is one.
    avoid: Option<WorkerId>,
    /// Taken from that worker's own queue because it stopped taking connections: it never
    /// gets it back, the connection waits for another.
    strict: bool,
    /// It waited through a hand-off round for want of room: its client may have gone since.
    held: bool,
    /// Its addresses, once read for a policy that places by them.
    addresses: Option<Addresses>,
}

impl Pending {
    /// A connection for any worker of `listener`.
    fn new(listener: ListenerId, fd: OwnedFd) -> Pending {
        Pending::back_from(listener, fd, None)
    }

    /// A connection that came back from worker `avoid`: another one gets it if there is one.
    fn back_from(listener: ListenerId, fd: OwnedFd, avoid: Option<WorkerId>) -> Pending {
        Pending {
            listener,
            fd,
            avoid,
            strict: false,
            held: false,
            addresses: None,
        }
    }
}

#[derive(Default)]
pub(crate) struct Listeners {
    by_key: BTreeMap<Key, Listener>,
    keys: BTreeMap<ListenerId, Key>,
    next_id: ListenerId,
    pending: VecDeque<Pending>,
    pub(crate) stats: HandoffStats,
    /// When steered listeners are checked next.
    steer_at: Option<Instant>,
    /// Hand-off channels watched for their workers' reads while connections wait for room.
    watching: usize,
    /// Numbers the watches, so that a late report of one that ended is told from the current.
    watches: u32,
    /// Connections wait for room that the board or an unwatched channel must show: the loop
    /// looks again then.
    recheck_at: Option<Instant>,
    /// The gap before the check after that, when all stays quiet.
    steer_gap: Duration,
    /// Round-robin listeners accept in rounds this far apart ([`crate::tuning`]), where the
    /// backend can.
    accept_rounds: Option<Duration>,
    /// Connections that waited at a worker this long are taken back for others
    /// ([`crate::Settings::take_back_after`]); `None`: never.
    pub(crate) take_back_after: Option<Duration>,
    /// `TCP_DEFER_ACCEPT`'s seconds for TCP listeners made from now on
    /// ([`crate::Settings::defer_accept`]); `0`: off.
    pub(crate) defer_accept_secs: u32,
    /// A worker stalled this long is reported, to be killed
    /// ([`crate::Settings::kill_stalled_after`]); `None`: never.
    pub(crate) kill_stalled_after: Option<Duration>,
    /// How long a socket-activated server may take to start before it can count as stalled
    /// ([`crate::Settings::start_within`]).
    pub(crate) start_within: Duration,
    /// When the workers' queues are checked for such connections next.
    stall_check_at: Option<Instant>,
    /// Sockets this primary was given rather than bound: socket activation's, an old
    /// primary's.
    inherited: inherit::Inherited,
    /// This primary hands over to a new one: it accepts no more.
    retiring: bool,
    /// What each worker's listen requests came to, until its exit is told
    /// ([`Listeners::listened`]).
    listened: BTreeMap<WorkerId, Listened>,
    /// The listeners whose connections start with a PROXY protocol header
    /// ([`crate::Settings::proxy_protocol`]), from their next bind on.
    pub(crate) proxy: Option<crate::ProxyProtocol>,
    /// Connections accepted on such listeners, to be looked at by the next dispatch.
    unread: Vec<(ListenerId, OwnedFd)>,
    /// Connections whose header has not all come.
    headers: headers::Headers,
}

/// What a worker's listen requests came to, for telling whether it booted
/// ([`crate::Respawn`]).
#[derive(Debug, Default)]
pub(crate) struct Listened {
    /// The listeners it was given, in the order it asked.
    pub(crate) keys: Vec<Key>,
    /// A listen was refused (the address was taken…).
    pub(crate) refused: bool,
}

/// What the primary's round-robin hand-off has done since it started
/// ([`Primary::handoff_stats`](crate::Primary::handoff_stats)). Cheap to read at any time: for
/// dashboards, and for checking a distribution policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandoffStats {
    /// Connections the primary accepted.
    pub accepted: u64,
    /// Connections put in a worker's queue. A connection handed over again after it came back
    /// counts again.
    pub handed_over: u64,
    /// `sendmsg` calls that carried them (connections of one turn for one worker share one).
    pub handoff_messages: u64,
    /// Connections that came back from a worker: queued for it when it left the listener, or
    /// rejected by it. Each went to another worker, or was closed with its listener.
    pub taken_back: u64,
    /// Connections closed unserved because their listener had no worker left (as in Node).
    pub closed_unserved: u64,
    /// Accepts that failed and were skipped (a client that gave up before its turn…).
    pub accept_errors: u64,
    /// Accepts that failed for want of fds or memory; each paused accepting for a few
    /// milliseconds while the connection waited in the kernel's backlog.
    pub starved: u64,
    /// Steered listeners: connections the primary took from a worker's own queue (the
    /// worker had stopped taking them, asked for none, or left) to hand to others. Also
    /// counted in `accepted`.
    pub taken_from_queues: u64,
    /// Steered listeners: programs attached to a group, one per change of weights.
    pub steerings: u64,
    /// Connections whose client hung up, having sent nothing, while they waited in the
    /// primary for a worker with room: closed there rather than handed to a worker.
    pub closed_gone: u64,
    /// Connections taken back from a worker they waited at past the take-back deadline
    /// ([`Settings::take_back_after`](crate::Settings::take_back_after)). Also counted in
    /// `taken_back`.
    pub taken_from_stalled: u64,
    /// PROXY protocol listeners ([`crate::ProxyProtocol`]): connections whose header the
    /// primary read whole.
    pub proxy_headers_read: u64,
    /// PROXY protocol listeners: connections refused (closed) for a malformed or too long
    /// header, a client that left mid-header, or one past the deadline.
    pub proxy_headers_refused: u64,
    /// Sticky policies: connections sent to their client's next place because too many
    /// already waited in the primary for their own, full worker.
    pub spilled: u64,
}

impl Listeners {
    /// No listener yet; round-robin ones will accept in rounds `accept_rounds` apart, and
    /// take connections back from workers they waited at for `take_back_after`.
    pub(crate) fn new(
        accept_rounds: Option<Duration>,
        take_back_after: Option<Duration>,
    ) -> Listeners {
        Listeners {
            accept_rounds,
            take_back_after,
            start_within: crate::Settings::default().start_deadline(),
            ..Listeners::default()
        }
    }

    /// Stops accepting for good (an upgrade handed the sockets over): the kernel's queues
    /// are the new primary's now.
    pub(crate) fn retire(&mut self, driver: &mut Driver) {
        self.retiring = true;
        for l in self.by_key.values_mut() {
            l.pause(driver);
        }
    }

    /// Whether nothing this primary accepted waits, and it accepts no more: none pending
    /// here (nor waiting for its PROXY protocol header), none untaken in a worker's channel, no accept of its own still in flight.
    pub(crate) fn handed_all(&self) -> bool {
        self.pending.is_empty()
            && self.unread.is_empty()
            && self.headers.len() == 0
            && self.by_key.values().all(|l| l.in_flight == 0)
            && self
                .by_key
                .values()
                .all(|l| l.members.values().flatten().all(|m| m.queued() == 0))
    }

    /// Whether every worker in `listed` listens somewhere (none listed: false).
    pub(crate) fn all_listen(&self, listed: impl IntoIterator<Item = WorkerId>) -> bool {
        let mut any = false;
        for id in listed {
            any = true;
            if !self.by_key.values().any(|l| l.members.contains_key(&id)) {
                return false;
            }
        }
        any
    }

    /// Where each listener is bound, in the order they were bound (`udp ` before a UDP
    /// socket's address).
    pub(crate) fn addresses(&self) -> Vec<String> {
        self.keys
            .values()
            .filter_map(|key| Some((key, self.by_key.get(key)?)))
            .map(|(key, l)| {
                let udp = if key.transport == Transport::Udp {
                    "udp "
                } else {
                    ""
                };
                format!("{udp}{}", l.local)
            })
            .collect()
    }

    /// The listen keys worker `id` is a member of: where it listens.
    pub(crate) fn keys_of(&self, id: WorkerId) -> Vec<&Key> {
        self.by_key
            .iter()
            .filter(|(_, l)| l.members.contains_key(&id))
            .map(|(k, _)| k)
            .collect()
    }

    /// What worker `id`'s listen requests came to, forgotten here (its exit is told).
    pub(crate) fn listened(&mut self, id: WorkerId) -> Listened {
        self.listened.remove(&id).unwrap_or_default()
    }

    /// Worker `id`'s connections on listener `key` wait in the primary from now on, for a
    /// relay that takes them one at a time ([`Listeners::take_direct`]): a Node worker,
    /// which the primary sends each as a `newconn` line. What its channel holds already
    /// moves there.
    pub(crate) fn deliver_direct(&self, key: &Key, id: WorkerId) {
        let Some(Some(m)) = self.by_key.get(key).and_then(|l| l.members.get(&id)) else {
            return;
        };
        let mut queued = VecDeque::new();
        let mut buf = [0u8; 256];
        let mut fds = Vec::new();
        while let Ok(n) = scm::recv(&m.rx, &mut buf, &mut fds, Blocking::No) {
            if n == 0 {
                break;
            }
        }
        queued.extend(fds);
        *m.direct.borrow_mut() = Some(queued);
    }

    /// Whether worker `id`'s connections on listener `key` wait for the primary's relay
    /// ([`Listeners::take_direct`]).
    pub(crate) fn relays(&self, key: &Key, id: WorkerId) -> bool {
        matches!(
            self.by_key.get(key).and_then(|l| l.members.get(&id)),
            Some(Some(m)) if m.is_relayed()
        )
    }

    /// The next connection waiting for worker `id` on listener `key`, for its relay
    /// ([`Listeners::deliver_direct`]).
    pub(crate) fn take_direct(&self, key: &Key, id: WorkerId) -> Option<OwnedFd> {
        let Some(Some(m)) = self.by_key.get(key).and_then(|l| l.members.get(&id)) else {
            return None;
        };
        let proxy = self.by_key.get(key).is_some_and(|l| l.proxy);
        loop {
            let fd = m.direct.borrow_mut().as_mut()?.pop_front()?;
            m.untaken.set(m.untaken.get().saturating_sub(1));
            // A Node worker reads the client's bytes only: the header is read off here. It
            // waits whole in the socket (it was seen there), so this fails only for a
            // connection whose client reset it since; that one is closed.
            if !proxy || crate::proxy_protocol::strip(&fd).is_ok() {
                return Some(fd);
            }
        }
    }

    /// Connections waiting for worker `id`: handed to it and not read from its channels yet
    /// (`FIONREAD`), and, for a worker with a socket of its own (reuseport, steered), in its
    /// socket's accept queue.
    pub(crate) fn untaken_of(&self, id: WorkerId) -> u64 {
        let own_queue =
            |sock: &OwnedFd| u64::from(ringleader_sys::steer::accept_queue(sock).unwrap_or(0));
        self.by_key
            .values()
            .map(|l| {
                let handed = l
                    .members
                    .get(&id)
                    .and_then(Option::as_ref)
                    .map_or(0, Member::queued);
                let place = l.steering.iter().flat_map(|st| &st.places);
                let own = place
                    .filter(|p| p.worker == Some(id))
                    .map(|p| &*p.sock)
                    .chain(l.own_sockets.get(&id).map(|s| &**s))
                    .map(own_queue)
                    .sum::<u64>();
                handed + own
            })
            .sum()
    }

    /// Whether accepting is paused somewhere.
    fn paused(&self) -> bool {
        self.by_key.values().any(|h| h.handoff && !h.accepting)
    }

    /// Worker `worker`'s hand-off channel on listener `listener`.
    fn member(&self, listener: ListenerId, worker: WorkerId) -> Option<&Member> {
        let key = self.keys.get(&listener)?;
        self.by_key.get(key)?.members.get(&worker)?.as_ref()
    }

    /// When the next resting listener resumes accepting, steered ones are checked, or
    /// connections waiting for room look again.
    pub(crate) fn next_round(&self) -> Option<Instant> {
        self.by_key
            .values()
            .filter(|h| h.handoff && !h.accepting)
            .filter_map(|h| h.retry_at)
            .chain(self.steer_at)
            .chain(self.recheck_at)
            .chain(self.stall_check_at)
            .chain(self.headers.next_deadline())
            .min()
    }

    /// Steered listeners are checked in this turn.
    fn steer_soon(&mut self) {
        self.steer_at = Some(Instant::now());
        self.steer_gap = STEER_BUSY;
    }
}
