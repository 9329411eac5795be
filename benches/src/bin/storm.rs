//! A SIGKILL storm: one worker of a cluster killed every `--every-ms` while `--clients`
//! clients ask in a loop, each request with `Connection: close`. Counts the requests
//! answered, those that failed (refused, reset, closed with no answer: the client knows at
//! once and retries, 10 ms later), and those that hung: no answer and no error within
//! `--hang-secs`, a client left waiting; and, a calm second after the storm, how many
//! workers serve (the primary's children) or whether the primary is gone. Prints one line
//! per run.
//!
//! With `--stop-secs S`, no kill: one worker is stopped (`SIGSTOP`) a second into the run
//! and continued (`SIGCONT`) S seconds later, and the hung count is the clients it left
//! waiting longer than `--hang-secs`.
//!
//! ```text
//! storm --name NAME --port P [--seconds 10] [--every-ms 100] [--clients 32]
//!     [--stop-secs S] -- COMMAND...
//! ```
//!
//! COMMAND runs with `PORT=P` in a process group of its own, killed whole at the end; the
//! workers are its primary's child processes. Loopback only; the run stops by itself.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringleader_benches::client::{Clients, wait_answering};
use ringleader_benches::proc::children;

#[derive(clap::Parser, Debug)]
struct Args {
    /// What the line of figures is called.
    #[arg(long)]
    name: String,
    /// The port the cluster serves.
    #[arg(long)]
    port: u16,
    /// How long the storm lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// A worker is killed this often.
    #[arg(long, default_value_t = 100)]
    every_ms: u64,
    /// Clients asking in a loop.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// A request with no answer and no error this long counts as hung.
    #[arg(long, default_value_t = 5)]
    hang_secs: u64,
    /// Instead of kills: stop one worker a second into the run, for this long.
    #[arg(long)]
    stop_secs: Option<u64>,
    /// The cluster's command.
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let hang = Duration::from_secs(args.hang_secs);
    let mut child = Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("PORT", args.port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the cluster");
    let primary = child.id();
    let group = rustix::process::Pid::from_raw(primary as i32).expect("pid");
    wait_answering(args.port, hang, &args.name);
    let clients = Clients::start(args.clients, args.port, hang);
    let (mut kills, mut next) = (0u64, 0usize);
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let what = match args.stop_secs {
        Some(secs) => {
            std::thread::sleep(Duration::from_secs(1));
            let worker = children(primary).first().copied().expect("a worker");
            let pid = rustix::process::Pid::from_raw(worker as i32).expect("pid");
            rustix::process::kill_process(pid, rustix::process::Signal::STOP).expect("SIGSTOP");
            std::thread::sleep(Duration::from_secs(secs));
            rustix::process::kill_process(pid, rustix::process::Signal::CONT).expect("SIGCONT");
            std::thread::sleep(end.saturating_duration_since(Instant::now()));
            format!("1 worker SIGSTOPped for {secs} s")
        }
        None => {
            while Instant::now() < end {
                let workers = children(primary);
                if !workers.is_empty() {
                    next = (next + 1) % workers.len();
                    let pid = rustix::process::Pid::from_raw(workers[next] as i32).expect("pid");
                    if rustix::process::kill_process(pid, rustix::process::Signal::KILL).is_ok() {
                        kills += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(args.every_ms));
            }
            format!("{kills} workers SIGKILLed")
        }
    };
    // The storm is over: a calm second, then each client ends with its request in flight
    // (which may take up to `hang` to count as hung).
    std::thread::sleep(Duration::from_secs(1));
    let after = match child.try_wait() {
        Ok(Some(status)) => format!("primary exited ({status})"),
        _ => format!("{} workers after it", children(primary).len()),
    };
    let counted = clients.stop();
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    let _ = child.wait();
    println!(
        "{} | {} s, {what} | answered {} | failed {} | hung {} | {after}",
        args.name, args.seconds, counted.answered, counted.failed, counted.hung,
    );
}
