//! The control channel between the primary and a worker: frames over a Unix stream
//! socketpair, with fds passed alongside (`SCM_RIGHTS`).
//!
//! [`frame`] is the pure wire format (fuzzed); a private module buffers bytes on their way in
//! and out. [`node`] is Node.js's line protocol, decoded as purely (fuzzed too). Nothing here
//! knows about processes.

pub(crate) mod buffers;
// Public only for the `internals` feature's fuzz and bench hooks.
#[cfg_attr(not(feature = "internals"), allow(unreachable_pub, dead_code))]
pub mod frame;
pub(crate) mod listen;
// Node.js's own IPC protocol, for unmodified Node workers. Public only for the `internals`
// feature's fuzz target until the primary speaks it (issue 16).
#[cfg_attr(not(feature = "internals"), allow(unreachable_pub, dead_code))]
pub mod node;

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
