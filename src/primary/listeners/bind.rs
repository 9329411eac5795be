//! Binding a listener: the socket a listen request names, and a worker's own socket in a
//! port's `SO_REUSEPORT` group.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ringleader_sys::listen::{self, Bound, Options};
use ringleader_sys::socket;

use super::steer::Steering;
use super::{Ctx, Listener, Listeners};
use crate::ipc::listen::{Request, Transport};
use crate::primary::settings::Scheduling;

/// Where a listener is bound.
#[derive(Clone, Debug)]
pub(super) enum Local {
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
pub(super) fn shorter_path(path: &Path) -> PathBuf {
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(&cwd).ok().map(Path::to_path_buf));
    match relative {
        Some(r) if !r.as_os_str().is_empty() && r.as_os_str().len() < path.as_os_str().len() => r,
        _ => path.to_path_buf(),
    }
}

impl Listeners {
    pub(super) fn bind(
        &mut self,
        cx: &mut Ctx<'_>,
        req: &Request,
        handoff: bool,
        steered: bool,
        scheduling: Scheduling,
    ) -> std::io::Result<Listener> {
        let mut opts = Options {
            ipv6_only: req.ipv6_only,
            defer_accept_secs: self.defer_accept_secs,
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
                if opts.defer_accept_secs > 0 {
                    listen::set_defer_accept(&sock, opts.defer_accept_secs)?;
                }
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
                let tcp = req.key.transport == Transport::Tcp;
                let per_worker = matches!(scheduling, Scheduling::ReusePort | Scheduling::Steered);
                // An old primary's socket bound here and of this kind (an upgrade): taken.
                let bound = match (tcp, per_worker) {
                    (true, per_worker) => Bound::Tcp {
                        addr,
                        listening: !per_worker,
                    },
                    (false, _) => Bound::Udp(addr),
                };
                let handed = (addr.port() != 0)
                    .then(|| self.inherited.take_listener(&bound))
                    .flatten();
                let activated = tcp.then(|| self.inherited.activated(addr)).flatten();
                let sock = match (handed, activated) {
                    (Some(sock), _) => sock,
                    // A socket the service manager passed (socket activation) and bound
                    // there: round-robin and shared sockets use a copy of it.
                    (None, Some(activated)) if tcp && !per_worker => {
                        let sock = socket::dup(activated)?;
                        if opts.defer_accept_secs > 0 {
                            listen::set_defer_accept(&sock, opts.defer_accept_secs)?;
                        }
                        sock
                    }
                    // The port is held by a bound socket that never listens, so it never
                    // takes connections; each worker gets a listening one of its own.
                    (None, _) if tcp && per_worker => {
                        opts.reuse_port = true;
                        listen::reserve_tcp(addr, &opts)?
                    }
                    (None, _) if tcp => listen::tcp(addr, &opts)?,
                    (None, _) => listen::udp(addr, &opts)?,
                };
                let local = listen::local_addr(&sock)?;
                (sock, Local::Ip(local), None)
            }
            Transport::Unix => {
                let path = PathBuf::from(&req.key.address);
                // Node: the shorter of the absolute path and the one relative to the primary's
                // directory, to fit the ~108-byte sun_path.
                let bind_path = shorter_path(&path);
                let sock = match self.inherited.take_unix(&bind_path) {
                    Some(sock) => sock,
                    None => listen::unix(&bind_path, opts.backlog, req.mode)?,
                };
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
        // An old primary's workers' sockets keep their places in the group.
        let steering = steered.then(|| match &local {
            Local::Ip(addr) => Steering::inherit(self.inherited.take_own(*addr)),
            Local::Unix(_) => Steering::default(),
        });
        self.next_id += 1;
        Ok(Listener {
            id: self.next_id,
            sock: Arc::new(sock),
            local,
            unix_path,
            handoff,
            proxy: false,
            members: BTreeMap::new(),
            accept_op: None,
            accepting: false,
            in_flight: 0,
            retry_at: None,
            generation: 0,
            taken: 0,
            rounds: self.rounds(cx.driver),
            draining: false,
            quiet: false,
            starved: false,
            steering,
            own_sockets: BTreeMap::new(),
            spare_sockets: Vec::new(),
            pinned: false,
            held: false,
        })
    }
}

/// How a worker's own listening socket in a port's `SO_REUSEPORT` group is made (reuseport
/// and steered listeners).
pub(super) fn own_socket_options(req: &Request, defer_accept_secs: u32) -> Options {
    Options {
        ipv6_only: req.ipv6_only,
        reuse_port: true,
        backlog: req.backlog.filter(|b| *b > 0).unwrap_or(511),
        defer_accept_secs,
        ..Options::default()
    }
}
