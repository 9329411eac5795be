//! Telling a service manager (systemd, `NOTIFY_SOCKET`) what the cluster does: `READY=1` once
//! every worker listens, `RELOADING=1` and `READY=1` around a roll, `STOPPING=1` when every
//! worker is asked to go, and `WATCHDOG=1` as often as `WATCHDOG_USEC` asks. All of it is a
//! no-op without a manager.

use std::time::{Duration, Instant};

use ringleader_sys::systemd;

use super::Core;
use crate::ids::WorkerId;

/// What the primary has told the manager, and when it must next show it is alive.
#[derive(Debug, Default)]
pub(crate) struct Manager {
    listens: bool,
    ready: bool,
    watchdog: Option<(Duration, Instant)>,
}

impl Manager {
    pub(crate) fn new() -> Manager {
        Manager {
            listens: systemd::manager_listens(),
            ready: false,
            watchdog: systemd::watchdog_interval().map(|every| (every, Instant::now())),
        }
    }

    /// When the loop must wake for the watchdog.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.watchdog.map(|(_, at)| at)
    }
}

impl Core {
    /// Whether a service manager listens.
    pub(super) fn manager_listens(&self) -> bool {
        self.manager.listens
    }

    /// Whether every listed worker listens somewhere (and said it is ready, when the
    /// settings ask for that).
    fn every_worker_listens(&self) -> bool {
        let listed = self.workers.iter().filter(|(_, w)| w.listed);
        self.listeners.all_listen(listed.clone().map(|(id, _)| *id))
            && listed.into_iter().all(|(id, _)| self.told_ready(*id))
    }

    /// Whether worker `id` said it is ready, or need not ([`Settings::ready_when_told`]).
    ///
    /// [`Settings::ready_when_told`]: crate::Settings::ready_when_told
    pub(super) fn told_ready(&self, id: WorkerId) -> bool {
        self.settings.ready_when_told != Some(true)
            || self.workers.get(&id).is_some_and(|w| w.told_ready)
    }

    /// After each wait: `READY=1` the first time every worker listens (and, in a new primary
    /// started by an upgrade, the old one told so), and the watchdog.
    pub(super) fn tell_manager(&mut self) {
        // A new primary is ready once every worker listens and the workers listen wherever
        // the old generation did.
        if self.upgrade_from.is_some()
            && self.every_worker_listens()
            && self.listeners.took_every_listener()
        {
            if let Some(channel) = self.upgrade_from.take() {
                let _ = ringleader_sys::scm::send(
                    &channel,
                    &[std::io::IoSlice::new(b"R")],
                    &[],
                    ringleader_sys::scm::Blocking::Yes,
                );
                self.listeners.took_over();
            }
        }
        if let Some((every, at)) = self.manager.watchdog {
            if Instant::now() >= at {
                let _ = systemd::notify("WATCHDOG=1");
                self.manager.watchdog = Some((every, Instant::now() + every));
            }
        }
        if self.manager.listens && !self.manager.ready && self.every_worker_listens() {
            self.manager.ready = true;
            let _ = systemd::notify("READY=1");
        }
    }

    /// A roll begins (`RELOADING=1`) or ends (`READY=1`).
    pub(super) fn tell_manager_reloading(&mut self, reloading: bool) {
        if !self.manager.listens {
            return;
        }
        let _ = if reloading {
            systemd::notify_reloading()
        } else {
            systemd::notify("READY=1")
        };
    }

    /// Every worker is asked to go.
    pub(super) fn tell_manager_stopping(&mut self) {
        if self.manager.listens {
            let _ = systemd::notify("STOPPING=1");
        }
    }
}
