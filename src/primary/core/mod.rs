//! The primary's state: its workers, their channels, and the events waiting for delivery.
//!
//! Events are generated when the loop sees something happen and are *delivered* when the
//! user takes them; the user-visible bookkeeping (state, `is_connected`, `is_dead`, the
//! `workers()` map) changes at delivery, so that what the user sees and the events agree, as
//! in Node.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringleader_sys::OwnedFd;
use ringleader_sys::errno::ESRCH;
use ringleader_sys::pidfd::{ExitStatus, PidFd};
use ringleader_sys::signal::{Signal, SignalFd};
use ringleader_sys::uring::OpId;

mod activated;
mod channels;
mod fork;
mod manager;
mod memory;
mod node;
mod respawn;
mod roll;
mod snapshot;
mod upgrade;

pub(crate) use self::upgrade::from_old_primary;
pub(crate) use crate::primary::state::WorkerState;
mod turn;

use super::driver::{Driver, Happening, SIGNALS, dyn_fd};
use super::event::Event;
use super::listeners::{Ctx, Listeners, Outbox};
use super::metrics::Phase;
use super::settings::{Scheduling, Settings};
use crate::error::{Error, ErrorKind, Result};
use crate::ids::WorkerId;
use crate::ipc::buffers::{Inbound, Outbound};
use crate::policy::SharedPolicy;
use crate::tuning::{default_accept_rounds, default_busy_poll};

/// Queued output beyond this makes the primary's `send` wait, running the loop, until the
/// worker has read enough.
pub(crate) const HIGH_WATER: usize = 4 * 1024 * 1024;

/// Load-board slots unless the settings say otherwise.
const DEFAULT_BOARD_SLOTS: usize = 256;

/// Reads per readiness report on the epoll backend, so one chatty worker cannot starve the rest.
const READS_PER_TURN: usize = 4;

/// What the primary keeps of one worker: its process, its control channel and what the user
/// sees of it.
pub(crate) struct WorkerEntry {
    pub(crate) pid: u32,
    pidfd: Arc<PidFd>,
    channel: Option<Arc<OwnedFd>>,
    inbound: Inbound,
    outbound: Outbound,
    recv_op: Option<OpId>,
    write_armed: bool,
    write_shut: bool,
    /// When this channel was last written to: writes closer than `BURST_GAP` coalesce.
    last_write: Option<Instant>,
    exit: Option<ExitStatus>,
    exit_generated: bool,
    online_generated: bool,
    /// The worker said it is ready ([`Kind::Ready`](crate::ipc::frame::Kind::Ready)).
    pub(crate) told_ready: bool,
    /// A Node.js worker: its channel speaks Node's protocol ([`node`]).
    pub(crate) node: Option<node::NodeChannel>,
    /// A socket-activated server: no channel ([`activated`]).
    pub(crate) activated: Option<activated::Activated>,
    // What the user sees; changed at delivery.
    pub(crate) state: WorkerState,
    pub(crate) connected: bool,
    pub(crate) dead: bool,
    pub(crate) listed: bool,
    pub(crate) exited_after_disconnect: bool,
    pub(crate) stdio: [Option<File>; 3],
    /// When it was forked, the first worker of its line of replacements, and the `fork`
    /// environment a replacement gets ([`respawn`]).
    started: Instant,
    lineage: WorkerId,
    env: Vec<(String, String)>,
}

