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
//! # References
//! [`socket(7)`](https://man7.org/linux/man-pages/man7/socket.7.html) (`SO_ATTACH_REUSEPORT_CBPF`),
//! [`tcp(7)`](https://man7.org/linux/man-pages/man7/tcp.7.html) (`TCP_INFO`),
//! [`filter.txt`](https://www.kernel.org/doc/Documentation/networking/filter.txt)

use std::io;

use rustix::fd::{AsFd, AsRawFd};

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

/// `setsockopt(SO_ATTACH_REUSEPORT_CBPF)`: from now on the group `fd` belongs to (a
/// listening `SO_REUSEPORT` socket) places new connections by `weights` ([`program`]),
/// replacing the program it had. The kernel runs it for each connection's first packet.
///
/// # Errors
/// `EINVAL` for weights [`program`] refuses or a socket without `SO_REUSEPORT`; what
/// `setsockopt(2)` returns.
pub fn steer(fd: impl AsFd, weights: &[u32]) -> io::Result<()> {
    let prog = program(weights)?;
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

    /// `n` listening sockets in one group on a free loopback port, in group order.
    fn group(n: usize) -> (Vec<OwnedFd>, u16) {
        let opts = Options {
            reuse_port: true,
            ..Options::default()
        };
        let first = listen::tcp("127.0.0.1:0".parse().expect("addr"), &opts).expect("listen");
        let port = listen::local_addr(&first).expect("name").port();
        let mut socks = vec![first];
        for _ in 1..n {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            socks.push(listen::tcp(addr, &opts).expect("listen"));
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
