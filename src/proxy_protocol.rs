//! HAProxy's PROXY protocol, versions 1 (text) and 2 (binary): the header a load balancer
//! writes at the start of a connection to say whom it carries.
//!
//! On a listener that expects it ([`crate::ProxyProtocol`]) the primary peeks at each
//! accepted connection until the whole header waits in the socket, and refuses the
//! connection (closes it) when the header is malformed, longer than [`MAX_HEADER`], cut
//! short by the client, or not complete by the deadline. A complete header's source address
//! is the connection's client for the policy (the key of [`crate::policy::Sticky`]). The
//! header stays in the socket until the connection reaches its worker: a ringleader worker's
//! listener reads it off in `accept` and gives its addresses ([`Proxied`]); the primary
//! reads it off itself before it relays a connection to a Node worker, which sees the
//! client's bytes only. So the hand-off message stays one byte per connection, which is
//! what the primary counts a worker's queue by (`FIONREAD`), and nothing but the fd travels.
//!
//! The parsing is the `ppp` crate's; this module adds the limits, the socket calls, and the
//! reading of the addresses.

use std::io;
use std::net::{IpAddr, SocketAddr};

use ppp::{HeaderResult, v1, v2};
use ringleader_sys::{AsFd, socket};

/// The longest header accepted: a version 1 header is at most 107 bytes; a version 2 header
/// 16 plus its addresses and TLVs, which HAProxy keeps to a few hundred bytes.
pub(crate) const MAX_HEADER: usize = 4096;

/// Where a connection that came through a proxy really came from, as its PROXY header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Proxied {
    /// The client's address, as the proxy saw it.
    pub source: SocketAddr,
    /// The address the client connected to, on the proxy.
    pub destination: SocketAddr,
}

/// What the start of a connection holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// A whole header of `len` bytes, and the addresses it carries: `None` for a proxy's
    /// own connection (a v2 `LOCAL` command, a health check) or a v1 `UNKNOWN` one, whose
    /// addresses are the socket's.
    Complete {
        len: usize,
        proxied: Option<Proxied>,
    },
    /// The start of a header: more bytes must come.
    Incomplete,
    /// Not a header, or not one this reads: why.
    Malformed(&'static str),
}

/// The start of every version 2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The start of every version 1 header.
const V1_PREFIX: &[u8; 6] = b"PROXY ";

/// The longest version 1 header, its `\r\n` included.
const V1_MAX: usize = 107;

/// Reads the header at the start of `bytes`.
///
/// Where a header ends is found here (a version 1 line's `\r\n`, a version 2 header's
/// length field); `ppp` then reads that much and no more, and any complaint of its is a
/// malformed header. Its own guesses at incompleteness are not relied on: it takes a line
/// cut after a space for a bad one, and a whole line that lacks a field for a cut one.
pub(crate) fn parse(bytes: &[u8]) -> Header {
    let is_start_of = |whole: &[u8]| {
        let n = bytes.len().min(whole.len());
        bytes[..n] == whole[..n]
    };
    let len = if is_start_of(V2_SIGNATURE) {
        if bytes.get(12).is_some_and(|b| b >> 4 != 2) {
            return Header::Malformed("a PROXY protocol header of a version other than 1 and 2");
        }
        let Some(field) = bytes.get(14..16) else {
            return Header::Incomplete;
        };
        16 + usize::from(u16::from_be_bytes([field[0], field[1]]))
    } else if is_start_of(V1_PREFIX) {
        match bytes.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") {
            Some(at) => at + 2,
            None if bytes.len() >= V1_MAX => {
                return Header::Malformed("a PROXY protocol v1 line longer than 107 bytes");
            }
            None => return Header::Incomplete,
        }
    } else {
        return Header::Malformed("not a PROXY protocol header");
    };
    if len > MAX_HEADER {
        return Header::Malformed("a PROXY protocol v2 header longer than 4096 bytes");
    }
    let Some(header) = bytes.get(..len) else {
        return Header::Incomplete;
    };
    match HeaderResult::parse(header) {
        HeaderResult::V1(Ok(h)) if h.header.len() == len => Header::Complete {
            len,
            proxied: match h.addresses {
                v1::Addresses::Tcp4(a) => Some(between(
                    a.source_address,
                    a.source_port,
                    a.destination_address,
                    a.destination_port,
                )),
                v1::Addresses::Tcp6(a) => Some(between(
                    a.source_address,
                    a.source_port,
                    a.destination_address,
                    a.destination_port,
                )),
                v1::Addresses::Unknown => None,
            },
        },
        HeaderResult::V2(Ok(h)) if h.len() == len => Header::Complete {
            len,
            proxied: match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => Some(between(
                    a.source_address,
                    a.source_port,
                    a.destination_address,
                    a.destination_port,
                )),
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => Some(between(
                    a.source_address,
                    a.source_port,
                    a.destination_address,
                    a.destination_port,
                )),
                // A Unix socket's or no address: the connection's own stand.
                (v2::Command::Proxy, _) => None,
            },
        },
        HeaderResult::V1(_) => Header::Malformed("a malformed PROXY protocol v1 line"),
        HeaderResult::V2(_) => Header::Malformed("a malformed PROXY protocol v2 header"),
    }
}

