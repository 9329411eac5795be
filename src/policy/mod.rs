//! Distribution policies: which worker gets the next connection under round-robin hand-off.
//!
//! The primary reads the load board (every worker's published counters and hints) and
//! offers a policy only the workers that may take a connection now: not paused, not
//! draining, under their bound (16 queued, or their capacity hint), with a board slot that
//! reads sane. The policy picks one. It cannot make the primary overload anyone, whatever
//! it returns.
//!
//! A policy that places clients by their address ([`Sticky`]) says so
//! ([`Policy::wants_addresses`]), and is then offered each connection's addresses with the
//! candidates ([`Policy::pick_for`]).

mod sticky;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::ids::WorkerId;

pub use self::sticky::Sticky;
pub use ringleader_sys::rendezvous::Prefixes;

/// Where a connection comes from and where it arrived, as far as the primary knows: the
/// client's address (or, with the PROXY protocol, the one its header carries) and the
/// listener's local address. `None` for a Unix socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Addresses {
    /// The client.
    pub client: Option<SocketAddr>,
    /// Where it connected to.
    pub local: Option<SocketAddr>,
}

impl Addresses {
    /// Addresses by hand: for testing a policy of your own.
    pub fn new(client: Option<SocketAddr>, local: Option<SocketAddr>) -> Addresses {
        Addresses { client, local }
    }
}

/// One worker a policy may pick, as the board shows it at this moment. Within one burst of
/// connections, `queued` already counts the ones the policy gave it earlier in the burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Candidate {
    /// The worker.
    pub worker: WorkerId,
    /// Connections handed to it that it has not taken yet.
    pub queued: u64,
    /// Connections it took and has not finished (closed or detached).
    pub active: u64,
    /// The load figure its application published, 0 if none.
    pub load: u64,
    /// Its capacity hint; `None` when it gave none.
    pub capacity: Option<u32>,
    /// Its place: the id of the first worker of its line of replacements. A worker that
    /// replaces another (a respawn, a roll's successor) takes its place, so that a policy
    /// keyed on places ([`Sticky`]) sends it its predecessor's clients.
    pub place: WorkerId,
}

impl Candidate {
    /// A candidate by hand: for testing a policy of your own on a made-up board.
    pub fn new(
        worker: WorkerId,
        queued: u64,
        active: u64,
        load: u64,
        capacity: Option<u32>,
    ) -> Candidate {
        Candidate {
            worker,
            queued,
            active,
            load,
            capacity,
            place: worker,
        }
    }

    /// The same candidate in place `place` (a replacement's: its line's first worker).
    pub fn in_place(self, place: WorkerId) -> Candidate {
        Candidate { place, ..self }
    }

    /// Connections it holds or will hold: active plus queued.
    pub fn outstanding(&self) -> u64 {
        self.active + self.queued
    }
}

/// Picks a worker for each connection. `candidates` is never empty and is in worker-id
/// order; the returned index is clamped into it.
pub trait Policy: Send + 'static {
    /// The index in `candidates` of the worker that gets the next connection.
    fn pick(&mut self, candidates: &[Candidate]) -> usize;

    /// The same for a connection whose addresses the primary read, because this policy
    /// [wants them](Policy::wants_addresses). By default, [`Policy::pick`].
    fn pick_for(&mut self, addresses: &Addresses, candidates: &[Candidate]) -> usize {
        let _ = addresses;
        self.pick(candidates)
    }

    /// Whether the primary should read each connection's addresses for
    /// [`Policy::pick_for`] (a system call per connection where the accept did not give
    /// them). By default, no.
    fn wants_addresses(&self) -> bool {
        false
    }
}

/// Node's round-robin: the next worker after the last one picked, in id order, among those
/// under their bound. The default.
#[derive(Clone, Debug, Default)]
pub struct RoundRobin {
    last: Option<WorkerId>,
}

impl Policy for RoundRobin {
    fn pick(&mut self, candidates: &[Candidate]) -> usize {
        let i = after(candidates, self.last);
        self.last = Some(candidates[i].worker);
        i
    }
}

/// The index of the first candidate after worker `last` in id order, wrapping around.
fn after(candidates: &[Candidate], last: Option<WorkerId>) -> usize {
    last.and_then(|l| candidates.iter().position(|c| c.worker > l))
        .unwrap_or(0)
}

/// The worker with the fewest outstanding connections (active plus queued); ties go round
/// robin, so equal workers share evenly.
#[derive(Clone, Debug, Default)]
pub struct LeastConnections {
    last: Option<WorkerId>,
}

impl Policy for LeastConnections {
    fn pick(&mut self, candidates: &[Candidate]) -> usize {
        let start = after(candidates, self.last);
        let n = candidates.len();
        let i = (0..n)
            .map(|k| (start + k) % n)
            .min_by_key(|&i| candidates[i].outstanding())
            .unwrap_or(0);
        self.last = Some(candidates[i].worker);
        i
    }
}

/// Two workers drawn at random, the less loaded one wins (Mitzenmacher's "power of two
/// choices"): nearly the balance of least-connections, without a scan and without the herd
/// that follows a stale minimum.
#[derive(Clone, Debug)]
pub struct PowerOfTwoChoices {
    state: u64,
}

