//! `ringleader run`: runs a program's workers under ringleader's supervisor.
//!
//! Three kinds of worker: unmodified Node.js cluster apps (`node app.js`: Node's own IPC
//! protocol, picked when PROGRAM is `node`), socket-activated servers (with `--listen`: any
//! program that serves on the sockets systemd's convention passes at fd 3 on), and programs
//! built on the ringleader crate.
//! The supervisor is `Primary::supervise`: INT and TERM stop gracefully, QUIT at once, HUP
//! rolls the workers, USR2 upgrades this process, TTIN and TTOU add and retire one; workers
//! that exit unasked are replaced with a back-off. The lines it prints are Node's familiar
//! ones (`Primary N is running`, `worker N died`).

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ringleader::{
    Ending, Event, ProxyProtocol, Respawn, Role, Scheduling, Settings, SharedPolicy, Stdio,
    Supervise, WorkerProtocol,
};

use crate::relay::Relays;

#[derive(clap::Args, Debug)]
pub(crate) struct Run {
    /// Read options from this TOML file: each flag by its long name (`workers = 4`,
    /// `listen = ["web=127.0.0.1:8000"]`, `no-prefix = true`) and `command = ["node",
    /// "app.js"]` for PROGRAM. Flags given here win over the file's.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Workers to fork, at least 1 [default: one per CPU].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    workers: Option<u32>,
    /// How connections reach the workers: rr (the primary hands them out), none (a shared
    /// socket), reuseport (a socket each), steer (a socket each, steered by queue depth), a
    /// load-aware hand-off policy (lc, p2c, weighted), or sticky sessions, each client to
    /// one worker by its address: sticky (handed out) or steer-sticky (steered by the
    /// kernel) [default: rr; none with --listen].
    #[arg(long)]
    policy: Option<String>,
    /// Run PROGRAM as a socket-activated server: the primary listens on ADDR (HOST:PORT,
    /// a name such as localhost resolved to its first address)
    /// and passes the socket at fd 3 on, with LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES
    /// (NAME, or `listen-N`). Repeat for more sockets. Takes --policy none, reuseport or
    /// steer.
    #[arg(long, value_name = "[NAME=]ADDR")]
    listen: Vec<String>,
    /// Serve GET /metrics (Prometheus), GET /status (JSON), GET /livez and GET /readyz on
    /// this address.
    #[arg(long)]
    admin: Option<std::net::SocketAddr>,
    /// Answer HAProxy's agent-check on this address (up with a weight, drain, down).
    #[arg(long)]
    agent: Option<std::net::SocketAddr>,
    /// How long workers may take to finish their connections when the command stops
    /// gracefully (TERM, INT) before they are killed, with whatever they started
    /// (gunicorn's graceful_timeout, PM2's kill_timeout).
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    stop_within: u64,
    /// How long the host says it is not ready, serving on, before a stop, roll, upgrade or
    /// retirement (a lame-duck, for a load balancer to move away) [default: 5000 with
    /// --admin or --agent, else 0].
    #[arg(long, value_name = "MS")]
    drain_delay: Option<u64>,
    /// Wait this long before replacing a worker that failed to boot (exited before it was
    /// online and listening); the wait doubles with each failure, up to 5 s. A worker that
    /// served and died, or was killed before it booted, is replaced at once, then after
    /// this long (at most 100 ms).
    #[arg(long, value_name = "MS", default_value_t = 100)]
    restart_delay: u64,
    /// Stop replacing a worker (its line of replacements) after this many boot failures
    /// within 30 s: a crash loop. Workers that served and died are always replaced.
    #[arg(long, value_name = "N", default_value_t = 5)]
    max_restarts: u32,
    /// Replace a worker whose resident set grows past SIZE (bytes, or with K, M or G,
    /// powers of 1024: 150M), gracefully: its successor is ready before it leaves. Read
    /// once a second.
    #[arg(long, value_name = "SIZE", value_parser = memory)]
    max_memory: Option<u64>,
    /// `auto`: pin worker i to CPU i (of those the primary may use), nginx's
    /// `worker_cpu_affinity auto`; a replacement takes its predecessor's.
    #[arg(long, value_enum, default_value_t = CpuAffinity::None)]
    cpu_affinity: CpuAffinity,
    /// Kill a worker that took no connection for this long while connections waited at it
    /// (stuck in a loop or a deadlock; gunicorn's `timeout`), and replace it: round-robin
    /// takes its connections back for the others, and under steer its replacement serves
    /// its socket's queue [default: off].
    #[arg(long, value_name = "MS")]
    kill_stalled_after: Option<u64>,
    /// For servers whose client speaks first (HTTP): hold each connection in the kernel
    /// until its client has sent something, or for about SECS (`TCP_DEFER_ACCEPT`, nginx's
    /// `deferred`), so that no worker takes a connection with nothing to read [default:
    /// off].
    #[arg(long, value_name = "SECS")]
    defer_accept: Option<u64>,
    /// The workers' TCP listeners on PORT get connections that start with a PROXY protocol
    /// header (HAProxy's `send-proxy` or `send-proxy-v2`, v1 or v2). The primary reads it,
    /// its client is the one --policy sticky places by, and the workers get the connection
    /// without it. Repeat, or separate by commas, for more ports. Round-robin policies
    /// only (rr, lc, p2c, weighted, sticky).
    #[arg(long, value_name = "PORT", value_delimiter = ',')]
    proxy_protocol: Vec<u16>,
    /// How long a socket-activated server may take to start (to be first seen taking a
    /// connection) before --kill-stalled-after counts it stalled.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    start_within: u64,
    /// What the workers speak: node (Node.js's cluster IPC) or ringleader [default: node
    /// when PROGRAM is `node`].
    #[arg(long, value_enum)]
    protocol: Option<Protocol>,
    /// Relay the workers' output as they write it, without the `[worker N] ` before each
    /// line.
    #[arg(long)]
    no_prefix: bool,
    /// The program and its arguments (or `command` in the --config file).
    #[arg(last = true)]
    program: Vec<OsString>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Node,
    Ringleader,
}

