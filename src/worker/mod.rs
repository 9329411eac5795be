//! The worker's side (Node: `cluster.worker` and `process` in a worker).
//!
//! A worker talks to its primary over the control channel it inherited. The user's threads
//! read and write it directly, for latency; a small watcher thread never reads, it only
//! polls the socket for the primary's half-close (a disconnect request or the acknowledgement
//! of ours), for the primary's disappearance (then the worker exits with code 0, as Node's do),
//! and for room to write output the socket could not take at once.

pub(crate) mod board;
mod connection;
mod listener;
mod source;
mod start;
mod watcher;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ringleader_sys::poll::Doorbell;
use ringleader_sys::scm::{self, Blocking};
use ringleader_sys::{AsFd, BorrowedFd, OwnedFd};

use crate::board::Hint;
use crate::error::{Error, ErrorKind, Result};
use crate::ids::WorkerId;
use crate::ipc::Message;
use crate::ipc::buffers::{Inbound, Outbound, READ_CHUNK};
use crate::ipc::frame::Kind;
use crate::ipc::listen::{self as proto, Reply, Transport};

pub use self::connection::Connection;
pub use self::listener::{Incoming, ListenOptions, TcpListener, UdpSocket, UnixListener};
use crate::tuning::{BURST_GAP, COALESCE_LIMIT, default_busy_poll};

/// Output beyond this makes `send` wait for the primary to read (back-pressure).
const HIGH_WATER: usize = 4 * 1024 * 1024;

/// This process as a worker: its id and its channel to the primary.
///
/// Cheap to clone; all clones share the channel. Every method takes `&self`, so one thread may
/// block in [`Worker::recv`] while others send.
///
/// # Examples
/// ```no_run
/// # fn main() -> Result<(), ringleader::Error> {
/// let ringleader::Role::Worker(worker) = ringleader::role()? else { return Ok(()) };
/// worker.send(b"hello from a worker")?; // process.send()
/// while let Some(message) = worker.recv()? {
///     // process.on('message')
///     worker.send(&message.data)?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Worker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    id: WorkerId,
    sock: OwnedFd,
    out: Mutex<Out>,
    reader: Mutex<Reader>,
    /// Listen replies routed by whichever thread read them, by sequence number.
    replies: Mutex<HashMap<u64, (Reply, Option<OwnedFd>)>>,
    replied: Condvar,
    next_seq: AtomicU64,
    /// Live listener indexes per (transport, address, port), for Node's keys.
    indexes: Mutex<BTreeMap<(Transport, String, u16), BTreeSet<u32>>>,
    state: Mutex<State>,
    changed: Condvar,
    doorbell: Doorbell,
    /// Rung (and never cleared) when the channel closes: listeners stop waiting.
    stopping: Doorbell,
    /// Busy-poll window of `recv`, in nanoseconds.
    busy_poll_ns: AtomicU64,
    /// Messages handed to the application so far.
    receives: AtomicU64,
    /// This worker's slot on the load board, if the primary gave it one.
    board: Option<Arc<board::WorkerBoard>>,
}

/// The channel's receiving side: bytes not yet framed, and user messages read by a thread that
/// was waiting for a listen reply, kept for `recv`.
#[derive(Debug, Default)]
struct Reader {
    inbound: Inbound,
    stash: VecDeque<Message>,
}

#[derive(Debug, Default)]
struct Out {
    queue: Outbound,
    /// The watcher was told there is output to flush.
    watcher_flushing: bool,
    /// When this channel was last written to: writes closer than `BURST_GAP` coalesce.
    last_write: Option<Instant>,
    /// `receives` at the last write: a send that answers a receive is not part of a burst.
    receives_at_write: u64,
}

impl Out {
    /// Writes what the socket takes without blocking; `Ok(true)` when all is written.
    fn write(&mut self, sock: BorrowedFd<'_>, blocking: Blocking) -> std::io::Result<bool> {
        if self.queue.pending() == 0 {
            return Ok(true);
        }
        self.last_write = Some(Instant::now());
        self.queue.write_to(sock, blocking)
    }
}

