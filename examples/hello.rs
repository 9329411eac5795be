//! Node's hello-world cluster, ringleader style: one worker per CPU, all serving HTTP/1.1 on one
//! port, each answer naming the worker; dead workers are replaced, with a back-off, and a
//! worker that keeps dying at start is given up on (the primary exits 1 when none is left);
//! Ctrl-C or SIGTERM stops the cluster gracefully.
//!
//! ```text
//! cargo run --release --example hello -- [--workers N] [--port 8000]
//!     [--policy rr|none|reuseport|steer] [--admin 127.0.0.1:9000]
//! curl -i http://127.0.0.1:8000/
//! ```

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ringleader::{Connection, Ending, Event, Role, Scheduling, Settings, Supervise, Worker};

/// How long a keep-alive connection may stay idle, and how long a graceful stop may take.
const IDLE: Duration = Duration::from_secs(5);

/// How long a worker may take no connection while some wait before it is killed.
const STUCK: Duration = Duration::from_secs(30);

/// Node's hello-world cluster: one worker per CPU serving HTTP on one port.
#[derive(clap::Parser, Debug)]
struct Args {
    /// Workers to fork [default: one per CPU].
    #[arg(long)]
    workers: Option<usize>,
    /// The port every worker listens on.
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// How connections reach the workers.
    #[arg(long, value_enum, default_value_t = Policy::Rr)]
    policy: Policy,
    /// Serve GET /metrics (Prometheus) and GET /status (JSON) on this address.
    #[arg(long)]
    admin: Option<std::net::SocketAddr>,
}

/// `rr`: the primary accepts and hands each connection to a worker; `none`: the workers
/// share one socket; `reuseport`: each has its own; `steer`: each has its own, and the
/// primary steers the kernel's choice by load.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Policy {
    Rr,
    None,
    Reuseport,
    Steer,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("hello {}: {}", std::process::id(), e.report());
        std::process::exit(1);
    }
}

fn run() -> Result<(), ringleader::Error> {
    // Workers run this program again, with the same arguments.
    let args = <Args as clap::Parser>::parse();
    let port = args.port;
    match ringleader::role()? {
        Role::Primary(primary) => {
            println!("Primary {} is running", std::process::id());
            let scheduling = match args.policy {
                Policy::Rr => Scheduling::RoundRobin,
                Policy::None => Scheduling::Shared,
                Policy::Reuseport => Scheduling::ReusePort,
                Policy::Steer => Scheduling::Steered,
            };
            // A worker stuck for 30 s with connections waiting is killed and replaced
            // (gunicorn's timeout); what waited at it went to the others after 50 ms.
            primary.setup(
                Settings::default()
                    .scheduling(scheduling)
                    .kill_stalled_after(Some(STUCK)),
            )?;
            if let Some(addr) = args.admin {
                let local = primary.serve_admin(addr)?;
                println!("Metrics on http://{local}/metrics");
            }
            let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
            let workers = args.workers.unwrap_or(cpus);
            // gunicorn's and nginx's conventions: INT and TERM stop gracefully, QUIT at once,
            // HUP replaces every worker (a roll), USR2 upgrades the primary in place, TTIN and
            // TTOU add and retire one; workers that exit unasked are replaced, with a
            // back-off, and given up on when they keep dying at start.
            let supervise = Supervise::new(workers).stop_within(IDLE);
            let ending = primary.supervise(supervise, |_, event| report(event))?;
            match ending {
                Ending::GaveUp => eprintln!("No worker is left; giving up"),
                Ending::Upgraded => println!("The new primary serves; bye"),
                _ => println!("All workers are gone; bye"),
            }
            std::process::exit(ending.exit_code());
        }
        Role::Worker(worker) => {
            println!("Worker {} started", std::process::id());
            let listener = worker.listen_tcp(("0.0.0.0", port))?;
            let id = worker.id();
            let mut connections = Vec::new();
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        let worker = worker.clone();
                        connections.push(std::thread::spawn(move || serve(stream, &worker)));
                    }
                    Err(e) => eprintln!("worker {id}: accept: {e}"),
                }
                connections.retain(|c| !c.is_finished());
            }
            // Disconnected: finish the open connections (each ends when idle), then leave.
            for c in connections {
                let _ = c.join();
            }
        }
    }
    Ok(())
}

