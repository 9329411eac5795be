//! [`Sticky`]: each client to the same worker, by rendezvous hashing of its address over
//! places.

use std::net::IpAddr;

use ringleader_sys::rendezvous::{self, Prefixes};

use super::{Addresses, Candidate, Policy, RoundRobin};

/// Sticky sessions: every connection of a client goes to the same worker, so that a server
/// that keeps sessions in memory (socket.io's long-polling, for one) finds them.
///
/// The client's address (under an optional prefix mask, for clients behind a NAT pool) is
/// hashed over the candidates' *places* by rendezvous (highest-random-weight) hashing. A
/// worker's replacement, a respawn or a roll's successor, takes its predecessor's place, so
/// its clients come back to it; when one of N places goes, only its own clients move, each
/// to the place that comes next in its own order, and the others stay where they were.
///
/// A worker at its bound (16 connections waiting for it, or its capacity hint) is no
/// candidate, so its new clients spill to their next place meanwhile. With a
/// [balance factor](Sticky::balance_factor) (HAProxy's `hash-balance-factor`), so does a
/// worker holding more than that share of the mean (connections taken and unfinished, plus
/// queued). Without one (the default), a client never moves while its worker has room.
///
/// Under [`Scheduling::Steered`](crate::Scheduling::Steered) the kernel does the same
/// hashing in a classic BPF program, with no work in the primary per connection; a
/// connection with no IP address (a Unix socket) goes round-robin.
#[derive(Clone, Debug)]
pub struct Sticky {
    prefixes: Prefixes,
    balance_factor: Option<u32>,
    unaddressed: RoundRobin,
}

impl Default for Sticky {
    fn default() -> Self {
        Sticky::new()
    }
}

impl Sticky {
    /// Whole addresses, no balance factor.
    pub fn new() -> Sticky {
        Sticky {
            prefixes: Prefixes::default(),
            balance_factor: None,
            unaddressed: RoundRobin::default(),
        }
    }

    /// Keys on the first `v4` bits of an IPv4 address and the first `v6` of an IPv6 one
    /// (24 and 64 keep a NAT pool's clients or a site's together); clamped to 32 and 128.
    pub fn prefixes(self, v4: u8, v6: u8) -> Sticky {
        Sticky {
            prefixes: Prefixes {
                v4: v4.min(32),
                v6: v6.min(128),
            },
            ..self
        }
    }

    /// Bounded load: a worker that holds `percent`% of the mean or more (at least 100; 125
    /// to 150 are usual) gets no new client while another can take it; the client goes to
    /// its next place. Clients then move under load, which breaks in-memory sessions: leave
    /// it off when they must not.
    pub fn balance_factor(self, percent: u32) -> Sticky {
        Sticky {
            balance_factor: Some(percent.max(100)),
            ..self
        }
    }

    /// The prefixes it keys on (the steering program's too).
    pub fn key_prefixes(&self) -> Prefixes {
        self.prefixes
    }

    /// The index in `candidates` of `client`'s worker.
    fn place(&self, client: IpAddr, candidates: &[Candidate]) -> usize {
        let key = rendezvous::key(client, self.prefixes);
        // Highest score first; equal scores to the earlier place, then the older worker
        // (a roll's predecessor, until it leaves).
        let rank = |c: &Candidate| {
            (
                rendezvous::score(key, rendezvous::seed(c.place)),
                std::cmp::Reverse(c.place),
                std::cmp::Reverse(c.worker),
            )
        };
        let best = |open: &dyn Fn(&Candidate) -> bool| {
            (0..candidates.len())
                .filter(|&i| open(&candidates[i]))
                .max_by_key(|&i| rank(&candidates[i]))
        };
        let Some(percent) = self.balance_factor else {
            return best(&|_| true).unwrap_or(0);
        };
        // Mirrokni, Thorup and Zadimoghaddam's bound: with the new connection counted, no
        // worker above `percent`% of the mean.
        let total: u64 = candidates.iter().map(Candidate::outstanding).sum();
        let n = candidates.len() as u64;
        let cap = (u64::from(percent) * (total + 1)).div_ceil(100 * n);
        best(&|c| c.outstanding() < cap)
            .or_else(|| best(&|_| true))
            .unwrap_or(0)
    }
}

impl Policy for Sticky {
    /// A connection without addresses (a Unix socket's): round-robin.
    fn pick(&mut self, candidates: &[Candidate]) -> usize {
        self.unaddressed.pick(candidates)
    }

    fn pick_for(&mut self, addresses: &Addresses, candidates: &[Candidate]) -> usize {
        match addresses.client {
            Some(client) => self.place(client.ip(), candidates),
            None => self.pick(candidates),
        }
    }

