//! ringleader's side of the Node baseline harness (`bench.py`, kept with the project's reference
//! material outside this repository): the same contract as its `cluster-server.js`, so both run
//! under one harness.
//!
//! ```text
//! cluster_server --mode http|tcp --workers N --port P --kill-every MS [--proxy-protocol]
//! ```
//! `tcp` writes `hello\n` and closes; `http` answers hello world with keep-alive. `--workers 0`
//! serves in one process. The policy comes from `RINGLEADER_SCHED_POLICY`, else
//! `NODE_CLUSTER_SCHED_POLICY` (which the harness sets). Prints `READY {"primary": pid}` once
//! every worker listens; on SIGTERM prints `COUNTS {"workers": [{pid, conns, reqs}], "kills",
//! "respawns"}` and exits. With `--kill-every MS` > 0 a live worker is SIGKILLed every MS ms and
//! replaced when it exits.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ringleader::{Event, Primary, ProxyProtocol, Role, Scheduling, Settings, Signal};
use serde_json::json;

/// ringleader's side of the Node baseline harness.
#[derive(clap::Parser, Debug)]
struct Args {
    /// `tcp` writes `hello` and closes; `http` answers hello world with keep-alive.
    #[arg(long, default_value = "tcp")]
    mode: String,
    /// Workers; 0 serves in one process.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// SIGKILL a live worker every this many milliseconds (0: never).
    #[arg(long, default_value_t = 0)]
    kill_every: u64,
    /// Each connection starts with a PROXY protocol header, which the primary reads
    /// (round-robin hand-off only).
    #[arg(long)]
    proxy_protocol: bool,
}

#[derive(Default)]
struct Counts {
    conns: AtomicU64,
    reqs: AtomicU64,
}

fn main() {
    // Workers are this program again, with the same arguments.
    let args = <Args as clap::Parser>::parse();
    let (http, port, workers, kill_every) = (
        args.mode == "http",
        args.port,
        args.workers,
        args.kill_every,
    );
    let proxy = args.proxy_protocol.then(|| ProxyProtocol::on_ports([port]));
    match ringleader::role().expect("role") {
        Role::Worker(worker) => {
            let counts = Arc::new(Counts::default());
            // Answer the primary's request for counts while the main thread serves.
            let (w, c) = (worker.clone(), counts.clone());
            std::thread::spawn(move || {
                while let Ok(Some(_)) = w.recv() {
                    let report = json!({
                        "pid": std::process::id(),
                        "conns": c.conns.load(Ordering::Relaxed),
                        "reqs": c.reqs.load(Ordering::Relaxed),
                    });
                    let _ = w.send_json(&report);
                }
            });
            let listener = worker.listen_tcp(("127.0.0.1", port)).expect("listen");
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                serve(stream, http, &counts);
            }
        }
        Role::Primary(primary) if workers == 0 => single(port, http, &primary),
        Role::Primary(primary) => cluster(&primary, workers, kill_every, proxy),
    }
}

fn serve<S: Read + Write + Send + 'static>(stream: S, http: bool, counts: &Arc<Counts>) {
    counts.conns.fetch_add(1, Ordering::Relaxed);
    if !http {
        let mut stream = stream;
        let _ = stream.write_all(b"hello\n");
        counts.reqs.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let counts = counts.clone();
    std::thread::spawn(move || {
        let _ = http_connection(stream, &counts);
    });
}

/// HTTP/1.1 keep-alive: every request gets `hello world`.
fn http_connection(mut stream: impl Read + Write, counts: &Counts) -> std::io::Result<()> {
    let mut buf = vec![0u8; 8192];
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        while let Some(end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = &buf[..end];
            let close = head
                .split(|b| *b == b'\n')
                .any(|l| l.to_ascii_lowercase().starts_with(b"connection: close"));
            let reply: &[u8] = if close {
                b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\nconnection: close\r\n\r\nhello world\n"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\nhello world\n"
            };
            stream.write_all(reply)?;
            counts.reqs.fetch_add(1, Ordering::Relaxed);
            if close {
                return Ok(());
            }
            buf.copy_within(end + 4..filled, 0);
            filled -= end + 4;
        }
    }
}

