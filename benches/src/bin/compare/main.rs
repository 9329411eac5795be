//! ringleader and Node's cluster side by side, in one command, on loopback:
//!
//! ```text
//! cargo run --release -p ringleader-benches --bin compare -- [--reps 3] [--seconds 5]
//!     [--no-pin] [--out benches/results/compare] [--skip-ipc] [--only PARTS] [--no-node]
//! ```
//!
//! Measured for both, in the same run, medians of `--reps` runs: new connections per second
//! (connect, read a short answer, close) with 2 and 4 workers under `rr` and `none`, and each
//! side's single-process server as the ceiling; HTTP keep-alive requests per second with
//! p50/p99 latency, and `Connection: close` requests per second; the primary's CPU time per
//! connection (from /proc) and the primary's and a worker's memory; the control channel
//! (`ipc_compare`: round trip and one-way messages, 64 B and 64 KiB); fork-to-online and
//! fork-to-listening per worker (median of 20). Prints one table with both figures, their
//! ratio and the budget of issue 4, and writes `compare.json` and `ratios.svg` to `--out`.
//!
//! The load client is ours (`loadgen.rs`: one thread, epoll, non-blocking). By default the
//! servers run on CPU 0 (`taskset`) and the client on CPU 1, so that the client does not take
//! the CPU it measures; `--no-pin` shares the CPUs. Without `node` on the PATH, Node's column
//! is skipped with a line saying so (`--no-node` skips it on purpose). `--only` takes a
//! comma-separated subset of `startup`, `ipc`, `conn`, `http` (all by default), for quick
//! looks at one part; the table then has only those rows. The servers are `cluster_server` (ours) and
//! `benches/node/cluster-server.js`; they are built/found next to this binary.

mod loadgen;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loadgen::Workload;
use ringleader::{Event, Primary, Role};
use serde_json::{Value, json};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// Whether `--only` (if given) names this part of the run.
fn wants(part: &str) -> bool {
    arg("--only").is_none_or(|parts| parts.split(',').any(|p| p.trim() == part))
}

fn main() {
    match ringleader::role().expect("role") {
        // Fork-to-listening: a worker that listens on port 0 and waits.
        Role::Worker(worker) => {
            let _listener = worker.listen_tcp("127.0.0.1:0").expect("listen");
            while let Ok(Some(_)) = worker.recv() {}
        }
        Role::Primary(primary) => run(&primary),
    }
}

struct Config {
    reps: usize,
    seconds: f64,
    pin: bool,
    out: PathBuf,
    node: Option<PathBuf>,
    repo: PathBuf,
    bin_dir: PathBuf,
}

/// `--plot FILE`: redraws `ratios.svg` next to a `compare.json` without measuring again.
fn replot(path: &Path) {
    let v: Value = serde_json::from_slice(&std::fs::read(path).expect("read json")).expect("json");
    let rows: Vec<Row> = v["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let mut row = Row::new(
                r["metric"].as_str().unwrap_or(""),
                r["ringleader"].as_f64().unwrap_or(f64::NAN),
                r["node"].as_f64(),
                if r["better"] == "lower" {
                    Better::Lower
                } else {
                    Better::Higher
                },
                r["target"].as_f64(),
            );
            row.at_most = r["at_most"].as_f64();
            row
        })
        .collect();
    let out = path.with_file_name("ratios.svg");
    std::fs::write(&out, ratios_svg(&rows)).expect("write svg");
    println!("wrote {}", out.display());
}

/// The new-connection runs: (policy, workers); `single` is one process accepting directly;
/// `steer` (ours only: Node has nothing like it) is `Scheduling::Steered`.
const CONN_RUNS: [(&str, usize); 7] = [
    ("rr", 2),
    ("rr", 4),
    ("steer", 2),
    ("steer", 4),
    ("none", 2),
    ("none", 4),
    ("single", 0),
];

