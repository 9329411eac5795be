//! `hello` with hyper 1.x in each worker: the same flags, the same answers (`hello world`,
//! `x-worker-id`), the same supervisor; each worker runs a tokio runtime, built after
//! `role()` (the runtime's threads must not exist when the process learns its role).
//!
//! Disconnected (a roll, a graceful stop), a worker drains: it stops accepting, every
//! connection finishes the request it is serving, keep-alive ones answer with
//! `connection: close` and idle ones close (hyper's graceful shutdown), then it exits.
//!
//! ```text
//! cargo run --release --features tokio --example hello_tokio -- [--workers N] [--port 8000]
//!     [--policy rr|none|reuseport|steer] [--admin 127.0.0.1:9000]
//! curl -i http://127.0.0.1:8000/
//! ```

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ringleader::Role;
use tokio::sync::{Notify, watch};

#[path = "common/cluster.rs"]
mod cluster;

use cluster::Args;

/// How long draining connections may take before the worker leaves anyway.
const DRAIN_WITHIN: Duration = Duration::from_secs(5);
/// How long a draining worker waits for a new connection's first request.
const FIRST_REQUEST_WITHIN: Duration = Duration::from_millis(100);

fn main() {
    if let Err(e) = run() {
        eprintln!("hello_tokio {}: {e}", std::process::id());
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    // Workers run this program again, with the same arguments.
    let args = <Args as clap::Parser>::parse();
    match ringleader::role()? {
        Role::Primary(primary) => cluster::primary(&primary, &args)?,
        Role::Worker(worker) => {
            println!("Worker {} started", std::process::id());
            tokio::runtime::Runtime::new()?.block_on(serve(worker, args.port))?;
        }
    }
    Ok(())
}

/// Accepts until the worker is disconnected, then drains.
async fn serve(worker: ringleader::Worker, port: u16) -> std::io::Result<()> {
    let listener = worker
        .listen_tcp(("0.0.0.0", port))
        .map_err(std::io::Error::other)?;
    let listener = ringleader::tokio::TcpListener::new(listener)?;
    let id = worker.id();
    let (draining, drain) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Disconnected: the listener stops.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => break,
            Err(e) => {
                eprintln!("worker {id}: accept: {e}");
                continue;
            }
        };
        let mut drain = drain.clone();
        connections.spawn(async move {
            // Rung at each request: a new connection's first one is awaited before it is
            // closed (its client has likely sent it already).
            let asked = Arc::new(Notify::new());
            let service = {
                let asked = asked.clone();
                hyper::service::service_fn(move |req| {
                    asked.notify_one();
                    hello(req, id)
                })
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = async { drop(drain.wait_for(|d| *d).await) } => {}
            }
            // Draining. A connection that has had no request yet gets its first: closing it
            // now would reset a request in flight (a client may resend only on a reused
            // connection).
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = tokio::time::timeout(FIRST_REQUEST_WITHIN, asked.notified()) => {}
            }
            // Finishes the request under way, says `connection: close`, closes; an idle
            // keep-alive connection closes at once.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
        // Reap what finished, so the set holds only open connections.
        while connections.try_join_next().is_some() {}
    }
    let _ = draining.send(true);
    let _ = tokio::time::timeout(DRAIN_WITHIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

async fn hello(
    _req: Request<Incoming>,
    id: ringleader::WorkerId,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::builder()
        .header("content-type", "text/plain")
        .header("x-worker-id", id.to_string())
        .body(Full::new(Bytes::from_static(b"hello world\n")))
        .unwrap_or_default())
}
