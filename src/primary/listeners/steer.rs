//! Steered listeners: the workers' own sockets in one `SO_REUSEPORT` group, placed by the
//! weights the primary sets from queue depths and hints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringleader_sys::listen::{self, Options};
use ringleader_sys::{OwnedFd, socket, steer};

use super::{Ctx, Listeners, MAX_UNTAKEN, Pending, STEER_BUSY, starved};
use crate::ids::WorkerId;
use crate::primary::loads::WorkerLoad;

/// A queue this deep (a quarter of the hand-off bound) brings the checks to [`STEER_BUSY`].
pub(super) const STEER_DEEP: u64 = MAX_UNTAKEN / 4;
/// The longest gap between checks when all is quiet (the gap doubles up to it).
pub(super) const STEER_QUIET: Duration = Duration::from_millis(16);
/// How long after a worker left its socket is watched closely: connections whose handshake
/// was under way when the group stopped choosing it land in its queue a little later.
pub(super) const STEER_LINGER: Duration = Duration::from_millis(100);

/// A steered listener's `SO_REUSEPORT` group. Each worker listens on a socket of its own,
/// created by the primary, which keeps a copy of every one: none closes while the listener
/// lives, so a socket's place in the group (the order of `listen(2)` calls) never changes
/// and the weights the program is built from stay aligned with the places. The socket of a
/// worker that left stays in the group with weight 0; the primary empties its queue, and
/// the next worker to listen takes it over.
#[derive(Default)]
pub(super) struct Steering {
    pub(super) places: Vec<Place>,
    /// The weights of the program attached last (empty: none yet).
    pub(super) weights: Vec<u32>,
    /// A worker left recently: watch closely until then.
    pub(super) linger_until: Option<Instant>,
}

pub(super) struct Place {
    pub(super) sock: Arc<OwnedFd>,
    pub(super) worker: Option<WorkerId>,
    /// Checks in a row that found its queue at the hand-off bound.
    pub(super) full_checks: u32,
}

impl Steering {
    /// A socket for worker `id`: one a worker left behind, or a new one in the group.
    pub(super) fn join(
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

    pub(super) fn leave(&mut self, id: WorkerId) {
        for p in &mut self.places {
            if p.worker == Some(id) {
                p.worker = None;
                self.linger_until = Some(Instant::now() + STEER_LINGER);
            }
        }
    }
}

impl Listeners {
    /// Checks steered listeners: each worker's accept queue and board hints set its weight
    /// (1, or 0 while its queue is at the hand-off bound or it is paused, draining or bad),
    /// a new program goes to the group when the weights changed, and the primary takes what
    /// waits in the queue of a worker that left, asked for no connections, or stayed at the
    /// bound for two checks in a row, for the others. Checks come every millisecond while
    /// anything waits or is steered around, and up to [`STEER_QUIET`] apart otherwise.
    pub(super) fn steer(&mut self, cx: &mut Ctx<'_>) {
        let now = Instant::now();
        let mut busy = false;
        let mut any = false;
        let mut taken = Vec::new();
        for h in self.by_key.values_mut() {
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
                let open = cx.loads.workers.get(&wid).is_none_or(WorkerLoad::open);
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
                    self.stats.steerings += 1;
                }
            }
            for (i, avoid, depth) in take {
                taken.push((h.id, st.places[i].sock.clone(), avoid, depth));
            }
        }
        for (listener, sock, avoid, depth) in taken {
            // What waited at the check; a connection arriving since stays for the next one
            // (and a worker that took some since only makes this stop early).
            for _ in 0..depth {
                match listen::accept(&*sock, false) {
                    Ok(fd) => {
                        self.stats.accepted += 1;
                        self.stats.taken_from_queues += 1;
                        self.pending.push_back(Pending {
                            listener,
                            fd,
                            avoid,
                            strict: avoid.is_some(),
                            held: false,
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if starved(&e) => {
                        self.stats.starved += 1;
                        break;
                    }
                    Err(_) => self.stats.accept_errors += 1,
                }
            }
        }
        let l = &mut *self;
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
}