fn run(primary: &Primary) {
    if let Some(path) = arg("--plot") {
        return replot(Path::new(&path));
    }
    let bin_dir = std::env::current_exe()
        .expect("exe")
        .parent()
        .expect("dir")
        .to_path_buf();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo")
        .to_path_buf();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let taskset = Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let cfg = Config {
        reps: arg("--reps").and_then(|v| v.parse().ok()).unwrap_or(3),
        seconds: arg("--seconds").and_then(|v| v.parse().ok()).unwrap_or(5.0),
        pin: !flag("--no-pin") && cpus >= 2 && taskset,
        out: arg("--out").map_or_else(|| repo.join("benches/results/compare"), PathBuf::from),
        node: if flag("--no-node") {
            None
        } else {
            which("node")
        },
        repo,
        bin_dir,
    };
    ensure_built(&cfg);
    std::fs::create_dir_all(&cfg.out).expect("output directory");
    println!(
        "compare: {} reps x {} s, {}; node: {}",
        cfg.reps,
        cfg.seconds,
        if cfg.pin {
            "servers on CPU 0, client on CPU 1"
        } else {
            "servers and client share the CPUs"
        },
        cfg.node
            .as_ref()
            .map_or("not found: Node's column is skipped".to_owned(), |p| p
                .display()
                .to_string())
    );
    let mut rows: Vec<Row> = Vec::new();

    // Startup and the control channel first, on the whole machine (the processes they start
    // inherit this thread's CPU mask, so pinning waits for the load tests).
    if wants("startup") {
        let ours = startup_ours(primary, 20);
        let node = cfg.node.as_ref().map(|n| startup_node(n, &cfg.repo, 20));
        rows.push(Row::new(
            "fork to online, ms (median of 20)",
            ours.0,
            node.map(|n| n.0),
            Better::Lower,
            Some(10.0),
        ));
        rows.push(Row::new(
            "fork to listening, ms (median of 20)",
            ours.1,
            node.map(|n| n.1),
            Better::Lower,
            None,
        ));
    }

    let mut ipc = Vec::new();
    if !flag("--skip-ipc") && wants("ipc") {
        ipc_rows(&cfg, &mut ipc);
    }
    if cfg.pin {
        pin_this_thread(1);
    }

    // New connections per second.
    let mut conn_rr2 = None;
    let conn_runs = if wants("conn") { &CONN_RUNS[..] } else { &[] };
    for &(policy, workers) in conn_runs {
        let ours = measure(&cfg, Side::Ours, policy, workers, Workload::Conn);
        let node = cfg
            .node
            .as_ref()
            .filter(|_| policy != "steer")
            .map(|_| measure(&cfg, Side::Node, policy, workers, Workload::Conn));
        let label = if workers == 0 {
            "conn/s, single process (ceiling)".to_owned()
        } else {
            format!("conn/s, {policy}, {workers} workers")
        };
        let target = (policy == "rr").then_some(2.5);
        rows.push(Row::new(
            &label,
            ours.rate,
            node.as_ref().map(|n| n.rate),
            Better::Higher,
            target,
        ));
        if policy == "rr" || policy == "steer" {
            rows.push(
                Row::new(
                    &format!("primary CPU us/conn, {policy}, {workers} workers"),
                    ours.primary_us_per_op,
                    node.as_ref().map(|n| n.primary_us_per_op),
                    Better::Lower,
                    None,
                )
                .at_most(2.0),
            );
            rows.push(Row::new(
                &format!("load client CPU %, {policy}, {workers} workers"),
                ours.client_cpu_pct,
                node.as_ref().map(|n| n.client_cpu_pct),
                Better::Lower,
                None,
            ));
        }
        if (policy, workers) == ("rr", 2) {
            rows.push(Row::new(
                "primary peak RSS, MB",
                ours.primary_rss_mb,
                node.as_ref().map(|n| n.primary_rss_mb),
                Better::Lower,
                Some(10.0),
            ));
            rows.push(Row::new(
                "worker RSS, MB",
                ours.worker_rss_mb,
                node.as_ref().map(|n| n.worker_rss_mb),
                Better::Lower,
                None,
            ));
            conn_rr2 = Some(ours.rate);
        }
        if (policy, workers) == ("none", 2) {
            if let Some(rr) = conn_rr2 {
                rows.push(Row::new(
                    "ours: rr / none, 2 workers",
                    rr / ours.rate,
                    None,
                    Better::Higher,
                    None,
                ));
            }
        }
    }

    if wants("http") {
        http_rows(&cfg, &mut rows);
    }

    rows.extend(ipc);
    print_table(&rows);
    let doc = json!({
        "pinned": cfg.pin, "reps": cfg.reps, "seconds": cfg.seconds,
        "node": cfg.node.as_ref().map(|p| p.display().to_string()),
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
    });
    let json_path = cfg.out.join("compare.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&doc).unwrap_or_default(),
    )
    .expect("write json");
    std::fs::write(cfg.out.join("ratios.svg"), ratios_svg(&rows)).expect("write svg");
    println!("results: {} and ratios.svg", json_path.display());
}

