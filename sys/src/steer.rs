//! Steering an `SO_REUSEPORT` group: a classic BPF program, attached to the group, picks
//! the socket each new connection goes to by weights (`SO_ATTACH_REUSEPORT_CBPF`), and the
//! depth of a listener's accept queue (`TCP_INFO`). Classic BPF needs no privilege, unlike
//! an eBPF `SK_REUSEPORT` program; it cannot read memory, so the weights are compiled into
//! the program and a new one replaces it when they change.
//!
//! The program draws a random number (`SKF_AD_RANDOM`) and returns the index of the socket
//! whose slice of the 32-bit range it falls in. An index is a socket's place in the group:
//! the order in which the sockets called `listen(2)`, as long as none of them closes (a
//! closing socket's place goes to the last one).
//!
//! The sticky program ([`sticky_program`]) instead reads the client's address from the IP
//! header (`SKF_NET_OFF`: the kernel runs a reuseport program with the packet's data past
//! the TCP header, and the network header behind it) and returns the socket of the place
//! with the highest rendezvous score ([`crate::rendezvous`]), as the primary's own sticky
//! policy computes it.
//!
//! # References
//! [`socket(7)`](https://man7.org/linux/man-pages/man7/socket.7.html) (`SO_ATTACH_REUSEPORT_CBPF`),
//! [`tcp(7)`](https://man7.org/linux/man-pages/man7/tcp.7.html) (`TCP_INFO`),
//! [`filter.txt`](https://www.kernel.org/doc/Documentation/networking/filter.txt)

use std::io;

use rustix::fd::{AsFd, AsRawFd};

use crate::rendezvous;

/// `SO_ATTACH_REUSEPORT_CBPF` (Linux 4.5; asm-generic value, as on x86, arm and riscv).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
/// Classic BPF limit (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;

// Classic BPF opcodes (linux/bpf_common.h): class | size | mode, class | op | source.
/// `BPF_LD | BPF_W | BPF_ABS`.
const LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JGE | BPF_K`.
const JMP_JGE_K: u16 = 0x35;
/// `BPF_RET | BPF_K`.
const RET_K: u16 = 0x06;
/// `SKF_AD_OFF + SKF_AD_RANDOM`: loading from there gives a random 32-bit number.
const RANDOM: u32 = (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32;
/// `SKF_NET_OFF`: loads from there on read the packet's network (IP) header.
const NET: u32 = libc::SKF_NET_OFF as u32;
/// `BPF_LD | BPF_B | BPF_ABS`.
const LD_B_ABS: u16 = 0x30;
/// `BPF_LD | BPF_IMM`.
const LD_IMM: u16 = 0x00;
/// `BPF_LD | BPF_MEM`: the scratch word `k`.
const LD_MEM: u16 = 0x60;
/// `BPF_LDX | BPF_MEM`.
const LDX_MEM: u16 = 0x61;
/// `BPF_ST`: the accumulator into the scratch word `k`.
const ST: u16 = 0x02;
/// `BPF_ALU | BPF_RSH | BPF_K`.
const RSH_K: u16 = 0x74;
/// `BPF_ALU | BPF_AND | BPF_K`.
const AND_K: u16 = 0x54;
/// `BPF_ALU | BPF_MUL | BPF_K`.
const MUL_K: u16 = 0x24;
/// `BPF_ALU | BPF_XOR | BPF_K`.
const XOR_K: u16 = 0xa4;
/// `BPF_ALU | BPF_XOR | BPF_X`.
const XOR_X: u16 = 0xac;
/// `BPF_MISC | BPF_TAX`: the accumulator into the index register.
const TAX: u16 = 0x07;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
const JMP_JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGT | BPF_X`: unsigned.
const JMP_JGT_X: u16 = 0x2d;
/// `BPF_JMP | BPF_JA`.
const JMP_JA: u16 = 0x05;
/// `BPF_RET | BPF_A`.
const RET_A: u16 = 0x16;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    /// Operation.
    pub code: u16,
    /// Jump offset when the condition holds.
    pub jt: u8,
    /// Jump offset when it does not.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

