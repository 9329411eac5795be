//! Rendezvous (highest-random-weight) hashing of client addresses onto places, with 32-bit
//! arithmetic that a classic BPF program can do too ([`crate::steer::sticky_program`]): the
//! primary's hand-off and the kernel's steering place a client alike.
//!
//! A client's key is its address under a prefix mask (a /24 keeps a NAT pool's clients
//! together), folded to 32 bits; an IPv4-mapped IPv6 address is its IPv4 address, since a
//! dual-stack socket sees IPv4 packets. Each place (a worker's line of replacements) has a
//! seed, and the place whose `score(key, seed)` is highest gets the client; equal scores go
//! to the place that comes first. When a place goes, only its own clients move, each to
//! its next place; when it comes back, they return.
//!
//! The mixer is Chris Wellons's `lowbias32` (shifts, xors and two multiplications), chosen
//! because classic BPF has each of those and no rotation.

use std::net::IpAddr;

/// The mixer: every bit of `x` moves every bit of the result.
pub fn mix(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(MUL_1);
    x ^= x >> 15;
    x = x.wrapping_mul(MUL_2);
    x ^= x >> 16;
    x
}

/// The mixer's multipliers.
pub(crate) const MUL_1: u32 = 0x7feb_352d;
pub(crate) const MUL_2: u32 = 0x846c_a68b;

/// The golden ratio's 32 bits: spreads consecutive places before mixing.
const PLACE_SPREAD: u32 = 0x9e37_79b9;

/// Which part of a client's address is its key: the first `v4` bits of an IPv4 address,
/// the first `v6` bits of an IPv6 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefixes {
    /// At most 32.
    pub v4: u8,
    /// At most 128.
    pub v6: u8,
}

impl Default for Prefixes {
    /// Whole addresses.
    fn default() -> Self {
        Prefixes { v4: 32, v6: 128 }
    }
}

impl Prefixes {
    /// The mask of the 32-bit word `i` (0 for IPv4, 0 to 3 for IPv6) of an address.
    pub fn word_mask(bits: u8, i: u32) -> u32 {
        let bits = u32::from(bits).saturating_sub(32 * i).min(32);
        if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        }
    }
}

/// A client's key: its address under the prefix mask, folded to 32 bits.
pub fn key(ip: IpAddr, prefixes: Prefixes) -> u32 {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => mix(u32::from(v4) & Prefixes::word_mask(prefixes.v4, 0)),
        IpAddr::V6(v6) => {
            let octets = v6.octets();
            let word = |i: usize| {
                u32::from_be_bytes([
                    octets[4 * i],
                    octets[4 * i + 1],
                    octets[4 * i + 2],
                    octets[4 * i + 3],
                ]) & Prefixes::word_mask(prefixes.v6, i as u32)
            };
            let mut k = mix(word(0));
            for i in 1..4 {
                k = mix(k ^ word(i));
            }
            k
        }
    }
}

/// A place's seed.
pub fn seed(place: u32) -> u32 {
    mix(place.wrapping_mul(PLACE_SPREAD))
}

/// How much the client of `key` wants the place of `seed`: the highest wins.
pub fn score(key: u32, seed: u32) -> u32 {
    mix(key ^ seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_keeps_a_network_together_and_mapped_addresses_are_ipv4() {
        let p24 = Prefixes { v4: 24, v6: 64 };
        let a: IpAddr = "192.0.2.7".parse().expect("ip");
        let b: IpAddr = "192.0.2.200".parse().expect("ip");
        let c: IpAddr = "192.0.3.7".parse().expect("ip");
        assert_eq!(key(a, p24), key(b, p24));
        assert_ne!(key(a, p24), key(c, p24));
        assert_ne!(key(a, Prefixes::default()), key(b, Prefixes::default()));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(
            key(mapped, Prefixes::default()),
            key(a, Prefixes::default())
        );
        let x: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let y: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        assert_eq!(key(x, p24), key(y, p24));
        assert_ne!(key(x, Prefixes::default()), key(y, Prefixes::default()));
    }

    #[test]
    fn masks() {
        assert_eq!(Prefixes::word_mask(24, 0), 0xffff_ff00);
        assert_eq!(Prefixes::word_mask(32, 0), u32::MAX);
        assert_eq!(Prefixes::word_mask(0, 0), 0);
        assert_eq!(Prefixes::word_mask(64, 1), u32::MAX);
        assert_eq!(Prefixes::word_mask(64, 2), 0);
        assert_eq!(Prefixes::word_mask(72, 2), 0xff00_0000);
    }
}
