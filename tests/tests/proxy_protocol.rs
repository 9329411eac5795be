//! The PROXY protocol ([`ProxyProtocol`]): every client below connects from 127.0.0.1 and
//! claims another address in its header, v1 or v2. Under the sticky policy each claimed
//! client stays on one worker and the clients spread over all four, so the key is the
//! header's address; the worker's `accept` gives that address. Headers that are malformed,
//! too long, cut short or late are refused, and nothing else is; one sent in pieces is read
//! whole. Node workers get the connection without the header.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ringleader::policy::SharedPolicy;
use ringleader::{ProxyProtocol, Settings, WorkerProtocol};
use ringleader_tests::{Harness, WATCHDOG, free_port};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");
const APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/node/app.js");

/// How long a header may take here.
const WITHIN: Duration = Duration::from_millis(300);

/// A v1 header from `from` to 127.0.0.1:`port`.
fn v1(from: SocketAddr, port: u16) -> Vec<u8> {
    let family = if from.is_ipv4() { "TCP4" } else { "TCP6" };
    let to = if from.is_ipv4() { "127.0.0.1" } else { "::1" };
    format!(
        "PROXY {family} {} {to} {} {port}\r\n",
        from.ip(),
        from.port()
    )
    .into_bytes()
}

/// A v2 `PROXY` header from `from` (IPv4) to 127.0.0.1:`port`, with a no-op TLV.
fn v2(from: SocketAddr, port: u16) -> Vec<u8> {
    let SocketAddr::V4(from) = from else {
        panic!("IPv4 only here")
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x21, 0x11, 0, 16]);
    h.extend(from.ip().octets());
    h.extend([127, 0, 0, 1]);
    h.extend(from.port().to_be_bytes());
    h.extend(port.to_be_bytes());
    h.extend([0x04, 0, 1, 0]);
    h
}

/// A v2 `LOCAL` header (a proxy's own connection: a health check).
fn v2_local() -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x20, 0x00, 0, 0]);
    h
}

/// Connects to 127.0.0.1:`port`, writes `pieces` with `gap` between them, and reads to the
/// end: what came back (empty when the connection was closed unanswered).
fn exchange(port: u16, pieces: &[&[u8]], gap: Duration) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(WATCHDOG))
        .map_err(|e| e.to_string())?;
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(gap);
        }
        // A refused connection may be closed before the last piece: not this test's error.
        if s.write_all(piece).is_err() {
            break;
        }
    }
    let mut out = String::new();
    match s.read_to_string(&mut out) {
        Ok(_) => Ok(out),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(out),
        Err(e) => Err(format!("read: {e}")),
    }
}

/// Four fixture workers answering with the peer `accept` gave, the PROXY protocol on their
/// port, under `policy`.
fn cluster(policy: &str) -> (Harness, u16) {
    let h = Harness::new(FIXTURE);
    let port = free_port();
    h.primary
        .setup(
            Settings::default()
                .policy(SharedPolicy::named(policy).expect("a built-in policy"))
                .proxy_protocol(Some(ProxyProtocol::on_ports([port]).within(WITHIN))),
        )
        .expect("setup");
    for _ in 0..4 {
        h.fork(&format!("serve-peer:127.0.0.1:{port}"));
    }
    h.listening(4);
    (h, port)
}

/// `hello from N peer ADDR to ADDR|-`: N, ADDR and the destination.
fn answer_of(line: &str) -> Option<(u32, String, String)> {
    let rest = line.trim().strip_prefix("hello from ")?;
    let (id, rest) = rest.split_once(" peer ")?;
    let (peer, to) = rest.split_once(" to ")?;
    Some((id.parse().ok()?, peer.to_owned(), to.to_owned()))
}

#[test]
fn under_sticky_the_key_is_the_headers_client_and_the_worker_is_told_it() {
    let (h, port) = cluster("sticky");
    let owners = h.drive(move || {
        let mut owners: BTreeMap<SocketAddr, u32> = BTreeMap::new();
        for round in 0..3 {
            for i in 1..=200u16 {
                // Half IPv4 (v1 and v2 in turns), half IPv6 (v1).
                let from: SocketAddr = if i % 2 == 0 {
                    SocketAddr::from(([203, 0, 113, (i / 2) as u8], 40000 + round))
                } else {
                    format!("[2001:db8::{i:x}]:{}", 40000 + round)
                        .parse()
                        .expect("addr")
                };
                let header = match (from.is_ipv4(), (i / 2 + round) % 2) {
                    (true, 0) => v2(from, port),
                    _ => v1(from, port),
                };
                let got = exchange(port, &[&header], Duration::ZERO).expect("exchange");
                let (id, peer, to) =
                    answer_of(&got).unwrap_or_else(|| panic!("{from}: answer {got:?}"));
                assert_eq!(peer, from.to_string(), "accept gives the header's client");
                let dest = if from.is_ipv4() { "127.0.0.1" } else { "[::1]" };
                assert_eq!(to, format!("{dest}:{port}"));
                // The key is the address, not the port: the same client every round.
                let mut key = from;
                key.set_port(0);
                let first = *owners.entry(key).or_insert(id);
                assert_eq!(id, first, "{from} moved in round {round}");
            }
        }
        owners
    });
    let mut shares: BTreeMap<u32, usize> = BTreeMap::new();
    for id in owners.values() {
        *shares.entry(*id).or_default() += 1;
    }
    // Every connection came from 127.0.0.1: keyed on the socket's address, one worker would
    // have had them all.
    assert_eq!(shares.len(), 4, "clients per worker: {shares:?}");
    let stats = h.primary.handoff_stats();
    assert_eq!(stats.proxy_headers_read, 600);
    assert_eq!(stats.proxy_headers_refused, 0);
}