/// HTTP keep-alive and `Connection: close`, rr with 2 workers.
fn http_rows(cfg: &Config, rows: &mut Vec<Row>) {
    let ours = measure(cfg, Side::Ours, "rr", 2, Workload::KeepAlive);
    let node = cfg
        .node
        .as_ref()
        .map(|_| measure(cfg, Side::Node, "rr", 2, Workload::KeepAlive));
    rows.push(Row::new(
        "HTTP keep-alive req/s, rr, 2 workers",
        ours.rate,
        node.as_ref().map(|n| n.rate),
        Better::Higher,
        None,
    ));
    rows.push(Row::new(
        "HTTP keep-alive p50 ms",
        ours.p50,
        node.as_ref().map(|n| n.p50),
        Better::Lower,
        None,
    ));
    rows.push(Row::new(
        "HTTP keep-alive p99 ms",
        ours.p99,
        node.as_ref().map(|n| n.p99),
        Better::Lower,
        None,
    ));
    let ours = measure(cfg, Side::Ours, "rr", 2, Workload::Close);
    let node = cfg
        .node
        .as_ref()
        .map(|_| measure(cfg, Side::Node, "rr", 2, Workload::Close));
    rows.push(Row::new(
        "HTTP Connection: close req/s, rr, 2 workers",
        ours.rate,
        node.as_ref().map(|n| n.rate),
        Better::Higher,
        Some(2.0),
    ));
}

// ---------------------------------------------------------------------------------------
// Rows of the table.

#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
}

struct Row {
    label: String,
    ours: f64,
    node: Option<f64>,
    better: Better,
    /// The budget, as a factor in our favour (2.5 = "2.5x Node's"; 10 = "a tenth of").
    target: Option<f64>,
    /// A budget on our figure alone (at most this).
    at_most: Option<f64>,
}

impl Row {
    fn new(label: &str, ours: f64, node: Option<f64>, better: Better, target: Option<f64>) -> Row {
        Row {
            label: label.to_owned(),
            ours,
            node,
            better,
            target,
            at_most: None,
        }
    }

    fn at_most(mut self, limit: f64) -> Row {
        self.at_most = Some(limit);
        self
    }

    fn met(&self) -> Option<bool> {
        match (self.target, self.advantage(), self.at_most) {
            (_, _, Some(limit)) => Some(self.ours <= limit),
            (Some(t), Some(a), None) => Some(a >= t),
            _ => None,
        }
    }

    /// How many times better we are (>1 is better, whichever direction is better).
    fn advantage(&self) -> Option<f64> {
        let node = self.node?;
        Some(match self.better {
            Better::Higher => self.ours / node,
            Better::Lower => node / self.ours,
        })
    }

    fn json(&self) -> Value {
        json!({
            "metric": self.label, "ringleader": self.ours, "node": self.node,
            "advantage": self.advantage(), "target": self.target, "at_most": self.at_most,
            "better": if self.better == Better::Higher { "higher" } else { "lower" },
            "met": self.met(),
        })
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<46} {:>14} {:>14} {:>9} {:>12}",
        "metric", "ringleader", "Node.js", "ours is", "budget"
    );
    for r in rows {
        let node = r.node.map_or("-".to_owned(), |n| format!("{n:.2}"));
        let adv = r.advantage().map_or("-".to_owned(), |a| format!("{a:.2}x"));
        let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
        let budget = match (r.target, r.at_most, r.met()) {
            (_, Some(limit), Some(ok)) => format!("<={limit} {}", verdict(ok)),
            (Some(t), _, Some(ok)) => format!("{t}x {}", verdict(ok)),
            (Some(t), _, None) => format!("{t}x ?"),
            _ => String::new(),
        };
        println!(
            "{:<46} {:>14.2} {:>14} {:>9} {:>12}",
            r.label, r.ours, node, adv, budget
        );
    }
    println!(
        "(\"ours is\": how many times better ringleader is; for times and sizes, Node's / ours)"
    );
}

