//! The control channel between the primary and a worker: frames over a Unix stream
//! socketpair, with fds passed alongside (`SCM_RIGHTS`).
//!
//! [`frame`] is the pure wire format (fuzzed); a private module buffers bytes on their way in
//! and out. Nothing here knows about processes.

pub(crate) mod buffers;
pub mod frame;
pub(crate) mod listen;

/// Entry points for the fuzz targets; not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    use super::buffers::Inbound;
    use super::frame::FrameError;

    /// Feeds `chunks` one by one into the receive buffer the channels use, as reads would,
    /// and returns the frames (kind byte, payload) it yields, or the first error.
    ///
    /// # Errors
    /// The first [`FrameError`] the buffer meets.
    pub fn inbound_frames(chunks: &[&[u8]]) -> Result<Vec<(u8, Vec<u8>)>, FrameError> {
        let mut inbound = Inbound::default();
        let mut out = Vec::new();
        for chunk in chunks {
            inbound.push_bytes(chunk);
            while let Some(frame) = inbound.next_frame()? {
                out.push((frame.kind as u8, frame.payload));
            }
        }
        Ok(out)
    }
}

/// A message received from the other side: bytes, and the fd that came with them, if any.
#[derive(Debug)]
pub struct Message {
    /// The payload.
    pub data: Vec<u8>,
    /// The fd sent with [`send_fd`](crate::Worker::send_fd), owned and close-on-exec.
    pub fd: Option<ringleader_sys::OwnedFd>,
}

impl Message {
    /// Parses the payload as JSON.
    ///
    /// # Errors
    /// When the payload is not valid JSON for `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> crate::Result<T> {
        serde_json::from_slice(&self.data)
            .map_err(|e| crate::Error::json("parse a JSON message", e))
    }

    /// The payload as UTF-8 text, lossily.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.data)
    }
}
