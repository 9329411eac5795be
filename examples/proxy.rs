//! A TCP reverse proxy on many cores, the skeleton a proxy author starts from: the primary
//! supervises (signals, rolls, upgrades, back-off) and spreads connections; each worker runs
//! a tokio runtime and forwards each connection it takes to the upstream, both ways, until
//! either side closes.
//!
//! Disconnected (a roll, a graceful stop), a worker stops accepting and lets the connections
//! it forwards run to their end, for up to `--drain-secs`, then leaves.
//!
//! ```text
//! cargo run --release --features tokio --example proxy -- --port 8080 \
//!     --upstream 127.0.0.1:8000 [--workers N] [--policy rr|lc|sticky|none|reuseport|steer|steer-sticky]
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use ringleader::{Role, Scheduling, Settings, Supervise};

/// A TCP reverse proxy: every connection to `--port` is forwarded to `--upstream`.
#[derive(clap::Parser, Debug)]
struct Args {
    /// The port every worker listens on.
    #[arg(long)]
    port: u16,
    /// Where connections go.
    #[arg(long)]
    upstream: SocketAddr,
    /// Workers to fork, at least 1 [default: one per CPU].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    workers: Option<u32>,
    /// How connections reach the workers: rr, none, reuseport, steer, or a hand-off policy
    /// (lc, p2c, weighted).
    #[arg(long, default_value = "rr")]
    policy: String,
    /// How long a leaving worker lets its connections run.
    #[arg(long, default_value_t = 30)]
    drain_secs: u64,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("proxy {}: {e}", std::process::id());
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = <Args as clap::Parser>::parse();
    match ringleader::role()? {
        Role::Primary(primary) => {
            let scheduling = Scheduling::parse(&args.policy)
                .ok_or_else(|| format!("--policy {}: unknown", args.policy))?;
            let mut settings = Settings::default().scheduling(scheduling);
            if let Some(policy) = ringleader::SharedPolicy::named(&args.policy) {
                settings = settings.policy(policy);
            }
            primary.setup(settings)?;
            let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
            let supervise = Supervise::new(args.workers.map_or(cpus, |n| n as usize))
                .stop_within(Duration::from_secs(args.drain_secs + 1));
            println!(
                "Proxy {} forwards :{} to {}",
                std::process::id(),
                args.port,
                args.upstream
            );
            let ending = primary.supervise(supervise, |_, event| {
                if let ringleader::Event::Listening { worker, address } = event {
                    println!(
                        "Worker {worker} listening on {}:{}",
                        address.address, address.port
                    );
                }
            })?;
            std::process::exit(ending.exit_code());
        }
        Role::Worker(worker) => {
            tokio::runtime::Runtime::new()?.block_on(forward(worker, &args))?;
        }
    }
    Ok(())
}

/// Accepts until the worker is disconnected, forwarding each connection to the upstream.
async fn forward(worker: ringleader::Worker, args: &Args) -> std::io::Result<()> {
    let listener = worker
        .listen_tcp(("0.0.0.0", args.port))
        .map_err(std::io::Error::other)?;
    let listener = ringleader::tokio::TcpListener::new(listener)?;
    let upstream = args.upstream;
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let mut client = match listener.accept().await {
            Ok(Some((client, _))) => client,
            // Disconnected: the listener stops.
            Ok(None) => break,
            Err(e) => {
                eprintln!("worker {}: accept: {e}", worker.id());
                continue;
            }
        };
        connections.spawn(async move {
            // The client's connection is counted on the board until this task ends.
            match tokio::net::TcpStream::connect(upstream).await {
                Ok(mut server) => {
                    let _ = server.set_nodelay(true);
                    let _ = client.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
                Err(e) => eprintln!("upstream {upstream}: {e}"),
            }
        });
        while connections.try_join_next().is_some() {}
    }
    let drain = Duration::from_secs(args.drain_secs);
    let _ = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}