/// The program that sends a new connection to socket `i` of the group with probability
/// `weights[i] / sum`. Sockets of weight 0 get nothing.
///
/// # Errors
/// `EINVAL` when every weight is 0 or there are more sockets than a program can name.
pub fn program(weights: &[u32]) -> io::Result<Vec<Insn>> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let chosen: Vec<usize> = (0..weights.len()).filter(|&i| weights[i] > 0).collect();
    if total == 0 || 2 * chosen.len() > MAX_INSNS {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut prog = vec![Insn {
        code: LD_W_ABS,
        jt: 0,
        jf: 0,
        k: RANDOM,
    }];
    let mut below = 0u64;
    let (last, rest) = chosen.split_last().expect("a weight is not zero");
    for &i in rest {
        below += u64::from(weights[i]);
        // The upper end of socket i's slice of [0, 2^32): a draw under it (and above the
        // previous one's) picks socket i; otherwise skip its `ret`.
        let bound = ((below << 32) / total) as u32;
        prog.push(Insn {
            code: JMP_JGE_K,
            jt: 1,
            jf: 0,
            k: bound,
        });
        prog.push(Insn {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: i as u32,
        });
    }
    prog.push(Insn {
        code: RET_K,
        jt: 0,
        jf: 0,
        k: *last as u32,
    });
    Ok(prog)
}

