//! Socket-activated workers ([`WorkerProtocol::SocketActivated`]): programs that serve on
//! the sockets systemd's convention passes (fd 3 on, `LISTEN_FDS`, `LISTEN_PID`,
//! `LISTEN_FDNAMES`) and speak no protocol at all.
//!
//! The primary opens their sockets ([`Primary::activation_socket`]) and keeps them while it
//! lives. Each fork gets its sockets from the listeners as a ringleader worker's
//! listen would (the shared socket, or a socket of its own in the port's reuseport or
//! steered group, a roll's successor taking its predecessor's), and runs with no channel:
//! it is online and listening once it runs, a graceful disconnect is `SIGTERM`, and its
//! `Disconnect` comes with its exit.
//!
//! [`WorkerProtocol::SocketActivated`]: crate::WorkerProtocol::SocketActivated
//! [`Primary::activation_socket`]: crate::Primary::activation_socket

use std::net::SocketAddr;

use ringleader_sys::OwnedFd;
use ringleader_sys::signal::Signal;

use super::Core;
use crate::error::{Error, ErrorKind, Result};
use crate::ids::WorkerId;
use crate::primary::event::{AddressType, Event, Listening};
use crate::primary::settings::Scheduling;

/// What the primary keeps of a socket-activated worker beyond any worker's.
#[derive(Debug, Default)]
pub(crate) struct Activated {
    /// It was sent `SIGTERM`, a graceful disconnect.
    pub(crate) stopping: bool,
    /// Its `Disconnect` was generated (with its exit, or when it was asked to go).
    disconnected: bool,
}

/// A fork's sockets, in the order they are passed (fd 3 on), with `LISTEN_FDNAMES` and
/// where each is bound.
pub(super) struct Given {
    pub(super) sockets: Vec<OwnedFd>,
    pub(super) names: String,
    pub(super) locals: Vec<Listening>,
}

/// Why round-robin cannot serve such workers, in the words of every error that says so.
const NEEDS_TAKER: &str = "round-robin and the hand-off policies hand connections to workers \
    that take them, and a socket-activated server accepts from its own socket: use \
    Scheduling::Shared, ReusePort or Steered";

impl Core {
    /// Opens a socket for socket-activated workers ([`crate::Primary::activation_socket`]);
    /// returns where it is bound.
    pub(crate) fn open_activated(&mut self, name: &str, addr: SocketAddr) -> Result<SocketAddr> {
        const OP: &str = "open a socket for socket-activated workers";
        if self.scheduling == Scheduling::RoundRobin {
            return Err(Error::new(ErrorKind::Settings, OP).detail(NEEDS_TAKER));
        }
        if name.is_empty() || name.len() > 255 || name.contains(':') {
            return Err(Error::new(ErrorKind::Settings, OP).detail(format!(
                "{name:?}: a socket's name is 1 to 255 characters without ':'"
            )));
        }
        if self.activated.iter().any(|(n, _)| n == name) {
            return Err(Error::new(ErrorKind::Settings, OP)
                .detail(format!("there is a socket named {name:?} already")));
        }
        let scheduling = self.scheduling;
        let (key, local) = self
            .with_listeners(|l, cx| l.open_activated(cx, addr, scheduling))
            .map_err(|e| Error::io(OP, e).detail(format!("{name} at {addr}")))?;
        self.activated.push((name.to_owned(), key));
        Ok(local)
    }

    /// The sockets for socket-activated worker `id`, each joined to its listener.
    pub(super) fn activated_sockets(&mut self, id: WorkerId) -> Result<Given> {
        const OP: &str = "fork a socket-activated worker";
        if self.scheduling == Scheduling::RoundRobin {
            return Err(Error::new(ErrorKind::Settings, OP).detail(NEEDS_TAKER));
        }
        if self.activated.is_empty() {
            return Err(Error::new(ErrorKind::Settings, OP)
                .detail("it has no socket to serve: open one with Primary::activation_socket"));
        }
        let replaces = self.replacing;
        let scheduling = self.scheduling;
        let mut given = Given {
            sockets: Vec::with_capacity(self.activated.len()),
            names: String::new(),
            locals: Vec::new(),
        };
        for (name, key) in self.activated.clone() {
            let joined = self.listeners.attach(&key, id, replaces, scheduling);
            let (fd, local) = match joined {
                Ok(joined) => joined,
                Err(e) => {
                    self.leave_all_listeners(id);
                    return Err(Error::io(OP, e).detail(name));
                }
            };
            if !given.names.is_empty() {
                given.names.push(':');
            }
            given.names.push_str(&name);
            given.sockets.push(fd);
            given.locals.extend(listening(&local));
        }
        Ok(given)
    }

    /// Asks socket-activated worker `id` to go: `SIGTERM`, systemd's stop.
    pub(super) fn activated_disconnect(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        let Some(a) = w.activated.as_mut().filter(|a| !a.stopping) else {
            return;
        };
        a.stopping = true;
        if w.exit.is_none() {
            let _ = w.pidfd.signal(Signal::TERM);
        }
    }

    /// Socket-activated worker `id` exited: it leaves its listeners, and its `Disconnect`
    /// comes before its `Exit`.
    pub(super) fn activated_exit(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        let exited_after_disconnect = w.exited_after_disconnect;
        let Some(a) = w.activated.as_mut().filter(|a| !a.disconnected) else {
            return;
        };
        a.disconnected = true;
        self.leave_all_listeners_ended(id);
        self.push_event(Event::Disconnect {
            worker: id,
            exited_after_disconnect,
        });
    }
}

/// What a `Listening` event says of a socket bound at `local`.
fn listening(local: &str) -> Option<Listening> {
    let addr: std::net::SocketAddr = local.parse().ok()?;
    Some(Listening {
        address: addr.ip().to_string(),
        port: addr.port(),
        address_type: if addr.is_ipv4() {
            AddressType::V4
        } else {
            AddressType::V6
        },
    })
}
