//! The listen protocol: a worker's listen, listening, reject and close messages.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ringleader_sys::listen::{self, Options};
use ringleader_sys::scm::{self, Blocking};
use ringleader_sys::{AsFd, OwnedFd, errno, socket};

use super::bind::{Local, own_socket_options};
use super::{Ctx, Listeners, Member, Pending};
use crate::ids::WorkerId;
use crate::ipc::frame::{FrameError, Kind};
use crate::ipc::listen::{self as proto, Key, Notice, Reply, Request, Transport};
use crate::primary::event::{AddressType, Event, Listening};
use crate::primary::settings::Scheduling;

/// What a worker takes its connections from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Taker {
    /// A hand-off channel, or a socket of its own (a ringleader worker).
    Channel,
    /// The primary's relay (a Node worker): a steered listener gives it its socket itself,
    /// and the relay brings it what the primary rescues from a socket left without a worker.
    Relay,
    /// Its socket only (a socket-activated server).
    Socket,
}

impl Listeners {
    /// A worker asks to listen. `leaving`: it is being disconnected; `scheduling`: the
    /// primary's; `replaces`: the worker it succeeds in a rolling restart, whose steered
    /// socket it takes over; `taker`: what it takes connections from.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_listen(
        &mut self,
        cx: &mut Ctx<'_>,
        id: WorkerId,
        payload: &[u8],
        leaving: bool,
        scheduling: Scheduling,
        replaces: Option<WorkerId>,
        taker: Taker,
    ) -> Result<(), FrameError> {
        let req: Request = proto::decode(payload)?;
        // Node: a worker that is being disconnected gets no new listener (and no reply).
        if leaving {
            return Ok(());
        }
        if let Err(e) = self.open(cx, &req, scheduling) {
            // The failed key is forgotten: a later listen tries the bind again.
            self.refuse_listen(cx, id, req.seq, &e);
            return Ok(());
        }
        let opts = own_socket_options(&req, self.defer_accept_secs);
        let (fd, channel) = match self.socket_for(&req.key, id, replaces, &opts, scheduling, taker)
        {
            Ok(given) => given,
            Err(e) => {
                self.refuse_listen(cx, id, req.seq, &e);
                return Ok(());
            }
        };
        let keys = &mut self.listened.entry(id).or_default().keys;
        if !keys.contains(&req.key) {
            keys.push(req.key.clone());
        }
        let Some(listener) = self.by_key.get(&req.key) else {
            return Ok(());
        };
        let steered = listener.steering.is_some();
        let reply = Reply {
            seq: req.seq,
            errno: None,
            local: Some(listener.local.to_string()),
            handoff: listener.handoff,
            // The fd is a channel whose first message is the worker's own socket.
            steered: steered && channel,
            proxy_protocol: listener.proxy,
        };
        cx.out
            .send(id, Kind::ListenReply, &proto::encode(&reply), Some(fd));
        if steered {
            self.steer_soon();
        }
        self.arm_accept(cx, &req.key);
        Ok(())
    }

    /// The listener `req` names, bound now unless it is already.
    fn open(
        &mut self,
        cx: &mut Ctx<'_>,
        req: &Request,
        scheduling: Scheduling,
    ) -> std::io::Result<()> {
        if self.by_key.contains_key(&req.key) {
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
        let mut listener = self.bind(cx, req, handoff, steer, scheduling)?;
        let port = match &listener.local {
            Local::Ip(addr) if req.key.transport == Transport::Tcp => Some(addr.port()),
            _ => None,
        };
        if let (Some(port), Some(proxy)) = (port, &self.proxy) {
            if proxy.covers(port) {
                if !handoff {
                    // Only the primary reads the header, and under this scheduling the
                    // workers accept by themselves.
                    return Err(std::io::Error::from_raw_os_error(errno::EPROTONOSUPPORT));
                }
                listener.proxy = true;
                if self.defer_accept_secs == 0 {
                    // The proxy speaks first: the kernel holds each connection until its
                    // header begins to come, so that the first look finds it (most often
                    // whole) and no watch is needed.
                    let secs = proxy.within.as_secs().max(1);
                    listen::set_defer_accept(&*listener.sock, secs.try_into().unwrap_or(1))?;
                }
            }
        }
        self.keys.insert(listener.id, req.key.clone());
        self.by_key.insert(req.key.clone(), listener);
        Ok(())
    }

    /// Worker `id` joins listener `key`; returns the fd it gets, and whether that is a
    /// hand-off channel (else the listening socket it accepts from).
    fn socket_for(
        &mut self,
        key: &Key,
        id: WorkerId,
        replaces: Option<WorkerId>,
        opts: &Options,
        scheduling: Scheduling,
        taker: Taker,
    ) -> std::io::Result<(OwnedFd, bool)> {
        let reuse_port = scheduling == Scheduling::ReusePort && key.transport == Transport::Tcp;
        let Some(listener) = self.by_key.get_mut(key) else {
            return Err(std::io::Error::from_raw_os_error(errno::EINVAL));
        };
        listener.held = false;
        // What the listener is, whatever the scheduling is now (settings can change).
        let own_addr = match &listener.local {
            Local::Ip(addr) => Some(*addr),
            Local::Unix(_) => None,
        };
        let bare = taker != Taker::Channel;
        // A socket-activated server joins when it is spawned, before it can take anything.
        let starting = (taker == Taker::Socket).then(|| Instant::now() + self.start_within);
        if let (Some(st), Some(addr), true) = (&mut listener.steering, own_addr, bare) {
            // A steered socket of its own, without a channel: what queues there waits for
            // it, or for the worker that takes its place (or, for a relayed worker's, once
            // no worker holds the place, goes through the relay to the others).
            st.keep_queues = true;
            let sock = st.join(id, replaces, addr, opts, starting)?;
            let given = socket::dup(&*sock).and_then(|theirs| {
                let member = match taker {
                    Taker::Relay => Some(Member::relayed()?),
                    _ => None,
                };
                Ok((theirs, member))
            });
            let (theirs, member) = given.inspect_err(|_| st.leave(id))?;
            listener.members.insert(id, member);
            return Ok((theirs, false));
        }
        if listener.handoff || listener.steering.is_some() {
            let (tx, theirs) = socket::stream_pair()?;
            // The copy shares the worker's open file description: it must stay blocking
            // (O_NONBLOCK would be the worker's too); reads from it use MSG_DONTWAIT.
            let rx = socket::dup(&theirs)?;
            socket::set_nonblocking(&tx, true)?;
            if let (Some(st), Some(addr)) = (&mut listener.steering, own_addr) {
                // The worker's own socket is the channel's first message.
                let sock = st.join(id, replaces, addr, opts, None)?;
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
            listener.members.insert(id, Some(Member::new(tx, rx)));
            return Ok((theirs, true));
        }
        if let (true, Some(addr)) = (reuse_port, own_addr) {
            // A listening socket of the worker's own in the port's SO_REUSEPORT group.
            // A roll's successor takes over its predecessor's socket, whose queue would be
            // lost when the predecessor closed it: the primary holds a copy of each worker's
            // socket while the worker listens.
            // So is the socket of a worker that exited unasked (kept for its replacement),
            // and an old primary's worker's socket (an upgrade).
            let taken_over = replaces
                .and_then(|old| listener.own_sockets.get(&old).cloned())
                .or_else(|| listener.spare_sockets.pop())
                .or_else(|| self.inherited.take_one_own(addr).map(Arc::new));
            let ours = match taken_over {
                Some(sock) => sock,
                None => {
                    let s = listen::tcp(addr, opts)?;
                    socket::set_nonblocking(&s, true)?;
                    Arc::new(s)
                }
            };
            let theirs = socket::dup(&*ours)?;
            listener.members.insert(id, None);
            listener.own_sockets.insert(id, ours);
            return Ok((theirs, false));
        }
        let theirs = socket::dup(&*listener.sock)?;
        listener.members.insert(id, None);
        Ok((theirs, false))
    }

    /// Opens a listener for socket-activated workers at `addr`, kept while the primary
    /// lives (workers or not); returns its key and where it is bound.
    pub(crate) fn open_activated(
        &mut self,
        cx: &mut Ctx<'_>,
        addr: SocketAddr,
        scheduling: Scheduling,
    ) -> std::io::Result<(Key, SocketAddr)> {
        let req = Request {
            seq: 0,
            key: Key {
                transport: Transport::Tcp,
                address: addr.ip().to_string(),
                port: addr.port(),
                index: 0,
            },
            backlog: None,
            ipv6_only: false,
            mode: None,
        };
        self.open(cx, &req, scheduling)?;
        let Some(l) = self.by_key.get_mut(&req.key) else {
            return Err(std::io::Error::from_raw_os_error(errno::EINVAL));
        };
        l.pinned = true;
        let local = match &l.local {
            Local::Ip(local) => *local,
            Local::Unix(_) => addr,
        };
        Ok((req.key, local))
    }

    /// Socket-activated worker `id` joins listener `key` (of [`Listeners::open_activated`]):
    /// the listening socket it gets, and where it is bound.
    pub(crate) fn attach(
        &mut self,
        key: &Key,
        id: WorkerId,
        replaces: Option<WorkerId>,
        scheduling: Scheduling,
    ) -> std::io::Result<(OwnedFd, String)> {
        let opts = Options {
            reuse_port: true,
            backlog: 511,
            ipv6_only: false,
            ..Options::default()
        };
        let (fd, channel) = self.socket_for(key, id, replaces, &opts, scheduling, Taker::Socket)?;
        debug_assert!(
            !channel,
            "a socket-activated worker gets a listening socket"
        );
        let local = self
            .by_key
            .get(key)
            .map(|l| l.local.to_string())
            .unwrap_or_default();
        if self.by_key.get(key).is_some_and(|l| l.steering.is_some()) {
            self.steer_soon();
        }
        Ok((fd, local))
    }

    /// Answers a listen request with the errno of what failed (EIO if it has none).
    pub(super) fn refuse_listen(
        &mut self,
        cx: &mut Ctx<'_>,
        id: WorkerId,
        seq: u64,
        e: &std::io::Error,
    ) {
        self.listened.entry(id).or_default().refused = true;
        let errno = Some(e.raw_os_error().unwrap_or(5));
        let reply = Reply {
            seq,
            errno,
            local: None,
            handoff: false,
            steered: false,
            proxy_protocol: false,
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
        self.leave_listener(cx, &notice.key, id, false);
        Ok(())
    }
}
