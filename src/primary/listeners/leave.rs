//! Workers leaving listeners, and listeners ending: what was queued for a worker goes to
//! the others, a worker's own socket closes or waits for its replacement, and a listener
//! ends with its last worker unless it is pinned or waits for a replacement.

use std::sync::Arc;
use std::time::Instant;

use ringleader_sys::steer;

use super::{Ctx, Listeners, STEER_BUSY};
use crate::ids::WorkerId;
use crate::ipc::listen::Key;

impl Listeners {
    /// Worker `id` leaves listener `key` (it closed it, disconnected or died): what was
    /// queued for it goes to the others. The listener ends with its last worker, unless it
    /// is pinned or `hold` (the worker exited unasked and a replacement comes: the listener
    /// waits for it, accepted connections included, until [`Listeners::drop_held`]).
    pub(crate) fn leave_listener(&mut self, cx: &mut Ctx<'_>, key: &Key, id: WorkerId, hold: bool) {
        self.settle_handoffs(cx);
        let Some(h) = self.by_key.get_mut(key) else {
            return;
        };
        let Some(mut member) = h.members.remove(&id) else {
            return;
        };
        // Its own reuseport socket closes with it, unless a successor took it over, or, if a
        // replacement comes, it waits for it with its queue.
        if let Some(sock) = h.own_sockets.remove(&id) {
            if hold && Arc::strong_count(&sock) == 1 {
                h.spare_sockets.push(sock);
            }
        }
        if member.as_mut().is_some_and(|m| m.unwatch(cx.driver)) {
            self.watching -= 1;
        }
        if let Some(st) = &mut h.steering {
            // Its socket stays in the group, steered around; the next check empties it.
            st.leave(id);
            self.steer_at = Some(Instant::now());
            self.steer_gap = STEER_BUSY;
        }
        let last = h.members.is_empty() && !h.pinned;
        h.held |= last && hold;
        let Some(member) = member else {
            if last && !hold {
                self.drop_handle(cx, key);
            }
            return;
        };
        let (hid, fds, empty) = (h.id, member.read_back(), last && !hold);
        // Its receiving end now reads end of file: the worker's `incoming()` ends.
        drop(member);
        self.take_back(cx, id, hid, fds, None);
        if empty {
            self.drop_handle(cx, key);
        }
    }

    pub(super) fn drop_handle(&mut self, cx: &mut Ctx<'_>, key: &Key) {
        self.pause_accept(cx, key);
        if let Some(mut h) = self.by_key.remove(key) {
            for m in h.members.values_mut().flatten() {
                if m.unwatch(cx.driver) {
                    self.watching -= 1;
                }
            }
            self.keys.remove(&h.id);
            // A retiring primary's sockets are the new primary's now, the socket file and
            // the workers' queues included.
            if let Some(path) = h.unix_path.as_ref().filter(|_| !self.retiring) {
                let _ = std::fs::remove_file(path);
            }
            // Connections waiting in the workers' own queues are reset with their sockets.
            if let Some(st) = h.steering.as_ref().filter(|_| !self.retiring) {
                let queued: u32 = st
                    .places
                    .iter()
                    .map(|p| steer::accept_queue(&*p.sock).unwrap_or(0))
                    .sum();
                self.stats.closed_unserved += u64::from(queued);
            }
            // No worker left: pending connections are closed, as in Node.
            let before = self.pending.len();
            self.pending.retain(|p| p.listener != h.id);
            self.stats.closed_unserved += (before - self.pending.len()) as u64;
        }
    }

    /// Removes a worker from every listener (Node: `removeHandlesForWorker`).
    pub(crate) fn leave_all_listeners(&mut self, cx: &mut Ctx<'_>, id: WorkerId, hold: bool) {
        let keys: Vec<Key> = self
            .by_key
            .iter()
            .filter(|(_, h)| h.members.contains_key(&id))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.leave_listener(cx, &key, id, hold);
        }
    }

    /// Whether a listener, or a worker's reuseport socket, waits for a replacement.
    pub(crate) fn holds(&self) -> bool {
        self.by_key
            .values()
            .any(|h| h.held || !h.spare_sockets.is_empty())
    }

    /// Ends the listeners that wait with no worker ([`Listeners::leave_listener`]'s `hold`):
    /// no replacement is coming, or it listens elsewhere.
    pub(crate) fn drop_held(&mut self, cx: &mut Ctx<'_>) {
        for h in self.by_key.values_mut() {
            h.spare_sockets.clear();
        }
        let keys: Vec<Key> = self
            .by_key
            .iter()
            .filter(|(_, h)| h.held && h.members.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.drop_handle(cx, &key);
        }
    }
}