fn single(port: u16, http: bool, _primary: &Primary) {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let counts = Arc::new(Counts::default());
    println!(
        "READY {}",
        json!({ "primary": std::process::id(), "workers": [] })
    );
    let c = counts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            serve(stream, http, &c);
        }
    });
    let signals = Primary::new().expect("loop");
    signals
        .watch_signals(&[Signal::TERM, Signal::INT])
        .expect("signals");
    while let Ok(Some(e)) = signals.next_event(None) {
        if matches!(e, Event::Signal(_)) {
            break;
        }
    }
    let report = json!({ "pid": std::process::id(), "conns": counts.conns.load(Ordering::Relaxed), "reqs": counts.reqs.load(Ordering::Relaxed) });
    println!(
        "COUNTS {}",
        json!({ "workers": [report], "kills": 0, "respawns": 0 })
    );
}

fn cluster(primary: &Primary, workers: usize, kill_every: u64, proxy: Option<ProxyProtocol>) {
    if std::env::var_os(ringleader::ENV_SCHED_POLICY).is_none() {
        let policy = std::env::var("NODE_CLUSTER_SCHED_POLICY").ok();
        if let Some(s) = policy.as_deref().and_then(Scheduling::parse) {
            primary
                .setup(Settings::default().scheduling(s))
                .expect("setup");
        }
    }
    primary
        .setup(Settings::default().proxy_protocol(proxy))
        .expect("setup");
    primary
        .watch_signals(&[Signal::TERM, Signal::INT])
        .expect("signals");
    for _ in 0..workers {
        primary.fork(&[]).expect("fork");
    }
    let (mut listening, mut kills, mut respawns) = (0, 0u64, 0u64);
    let mut next_kill: Option<Instant> = None;
    let mut victim = 0usize;
    loop {
        let timeout = next_kill.map(|t| t.saturating_duration_since(Instant::now()));
        match primary.next_event(timeout).expect("event") {
            Some(Event::Listening { .. }) => {
                listening += 1;
                if listening == workers {
                    println!(
                        "READY {}",
                        json!({ "primary": std::process::id(), "workers": workers })
                    );
                    if kill_every > 0 {
                        next_kill = Some(Instant::now() + Duration::from_millis(kill_every));
                    }
                }
            }
            Some(Event::Exit {
                exited_after_disconnect: false,
                ..
            }) => {
                primary.fork(&[]).expect("respawn");
                respawns += 1;
            }
            Some(Event::Signal(_)) => break,
            Some(_) => {}
            None => {
                let live = primary.workers();
                if !live.is_empty() {
                    victim = (victim + 1) % live.len();
                    if let Some(w) = primary.worker(live[victim]) {
                        let _ = w.kill(Some(Signal::KILL));
                        kills += 1;
                    }
                }
                next_kill = Some(Instant::now() + Duration::from_millis(kill_every));
            }
        }
    }
    // Ask every worker for its counts, then stop them.
    let ids = primary.workers();
    for id in &ids {
        if let Some(w) = primary.worker(*id) {
            let _ = w.send(b"counts");
        }
    }
    let mut reports = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while reports.len() < ids.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match primary.next_event(Some(left)) {
            Ok(Some(Event::Message { message, .. })) => {
                if let Ok(v) = message.json::<serde_json::Value>() {
                    reports.push(v);
                }
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let stats = primary.handoff_stats();
    println!(
        "COUNTS {}",
        json!({ "workers": reports, "kills": kills, "respawns": respawns,
                "handoff": { "accepted": stats.accepted, "handed_over": stats.handed_over,
                             "messages": stats.handoff_messages, "taken_back": stats.taken_back,
                             "starved": stats.starved } })
    );
    std::process::exit(0);
}
