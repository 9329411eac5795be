//! `ringleader run`: runs a program's workers under ringleader's supervisor.
//!
//! ```text
//! ringleader run [--workers N] [--policy rr|none|reuseport|lc|p2c|weighted]
//!     [--admin ADDR] [--protocol node|ringleader] -- PROGRAM [ARGS...]
//! ```
//!
//! Two kinds of worker so far: unmodified Node.js cluster apps (`node app.js`: Node's own IPC
//! protocol, picked when PROGRAM is `node`), and programs built on the ringleader crate.
//! The supervisor is `Primary::supervise`: INT and TERM stop gracefully, QUIT at once, HUP
//! rolls the workers, USR2 upgrades this process, TTIN and TTOU add and retire one; workers
//! that exit unasked are replaced with a back-off. The lines it prints are Node's familiar
//! ones (`Primary N is running`, `worker N died`).

use std::ffi::OsString;
use std::path::Path;

use ringleader::{
    Ending, Event, Role, Scheduling, Settings, SharedPolicy, Supervise, WorkerProtocol,
};

/// Many cores for one program: its workers share its ports under a supervisor.
#[derive(clap::Parser, Debug)]
#[command(name = "ringleader", version)]
enum Cli {
    /// Runs PROGRAM's workers under the supervisor.
    Run(Run),
}

#[derive(clap::Args, Debug)]
struct Run {
    /// Workers to fork [default: one per CPU].
    #[arg(long)]
    workers: Option<usize>,
    /// How connections reach the workers: rr (the primary hands them out), none (a shared
    /// socket), reuseport (a socket each), or a load-aware hand-off policy (lc, p2c,
    /// weighted).
    #[arg(long, default_value = "rr")]
    policy: String,
    /// Serve GET /metrics (Prometheus) and GET /status (JSON) on this address.
    #[arg(long)]
    admin: Option<std::net::SocketAddr>,
    /// What the workers speak: node (Node.js's cluster IPC) or ringleader [default: node
    /// when PROGRAM is `node`].
    #[arg(long, value_enum)]
    protocol: Option<Protocol>,
    /// The program and its arguments.
    #[arg(required = true, last = true)]
    program: Vec<OsString>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Node,
    Ringleader,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("ringleader: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let Cli::Run(args) = <Cli as clap::Parser>::parse();
    let Role::Primary(primary) = ringleader::role()? else {
        return Err("ringleader run is a primary; it was started as a worker".into());
    };
    let (program, program_args) = args.program.split_first().ok_or("no PROGRAM")?;
    let is_node = Path::new(program)
        .file_name()
        .is_some_and(|n| n == "node" || n == "nodejs");
    let protocol = match args.protocol {
        Some(Protocol::Node) => WorkerProtocol::Node,
        Some(Protocol::Ringleader) => WorkerProtocol::Ringleader,
        None if is_node => WorkerProtocol::Node,
        None => WorkerProtocol::Ringleader,
    };
    let scheduling = Scheduling::parse(&args.policy).ok_or_else(|| {
        format!(
            "--policy {}: expected rr, none, reuseport, lc, p2c or weighted",
            args.policy
        )
    })?;
    let mut settings = Settings::default()
        .exec(program)
        .args(program_args.to_vec())
        .scheduling(scheduling)
        .worker_protocol(protocol);
    if let Some(policy) = SharedPolicy::named(&args.policy) {
        settings = settings.policy(policy);
    }
    primary.setup(settings)?;
    if let Some(addr) = args.admin {
        let local = primary.serve_admin(addr)?;
        println!("Metrics on http://{local}/metrics");
    }
    println!("Primary {} is running", std::process::id());
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let supervise = Supervise::new(args.workers.unwrap_or(cpus));
    let ending = primary.supervise(supervise, |_, event| report(event))?;
    match ending {
        Ending::GaveUp => eprintln!("No worker is left; giving up"),
        Ending::Upgraded => println!("The new primary serves; bye"),
        _ => {}
    }
    std::process::exit(ending.exit_code());
}

/// Node's familiar lines, and what ringleader adds.
fn report(event: &Event) {
    match event {
        Event::Online { worker } => println!("Worker {worker} is online"),
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
            worker, replaces, ..
        } => println!("Worker {worker} replaces worker {replaces}"),
        Event::RollDone { replaced, took } => println!("Replaced {replaced} workers in {took:?}"),
        Event::RollFailed { worker, reason } => {
            eprintln!("The roll stopped: worker {worker}: {reason}")
        }
        Event::Error { worker, error } => eprintln!("worker {worker:?}: {}", error.report()),
        _ => {}
    }
}
