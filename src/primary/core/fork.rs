//! Forking workers (spawn with the inherited fds and the environment contract) and their
//! exits.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Instant;

use ringleader_sys::signal::Signal;
use ringleader_sys::spawn::SpawnRequest;
use ringleader_sys::{AsFd, socket, spawn};

use super::{Core, DEFAULT_BOARD_SLOTS, WorkerEntry, WorkerState};
use crate::contract::{
    BOARD_FD, CHANNEL_FD, ENV_BOARD_FD, ENV_BOARD_SLOT, ENV_CHANNEL_FD, ENV_WORKER_ID,
};
use crate::error::{Error, Result};
use crate::ids::WorkerId;
use crate::ipc::buffers::{Inbound, Outbound, READ_CHUNK};
use crate::primary::driver::{Tag, dyn_fd, token};
use crate::primary::event::Event;
use crate::primary::settings::{Settings, WorkerProtocol};

impl Core {
    pub(crate) fn fork(&mut self, env: &[(&str, &str)]) -> Result<(WorkerId, u32)> {
        self.fork_in(env, None)
    }

    /// Forks a worker of `lineage` (a replacement), or of a lineage of its own.
    pub(super) fn fork_in(
        &mut self,
        env: &[(&str, &str)],
        lineage: Option<WorkerId>,
    ) -> Result<(WorkerId, u32)> {
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
                self.loads = crate::primary::loads::Loads::new(slots, self.loads.policy.clone());
            }
        }
        self.frozen = true;
        let id = self.next_id;
        // Node workers and socket-activated servers never attach to the board: the kernel's
        // counts stand for theirs.
        let attaches = matches!(
            self.settings.protocol,
            None | Some(WorkerProtocol::Ringleader)
        );
        let board = if attaches {
            self.loads.assign(id)
        } else {
            None
        };
        let result = self.spawn_worker(id, env, board, lineage.unwrap_or(id));
        match result {
            Ok(_) => self.loads.get(id).place = lineage.unwrap_or(id),
            Err(_) => self.loads.release(id),
        }
        result
    }

    pub(super) fn spawn_worker(
        &mut self,
        id: WorkerId,
        env: &[(&str, &str)],
        board: Option<(usize, u64)>,
        lineage: WorkerId,
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
        let node = s.protocol == Some(WorkerProtocol::Node);
        let activated = s.protocol == Some(WorkerProtocol::SocketActivated);
        let (sockets, locals) = if activated {
            // No channel, no board: systemd's variables only.
            ours.clear();
            let given = self.activated_sockets(id)?;
            ours.push(("LISTEN_FDS".to_owned(), given.sockets.len().to_string()));
            ours.push(("LISTEN_FDNAMES".to_owned(), given.names));
            (given.sockets, given.locals)
        } else {
            (Vec::new(), Vec::new())
        };
        let s = &self.settings;
        if node {
            // Node's own bootstrap reads these before any of the application's code runs.
            ours.push(("NODE_UNIQUE_ID".to_owned(), id.to_string()));
            ours.push(("NODE_CHANNEL_FD".to_owned(), CHANNEL_FD.to_string()));
            ours.push((
                "NODE_CHANNEL_SERIALIZATION_MODE".to_owned(),
                "json".to_owned(),
            ));
        }
        if let Some((index, generation)) = board.filter(|_| !activated) {
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
        // The control channel; a socket-activated server has none.
        let pair = if activated {
            None
        } else {
            let (ours, theirs) = socket::stream_pair().map_err(|e| Error::io(OP, e))?;
            socket::set_nonblocking(&ours, true).map_err(|e| Error::io(OP, e))?;
            Some((ours, theirs))
        };
        let inherit = match (&pair, board.and(self.loads.fd())) {
            (None, _) => (3..).zip(&sockets).map(|(n, fd)| (fd.as_fd(), n)).collect(),
            (Some((_, theirs)), Some(board_fd)) => {
                vec![(theirs.as_fd(), CHANNEL_FD), (board_fd, BOARD_FD)]
            }
            (Some((_, theirs)), None) => vec![(theirs.as_fd(), CHANNEL_FD)],
        };
        let shown = program.display().to_string();
        let spawned = spawn::spawn(SpawnRequest {
            program,
            args,
            env: vars,
            cwd: s.cwd.clone(),
            uid: s.uid,
            gid: s.gid,
            stdio: s.stdio_or_default(),
            inherit,
            death_signal: s.death_signal.unwrap_or(Some(Signal::KILL)),
            pid_var: activated.then_some("LISTEN_PID"),
            // Its children go with it ([`Core::on_exit`]).
            own_group: true,
            cpu: self.cpu_for(lineage),
        });
        let spawned = match spawned {
            Ok(spawned) => spawned,
            Err(e) => {
                if activated {
                    self.leave_all_listeners(id);
                }
                return Err(Error::io(OP, e).detail(shown));
            }
        };
        drop(sockets);
        self.next_id += 1;
        let pid = spawned.pidfd.pid();
        let pidfd = Arc::new(spawned.pidfd);
        let (channel, recv_op) = match pair {
            Some((ours, theirs)) => {
                drop(theirs);
                let channel = Arc::new(ours);
                let recv_op = self
                    .driver
                    .watch_read(
                        &dyn_fd(&channel),
                        token(id, Tag::Channel),
                        Some(Vec::with_capacity(READ_CHUNK)),
                    )
                    .map_err(|e| Error::io(OP, e))?;
                (Some(channel), recv_op)
            }
            None => (None, None),
        };
        self.driver
            .watch_read(&dyn_fd(&pidfd), token(id, Tag::Exit), None)
            .map_err(|e| Error::io(OP, e))?;
        self.workers.insert(
            id,
            WorkerEntry {
                pid,
                pidfd,
                channel,
                inbound: Inbound::default(),
                outbound: Outbound::default(),
                recv_op,
                write_armed: false,
                write_shut: false,
                last_write: None,
                exit: None,
                exit_generated: false,
                online_generated: activated,
                told_ready: false,
                node: node.then(Default::default),
                activated: activated.then(Default::default),
                state: WorkerState::Started,
                connected: true,
                dead: false,
                listed: true,
                exited_after_disconnect: false,
                stdio: [spawned.stdin, spawned.stdout, spawned.stderr],
                started: Instant::now(),
                lineage,
                env: env
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            },
        );
        self.ready.push_back(Event::Fork { worker: id, pid });
        if activated {
            // It serves once it runs: its sockets listen already.
            self.ready.push_back(Event::Online { worker: id });
            for local in locals {
                self.ready.push_back(Event::Listening {
                    worker: id,
                    address: local,
                });
            }
        }
        Ok((id, pid))
    }

    /// The CPU a worker of `lineage` runs on with [`Settings::cpu_affinity`]: the
    /// lineage's place among the CPUs the primary may use, so a replacement takes its
    /// predecessor's (nginx's `worker_cpu_affinity auto`).
    ///
    /// [`Settings::cpu_affinity`]: crate::Settings::cpu_affinity
    fn cpu_for(&self, lineage: WorkerId) -> Option<usize> {
        if self.settings.cpu_affinity != Some(true) {
            return None;
        }
        let cpus = spawn::allowed_cpus().ok().filter(|c| !c.is_empty())?;
        Some(cpus[(lineage.saturating_sub(1) as usize) % cpus.len()])
    }

    pub(super) fn on_exit(&mut self, id: WorkerId) {
        let Some(slot) = self.workers.get_mut(&id) else {
            return;
        };
        // Exited and not reaped yet, so its pid still names its group: whatever it started
        // there goes with it.
        if slot.pidfd.has_exited().unwrap_or(false) {
            let _ = spawn::kill_group(slot.pid, Signal::KILL);
        }
        match slot.pidfd.try_wait() {
            Ok(Some(status)) => {
                slot.exit = Some(status);
                // The process is gone, so nothing writes its board slot any more: the next
                // worker may have it (with a new generation).
                self.loads.release(id);
                let Some(slot) = self.workers.get_mut(&id) else {
                    return;
                };
                let fd = dyn_fd(&slot.pidfd);
                self.driver.forget(&fd, None);
                // A dead process's channel reports end of file right after; Exit follows
                // Disconnect then.
                if slot.channel.is_none() {
                    self.activated_exit(id);
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

    pub(super) fn generate_exit(&mut self, id: WorkerId) {
        let Some(slot) = self.workers.get_mut(&id) else {
            return;
        };
        let Some(status) = slot.exit else { return };
        if slot.exit_generated {
            return;
        }
        slot.exit_generated = true;
        let asked = slot.exited_after_disconnect;
        self.ready.push_back(Event::Exit {
            worker: id,
            code: status.code,
            signal: status.signal,
            exited_after_disconnect: asked,
        });
        let (lineage, started, env) = (slot.lineage, slot.started, std::mem::take(&mut slot.env));
        let listened = self.listeners.listened(id);
        if !asked {
            let ended = self.ended(id, lineage, started, status, listened);
            self.on_unasked_exit(id, lineage, ended, env);
        }
    }
}