/// The addresses of a header's address block.
fn between(source: impl Into<IpAddr>, sport: u16, dest: impl Into<IpAddr>, dport: u16) -> Proxied {
    Proxied {
        source: SocketAddr::new(source.into(), sport),
        destination: SocketAddr::new(dest.into(), dport),
    }
}

/// Looks at what waits on the connection `fd` without taking it: the header, and how many
/// bytes were seen (`0`: end of file, nothing left).
///
/// # Errors
/// `WouldBlock` when nothing waits; what `recv(2)` returns.
pub(crate) fn peek(fd: impl AsFd) -> io::Result<(Header, usize)> {
    let mut buf = [0u8; MAX_HEADER];
    let n = socket::peek(fd, &mut buf)?;
    Ok((parse(&buf[..n]), n))
}

/// Reads the header off the connection `fd`, where the whole of it waits (the primary saw
/// it there): the addresses it carries.
///
/// # Errors
/// `InvalidData` when no whole header waits; what `recv(2)` returns.
pub(crate) fn strip(fd: impl AsFd) -> io::Result<Option<Proxied>> {
    let fd = fd.as_fd();
    match peek(fd)? {
        (Header::Complete { len, proxied }, _) => {
            let mut header = [0u8; MAX_HEADER];
            socket::read_waiting(fd, &mut header[..len])?;
            Ok(proxied)
        }
        (Header::Incomplete, _) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no whole PROXY protocol header waits on the connection",
        )),
        (Header::Malformed(why), _) => Err(io::Error::new(io::ErrorKind::InvalidData, why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 `PROXY` header over TCP/IPv4 from `src`:`sport` to `dst`:`dport`, with `tlv`.
    fn v2_ipv4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, tlv: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend([0x21, 0x11]);
        h.extend(u16::try_from(12 + tlv.len()).expect("short").to_be_bytes());
        h.extend(src);
        h.extend(dst);
        h.extend(sport.to_be_bytes());
        h.extend(dport.to_be_bytes());
        h.extend(tlv);
        h
    }

    #[test]
    fn a_v1_header_gives_its_length_and_addresses_and_leaves_the_rest() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 443\r\n";
        let mut bytes = line.to_vec();
        bytes.extend(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            parse(&bytes),
            Header::Complete {
                len: line.len(),
                proxied: Some(Proxied {
                    source: "192.0.2.7:40001".parse().expect("addr"),
                    destination: "198.51.100.1:443".parse().expect("addr"),
                }),
            }
        );
        let v6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 40001 443\r\n";
        assert!(matches!(
            parse(v6),
            Header::Complete { len, proxied: Some(p) }
                if len == v6.len() && p.source == "[2001:db8::7]:40001".parse().expect("addr")
        ));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Header::Complete {
                len: 15,
                proxied: None
            }
        );
    }

    #[test]
    fn a_v2_header_gives_its_length_and_addresses_and_a_local_one_none() {
        let h = v2_ipv4([10, 0, 0, 9], 5555, [10, 0, 0, 1], 80, &[0x04, 0, 1, 0]);
        let mut bytes = h.clone();
        bytes.extend(b"payload");
        assert_eq!(
            parse(&bytes),
            Header::Complete {
                len: h.len(),
                proxied: Some(Proxied {
                    source: "10.0.0.9:5555".parse().expect("addr"),
                    destination: "10.0.0.1:80".parse().expect("addr"),
                }),
            }
        );
        let mut local = V2_SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert_eq!(
            parse(&local),
            Header::Complete {
                len: 16,
                proxied: None
            }
        );
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 443\r\n".to_vec();
        let v2 = v2_ipv4([10, 0, 0, 9], 5555, [10, 0, 0, 1], 80, &[]);
        for h in [v1, v2] {
            for cut in 0..h.len() {
                assert_eq!(parse(&h[..cut]), Header::Incomplete, "{cut} of {h:?}");
            }
        }
    }

    #[test]
    fn what_is_no_header_or_too_long_is_malformed() {
        for bytes in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"PROXY TCP4 nonsense\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 70000 443\r\n",
            b"\r\n\r\n\0\r\nQUIT\n\x99\x11\x00\x0c",
        ] {
            assert!(
                matches!(parse(bytes), Header::Malformed(_)),
                "{:?}: {:?}",
                String::from_utf8_lossy(bytes),
                parse(bytes)
            );
        }
        // A v1 line without its end, past the 107 bytes a v1 line may take.
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(200, b'1');
        assert!(matches!(parse(&long), Header::Malformed(_)));
        // A v2 header that announces more than the limit.
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend([0x21, 0x11, 0xff, 0xff]);
        huge.resize(MAX_HEADER, 0);
        assert!(matches!(parse(&huge), Header::Malformed(_)));
    }
}