impl Default for PowerOfTwoChoices {
    fn default() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()) << 32;
        PowerOfTwoChoices::seeded(seed)
    }
}

impl PowerOfTwoChoices {
    /// With a fixed seed, for reproducible runs.
    pub fn seeded(seed: u64) -> Self {
        PowerOfTwoChoices { state: seed | 1 }
    }

    /// xorshift64*: fast, and plenty for picking among workers.
    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

impl Policy for PowerOfTwoChoices {
    fn pick(&mut self, candidates: &[Candidate]) -> usize {
        let n = candidates.len() as u64;
        if n == 1 {
            return 0;
        }
        let a = (self.next() % n) as usize;
        let b = ((a as u64 + 1 + self.next() % (n - 1)) % n) as usize;
        if candidates[b].outstanding() < candidates[a].outstanding() {
            b
        } else {
            a
        }
    }
}

/// Shares in proportion to each worker's capacity hint (1 for a worker without one), spread
/// smoothly: with weights 3 and 1 the order is a a b a, not a a a b (the smooth weighted
/// round-robin of nginx's upstream module).
#[derive(Clone, Debug, Default)]
pub struct Weighted {
    /// Each worker's credit, in worker-id order like the candidates.
    current: Vec<(WorkerId, i64)>,
}

impl Policy for Weighted {
    fn pick(&mut self, candidates: &[Candidate]) -> usize {
        let weight = |c: &Candidate| i64::from(c.capacity.filter(|&w| w > 0).unwrap_or(1));
        // Keep the credits aligned with the candidates; when the set changed (a worker at
        // its bound, one gone, one new), carry over what the others had.
        let aligned = self.current.len() == candidates.len()
            && self
                .current
                .iter()
                .zip(candidates)
                .all(|((w, _), c)| *w == c.worker);
        if !aligned {
            let old = std::mem::take(&mut self.current);
            self.current = candidates
                .iter()
                .map(|c| {
                    let credit = old
                        .binary_search_by_key(&c.worker, |(w, _)| *w)
                        .map_or(0, |i| old[i].1);
                    (c.worker, credit)
                })
                .collect();
        }
        let mut total = 0;
        let mut best = 0;
        let mut best_credit = i64::MIN;
        for (i, c) in candidates.iter().enumerate() {
            let w = weight(c);
            total += w;
            let credit = &mut self.current[i].1;
            *credit += w;
            if *credit > best_credit {
                best = i;
                best_credit = *credit;
            }
        }
        self.current[best].1 -= total;
        best
    }
}

/// The built-in policies by name, as `RINGLEADER_SCHED_POLICY` spells them: `rr`,
/// `least-connections` (or `lc`), `p2c`, `weighted`, `sticky` ([`Sticky::new`]; also
/// `steer-sticky`, the name [`Scheduling::parse`](crate::Scheduling::parse) reads as
/// steering with it).
pub fn by_name(name: &str) -> Option<Box<dyn Policy>> {
    SharedPolicy::named(name).map(|p| -> Box<dyn Policy> { Box::new(p) })
}

/// A distribution policy as settings hold it: shared, so that settings stay cheap to clone
/// (set with [`Settings::policy`](crate::Settings::policy); two settings are equal when they hold the same instance).
#[derive(Clone)]
pub struct SharedPolicy {
    name: Arc<str>,
    inner: Arc<Mutex<Box<dyn Policy>>>,
    /// [`Policy::wants_addresses`], asked once.
    wants_addresses: bool,
    /// A [`Sticky`] policy's prefixes: what a steering program hashes on.
    sticky: Option<Prefixes>,
}

impl SharedPolicy {
    /// Wraps `policy` under `name` (what `Debug` and logs show).
    pub fn new(name: &str, policy: impl Policy) -> SharedPolicy {
        let sticky = (&policy as &dyn std::any::Any)
            .downcast_ref::<Sticky>()
            .map(Sticky::key_prefixes);
        SharedPolicy {
            name: name.into(),
            wants_addresses: policy.wants_addresses(),
            sticky,
            inner: Arc::new(Mutex::new(Box::new(policy))),
        }
    }

    /// One of the built-in policies by its `RINGLEADER_SCHED_POLICY` name ([`by_name`]).
    pub fn named(name: &str) -> Option<SharedPolicy> {
        Some(match name {
            "rr" | "round-robin" => SharedPolicy::new(name, RoundRobin::default()),
            "least-connections" | "lc" => SharedPolicy::new(name, LeastConnections::default()),
            "p2c" | "power-of-two-choices" => SharedPolicy::new(name, PowerOfTwoChoices::default()),
            "weighted" => SharedPolicy::new(name, Weighted::default()),
            "sticky" | "steer-sticky" => SharedPolicy::new(name, Sticky::new()),
            _ => return None,
        })
    }

    /// The name it was given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the primary reads each connection's addresses for it.
    pub(crate) fn wants_addresses(&self) -> bool {
        self.wants_addresses
    }

