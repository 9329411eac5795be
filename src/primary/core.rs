//! The primary's state: its workers, their channels, and the events waiting for delivery.
//!
//! Events are generated when the loop sees something happen and are *delivered* when the
//! user takes them; the user-visible bookkeeping (state, `is_connected`, `is_dead`, the
//! `workers()` map) changes at delivery, so that what the user sees and the events agree, as
//! in Node.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::OsString;
use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringleader_sys::errno::{ECANCELED, ESRCH};
use ringleader_sys::pidfd::{ExitStatus, PidFd};
use ringleader_sys::scm::{self, Blocking};
use ringleader_sys::signal::{Signal, SignalFd};
use ringleader_sys::socket::{self, How};
use ringleader_sys::spawn::{self, SpawnRequest};
use ringleader_sys::uring::{Completion, OpId};
use ringleader_sys::{AsFd, OwnedFd};

use super::driver::{Driver, Happening, SIGNALS, Tag, dyn_fd, token, token_generation, untoken};
use super::event::Event;
use super::listeners::{Ctx, Listeners, Outbox};
use super::settings::{Scheduling, Settings};
use crate::contract::{
    BOARD_FD, CHANNEL_FD, ENV_BOARD_FD, ENV_BOARD_SLOT, ENV_CHANNEL_FD, ENV_WORKER_ID,
};
use crate::error::{Error, ErrorKind, Result};
use crate::ids::WorkerId;
use crate::ipc::Message;
use crate::ipc::buffers::{Inbound, Outbound, READ_CHUNK};
use crate::ipc::frame::Kind;
use crate::policy::SharedPolicy;
use crate::tuning::{BURST_GAP, COALESCE_LIMIT, default_accept_rounds, default_busy_poll};

/// Queued output beyond this makes the primary's `send` wait, running the loop, until the
/// worker has read enough.
pub(crate) const HIGH_WATER: usize = 4 * 1024 * 1024;
/// The first part of a busy-poll window, spent spinning without yielding the CPU.
const HOT_SPIN: Duration = Duration::from_micros(5);

/// Load-board slots unless the settings say otherwise.
const DEFAULT_BOARD_SLOTS: usize = 256;

/// Reads per readiness report on the epoll backend, so one chatty worker cannot starve the rest.
const READS_PER_TURN: usize = 4;

/// A worker's life as the user sees it (Node: `worker.state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerState {
    /// Spawned, not yet online (Node: `'none'`).
    Started,
    /// Running its code (Node: `'online'`).
    Online,
    /// Listening (Node: `'listening'`).
    Listening,
    /// Its channel is closed (Node: `'disconnected'`).
    Disconnected,
    /// Its process has ended (Node: `'dead'`).
    Dead,
}

pub(crate) struct Slot {
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
    // What the user sees; changed at delivery.
    pub(crate) state: WorkerState,
    pub(crate) connected: bool,
    pub(crate) dead: bool,
    pub(crate) listed: bool,
    pub(crate) exited_after_disconnect: bool,
    pub(crate) stdio: [Option<File>; 3],
}

pub(crate) struct Core {
    pub(crate) settings: Settings,
    pub(crate) scheduling: Scheduling,
    pub(crate) frozen: bool,
    pub(crate) driver: Driver,
    pub(crate) slots: BTreeMap<WorkerId, Slot>,
    next_id: WorkerId,
    ready: VecDeque<Event>,
    happenings: Vec<Happening>,
    signals: Option<Arc<SignalFd>>,
    all_waiting: Option<BTreeSet<WorkerId>>,
    pub(crate) busy_poll: Duration,
    pub(crate) listeners: Listeners,
    /// What listener work produced, delivered as each call returns ([`Core::with_listeners`]).
    outbox: Outbox,
    pub(crate) loads: super::loads::Loads,
    /// The policy `RINGLEADER_SCHED_POLICY` named, if it named one.
    pub(crate) env_policy: Option<SharedPolicy>,
}

impl Slot {
    /// The worker is being disconnected or its channel is gone.
    pub(crate) fn leaving(&self) -> bool {
        self.channel.is_none() || self.outbound.close_when_drained
    }
}

