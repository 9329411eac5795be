//! The ids both sides of a cluster use.

/// A worker's id: 1, 2, 3… in fork order, never reused by one primary (Node:
/// `worker.id`).
pub type WorkerId = u32;