// ---------------------------------------------------------------------------------------
// Servers under load.

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Ours,
    Node,
}

#[derive(Default, Clone)]
struct Measured {
    rate: f64,
    p50: f64,
    p99: f64,
    primary_us_per_op: f64,
    primary_rss_mb: f64,
    worker_rss_mb: f64,
    /// How busy the load client was: near 100 %, it is what limits the rate.
    client_cpu_pct: f64,
}

/// `reps` runs of one configuration; the median of each figure.
fn measure(cfg: &Config, side: Side, policy: &str, workers: usize, w: Workload) -> Measured {
    let runs: Vec<Measured> = (0..cfg.reps)
        .map(|_| one_run(cfg, side, policy, workers, w))
        .collect();
    let med = |f: fn(&Measured) -> f64| median(runs.iter().map(f).collect());
    let m = Measured {
        rate: med(|m| m.rate),
        p50: med(|m| m.p50),
        p99: med(|m| m.p99),
        primary_us_per_op: med(|m| m.primary_us_per_op),
        primary_rss_mb: med(|m| m.primary_rss_mb),
        worker_rss_mb: med(|m| m.worker_rss_mb),
        client_cpu_pct: med(|m| m.client_cpu_pct),
    };
    println!(
        "  {:<5} {:<6} {} workers {:<9} {:>9.0}/s  p50 {:.2} ms  p99 {:.2} ms  primary {:.2} us/op  client {:.0} % CPU",
        if side == Side::Ours { "ours" } else { "node" },
        policy,
        workers,
        format!("{w:?}"),
        m.rate,
        m.p50,
        m.p99,
        m.primary_us_per_op,
        m.client_cpu_pct
    );
    m
}

fn one_run(cfg: &Config, side: Side, policy: &str, workers: usize, w: Workload) -> Measured {
    let port = free_port();
    let mode = if w == Workload::Conn { "tcp" } else { "http" };
    let (workers_arg, policy_env) = if policy == "single" {
        ("0".to_owned(), "rr")
    } else {
        (workers.to_string(), policy)
    };
    let mut cmd = if cfg.pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]);
        c
    } else {
        Command::new("env")
    };
    match side {
        Side::Ours => cmd.arg(cfg.bin_dir.join("cluster_server")),
        Side::Node => cmd
            .arg(cfg.node.as_ref().expect("node"))
            .arg(cfg.repo.join("benches/node/cluster-server.js")),
    };
    cmd.args([
        "--mode",
        mode,
        "--workers",
        &workers_arg,
        "--port",
        &port.to_string(),
    ])
    .args(["--kill-every", "0"])
    .env("NODE_CLUSTER_SCHED_POLICY", policy_env)
    .env_remove("RINGLEADER_SCHED_POLICY")
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut server = Guard(cmd.spawn().expect("start a server"));
    let mut lines = BufReader::new(server.0.stdout.take().expect("stdout")).lines();
    let primary_pid: u32 = loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("READY ") => {
                let v: Value = serde_json::from_str(&l[6..]).unwrap_or(Value::Null);
                break v["primary"].as_u64().map_or(server.0.id(), |p| p as u32);
            }
            Some(Ok(_)) => continue,
            _ => panic!("the server did not start"),
        }
    };
    // Let it settle, then measure.
    std::thread::sleep(Duration::from_millis(200));
    let cpu_before = cpu_us(primary_pid);
    let client_before = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let mut outcome = loadgen::run(port, w, 50, Duration::from_secs_f64(cfg.seconds));
    let client_after = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let cpu_after = cpu_us(primary_pid);
    let secs = |t: rustix::time::Timespec| t.tv_sec as f64 + t.tv_nsec as f64 / 1e9;
    let client_cpu_pct = (secs(client_after) - secs(client_before)) / outcome.seconds * 100.0;
    let worker_rss = children(primary_pid)
        .first()
        .map_or(0.0, |c| status_kb(*c, "VmRSS:") / 1024.0);
    let primary_rss = status_kb(primary_pid, "VmHWM:") / 1024.0;
    let ops = outcome.ops.max(1) as f64;
    let m = Measured {
        rate: outcome.rate(),
        p50: outcome.percentile_ms(0.5),
        p99: outcome.percentile_ms(0.99),
        primary_us_per_op: if workers == 0 || policy == "none" {
            0.0
        } else {
            cpu_after.saturating_sub(cpu_before) as f64 / ops
        },
        primary_rss_mb: primary_rss,
        worker_rss_mb: worker_rss,
        client_cpu_pct,
    };
    drop(server);
    std::thread::sleep(Duration::from_millis(300));
    m
}