impl Core {
    /// Queues an internal frame and writes it at once, without the back-pressure loop (for
    /// replies sent while handling the loop's own events).
    pub(crate) fn send_internal(
        &mut self,
        id: WorkerId,
        kind: Kind,
        payload: &[u8],
        fd: Option<OwnedFd>,
    ) {
        if let Some(slot) = self.slots.get_mut(&id) {
            if slot.channel.is_some() && slot.outbound.push(kind, payload, fd).is_ok() {
                self.flush(id);
            }
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
            slots: BTreeMap::new(),
            next_id: 1,
            ready: VecDeque::new(),
            happenings: Vec::new(),
            signals: None,
            all_waiting: None,
            busy_poll: default_busy_poll(),
            listeners: Listeners::new(default_accept_rounds()),
            outbox: Outbox::default(),
            loads: super::loads::Loads::new(DEFAULT_BOARD_SLOTS, SharedPolicy::default()),
            env_policy: None,
        }
    }

    pub(crate) fn setup(&mut self, settings: Settings) -> Result<()> {
        if let Some(s) = settings.scheduling {
            if self.frozen && s != self.scheduling {
                return Err(Error::new(ErrorKind::Settings, "set up the primary")
                    .detail("the scheduling policy is frozen after the first fork"));
            }
            self.scheduling = s;
        }
        self.settings.merge(settings);
        self.ready.push_back(Event::Setup(self.settings.clone()));
        Ok(())
    }

    pub(crate) fn fork(&mut self, env: &[(&str, &str)]) -> Result<(WorkerId, u32)> {
        self.setup(Settings::default())?;
        if !self.frozen {
            let policy = self
                .settings
                .policy
                .clone()
                .or_else(|| self.env_policy.clone());
            self.loads.policy = policy.unwrap_or_default();
            let slots = self.settings.board_slots.unwrap_or(DEFAULT_BOARD_SLOTS);
            if slots != self.loads.slots() {
                self.loads = super::loads::Loads::new(slots, self.loads.policy.clone());
            }
        }
        self.frozen = true;
        let id = self.next_id;
        let board = self.loads.assign(id);
        let result = self.spawn_worker(id, env, board);
        if result.is_err() {
            self.loads.release(id);
        }
        result
    }

    fn spawn_worker(
        &mut self,
        id: WorkerId,
        env: &[(&str, &str)],
        board: Option<(usize, u64)>,
    ) -> Result<(WorkerId, u32)> {
        const OP: &str = "fork a worker";
        let s = &self.settings;
        let program = match &s.exec {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(|e| Error::io(OP, e))?,
        };
        let args = s
            .args
            .clone()
            .unwrap_or_else(|| std::env::args_os().skip(1).collect());
        let mut vars: Vec<(OsString, OsString)> = match &s.env {
            Some(vars) => vars.clone(),
            None => std::env::vars_os().collect(),
        };
        let mut ours = vec![
            (ENV_WORKER_ID.to_owned(), id.to_string()),
            (ENV_CHANNEL_FD.to_owned(), CHANNEL_FD.to_string()),
        ];
        if let Some((index, generation)) = board {
            ours.push((ENV_BOARD_FD.to_owned(), BOARD_FD.to_string()));
            ours.push((ENV_BOARD_SLOT.to_owned(), format!("{index}:{generation}")));
        }
        let overrides = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .chain(ours);
        for (k, v) in overrides {
            vars.retain(|(name, _)| name.as_os_str() != k.as_str());
            vars.push((k.into(), v.into()));
        }
        let (ours, theirs) = socket::stream_pair().map_err(|e| Error::io(OP, e))?;
        socket::set_nonblocking(&ours, true).map_err(|e| Error::io(OP, e))?;
        let spawned = spawn::spawn(SpawnRequest {
            program,
            args,
            env: vars,
            cwd: s.cwd.clone(),
            uid: s.uid,
            gid: s.gid,
            stdio: s.stdio_or_default(),
            inherit: match board.and(self.loads.fd()) {
                Some(board_fd) => vec![(theirs.as_fd(), CHANNEL_FD), (board_fd, BOARD_FD)],
                None => vec![(theirs.as_fd(), CHANNEL_FD)],
            },
            death_signal: s.death_signal.unwrap_or(Some(Signal::KILL)),
        })
        .map_err(|e| Error::io(OP, e))?;
        drop(theirs);
        self.next_id += 1;
        let pid = spawned.pidfd.pid();
        let channel = Arc::new(ours);
        let pidfd = Arc::new(spawned.pidfd);
        let recv_op = self
            .driver
            .watch_read(
                &dyn_fd(&channel),
                token(id, Tag::Channel),
                Some(Vec::with_capacity(READ_CHUNK)),
            )
            .map_err(|e| Error::io(OP, e))?;
        self.driver
            .watch_read(&dyn_fd(&pidfd), token(id, Tag::Exit), None)
            .map_err(|e| Error::io(OP, e))?;
        self.slots.insert(
            id,
            Slot {
                pid,
                pidfd,
                channel: Some(channel),
                inbound: Inbound::default(),
                outbound: Outbound::default(),
                recv_op,
                write_armed: false,
                write_shut: false,
                last_write: None,
                exit: None,
                exit_generated: false,
                online_generated: false,
                state: WorkerState::Started,
                connected: true,
                dead: false,
                listed: true,
                exited_after_disconnect: false,
                stdio: [spawned.stdin, spawned.stdout, spawned.stderr],
            },
        );
        self.ready.push_back(Event::Fork { worker: id, pid });
        Ok((id, pid))
    }