/// What the primary says about what happens in its cluster.
fn report(event: &Event) {
    match event {
        Event::Listening { worker, address } => {
            println!(
                "Worker {worker} listening on {}:{}",
                address.address, address.port
            );
        }
        Event::Exit {
            worker,
            code,
            signal,
            ..
        } => println!(
            "worker {worker} died ({})",
            code.map_or_else(|| format!("{signal:?}"), |c| c.to_string())
        ),
        Event::Respawned {
            worker,
            replaces,
            delay,
        } => {
            println!("Worker {worker} replaces worker {replaces} (after {delay:?})");
        }
        Event::GaveUp {
            worker,
            exits,
            window,
        } => eprintln!(
            "worker {worker} exited {exits} times within {window:?} soon after starting: \
             not replacing it"
        ),
        Event::Signal(signal) => println!("Primary got {signal}"),
        Event::StalledKilled { worker, stalled } => {
            eprintln!("worker {worker} took no connection for {stalled:?}: killed");
        }
        Event::RollStep { old, new } => println!("Worker {new} is ready; worker {old} leaves"),
        Event::RollDone { replaced, took } => println!("Replaced {replaced} workers in {took:?}"),
        Event::RollFailed { worker, reason } => {
            eprintln!("The roll stopped: worker {worker}: {reason}");
        }
        Event::UpgradeStarted { pid } => println!("Starting a new primary ({pid})"),
        Event::UpgradeReady { pid } => println!("The new primary {pid} serves; this one retires"),
        Event::UpgradeFailed { reason } => {
            eprintln!("The upgrade stopped: the new primary: {reason}");
        }
        Event::Error { worker, error } => eprintln!("worker {worker:?}: {}", error.report()),
        _ => {}
    }
}

/// How often an idle connection looks whether its worker is draining.
const DRAIN_CHECK: Duration = Duration::from_millis(100);

/// HTTP/1.1 with keep-alive: every request gets `hello world`. Once the worker is
/// disconnected (a roll, a graceful stop), it drains like a real server: the next response
/// on each connection says `connection: close`, and idle connections are closed, so that a
/// roll waits for no client and resets no request.
fn serve(mut stream: Connection<TcpStream>, worker: &Worker) -> io::Result<()> {
    let id = worker.id();
    stream.set_read_timeout(Some(DRAIN_CHECK))?;
    let mut buf = vec![0u8; 8192];
    let mut filled = 0;
    let mut idle_since = Instant::now();
    loop {
        let n = match stream.read(&mut buf[filled..]) {
            // A signal (SIGSTOP and SIGCONT of this worker, for one) interrupted the wait.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // Idle: closed when the worker drains, or after IDLE.
                if filled == 0 && (!worker.is_connected() || idle_since.elapsed() >= IDLE) {
                    return Ok(());
                }
                continue;
            }
            other => other?,
        };
        idle_since = Instant::now();
        if n == 0 {
            return Ok(());
        }
        filled += n;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let used = match req.parse(&buf[..filled]) {
                Ok(httparse::Status::Complete(used)) => used,
                Ok(httparse::Status::Partial) if filled < buf.len() => break,
                _ => {
                    stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")?;
                    return Ok(());
                }
            };
            let close = !worker.is_connected()
                || req.version == Some(0)
                || req.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("connection")
                        && h.value.eq_ignore_ascii_case(b"close")
                });
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 12\r\nx-worker-id: {id}\r\n{}\r\nhello world\n",
                if close { "connection: close\r\n" } else { "" }
            );
            stream.write_all(response.as_bytes())?;
            if close {
                return Ok(());
            }
            buf.copy_within(used..filled, 0);
            filled -= used;
            if filled == 0 {
                break;
            }
        }
    }
}
