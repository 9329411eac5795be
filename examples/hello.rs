//! Node's hello-world cluster, ringleader style: one worker per CPU, all serving HTTP/1.1 on one
//! port, each answer naming the worker; dead workers are replaced, with a back-off, and a
//! worker that keeps dying at start is given up on (the primary exits 1 when none is left);
//! Ctrl-C or SIGTERM stops the cluster gracefully.
//!
//! ```text
//! cargo run --release --example hello -- [--workers N] [--port 8000]
//!     [--policy rr|lc|sticky|none|reuseport|steer|steer-sticky] [--admin 127.0.0.1:9000]
//! curl -i http://127.0.0.1:8000/
//! ```

use ringleader::Role;

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/http.rs"]
mod http;

use cluster::Args;

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
        Role::Primary(primary) => cluster::primary(&primary, &args)?,
        Role::Worker(worker) => {
            println!("Worker {} started", std::process::id());
            let listener = worker.listen_tcp(("0.0.0.0", port))?;
            // One thread, one poll, every connection; returns once disconnected and drained.
            http::serve(&listener, &worker)?;
        }
    }
    Ok(())
}
