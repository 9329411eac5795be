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

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringleader_sys::listen::{self, Options};
use ringleader_sys::scm::{self, Blocking};
use ringleader_sys::uring::OpId;
use ringleader_sys::{AsFd, OwnedFd};
use ringleader_sys::{errno, socket, steer};

use super::core::{Core, dyn_fd};
use super::driver::{Driver, Handed};
use super::driver::{Tag, numbered_token, token_generation, untoken};
use super::event::{AddressType, Event, Listening};
use super::loads::{Loads, WorkerLoad};
use super::settings::Scheduling;
use crate::error::{Error, ErrorKind};
use crate::ids::WorkerId;
use crate::ipc::frame::Kind;
use crate::ipc::listen::{self as proto, Key, Notice, Reply, Request, Transport};

/// Connections handed to a worker and not yet taken, beyond which it gets no more.
pub(crate) const MAX_UNTAKEN: u64 = 16;
/// How long accepting pauses after the process ran out of fds or the kernel out of memory.
const STARVED_BACKOFF: Duration = Duration::from_millis(5);
/// How soon connections that wait for room look again when only the board can say that
/// room came (a worker paused, draining or at its capacity hint: shared memory wakes
/// nobody), or when this kernel cannot watch a hand-off channel for its worker's reads.
const HELD_RECHECK: Duration = Duration::from_millis(1);

/// Whether an accept error means the process or the system is short of resources (the
/// connection itself is fine and stays queued in the kernel).
fn starved(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(errno::EMFILE | errno::ENFILE | errno::ENOBUFS | errno::ENOMEM)
    )
}

/// Accepted connections waiting for a worker, beyond which the primary stops accepting and
/// leaves the rest in the kernel's backlog. Exact on epoll; on io_uring a multishot accept
/// drains what the listen backlog holds in one pass before its cancellation takes effect, so
/// the queue can exceed this by at most one backlog (511 by default).
const MAX_PENDING: usize = 256;

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
}