    /// A [`Sticky`] policy's prefixes, for a steering program that places alike.
    pub(crate) fn sticky(&self) -> Option<Prefixes> {
        self.sticky
    }

    /// The policy's pick, for a connection whose `addresses` were read (when it
    /// [wants them](Policy::wants_addresses)).
    pub(crate) fn pick(&self, addresses: Option<&Addresses>, candidates: &[Candidate]) -> usize {
        match self.inner.lock() {
            Ok(mut p) => match addresses {
                Some(a) => p.pick_for(a, candidates),
                None => p.pick(candidates),
            },
            // A policy that panicked once is not trusted again: plain rotation instead.
            Err(_) => 0,
        }
    }
}

/// A shared policy is a policy: [`by_name`]'s boxes are these.
impl Policy for SharedPolicy {
    fn pick(&mut self, candidates: &[Candidate]) -> usize {
        SharedPolicy::pick(self, None, candidates)
    }

    fn pick_for(&mut self, addresses: &Addresses, candidates: &[Candidate]) -> usize {
        SharedPolicy::pick(self, Some(addresses), candidates)
    }

    fn wants_addresses(&self) -> bool {
        self.wants_addresses
    }
}

impl Default for SharedPolicy {
    fn default() -> Self {
        SharedPolicy::new("rr", RoundRobin::default())
    }
}

impl std::fmt::Debug for SharedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedPolicy({})", self.name)
    }
}

impl Eq for SharedPolicy {}

impl PartialEq for SharedPolicy {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(outstanding: &[(u64, u64)]) -> Vec<Candidate> {
        outstanding
            .iter()
            .enumerate()
            .map(|(i, &(active, queued))| {
                Candidate::new(i as WorkerId + 1, queued, active, 0, None)
            })
            .collect()
    }

    /// Runs `n` picks, each adding the connection to the picked worker's queue.
    fn run(policy: &mut dyn Policy, board: &mut [Candidate], n: usize) -> Vec<WorkerId> {
        (0..n)
            .map(|_| {
                let i = policy.pick(board).min(board.len() - 1);
                board[i].queued += 1;
                board[i].worker
            })
            .collect()
    }

    #[test]
    fn round_robin_cycles_in_id_order_and_skips_absent_workers() {
        let mut rr = RoundRobin::default();
        let mut board = workers(&[(0, 0), (0, 0), (0, 0)]);
        assert_eq!(run(&mut rr, &mut board, 7), [1, 2, 3, 1, 2, 3, 1]);
        // Worker 2 is at its bound (not offered): the cycle continues past it.
        let mut fewer = vec![board[0], board[2]];
        assert_eq!(run(&mut rr, &mut fewer, 3), [3, 1, 3]);
    }

    #[test]
    fn least_connections_fills_the_emptiest_and_shares_ties() {
        let mut lc = LeastConnections::default();
        let mut board = workers(&[(10, 0), (2, 0), (5, 0)]);
        let picks = run(&mut lc, &mut board, 11);
        // Worker 2 first catches up with worker 3, then both with worker 1.
        assert_eq!(&picks[..3], [2, 2, 2]);
        let outstanding: Vec<u64> = board.iter().map(Candidate::outstanding).collect();
        assert_eq!(outstanding, [10, 9, 9]);
        run(&mut lc, &mut board, 32);
        let outstanding: Vec<u64> = board.iter().map(Candidate::outstanding).collect();
        assert_eq!(outstanding, [20, 20, 20], "level from then on");
    }

    #[test]
    fn power_of_two_choices_avoids_the_loaded_worker_and_balances_equals() {
        let mut p2c = PowerOfTwoChoices::seeded(7);
        let mut board = workers(&[(1000, 0), (0, 0), (0, 0), (0, 0)]);
        let picks = run(&mut p2c, &mut board, 2000);
        assert!(!picks.contains(&1), "the loaded worker loses every draw");
        let mut even = workers(&[(0, 0); 4]);
        run(&mut p2c, &mut even, 4000);
        for c in &even {
            assert!((900..=1100).contains(&c.queued), "{even:?}");
        }
        let mut one = workers(&[(5, 5)]);
        assert_eq!(p2c.pick(&one), 0);
        one[0].queued += 1;
    }

    #[test]
    fn weighted_follows_capacities_smoothly() {
        let mut w = Weighted::default();
        let mut board = workers(&[(0, 0), (0, 0)]);
        board[0].capacity = Some(3);
        board[1].capacity = Some(1);
        assert_eq!(run(&mut w, &mut board, 8), [1, 1, 2, 1, 1, 1, 2, 1]);
        // No hints: equal shares.
        let mut w = Weighted::default();
        let mut plain = workers(&[(0, 0); 3]);
        let picks = run(&mut w, &mut plain, 9);
        for id in 1..=3 {
            assert_eq!(picks.iter().filter(|&&p| p == id).count(), 3);
        }
    }

    #[test]
    fn names() {
        for name in ["rr", "least-connections", "lc", "p2c", "weighted", "sticky"] {
            assert!(by_name(name).is_some(), "{name}");
        }
        assert!(by_name("random").is_none());
    }
}