pub(crate) struct Core {
    pub(crate) settings: Settings,
    pub(crate) scheduling: Scheduling,
    pub(crate) frozen: bool,
    pub(crate) driver: Driver,
    pub(crate) workers: BTreeMap<WorkerId, WorkerEntry>,
    next_id: WorkerId,
    ready: VecDeque<Event>,
    happenings: Vec<Happening>,
    signals: Option<Arc<SignalFd>>,
    all_waiting: Option<BTreeSet<WorkerId>>,
    pub(crate) busy_poll: Duration,
    pub(crate) listeners: Listeners,
    /// Replacements of workers that exited unasked ([`respawn`]).
    respawns: respawn::Respawns,
    /// The rolling restart under way ([`roll`]).
    rolling: Option<roll::Rolling>,
    /// What the service manager has been told ([`manager`]).
    manager: manager::Manager,
    /// The upgrade under way, on the old primary's side ([`upgrade`]).
    upgrading: Option<upgrade::Upgrading>,
    /// In a new primary started by an upgrade: the channel on which it tells the old one it
    /// is ready.
    pub(crate) upgrade_from: Option<OwnedFd>,
    /// Once a loop outside watches the primary: rung when a call from the application
    /// queued work, so that the loop polls and the work is submitted.
    pub(crate) outside_bell: Option<std::rc::Rc<ringleader_sys::poll::Doorbell>>,
    /// Counts for [`Core::metrics`](crate::primary::metrics).
    pub(crate) tally: crate::primary::metrics::Tally,
    /// The admin endpoint and the agent, once served ([`crate::Primary::serve_admin`],
    /// [`crate::Primary::serve_agent`]).
    pub(crate) admin: Option<crate::primary::metrics::Admin>,
    /// What makes the host ready for a load balancer, and the lame-duck.
    pub(crate) readiness: crate::primary::health::Readiness,
    /// Node workers' server data by key (TLS session-ticket keys), stored on first use and
    /// echoed in every reply for the key, as Node's primary does.
    pub(crate) node_data: BTreeMap<String, serde_json::Value>,
    /// The socket-activated workers' listeners, by name, in the order forks get them.
    activated: Vec<(String, crate::ipc::listen::Key)>,
    /// While a roll forks a successor: the worker it replaces, whose sockets it takes over.
    replacing: Option<WorkerId>,
    /// io_uring: busy Node workers' channels to read again at the next round, with the
    /// read's token and buffer ([`Core::defer_node_read`]).
    deferred_reads: Vec<(Instant, WorkerId, u64, Vec<u8>)>,
    /// What listener work produced, delivered as each call returns ([`Core::with_listeners`]).
    outbox: Outbox,
    pub(crate) loads: super::loads::Loads,
    /// The policy `RINGLEADER_SCHED_POLICY` named, if it named one.
    pub(crate) env_policy: Option<SharedPolicy>,
    /// When the workers' resident sets are read next ([`memory`]).
    memory_at: Option<Instant>,
    /// Workers reported over their memory limit, waiting for or under their replacement.
    over_memory: std::collections::BTreeSet<WorkerId>,
}

impl WorkerEntry {
    /// How long it has run.
    pub(crate) fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// The first worker of its line of replacements.
    pub(crate) fn lineage(&self) -> WorkerId {
        self.lineage
    }

    /// What it is doing, for `ringleader status`: listening until it is asked to go, then
    /// draining while its channel is open (or, a socket-activated one, after `SIGTERM`),
    /// then stopping.
    pub(crate) fn phase(&self) -> Phase {
        let gone = self.exit.is_some() || self.dead;
        if gone || (self.leaving() && !self.connected) {
            Phase::Stopping
        } else if self.leaving() {
            Phase::Draining
        } else if self.state == WorkerState::Listening {
            Phase::Listening
        } else {
            Phase::Starting
        }
    }

    /// The worker is being disconnected or its channel is gone (a socket-activated one: it
    /// was asked to stop).
    pub(crate) fn leaving(&self) -> bool {
        match &self.activated {
            Some(a) => a.stopping || self.exit.is_some(),
            None => self.channel.is_none() || self.outbound.close_when_drained,
        }
    }
}

impl Core {
    /// Tells a loop outside, if one watches, to poll: a call from the application may have
    /// queued work that only a poll submits.
    pub(crate) fn nudge_outside(&self) {
        if let Some(bell) = &self.outside_bell {
            bell.ring();
        }
    }