#[test]
fn bad_cut_and_late_headers_are_refused_and_good_ones_in_pieces_are_read() {
    let (h, port) = cluster("rr");
    let from = SocketAddr::from(([198, 51, 100, 7], 5555));
    let results = h.drive(move || {
        let whole = v1(from, port);
        let long = {
            let mut l = b"PROXY TCP4 ".to_vec();
            l.resize(300, b'1');
            l
        };
        let v2h = v2(from, port);
        let mut v2_then_request = v2h.clone();
        v2_then_request.extend(b"GET / HTTP/1.1\r\n\r\n");
        vec![
            // No header at all: an HTTP request.
            (
                "no header",
                exchange(port, &[b"GET / HTTP/1.1\r\n\r\n"], Duration::ZERO),
            ),
            ("too long", exchange(port, &[&long], Duration::ZERO)),
            (
                "bad field",
                exchange(
                    port,
                    &[b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n"],
                    Duration::ZERO,
                ),
            ),
            // Half a header, then nothing until the deadline.
            ("late", exchange(port, &[&whole[..10]], Duration::ZERO)),
            // A header in three pieces, 50 ms apart, well within the deadline.
            (
                "pieces",
                exchange(
                    port,
                    &[&whole[..7], &whole[7..20], &whole[20..]],
                    Duration::from_millis(50),
                ),
            ),
            // v2 byte by byte would take long: in two pieces, the cut inside the addresses.
            (
                "v2 pieces",
                exchange(port, &[&v2h[..20], &v2h[20..]], Duration::from_millis(50)),
            ),
            // The client's bytes after the header stay for the worker (it answers at once
            // and does not read them; the connection still works).
            (
                "v2 and data",
                exchange(port, &[&v2_then_request], Duration::ZERO),
            ),
            ("local", exchange(port, &[&v2_local()], Duration::ZERO)),
        ]
    });
    let by: BTreeMap<&str, String> = results
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_else(|e| panic!("{k}: {e}"))))
        .collect();
    for refused in ["no header", "too long", "bad field", "late"] {
        assert_eq!(by[refused], "", "{refused}: closed unanswered");
    }
    for read in ["pieces", "v2 pieces", "v2 and data"] {
        let (_, peer, _) = answer_of(&by[read]).unwrap_or_else(|| panic!("{read}: {by:?}"));
        assert_eq!(peer, from.to_string(), "{read}");
    }
    // A proxy's own connection: its own address, no destination.
    let (_, peer, to) = answer_of(&by["local"]).unwrap_or_else(|| panic!("{by:?}"));
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
    assert_eq!(to, "-");
    let stats = h.primary.handoff_stats();
    assert_eq!(stats.proxy_headers_refused, 4, "{stats:?}");
    assert_eq!(stats.proxy_headers_read, 4, "{stats:?}");
    // The cluster serves on.
    let after = h.drive(move || exchange(port, &[&v1(from, port)], Duration::ZERO));
    assert!(answer_of(&after.expect("an answer")).is_some());
}

#[test]
fn a_listen_under_a_scheduling_where_workers_accept_themselves_is_refused_at_setup() {
    let h = Harness::new(FIXTURE);
    let e = h
        .primary
        .setup(
            Settings::default()
                .scheduling(ringleader::Scheduling::Shared)
                .proxy_protocol(Some(ProxyProtocol::on_ports([8080]))),
        )
        .expect_err("refused");
    assert_eq!(e.kind(), ringleader::ErrorKind::Settings);
    assert!(e.to_string().contains("round-robin"), "{e}");
}

#[test]
fn node_workers_get_the_connection_without_the_header() {
    let h = Harness::new(FIXTURE);
    let port = free_port();
    h.primary
        .setup(
            Settings::default()
                .exec("node")
                .args([APP])
                .worker_protocol(WorkerProtocol::Node)
                .proxy_protocol(Some(ProxyProtocol::on_ports([port]))),
        )
        .expect("setup");
    let port_s = port.to_string();
    for _ in 0..2 {
        h.primary.fork(&[("PORT", &port_s)]).expect("fork");
    }
    h.listening(2);
    let from = SocketAddr::from(([192, 0, 2, 1], 1234));
    let answers = h.drive(move || {
        (0..10)
            .map(|i| {
                let mut req = if i % 2 == 0 {
                    v1(from, port)
                } else {
                    v2(from, port)
                };
                req.extend(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
                exchange(port, &[&req], Duration::ZERO)
            })
            .collect::<Vec<_>>()
    });
    for a in answers {
        let a = a.expect("an answer");
        assert!(a.starts_with("HTTP/1.1 200 OK"), "{a:?}");
        assert!(a.contains("hello from "), "{a:?}");
    }
}
