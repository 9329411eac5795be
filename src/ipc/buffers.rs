//! The two halves of a channel's buffering: [`Inbound`] turns received bytes and fds into
//! frames, [`Outbound`] queues frames and writes them with their fds attached.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use ringleader_sys::scm::{self, Blocking};
use ringleader_sys::{AsFd, BorrowedFd, OwnedFd};

use super::frame::{self, FrameError, HEADER_LEN, Kind};

/// How many bytes one read asks for.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// fds that may wait for their frame before the peer counts as misbehaving.
const MAX_QUEUED_FDS: usize = scm::MAX_FDS;
/// The most room made ahead of a long frame's bytes.
const PRESIZE_LIMIT: usize = 1024 * 1024;
/// A buffer larger than this is shrunk back once it is empty.
const SHRINK_ABOVE: usize = 1024 * 1024;

/// A whole frame taken off the channel.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) kind: Kind,
    pub(crate) payload: Vec<u8>,
    pub(crate) fd: Option<OwnedFd>,
}

/// Received bytes not yet framed, and fds not yet claimed by a frame.
#[derive(Debug, Default)]
pub(crate) struct Inbound {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    fds: VecDeque<OwnedFd>,
}

impl Inbound {
    /// Room for at least `min` more bytes at the end of the buffer.
    pub(crate) fn spare(&mut self, min: usize) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > SHRINK_ABOVE {
                self.buf = Vec::new();
            }
        }
        if self.buf.len() - self.end < min {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < min {
                self.buf.resize(self.end + min, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes written into [`Inbound::spare`] as received.
    pub(crate) fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Appends received bytes.
    pub(crate) fn push_bytes(&mut self, data: &[u8]) {
        self.spare(data.len())[..data.len()].copy_from_slice(data);
        self.commit(data.len());
    }

    /// Queues received fds for the frames that will claim them.
    pub(crate) fn push_fds(
        &mut self,
        fds: impl IntoIterator<Item = OwnedFd>,
    ) -> Result<(), FrameError> {
        self.fds.extend(fds);
        if self.fds.len() > MAX_QUEUED_FDS {
            let n = self.fds.len();
            self.fds.clear();
            return Err(FrameError::StrayFds(n));
        }
        Ok(())
    }

    /// The next whole frame, if one is buffered. After an error the channel is unusable.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let data = &self.buf[self.start..self.end];
        let Some(header) = frame::decode_header(data)? else {
            return Ok(None);
        };
        if data.len() < header.frame_len() {
            // Make room for more of the rest now, so that the next read can take what the
            // socket holds (a read never returns more than a socket buffer, ~200 KiB).
            let want = header.frame_len() - data.len();
            self.spare(want.min(PRESIZE_LIMIT));
            return Ok(None);
        }
        let fd = if header.nfds > 0 {
            Some(self.fds.pop_front().ok_or(FrameError::MissingFd)?)
        } else {
            None
        };
        let payload = data[HEADER_LEN..header.frame_len()].to_vec();
        self.start += header.frame_len();
        Ok(Some(Frame {
            kind: header.kind,
            payload,
            fd,
        }))
    }

    /// At end of file: fds nobody claimed are an error (they are closed).
    pub(crate) fn finish(&mut self) -> Result<(), FrameError> {
        let n = self.fds.len();
        self.fds.clear();
        if n > 0 {
            Err(FrameError::StrayFds(n))
        } else {
            Ok(())
        }
    }
}

/// Frames waiting to be written, with the fds that go with them.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    buf: Vec<u8>,
    start: usize,
    /// (offset in `buf` of the frame's first byte, fd)
    fds: VecDeque<(usize, OwnedFd)>,
    /// Shut down the writing half once everything is written.
    pub(crate) close_when_drained: bool,
}