    pub(crate) fn push_event(&mut self, event: Event) {
        self.ready.push_back(event);
    }

    pub(crate) fn new(driver: Driver, scheduling: Scheduling) -> Core {
        Core {
            settings: Settings::default(),
            scheduling,
            frozen: false,
            driver,
            workers: BTreeMap::new(),
            next_id: 1,
            ready: VecDeque::new(),
            happenings: Vec::new(),
            signals: None,
            all_waiting: None,
            busy_poll: default_busy_poll(),
            listeners: Listeners::new(
                default_accept_rounds(),
                Settings::default().take_back_deadline(),
            ),
            respawns: respawn::Respawns::default(),
            rolling: None,
            manager: manager::Manager::new(),
            upgrading: None,
            upgrade_from: None,
            outside_bell: None,
            tally: Default::default(),
            admin: None,
            readiness: Default::default(),
            node_data: BTreeMap::new(),
            activated: Vec::new(),
            replacing: None,
            deferred_reads: Vec::new(),
            outbox: Outbox::default(),
            loads: super::loads::Loads::new(DEFAULT_BOARD_SLOTS, SharedPolicy::default()),
            env_policy: None,
            memory_at: None,
            over_memory: std::collections::BTreeSet::new(),
        }
    }

    pub(crate) fn setup(&mut self, settings: Settings) -> Result<()> {
        if let Some(s) = settings.scheduling {
            if (self.frozen || !self.activated.is_empty()) && s != self.scheduling {
                return Err(
                    Error::new(ErrorKind::Settings, "set up the primary").detail(
                        "the scheduling policy is frozen after the first fork \
                     (or once the socket-activated workers' sockets are open)",
                    ),
                );
            }
            self.scheduling = s;
        }
        let proxy = settings
            .proxy_protocol
            .clone()
            .unwrap_or_else(|| self.settings.proxy_protocol.clone().flatten());
        if proxy.is_some() && self.scheduling != Scheduling::RoundRobin {
            return Err(
                Error::new(ErrorKind::Settings, "set up the primary").detail(format!(
                    "the PROXY protocol is read by the primary, which sees connections only \
                     under round-robin scheduling, not under {:?}",
                    self.scheduling
                )),
            );
        }
        self.settings.merge(settings);
        self.listeners.take_back_after = self.settings.take_back_deadline();
        self.listeners.kill_stalled_after = self.settings.kill_stalled.flatten();
        self.listeners.start_within = self.settings.start_deadline();
        self.listeners.defer_accept_secs = self.settings.defer_accept_secs();
        self.listeners.proxy = self.settings.proxy_protocol.clone().flatten();
        self.ready
            .push_back(Event::Setup(Box::new(self.settings.clone())));
        Ok(())
    }

    pub(crate) fn slot(&mut self, id: WorkerId, op: &'static str) -> Result<&mut WorkerEntry> {
        self.workers
            .get_mut(&id)
            .ok_or_else(|| Error::new(ErrorKind::NoSuchWorker, op).detail(format!("worker {id}")))
    }

    pub(crate) fn disconnect(&mut self, id: WorkerId) -> Result<()> {
        let slot = self.slot(id, "disconnect a worker")?;
        slot.exited_after_disconnect = true;
        slot.listed = false;
        if slot.channel.is_some() {
            slot.outbound.close_when_drained = true;
            self.node_disconnect(id);
            self.flush(id);
        }
        self.activated_disconnect(id);
        // Node: removeHandlesForWorker. Connections queued for it go to the others, and its
        // listeners end.
        self.leave_all_listeners(id);
        self.dispatch();
        // Outside a turn: what was handed over goes out now, not at the next wait.
        self.settle_handoffs();
        Ok(())
    }

