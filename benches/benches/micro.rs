//! Micro-benchmarks of the pieces the primary runs per connection or per message: the frame
//! codec, fd hand-off over a socketpair (1, 16 and 64 fds per `sendmsg`), reading the load
//! board and a policy's pick (4 and 64 workers), and the hints ring.
//!
//! ```text
//! cargo bench -p ringleader-benches --bench micro
//! ```

use std::hint::black_box;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringleader::internals::BenchBoard;
use ringleader::internals::frame::{self, Kind};
use ringleader::policy::{
    Addresses, Candidate, LeastConnections, Policy, PowerOfTwoChoices, RoundRobin, Sticky, Weighted,
};
use ringleader_sys::scm::{self, Blocking};

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    for size in [64usize, 64 * 1024] {
        let payload = vec![7u8; size];
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("encode", size), &payload, |b, p| {
            let mut out = Vec::with_capacity(size + frame::HEADER_LEN);
            b.iter(|| {
                out.clear();
                out.extend_from_slice(&frame::encode_header(Kind::User, 0, p.len()));
                out.extend_from_slice(p);
                black_box(&out);
            });
        });
        // A buffer of 16 frames back to back, decoded in one call.
        let mut stream = Vec::new();
        for _ in 0..16 {
            stream.extend_from_slice(&frame::encode_header(Kind::User, 0, size));
            stream.extend_from_slice(&payload);
        }
        g.throughput(Throughput::Elements(16));
        g.bench_with_input(BenchmarkId::new("decode_16", size), &stream, |b, s| {
            b.iter(|| black_box(frame::decode_all(black_box(s)).frames.len()));
        });
    }
    g.finish();
}

/// `sendmsg` of n fds (one byte each, as the hand-off sends them) and the `recvmsg` that takes
/// them, over one socketpair; the received fds are closed each round, as a worker would.
fn fd_handoff(c: &mut Criterion) {
    let (a, b) = ringleader_sys::socket::stream_pair().expect("socketpair");
    let sockets: Vec<OwnedFd> = (0..64)
        .map(|_| ringleader_sys::socket::stream_pair().expect("pair").0)
        .collect();
    let mut g = c.benchmark_group("fd_handoff");
    for n in [1usize, 16, 64] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |bench| {
            let fds: Vec<BorrowedFd<'_>> = sockets[..n].iter().map(AsFd::as_fd).collect();
            let bytes = [b'c'; 64];
            let mut buf = [0u8; 64];
            let mut got = Vec::with_capacity(64);
            bench.iter(|| {
                scm::send(&a, &[IoSlice::new(&bytes[..n])], &fds, Blocking::Yes).expect("send");
                let mut read = 0;
                while read < n {
                    read += scm::recv(&b, &mut buf, &mut got, Blocking::Yes).expect("recv");
                }
                got.clear();
            });
        });
    }
    g.finish();
}

fn board(c: &mut Criterion) {
    let mut g = c.benchmark_group("board");
    for workers in [4usize, 64] {
        let board = BenchBoard::new(workers);
        g.bench_function(BenchmarkId::new("read_all", workers), |b| {
            b.iter(|| black_box(board.read_all()));
        });
        let candidates: Vec<Candidate> = (0..workers)
            .map(|i| Candidate::new(i as u32 + 1, (i % 3) as u64, (i % 7) as u64, 0, None))
            .collect();
        let policies: [(&str, Box<dyn Policy>); 4] = [
            ("round_robin", Box::new(RoundRobin::default())),
            ("least_connections", Box::new(LeastConnections::default())),
            ("p2c", Box::new(PowerOfTwoChoices::seeded(1))),
            ("weighted", Box::new(Weighted::default())),
        ];
        for (name, mut policy) in policies {
            g.bench_function(BenchmarkId::new(format!("pick_{name}"), workers), |b| {
                b.iter(|| black_box(policy.pick(black_box(&candidates))));
            });
        }
        // A client's address hashed against every place.
        let mut sticky = Sticky::new();
        let client = Addresses::new(Some("192.0.2.7:40000".parse().expect("an address")), None);
        g.bench_function(BenchmarkId::new("pick_sticky", workers), |b| {
            b.iter(|| black_box(sticky.pick_for(black_box(&client), black_box(&candidates))));
        });
    }
    let board = BenchBoard::new(1);
    g.bench_function("hint_push_pop", |b| {
        b.iter(|| black_box(board.hint_round_trip()))
    });
    g.finish();
}

criterion_group!(benches, frames, fd_handoff, board);
criterion_main!(benches);
