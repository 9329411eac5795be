//! Node.js workers ([`WorkerProtocol::Node`]): their channel speaks Node's own line protocol
//! ([`crate::ipc::node`]), and this file translates it to and from what the rest of the
//! primary does for a ringleader worker. A `queryServer` becomes a listen request, and its
//! reply a Node reply line (with the listening socket as a `NODE_HANDLE` for shared and
//! reuseport listeners); `listening`, `close`, `online` and `exitedAfterDisconnect` become
//! what their frames would; user messages are JSON values, one per line.
//!
//! Sends keep Node's rule of one handle in flight: after a line that carries an fd, nothing
//! more goes out until the worker's `NODE_HANDLE_ACK` (or `NACK`).
//!
//! Not yet: round-robin and steered listeners, whose connections Node takes as `newconn`
//! handles acknowledged one at a time (their listen is refused with `EOPNOTSUPP`).
//!
//! [`WorkerProtocol::Node`]: crate::WorkerProtocol::Node

use std::collections::{BTreeMap, VecDeque};
use std::io::IoSlice;

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

/// `EOPNOTSUPP`: what a Node worker's listen gets where it is not served yet.
const EOPNOTSUPP: i32 = 95;

/// A Node worker's side of the channel.
#[derive(Debug, Default)]
pub(crate) struct NodeChannel {
    lines: Lines,
    /// fds received and not yet matched to a `NODE_HANDLE` line.
    fds: VecDeque<OwnedFd>,
    /// Lines to write, each with the fd it carries, and how much of the first is written.
    out: VecDeque<(Vec<u8>, Option<OwnedFd>)>,
    written: usize,
    /// A line with an fd went out: the rest waits for the worker's ACK or NACK.
    awaiting_ack: bool,
    /// The primary's `seq` for its messages to this worker.
    seq: u64,
    /// Queries waiting for their reply, by the worker's `seq` (our request's `seq`).
    queries: BTreeMap<u64, Query>,
    /// The worker's live servers: Node's key to ours.
    keys: BTreeMap<String, Key>,
}

impl NodeChannel {
    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq += 1;
        s
    }

    fn queue(&mut self, line: String, fd: Option<OwnedFd>) {
        self.out.push_back((line.into_bytes(), fd));
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
                // Acknowledgements jump the queue, as Node's do.
                ch.out
                    .push_front((to_worker::handle_ack().into_bytes(), None));
                self.flush(id);
                self.node_message(id, *msg, Some(fd));
            }
            FromWorker::HandleAck | FromWorker::HandleNack => {
                let nack = message == FromWorker::HandleNack;
                if let Some(ch) = self.workers.get_mut(&id).and_then(|w| w.node.as_mut()) {
                    ch.awaiting_ack = false;
                }
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
                    l.on_listen(cx, id, &payload, leaving, scheduling, replaces)
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
                let ours = self
                    .workers
                    .get_mut(&id)
                    .and_then(|w| w.node.as_mut())
                    .and_then(|ch| ch.keys.remove(&key));
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
            // Replies to newconn come with round-robin for Node workers (not yet).
            Cluster::Reply { .. } => {}
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
        let mut unsupported = None;
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
            let (line, fd) = match (reply.errno, reply.handoff || reply.steered, fd) {
                (Some(errno), _, _) => (
                    to_worker::reply_error(reply.seq, s, &key, &data, errno),
                    None,
                ),
                (None, true, _) => {
                    unsupported = Some(key.clone());
                    (
                        to_worker::reply_error(reply.seq, s, &key, &data, EOPNOTSUPP),
                        None,
                    )
                }
                (None, false, Some(fd)) => {
                    let udp = matches!(q.address_type, AddressType::Udp4 | AddressType::Udp6);
                    (
                        to_worker::reply_shared(reply.seq, s, &key, &data, udp),
                        Some(fd),
                    )
                }
                (None, false, None) => (
                    to_worker::reply_error(reply.seq, s, &key, &data, EOPNOTSUPP),
                    None,
                ),
            };
            if reply.errno.is_some() || unsupported.is_some() {
                ch.keys.remove(&key);
            }
            ch.queue(line, fd);
        }
        if let Some(key) = unsupported {
            self.ready.push_back(Event::Error {
                worker: Some(id),
                error: Error::new(ErrorKind::Settings, "listen in a Node worker").detail(format!(
                    "{key}: round-robin and steered listeners do not serve Node workers yet; \
                     use Scheduling::Shared or ReusePort"
                )),
            });
        }
        self.flush(id);
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

    /// Writes what a Node worker's channel takes, one handle in flight. Returns whether all
    /// was written.
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
            let is_ack = bytes.starts_with(b"{\"cmd\":\"NODE_HANDLE_");
            if ch.awaiting_ack && !is_ack {
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
                ch.awaiting_ack = true;
            }
            if ch.written == bytes.len() {
                ch.out.pop_front();
                ch.written = 0;
            }
        }
        Ok(true)
    }
}