/// How long a worker may take to come online before the command says why it may not.
const ONLINE_HINT_AFTER: Duration = Duration::from_secs(3);

pub(crate) fn run(args: Run) -> Result<(), Box<dyn std::error::Error>> {
    let Role::Primary(primary) = ringleader::role()? else {
        return Err("ringleader run is a primary; it was started as a worker".into());
    };
    let (program, program_args) = args.program.split_first().ok_or(
        "no PROGRAM to run: give it after `--` (ringleader run -- node app.js), or as \
         `command = [\"node\", \"app.js\"]` in the --config file",
    )?;
    let is_node = Path::new(program)
        .file_name()
        .is_some_and(|n| n == "node" || n == "nodejs");
    let activated = sockets(&args.listen)?;
    let protocol = match (args.protocol, activated.is_empty()) {
        (Some(p), false) => {
            return Err(format!(
                "--listen runs PROGRAM as a socket-activated server; --protocol {} workers \
                 ask for their own sockets: drop one of the two",
                if p == Protocol::Node {
                    "node"
                } else {
                    "ringleader"
                }
            )
            .into());
        }
        (None, false) => WorkerProtocol::SocketActivated,
        (Some(Protocol::Node), true) => WorkerProtocol::Node,
        (Some(Protocol::Ringleader), true) => WorkerProtocol::Ringleader,
        (None, true) if is_node => WorkerProtocol::Node,
        (None, true) => WorkerProtocol::Ringleader,
    };
    let policy = args
        .policy
        .unwrap_or_else(|| if activated.is_empty() { "rr" } else { "none" }.to_owned());
    let scheduling = Scheduling::parse(&policy).ok_or_else(|| {
        format!("--policy {policy}: expected rr, none, reuseport, steer, lc, p2c, weighted, sticky or steer-sticky")
    })?;
    if !activated.is_empty() && scheduling == Scheduling::RoundRobin {
        return Err(format!(
            "--policy {policy} hands each connection to a worker that takes handed \
             connections, and a socket-activated server only accepts from its own socket: \
             use --policy none, reuseport or steer with --listen"
        )
        .into());
    }
    if !args.proxy_protocol.is_empty() && scheduling != Scheduling::RoundRobin {
        return Err(format!(
            "--proxy-protocol: the primary reads each connection's header, and under --policy \
             {policy} the workers accept by themselves; use rr, lc, p2c, weighted or sticky"
        )
        .into());
    }
    let mut settings = Settings::default()
        // Piped, to be relayed a whole line at a time (`relay`).
        .stdio(Stdio::Inherit, Stdio::Pipe, Stdio::Pipe)
        .exec(program)
        .args(program_args.to_vec())
        .scheduling(scheduling)
        .worker_protocol(protocol)
        .kill_stalled_after(args.kill_stalled_after.map(Duration::from_millis))
        .defer_accept(args.defer_accept.map(Duration::from_secs))
        .proxy_protocol(
            (!args.proxy_protocol.is_empty())
                .then(|| ProxyProtocol::on_ports(args.proxy_protocol.iter().copied())),
        )
        .start_within(Duration::from_millis(args.start_within));
    if let Some(policy) = SharedPolicy::named(&policy) {
        settings = settings.policy(policy);
    }
    primary.setup(settings)?;
    for (name, addr) in activated {
        primary
            .activation_socket(&name, addr)
            .map_err(|e| format!("--listen {name}={addr}: {}", e.report()))?;
    }
    if let Some(addr) = args.admin {
        let local = primary.serve_admin(addr)?;
        println!("Metrics on http://{local}/metrics, readiness on /readyz");
    }
    if let Some(addr) = args.agent {
        let local = primary.serve_agent(addr)?;
        println!("HAProxy's agent-check on {local}");
    }
    println!("Primary {} is running", std::process::id());
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = args.workers.map_or(cpus, |n| n as usize);
    let respawn = Respawn::default()
        .first_delay(Duration::from_millis(args.restart_delay))
        .give_up_after(args.max_restarts, Duration::from_secs(30));
    let mut supervise = Supervise::new(workers)
        .respawn(respawn)
        .stop_within(Duration::from_millis(args.stop_within));
    if let Some(bytes) = args.max_memory {
        supervise = supervise.max_memory(bytes);
    }
    supervise = supervise.cpu_affinity(args.cpu_affinity == CpuAffinity::Auto);
    if let Some(ms) = args.drain_delay {
        supervise = supervise.drain_delay(Duration::from_millis(ms));
    }
    let shown = program.to_string_lossy().into_owned();
    let mut relays = Relays::default();
    let online = Arc::new(AtomicBool::new(false));
    let mut hint = (protocol == WorkerProtocol::Ringleader).then(|| {
        let (online, shown) = (online.clone(), shown.clone());
        move || never_online_hint(&online, &shown)
    });
    let mut gave_up = None;
    let ending = primary.supervise(supervise, |primary, event| {
        match event {
            Event::Fork { worker, .. } => {
                if let Some(w) = primary.worker(*worker) {
                    let tag = (!args.no_prefix).then(|| format!("[worker {worker}] "));
                    relays.start(tag, w.take_stdout(), w.take_stderr());
                }
                // Started here, after the supervisor blocked its signals: the thread
                // inherits the mask.
                if let Some(hint) = hint.take() {
                    std::thread::spawn(hint);
                }
            }
            Event::Online { .. } => online.store(true, Ordering::Relaxed),
            Event::GaveUp { .. } => gave_up = Some(event.to_string()),
            _ => {}
        }
        report(event, protocol);
    })?;
    match ending {
        Ending::GaveUp => {
            let mut why = gave_up.unwrap_or_default();
            if protocol == WorkerProtocol::Ringleader && !online.load(Ordering::Relaxed) {
                why.push_str(&format!(
                    "; no worker ever came online: is {shown} a ringleader program? (a \
                     plain server takes --listen)"
                ));
            }
            eprintln!("No worker is left; giving up: {why}");
        }
        Ending::Upgraded => println!("The new primary serves; bye"),
        _ => {}
    }
    relays.finish(Duration::from_secs(1));
    std::process::exit(ending.exit_code());
}

