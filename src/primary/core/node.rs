//! Node.js workers ([`WorkerProtocol::Node`]): their channel speaks Node's own line protocol
//! ([`crate::ipc::node`]), and this file translates it to and from what the rest of the
//! primary does for a ringleader worker. A `queryServer` becomes a listen request, and its
//! reply a Node reply line (with the listening socket as a `NODE_HANDLE` for shared and
//! reuseport listeners); `listening`, `close`, `online` and `exitedAfterDisconnect` become
//! what their frames would; user messages are JSON values, one per line.
//!
//! Each line that carries an fd goes out in a `sendmsg` of its own, and at most [`UNACKED`]
//! of them wait for the worker's `NODE_HANDLE_ACK` (or `NACK`) at once (Node's own primary
//! waits for each; see the constant for why more is safe).
//!
//! Round-robin: the listeners pick a Node worker for a connection as any worker, by the same
//! policies and bound, but keep it in their queue for the worker rather than send it over a
//! channel; the primary relays each as a `newconn` line, at most [`IN_FLIGHT`] unanswered.
//! What waits in that queue can be taken back as a channel's contents can (a stalled
//! worker, one that leaves). The primary keeps its copy of each connection until the
//! worker's reply: `accepted: false`, or the worker's end, hands it to another worker
//! (Node's own primary leaves such clients hanging).
//!
//! Shared, reuseport and steered listeners give the worker its listening socket as a
//! `NODE_HANDLE`. Steered, the worker gets its own socket without a hand-off channel, and
//! one whose queue does not move for `kill_stalled_after` is killed. What queues at a socket
//! whose worker died the primary takes, and relays to the others as round-robin's
//! connections are: a Node worker's `newconn` handler hands a connection to whatever server
//! holds the key, its shared handle included.
//!
//! [`WorkerProtocol::Node`]: crate::WorkerProtocol::Node

use std::collections::{BTreeMap, VecDeque};
use std::io::IoSlice;
use std::sync::Arc;

use ringleader_sys::scm::{self, Blocking};
use ringleader_sys::{AsFd, OwnedFd};
use serde_json::Value;

use super::Core;
use crate::error::{Error, ErrorKind};
use crate::ids::WorkerId;
use crate::ipc::Message;
use crate::ipc::frame::Kind;
use crate::ipc::listen::{self as proto, Key, Notice, Reply, Request, Transport};
use crate::ipc::node::{self, AddressType, Cluster, FromWorker, Lines, Query, to_worker};
use crate::primary::event::{self, Event};
use crate::primary::listeners::Taker;

/// `EOPNOTSUPP`: what a Node worker's listen gets for a socket it cannot be given.
const EOPNOTSUPP: i32 = 95;

/// Connections sent to a Node worker and not yet answered (`accepted`), at most.
pub(crate) const IN_FLIGHT: usize = 16;

/// Handles sent to a Node worker and not yet acknowledged, at most. Node's own primary sends
/// one at a time, lest the worker match an fd to the wrong line; each line goes out in a
/// `sendmsg` of its own with its one fd, and Linux never returns two such messages in one
/// read, so the worker's reader sees every line with its own fd whatever the number.
const UNACKED: usize = 4;

/// A Node worker's side of the channel.
#[derive(Debug, Default)]
pub(crate) struct NodeChannel {
    lines: Lines,
    /// fds received and not yet matched to a `NODE_HANDLE` line.
    fds: VecDeque<OwnedFd>,
    /// Lines to write, each with the fd it carries, and how much of the first is written.
    out: VecDeque<(Vec<u8>, Option<Arc<OwnedFd>>)>,
    written: usize,
    /// Lines with an fd sent and not yet acknowledged (ACK or NACK).
    unacked: usize,
    /// The primary's `seq` for its messages to this worker.
    seq: u64,
    /// Queries waiting for their reply, by the worker's `seq` (our request's `seq`).
    queries: BTreeMap<u64, Query>,
    /// The worker's live servers: Node's key to ours.
    keys: BTreeMap<String, Key>,
    /// Round-robin servers, by Node's key: their connections wait in the listeners for the
    /// relay ([`Listeners::take_direct`](crate::primary::listeners::Listeners::take_direct)).
    relayed: Vec<String>,
    /// The server to take from first next time (round-robin over the worker's servers).
    next_relayed: usize,
    /// Connections sent (`newconn`) and not answered, by the line's `seq`: the server's key
    /// and the primary's copy.
    in_flight: BTreeMap<u64, (String, Arc<OwnedFd>)>,
}