    pub(crate) fn slot(&mut self, id: WorkerId, op: &'static str) -> Result<&mut Slot> {
        self.slots
            .get_mut(&id)
            .ok_or_else(|| Error::new(ErrorKind::NoSuchWorker, op).detail(format!("worker {id}")))
    }

    pub(crate) fn send(
        &mut self,
        id: WorkerId,
        kind: Kind,
        data: &[u8],
        fd: Option<OwnedFd>,
    ) -> Result<()> {
        const OP: &str = "send to a worker";
        let Some(slot) = self.slots.get_mut(&id) else {
            return Err(Error::new(ErrorKind::NoSuchWorker, OP)
                .detail(format!("worker {id}"))
                .with_fd(fd));
        };
        if slot.channel.is_none() || slot.outbound.close_when_drained {
            return Err(Error::new(ErrorKind::Disconnected, OP)
                .detail(format!("worker {id}"))
                .with_fd(fd));
        }
        slot.outbound
            .push(kind, data, fd)
            .map_err(|(e, fd)| Error::frame(OP, e).with_fd(fd))?;
        // Inside a burst the message waits for the next loop turn (or for the burst to fill
        // COALESCE_LIMIT), so a burst costs one write, not one per message.
        let in_burst = slot.write_armed || slot.last_write.is_some_and(|t| t.elapsed() < BURST_GAP);
        if !in_burst || slot.outbound.pending() >= COALESCE_LIMIT {
            self.flush(id);
        }
        // Back-pressure: keep the loop running (and reading) until the worker catches up.
        while self
            .slots
            .get(&id)
            .is_some_and(|s| s.channel.is_some() && s.outbound.pending() > HIGH_WATER)
        {
            self.turn(None)?;
        }
        Ok(())
    }