/// Kills the server's process group... or at least the server, and reaps it.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // SIGTERM: both servers stop their workers on it.
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The CPU time of process `pid`, in microseconds: the scheduler's own sum for each of its
/// threads (`se.sum_exec_runtime` in `/proc/<pid>/task/<tid>/sched`, nanoseconds), or
/// utime + stime from `/proc/<pid>/stat` (10 ms steps) where that sum is missing or short
/// (threads that exited took theirs with them).
fn cpu_us(pid: u32) -> u64 {
    let coarse = stat_cpu_us(pid);
    let precise = sched_cpu_us(pid);
    match precise {
        Some(p) if p + 20_000 >= coarse => p,
        _ => coarse,
    }
}

fn sched_cpu_us(pid: u32) -> Option<u64> {
    let mut total = 0.0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let sched = std::fs::read_to_string(task.ok()?.path().join("sched")).ok()?;
        let ms: f64 = sched
            .lines()
            .find_map(|l| l.strip_prefix("se.sum_exec_runtime"))?
            .trim_start_matches([' ', ':'])
            .trim()
            .parse()
            .ok()?;
        total += ms;
    }
    Some((total * 1000.0) as u64)
}

/// utime + stime of `pid`, in microseconds.
fn stat_cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // state is field 3; utime 14 and stime 15 are at 11 and 12 after ')'.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    let hz = rustix::param::clock_ticks_per_second();
    ticks * 1_000_000 / hz
}

