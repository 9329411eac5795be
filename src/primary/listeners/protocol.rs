//! The listen protocol: a worker's listen, listening, reject and close messages.

use std::net::SocketAddr;
use std::sync::Arc;

use ringleader_sys::listen;
use ringleader_sys::scm::{self, Blocking};
use ringleader_sys::{AsFd, OwnedFd, socket};

use super::bind::{Local, own_socket_options};
use super::{Ctx, Listeners, Member, Pending};
use crate::ids::WorkerId;
use crate::ipc::frame::{FrameError, Kind};
use crate::ipc::listen::{self as proto, Notice, Reply, Request, Transport};
use crate::primary::event::{AddressType, Event, Listening};
use crate::primary::settings::Scheduling;

impl Listeners {
    /// A worker asks to listen. `leaving`: it is being disconnected; `scheduling`: the
    /// primary's; `replaces`: the worker it succeeds in a rolling restart, whose steered
    /// socket it takes over.
    pub(crate) fn on_listen(
        &mut self,
        cx: &mut Ctx<'_>,
        id: WorkerId,
        payload: &[u8],
        leaving: bool,
        scheduling: Scheduling,
        replaces: Option<WorkerId>,
    ) -> Result<(), FrameError> {
        let req: Request = proto::decode(payload)?;
        // Node: a worker that is being disconnected gets no new listener (and no reply).
        if leaving {
            return Ok(());
        }
        // Steering needs a TCP address to bind the group to; a Unix socket (or a socket the
        // primary was given, `listen_fd`) is handed off instead.
        let steerable = req.key.transport == Transport::Tcp && !req.key.address.starts_with("fd:");
        let steer = scheduling == Scheduling::Steered && steerable;
        let handoff = match scheduling {
            Scheduling::RoundRobin => true,
            Scheduling::Steered => !steerable,
            _ => false,
        };
        if !self.by_key.contains_key(&req.key) {
            match self.bind(cx, &req, handoff, steer, scheduling) {
                Ok(listener) => {
                    self.keys.insert(listener.id, req.key.clone());
                    self.by_key.insert(req.key.clone(), listener);
                }
                Err(e) => {
                    // The failed key is forgotten: a later listen tries the bind again.
                    self.refuse_listen(cx, id, req.seq, &e);
                    return Ok(());
                }
            }
        }
        let reuse_port = scheduling == Scheduling::ReusePort && req.key.transport == Transport::Tcp;
        let Some(listener) = self.by_key.get_mut(&req.key) else {
            return Ok(());
        };
        let local = listener.local.to_string();
        // What the listener is, whatever the scheduling is now (settings can change).
        let steered = listener.steering.is_some();
        let fd = if listener.handoff || steered {
            match socket::stream_pair().and_then(|(tx, theirs)| {
                // The copy shares the worker's open file description: it must stay blocking
                // (O_NONBLOCK would be the worker's too); reads from it use MSG_DONTWAIT.
                let rx = socket::dup(&theirs)?;
                socket::set_nonblocking(&tx, true)?;
                if let (Some(st), Local::Ip(addr)) = (&mut listener.steering, &listener.local) {
                    let opts = own_socket_options(&req);
                    // The worker's own socket is the channel's first message.
                    let sock = st.join(id, replaces, *addr, &opts)?;
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
                    listener.members.insert(
                        id,
                        Some(Member {
                            tx: Arc::new(tx),
                            rx,
                            untaken: std::cell::Cell::new(0),
                            watch: None,
                            sent: Default::default(),
                            stalled: std::cell::Cell::new(false),
                            stalled_since: std::cell::Cell::new(None),
                            one_per_message: std::cell::Cell::new(false),
                        }),
                    );
                    Some(theirs)
                }
                Err(e) => {
                    self.refuse_listen(cx, id, req.seq, &e);
                    return Ok(());
                }
            }
        } else if reuse_port {
            // A listening socket of the worker's own in the port's SO_REUSEPORT group.
            let Local::Ip(addr) = listener.local.clone() else {
                return Ok(());
            };
            let opts = own_socket_options(&req);
            // A roll's successor takes over its predecessor's socket, whose queue would be
            // lost when the predecessor closed it: the primary holds a copy of each worker's
            // socket while the worker listens.
            // An old primary's worker's socket (an upgrade) is taken over alike.
            let taken_over = replaces
                .and_then(|old| listener.own_sockets.get(&old).cloned())
                .or_else(|| self.inherited.take_one_own(addr).map(Arc::new));
            let sock = match taken_over {
                Some(sock) => Ok(sock),
                None => listen::tcp(addr, &opts)
                    .and_then(|s| socket::set_nonblocking(&s, true).map(|()| Arc::new(s))),
            };
            match sock.and_then(|s| socket::dup(&*s).map(|theirs| (s, theirs))) {
                Ok((ours, theirs)) => {
                    listener.members.insert(id, None);
                    listener.own_sockets.insert(id, ours);
                    Some(theirs)
                }
                Err(e) => {
                    self.refuse_listen(cx, id, req.seq, &e);
                    return Ok(());
                }
            }
        } else {
            listener.members.insert(id, None);
            socket::dup(&*listener.sock).ok()
        };
        let reply = Reply {
            seq: req.seq,
            errno: None,
            local: Some(local),
            handoff: listener.handoff,
            steered,
        };
        cx.out
            .send(id, Kind::ListenReply, &proto::encode(&reply), fd);
        if steered {
            self.steer_soon();
        }
        self.arm_accept(cx, &req.key);
        Ok(())
    }

    /// Answers a listen request with the errno of what failed (EIO if it has none).
    pub(super) fn refuse_listen(
        &mut self,
        cx: &mut Ctx<'_>,
        id: WorkerId,
        seq: u64,
        e: &std::io::Error,
    ) {
        let errno = Some(e.raw_os_error().unwrap_or(5));
        let reply = Reply {
            seq,
            errno,
            local: None,
            handoff: false,
            steered: false,
        };
        cx.out
            .send(id, Kind::ListenReply, &proto::encode(&reply), None);
    }

    pub(crate) fn on_listening(
        &mut self,
        cx: &mut Ctx<'_>,
        id: WorkerId,
        payload: &[u8],
    ) -> Result<(), FrameError> {
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
            cx.out.events.push(Event::Listening {
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
    ) -> Result<(), FrameError> {
        let notice: Notice = proto::decode(payload)?;
        let fd = fd.ok_or(FrameError::MissingFd)?;
        // A connection for a listener that is gone is closed, as Node does with no worker.
        self.stats.taken_back += 1;
        if let Some(h) = self.by_key.get(&notice.key) {
            self.pending
                .push_back(Pending::back_from(h.id, fd, Some(id)));
        } else {
            self.stats.closed_unserved += 1;
        }
        Ok(())
    }

    pub(crate) fn on_close(
        &mut self,
        cx: &mut Ctx<'_>,
        id: WorkerId,
        payload: &[u8],
    ) -> Result<(), FrameError> {
        let notice: Notice = proto::decode(payload)?;
        self.leave_listener(cx, &notice.key, id);
        Ok(())
    }
}
