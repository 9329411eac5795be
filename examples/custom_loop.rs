//! `hello`'s cluster (the same flags, the same answers) whose primary runs inside a loop of
//! the application's own: a `mio` poll that watches the primary's fd beside one of the
//! application's, here its standard input, where a line is a command (`status` prints the
//! workers, `roll` replaces them, `quit` stops the cluster). No thread, no runtime: the loop
//! waits on both fds and calls `Primary::poll` when the primary's is readable. mio is
//! edge-triggered; the primary's fd gives a fresh edge whenever work is left after a poll.
//!
//! ```text
//! cargo run --release --example custom_loop -- [--workers N] [--port 8000]
//!     [--policy rr|lc|sticky|none|reuseport|steer|steer-sticky] [--admin 127.0.0.1:9000]
//! ```

use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use ringleader::{Event, Primary, Role, Roll};

// Its command line and its reports; this primary runs its own loop, not the supervisor.
#[allow(dead_code)]
#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/http.rs"]
mod http;

use cluster::Args;

/// The tokens of the two fds in the poll.
const PRIMARY: Token = Token(0);
const STDIN: Token = Token(1);

fn main() {
    if let Err(e) = run() {
        eprintln!("custom_loop {}: {e}", std::process::id());
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = <Args as clap::Parser>::parse();
    match ringleader::role()? {
        Role::Primary(primary) => drive(&primary, &args),
        Role::Worker(worker) => {
            let listener = worker.listen_tcp(("0.0.0.0", args.port))?;
            Ok(http::serve(&listener, &worker)?)
        }
    }
}

/// The application's loop: the primary's fd and standard input in one poller.
fn drive(primary: &Primary, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    primary.setup(args.settings())?;
    args.serve_admin(primary)?;
    for _ in 0..args.workers() {
        primary.fork(&[])?;
    }
    println!("Primary {} is running its own loop", std::process::id());
    let mut poll = Poll::new()?;
    let primary_fd = primary.as_raw_fd();
    let stdin_fd = std::io::stdin().as_raw_fd();
    let registry = poll.registry();
    registry.register(&mut SourceFd(&primary_fd), PRIMARY, Interest::READABLE)?;
    // Standard input is watched where it can be: epoll refuses regular files and
    // /dev/null (EPERM), as under systemd, nohup or a test harness; the cluster serves on.
    if let Err(e) = registry.register(&mut SourceFd(&stdin_fd), STDIN, Interest::READABLE) {
        if e.kind() != std::io::ErrorKind::PermissionDenied {
            return Err(e.into());
        }
        println!("Standard input cannot be watched (a file or /dev/null): no commands");
    }
    // What standard input sent, up to its next line's end.
    let mut pending = String::new();
    let mut events = Events::with_capacity(8);
    let mut out = Vec::new();
    let mut stopping = false;
    loop {
        // The primary's fd carries its own timer: no timeout is needed.
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        for ev in &events {
            match ev.token() {
                PRIMARY => {
                    out.clear();
                    primary.poll(&mut out, Some(Duration::ZERO))?;
                    for event in &out {
                        cluster::report(event);
                        if stopping && matches!(event, Event::AllDisconnected) {
                            return Ok(());
                        }
                    }
                }
                STDIN => {
                    // One read per readiness: a command line is short, and a read of 64 KiB
                    // takes all a terminal or a pipe holds (reading until `WouldBlock` would
                    // need standard input non-blocking, which its other users would see).
                    let mut buf = vec![0u8; 64 * 1024];
                    match std::io::stdin().lock().read(&mut buf) {
                        Ok(0) | Err(_) => {
                            // End of input: the cluster keeps serving; stdin is not watched.
                            poll.registry().deregister(&mut SourceFd(&stdin_fd))?;
                        }
                        Ok(n) => pending.push_str(&String::from_utf8_lossy(&buf[..n])),
                    }
                    while let Some(at) = pending.find('\n') {
                        let line: String = pending.drain(..=at).collect();
                        command(primary, line.trim(), &mut stopping)?;
                    }
                }
                _ => {}
            }
        }
    }
}

/// One command from standard input.
fn command(primary: &Primary, line: &str, stopping: &mut bool) -> ringleader::Result<()> {
    match line {
        "status" => {
            let metrics = primary.metrics();
            let states: Vec<String> = metrics
                .workers
                .iter()
                .map(|w| format!("{}:{}:{:?}", w.id, w.pid, w.state))
                .collect();
            println!(
                "status: {} workers [{}], {} connections accepted",
                metrics.workers.len(),
                states.join(" "),
                metrics.cluster.accepted
            );
        }
        "roll" => primary.roll(Roll::default())?,
        "quit" => {
            *stopping = true;
            primary.disconnect_all()?;
        }
        "" => {}
        other => println!("unknown command {other:?}: status, roll or quit"),
    }
    Ok(())
}
