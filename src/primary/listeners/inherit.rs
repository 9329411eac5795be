//! Sockets a primary starts with rather than binds: the listening sockets a service manager
//! passed (socket activation), and every socket an old primary handed over in an upgrade.
//!
//! An old primary sends each socket with one byte that says what it was there ([`Tag`]); the
//! new one asks the kernel where each is bound and what kind it is ([`listen::bound`]), and
//! a listen bound at the same place takes it instead of binding. The workers' own sockets of
//! a reuseport or steered port come in their order in the port's group, so a steered group's
//! places keep their order, and with it the weights of the program attached to it.

use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::path::Path;

use ringleader_sys::listen::{self, Bound};
use ringleader_sys::{AsFd, OwnedFd};

use super::Listeners;

/// What a socket was in the old primary, as the byte sent with it says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tag {
    /// A listener's own socket: round-robin, shared, UDP, Unix, or the socket that holds a
    /// reuseport or steered port.
    Listener,
    /// A worker's own socket in a reuseport or steered port's group.
    Own,
    /// A socket socket activation passed.
    Activated,
}

impl Tag {
    pub(crate) fn byte(self) -> u8 {
        match self {
            Tag::Listener => b'L',
            Tag::Own => b'W',
            Tag::Activated => b'A',
        }
    }

    /// `None`: a byte no old primary sends (a newer one's, say): the socket is not used.
    pub(crate) fn of(byte: u8) -> Option<Tag> {
        match byte {
            b'L' => Some(Tag::Listener),
            b'W' => Some(Tag::Own),
            b'A' => Some(Tag::Activated),
            _ => None,
        }
    }
}

/// The sockets this primary was given, each kept until a listen takes it.
#[derive(Default)]
pub(super) struct Inherited {
    /// Listening TCP sockets from socket activation, with where they are bound. Kept for the
    /// primary's life: listeners use copies, and an upgrade passes them on.
    activated: Vec<(OwnedFd, SocketAddr)>,
    /// An old primary's listeners' sockets; the first listen bound there takes one.
    listeners: Vec<(OwnedFd, Bound)>,
    /// An old primary's workers' own sockets, in their group's order.
    own: Vec<(OwnedFd, SocketAddr)>,
    /// The old primary still serves: this one has not told it it is ready. Until then the
    /// old one steers its groups and empties their queues, and this one leaves them be.
    pub(super) old_primary_serves: bool,
}

impl Inherited {
    /// The activated socket bound at `addr`: the same address, or both unspecified, on the
    /// same port (port 0 matches none).
    pub(super) fn activated(&self, addr: SocketAddr) -> Option<&OwnedFd> {
        self.activated
            .iter()
            .find(|(_, a)| {
                addr.port() != 0
                    && a.port() == addr.port()
                    && (a.ip() == addr.ip()
                        || (a.ip().is_unspecified() && addr.ip().is_unspecified()))
            })
            .map(|(fd, _)| fd)
    }

    /// Takes the old primary's socket bound as `bound`.
    pub(super) fn take_listener(&mut self, bound: &Bound) -> Option<OwnedFd> {
        let i = self.listeners.iter().position(|(_, b)| b == bound)?;
        Some(self.listeners.swap_remove(i).0)
    }

    /// Takes the old primary's Unix socket bound at `path` (as it was given to `bind(2)`).
    pub(super) fn take_unix(&mut self, path: &Path) -> Option<OwnedFd> {
        self.take_listener(&Bound::Unix(path.to_path_buf()))
    }

    /// Takes the old primary's workers' own sockets bound at `addr`, in their group's order.
    pub(super) fn take_own(&mut self, addr: SocketAddr) -> Vec<OwnedFd> {
        let (mine, rest) = std::mem::take(&mut self.own)
            .into_iter()
            .partition(|(_, a)| *a == addr);
        self.own = rest;
        mine.into_iter().map(|(fd, _)| fd).collect()
    }

    /// Takes the first of the old primary's workers' own sockets bound at `addr`.
    pub(super) fn take_one_own(&mut self, addr: SocketAddr) -> Option<OwnedFd> {
        let i = self.own.iter().position(|(_, a)| *a == addr)?;
        Some(self.own.remove(i).0)
    }
}

impl Listeners {
    /// Keeps the listening TCP sockets socket activation passed, for the listens they match.
    pub(crate) fn adopt(&mut self, sockets: Vec<OwnedFd>) {
        for fd in sockets {
            // Not a listening TCP socket: not ours to use (a manager may pass others too).
            if let Ok(Bound::Tcp {
                addr,
                listening: true,
            }) = listen::bound(&fd)
            {
                self.inherited.activated.push((fd, addr));
            }
        }
    }

    /// Keeps the sockets an old primary handed over, for the listens they match. Until
    /// [`Listeners::took_over`], the old primary still serves.
    pub(crate) fn adopt_upgrade(&mut self, sockets: Vec<(u8, OwnedFd)>) {
        self.inherited.old_primary_serves = true;
        for (byte, fd) in sockets {
            match (Tag::of(byte), listen::bound(&fd)) {
                (Some(Tag::Activated), _) => self.adopt(vec![fd]),
                (Some(Tag::Listener), Ok(bound)) => self.inherited.listeners.push((fd, bound)),
                (Some(Tag::Own), Ok(Bound::Tcp { addr, .. })) => {
                    self.inherited.own.push((fd, addr));
                }
                // Nothing a listen can use: closed (its holder was the old primary, whose
                // own copy serves until it retires).
                _ => {}
            }
        }
    }

    /// Whether a listen here took each listener's socket the old primary handed over: the
    /// new generation listens everywhere the old one did (an upgrade's readiness, with every
    /// worker listening). A worker's own socket may be left over: the old primary may have
    /// run more workers.
    pub(crate) fn took_every_listener(&self) -> bool {
        self.inherited.listeners.is_empty()
    }

    /// This primary told the old one it is ready: the old one retires. Its sockets that no
    /// listen here took close (their queues were the old workers'; a listener bound nowhere
    /// here has no worker to serve it), and steering starts.
    pub(crate) fn took_over(&mut self) {
        let inherited = &mut self.inherited;
        inherited.old_primary_serves = false;
        inherited.listeners.clear();
        inherited.own.clear();
        self.steer_at = Some(std::time::Instant::now());
    }

    /// Every socket a new primary gets in an upgrade, with what it is: each listener's own
    /// socket, its workers' own sockets in their group's order, and every socket socket
    /// activation passed.
    pub(crate) fn upgrade_sockets(&self) -> Vec<(Tag, BorrowedFd<'_>)> {
        let mut out = Vec::new();
        for l in self.by_key.values() {
            out.push((Tag::Listener, l.sock.as_fd()));
            out.extend(l.own_sockets.values().map(|s| (Tag::Own, s.as_fd())));
            out.extend(l.spare_sockets.iter().map(|s| (Tag::Own, s.as_fd())));
            if let Some(st) = &l.steering {
                out.extend(st.places.iter().map(|p| (Tag::Own, p.sock.as_fd())));
            }
        }
        out.extend(
            self.inherited
                .activated
                .iter()
                .map(|(fd, _)| (Tag::Activated, fd.as_fd())),
        );
        out
    }
}
