//! The primary of the examples' clusters (`hello`, `hello_tokio`): the command line, the
//! supervisor with gunicorn's and nginx's signal conventions, and what it prints.

use std::time::Duration;

use ringleader::{
    Ending, Event, Primary, ProxyProtocol, Scheduling, Settings, SharedPolicy, Supervise,
};

/// How long a graceful stop may take.
pub(crate) const STOP_WITHIN: Duration = Duration::from_secs(5);

/// How long a worker may take no connection while some wait before it is killed.
const STUCK: Duration = Duration::from_secs(30);

/// Node's hello-world cluster: one worker per CPU serving HTTP on one port.
#[derive(clap::Parser, Debug)]
pub(crate) struct Args {
    /// Workers to fork, at least 1 [default: one per CPU].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) workers: Option<u32>,
    /// The port every worker listens on.
    #[arg(long, default_value_t = 8000)]
    pub(crate) port: u16,
    /// How connections reach the workers.
    #[arg(long, value_enum, default_value_t = Policy::Rr)]
    pub(crate) policy: Policy,
    /// Serve GET /metrics (Prometheus), GET /status (JSON), GET /livez and GET /readyz on
    /// this address.
    #[arg(long)]
    pub(crate) admin: Option<std::net::SocketAddr>,
    /// Answer HAProxy's agent-check on this address (up with a weight, drain, down).
    #[arg(long)]
    pub(crate) agent: Option<std::net::SocketAddr>,
    /// How long the host says it is not ready, serving on, before a stop, roll, upgrade or
    /// retirement (a lame-duck, for a load balancer to move away) [default: 5000 with
    /// --admin or --agent, else 0].
    #[arg(long, value_name = "MS")]
    pub(crate) drain_delay: Option<u64>,
    /// Replace a worker whose resident set grows past SIZE (bytes, or with K, M or G:
    /// 150M), gracefully.
    #[arg(long, value_name = "SIZE", value_parser = memory)]
    pub(crate) max_memory: Option<u64>,
    /// Hold each connection in the kernel until its request has begun to arrive, or for
    /// SECS (`TCP_DEFER_ACCEPT`, nginx's `deferred`): no worker takes a connection with
    /// nothing to read, so a stopped one holds none of those; 0 turns it off.
    #[arg(long, value_name = "SECS", default_value_t = 1)]
    pub(crate) defer_accept: u64,
    /// `auto`: pin worker i to CPU i (of those the primary may use), nginx's
    /// `worker_cpu_affinity auto`; a replacement takes its predecessor's.
    #[arg(long, value_enum, default_value_t = CpuAffinity::None)]
    pub(crate) cpu_affinity: CpuAffinity,
    /// Every connection starts with a PROXY protocol header (HAProxy's `send-proxy` or
    /// `send-proxy-v2`), which the primary reads: the client it names is the one policies
    /// see (sticky places by it). Round-robin policies only (rr, lc, sticky).
    #[arg(long)]
    pub(crate) proxy_protocol: bool,
}

/// `--cpu-affinity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum CpuAffinity {
    /// Workers run wherever the scheduler puts them.
    None,
    /// Worker i on CPU i.
    Auto,
}

/// `--max-memory`'s value.
fn memory(s: &str) -> Result<u64, String> {
    Settings::parse_memory(s).ok_or_else(|| format!("{s:?} is not a size such as 150M"))
}

impl Args {
    /// `--policy` as the crate's settings: its scheduling, and the hand-off policy.
    pub(crate) fn settings(&self) -> Settings {
        let scheduling = match self.policy {
            Policy::Rr | Policy::Lc | Policy::Sticky => Scheduling::RoundRobin,
            Policy::None => Scheduling::Shared,
            Policy::Reuseport => Scheduling::ReusePort,
            Policy::Steer | Policy::SteerSticky => Scheduling::Steered,
        };
        let settings = Settings::default()
            .scheduling(scheduling)
            .defer_accept(Some(Duration::from_secs(self.defer_accept)))
            .proxy_protocol(
                self.proxy_protocol
                    .then(|| ProxyProtocol::on_ports([self.port])),
            );
        let named = |name| SharedPolicy::named(name).expect("a built-in policy");
        match self.policy {
            Policy::Lc => settings.policy(named("lc")),
            Policy::Sticky | Policy::SteerSticky => settings.policy(named("sticky")),
            _ => settings,
        }
    }

    /// `--workers`, or one per CPU.
    pub(crate) fn workers(&self) -> usize {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        self.workers.map_or(cpus, |n| n as usize)
    }

    /// Serves `--admin` and `--agent`, if given, and says where.
    pub(crate) fn serve_admin(&self, primary: &Primary) -> Result<(), ringleader::Error> {
        if let Some(addr) = self.admin {
            let local = primary.serve_admin(addr)?;
            println!("Metrics on http://{local}/metrics, readiness on /readyz");
        }
        if let Some(addr) = self.agent {
            let local = primary.serve_agent(addr)?;
            println!("HAProxy's agent-check on {local}");
        }
        Ok(())
    }
}

/// `rr`: the primary accepts and hands each connection to a worker in turn; `lc`: to the
/// worker with the fewest open connections; `none`: the workers share one socket;
/// `reuseport`: each has its own; `steer`: each has its own, and the primary steers the
/// kernel's choice by load.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum Policy {
    Rr,
    Lc,
    /// Each client to one worker, by its address (`Sticky`).
    Sticky,
    None,
    Reuseport,
    Steer,
    /// Steered by the kernel, each client to one worker by its address.
    SteerSticky,
}

/// Runs the cluster's primary until the supervisor ends, then exits with its status.
///
/// # Errors
/// What setting the cluster up returns.
pub(crate) fn primary(primary: &Primary, args: &Args) -> Result<(), ringleader::Error> {
    println!("Primary {} is running", std::process::id());
    // A worker stuck for 30 s with connections waiting is killed and replaced
    // (gunicorn's timeout); what waited at it went to the others after 50 ms.
    primary.setup(args.settings().kill_stalled_after(Some(STUCK)))?;
    args.serve_admin(primary)?;
    let workers = args.workers();
    // gunicorn's and nginx's conventions: INT and TERM stop gracefully, QUIT at once,
    // HUP replaces every worker (a roll), USR2 upgrades the primary in place, TTIN and
    // TTOU add and retire one; workers that exit unasked are replaced, with a
    // back-off, and given up on when they keep dying at start.
    let mut supervise = Supervise::new(workers).stop_within(STOP_WITHIN);
    if let Some(ms) = args.drain_delay {
        supervise = supervise.drain_delay(Duration::from_millis(ms));
    }
    if let Some(bytes) = args.max_memory {
        supervise = supervise.max_memory(bytes);
    }
    supervise = supervise.cpu_affinity(args.cpu_affinity == CpuAffinity::Auto);
    let ending = primary.supervise(supervise, |_, event| report(event))?;
    match ending {
        Ending::GaveUp => eprintln!("No worker is left; giving up"),
        Ending::Upgraded => println!("The new primary serves; bye"),
        _ => println!("All workers are gone; bye"),
    }
    std::process::exit(ending.exit_code())
}

/// What the primary says about what happens in its cluster: each event's own line
/// (`Event`'s `Display`), failures on stderr; the routine ones (forks, messages) left out.
pub(crate) fn report(event: &Event) {
    match event {
        e if e.is_routine() => {}
        e if e.is_failure() => eprintln!("{e}"),
        e => println!("{e}"),
    }
}