/// `--cpu-affinity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum CpuAffinity {
    /// Workers run wherever the scheduler puts them.
    None,
    /// Worker i on CPU i.
    Auto,
}

/// `--max-memory`'s value.
fn memory(s: &str) -> Result<u64, String> {
    ringleader::Settings::parse_memory(s).ok_or_else(|| format!("{s:?} is not a size such as 150M"))
}

/// After `ONLINE_HINT_AFTER` with no worker online, says what the program may lack: a
/// program that is neither a ringleader program nor a Node cluster app never says it is
/// online, and would otherwise run on, silent, never served.
fn never_online_hint(online: &AtomicBool, program: &str) {
    std::thread::sleep(ONLINE_HINT_AFTER);
    if !online.load(Ordering::Relaxed) {
        eprintln!(
            "ringleader: no worker of {program} came online within {ONLINE_HINT_AFTER:?}: a \
             worker must be a ringleader program or a Node.js cluster app (run `node` itself, \
             or --protocol node); to run any other server, give it its sockets with \
             --listen HOST:PORT (socket activation)"
        );
    }
}

/// `--listen` values: `[NAME=]ADDR`, named `listen-N` when unnamed.
fn sockets(values: &[String]) -> Result<Vec<(String, SocketAddr)>, String> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let (name, addr) = match v.split_once('=') {
                Some((name, addr)) => (name.to_owned(), addr),
                None => (format!("listen-{}", i + 1), v.as_str()),
            };
            let addr = addr
                .to_socket_addrs()
                .map_err(|e| e.to_string())
                .and_then(|mut all| all.next().ok_or_else(|| "no address".to_owned()))
                .map_err(|e| {
                    format!(
                        "--listen {v}: {e}; expected [NAME=]HOST:PORT, as 127.0.0.1:8000, \
                         [::]:8000 or localhost:8000"
                    )
                })?;
            Ok((name, addr))
        })
        .collect()
}

/// Each event's own line (`Event`'s `Display`, Node's familiar wording), failures on
/// stderr; the routine ones (forks, messages) left out.
fn report(event: &Event, protocol: WorkerProtocol) {
    match event {
        // A socket-activated server is handed sockets the primary listens on; whether it
        // serves them, only its answers tell.
        Event::Listening { worker, address } if protocol == WorkerProtocol::SocketActivated => {
            println!("Worker {worker} was given the socket on {address}");
        }
        // Node's example's line.
        Event::Exit {
            worker,
            code,
            signal,
            ..
        } => {
            let how =
                signal.map_or_else(|| format!("code {}", code.unwrap_or(0)), |s| s.to_string());
            println!("worker {worker} died ({how})");
        }
        Event::Online { .. } => println!("{event}"),
        // Said with the reason when the command gives up.
        Event::GaveUp { .. } => {}
        e if e.is_routine() => {}
        e if e.is_failure() => eprintln!("{e}"),
        e => println!("{e}"),
    }
}
