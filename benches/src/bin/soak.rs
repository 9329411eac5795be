//! A soak: a cluster under steady load while, one after another, a worker is SIGKILLed, a
//! worker is SIGSTOPped for 2 s, the workers are rolled (`SIGHUP`), 200 idle clients
//! connect and hold, the admin endpoint is flooded (100 scrapes and 50 half-sent
//! requests), and the primary is upgraded (`SIGUSR2`). Counts the requests answered,
//! failed (refused, reset: the client knows at once) and hung (no answer and no error
//! within `--hang-secs`), and compares the primary's fds and resident set before the load
//! with those after it (after an upgrade, the primary serving then), both idle. Prints one line; with
//! `--check`, exits 1 if a request hung, no worker serves at the end, or the primary's fds
//! or memory grew.
//!
//! ```text
//! soak --port P --admin ADDR [--seconds 600] [--clients 16] [--check] -- COMMAND...
//! ```
//!
//! COMMAND (a `hello` with `--port P --admin ADDR`) runs in a process group of its own,
//! killed whole at the end; its primaries (an upgrade's new one included) are that group's
//! members, and its workers their children. Loopback only; the run stops by itself.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringleader_benches::client::{Clients, wait_answering};
use ringleader_benches::proc::{children, fd_count, group_members, status_kb};
use rustix::process::{Pid, Signal, kill_process, kill_process_group};

#[derive(clap::Parser, Debug)]
struct Args {
    /// The port the cluster serves.
    #[arg(long)]
    port: u16,
    /// The cluster's admin endpoint.
    #[arg(long)]
    admin: SocketAddr,
    /// How long the soak lasts.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Clients asking in a loop.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// A request with no answer and no error this long counts as hung.
    #[arg(long, default_value_t = 5)]
    hang_secs: u64,
    /// Exit 1 on a hung request, no worker at the end, or growth of the primary.
    #[arg(long)]
    check: bool,
    /// The cluster's command.
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

/// The events, in turn, one a second.
const ACTIONS: [&str; 6] = ["kill", "stop", "roll", "idle", "admin", "upgrade"];

/// The primary serving now: the newest live member of the cluster's process group.
fn primary(group: u32) -> Option<u32> {
    group_members(group).last().copied()
}

fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = kill_process(pid, sig);
    }
}

/// A worker of the primary serving now, the `n`th in turn.
fn a_worker(group: u32, n: usize) -> Option<u32> {
    let workers = children(primary(group)?);
    (!workers.is_empty()).then(|| workers[n % workers.len()])
}

/// `n` connections that send nothing, held for `hold`, then closed.
fn idle_clients(port: u16, n: usize, hold: Duration) {
    std::thread::spawn(move || {
        let held: Vec<TcpStream> = (0..n)
            .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
            .collect();
        std::thread::sleep(hold);
        drop(held);
    });
}

/// 100 scrapes of `/metrics` at once, and 50 requests half sent and held for 2 s.
fn admin_flood(admin: SocketAddr) {
    std::thread::spawn(move || {
        let half: Vec<TcpStream> = (0..50)
            .filter_map(|_| {
                let mut s = TcpStream::connect(admin).ok()?;
                s.write_all(b"GET /metr").ok()?;
                Some(s)
            })
            .collect();
        let scrapes: Vec<_> = (0..100)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut s = TcpStream::connect(admin).ok()?;
                    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                    s.write_all(
                        b"GET /metrics HTTP/1.1\r\nhost: soak\r\nconnection: close\r\n\r\n",
                    )
                    .ok()?;
                    std::io::Read::read_to_end(&mut s, &mut Vec::new()).ok()
                })
            })
            .collect();
        for s in scrapes {
            let _ = s.join();
        }
        std::thread::sleep(Duration::from_secs(2));
        drop(half);
    });
}

/// The primary's open fds and resident set (KiB).
fn figures(pid: u32) -> (usize, f64) {
    (fd_count(pid), status_kb(pid, "VmRSS:"))
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let hang = Duration::from_secs(args.hang_secs);
    let mut child = Command::new(&args.command[0])
        .args(&args.command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the cluster");
    let group = child.id();
    wait_answering(args.port, hang, "soak");
    // The start's figures, idle, as the end's will be.
    let first = primary(group).expect("a primary");
    let (fds_start, rss_start) = figures(first);
    let clients = Clients::start(args.clients, args.port, hang);
    let mut done = [0u32; ACTIONS.len()];
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut turn = 0usize;
    while Instant::now() < end {
        let action = turn % ACTIONS.len();
        turn += 1;
        let did = match ACTIONS[action] {
            "kill" => a_worker(group, turn).inspect(|w| signal(*w, Signal::KILL)),
            "stop" => a_worker(group, turn).inspect(|&w| {
                signal(w, Signal::STOP);
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(2));
                    signal(w, Signal::CONT);
                });
            }),
            "roll" => primary(group).inspect(|p| signal(*p, Signal::HUP)),
            "idle" => {
                idle_clients(args.port, 200, Duration::from_secs(1));
                Some(group)
            }
            "admin" => {
                admin_flood(args.admin);
                Some(group)
            }
            _ => primary(group).inspect(|p| signal(*p, Signal::USR2)),
        };
        done[action] += u32::from(did.is_some());
        std::thread::sleep(Duration::from_secs(1));
    }
    let counted = clients.stop();
    // A calm spell: until one primary is left, with its workers, and its fds hold still
    // (the last roll or upgrade done, the idle clients and the admin flood gone), or 30 s.
    let calm_by = Instant::now() + Duration::from_secs(30);
    let mut before = None;
    while Instant::now() < calm_by {
        std::thread::sleep(Duration::from_millis(500));
        let members = group_members(group);
        let now = members
            .last()
            .map(|p| (*p, fd_count(*p), children(*p).len()));
        if members.len() == 1 && now.is_some_and(|(_, _, w)| w > 0) && now == before {
            break;
        }
        before = now;
    }
    let last = primary(group);
    let (fds_end, rss_end) = last.map_or((0, 0.0), figures);
    let workers = last.map_or(0, |p| children(p).len());
    if let Some(g) = Pid::from_raw(group as i32) {
        let _ = kill_process_group(g, Signal::KILL);
    }
    let _ = child.wait();
    let hung = counted.hung;
    let events: Vec<String> = ACTIONS
        .iter()
        .zip(done)
        .map(|(a, n)| format!("{n} {a}"))
        .collect();
    println!(
        "{} s | {} | answered {} | failed {} | hung {hung} | {workers} workers at the end | \
         primary fds {fds_start} -> {fds_end}, RSS {:.1} -> {:.1} MiB",
        args.seconds,
        events.join(", "),
        counted.answered,
        counted.failed,
        rss_start / 1024.0,
        rss_end / 1024.0,
    );
    // Flat: a few fds of slack (an admin connection open at the moment of reading), and
    // memory within half again plus 16 MiB (allocator arenas settle).
    let grew = fds_end > fds_start + 8 || rss_end > rss_start * 1.5 + 16.0 * 1024.0;
    if args.check && (hung > 0 || workers == 0 || grew) {
        eprintln!("soak: failed the check (hung requests, no worker, or a primary that grew)");
        std::process::exit(1);
    }
}
