//! A worker's state as the user sees it.

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

impl WorkerState {
    /// Node's name for it: `none` is `started` here.
    pub(crate) fn name(self) -> &'static str {
        match self {
            WorkerState::Started => "started",
            WorkerState::Online => "online",
            WorkerState::Listening => "listening",
            WorkerState::Disconnected => "disconnected",
            WorkerState::Dead => "dead",
        }
    }
}
