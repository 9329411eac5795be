//! The listen protocol's messages (JSON payloads of the internal frames `Listen`,
//! `ListenReply`, `Listening` and `Close`), and the key that identifies a shared listener.

use serde::{Deserialize, Serialize};

/// Which kind of socket a listener is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) enum Transport {
    Tcp,
    Udp,
    Unix,
}

/// Identifies one listener in the primary, as Node's key does: workers asking for the same
/// (transport, address, port, index) share it, which is how `listen(0)` gives every worker the
/// same port; a second listen on the same tuple in one worker gets the next index, its own
/// socket, and `EADDRINUSE` like a process outside a cluster would.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct Key {
    pub(crate) transport: Transport,
    /// An IP address as text, or a Unix socket's absolute path.
    pub(crate) address: String,
    /// The requested port (0: any, the same for every worker sharing the key).
    pub(crate) port: u16,
    /// Per worker and tuple: 0 for the first live listener, 1 for a second one, …
    pub(crate) index: u32,
}

/// Worker to primary: `Listen`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Request {
    pub(crate) seq: u64,
    pub(crate) key: Key,
    pub(crate) backlog: Option<i32>,
    pub(crate) ipv6_only: bool,
    /// Unix sockets: the socket file's mode (Node's `readableAll`/`writableAll`).
    #[serde(default)]
    pub(crate) mode: Option<u32>,
}

/// Primary to worker: `ListenReply`. On success the frame's fd is the hand-off channel
/// (`handoff`, `steered`) or a copy of the listening socket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Reply {
    pub(crate) seq: u64,
    /// The errno of a failed bind or listen.
    pub(crate) errno: Option<i32>,
    /// The address actually bound (`getsockname`), as text.
    pub(crate) local: Option<String>,
    /// Connections come over a hand-off channel (round-robin), not from the socket itself.
    pub(crate) handoff: bool,
    /// Steered: the frame's fd is a hand-off channel whose first message carries the
    /// worker's own listening socket; connections come from both.
    #[serde(default)]
    pub(crate) steered: bool,
    /// Each connection starts with a PROXY protocol header, whole, which the worker reads
    /// off before the application sees the connection.
    #[serde(default)]
    pub(crate) proxy_protocol: bool,
}

/// Worker to primary: `Listening` and `Close`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Notice {
    pub(crate) key: Key,
    pub(crate) local: String,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<T, super::frame::FrameError> {
    serde_json::from_slice(bytes).map_err(|_| super::frame::FrameError::BadPayload)
}