    fn wants_addresses(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

    use super::*;
    use crate::ids::WorkerId;

    /// Addresses drawn by xorshift from a fixed seed: the same every run.
    fn addresses(n: usize, seed: u64) -> Vec<IpAddr> {
        let mut x = seed | 1;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 4 == 3 {
                    IpAddr::from(Ipv6Addr::from(u128::from(x) << 64 | u128::from(x >> 3)))
                } else {
                    IpAddr::from(Ipv4Addr::from(x as u32))
                }
            })
            .collect()
    }

    fn board(places: &[WorkerId]) -> Vec<Candidate> {
        places
            .iter()
            .map(|&p| Candidate::new(p, 0, 0, 0, None))
            .collect()
    }

    fn worker_of(s: &mut Sticky, ip: IpAddr, board: &[Candidate]) -> WorkerId {
        let a = Addresses::new(Some(SocketAddr::new(ip, 40_000)), None);
        board[s.pick_for(&a, board)].worker
    }

    #[test]
    // Up to 100,000 placements: too long under Miri, for safe arithmetic it has nothing
    // to say about.
    #[cfg_attr(miri, ignore)]
    fn when_one_place_goes_only_its_clients_move_about_one_in_n() {
        let mut s = Sticky::new();
        let clients = addresses(100_000, 7);
        for n in [2u32, 4, 8] {
            let all: Vec<WorkerId> = (1..=n).collect();
            let before: Vec<WorkerId> = clients
                .iter()
                .map(|&ip| worker_of(&mut s, ip, &board(&all)))
                .collect();
            let gone = n / 2 + 1;
            let rest: Vec<WorkerId> = all.iter().copied().filter(|&p| p != gone).collect();
            let mut moved = 0;
            for (ip, was) in clients.iter().zip(&before) {
                let now = worker_of(&mut s, *ip, &board(&rest));
                if *was == gone {
                    moved += 1;
                } else {
                    assert_eq!(now, *was, "{ip} moved, and its place stayed");
                }
            }
            let fraction = f64::from(moved) / clients.len() as f64;
            assert!(
                (fraction - 1.0 / f64::from(n)).abs() < 0.02,
                "{n} places: {fraction} moved"
            );
        }
    }

    #[test]
    // Up to 100,000 placements: too long under Miri, for safe arithmetic it has nothing
    // to say about.
    #[cfg_attr(miri, ignore)]
    fn a_replacement_takes_its_predecessors_clients_back() {
        let mut s = Sticky::new();
        let clients = addresses(10_000, 11);
        let four = board(&[1, 2, 3, 4]);
        // Worker 3 died; worker 7 replaced it, in its place.
        let mut replaced = board(&[1, 2, 4, 7]);
        replaced[3] = replaced[3].in_place(3);
        replaced.sort_by_key(|c| c.worker);
        for ip in clients {
            let was = worker_of(&mut s, ip, &four);
            let now = worker_of(&mut s, ip, &replaced);
            assert_eq!(now, if was == 3 { 7 } else { was });
        }
    }

    #[test]
    // Up to 100,000 placements: too long under Miri, for safe arithmetic it has nothing
    // to say about.
    #[cfg_attr(miri, ignore)]
    fn a_balance_factor_bounds_the_busiest_worker() {
        for percent in [110u32, 125, 150] {
            let mut s = Sticky::new().balance_factor(percent);
            let mut b = board(&[1, 2, 3, 4, 5, 6, 7, 8]);
            let clients = addresses(100_000, 3);
            for (i, ip) in clients.iter().enumerate() {
                let a = Addresses::new(Some(SocketAddr::new(*ip, 1)), None);
                let at = s.pick_for(&a, &b);
                b[at].active += 1;
                let total = i as u64 + 1;
                let max = b.iter().map(Candidate::outstanding).max().unwrap_or(0);
                assert!(
                    max <= (u64::from(percent) * total).div_ceil(100 * 8),
                    "{percent}%: {max} of {total}"
                );
            }
        }
        // Without one, the hash alone decides: one client, one worker, however loaded.
        let mut s = Sticky::new();
        let mut b = board(&[1, 2]);
        let ip = IpAddr::from([192, 0, 2, 1]);
        let first = worker_of(&mut s, ip, &b);
        b[(first - 1) as usize].active = 1000;
        assert_eq!(worker_of(&mut s, ip, &b), first);
    }

    #[test]
    fn a_prefix_sends_a_network_to_one_worker_and_unix_clients_go_round() {
        let mut s = Sticky::new().prefixes(24, 64);
        let b = board(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let one = worker_of(&mut s, IpAddr::from([198, 51, 100, 1]), &b);
        for last in 2..=254 {
            assert_eq!(
                worker_of(&mut s, IpAddr::from([198, 51, 100, last]), &b),
                one
            );
        }
        let unix = Addresses::default();
        let picks: Vec<usize> = (0..8).map(|_| s.pick_for(&unix, &b)).collect();
        assert_eq!(picks, [0, 1, 2, 3, 4, 5, 6, 7]);
    }
}