    /// Runs `f` on the listeners with what they need from the rest of the primary, then
    /// delivers what it produced, in order: frames to workers, then events to the user.
    pub(crate) fn with_listeners<T>(
        &mut self,
        f: impl FnOnce(&mut Listeners, &mut Ctx<'_>) -> T,
    ) -> T {
        let mut out = std::mem::take(&mut self.outbox);
        let mut cx = Ctx {
            driver: &mut self.driver,
            loads: &mut self.loads,
            out: &mut out,
        };
        let result = f(&mut self.listeners, &mut cx);
        for (id, kind, payload, fd) in out.frames.drain(..) {
            self.send_internal(id, kind, &payload, fd);
        }
        for event in out.events.drain(..) {
            self.push_event(event);
        }
        for (id, stalled) in out.stalled.drain(..) {
            self.kill_stalled(id, stalled);
        }
        self.outbox = out;
        result
    }

    /// Hands out pending connections ([`Listeners::dispatch`]), and relays to Node workers
    /// what was kept for them.
    pub(crate) fn dispatch(&mut self) {
        self.with_listeners(|l, cx| l.dispatch(cx));
        self.node_pump_all();
    }

    /// Runs the hand-offs queued on the ring now ([`Listeners::settle_handoffs`]).
    pub(crate) fn settle_handoffs(&mut self) {
        self.with_listeners(|l, cx| l.settle_handoffs(cx));
    }

    /// Removes worker `id` from every listener ([`Listeners::leave_all_listeners`]).
    fn leave_all_listeners(&mut self, id: WorkerId) {
        self.with_listeners(|l, cx| l.leave_all_listeners(cx, id, false));
    }

    /// Removes worker `id`, whose channel ended, from every listener. A worker that did not
    /// ask to go is replaced when respawning is on: a listener it was the last worker of
    /// waits for the replacement, with what it accepted, rather than closing it unserved.
    fn leave_all_listeners_ended(&mut self, id: WorkerId) {
        let hold = self.settings.respawn.flatten().is_some()
            && self
                .workers
                .get(&id)
                .is_some_and(|w| !w.exited_after_disconnect);
        self.with_listeners(|l, cx| l.leave_all_listeners(cx, id, hold));
    }

    /// Ends listeners that waited for a replacement ([`Core::leave_all_listeners_ended`])
    /// once none is coming: no respawn waits and every live worker listens somewhere.
    pub(super) fn drop_held_listeners(&mut self) {
        if !self.listeners.holds() || self.respawns.waiting() {
            return;
        }
        let live: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.listed && w.exit.is_none())
            .map(|(id, _)| *id)
            .collect();
        if live.is_empty() || self.listeners.all_listen(live) {
            self.with_listeners(|l, cx| l.drop_held(cx));
        }
    }

    /// Kills a worker that took no connection for `stalled` while some waited
    /// ([`crate::Settings::kill_stalled_after`]). Not a voluntary exit: respawning replaces
    /// it.
    fn kill_stalled(&mut self, id: WorkerId, stalled: Duration) {
        let Some(slot) = self.workers.get(&id) else {
            return;
        };
        if slot.exit.is_none() && slot.pidfd.signal(Signal::KILL).is_ok() {
            self.push_event(Event::StalledKilled {
                worker: id,
                stalled,
            });
        }
    }