/// An instruction.
const fn insn(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// The accumulator mixed as [`rendezvous::mix`] does (11 instructions; the index register
/// is overwritten).
fn mix_a(prog: &mut Vec<Insn>) {
    let xorshift = |prog: &mut Vec<Insn>, n: u32| {
        prog.extend([insn(TAX, 0), insn(RSH_K, n), insn(XOR_X, 0)]);
    };
    xorshift(prog, 16);
    prog.push(insn(MUL_K, rendezvous::MUL_1));
    xorshift(prog, 15);
    prog.push(insn(MUL_K, rendezvous::MUL_2));
    xorshift(prog, 16);
}

/// The sticky program: the socket at `places[i].1` gets the clients whose key
/// ([`rendezvous::key`] under `prefixes`, read from the IPv4 or IPv6 header) scores
/// highest with the seed `places[i].0` ([`rendezvous::score`]); equal scores go to the
/// earlier place, as in the primary's own policy, so list places in the policy's order.
///
/// # Errors
/// `EINVAL` without places, or with more than a program can hold (about 220).
pub fn sticky_program(
    places: &[(u32, u32)],
    prefixes: rendezvous::Prefixes,
) -> io::Result<Vec<Insn>> {
    let Some((first, rest)) = places.split_first() else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // Scratch words: the key, the best score, the best socket.
    const KEY: u32 = 0;
    const BEST: u32 = 1;
    const SOCKET: u32 = 2;
    let mut v4 = Vec::new();
    v4.extend([
        insn(LD_W_ABS, NET + 12),
        insn(AND_K, rendezvous::Prefixes::word_mask(prefixes.v4, 0)),
    ]);
    mix_a(&mut v4);
    v4.push(insn(ST, KEY));
    let mut v6 = Vec::new();
    for i in 0..4 {
        v6.extend([
            insn(LD_W_ABS, NET + 8 + 4 * i),
            insn(AND_K, rendezvous::Prefixes::word_mask(prefixes.v6, i)),
        ]);
        if i > 0 {
            v6.extend([insn(LDX_MEM, KEY), insn(XOR_X, 0)]);
        }
        mix_a(&mut v6);
        v6.push(insn(ST, KEY));
    }
    // The IP version, the high nibble of the header's first byte: 6, or IPv4.
    let mut prog = vec![
        insn(LD_B_ABS, NET),
        insn(RSH_K, 4),
        Insn {
            code: JMP_JEQ_K,
            jt: (v4.len() + 1) as u8,
            jf: 0,
            k: 6,
        },
    ];
    prog.extend(v4);
    prog.push(insn(JMP_JA, v6.len() as u32));
    prog.extend(v6);
    let score = |prog: &mut Vec<Insn>, seed: u32| {
        prog.extend([insn(LD_MEM, KEY), insn(XOR_K, seed)]);
        mix_a(prog);
    };
    score(&mut prog, first.0);
    prog.extend([insn(ST, BEST), insn(LD_IMM, first.1), insn(ST, SOCKET)]);
    for &(seed, socket) in rest {
        score(&mut prog, seed);
        // Higher than the best so far: the new best; else skip the three that say so.
        prog.extend([
            insn(LDX_MEM, BEST),
            Insn {
                code: JMP_JGT_X,
                jt: 0,
                jf: 3,
                k: 0,
            },
            insn(ST, BEST),
            insn(LD_IMM, socket),
            insn(ST, SOCKET),
        ]);
    }
    prog.extend([insn(LD_MEM, SOCKET), insn(RET_A, 0)]);
    if prog.len() > MAX_INSNS {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(prog)
}

/// `setsockopt(SO_ATTACH_REUSEPORT_CBPF)`: from now on the group `fd` belongs to (a
/// listening `SO_REUSEPORT` socket) places new connections by `weights` ([`program`]),
/// replacing the program it had. The kernel runs it for each connection's first packet.
///
/// # Errors
/// `EINVAL` for weights [`program`] refuses or a socket without `SO_REUSEPORT`; what
/// `setsockopt(2)` returns.
pub fn steer(fd: impl AsFd, weights: &[u32]) -> io::Result<()> {
    attach(fd, &program(weights)?)
}

/// [`steer`] with the sticky program ([`sticky_program`]): each client to its place's
/// socket.
///
/// # Errors
/// As [`steer`]'s, for places [`sticky_program`] refuses.
pub fn steer_sticky(
    fd: impl AsFd,
    places: &[(u32, u32)],
    prefixes: rendezvous::Prefixes,
) -> io::Result<()> {
    attach(fd, &sticky_program(places, prefixes)?)
}

/// Attaches `prog` to the group of `fd`.
fn attach(fd: impl AsFd, prog: &[Insn]) -> io::Result<()> {
    let filters: Vec<libc::sock_filter> = prog
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: filters.len() as libc::c_ushort,
        filter: filters.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `filters`, `len` instructions that live until the call
    // returns (the kernel copies them); the option length is that of `sock_fprog`, and the
    // fd is borrowed for the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&raw const fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Connections waiting in a listening TCP socket's accept queue (`TCP_INFO`'s
/// `tcpi_unacked`, which holds the accept queue's length on a listener).
///
/// # Errors
/// What `getsockopt(2)` returns; `EINVAL` when `fd` is not a listening TCP socket.
pub fn accept_queue(fd: impl AsFd) -> io::Result<u32> {
    // SAFETY: `tcp_info` is plain integers; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`, which is that large, and
    // stores the length it wrote in `len`; the fd is borrowed for the call.
    let r = unsafe {
        libc::getsockopt(
            fd.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &raw mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // TCP_LISTEN is state 10.
    if info.tcpi_state != 10 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(info.tcpi_unacked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::{self, Options};
    use rustix::fd::OwnedFd;

    /// `n` listening sockets in one group on a free port of 127.0.0.1, in group order.
    fn group(n: usize) -> (Vec<OwnedFd>, u16) {
        group_on(std::net::Ipv4Addr::LOCALHOST.into(), n)
    }

    /// `n` listening sockets in one group on a free port of `ip`, in group order.
    fn group_on(ip: std::net::IpAddr, n: usize) -> (Vec<OwnedFd>, u16) {
        let opts = Options {
            reuse_port: true,
            ..Options::default()
        };
        let first = listen::tcp(std::net::SocketAddr::new(ip, 0), &opts).expect("listen");
        let port = listen::local_addr(&first).expect("name").port();
        let mut socks = vec![first];
        for _ in 1..n {
            socks.push(listen::tcp(std::net::SocketAddr::new(ip, port), &opts).expect("listen"));
        }
        for s in &socks {
            crate::socket::set_nonblocking(s, true).expect("nonblocking");
        }
        (socks, port)
    }

    /// Connects `n` clients and returns them with how many each socket of the group got.
    fn spread(socks: &[OwnedFd], port: u16, n: usize) -> (Vec<std::net::TcpStream>, Vec<u32>) {
        let clients: Vec<_> = (0..n)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
            .collect();
        // A loopback connect returns once the handshake is done: the connection is queued.
        let counts = socks
            .iter()
            .map(|s| accept_queue(s).expect("queue"))
            .collect();
        (clients, counts)
    }

    #[test]
    fn the_program_splits_the_range_by_weight() {
        let p = program(&[1, 0, 3]).expect("program");
        // ld random; jge 1/4 of the range; ret 0; ret 2.
        assert_eq!(p.len(), 4);
        assert_eq!(p[1].k, 1 << 30);
        assert_eq!((p[2].k, p[3].k), (0, 2));
        assert_eq!(program(&[0, 5]).expect("program").len(), 2);
        assert!(program(&[0, 0]).is_err());
        assert!(program(&[]).is_err());
    }

    #[test]
    fn connections_go_where_the_weights_say() {
        let (socks, port) = group(3);
        steer(&socks[0], &[0, 1, 0]).expect("steer");
        let (_c, counts) = spread(&socks, port, 20);
        assert_eq!(counts, vec![0, 20, 0]);
        // A new program replaces the old one; attached through any member.
        steer(&socks[2], &[1, 0, 1]).expect("steer");
        let (_d, counts) = spread(&socks, port, 200);
        assert_eq!(counts[1], 20, "nothing more for the socket of weight 0");
        assert_eq!(counts[0] + counts[2], 200);
        // Random with equal weights: each gets some (the chance that one gets none is 2^-199).
        assert!(counts[0] > 0 && counts[2] > 0, "{counts:?}");
        let got = listen::accept(&socks[1], false);
        assert!(got.is_ok());
        assert_eq!(accept_queue(&socks[1]).expect("queue"), 19);
    }

    /// Where each client (by its address) landed: accepts everything queued in the group.
    fn landed(socks: &[OwnedFd]) -> Vec<(std::net::IpAddr, usize)> {
        let mut got = Vec::new();
        for (i, s) in socks.iter().enumerate() {
            while let Ok(c) = listen::accept(s, false) {
                let peer = rustix::net::getpeername(&c)
                    .ok()
                    .flatten()
                    .and_then(|a| std::net::SocketAddr::try_from(a).ok())
                    .expect("an IP peer");
                got.push((peer.ip(), i));
            }
        }
        got
    }

    /// A client from `ip`, bound there before it connects.
    fn connect_from(ip: std::net::IpAddr, to: std::net::SocketAddr) -> std::net::TcpStream {
        let domain = if ip.is_ipv4() {
            rustix::net::AddressFamily::INET
        } else {
            rustix::net::AddressFamily::INET6
        };
        let fd =
            rustix::net::socket(domain, rustix::net::SocketType::STREAM, None).expect("socket");
        rustix::net::bind(&fd, &std::net::SocketAddr::new(ip, 0)).expect("bind");
        rustix::net::connect(&fd, &to).expect("connect");
        std::net::TcpStream::from(fd)
    }

    #[test]
    fn the_sticky_program_places_each_client_where_the_policy_would() {
        let (socks, port) = group(4);
        let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        // Places 1 to 4 on sockets 3, 2, 1, 0, then place 2 gone (its clients move).
        for places in [vec![1u32, 2, 3, 4], vec![1, 3, 4]] {
            for prefixes in [
                rendezvous::Prefixes::default(),
                rendezvous::Prefixes { v4: 24, v6: 64 },
            ] {
                let table: Vec<(u32, u32)> = places
                    .iter()
                    .map(|&p| (rendezvous::seed(p), 4 - p))
                    .collect();
                steer_sticky(&socks[0], &table, prefixes).expect("attach");
                let clients: Vec<_> = (1..=100u8)
                    .map(|i| connect_from(std::net::IpAddr::from([127, 0, 2, i]), to))
                    .collect();
                let got = landed(&socks);
                assert_eq!(got.len(), clients.len());
                for (ip, socket) in got {
                    let key = rendezvous::key(ip, prefixes);
                    let best = places
                        .iter()
                        .copied()
                        .max_by_key(|&p| {
                            (
                                rendezvous::score(key, rendezvous::seed(p)),
                                std::cmp::Reverse(p),
                            )
                        })
                        .expect("a place");
                    assert_eq!(socket as u32, 4 - best, "{ip} under {prefixes:?}");
                }
            }
        }
        let n =
            sticky_program(&[(1, 0); 200], rendezvous::Prefixes::default()).expect("200 places");
        assert!(n.len() <= MAX_INSNS);
        assert!(sticky_program(&[], rendezvous::Prefixes::default()).is_err());
    }

    #[test]
    fn the_sticky_program_reads_ipv6_headers_too() {
        let ip = std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST);
        let (socks, port) = group_on(ip, 4);
        let to = std::net::SocketAddr::new(ip, port);
        // Several place tables, so that ::1 lands on different sockets.
        for shift in 0..8u32 {
            let places: Vec<u32> = (1..=4).map(|p| p + 4 * shift).collect();
            let table: Vec<(u32, u32)> = places
                .iter()
                .enumerate()
                .map(|(i, &p)| (rendezvous::seed(p), i as u32))
                .collect();
            steer_sticky(&socks[0], &table, rendezvous::Prefixes::default()).expect("attach");
            let _c = connect_from(ip, to);
            let key = rendezvous::key(ip, rendezvous::Prefixes::default());
            let best = (0..4)
                .max_by_key(|&i| (rendezvous::score(key, table[i].0), std::cmp::Reverse(i)))
                .expect("a place");
            assert_eq!(landed(&socks), [(ip, best)], "places {places:?}");
        }
    }

    #[test]
    fn the_queue_depth_needs_a_listening_tcp_socket() {
        let (a, _b) = crate::socket::stream_pair().expect("pair");
        assert!(accept_queue(&a).is_err());
        let opts = Options::default();
        let bound =
            listen::reserve_tcp("127.0.0.1:0".parse().expect("addr"), &opts).expect("bound socket");
        assert_eq!(
            accept_queue(&bound).err().and_then(|e| e.raw_os_error()),
            Some(libc::EINVAL)
        );
    }
}