fn status_kb(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0)
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn pin_this_thread(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

// ---------------------------------------------------------------------------------------
// Startup.

/// Ours: fork a worker, time `Online` and `Listening`, retire it; 20 times.
fn startup_ours(primary: &Primary, count: usize) -> (f64, f64) {
    let (mut online, mut listening) = (Vec::new(), Vec::new());
    for _ in 0..count {
        let start = Instant::now();
        let w = primary.fork(&[]).expect("fork");
        let mut seen_online = false;
        loop {
            match primary
                .next_event(Some(Duration::from_secs(10)))
                .expect("event")
            {
                Some(Event::Online { worker }) if worker == w.id() => {
                    online.push(start.elapsed().as_secs_f64() * 1000.0);
                    seen_online = true;
                }
                Some(Event::Listening { worker, .. }) if worker == w.id() && seen_online => {
                    listening.push(start.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
                Some(_) => {}
                None => panic!("worker {} never listened", w.id()),
            }
        }
        w.disconnect().expect("disconnect");
        loop {
            if let Some(Event::Exit { worker, .. }) = primary
                .next_event(Some(Duration::from_secs(10)))
                .expect("event")
            {
                if worker == w.id() {
                    break;
                }
            }
        }
    }
    (median(online), median(listening))
}

fn startup_node(node: &Path, repo: &Path, count: usize) -> (f64, f64) {
    let out = Command::new(node)
        .arg(repo.join("benches/node/startup.js"))
        .args(["--count", &count.to_string()])
        .output()
        .expect("node startup.js");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let list = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    (median(list("online_ms")), median(list("listening_ms")))
}

// ---------------------------------------------------------------------------------------
// The control channel, through ipc_compare.

fn ipc_rows(cfg: &Config, rows: &mut Vec<Row>) {
    let path = cfg.out.join("ipc.json");
    let status = Command::new(cfg.bin_dir.join("ipc_compare"))
        .args(["--reps", &cfg.reps.to_string(), "--json"])
        .arg(&path)
        .stdout(Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        println!("ipc_compare failed: control-channel rows skipped");
        return;
    }
    let v: Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    // ipc_compare writes, per size, every rep of ours and the medians of Node's.
    for entry in v.as_array().into_iter().flatten() {
        let size = entry["size"].as_u64().unwrap_or(0);
        let name = if size == 64 { "64 B" } else { "64 KiB" };
        let ours = |key: &str| {
            median(
                entry["ringleader"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r[key].as_f64())
                    .collect(),
            )
        };
        let node = |key: &str| entry["node"][key].as_f64();
        let small = (size == 64).then_some(10.0);
        rows.push(Row::new(
            &format!("IPC round trip p50 us, {name}"),
            ours("rtt_p50_us"),
            node("rtt_p50_us"),
            Better::Lower,
            small,
        ));
        for (key, what) in [
            ("p2w_msgs_per_s", "primary->worker"),
            ("w2p_msgs_per_s", "worker->primary"),
        ] {
            rows.push(Row::new(
                &format!("IPC msg/s {what}, {name}"),
                ours(key),
                node(key),
                Better::Higher,
                small,
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Helpers.

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// The servers this runner starts are other binaries of this package: build them if absent.
fn ensure_built(cfg: &Config) {
    let missing: Vec<&str> = ["cluster_server", "ipc_compare"]
        .into_iter()
        .filter(|b| !cfg.bin_dir.join(b).is_file())
        .collect();
    if missing.is_empty() {
        return;
    }
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--release", "-p", "ringleader-benches"])
        .current_dir(&cfg.repo);
    for b in &missing {
        cmd.args(["--bin", b]);
    }
    let ok = cmd.status().is_ok_and(|s| s.success());
    assert!(ok, "could not build {missing:?}");
}

/// Each row's advantage against its budget, on a log scale.
fn ratios_svg(rows: &[Row]) -> String {
    // The client's CPU is a diagnostic (is the client the limit?), not a result.
    let with: Vec<&Row> = rows
        .iter()
        .filter(|r| r.advantage().is_some() && !r.label.starts_with("load client"))
        .collect();
    let (w, row_h, left) = (820.0, 22.0, 330.0);
    let h = 50.0 + row_h * with.len() as f64;
    let plot = w - left - 40.0;
    // 0.1x .. 100x on a log axis.
    let x = |v: f64| left + (v.clamp(0.1, 100.0).log10() + 1.0) / 3.0 * plot;
    let mut svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-family='sans-serif' font-size='12'>\
         <text x='10' y='16'>how many times better ringleader is than Node's cluster (log scale; ticks mark the budget)</text>"
    );
    for v in [0.1, 1.0, 10.0, 100.0] {
        let px = x(v);
        svg += &format!(
            "<line x1='{px}' y1='24' x2='{px}' y2='{}' stroke='#ccc'/><text x='{px}' y='{}' text-anchor='middle'>{v}x</text>",
            h - 18.0,
            h - 4.0
        );
    }
    for (i, r) in with.iter().enumerate() {
        let y = 28.0 + row_h * i as f64;
        let a = r.advantage().unwrap_or(1.0);
        let colour = if r.met() == Some(false) {
            "#d62728"
        } else {
            "#1f77b4"
        };
        svg += &format!(
            "<text x='{}' y='{}' text-anchor='end'>{}</text><rect x='{}' y='{y}' width='{:.1}' height='{}' fill='{colour}'/>",
            left - 6.0,
            y + 13.0,
            r.label.replace('&', "&amp;").replace('<', "&lt;"),
            x(1.0).min(x(a)),
            (x(a) - x(1.0)).abs(),
            row_h - 6.0
        );
        if let Some(t) = r.target {
            svg += &format!(
                "<line x1='{0}' y1='{y}' x2='{0}' y2='{1}' stroke='black' stroke-width='2'/>",
                x(t),
                y + row_h - 6.0
            );
        }
    }
    svg + "</svg>"
}
