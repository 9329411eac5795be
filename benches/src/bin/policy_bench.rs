//! Distribution policies compared under skewed work, for people who choose between them.
//!
//! ```text
//! policy_bench [--scenario equal|slow-one|bimodal|keepalive-mix|all] [--rate R]
//!              [--seconds S] [--workers N]
//!              [--policies rr,lc,p2c,weighted,sticky,none,reuseport,steer,steer-sticky]
//!              [--out DIR]
//! ```
//!
//! For each scenario and policy it starts a cluster of this program's workers (each serves
//! its connections one request at a time, sleeping for the request's service time, so a
//! worker is a queue with one server), drives it with an open-loop client of its own on
//! loopback (requests scheduled at a fixed rate; latency counted from the scheduled time, so
//! a stalled server cannot hide its queue), then prints one table and writes
//! `DIR/policy-bench.json`, a latency CDF per scenario (`DIR/cdf-<scenario>.svg`) and the
//! workers' shares (`DIR/shares-<scenario>.svg`).
//!
//! Scenarios: `equal` (every request 1 ms), `slow-one` (worker 1 takes ten times longer),
//! `bimodal` (one request in ten costs 10 ms, the rest 0.5 ms), `keepalive-mix` (a fifth of
//! the connections are kept alive for 20 requests each, the rest carry one). Under
//! `weighted` the workers post capacity hints (10, and 1 for a slow worker); the other
//! policies see only the board's counts.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use ringleader::{Event, Primary, Role, Scheduling, Settings, SharedPolicy, Worker};
use ringleader_benches::chart;
use serde_json::json;

/// Distribution policies compared under skewed work.
#[derive(clap::Parser, Debug)]
struct Args {
    /// equal, slow-one, bimodal, keepalive-mix, or all.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Requests per second offered, open loop.
    #[arg(long, default_value_t = 1500.0)]
    rate: f64,
    /// Seconds per run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Workers per cluster.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// The policies, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "rr,lc,p2c,weighted,sticky,none,reuseport,steer,steer-sticky"
    )]
    policies: Vec<String>,
    /// Where the JSON and the charts go.
    #[arg(long, default_value = "target/policy-bench")]
    out: std::path::PathBuf,
}

const SCENARIOS: [&str; 4] = ["equal", "slow-one", "bimodal", "keepalive-mix"];