    /// Writes what the socket takes; asks to hear about writability for the rest.
    fn flush(&mut self, id: WorkerId) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let Some(channel) = slot.channel.clone() else {
            return;
        };
        if slot.outbound.pending() > 0 {
            slot.last_write = Some(Instant::now());
            match slot.outbound.write_to(channel.as_fd(), Blocking::No) {
                Ok(true) => {}
                Ok(false) => {
                    if !slot.write_armed {
                        slot.write_armed = true;
                        let _ = self.driver.want_write(&dyn_fd(&channel), id, true);
                    }
                    return;
                }
                // The worker is gone; its end of file is on its way to the reader.
                Err(_) => slot.outbound.discard(),
            }
        }
        if slot.write_armed && matches!(self.driver, Driver::Epoll(..)) {
            let _ = self.driver.want_write(&dyn_fd(&channel), id, false);
            slot.write_armed = false;
        }
        if slot.outbound.close_when_drained && !slot.write_shut {
            slot.write_shut = true;
            let _ = socket::shutdown(&*channel, How::Write);
        }
    }

    pub(crate) fn disconnect(&mut self, id: WorkerId) -> Result<()> {
        let slot = self.slot(id, "disconnect a worker")?;
        slot.exited_after_disconnect = true;
        slot.listed = false;
        if slot.channel.is_some() {
            slot.outbound.close_when_drained = true;
            self.flush(id);
        }
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
        self.outbox = out;
        result
    }

    /// Hands out pending connections ([`Listeners::dispatch`]).
    pub(crate) fn dispatch(&mut self) {
        self.with_listeners(|l, cx| l.dispatch(cx));
    }

    /// Runs the hand-offs queued on the ring now ([`Listeners::settle_handoffs`]).
    pub(crate) fn settle_handoffs(&mut self) {
        self.with_listeners(|l, cx| l.settle_handoffs(cx));
    }

    /// Removes worker `id` from every listener ([`Listeners::leave_all_listeners`]).
    fn leave_all_listeners(&mut self, id: WorkerId) {
        self.with_listeners(|l, cx| l.leave_all_listeners(cx, id));
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

    pub(crate) fn disconnect_all(&mut self) -> Result<()> {
        let ids: Vec<WorkerId> = self.slots.keys().copied().collect();
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
        let fd = Arc::new(SignalFd::new(signals).map_err(|e| Error::io(OP, e))?);
        self.driver
            .watch_read(&dyn_fd(&fd), SIGNALS, None)
            .map_err(|e| Error::io(OP, e))?;
        self.signals = Some(fd);
        Ok(())
    }

    /// Nothing could ever produce another event.
    pub(crate) fn idle(&self) -> bool {
        self.ready.is_empty() && self.slots.is_empty() && self.signals.is_none()
    }

    /// Takes the next event and applies its bookkeeping.
    pub(crate) fn deliver(&mut self) -> Option<Event> {
        let event = self.ready.pop_front()?;
        let done = match &event {
            Event::Online { worker } => {
                if let Some(s) = self.slots.get_mut(worker) {
                    if s.state == WorkerState::Started {
                        s.state = WorkerState::Online;
                    }
                }
                None
            }
            Event::Listening { worker, .. } => {
                if let Some(s) = self.slots.get_mut(worker) {
                    if matches!(s.state, WorkerState::Started | WorkerState::Online) {
                        s.state = WorkerState::Listening;
                    }
                }
                None
            }
            Event::Disconnect { worker, .. } => self.slots.get_mut(worker).map(|s| {
                s.connected = false;
                if !s.dead {
                    s.state = WorkerState::Disconnected;
                }
                (*worker, s.dead)
            }),
            Event::Exit { worker, .. } => self.slots.get_mut(worker).map(|s| {
                s.dead = true;
                s.state = WorkerState::Dead;
                (*worker, !s.connected)
            }),
            _ => None,
        };
        if let Some((id, true)) = done {
            // Both events are out: Node removes the worker before the later one is emitted.
            self.slots.remove(&id);
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

    /// Writes what every channel has collected.
    pub(crate) fn flush_all(&mut self) {
        let ids: Vec<WorkerId> = self
            .slots
            .iter()
            .filter(|(_, s)| s.outbound.pending() > 0 && !s.write_armed)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.flush(id);
        }
    }

    /// Runs the loop once: flushes, waits up to `timeout` (busy-polling first, see
    /// [`crate::tuning`]), and turns what happened into events.
    ///
    /// io_uring: connections handed over during the wait go out in the next one's system
    /// call (see [`ringleader_sys::uring::Ring::wait`]), which also sleeps: a worker woken by
    /// them runs while the primary sleeps instead of preempting it, one context switch less
    /// per round. When nothing came for the caller, that next wait is still this turn's;
    /// otherwise the hand-offs go out before the turn returns.
    pub(crate) fn turn(&mut self, timeout: Option<Duration>) -> Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            self.turn_once(left)?;
            if !self.driver.handoffs_pending() {
                return Ok(());
            }
            if !self.ready.is_empty() || left.is_some_and(|l| l.is_zero()) {
                self.settle_handoffs();
                return Ok(());
            }
        }
    }

    fn turn_once(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.flush_all();
        if !self.ready.is_empty() {
            return self.wait(Some(Duration::ZERO)).map(drop);
        }
        if let Some(at) = self.listeners.next_round() {
            // A listener rests between rounds: sleep until its next one (or anything else),
            // without busy polling, which would take connections one by one again.
            let until = at.saturating_duration_since(Instant::now());
            return self
                .wait(Some(timeout.map_or(until, |t| t.min(until))))
                .map(drop);
        }
        let spin = match timeout {
            Some(t) => t.min(self.busy_poll),
            None => self.busy_poll,
        };
        if !spin.is_zero() {
            let start = Instant::now();
            while start.elapsed() < spin {
                // Any progress ends the turn, not only an event: a flush that made room is
                // what a sender held back by back-pressure waits for.
                if self.wait(Some(Duration::ZERO))? > 0 {
                    return Ok(());
                }
                // A hot spin first, for answers that come within microseconds; then a polite
                // one: when another task waits for this CPU (on a small machine, often the
                // very worker or client we wait for) it runs now, else `sched_yield` returns
                // at once.
                if start.elapsed() < HOT_SPIN {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
        self.wait(timeout.map(|t| t.saturating_sub(spin))).map(drop)
    }

    /// One wait of the driver, and what it saw turned into events. Returns how many things
    /// happened.
    fn wait(&mut self, timeout: Option<Duration>) -> Result<usize> {
        let mut happenings = std::mem::take(&mut self.happenings);
        let result = self.driver.wait(&mut happenings, timeout);
        let count = happenings.len();
        for h in happenings.drain(..) {
            match h {
                Happening::Received(Completion::Accept {
                    token: tok,
                    result,
                    more,
                }) => {
                    self.with_listeners(|l, cx| l.on_accepted(cx, tok, result, more));
                }
                Happening::Received(c) => self.on_received(c),
                Happening::Handed(h) => self.with_listeners(|l, cx| l.on_handed(cx, h)),
                Happening::Ready {
                    token,
                    read,
                    write,
                    more,
                } => self.on_ready(token, read, write, more),
            }
        }
        self.happenings = happenings;
        self.dispatch();
        result
            .map(|()| count)
            .map_err(|e| Error::io("wait for events", e))
    }

    fn on_ready(&mut self, tok: u64, read: bool, write: bool, more: bool) {
        if tok == SIGNALS {
            if let Some(fd) = self.signals.clone() {
                while let Ok(Some(sig)) = fd.read() {
                    self.ready.push_back(Event::Signal(sig));
                }
                let _ = self.driver.rearm_read(&dyn_fd(&fd), SIGNALS);
            }
            return;
        }
        let (id, tag) = untoken(tok);
        match tag {
            Some(Tag::Exit) => self.on_exit(id),
            Some(Tag::Accept) => self.with_listeners(|l, cx| l.accept_ready(cx, id)),
            Some(Tag::Taken) => self.listeners.on_taken(id, token_generation(tok), more),
            Some(Tag::Writable) => {
                if let Some(s) = self.slots.get_mut(&id) {
                    s.write_armed = false;
                }
                self.flush(id);
            }
            Some(Tag::Channel) => {
                if write {
                    self.flush(id);
                }
                if read {
                    self.read_channel(id);
                }
            }
            None => {}
        }
    }

    /// epoll: reads what is there, a few chunks at a time.
    fn read_channel(&mut self, id: WorkerId) {
        let mut fds = Vec::new();
        for _ in 0..READS_PER_TURN {
            let Some(slot) = self.slots.get_mut(&id) else {
                return;
            };
            let Some(channel) = slot.channel.clone() else {
                return;
            };
            match scm::recv(
                &*channel,
                slot.inbound.spare(READ_CHUNK),
                &mut fds,
                Blocking::No,
            ) {
                Ok(0) => return self.end_of_channel(id),
                Ok(n) => {
                    slot.inbound.commit(n);
                    if !self.take_fds(id, &mut fds) || !self.drain_frames(id) {
                        return;
                    }
                    if n < READ_CHUNK {
                        // Most likely drained; level-triggered epoll reports it again if not.
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return self.channel_error(id, e),
            }
        }
    }

    /// io_uring: a receive finished.
    fn on_received(&mut self, c: Completion) {
        let Completion::Recv {
            token: tok,
            buf,
            mut fds,
            result,
        } = c
        else {
            return;
        };
        let (id, _) = untoken(tok);
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        slot.recv_op = None;
        let Some(channel) = slot.channel.clone() else {
            return;
        };
        match result {
            Ok(0) => self.end_of_channel(id),
            Ok(n) => {
                slot.inbound.push_bytes(&buf[..n]);
                if !self.take_fds(id, &mut fds) || !self.drain_frames(id) {
                    return;
                }
                if let Some(slot) = self.slots.get_mut(&id) {
                    if slot.channel.is_some() {
                        match self.driver.watch_read(&dyn_fd(&channel), tok, Some(buf)) {
                            Ok(op) => slot.recv_op = op,
                            Err(e) => self.channel_error(id, e),
                        }
                    }
                }
            }
            Err(e) if e.raw_os_error() == Some(ECANCELED) => {} // we closed it
            Err(e) => self.channel_error(id, e),
        }
    }

    fn take_fds(&mut self, id: WorkerId, fds: &mut Vec<OwnedFd>) -> bool {
        let Some(slot) = self.slots.get_mut(&id) else {
            return false;
        };
        if fds.is_empty() {
            return true;
        }
        match slot.inbound.push_fds(fds.drain(..)) {
            Ok(()) => true,
            Err(e) => {
                self.protocol_error(id, Error::frame("read from a worker", e));
                false
            }
        }
    }

    /// Turns buffered bytes into events. Returns false if the channel was closed.
    fn drain_frames(&mut self, id: WorkerId) -> bool {
        loop {
            let Some(slot) = self.slots.get_mut(&id) else {
                return false;
            };
            match slot.inbound.next_frame() {
                Ok(None) => return true,
                Ok(Some(frame)) => match frame.kind {
                    Kind::User => self.ready.push_back(Event::Message {
                        worker: id,
                        message: Message {
                            data: frame.payload,
                            fd: frame.fd,
                        },
                    }),
                    Kind::Online => {
                        if !slot.online_generated {
                            slot.online_generated = true;
                            self.ready.push_back(Event::Online { worker: id });
                        }
                    }
                    Kind::Disconnecting => {
                        // The worker leaves by choice; our half-close is the acknowledgement.
                        slot.exited_after_disconnect = true;
                        slot.outbound.close_when_drained = true;
                        self.flush(id);
                        // Its listeners stop too; what was queued for it goes to the others.
                        self.leave_all_listeners(id);
                    }
                    Kind::Listen | Kind::Listening | Kind::Close => {
                        let leaving = self.slots.get(&id).is_none_or(Slot::leaving);
                        let scheduling = self.scheduling;
                        let payload = &frame.payload;
                        let result = self.with_listeners(|l, cx| match frame.kind {
                            Kind::Listen => l.on_listen(cx, id, payload, leaving, scheduling),
                            Kind::Listening => l.on_listening(cx, id, payload),
                            _ => l.on_close(cx, id, payload),
                        });
                        if let Err(e) = result {
                            self.protocol_error(id, Error::frame("read from a worker", e));
                            return false;
                        }
                    }
                    Kind::Reject => {
                        let (payload, fd) = (&frame.payload, frame.fd);
                        if let Err(e) = self.listeners.on_reject(id, payload, fd) {
                            self.protocol_error(id, Error::frame("read from a worker", e));
                            return false;
                        }
                    }
                    Kind::ListenReply => {
                        let e = crate::ipc::frame::FrameError::UnknownKind(Kind::ListenReply as u8);
                        self.protocol_error(id, Error::frame("read from a worker", e));
                        return false;
                    }
                },
                Err(e) => {
                    self.protocol_error(id, Error::frame("read from a worker", e));
                    return false;
                }
            }
        }
    }

    fn channel_error(&mut self, id: WorkerId, e: std::io::Error) {
        // A worker that dies with our messages unread resets the connection: that is an end of
        // file, not a fault.
        if matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ) {
            return self.end_of_channel(id);
        }
        self.protocol_error(id, Error::io("read from a worker", e));
    }

    /// The worker broke the protocol: report it, then close its channel. The primary goes on.
    fn protocol_error(&mut self, id: WorkerId, error: Error) {
        let error = error.detail(format!("worker {id}"));
        self.ready.push_back(Event::Error {
            worker: Some(id),
            error,
        });
        self.close_channel(id);
    }

    fn end_of_channel(&mut self, id: WorkerId) {
        if let Some(slot) = self.slots.get_mut(&id) {
            if let Err(e) = slot.inbound.finish() {
                let error = Error::frame("read from a worker", e).detail(format!("worker {id}"));
                self.ready.push_back(Event::Error {
                    worker: Some(id),
                    error,
                });
            }
        }
        self.close_channel(id);
    }

    /// Closes the channel and generates `Disconnect`, then `Exit` if the process already ended.
    fn close_channel(&mut self, id: WorkerId) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let Some(channel) = slot.channel.take() else {
            return;
        };
        // Connections it had not taken yet go to the other workers.
        self.leave_all_listeners(id);
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let _ = socket::shutdown(&*channel, How::Both);
        self.driver.forget(&dyn_fd(&channel), slot.recv_op.take());
        slot.outbound.discard();
        let eda = slot.exited_after_disconnect;
        self.ready.push_back(Event::Disconnect {
            worker: id,
            exited_after_disconnect: eda,
        });
        if slot.exit.is_some() {
            self.generate_exit(id);
        }
    }

    fn on_exit(&mut self, id: WorkerId) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        match slot.pidfd.try_wait() {
            Ok(Some(status)) => {
                slot.exit = Some(status);
                // The process is gone, so nothing writes its board slot any more: the next
                // worker may have it (with a new generation).
                self.loads.release(id);
                let Some(slot) = self.slots.get_mut(&id) else {
                    return;
                };
                let fd = dyn_fd(&slot.pidfd);
                self.driver.forget(&fd, None);
                // A dead process's channel reports end of file right after; Exit follows
                // Disconnect then.
                if slot.channel.is_none() {
                    self.generate_exit(id);
                }
            }
            Ok(None) => {
                let fd = dyn_fd(&slot.pidfd);
                let _ = self.driver.rearm_read(&fd, token(id, Tag::Exit));
            }
            Err(e) => {
                let error = Error::io("reap a worker", e).detail(format!("worker {id}"));
                self.ready.push_back(Event::Error {
                    worker: Some(id),
                    error,
                });
            }
        }
    }

    fn generate_exit(&mut self, id: WorkerId) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let Some(status) = slot.exit else { return };
        if slot.exit_generated {
            return;
        }
        slot.exit_generated = true;
        self.ready.push_back(Event::Exit {
            worker: id,
            code: status.code,
            signal: status.signal,
            exited_after_disconnect: slot.exited_after_disconnect,
        });
    }

    pub(crate) fn pidfd(&self, id: WorkerId) -> Option<Arc<PidFd>> {
        self.slots.get(&id).map(|s| s.pidfd.clone())
    }
}

impl Drop for Core {
    /// Workers do not outlive their primary: whatever is still running is killed and reaped.
    fn drop(&mut self) {
        for slot in self.slots.values() {
            if slot.exit.is_none() {
                let _ = slot.pidfd.signal(Signal::KILL);
                let _ = slot.pidfd.wait();
            }
        }
    }
}