impl Member {
    /// The connections still queued for the worker, read back from our copy of its end.
    fn read_back(&self) -> Vec<OwnedFd> {
        let mut fds = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = scm::recv(&self.rx, &mut buf, &mut fds, Blocking::No) {
            if n == 0 {
                break;
            }
        }
        self.untaken.set(0);
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

/// Where a listener is bound.
#[derive(Clone, Debug)]
enum Local {
    Ip(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Local::Ip(a) => write!(f, "{a}"),
            Local::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The shorter of `path` (absolute) and its form relative to this process's directory.
fn shorter_path(path: &Path) -> PathBuf {
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(&cwd).ok().map(Path::to_path_buf));
    match relative {
        Some(r) if !r.as_os_str().is_empty() && r.as_os_str().len() < path.as_os_str().len() => r,
        _ => path.to_path_buf(),
    }
}

struct Handle {
    id: u32,
    sock: Arc<OwnedFd>,
    local: Local,
    /// The socket file the primary created, removed when the listener goes.
    unix_path: Option<PathBuf>,
    handoff: bool,
    /// Every worker using the listener; round-robin ones have a hand-off channel.
    members: BTreeMap<WorkerId, Option<Member>>,
    accept_op: Option<OpId>,
    accepting: bool,
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
}

/// How often steered listeners are checked while a queue holds connections, a worker is
/// steered around, or a worker left lately.
const STEER_BUSY: Duration = Duration::from_millis(1);
/// A queue this deep (a quarter of the hand-off bound) brings the checks to [`STEER_BUSY`].
const STEER_DEEP: u64 = MAX_UNTAKEN / 4;
/// The longest gap between checks when all is quiet (the gap doubles up to it).
const STEER_QUIET: Duration = Duration::from_millis(16);
/// How long after a worker left its socket is watched closely: connections whose handshake
/// was under way when the group stopped choosing it land in its queue a little later.
const STEER_LINGER: Duration = Duration::from_millis(100);

/// A steered listener's `SO_REUSEPORT` group. Each worker listens on a socket of its own,
/// created by the primary, which keeps a copy of every one: none closes while the listener
/// lives, so a socket's place in the group (the order of `listen(2)` calls) never changes
/// and the weights the program is built from stay aligned with the places. The socket of a
/// worker that left stays in the group with weight 0; the primary empties its queue, and
/// the next worker to listen takes it over.
#[derive(Default)]
struct Steering {
    places: Vec<Place>,
    /// The weights of the program attached last (empty: none yet).
    weights: Vec<u32>,
    /// A worker left recently: watch closely until then.
    linger_until: Option<Instant>,
}

struct Place {
    sock: Arc<OwnedFd>,
    worker: Option<WorkerId>,
    /// Checks in a row that found its queue at the hand-off bound.
    full_checks: u32,
}

impl Steering {
    /// A socket for worker `id`: one a worker left behind, or a new one in the group.
    fn join(
        &mut self,
        id: WorkerId,
        addr: SocketAddr,
        opts: &Options,
    ) -> std::io::Result<Arc<OwnedFd>> {
        if let Some(p) = self.places.iter_mut().find(|p| p.worker.is_none()) {
            p.worker = Some(id);
            p.full_checks = 0;
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
        });
        Ok(sock)
    }

    fn leave(&mut self, id: WorkerId) {
        for p in &mut self.places {
            if p.worker == Some(id) {
                p.worker = None;
                self.linger_until = Some(Instant::now() + STEER_LINGER);
            }
        }
    }
}

/// An accepted connection waiting for a worker.
struct Pending {
    handle: u32,
    fd: OwnedFd,
    /// The worker that handed it back: another one gets it if there is one.
    avoid: Option<WorkerId>,
    /// Taken from that worker's own queue because it stopped taking connections: it never
    /// gets it back, the connection waits for another.
    strict: bool,
    /// It waited through a hand-off round for want of room: its client may have gone since.
    held: bool,
}

impl Handle {
    /// Starts accepting if this is a round-robin listener with workers and there is room.
    fn arm(&mut self, driver: &mut Driver, pending: usize) {
        if !self.handoff || self.accepting || self.members.is_empty() || pending >= MAX_PENDING {
            return;
        }
        if let Some(at) = self.retry_at {
            if Instant::now() < at {
                return;
            }
            self.retry_at = None;
            self.starved = false;
        }
        self.generation = self.generation.wrapping_add(1);
        self.taken = 0;
        let (sock, tok) = (
            dyn_fd(&self.sock),
            numbered_token(self.id, Tag::Accept, self.generation),
        );
        // A round takes what arrived while the listener rested. When a round found nothing,
        // the next arming watches instead, and the first connection after the quiet spell is
        // handed over at once (then the listener rests: `Core::rest`).
        let round = self.rounds.is_some() && !self.quiet;
        let armed = if round {
            driver.accept_waiting(&sock, tok)
        } else {
            driver.accept(&sock, tok)
        };
        match armed {
            Ok(op) => {
                self.accept_op = op;
                self.accepting = true;
                self.draining = round && op.is_some();
            }
            // Out of memory for the registration: try again after a back-off.
            Err(_) => {
                self.retry_at = Some(Instant::now() + STARVED_BACKOFF);
                self.starved = true;
            }
        }
    }

    /// Stops accepting; the kernel's backlog holds what comes meanwhile.
    fn pause(&mut self, driver: &mut Driver) {
        if self.accepting {
            self.accepting = false;
            self.draining = false;
            driver.forget(&dyn_fd(&self.sock), self.accept_op.take());
        }
    }
}

#[derive(Default)]
pub(crate) struct Listeners {
    handles: BTreeMap<Key, Handle>,
    keys: BTreeMap<u32, Key>,
    next_id: u32,
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
}

impl Listeners {
    /// Whether accepting is paused somewhere.
    fn paused(&self) -> bool {
        self.handles.values().any(|h| h.handoff && !h.accepting)
    }

    /// Worker `worker`'s hand-off channel on listener `handle`.
    fn member(&self, handle: u32, worker: WorkerId) -> Option<&Member> {
        let key = self.keys.get(&handle)?;
        self.handles.get(key)?.members.get(&worker)?.as_ref()
    }

    /// When the next resting listener resumes accepting, steered ones are checked, or
    /// connections waiting for room look again.
    pub(crate) fn next_round(&self) -> Option<Instant> {
        self.handles
            .values()
            .filter(|h| h.handoff && !h.accepting)
            .filter_map(|h| h.retry_at)
            .chain(self.steer_at)
            .chain(self.recheck_at)
            .min()
    }

    /// Steered listeners are checked in this turn.
    fn steer_soon(&mut self) {
        self.steer_at = Some(Instant::now());
        self.steer_gap = STEER_BUSY;
    }
}

impl Core {
    /// A worker asks to listen.
    pub(crate) fn on_listen(
        &mut self,
        id: WorkerId,
        payload: &[u8],
    ) -> Result<(), crate::ipc::frame::FrameError> {
        let req: Request = proto::decode(payload)?;
        // Node: a worker that is being disconnected gets no new listener (and no reply).
        if self.slots.get(&id).is_none_or(|s| s.leaving()) {
            return Ok(());
        }
        // Steering needs a TCP address to bind the group to; a Unix socket (or a socket the
        // primary was given, `listen_fd`) is handed off instead.
        let steerable = req.key.transport == Transport::Tcp && !req.key.address.starts_with("fd:");
        let steer = self.scheduling == Scheduling::Steered && steerable;
        let handoff = match self.scheduling {
            Scheduling::RoundRobin => true,
            Scheduling::Steered => !steerable,
            _ => false,
        };
        if !self.listeners.handles.contains_key(&req.key) {
            match self.bind(&req, handoff, steer) {
                Ok(handle) => {
                    self.listeners.keys.insert(handle.id, req.key.clone());
                    self.listeners.handles.insert(req.key.clone(), handle);
                }
                Err(e) => {
                    // The failed key is forgotten: a later listen tries the bind again.
                    self.refuse_listen(id, req.seq, &e);
                    return Ok(());
                }
            }
        }
        let reuse_port =
            self.scheduling == Scheduling::ReusePort && req.key.transport == Transport::Tcp;
        let Some(handle) = self.listeners.handles.get_mut(&req.key) else {
            return Ok(());
        };
        let local = handle.local.to_string();
        // What the listener is, whatever the scheduling is now (settings can change).
        let steered = handle.steering.is_some();
        let fd = if handle.handoff || steered {
            match socket::stream_pair().and_then(|(tx, theirs)| {
                // The copy shares the worker's open file description: it must stay blocking
                // (O_NONBLOCK would be the worker's too); reads from it use MSG_DONTWAIT.
                let rx = socket::dup(&theirs)?;
                socket::set_nonblocking(&tx, true)?;
                if let (Some(st), Local::Ip(addr)) = (&mut handle.steering, &handle.local) {
                    let opts = own_socket_options(&req);
                    // The worker's own socket is the channel's first message.
                    let sock = st.join(id, *addr, &opts)?;
                    let sent = scm::send(
                        &tx,
                        &[std::io::IoSlice::new(b"L")],
                        &[sock.as_fd()],
                        Blocking::No,
                    );
                    if let Err(e) = sent {
                        st.leave(id);
                        return Err(e);
                    }
                }
                Ok((tx, rx, theirs))
            }) {
                Ok((tx, rx, theirs)) => {
                    handle.members.insert(
                        id,
                        Some(Member {
                            tx: Arc::new(tx),
                            rx,
                            untaken: std::cell::Cell::new(0),
                            watch: None,
                        }),
                    );
                    Some(theirs)
                }
                Err(e) => {
                    self.refuse_listen(id, req.seq, &e);
                    return Ok(());
                }
            }
        } else if reuse_port {
            // A listening socket of the worker's own in the port's SO_REUSEPORT group.
            let Local::Ip(addr) = handle.local.clone() else {
                return Ok(());
            };
            let opts = own_socket_options(&req);
            match listen::tcp(addr, &opts)
                .and_then(|s| socket::set_nonblocking(&s, true).map(|()| s))
            {
                Ok(sock) => {
                    handle.members.insert(id, None);
                    Some(sock)
                }
                Err(e) => {
                    self.refuse_listen(id, req.seq, &e);
                    return Ok(());
                }
            }
        } else {
            handle.members.insert(id, None);
            socket::dup(&*handle.sock).ok()
        };
        let reply = Reply {
            seq: req.seq,
            errno: None,
            local: Some(local),
            handoff: handle.handoff,
            steered,
        };
        self.send_internal(id, Kind::ListenReply, &proto::encode(&reply), fd);
        if steered {
            self.listeners.steer_soon();
        }
        self.arm_accept(&req.key);
        Ok(())
    }

    /// Answers a listen request with the errno of what failed (EIO if it has none).
    fn refuse_listen(&mut self, id: WorkerId, seq: u64, e: &std::io::Error) {
        let errno = Some(e.raw_os_error().unwrap_or(5));
        let reply = Reply {
            seq,
            errno,
            local: None,
            handoff: false,
            steered: false,
        };
        self.send_internal(id, Kind::ListenReply, &proto::encode(&reply), None);
    }

    fn bind(&mut self, req: &Request, handoff: bool, steered: bool) -> std::io::Result<Handle> {
        let mut opts = Options {
            ipv6_only: req.ipv6_only,
            ..Options::default()
        };
        if let Some(b) = req.backlog.filter(|b| *b > 0) {
            opts.backlog = b;
        }
        let (sock, local, unix_path) = match req.key.transport {
            // Node's listen({fd}): the primary's own fd with that number.
            Transport::Tcp if req.key.address.starts_with("fd:") => {
                let raw: i32 = req.key.address[3..]
                    .parse()
                    .map_err(|_| std::io::Error::from_raw_os_error(22))?;
                let sock = listen::dup_listening_tcp(raw)?;
                let local = listen::local_addr(&sock)?;
                (sock, Local::Ip(local), None)
            }
            Transport::Tcp | Transport::Udp => {
                let ip: std::net::IpAddr = req
                    .key
                    .address
                    .parse()
                    .map_err(|_| std::io::Error::from_raw_os_error(22))?;
                let addr = SocketAddr::new(ip, req.key.port);
                let sock = match (req.key.transport, self.scheduling) {
                    // The port is held by a bound socket that never listens, so it never
                    // takes connections; each worker gets a listening one of its own.
                    (Transport::Tcp, Scheduling::ReusePort | Scheduling::Steered) => {
                        opts.reuse_port = true;
                        listen::reserve_tcp(addr, &opts)?
                    }
                    (Transport::Tcp, _) => listen::tcp(addr, &opts)?,
                    _ => listen::udp(addr, &opts)?,
                };
                let local = listen::local_addr(&sock)?;
                (sock, Local::Ip(local), None)
            }
            Transport::Unix => {
                let path = PathBuf::from(&req.key.address);
                // Node: the shorter of the absolute path and the one relative to the primary's
                // directory, to fit the ~108-byte sun_path.
                let bind_path = shorter_path(&path);
                let sock = listen::unix(&bind_path, opts.backlog, req.mode)?;
                (sock, Local::Unix(path), Some(bind_path))
            }
        };
        // Stream listeners are non-blocking, for the primary's accept loop and for workers
        // sharing them: they poll, so that a disconnect can interrupt a wait (every copy
        // shares this flag). UDP sockets are read by the workers directly and stay blocking.
        if req.key.transport != Transport::Udp {
            socket::set_nonblocking(&sock, true)?;
        }
        // UDP is always shared, under both policies (Node).
        let handoff = handoff && req.key.transport != Transport::Udp;
        self.listeners.next_id += 1;
        Ok(Handle {
            id: self.listeners.next_id,
            sock: Arc::new(sock),
            local,
            unix_path,
            handoff,
            members: BTreeMap::new(),
            accept_op: None,
            accepting: false,
            retry_at: None,
            generation: 0,
            taken: 0,
            rounds: self.listener_rounds(),
            draining: false,
            quiet: false,
            starved: false,
            steering: steered.then(Steering::default),
        })
    }

    /// Starts accepting on a round-robin listener that has workers and room.
    fn arm_accept(&mut self, key: &Key) {
        let pending = self.listeners.pending.len();
        if let Some(h) = self.listeners.handles.get_mut(key) {
            h.arm(&mut self.driver, pending);
        }
    }

    fn pause_accept(&mut self, key: &Key) {
        if let Some(h) = self.listeners.handles.get_mut(key) {
            h.pause(&mut self.driver);
        }
    }

    /// io_uring: an accept produced a connection, or ended.
    pub(crate) fn on_accepted(&mut self, tok: u64, result: std::io::Result<OwnedFd>, more: bool) {
        let handle = untoken(tok).0;
        let Some(key) = self.listeners.keys.get(&handle).cloned() else {
            return;
        };
        let Some(h) = self.listeners.handles.get_mut(&key) else {
            return;
        };
        // A late completion of an earlier arming (cancelled, or ended) delivers its
        // connection, but moves no state.
        let current = h.accepting && h.generation == token_generation(tok);
        let watching = current && h.rounds.is_some() && !h.draining;
        match result {
            Ok(fd) => {
                if current {
                    h.taken += 1;
                }
                self.listeners.stats.accepted += 1;
                self.listeners.pending.push_back(Pending {
                    handle,
                    fd,
                    avoid: None,
                    strict: false,
                    held: false,
                });
                if self.listeners.pending.len() >= MAX_PENDING {
                    // Stop at once: completions already posted still arrive, nothing more.
                    self.pause_accept(&key);
                    return;
                }
                if watching {
                    // The first connection after a quiet spell: it goes out this turn, the
                    // next ones gather until the next round.
                    self.rest(&key);
                    return;
                }
            }
            Err(e) if starved(&e) => {
                if current {
                    self.back_off(&key);
                }
                return;
            }
            Err(e) if e.raw_os_error() == Some(errno::ECANCELED) => {}
            // A round's end: nothing more waits.
            Err(e) if current && h.draining && e.raw_os_error() == Some(errno::EAGAIN) => {}
            Err(e) if current && h.draining && e.raw_os_error() == Some(errno::EINVAL) => {
                // A kernel without IORING_ACCEPT_DONTWAIT after all: one connection at a time.
                h.rounds = None;
            }
            // Other accept errors (ECONNABORTED…) concern one connection: skipped, as in Node.
            Err(_) => self.listeners.stats.accept_errors += 1,
        }
        if !more && current {
            let Some(h) = self.listeners.handles.get_mut(&key) else {
                return;
            };
            h.accept_op = None;
            h.accepting = false;
            let drained = std::mem::take(&mut h.draining);
            if drained && h.rounds.is_some() && h.taken > 0 {
                self.rest(&key);
            } else {
                h.quiet = drained;
                self.arm_accept(&key);
            }
        }
    }

    /// epoll: the listening socket is readable.
    pub(crate) fn accept_ready(&mut self, handle: u32) {
        let Some(key) = self.listeners.keys.get(&handle).cloned() else {
            return;
        };
        let Some(h) = self.listeners.handles.get(&key) else {
            return;
        };
        let sock = h.sock.clone();
        let mut taken = 0;
        for _ in 0..64 {
            if self.listeners.pending.len() >= MAX_PENDING {
                break;
            }
            match listen::accept(&*sock, false) {
                Ok(fd) => {
                    taken += 1;
                    self.listeners.stats.accepted += 1;
                    self.listeners.pending.push_back(Pending {
                        handle,
                        fd,
                        avoid: None,
                        strict: false,
                        held: false,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if starved(&e) => {
                    self.back_off(&key);
                    return;
                }
                Err(_) => self.listeners.stats.accept_errors += 1,
            }
        }
        if taken > 0
            && self
                .listeners
                .handles
                .get(&key)
                .is_some_and(|h| h.rounds.is_some())
        {
            self.rest(&key);
        }
    }

    /// The round interval a round-robin listener gets: none where the backend cannot.
    pub(crate) fn listener_rounds(&self) -> Option<Duration> {
        self.accept_rounds
            .filter(|_| self.driver.can_accept_in_rounds())
    }

    /// Accept rounds this far apart from now on ([`crate::Primary::set_accept_rounds`]).
    pub(crate) fn set_accept_rounds(&mut self, interval: Duration) {
        self.accept_rounds = Some(interval).filter(|i| !i.is_zero());
        let rounds = self.listener_rounds();
        let now = Instant::now();
        for h in self.listeners.handles.values_mut() {
            if h.handoff {
                h.rounds = rounds;
                // A listener resting now starts its next round no later than one new interval
                // from now (a starved one keeps its back-off).
                if let (Some(at), Some(r), false) = (h.retry_at, rounds, h.starved) {
                    h.retry_at = Some(at.min(now + r));
                }
                if rounds.is_none() && !h.starved {
                    h.retry_at = None;
                }
            }
        }
    }

    /// In rounds: the listener took connections; it stops accepting until the next round,
    /// while the kernel's backlog gathers the next ones.
    fn rest(&mut self, key: &Key) {
        if let Some(h) = self.listeners.handles.get_mut(key) {
            if let Some(gap) = h.rounds {
                h.pause(&mut self.driver);
                h.quiet = false;
                h.starved = false;
                h.retry_at = Some(Instant::now() + gap);
            }
        }
    }

    /// Accepting failed for want of fds or memory: the connection stays in the kernel's
    /// backlog, and accepting pauses for [`STARVED_BACKOFF`] rather than spinning (the loop
    /// re-checks paused listeners every millisecond).
    fn back_off(&mut self, key: &Key) {
        self.listeners.stats.starved += 1;
        if let Some(h) = self.listeners.handles.get_mut(key) {
            h.pause(&mut self.driver);
            h.accept_op = None;
            h.retry_at = Some(Instant::now() + STARVED_BACKOFF);
            h.starved = true;
        }
    }

    /// Hands pending connections to workers: round-robin over those with fewer than
    /// `MAX_UNTAKEN` untaken, every connection of this turn for one worker in one message.
    pub(crate) fn dispatch(&mut self) {
        if !self.listeners.handles.is_empty() {
            self.read_board();
        }
        if self
            .listeners
            .steer_at
            .is_some_and(|at| at <= Instant::now())
        {
            self.steer();
        }
        if self.listeners.pending.is_empty() {
            if self.listeners.paused() {
                for h in self.listeners.handles.values_mut() {
                    h.arm(&mut self.driver, 0);
                }
            }
            return;
        }
        let mut batches: BTreeMap<(u32, WorkerId), Vec<OwnedFd>> = BTreeMap::new();
        let mut left = VecDeque::new();
        let mut handed = Vec::new();
        while let Some(p) = self.listeners.pending.pop_front() {
            let Some(key) = self.listeners.keys.get(&p.handle) else {
                continue;
            };
            let Some(h) = self.listeners.handles.get_mut(key) else {
                continue;
            };
            // The worker that handed it back only gets it again if nobody else can.
            let loads = &mut self.loads;
            let choice = pick(h, &batches, p.avoid, loads).or_else(|| {
                (!p.strict)
                    .then(|| pick(h, &batches, None, loads))
                    .flatten()
            });
            match choice {
                // Its client left while it waited: a worker would only read end of file.
                Some(_) if p.held && socket::peer_gone(&p.fd) => {
                    self.listeners.stats.closed_gone += 1;
                }
                Some(wid) => {
                    batches.entry((p.handle, wid)).or_default().push(p.fd);
                }
                None => left.push_back(Pending { held: true, ..p }),
            }
        }
        for ((hid, wid), fds) in batches {
            let Some(member) = self.listeners.member(hid, wid) else {
                left.extend(fds.into_iter().map(|fd| Pending {
                    handle: hid,
                    fd,
                    avoid: None,
                    strict: false,
                    held: false,
                }));
                continue;
            };
            // Counted as handed now (the policy's next pick must see them); what comes back
            // undelivered is uncounted in `on_handed`.
            let n = fds.len() as u64;
            member.untaken.set(member.untaken.get() + n);
            let tx = dyn_fd(&member.tx);
            self.listeners.stats.handed_over += n;
            self.loads.get(wid).handed += n;
            self.driver
                .hand_over(&tx, fds, handoff_token(hid, wid), &mut handed);
        }
        self.listeners.pending = left;
        // epoll's hand-offs are done; io_uring's run in the next wait (`Core::turn`).
        for h in handed {
            self.on_handed(h);
        }
        if self.listeners.pending.is_empty() {
            self.listeners.recheck_at = None;
            if self.listeners.watching > 0 {
                self.unwatch_all();
            }
        } else {
            self.watch_held();
        }
        let pending = self.listeners.pending.len();
        for h in self.listeners.handles.values_mut() {
            if pending >= MAX_PENDING {
                h.pause(&mut self.driver);
            } else {
                h.arm(&mut self.driver, pending);
            }
        }
    }

    /// Connections wait because no worker may take more. What holds a worker back decides
    /// what wakes the loop when that changes: a worker at the bound of its hand-off channel
    /// gets a watch that reports its next read from the channel (the kernel's doing, no
    /// polling); a worker held back by the board (paused, draining, bad, or at its capacity
    /// hint) can only be looked at again, which the loop does after [`HELD_RECHECK`].
    fn watch_held(&mut self) {
        let mut held: Vec<u32> = self.listeners.pending.iter().map(|p| p.handle).collect();
        held.sort_unstable();
        held.dedup();
        let l = &mut self.listeners;
        let mut recheck = false;
        for hid in held {
            let Some(h) = l.keys.get(&hid).and_then(|k| l.handles.get_mut(k)) else {
                continue;
            };
            for (wid, m) in &mut h.members {
                let Some(m) = m else { continue };
                let load = self.loads.workers.get(wid);
                recheck |= load.is_some_and(|w| !w.open() || w.full(w.queued()));
                if m.watch.is_some() || m.untaken.get() < MAX_UNTAKEN {
                    continue;
                }
                l.watches = l.watches.wrapping_add(1);
                let tok = numbered_token(*wid, Tag::Taken, l.watches);
                match self.driver.watch_taken(&dyn_fd(&m.tx), tok) {
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
    fn unwatch_all(&mut self) {
        for h in self.listeners.handles.values_mut() {
            for m in h.members.values_mut().flatten() {
                if m.unwatch(&mut self.driver) {
                    self.listeners.watching -= 1;
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
        for h in self.listeners.handles.values_mut() {
            if let Some(Some(m)) = h.members.get_mut(&worker) {
                if m.watch.is_some_and(|(g, _)| g == generation) {
                    m.watch = None;
                    self.listeners.watching -= 1;
                }
            }
        }
    }

    /// A hand-off ended: what was not delivered is pending again (the worker's queue was
    /// full, or its channel broke), no longer counted as handed.
    pub(crate) fn on_handed(&mut self, h: Handed) {
        let (hid, wid) = handoff_untoken(h.token);
        self.listeners.stats.handoff_messages += h.messages;
        if h.unsent.is_empty() {
            return;
        }
        let n = h.unsent.len() as u64;
        if let Some(member) = self.listeners.member(hid, wid) {
            member.untaken.set(member.untaken.get().saturating_sub(n));
        }
        self.listeners.stats.handed_over -= n;
        let w = self.loads.get(wid);
        w.handed = w.handed.saturating_sub(n);
        self.listeners
            .pending
            .extend(h.unsent.into_iter().map(|fd| Pending {
                handle: hid,
                fd,
                avoid: None,
                strict: false,
                held: false,
            }));
    }

    /// Runs the hand-offs queued on the ring now: before a worker's queue is read back, so
    /// that none is still on its way to it.
    pub(crate) fn settle_handoffs(&mut self) {
        let mut handed = Vec::new();
        // On an error they stay queued, and the next wait reports them.
        let _ = self.driver.settle(&mut handed);
        for h in handed {
            self.on_handed(h);
        }
    }

    /// Reads the board: bad slots are reported once (and their workers get no more
    /// connections), draining workers give back what is queued for them.
    fn read_board(&mut self) {
        let news = self.loads.refresh();
        self.act_on(news);
    }

    /// Checks steered listeners: each worker's accept queue and board hints set its weight
    /// (1, or 0 while its queue is at the hand-off bound or it is paused, draining or bad),
    /// a new program goes to the group when the weights changed, and the primary takes what
    /// waits in the queue of a worker that left, asked for no connections, or stayed at the
    /// bound for two checks in a row, for the others. Checks come every millisecond while
    /// anything waits or is steered around, and up to [`STEER_QUIET`] apart otherwise.
    fn steer(&mut self) {
        let now = Instant::now();
        let mut busy = false;
        let mut any = false;
        let mut taken = Vec::new();
        for h in self.listeners.handles.values_mut() {
            let Some(st) = &mut h.steering else { continue };
            any = true;
            if st.linger_until.is_some_and(|t| now < t) {
                busy = true;
            } else {
                st.linger_until = None;
            }
            let mut weights = Vec::with_capacity(st.places.len());
            let mut take = Vec::new();
            for (i, p) in st.places.iter_mut().enumerate() {
                // Not a listener any more (cannot happen while we hold it): treat as empty.
                let depth = u64::from(steer::accept_queue(&*p.sock).unwrap_or(0));
                busy |= depth >= STEER_DEEP;
                let Some(wid) = p.worker else {
                    weights.push(0);
                    if depth > 0 {
                        take.push((i, None, depth));
                    }
                    continue;
                };
                let open = self.loads.workers.get(&wid).is_none_or(WorkerLoad::open);
                p.full_checks = if depth >= MAX_UNTAKEN {
                    p.full_checks + 1
                } else {
                    0
                };
                weights.push(u32::from(open && depth < MAX_UNTAKEN));
                if depth > 0 && (!open || p.full_checks >= 2) {
                    take.push((i, Some(wid), depth));
                }
            }
            let live = st.places.iter().filter(|p| p.worker.is_some()).count();
            let open = weights.iter().filter(|&&w| w > 0).count();
            if open == 0 {
                // Nobody can take more: the kernel spreads over all live workers, and no
                // queue is emptied into another that is just as full.
                for (w, p) in weights.iter_mut().zip(&st.places) {
                    *w = u32::from(p.worker.is_some());
                }
                take.retain(|(_, w, _)| w.is_none());
            }
            busy |= open < live;
            if weights != st.weights && weights.iter().any(|&w| w > 0) {
                // On failure the group keeps its program (or the kernel's hash), and the next
                // check tries again.
                if steer::steer(&*st.places[0].sock, &weights).is_ok() {
                    st.weights = weights;
                    self.listeners.stats.steerings += 1;
                }
            }
            for (i, avoid, depth) in take {
                taken.push((h.id, st.places[i].sock.clone(), avoid, depth));
            }
        }
        for (handle, sock, avoid, depth) in taken {
            // What waited at the check; a connection arriving since stays for the next one
            // (and a worker that took some since only makes this stop early).
            for _ in 0..depth {
                match listen::accept(&*sock, false) {
                    Ok(fd) => {
                        self.listeners.stats.accepted += 1;
                        self.listeners.stats.taken_from_queues += 1;
                        self.listeners.pending.push_back(Pending {
                            handle,
                            fd,
                            avoid,
                            strict: avoid.is_some(),
                            held: false,
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if starved(&e) => {
                        self.listeners.stats.starved += 1;
                        break;
                    }
                    Err(_) => self.listeners.stats.accept_errors += 1,
                }
            }
        }
        let l = &mut self.listeners;
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

    /// Reports bad slots and takes back what draining workers had queued.
    pub(crate) fn act_on(&mut self, news: super::loads::News) {
        if self.listeners.steer_at.is_some() && !(news.bad.is_empty() && news.drain.is_empty()) {
            // Steer around them now.
            self.listeners.steer_soon();
        }
        for (id, why) in news.bad {
            self.push_event(Event::Error {
                worker: Some(id),
                error: Error::new(ErrorKind::Board, "read the load board").detail(format!(
                    "worker {id}'s slot: {why}; it gets no more connections"
                )),
            });
        }
        for id in news.drain {
            self.take_back_queued(id);
        }
    }

    /// Connections handed to worker `id` came back untaken: counted as taken back, no
    /// longer queued for it, and pending again (for another worker if there is one).
    fn take_back(&mut self, id: WorkerId, handle: u32, fds: Vec<OwnedFd>, avoid: Option<WorkerId>) {
        self.listeners.stats.taken_back += fds.len() as u64;
        let w = self.loads.get(id);
        w.handed = w.handed.saturating_sub(fds.len() as u64);
        self.listeners
            .pending
            .extend(fds.into_iter().map(|fd| Pending {
                handle,
                fd,
                avoid,
                strict: false,
                held: false,
            }));
    }

    /// Reads back the connections queued for worker `id` on every listener, for others.
    fn take_back_queued(&mut self, id: WorkerId) {
        self.settle_handoffs();
        let mut back = Vec::new();
        for h in self.listeners.handles.values() {
            if let Some(Some(member)) = h.members.get(&id) {
                back.push((h.id, member.read_back()));
            }
        }
        for (handle, fds) in back {
            self.take_back(id, handle, fds, Some(id));
        }
    }

    /// The worker left a listener (closed it, disconnected or died): connections queued for it
    /// go back to the others, and a listener without workers is closed.
    pub(crate) fn leave_listener(&mut self, key: &Key, id: WorkerId) {
        self.settle_handoffs();
        let Some(h) = self.listeners.handles.get_mut(key) else {
            return;
        };
        let Some(mut member) = h.members.remove(&id) else {
            return;
        };
        if member.as_mut().is_some_and(|m| m.unwatch(&mut self.driver)) {
            self.listeners.watching -= 1;
        }
        if let Some(st) = &mut h.steering {
            // Its socket stays in the group, steered around; the next check empties it.
            st.leave(id);
            self.listeners.steer_at = Some(Instant::now());
            self.listeners.steer_gap = STEER_BUSY;
        }
        let Some(member) = member else {
            if h.members.is_empty() {
                self.drop_handle(key);
            }
            return;
        };
        let (hid, fds, empty) = (h.id, member.read_back(), h.members.is_empty());
        // Its receiving end now reads end of file: the worker's `incoming()` ends.
        drop(member);
        self.take_back(id, hid, fds, None);
        if empty {
            self.drop_handle(key);
        }
    }

    fn drop_handle(&mut self, key: &Key) {
        self.pause_accept(key);
        if let Some(mut h) = self.listeners.handles.remove(key) {
            for m in h.members.values_mut().flatten() {
                if m.unwatch(&mut self.driver) {
                    self.listeners.watching -= 1;
                }
            }
            self.listeners.keys.remove(&h.id);
            if let Some(path) = &h.unix_path {
                let _ = std::fs::remove_file(path);
            }
            // Connections waiting in the workers' own queues are reset with their sockets.
            if let Some(st) = &h.steering {
                let queued: u32 = st
                    .places
                    .iter()
                    .map(|p| steer::accept_queue(&*p.sock).unwrap_or(0))
                    .sum();
                self.listeners.stats.closed_unserved += u64::from(queued);
            }
            // No worker left: pending connections are closed, as in Node.
            let before = self.listeners.pending.len();
            self.listeners.pending.retain(|p| p.handle != h.id);
            self.listeners.stats.closed_unserved += (before - self.listeners.pending.len()) as u64;
        }
    }

    /// Removes a worker from every listener (Node: `removeHandlesForWorker`).
    pub(crate) fn leave_all_listeners(&mut self, id: WorkerId) {
        let keys: Vec<Key> = self
            .listeners
            .handles
            .iter()
            .filter(|(_, h)| h.members.contains_key(&id))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.leave_listener(&key, id);
        }
    }

    pub(crate) fn on_listening(
        &mut self,
        id: WorkerId,
        payload: &[u8],
    ) -> Result<(), crate::ipc::frame::FrameError> {
        let notice: Notice = proto::decode(payload)?;
        let listening = match notice.key.transport {
            Transport::Unix => Some(Listening {
                address: notice.local,
                port: 0,
                address_type: AddressType::Unix,
            }),
            t => notice.local.parse::<SocketAddr>().ok().map(|addr| {
                let address_type = match (t, addr.is_ipv4()) {
                    (Transport::Udp, true) => AddressType::Udp4,
                    (Transport::Udp, false) => AddressType::Udp6,
                    (_, true) => AddressType::V4,
                    (_, false) => AddressType::V6,
                };
                Listening {
                    address: addr.ip().to_string(),
                    port: addr.port(),
                    address_type,
                }
            }),
        };
        if let Some(address) = listening {
            self.push_event(Event::Listening {
                worker: id,
                address,
            });
        }
        Ok(())
    }

    /// A worker handed a connection back (Node: `accepted: false`, e.g. `maxConnections`).
    pub(crate) fn on_reject(
        &mut self,
        id: WorkerId,
        payload: &[u8],
        fd: Option<OwnedFd>,
    ) -> Result<(), crate::ipc::frame::FrameError> {
        let notice: Notice = proto::decode(payload)?;
        let fd = fd.ok_or(crate::ipc::frame::FrameError::MissingFd)?;
        // A connection for a listener that is gone is closed, as Node does with no worker.
        self.listeners.stats.taken_back += 1;
        if let Some(h) = self.listeners.handles.get(&notice.key) {
            self.listeners.pending.push_back(Pending {
                handle: h.id,
                fd,
                avoid: Some(id),
                strict: false,
                held: false,
            });
        } else {
            self.listeners.stats.closed_unserved += 1;
        }
        Ok(())
    }

    pub(crate) fn on_close(
        &mut self,
        id: WorkerId,
        payload: &[u8],
    ) -> Result<(), crate::ipc::frame::FrameError> {
        let notice: Notice = proto::decode(payload)?;
        self.leave_listener(&notice.key, id);
        Ok(())
    }
}

/// How a worker's own listening socket in a port's `SO_REUSEPORT` group is made (reuseport
/// and steered listeners).
fn own_socket_options(req: &Request) -> Options {
    Options {
        ipv6_only: req.ipv6_only,
        reuse_port: true,
        backlog: req.backlog.filter(|b| *b > 0).unwrap_or(511),
        ..Options::default()
    }
}

/// The worker the policy picks among those that may take a connection now: members of the
/// listener, open on the board (not paused, draining or bad), with room (untaken plus this
/// turn's batch below the bound, and below their capacity hint).
fn pick(
    h: &Handle,
    batches: &BTreeMap<(u32, WorkerId), Vec<OwnedFd>>,
    avoid: Option<WorkerId>,
    loads: &mut Loads,
) -> Option<WorkerId> {
    let mut candidates = Vec::with_capacity(h.members.len());
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
            m.untaken.set(listen::queued(&m.rx).unwrap_or(MAX_UNTAKEN));
        }
        let untaken = m.untaken.get().saturating_add(batched);
        if untaken >= MAX_UNTAKEN {
            continue;
        }
        // What the policy sees: the board's exact count when the worker has a slot (the
        // kernel's bound above stays the hard limit whatever the board says).
        let queued = match load {
            Some(l) if l.on_board() => l.queued().saturating_add(batched),
            _ => untaken,
        };
        if load.is_some_and(|l| l.full(queued)) {
            continue;
        }
        candidates.push(match load {
            Some(l) => l.candidate(*wid, queued),
            None => WorkerLoad::default().candidate(*wid, queued),
        });
    }
    if candidates.is_empty() {
        return None;
    }
    let i = loads.policy.pick(&candidates).min(candidates.len() - 1);
    Some(candidates[i].worker)
}

/// A hand-off's token: the listener and the worker.
fn handoff_token(handle: u32, worker: WorkerId) -> u64 {
    (u64::from(handle) << 32) | u64::from(worker)
}

fn handoff_untoken(token: u64) -> (u32, WorkerId) {
    ((token >> 32) as u32, token as WorkerId)
}
