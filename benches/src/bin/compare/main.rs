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
//! ratio and the budget it was built to, and writes `compare.json` and `ratios.svg` to `--out`.
//!
//! The load client is ours (`loadgen.rs`: one thread, epoll, non-blocking). By default the
//! servers run on CPU 0 (`taskset`) and the client on CPU 1, so that the client does not take
//! the CPU it measures; `--no-pin` shares the CPUs. Without `node` on the PATH, Node's column
//! is skipped with a line saying so (`--no-node` skips it on purpose). `--only` takes a
//! comma-separated subset of `startup`, `ipc`, `conn`, `http` (all by default), for quick
//! looks at one part; the table then has only those rows. `--plot FILE` redraws the chart of
//! a `compare.json` without measuring. The servers are `cluster_server` (ours) and
//! `benches/node/cluster-server.js`; they are built or found next to this binary.

mod ipc;
mod loadgen;
mod report;
mod servers;
mod startup;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use clap::Parser;
use ringleader::{Primary, Role};
use ringleader_benches::{pin_this_thread, which};
use serde_json::json;

use self::ipc::ipc_rows;
use self::loadgen::Workload;
use self::report::{Better, Row, print_table, ratios_chart, replot};
use self::servers::{Side, http_rows, measure};
use self::startup::{startup_node, startup_ours};

/// ringleader and Node's cluster side by side, in one run.
#[derive(Parser, Debug)]
struct Args {
    /// Runs of each configuration; the table has their medians.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Seconds of load per run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Share the CPUs between servers and client instead of pinning them apart.
    #[arg(long)]
    no_pin: bool,
    /// Where compare.json and ratios.svg go [default: benches/results/compare].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Leave the control channel out.
    #[arg(long)]
    skip_ipc: bool,
    /// Only these parts: a comma-separated subset of startup, ipc, conn, http.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Leave Node's column out.
    #[arg(long)]
    no_node: bool,
    /// Redraw ratios.svg beside this compare.json without measuring.
    #[arg(long)]
    plot: Option<PathBuf>,
}

impl Args {
    /// Whether `--only` (if given) names this part of the run.
    fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p.trim() == part)
    }
}

fn main() {
    match ringleader::role().expect("role") {
        // Fork-to-listening: a worker that listens on port 0 and waits.
        Role::Worker(worker) => {
            let _listener = worker.listen_tcp("127.0.0.1:0").expect("listen");
            while let Ok(Some(_)) = worker.recv() {}
        }
        Role::Primary(primary) => run(&primary, Args::parse()),
    }
}

pub(crate) struct Config {
    pub(crate) reps: usize,
    pub(crate) seconds: f64,
    pub(crate) pin: bool,
    pub(crate) out: PathBuf,
    pub(crate) node: Option<PathBuf>,
    pub(crate) repo: PathBuf,
    pub(crate) bin_dir: PathBuf,
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

fn run(primary: &Primary, args: Args) {
    if let Some(path) = &args.plot {
        return replot(path);
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
        reps: args.reps,
        seconds: args.seconds,
        pin: !args.no_pin && cpus >= 2 && taskset,
        out: args
            .out
            .clone()
            .unwrap_or_else(|| repo.join("benches/results/compare")),
        node: if args.no_node { None } else { which("node") },
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
    if args.wants("startup") {
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
    if !args.skip_ipc && args.wants("ipc") {
        ipc_rows(&cfg, &mut ipc);
    }
    if cfg.pin {
        pin_this_thread(1);
    }

    // New connections per second.
    let mut conn_rr2 = None;
    let conn_runs = if args.wants("conn") {
        &CONN_RUNS[..]
    } else {
        &[]
    };
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
            // The same with a PROXY protocol header on every connection, which the primary
            // reads before the hand-off (Node has no such thing).
            let proxied = measure(&cfg, Side::Ours, policy, workers, Workload::ConnProxy);
            rows.push(Row::new(
                "conn/s, rr with a PROXY header, 2 workers",
                proxied.rate,
                None,
                Better::Higher,
                None,
            ));
            rows.push(Row::new(
                "primary CPU us/conn, rr with a PROXY header, 2 workers",
                proxied.primary_us_per_op,
                None,
                Better::Lower,
                None,
            ));
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

    if args.wants("http") {
        ensure_examples(&cfg);
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
    ratios_chart(&rows, &cfg.out.join("ratios.svg"));
    println!("results: {} and ratios.svg", json_path.display());
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

/// The examples measured beside `cluster_server` (`hello`, `hello_tokio`), built with the
/// `tokio` feature where they are absent (always rebuilt: they must match the source).
fn ensure_examples(cfg: &Config) {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args([
        "build",
        "--release",
        "-q",
        "-p",
        "ringleader",
        "--features",
        "tokio",
    ])
    .args(["--example", "hello", "--example", "hello_tokio"])
    .current_dir(&cfg.repo);
    let ok = cmd.status().is_ok_and(|s| s.success());
    assert!(ok, "could not build the hello examples");
}
