//! The servers under load: ours (`cluster_server`) and Node's (`cluster-server.js`), started
//! per run, measured by the load client, stopped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringleader_benches::proc::{children, cpu_us, status_kb};
use ringleader_benches::{free_port, median};
use serde_json::Value;

use crate::Config;
use crate::loadgen::{self, Workload};
use crate::report::{Better, Row};

/// HTTP keep-alive and `Connection: close`, rr with 2 workers.
pub(crate) fn http_rows(cfg: &Config, rows: &mut Vec<Row>) {
    let ours = measure(cfg, Side::Ours, "rr", 2, Workload::KeepAlive);
    let node = cfg
        .node
        .as_ref()
        .map(|_| measure(cfg, Side::Node, "rr", 2, Workload::KeepAlive));
    let node_keep_alive = node.clone();
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
    // The examples a user starts from, against the same Node runs: `hello` (a thread per
    // connection) and `hello_tokio` (hyper on tokio), with their supervisor.
    for (w, node) in [
        (Workload::KeepAlive, &node_keep_alive),
        (Workload::Close, &node),
    ] {
        let kind = if w == Workload::Close {
            "Connection: close"
        } else {
            "keep-alive"
        };
        for side in [Side::Hello, Side::HelloTokio] {
            let m = measure(cfg, side, "rr", 2, w);
            rows.push(Row::new(
                &format!("{} HTTP {kind} req/s, rr, 2 workers", side.name()),
                m.rate,
                node.as_ref().map(|n| n.rate),
                Better::Higher,
                (w == Workload::Close).then_some(2.0),
            ));
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Side {
    Ours,
    Node,
    /// The `hello` example.
    Hello,
    /// The `hello_tokio` example.
    HelloTokio,
}

impl Side {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Side::Ours => "ours",
            Side::Node => "node",
            Side::Hello => "hello",
            Side::HelloTokio => "hello_tokio",
        }
    }
}

#[derive(Default, Clone)]
pub(crate) struct Measured {
    pub(crate) rate: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) primary_us_per_op: f64,
    pub(crate) primary_rss_mb: f64,
    pub(crate) worker_rss_mb: f64,
    /// How busy the load client was: near 100 %, it is what limits the rate.
    pub(crate) client_cpu_pct: f64,
}

/// `reps` runs of one configuration; the median of each figure.
pub(crate) fn measure(
    cfg: &Config,
    side: Side,
    policy: &str,
    workers: usize,
    w: Workload,
) -> Measured {
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
        side.name(),
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

pub(crate) fn one_run(
    cfg: &Config,
    side: Side,
    policy: &str,
    workers: usize,
    w: Workload,
) -> Measured {
    let port = free_port();
    let mode = if matches!(w, Workload::Conn | Workload::ConnProxy) {
        "tcp"
    } else {
        "http"
    };
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
    let example = |name: &str| cfg.bin_dir.join("examples").join(name);
    match side {
        Side::Ours => cmd.arg(cfg.bin_dir.join("cluster_server")),
        Side::Node => cmd
            .arg(cfg.node.as_ref().expect("node"))
            .arg(cfg.repo.join("benches/node/cluster-server.js")),
        Side::Hello => cmd.arg(example("hello")),
        Side::HelloTokio => cmd.arg(example("hello_tokio")),
    };
    if matches!(side, Side::Hello | Side::HelloTokio) {
        cmd.args(["--workers", &workers_arg, "--port", &port.to_string()]);
        cmd.args(["--policy", policy]);
    } else {
        cmd.args([
            "--mode",
            mode,
            "--workers",
            &workers_arg,
            "--port",
            &port.to_string(),
        ])
        .args(["--kill-every", "0"]);
        if w == Workload::ConnProxy {
            cmd.arg("--proxy-protocol");
        }
    }
    cmd.env("NODE_CLUSTER_SCHED_POLICY", policy_env)
        .env_remove("RINGLEADER_SCHED_POLICY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut server = Guard(cmd.spawn().expect("start a server"));
    let mut lines = BufReader::new(server.0.stdout.take().expect("stdout")).lines();
    // The examples say each worker's listening; the benchmark servers say READY once.
    let mut listening = 0;
    let primary_pid: u32 = loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("READY ") => {
                let v: Value = serde_json::from_str(&l[6..]).unwrap_or(Value::Null);
                break v["primary"].as_u64().map_or(server.0.id(), |p| p as u32);
            }
            Some(Ok(l)) if l.contains(" listening on ") => {
                listening += 1;
                if listening == workers {
                    break server.0.id();
                }
            }
            Some(Ok(_)) => continue,
            _ => panic!("the server did not start"),
        }
    };
    // The examples print a line per event: keep reading, or their pipe fills and they stop.
    let drain = std::thread::spawn(move || lines.for_each(drop));
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
    let _ = drain.join();
    std::thread::sleep(Duration::from_millis(300));
    m
}

/// A server process: stopped (SIGTERM, then SIGKILL after 5 s) and reaped when dropped.
/// Kills the server's process group... or at least the server, and reaps it.
pub(crate) struct Guard(Child);

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
