//! Two latency/throughput trade-offs, shared by the primary and the worker.
//!
//! - **Burst coalescing**: a message is written at once unless another write on the same
//!   channel happened less than [`BURST_GAP`] ago; inside such a burst, messages collect and go
//!   out together (at [`COALESCE_LIMIT`] bytes, at the next loop turn in the primary, before
//!   the next `recv` or from the watcher thread in the worker). A lone message pays no delay;
//!   a burst pays one system call per batch instead of one per message.
//! - **Busy polling**: before a blocking wait, check for input without blocking for up to
//!   `RINGLEADER_BUSY_POLL_US` microseconds (default 50; 0 turns it off). A reply that arrives
//!   within that window costs no sleep and no wake-up, which dominate the round trip on
//!   virtual machines (about 25 µs per cross-CPU wake-up on the 2-vCPU VM we measure on).
//!
//! And one for connections, in the primary:
//!
//! - **Accept rounds**: under round-robin, a listener that took connections rests for
//!   `RINGLEADER_ACCEPT_ROUNDS_US` microseconds (default 200; 0 turns rounds off), then takes
//!   every connection that arrived meanwhile at once and hands each worker its share in one
//!   system call (a message per connection). The first connection after a quiet spell is taken at once. Under load the
//!   primary wakes once per round instead of once per connection (and a worker once per
//!   batch), at the price of a connection that arrives during a rest waiting up to the
//!   interval (`benches/results/NOTES.md`, "accept rounds", has what it saved when it came).
//!   `Primary::set_accept_rounds` changes it at run time.

use std::sync::OnceLock;
use std::time::Duration;

/// Writes closer together than this form a burst.
pub(crate) const BURST_GAP: Duration = Duration::from_micros(20);
/// A burst is written out once this much has collected.
pub(crate) const COALESCE_LIMIT: usize = 64 * 1024;

/// The busy-poll window from `RINGLEADER_BUSY_POLL_US`, read once.
pub(crate) fn default_busy_poll() -> Duration {
    static VALUE: OnceLock<Duration> = OnceLock::new();
    *VALUE.get_or_init(|| {
        let us = std::env::var(ENV_BUSY_POLL_US)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(50);
        Duration::from_micros(us)
    })
}

/// The accept-round interval from `RINGLEADER_ACCEPT_ROUNDS_US`, read once.
pub(crate) fn default_accept_rounds() -> Option<Duration> {
    static VALUE: OnceLock<Option<Duration>> = OnceLock::new();
    *VALUE.get_or_init(|| {
        let us = std::env::var(ENV_ACCEPT_ROUNDS_US)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_ACCEPT_ROUNDS_US);
        (us > 0).then(|| Duration::from_micros(us))
    })
}

const DEFAULT_ACCEPT_ROUNDS_US: u64 = 200;

/// Microseconds between accept rounds under round-robin; `0` turns rounds off.
pub const ENV_ACCEPT_ROUNDS_US: &str = "RINGLEADER_ACCEPT_ROUNDS_US";

/// Microseconds of busy polling before a blocking wait; `0` turns it off.
pub const ENV_BUSY_POLL_US: &str = "RINGLEADER_BUSY_POLL_US";