#[derive(Debug, Default)]
struct State {
    /// We asked to disconnect, or the primary did: the channel ending is expected.
    exited_after_disconnect: bool,
    /// The channel is shut down on our side.
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Worker {
    /// Takes over the inherited channel, says `Online` and starts the watcher.
    pub(crate) fn start(
        id: WorkerId,
        sock: OwnedFd,
        board: Option<board::WorkerBoard>,
    ) -> Result<Worker> {
        let doorbell = Doorbell::new().map_err(|e| Error::io("start the worker", e))?;
        let shared = Arc::new(Shared {
            id,
            sock,
            out: Mutex::new(Out::default()),
            reader: Mutex::new(Reader::default()),
            replies: Mutex::new(HashMap::new()),
            replied: Condvar::new(),
            next_seq: AtomicU64::new(0),
            indexes: Mutex::new(BTreeMap::new()),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            doorbell,
            stopping: Doorbell::new().map_err(|e| Error::io("start the worker", e))?,
            busy_poll_ns: AtomicU64::new(default_busy_poll().as_nanos() as u64),
            receives: AtomicU64::new(0),
            board: board.map(Arc::new),
        });
        let worker = Worker { shared };
        worker.send_frame(Kind::Online, &[], None)?;
        let watcher = worker.shared.clone();
        std::thread::Builder::new()
            .name("ringleader-watch".into())
            .spawn(move || watcher::watch(&watcher))
            .map_err(|e| Error::io("start the worker's watcher thread", e))?;
        Ok(worker)
    }

    pub(crate) fn board(&self) -> Option<Arc<board::WorkerBoard>> {
        self.shared.board.clone()
    }

    /// Posts a scheduling hint to the primary through the load board: [`Hint::Pause`] (no
    /// connections until [`Hint::Resume`]), [`Hint::Capacity`], [`Hint::Drain`] (no more
    /// connections, and those queued for this worker go to others). The primary reads hints
    /// whenever it hands connections out, with no round trip.
    ///
    /// # Errors
    /// [`ErrorKind::Board`] when this worker has no board slot, or when 16 hints are still
    /// unread (the primary reads them each time it hands out connections; try again later).
    pub fn hint(&self, hint: Hint) -> Result<()> {
        let Some(board) = &self.shared.board else {
            return Err(Error::new(ErrorKind::Board, "post a hint").detail("no board slot"));
        };
        if board.post(hint) {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::Board, "post a hint").detail("the hint ring is full"))
        }
    }

    /// Publishes a load figure of the application's choosing (requests in flight, queue
    /// length…) on the board, where policies see it as [`Candidate::load`](crate::policy::Candidate::load).
    /// Without a board slot it goes nowhere.
    pub fn publish_load(&self, load: u64) {
        if let Some(b) = &self.shared.board {
            b.set_load(load);
        }
    }

    /// Counts one connection finished that the application took out of its [`Connection`]
    /// with [`Connection::detach`].
    pub fn connection_finished(&self) {
        if let Some(b) = &self.shared.board {
            b.finished(1);
        }
    }

    /// This worker's id, 1, 2, 3… (Node: `cluster.worker.id`).
    pub fn id(&self) -> WorkerId {
        self.shared.id
    }

    /// Sends a message to the primary (Node: `process.send(message)`).
    ///
    /// The message is written at once if the socket has room, else queued and written by the
    /// watcher thread as soon as it has. When more than 4 MiB are queued, `send` blocks until
    /// the primary has read enough: a sender cannot outrun its receiver without bound.
    ///
    /// # Errors
    /// [`ErrorKind::TooLarge`] above [`MAX_PAYLOAD`](crate::MAX_PAYLOAD);
    /// [`ErrorKind::Disconnected`] once the channel is closed.
    pub fn send(&self, data: &[u8]) -> Result<()> {
        self.send_frame(Kind::User, data, None)
    }

    /// Tells the primary this worker is ready to serve. Under
    /// [`Settings::ready_when_told`](crate::Settings::ready_when_told) the primary waits for
    /// this, besides the worker's listens, before a roll retires the worker this one
    /// replaces, an upgrade's new primary takes over, or systemd hears `READY=1`: call it
    /// once the application has warmed up. Elsewhere it only raises
    /// [`Event::Ready`](crate::Event::Ready). Calling it again does nothing more.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] once the channel is closed.
    pub fn ready(&self) -> Result<()> {
        self.send_frame(Kind::Ready, &[], None)
    }

    /// Sends a message with an fd (Node: `process.send(message, handle)`). The fd is closed
    /// here once the kernel has passed it; on error it is given back ([`Error::take_fd`]).
    ///
    /// # Errors
    /// As [`Worker::send`].
    pub fn send_fd(&self, data: &[u8], fd: OwnedFd) -> Result<()> {
        self.send_frame(Kind::User, data, Some(fd))
    }

    /// Sends `value` as JSON.
    ///
    /// # Errors
    /// As [`Worker::send`], and [`ErrorKind::Json`] when it does not serialise.
    pub fn send_json<T: serde::Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let data = serde_json::to_vec(value).map_err(|e| Error::json("send a JSON message", e))?;
        self.send(&data)
    }

    pub(crate) fn send_frame(&self, kind: Kind, data: &[u8], fd: Option<OwnedFd>) -> Result<()> {
        const OP: &str = "send to the primary";
        if lock(&self.shared.state).closed {
            return Err(Error::new(ErrorKind::Disconnected, OP).with_fd(fd));
        }
        let mut out = lock(&self.shared.out);
        out.queue
            .push(kind, data, fd)
            .map_err(|(e, fd)| Error::frame(OP, e).with_fd(fd))?;
        let sock = self.shared.sock.as_fd();
        let pending = out.queue.pending();
        // A burst is sends following sends; a send that answers a receive goes out at once.
        let receives = self.shared.receives.load(Ordering::Relaxed);
        let in_burst = out.watcher_flushing
            || (out.receives_at_write == receives
                && out.last_write.is_some_and(|t| t.elapsed() < BURST_GAP));
        out.receives_at_write = receives;
        let blocking = if pending > HIGH_WATER {
            Blocking::Yes
        } else {
            Blocking::No
        };
        if !in_burst || pending >= COALESCE_LIMIT || blocking == Blocking::Yes {
            match out.write(sock, blocking) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    out.queue.discard();
                    return Err(Error::io(OP, e));
                }
            }
        }
        if !out.watcher_flushing {
            out.watcher_flushing = true;
            self.shared.doorbell.ring();
        }
        Ok(())
    }

    /// Waits for the next message from the primary (Node: `process.on('message')`). Returns
    /// `None` once the channel has closed: after a disconnect, or when the primary asked this
    /// worker to disconnect.
    ///
    /// # Errors
    /// [`ErrorKind::Protocol`] if the primary's bytes are not valid frames (the channel is
    /// closed then); [`ErrorKind::Io`] for a failed `recvmsg(2)`.
    pub fn recv(&self) -> Result<Option<Message>> {
        self.receive(Blocking::Yes)
    }

    /// Like [`Worker::recv`] without waiting: `Ok(None)` when no whole message is there (or the
    /// channel is closed; [`Worker::is_connected`] tells which). For an outside event loop:
    /// poll [`Worker::as_fd`] for readability, then call this until it returns `None`.
    ///
    /// # Errors
    /// As [`Worker::recv`].
    pub fn try_recv(&self) -> Result<Option<Message>> {
        self.receive(Blocking::No)
    }

    /// Receives and parses a JSON message.
    ///
    /// # Errors
    /// As [`Worker::recv`], and [`ErrorKind::Json`].
    pub fn recv_json<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>> {
        self.recv()?.map(|m| m.json()).transpose()
    }

    /// Sets how long `recv` checks for a message without blocking before it sleeps
    /// (default: `RINGLEADER_BUSY_POLL_US`, 50 µs); zero turns busy polling off.
    pub fn set_busy_poll(&self, window: Duration) {
        self.shared
            .busy_poll_ns
            .store(window.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Writes out messages still collected from a burst, without waiting for the watcher.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] when the primary is gone.
    pub fn flush(&self) -> Result<()> {
        let mut out = lock(&self.shared.out);
        if out.queue.pending() == 0 {
            return Ok(());
        }
        match out.write(self.shared.sock.as_fd(), Blocking::No) {
            Ok(true) => {
                out.watcher_flushing = false;
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => {
                out.queue.discard();
                Err(Error::io("flush to the primary", e))
            }
        }
    }

    fn receive(&self, blocking: Blocking) -> Result<Option<Message>> {
        self.receive_until(blocking, None)
    }

    /// Reads the channel. Without `reply`, returns the next user message. With `reply`, returns
    /// (`Ok(None)`) once that listen reply has been routed, keeping user messages for `recv`.
    fn receive_until(&self, blocking: Blocking, reply: Option<u64>) -> Result<Option<Message>> {
        const OP: &str = "receive from the primary";
        // A reply collected in a burst goes out before we wait for the next request.
        let _ = self.flush();
        let mut reader = lock(&self.shared.reader);
        if reply.is_none() {
            if let Some(m) = reader.stash.pop_front() {
                self.shared.receives.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(m));
            }
        }
        let mut fds = Vec::new();
        let spin = Duration::from_nanos(self.shared.busy_poll_ns.load(Ordering::Relaxed));
        let spin_until =
            (blocking == Blocking::Yes && !spin.is_zero()).then(|| Instant::now() + spin);
        // Spinning: hot at first, then yielding the CPU to whoever waits for it.
        let backoff = crossbeam_utils::Backoff::new();
        loop {
            if reply.is_some_and(|seq| lock(&self.shared.replies).contains_key(&seq)) {
                return Ok(None);
            }
            match reader.inbound.next_frame() {
                Ok(Some(frame)) if frame.kind == Kind::User => {
                    let message = Message {
                        data: frame.payload,
                        fd: frame.fd,
                    };
                    if reply.is_some() {
                        reader.stash.push_back(message);
                        continue;
                    }
                    self.shared.receives.fetch_add(1, Ordering::Relaxed);
                    return Ok(Some(message));
                }
                Ok(Some(frame)) if frame.kind == Kind::ListenReply => {
                    match proto::decode::<Reply>(&frame.payload) {
                        Ok(r) => {
                            lock(&self.shared.replies).insert(r.seq, (r, frame.fd));
                            self.shared.replied.notify_all();
                        }
                        Err(e) => {
                            self.close(false);
                            return Err(Error::frame(OP, e));
                        }
                    }
                    continue;
                }
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => {
                    self.close(false);
                    return Err(Error::frame(OP, e));
                }
            }
            let spinning = spin_until.is_some_and(|t| Instant::now() < t);
            let this_read = if spinning { Blocking::No } else { blocking };
            let n = match scm::recv(
                &self.shared.sock,
                reader.inbound.spare(READ_CHUNK),
                &mut fds,
                this_read,
            ) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && spinning => {
                    backoff.snooze();
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Err(e) => return Err(Error::io(OP, e)),
            };
            if n == 0 {
                let _ = reader.inbound.finish();
                self.shared.on_end_of_file();
                return Ok(None);
            }
            reader.inbound.commit(n);
            if let Err(e) = reader.inbound.push_fds(fds.drain(..)) {
                self.close(false);
                return Err(Error::frame(OP, e));
            }
        }
    }

    /// Sends a listen request and waits for its reply, reading the channel itself unless another
    /// thread is reading it (that thread routes the reply here).
    pub(crate) fn request_listen(
        &self,
        payload: impl FnOnce(u64) -> Vec<u8>,
    ) -> Result<(Reply, Option<OwnedFd>)> {
        let seq = self.shared.next_seq.fetch_add(1, Ordering::Relaxed);
        self.send_frame(Kind::Listen, &payload(seq), None)?;
        loop {
            if let Some(r) = lock(&self.shared.replies).remove(&seq) {
                return Ok(r);
            }
            if !self.is_connected() {
                return Err(Error::new(ErrorKind::Disconnected, "listen"));
            }
            if self.shared.reader.try_lock().is_ok() {
                self.receive_until(Blocking::Yes, Some(seq))?;
            } else {
                let replies = lock(&self.shared.replies);
                let _ = self
                    .shared
                    .replied
                    .wait_timeout(replies, Duration::from_millis(10));
            }
        }
    }

    /// The lowest free index for this tuple (Node: `child.js` `_getServer` indexes).
    pub(crate) fn take_index(&self, tuple: (Transport, String, u16)) -> u32 {
        let mut indexes = lock(&self.shared.indexes);
        let used = indexes.entry(tuple).or_default();
        let index = (0..).find(|i| !used.contains(i)).unwrap_or(0);
        used.insert(index);
        index
    }

    pub(crate) fn free_index(&self, tuple: (Transport, String, u16), index: u32) {
        let mut indexes = lock(&self.shared.indexes);
        if let Some(used) = indexes.get_mut(&tuple) {
            used.remove(&index);
            if used.is_empty() {
                indexes.remove(&tuple);
            }
        }
    }

    /// Readable once the channel has closed: listeners stop waiting for connections.
    pub(crate) fn stopping(&self) -> &Doorbell {
        &self.shared.stopping
    }

    pub(crate) fn notify(&self, kind: Kind, payload: &[u8]) -> Result<()> {
        self.send_frame(kind, payload, None)
    }
}

impl AsFd for Worker {
    /// The control channel: readable when a message (or its end) is waiting.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.sock.as_fd()
    }
}

impl std::os::fd::AsRawFd for Worker {
    /// [`Worker::as_fd`](AsFd::as_fd)'s number, for APIs that take one.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.as_fd().as_raw_fd()
    }
}