impl NodeChannel {
    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq += 1;
        s
    }

    fn queue(&mut self, line: String, fd: Option<OwnedFd>) {
        self.out.push_back((line.into_bytes(), fd.map(Arc::new)));
    }

    /// Drops what waits to be written (the worker is gone).
    pub(crate) fn discard_output(&mut self) {
        self.out.clear();
        self.written = 0;
    }

    /// Whether lines wait to be written.
    pub(crate) fn pending(&self) -> bool {
        !self.out.is_empty()
    }
}

/// Our listen request for a Node query.
fn request(seq: u64, q: &Query) -> Request {
    let (transport, address) = match q.address_type {
        AddressType::Pipe => (Transport::Unix, q.address().unwrap_or_default().to_owned()),
        AddressType::Fd => (Transport::Tcp, format!("fd:{}", q.fd().unwrap_or(-1))),
        AddressType::Udp4 => (Transport::Udp, q.address().unwrap_or("0.0.0.0").to_owned()),
        AddressType::Udp6 => (Transport::Udp, q.address().unwrap_or("::").to_owned()),
        // No host: Node binds `::` (both stacks) first.
        AddressType::Tcp4 => (Transport::Tcp, q.address().unwrap_or("::").to_owned()),
        AddressType::Tcp6 => (Transport::Tcp, q.address().unwrap_or("::").to_owned()),
    };
    let mode = match (q.readable_all, q.writable_all) {
        (false, false) => None,
        (r, w) => Some(0o600 | if r { 0o044 } else { 0 } | if w { 0o022 } else { 0 }),
    };
    Request {
        seq,
        key: Key {
            transport,
            address,
            port: q.port().unwrap_or(0),
            index: u32::try_from(q.index).unwrap_or(u32::MAX),
        },
        backlog: q.backlog,
        ipv6_only: q.flags & 1 != 0,
        mode,
    }
}