impl Outbound {
    /// Bytes not yet written.
    pub(crate) fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Queues one frame.
    ///
    /// # Errors
    /// When the frame may not be sent; the fd is given back.
    pub(crate) fn push(
        &mut self,
        kind: Kind,
        payload: &[u8],
        fd: Option<OwnedFd>,
    ) -> Result<(), (FrameError, Option<OwnedFd>)> {
        let nfds = u8::from(fd.is_some());
        if let Err(e) = frame::check(kind, nfds, payload.len()) {
            return Err((e, fd));
        }
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > SHRINK_ABOVE {
                self.buf = Vec::new();
            }
        }
        let at = self.buf.len();
        self.buf
            .extend_from_slice(&frame::encode_header(kind, nfds, payload.len()));
        self.buf.extend_from_slice(payload);
        if let Some(fd) = fd {
            self.fds.push_back((at, fd));
        }
        Ok(())
    }

    /// Writes as much as the socket takes. Returns `Ok(true)` when everything is written.
    /// Each fd is attached to a `sendmsg` that carries its frame's first byte or an earlier
    /// one, and is closed here once sent: the peer has its own copy then.
    ///
    /// # Errors
    /// What `sendmsg(2)` returns, other than `EAGAIN` (`EPIPE` when the peer is gone).
    pub(crate) fn write_to(
        &mut self,
        sock: BorrowedFd<'_>,
        blocking: Blocking,
    ) -> io::Result<bool> {
        while self.start < self.buf.len() {
            let mut end = self.buf.len();
            let mut nfds = 0;
            for (at, _) in &self.fds {
                if nfds == scm::MAX_FDS {
                    end = *at;
                    break;
                }
                nfds += 1;
            }
            let fds: Vec<BorrowedFd<'_>> = self
                .fds
                .iter()
                .take(nfds)
                .map(|(_, fd)| fd.as_fd())
                .collect();
            let sent = match scm::send(
                sock,
                &[IoSlice::new(&self.buf[self.start..end])],
                &fds,
                blocking,
            ) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            drop(fds);
            if sent > 0 {
                self.fds.drain(..nfds);
            }
            self.start += sent;
        }
        if self.fds.is_empty() && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(true)
    }

    /// Forgets everything queued (the peer is gone); queued fds are closed.
    pub(crate) fn discard(&mut self) {
        self.buf = Vec::new();
        self.start = 0;
        self.fds.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere_reassemble() {
        let mut out = Outbound::default();
        let big = vec![7u8; 200_000];
        for body in [&b"one"[..], &big, b"", b"four"] {
            out.push(Kind::User, body, None).expect("push");
        }
        let (a, b) = ringleader_sys::socket::stream_pair().expect("pair");
        let mut inb = Inbound::default();
        let mut got = Vec::new();
        while got.len() < 4 {
            out.write_to(a.as_fd(), Blocking::No).expect("write");
            let mut fds = Vec::new();
            // Odd read sizes split headers and payloads.
            let n =
                scm::recv(&b, &mut inb.spare(777)[..777], &mut fds, Blocking::No).expect("read");
            inb.commit(n);
            while let Some(f) = inb.next_frame().expect("frame") {
                got.push(f.payload);
            }
        }
        assert_eq!(got[0], b"one");
        assert_eq!(got[1], big);
        assert!(got[2].is_empty());
        assert_eq!(got[3], b"four");
    }

    #[test]
    fn oversized_frame_is_refused_and_fd_given_back() {
        let mut out = Outbound::default();
        let (a, _b) = ringleader_sys::socket::stream_pair().expect("pair");
        let big = vec![0u8; frame::MAX_PAYLOAD + 1];
        let (err, fd) = out.push(Kind::User, &big, Some(a)).expect_err("too large");
        assert_eq!(err, FrameError::TooLarge(frame::MAX_PAYLOAD + 1));
        assert!(fd.is_some());
        assert_eq!(out.pending(), 0);
    }

    #[test]
    fn frame_without_its_fd_is_an_error() {
        let mut inb = Inbound::default();
        inb.push_bytes(&frame::encode_header(Kind::User, 1, 0));
        assert_eq!(
            inb.next_frame().map(|f| f.is_some()),
            Err(FrameError::MissingFd)
        );
    }
}