    pub(crate) fn kill(&mut self, id: WorkerId, signal: Signal) -> Result<()> {
        let slot = self.slot(id, "kill a worker")?;
        slot.exited_after_disconnect = true;
        if slot.exit.is_some() {
            return Ok(());
        }
        match slot.pidfd.signal(signal) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(ESRCH) => Ok(()),
            Err(e) => Err(Error::io("kill a worker", e)),
        }
    }

    /// Sends `signal` to every worker process still running, listed or not (a worker that
    /// disconnected leaves `workers()` but may still be finishing its connections).
    pub(crate) fn kill_every_process(&mut self, signal: Signal) {
        let running: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.exit.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in running {
            let _ = self.kill(id, signal);
        }
    }

    pub(crate) fn disconnect_all(&mut self) -> Result<()> {
        self.tell_manager_stopping();
        let ids: Vec<WorkerId> = self.workers.keys().copied().collect();
        for id in &ids {
            self.disconnect(*id)?;
        }
        let waiting: BTreeSet<WorkerId> = ids.into_iter().collect();
        if waiting.is_empty() {
            self.ready.push_back(Event::AllDisconnected);
            self.all_waiting = None;
        } else {
            self.all_waiting = Some(waiting);
        }
        Ok(())
    }

    pub(crate) fn watch_signals(&mut self, signals: &[Signal]) -> Result<()> {
        const OP: &str = "watch signals";
        if self.signals.is_some() {
            return Err(Error::new(ErrorKind::Settings, OP).detail("signals are already watched"));
        }
        // A thread that does not block them would die of them (HUP, TERM) instead.
        let unblocked =
            ringleader_sys::signal::threads_not_blocking(signals).map_err(|e| Error::io(OP, e))?;
        if !unblocked.is_empty() {
            return Err(Error::new(ErrorKind::Settings, OP).detail(format!(
                "{} other thread(s) started before the signals were blocked, and a signal would \
                 kill the process there: call role() and watch the signals (supervise) before \
                 starting threads; with tokio, build the runtime after role(), not with \
                 #[tokio::main]",
                unblocked.len()
            )));
        }
        let fd = Arc::new(SignalFd::new(signals).map_err(|e| Error::io(OP, e))?);
        self.driver
            .watch_read(&dyn_fd(&fd), SIGNALS, None)
            .map_err(|e| Error::io(OP, e))?;
        self.signals = Some(fd);
        Ok(())
    }

    /// Nothing could ever produce another event.
    pub(crate) fn idle(&self) -> bool {
        self.ready.is_empty()
            && self.workers.is_empty()
            && self.signals.is_none()
            && !self.respawns.waiting()
            && self.rolling.is_none()
            && self.upgrading.is_none()
    }

    /// Takes the next event and applies its bookkeeping.
    pub(crate) fn deliver(&mut self) -> Option<Event> {
        let event = self.ready.pop_front()?;
        self.tally.count(&event);
        let done = match &event {
            Event::Online { worker } => {
                if let Some(s) = self.workers.get_mut(worker) {
                    if s.state == WorkerState::Started {
                        s.state = WorkerState::Online;
                    }
                }
                None
            }
            Event::Listening { worker, .. } => {
                if let Some(s) = self.workers.get_mut(worker) {
                    if matches!(s.state, WorkerState::Started | WorkerState::Online) {
                        s.state = WorkerState::Listening;
                    }
                }
                None
            }
            Event::Disconnect { worker, .. } => self.workers.get_mut(worker).map(|s| {
                s.connected = false;
                if !s.dead {
                    s.state = WorkerState::Disconnected;
                }
                (*worker, s.dead)
            }),
            Event::Exit { worker, .. } => self.workers.get_mut(worker).map(|s| {
                s.dead = true;
                s.state = WorkerState::Dead;
                (*worker, !s.connected)
            }),
            _ => None,
        };
        if let Some((id, true)) = done {
            // Both events are out: Node removes the worker before the later one is emitted.
            self.workers.remove(&id);
            if let Some(waiting) = &mut self.all_waiting {
                waiting.remove(&id);
                if waiting.is_empty() {
                    self.all_waiting = None;
                    self.ready.push_front(Event::AllDisconnected);
                }
            }
        }
        Some(event)
    }

    pub(crate) fn pidfd(&self, id: WorkerId) -> Option<Arc<PidFd>> {
        self.workers.get(&id).map(|s| s.pidfd.clone())
    }
}

impl Drop for Core {
    /// Workers do not outlive their primary: whatever is still running is killed and reaped.
    fn drop(&mut self) {
        for slot in self.workers.values() {
            if slot.exit.is_none() {
                let _ = slot.pidfd.signal(Signal::KILL);
                let _ = slot.pidfd.wait();
            }
        }
    }
}