fn main() {
    match ringleader::role().expect("role") {
        Role::Worker(worker) => serve(&worker),
        Role::Primary(primary) => {
            if let Ok(run) = std::env::var("POLICY_BENCH_RUN") {
                run_cluster(&primary, &run);
            } else {
                drive_all(&<Args as clap::Parser>::parse());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The worker: one request at a time. A request line is `<cost in µs>`; the answer is the
// worker's id. Worker 1 multiplies every cost by `POLICY_BENCH_SLOW` (1 unless slow-one).

fn serve(worker: &Worker) {
    let slow: u64 = std::env::var("POLICY_BENCH_SLOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let factor = if worker.id() == 1 { slow } else { 1 };
    let port: u16 = std::env::var("POLICY_BENCH_PORT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Under `weighted`, each worker tells the primary what it can take (the point of that
    // policy): ten at a time, one for the slow worker. Other policies get no hints, so the
    // comparison shows what each does on the board's counts alone.
    if std::env::var_os("POLICY_BENCH_HINTS").is_some() {
        let capacity = if factor > 1 { 1 } else { 10 };
        worker
            .hint(ringleader::Hint::Capacity(capacity))
            .expect("capacity hint");
    }
    let served = Arc::new(AtomicU64::new(0));
    // The primary asks for the count at the end.
    let (w, s) = (worker.clone(), served.clone());
    std::thread::spawn(move || {
        while let Ok(Some(_)) = w.recv() {
            let _ = w.send(s.load(Ordering::Relaxed).to_string().as_bytes());
        }
    });
    let listener = worker.listen_tcp(("127.0.0.1", port)).expect("listen");
    let answer = format!("{}\n", worker.id());
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        // Small requests and answers ping-ponging on one connection: no Nagle delay.
        let _ = conn.set_nodelay(true);
        let mut reader = BufReader::new(&*conn);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let cost: u64 = line.trim().parse().unwrap_or(0);
            std::thread::sleep(Duration::from_micros(cost * factor));
            served.fetch_add(1, Ordering::Relaxed);
            if (&*conn).write_all(answer.as_bytes()).is_err() {
                break;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// One cluster, in a process of its own: `POLICY_BENCH_RUN=<policy>:<workers>:<slow>`.
// Prints `READY <port>` once every worker listens; on a line on stdin asks every worker for
// its count and prints `SHARES <id>=<n> ...`, then stops.

fn run_cluster(primary: &Primary, run: &str) {
    let mut parts = run.split(':');
    let policy = parts.next().unwrap_or("rr").to_owned();
    let workers: usize = parts.next().and_then(|v| v.parse().ok()).unwrap_or(4);
    let slow = parts.next().unwrap_or("1").to_owned();
    let mut settings = Settings::default();
    settings = match policy.as_str() {
        "none" => settings.scheduling(Scheduling::Shared),
        "reuseport" => settings.scheduling(Scheduling::ReusePort),
        "steer" => settings.scheduling(Scheduling::Steered),
        "steer-sticky" => settings
            .scheduling(Scheduling::Steered)
            .policy(SharedPolicy::named("steer-sticky").expect("a policy name")),
        name => settings
            .scheduling(Scheduling::RoundRobin)
            .policy(SharedPolicy::named(name).expect("a policy name")),
    };
    primary.setup(settings).expect("setup");
    // Reserve a port that every worker then asks for (listen(0) would do for rr and none;
    // reuseport needs the same number in every worker too, which the primary gives).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let port_text = port.to_string();
    let mut env = vec![
        ("POLICY_BENCH_SLOW", slow.as_str()),
        ("POLICY_BENCH_PORT", port_text.as_str()),
    ];
    if policy == "weighted" {
        env.push(("POLICY_BENCH_HINTS", "1"));
    }
    for _ in 0..workers {
        primary.fork(&env).expect("fork");
    }
    let mut listening = 0;
    let mut events = primary.events();
    while listening < workers {
        match events.next() {
            Some(Ok(Event::Listening { .. })) => listening += 1,
            Some(Ok(Event::Exit { worker, code, .. })) => {
                panic!("worker {worker} exited early ({code:?})")
            }
            Some(Ok(_)) => {}
            other => panic!("cluster: {other:?}"),
        }
    }
    println!("READY {port}");
    // Serve until the driver writes a line.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = tx.send(());
    });
    while rx.try_recv().is_err() {
        let _ = primary.next_event(Some(Duration::from_millis(20)));
    }
    for id in primary.workers() {
        if let Some(w) = primary.worker(id) {
            let _ = w.send(b"count");
        }
    }
    let mut shares = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while shares.len() < workers && Instant::now() < deadline {
        if let Ok(Some(Event::Message { worker, message })) =
            primary.next_event(Some(Duration::from_millis(100)))
        {
            shares.insert(worker, message.text().parse::<u64>().unwrap_or(0));
        }
    }
    let line: Vec<String> = shares.iter().map(|(w, n)| format!("{w}={n}")).collect();
    println!("SHARES {}", line.join(" "));
    let _ = primary.disconnect_all();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(Event::AllDisconnected)) =
            primary.next_event(Some(Duration::from_millis(50)))
        {
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The driver.

struct Outcome {
    scenario: String,
    policy: String,
    offered: f64,
    completed: u64,
    errors: u64,
    seconds: f64,
    latencies_us: Vec<u64>,
    shares: Vec<(u32, u64)>,
}

impl Outcome {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }

    fn jain(&self) -> f64 {
        let xs: Vec<f64> = self.shares.iter().map(|(_, n)| *n as f64).collect();
        let sum: f64 = xs.iter().sum();
        let squares: f64 = xs.iter().map(|x| x * x).sum();
        if squares == 0.0 {
            return f64::NAN;
        }
        sum * sum / (xs.len() as f64 * squares)
    }
}

/// What one scenario asks of the client: the slow factor for worker 1, and per connection
/// the number of requests and each one's cost.
struct Scenario {
    name: &'static str,
    slow: u64,
}

impl Scenario {
    /// The requests of connection number `n`: their costs in µs.
    fn connection(&self, n: u64) -> Vec<u64> {
        match self.name {
            "bimodal" => vec![if n % 10 == 0 { 10_000 } else { 500 }],
            "keepalive-mix" => {
                if n % 5 == 0 {
                    vec![500; 20]
                } else {
                    vec![500]
                }
            }
            _ => vec![1000],
        }
    }

    /// Requests per connection on average, to turn a request rate into a connection rate.
    fn requests_per_connection(&self) -> f64 {
        (0..100)
            .map(|n| self.connection(n).len() as f64)
            .sum::<f64>()
            / 100.0
    }
}

fn drive_all(args: &Args) {
    let Args {
        rate,
        seconds,
        workers,
        out,
        policies,
        scenario: wanted,
    } = args;
    let (rate, seconds, workers) = (*rate, *seconds, *workers);
    let scenarios: Vec<Scenario> = SCENARIOS
        .iter()
        .filter(|s| wanted == "all" || wanted == **s)
        .map(|&name| Scenario {
            name,
            slow: if name == "slow-one" { 10 } else { 1 },
        })
        .collect();
    std::fs::create_dir_all(out).expect("output directory");
    println!(
        "policy_bench: {workers} workers, {rate} requests/s offered for {seconds} s per run, \
         open loop on 127.0.0.1"
    );
    println!(
        "{:<14} {:<12} {:>9} {:>8} {:>9} {:>9} {:>9} {:>7}  shares",
        "scenario", "policy", "req/s", "errors", "p50 ms", "p99 ms", "p99.9 ms", "jain"
    );
    let mut outcomes = Vec::new();
    for scenario in &scenarios {
        for policy in policies {
            let o = run_one(scenario, policy, workers, rate, seconds);
            let shares: Vec<String> = o.shares.iter().map(|(w, n)| format!("{w}:{n}")).collect();
            println!(
                "{:<14} {:<12} {:>9.0} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>7.3}  {}",
                o.scenario,
                o.policy,
                o.completed as f64 / o.seconds,
                o.errors,
                o.percentile(0.5),
                o.percentile(0.99),
                o.percentile(0.999),
                o.jain(),
                shares.join(" ")
            );
            outcomes.push(o);
        }
    }
    write_results(out, &outcomes, workers, rate, seconds);
}

fn run_one(scenario: &Scenario, policy: &str, workers: usize, rate: f64, seconds: f64) -> Outcome {
    let exe = std::env::current_exe().expect("exe");
    let mut child = std::process::Command::new(exe)
        .env(
            "POLICY_BENCH_RUN",
            format!("{policy}:{workers}:{}", scenario.slow),
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the cluster");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let port: u16 = loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("READY ") => break l[6..].parse().expect("port"),
            Some(Ok(_)) => continue,
            _ => panic!("the {policy} cluster did not start"),
        }
    };
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let conn_rate = rate / scenario.requests_per_connection();
    let total = (conn_rate * seconds) as u64;
    let gap = Duration::from_secs_f64(1.0 / conn_rate);
    let (tx, rx) = mpsc::channel::<(u64, Instant, Vec<u64>)>();
    let rx = Arc::new(Mutex::new(rx));
    // Enough client threads that the client never queues: each connection blocks one.
    let clients: Vec<_> = (0..256)
        .map(|_| {
            let (rx, latencies, errors) = (rx.clone(), latencies.clone(), errors.clone());
            std::thread::spawn(move || {
                loop {
                    let job = rx.lock().map(|r| r.recv());
                    let Ok(Ok((n, due, costs))) = job else { break };
                    match one_connection(port, n, due, &costs) {
                        Ok(mut l) => latencies.lock().map(|mut v| v.append(&mut l)).unwrap_or(()),
                        Err(()) => {
                            errors.fetch_add(costs.len() as u64, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    for n in 0..total {
        let due = start + gap.mul_f64(n as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if tx.send((n, due, scenario.connection(n))).is_err() {
            break;
        }
    }
    drop(tx);
    for c in clients {
        let _ = c.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Ask the cluster for the shares and let it stop.
    let _ = child.stdin.as_mut().map(|i| i.write_all(b"\n"));
    let mut shares = Vec::new();
    for line in lines.by_ref() {
        let Ok(l) = line else { break };
        if let Some(rest) = l.strip_prefix("SHARES ") {
            shares = rest
                .split(' ')
                .filter_map(|p| {
                    let (w, n) = p.split_once('=')?;
                    Some((w.parse().ok()?, n.parse().ok()?))
                })
                .collect();
            break;
        }
    }
    let _ = child.wait();
    let mut latencies_us = std::mem::take(&mut *latencies.lock().expect("latencies"));
    latencies_us.sort_unstable();
    Outcome {
        scenario: scenario.name.to_owned(),
        policy: policy.to_owned(),
        offered: rate,
        completed: latencies_us.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        seconds: elapsed,
        latencies_us,
        shares,
    }
}

/// One connection: its requests one after the other. Latency of the first is counted from
/// when it was due (open loop); of the others from when each was sent.
fn one_connection(port: u16, n: u64, due: Instant, costs: &[u64]) -> Result<Vec<u64>, ()> {
    // From one of 200 client addresses (127.0.3.1 to .200), by connection number, so that
    // `sticky` has clients to keep apart; the other policies do not look.
    let from = std::net::SocketAddr::from(([127, 0, 3, (n % 200) as u8 + 1], 0));
    let fd = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::STREAM,
        None,
    )
    .map_err(drop)?;
    rustix::net::bind(&fd, &from).map_err(drop)?;
    rustix::net::connect(&fd, &std::net::SocketAddr::from(([127, 0, 0, 1], port))).map_err(drop)?;
    let stream = TcpStream::from(fd);
    stream.set_nodelay(true).map_err(drop)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(drop)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(drop)?);
    let mut writer = stream;
    let mut out = Vec::with_capacity(costs.len());
    let mut line = String::new();
    for (i, cost) in costs.iter().enumerate() {
        let sent = if i == 0 { due } else { Instant::now() };
        // One write per request (writeln! could make two, the second held back by Nagle).
        writer
            .write_all(format!("{cost}\n").as_bytes())
            .map_err(drop)?;
        line.clear();
        if reader.read_line(&mut line).map_err(drop)? == 0 {
            return Err(());
        }
        out.push(sent.elapsed().as_micros() as u64);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Results: JSON and two SVG charts per scenario, drawn by hand (no plotting dependency).

fn write_results(
    out: &std::path::Path,
    outcomes: &[Outcome],
    workers: usize,
    rate: f64,
    seconds: f64,
) {
    let runs: Vec<serde_json::Value> = outcomes
        .iter()
        .map(|o| {
            json!({
                "scenario": o.scenario, "policy": o.policy, "offered_rps": o.offered,
                "completed": o.completed, "errors": o.errors, "seconds": o.seconds,
                "throughput_rps": o.completed as f64 / o.seconds,
                "p50_ms": o.percentile(0.5), "p99_ms": o.percentile(0.99),
                "p999_ms": o.percentile(0.999), "jain": o.jain(),
                "shares": o.shares.iter().map(|(w, n)| json!({"worker": w, "requests": n})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let doc = json!({ "workers": workers, "offered_rps": rate, "seconds": seconds, "runs": runs });
    std::fs::write(
        out.join("policy-bench.json"),
        serde_json::to_string_pretty(&doc).unwrap_or_default(),
    )
    .expect("write json");
    let mut scenarios: Vec<&str> = outcomes.iter().map(|o| o.scenario.as_str()).collect();
    scenarios.dedup();
    for s in scenarios {
        let these: Vec<&Outcome> = outcomes.iter().filter(|o| o.scenario == s).collect();
        let cdfs: Vec<(&str, &[u64])> = these
            .iter()
            .map(|o| (o.policy.as_str(), o.latencies_us.as_slice()))
            .collect();
        let title = format!("latency CDF, {s}");
        chart::latency_cdf(&out.join(format!("cdf-{s}.svg")), &title, &cdfs).expect("write svg");
        let shares: Vec<(&str, Vec<u64>)> = these
            .iter()
            .map(|o| {
                (
                    o.policy.as_str(),
                    o.shares.iter().map(|(_, n)| *n).collect(),
                )
            })
            .collect();
        let title = format!("share of requests per worker, {s}");
        chart::shares(&out.join(format!("shares-{s}.svg")), &title, &shares).expect("write svg");
    }
    println!("results: {}", out.join("policy-bench.json").display());
}