impl Core {
    /// Bytes and fds read from a Node worker's channel. Returns false if the channel was
    /// closed (a malformed line ends it).
    pub(super) fn node_input(&mut self, id: WorkerId, bytes: &[u8], fds: Vec<OwnedFd>) -> bool {
        let Some(ch) = self.workers.get_mut(&id).and_then(|w| w.node.as_mut()) else {
            return false;
        };
        ch.lines.push(bytes);
        ch.fds.extend(fds);
        loop {
            let Some(ch) = self.workers.get_mut(&id).and_then(|w| w.node.as_mut()) else {
                return false;
            };
            let line = match ch.lines.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => return true,
                Err(e) => return self.node_error(id, &e),
            };
            let message = match node::decode(&line) {
                Ok(m) => m,
                Err(e) => return self.node_error(id, &e),
            };
            self.node_message(id, message, None);
            if self.workers.get(&id).is_none_or(|w| w.channel.is_none()) {
                return false;
            }
        }
    }

    fn node_error(&mut self, id: WorkerId, e: &node::LineError) -> bool {
        self.protocol_error(
            id,
            Error::new(ErrorKind::Protocol, "read from a Node worker").detail(e.to_string()),
        );
        false
    }

    fn node_message(&mut self, id: WorkerId, message: FromWorker, fd: Option<OwnedFd>) {
        match message {
            FromWorker::User(value) => self.ready.push_back(Event::Message {
                worker: id,
                message: Message {
                    data: value.to_string().into_bytes(),
                    fd,
                },
            }),
            FromWorker::Handle { msg, .. } => {
                let Some(ch) = self.workers.get_mut(&id).and_then(|w| w.node.as_mut()) else {
                    return;
                };
                // One fd per handle line. A handle line without one is a broken channel (Node
                // would NACK it and leave later fds mismatched): it ends.
                let Some(fd) = ch.fds.pop_front() else {
                    self.protocol_error(
                        id,
                        Error::new(ErrorKind::Protocol, "read from a Node worker")
                            .detail("a NODE_HANDLE line without its fd"),
                    );
                    return;
                };
                // Acknowledgements jump the queue, as Node's do (behind a line begun).
                let at = usize::from(ch.written > 0).min(ch.out.len());
                ch.out
                    .insert(at, (to_worker::handle_ack().into_bytes(), None));
                self.flush(id);
                self.node_message(id, *msg, Some(fd));
            }
            FromWorker::HandleAck | FromWorker::HandleNack => {
                let nack = message == FromWorker::HandleNack;
                if let Some(ch) = self.workers.get_mut(&id).and_then(|w| w.node.as_mut()) {
                    ch.unacked = ch.unacked.saturating_sub(1);
                }
                self.node_pump(id);
                if nack {
                    self.ready.push_back(Event::Error {
                        worker: Some(id),
                        error: Error::new(ErrorKind::Protocol, "send to a Node worker")
                            .detail("it did not take a handle (NODE_HANDLE_NACK)"),
                    });
                }
                self.flush(id);
            }
            FromWorker::Cluster { seq, body } => self.node_cluster(id, seq, body),
            FromWorker::Ignored => {}
        }
    }

    fn node_cluster(&mut self, id: WorkerId, seq: u64, body: Cluster) {
        match body {
            Cluster::Online => {
                if let Some(w) = self.workers.get_mut(&id) {
                    if !w.online_generated {
                        w.online_generated = true;
                        self.ready.push_back(Event::Online { worker: id });
                    }
                }
            }
            Cluster::QueryServer(q) => {
                let req = request(seq, &q);
                if let Some(ch) = self.workers.get_mut(&id).and_then(|w| w.node.as_mut()) {
                    ch.keys.insert(q.key(), req.key.clone());
                    ch.queries.insert(seq, q);
                }
                let leaving = self
                    .workers
                    .get(&id)
                    .is_none_or(super::WorkerEntry::leaving);
                let scheduling = self.scheduling;
                let replaces = self.rolling.as_ref().and_then(|r| r.predecessor_of(id));
                let payload = proto::encode(&req);
                let _ = self.with_listeners(|l, cx| {
                    l.on_listen(
                        cx,
                        id,
                        &payload,
                        leaving,
                        scheduling,
                        replaces,
                        Taker::Relay,
                    )
                });
            }
            Cluster::Listening(q) => {
                let address_type = match q.address_type {
                    AddressType::Tcp4 => event::AddressType::V4,
                    AddressType::Tcp6 | AddressType::Fd => event::AddressType::V6,
                    AddressType::Pipe => event::AddressType::Unix,
                    AddressType::Udp4 => event::AddressType::Udp4,
                    AddressType::Udp6 => event::AddressType::Udp6,
                };
                self.ready.push_back(Event::Listening {
                    worker: id,
                    address: event::Listening {
                        address: q.address().unwrap_or_default().to_owned(),
                        port: q.port().unwrap_or(0),
                        address_type,
                    },
                });
            }
            Cluster::Close { key } => {
                // What waited for it in the listener goes to the others as it leaves.
                let ours = self
                    .workers
                    .get_mut(&id)
                    .and_then(|w| w.node.as_mut())
                    .and_then(|ch| {
                        ch.relayed.retain(|k| *k != key);
                        ch.keys.remove(&key)
                    });
                if let Some(key) = ours {
                    let payload = proto::encode(&Notice {
                        key,
                        local: String::new(),
                    });
                    let _ = self.with_listeners(|l, cx| l.on_close(cx, id, &payload));
                }
            }
            Cluster::ExitedAfterDisconnect => {
                // The worker leaves by choice and waits for our reply; then it closes.
                if let Some(w) = self.workers.get_mut(&id) {
                    w.exited_after_disconnect = true;
                    if let Some(ch) = w.node.as_mut() {
                        let s = ch.next_seq();
                        ch.queue(to_worker::ack(seq, s), None);
                    }
                }
                self.flush(id);
                self.leave_all_listeners(id);
            }
            // The answer to a newconn: taken, or to be handed to another worker.
            Cluster::Reply { ack, accepted } => {
                let sent = self
                    .workers
                    .get_mut(&id)
                    .and_then(|w| w.node.as_mut())
                    .and_then(|ch| ch.in_flight.remove(&ack));
                if let Some((key, conn)) = sent {
                    if accepted != Some(true) {
                        self.node_hand_back(id, &key, conn);
                    }
                }
                self.node_pump(id);
            }
        }
    }

    /// A frame the rest of the primary sends to a Node worker, as Node's line, or nothing.
    pub(super) fn node_frame(
        &mut self,
        id: WorkerId,
        kind: Kind,
        payload: &[u8],
        fd: Option<OwnedFd>,
    ) {
        if kind != Kind::ListenReply {
            return;
        }
        let Ok(reply) = proto::decode::<Reply>(payload) else {
            return;
        };
        if let Some(ch) = self.workers.get_mut(&id).and_then(|w| w.node.as_mut()) {
            let Some(q) = ch.queries.remove(&reply.seq) else {
                return;
            };
            let key = q.key();
            // The server's data (TLS ticket keys): the first a worker gave for the key.
            let data = self.node_data.entry(key.clone()).or_insert(Value::Null);
            if data.is_null() {
                *data = q.data.clone();
            }
            let data = data.clone();
            let s = ch.next_seq();
            let (line, fd) = match (reply.errno, reply.steered, reply.handoff, fd) {
                (Some(errno), ..) => (
                    to_worker::reply_error(reply.seq, s, &key, &data, errno),
                    None,
                ),
                // A channel to a steered socket: only ringleader workers get one (a Node
                // worker's listen gets its socket, `bare`).
                (None, true, ..) => (
                    to_worker::reply_error(reply.seq, s, &key, &data, EOPNOTSUPP),
                    None,
                ),
                // Round-robin: the listener keeps the worker's connections for the relay (the
                // hand-off channel goes unused).
                (None, false, true, Some(_channel)) => {
                    let sockname = reply
                        .local
                        .as_deref()
                        .and_then(|l| l.parse::<std::net::SocketAddr>().ok())
                        .map(|a| to_worker::Sockname {
                            address: a.ip().to_string(),
                            family: if a.is_ipv4() { "IPv4" } else { "IPv6" },
                            port: a.port(),
                        });
                    if !ch.relayed.contains(&key) {
                        ch.relayed.push(key.clone());
                    }
                    if let Some(ours) = ch.keys.get(&key) {
                        self.listeners.deliver_direct(ours, id);
                    }
                    (
                        to_worker::reply_round_robin(reply.seq, s, &key, &data, sockname.as_ref()),
                        None,
                    )
                }
                (None, false, false, Some(fd)) => {
                    // A steered socket of its own: what the primary rescues from a place
                    // left without a worker comes through the relay too.
                    let relays = ch
                        .keys
                        .get(&key)
                        .is_some_and(|ours| self.listeners.relays(ours, id));
                    if relays && !ch.relayed.contains(&key) {
                        ch.relayed.push(key.clone());
                    }
                    let udp = matches!(q.address_type, AddressType::Udp4 | AddressType::Udp6);
                    (
                        to_worker::reply_shared(reply.seq, s, &key, &data, udp),
                        Some(fd),
                    )
                }
                (None, false, _, None) => (
                    to_worker::reply_error(reply.seq, s, &key, &data, EOPNOTSUPP),
                    None,
                ),
            };
            if reply.errno.is_some() || reply.steered {
                ch.keys.remove(&key);
            }
            ch.queue(line, fd);
        }
        self.flush(id);
    }

    /// Sends a Node worker what its round-robin servers have waiting, while fewer than
    /// [`UNACKED`] handles wait for its acknowledgement and fewer than [`IN_FLIGHT`]
    /// connections for its answer. The rest stay in the listener's queue, where a stalled
    /// worker's connections are taken back for others.
    pub(super) fn node_pump(&mut self, id: WorkerId) {
        let Some(ch) = self.workers.get_mut(&id).and_then(|w| w.node.as_mut()) else {
            return;
        };
        let n = ch.relayed.len();
        // Handles written and not acknowledged, and handles queued to be written.
        let mut ahead = ch.unacked + ch.out.iter().filter(|(_, fd)| fd.is_some()).count();
        while n > 0 && ahead < UNACKED && ch.in_flight.len() < IN_FLIGHT {
            let conn = (0..n).find_map(|i| {
                let key = &ch.relayed[(ch.next_relayed + i) % n];
                let conn = self.listeners.take_direct(ch.keys.get(key)?, id)?;
                Some((i, key.clone(), conn))
            });
            let Some((i, key, conn)) = conn else { break };
            ch.next_relayed = (ch.next_relayed + i + 1) % n;
            // The worker gets a copy with the line (SCM_RIGHTS); ours stays until its answer.
            let conn = Arc::new(conn);
            let s = ch.next_seq();
            ch.out
                .push_back((to_worker::newconn(s, &key).into_bytes(), Some(conn.clone())));
            ch.in_flight.insert(s, (key, conn));
            ahead += 1;
        }
        self.flush(id);
    }

    /// Every Node worker's pump (after the listeners handed connections over).
    pub(crate) fn node_pump_all(&mut self) {
        if self.node_data.is_empty() {
            return; // no Node worker ever listened
        }
        let ids: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.node.as_ref().is_some_and(|ch| !ch.relayed.is_empty()))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.node_pump(id);
        }
    }

    /// A connection a Node worker did not take (or could not answer for): back to the
    /// listener, for another worker.
    fn node_hand_back(&mut self, id: WorkerId, node_key: &str, conn: Arc<OwnedFd>) {
        // The line that carried it was written (it was answered, or the channel's queue was
        // cleared first): ours is the last copy. Were it not, the connection stays with the
        // line, closed with the channel.
        let Ok(conn) = Arc::try_unwrap(conn) else {
            return;
        };
        let ours = self
            .workers
            .get(&id)
            .and_then(|w| w.node.as_ref())
            .and_then(|ch| ch.keys.get(node_key).cloned());
        let Some(key) = ours else {
            return; // its server is gone: closed, as Node does with no worker
        };
        let payload = proto::encode(&Notice {
            key,
            local: String::new(),
        });
        let _ = self.listeners.on_reject(id, &payload, Some(conn));
        self.dispatch();
    }

    /// A Node worker's channel ended: what it had not answered goes to the others.
    pub(super) fn node_end(&mut self, id: WorkerId) {
        let Some(ch) = self.workers.get_mut(&id).and_then(|w| w.node.as_mut()) else {
            return;
        };
        // Nothing more goes out: what was queued for it is ours alone again.
        ch.discard_output();
        let back: Vec<(String, Arc<OwnedFd>)> =
            std::mem::take(&mut ch.in_flight).into_values().collect();
        for (key, conn) in back {
            self.node_hand_back(id, &key, conn);
        }
    }

    /// io_uring, after a Node worker's lines were read: whether its channel is read again
    /// now (the buffer comes back) or at the next accept round. While connections it was
    /// sent wait for its answer, more lines are on their way, each a wake-up of the primary
    /// if read as it comes; read a round later, a round's lines come in one read. (An idle
    /// worker's channel is read at once: control messages are not delayed.)
    pub(super) fn defer_node_read(
        &mut self,
        id: WorkerId,
        tok: u64,
        buf: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let Some(round) = self.listeners.rounds(&self.driver) else {
            return Some(buf);
        };
        let busy = self
            .workers
            .get(&id)
            .and_then(|w| w.node.as_ref())
            .is_some_and(|ch| !ch.in_flight.is_empty());
        if !busy {
            return Some(buf);
        }
        self.deferred_reads
            .push((std::time::Instant::now() + round, id, tok, buf));
        None
    }

    /// Reads again the Node channels whose round came ([`Core::defer_node_read`]).
    pub(super) fn node_reads_due(&mut self) {
        if self.deferred_reads.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let (due, later) = std::mem::take(&mut self.deferred_reads)
            .into_iter()
            .partition(|(at, ..)| *at <= now);
        self.deferred_reads = later;
        for (_, id, tok, buf) in due {
            self.rearm_read(id, tok, buf);
        }
    }

    /// When the next deferred read of a Node channel is due.
    pub(super) fn next_node_read(&self) -> Option<std::time::Instant> {
        self.deferred_reads.iter().map(|(at, ..)| *at).min()
    }

    /// A message from the application to a Node worker: one JSON value.
    pub(super) fn node_user(&mut self, id: WorkerId, data: &[u8]) -> crate::Result<()> {
        const OP: &str = "send to a Node worker";
        let value: Value = serde_json::from_slice(data).map_err(|e| Error::json(OP, e))?;
        if let Some(ch) = self.workers.get_mut(&id).and_then(|w| w.node.as_mut()) {
            ch.queue(to_worker::user(&value), None);
        }
        self.flush(id);
        Ok(())
    }

    /// Asks a Node worker to disconnect gracefully (its servers close, then its channel).
    pub(super) fn node_disconnect(&mut self, id: WorkerId) {
        if let Some(ch) = self.workers.get_mut(&id).and_then(|w| w.node.as_mut()) {
            let s = ch.next_seq();
            ch.queue(to_worker::disconnect(s), None);
        }
    }

    /// Writes what a Node worker's channel takes, at most [`UNACKED`] handles unacknowledged.
    /// Returns whether all was written.
    pub(super) fn node_write(&mut self, id: WorkerId) -> std::io::Result<bool> {
        let Some(w) = self.workers.get_mut(&id) else {
            return Ok(true);
        };
        let Some(channel) = w.channel.clone() else {
            return Ok(true);
        };
        let Some(ch) = w.node.as_mut() else {
            return Ok(true);
        };
        while let Some((bytes, fd)) = ch.out.front_mut() {
            // Acknowledgements go out even while a handle of ours waits for one.
            // (A line begun goes out whole first.)
            let is_ack = bytes.starts_with(b"{\"cmd\":\"NODE_HANDLE_");
            if fd.is_some() && ch.unacked >= UNACKED && !is_ack && ch.written == 0 {
                return Ok(true);
            }
            let fds: Vec<_> = fd.iter().map(AsFd::as_fd).collect();
            let n = match scm::send(
                &*channel,
                &[IoSlice::new(&bytes[ch.written..])],
                &fds,
                Blocking::No,
            ) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            // The fd went with the first part; the rest goes without it.
            let carried = fd.take().is_some();
            ch.written += n;
            if carried {
                ch.unacked += 1;
            }
            if ch.written == bytes.len() {
                ch.out.pop_front();
                ch.written = 0;
            }
        }
        Ok(true)
    }
}
