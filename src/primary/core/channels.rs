//! The control channels: framed sends with coalescing and back-pressure, reads on both
//! backends, and what a channel's end or a bad frame means for its worker.

use std::time::Instant;

use ringleader_sys::errno::ECANCELED;
use ringleader_sys::scm::Blocking;
use ringleader_sys::socket::How;
use ringleader_sys::uring::Completion;
use ringleader_sys::{AsFd, OwnedFd, scm, socket};

use super::{Core, HIGH_WATER, READS_PER_TURN, WorkerEntry};
use crate::error::{Error, ErrorKind, Result};
use crate::ids::WorkerId;
use crate::ipc::Message;
use crate::ipc::buffers::READ_CHUNK;
use crate::ipc::frame::Kind;
use crate::primary::driver::{Driver, dyn_fd, untoken};
use crate::primary::event::Event;
use crate::primary::listeners::Taker;
use crate::tuning::{BURST_GAP, COALESCE_LIMIT};

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
        if self.workers.get(&id).is_some_and(|w| w.node.is_some()) {
            return self.node_frame(id, kind, payload, fd);
        }
        if let Some(slot) = self.workers.get_mut(&id) {
            if slot.channel.is_some() && slot.outbound.push(kind, payload, fd).is_ok() {
                self.flush(id);
            }
        }
    }

    pub(crate) fn send(
        &mut self,
        id: WorkerId,
        kind: Kind,
        data: &[u8],
        fd: Option<OwnedFd>,
    ) -> Result<()> {
        const OP: &str = "send to a worker";
        let Some(slot) = self.workers.get_mut(&id) else {
            return Err(Error::new(ErrorKind::NoSuchWorker, OP)
                .detail(format!("worker {id}"))
                .with_fd(fd));
        };
        if slot.activated.is_some() {
            return Err(Error::new(ErrorKind::Settings, OP)
                .detail(format!(
                    "worker {id} is socket-activated: it has no channel"
                ))
                .with_fd(fd));
        }
        if slot.channel.is_none() || slot.outbound.close_when_drained {
            return Err(Error::new(ErrorKind::Disconnected, OP)
                .detail(format!("worker {id}"))
                .with_fd(fd));
        }
        if slot.node.is_some() {
            if kind != Kind::User || fd.is_some() {
                return Err(Error::new(ErrorKind::Settings, OP)
                    .detail("a Node worker takes JSON messages without fds")
                    .with_fd(fd));
            }
            return self.node_user(id, data);
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
            .workers
            .get(&id)
            .is_some_and(|s| s.channel.is_some() && s.outbound.pending() > HIGH_WATER)
        {
            self.turn(None)?;
        }
        Ok(())
    }

    /// Writes what the socket takes; asks to hear about writability for the rest.
    pub(super) fn flush(&mut self, id: WorkerId) {
        let Some(slot) = self.workers.get_mut(&id) else {
            return;
        };
        let Some(channel) = slot.channel.clone() else {
            return;
        };
        if slot.node.is_some() {
            match self.node_write(id) {
                Ok(true) => {}
                Ok(false) => {
                    if let Some(slot) = self.workers.get_mut(&id) {
                        if !slot.write_armed {
                            slot.write_armed = true;
                            let _ = self.driver.want_write(&dyn_fd(&channel), id, true);
                        }
                    }
                    return;
                }
                // The worker is gone; its end of file is on its way to the reader, and what it
                // had not answered goes to the others then.
                Err(_) => {
                    if let Some(ch) = self.workers.get_mut(&id).and_then(|w| w.node.as_mut()) {
                        ch.discard_output();
                    }
                }
            }
            let Some(slot) = self.workers.get_mut(&id) else {
                return;
            };
            if slot.write_armed && matches!(self.driver, Driver::Epoll(..)) {
                let _ = self.driver.want_write(&dyn_fd(&channel), id, false);
                slot.write_armed = false;
            }
            let drained = slot.node.as_ref().is_none_or(|ch| !ch.pending());
            if drained && slot.outbound.close_when_drained && !slot.write_shut {
                slot.write_shut = true;
                let _ = socket::shutdown(&*channel, How::Write);
            }
            return;
        }
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

    /// Writes what every channel has collected.
    pub(crate) fn flush_all(&mut self) {
        let ids: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, s)| {
                (s.outbound.pending() > 0 || s.node.as_ref().is_some_and(|n| n.pending()))
                    && !s.write_armed
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.flush(id);
        }
    }

    /// epoll: reads what is there, a few chunks at a time.
    pub(super) fn read_channel(&mut self, id: WorkerId) {
        let mut fds = Vec::new();
        for _ in 0..READS_PER_TURN {
            let Some(slot) = self.workers.get_mut(&id) else {
                return;
            };
            let Some(channel) = slot.channel.clone() else {
                return;
            };
            if slot.node.is_some() {
                let mut buf = vec![0u8; READ_CHUNK];
                match scm::recv(&*channel, &mut buf, &mut fds, Blocking::No) {
                    Ok(0) => return self.end_of_channel(id),
                    Ok(n) => {
                        if !self.node_input(id, &buf[..n], std::mem::take(&mut fds))
                            || n < READ_CHUNK
                        {
                            return;
                        }
                        continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return self.channel_error(id, e),
                }
            }
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
    pub(super) fn on_received(&mut self, c: Completion) {
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
        let Some(slot) = self.workers.get_mut(&id) else {
            return;
        };
        slot.recv_op = None;
        if slot.channel.is_none() {
            return;
        }
        match result {
            Ok(0) => self.end_of_channel(id),
            Ok(n) => {
                let node = slot.node.is_some();
                if node {
                    if !self.node_input(id, &buf[..n], std::mem::take(&mut fds)) {
                        return;
                    }
                    if let Some(buf) = self.defer_node_read(id, tok, buf) {
                        self.rearm_read(id, tok, buf);
                    }
                    return;
                } else {
                    slot.inbound.push_bytes(&buf[..n]);
                    if !self.take_fds(id, &mut fds) || !self.drain_frames(id) {
                        return;
                    }
                }
                self.rearm_read(id, tok, buf);
            }
            Err(e) if e.raw_os_error() == Some(ECANCELED) => {} // we closed it
            Err(e) => self.channel_error(id, e),
        }
    }

    /// io_uring: reads the worker's channel again.
    pub(super) fn rearm_read(&mut self, id: WorkerId, tok: u64, buf: Vec<u8>) {
        let Some(slot) = self.workers.get_mut(&id) else {
            return;
        };
        let Some(channel) = slot.channel.clone() else {
            return;
        };
        match self.driver.watch_read(&dyn_fd(&channel), tok, Some(buf)) {
            Ok(op) => slot.recv_op = op,
            Err(e) => self.channel_error(id, e),
        }
    }

    pub(super) fn take_fds(&mut self, id: WorkerId, fds: &mut Vec<OwnedFd>) -> bool {
        let Some(slot) = self.workers.get_mut(&id) else {
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
    pub(super) fn drain_frames(&mut self, id: WorkerId) -> bool {
        loop {
            let Some(slot) = self.workers.get_mut(&id) else {
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
                    Kind::Ready => {
                        if !slot.told_ready {
                            slot.told_ready = true;
                            self.ready.push_back(Event::Ready { worker: id });
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
                        let leaving = self.workers.get(&id).is_none_or(WorkerEntry::leaving);
                        let scheduling = self.scheduling;
                        let replaces = self.rolling.as_ref().and_then(|r| r.predecessor_of(id));
                        let payload = &frame.payload;
                        let result = self.with_listeners(|l, cx| match frame.kind {
                            Kind::Listen => l.on_listen(
                                cx,
                                id,
                                payload,
                                leaving,
                                scheduling,
                                replaces,
                                Taker::Channel,
                            ),
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

    pub(super) fn channel_error(&mut self, id: WorkerId, e: std::io::Error) {
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
    pub(super) fn protocol_error(&mut self, id: WorkerId, error: Error) {
        let error = error.detail(format!("worker {id}"));
        self.ready.push_back(Event::Error {
            worker: Some(id),
            error,
        });
        self.close_channel(id);
    }

    pub(super) fn end_of_channel(&mut self, id: WorkerId) {
        if let Some(slot) = self.workers.get_mut(&id) {
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
    pub(super) fn close_channel(&mut self, id: WorkerId) {
        let Some(slot) = self.workers.get_mut(&id) else {
            return;
        };
        let Some(channel) = slot.channel.take() else {
            return;
        };
        // Connections it had not taken yet go to the other workers.
        self.node_end(id);
        self.leave_all_listeners_ended(id);
        let Some(slot) = self.workers.get_mut(&id) else {
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
}
