//! `hello` with hyper 1.x in each worker: the same flags, the same answers (`hello world`,
//! `x-worker-id`), the same supervisor; each worker runs a tokio runtime, built after
//! `role()` (the runtime's threads must not exist when the process learns its role).
//!
//! Disconnected (a roll, a graceful stop), a worker drains as `hello`'s does: it stops
//! accepting, every response says `connection: close`, a connection is closed once it has
//! been idle for 100 ms since the drain began, with no request begun (a request half sent is
//! awaited and answered), then it exits 0.
//!
//! ```text
//! cargo run --release --features tokio --example hello_tokio -- [--workers N] [--port 8000]
//!     [--policy rr|lc|sticky|none|reuseport|steer|steer-sticky] [--admin 127.0.0.1:9000]
//! curl -i http://127.0.0.1:8000/
//! ```

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ringleader::{Role, Worker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[path = "common/cluster.rs"]
mod cluster;

use cluster::Args;

/// How long draining connections may take before the worker leaves anyway.
const DRAIN_WITHIN: Duration = Duration::from_secs(5);
/// How often a connection looks whether it is idle, and how long a draining worker's
/// connection must be idle before it is closed (`hello`'s read timeout).
const DRAIN_CHECK: Duration = Duration::from_millis(100);
/// How long a keep-alive connection may stay idle (`hello`'s too).
const IDLE: Duration = Duration::from_secs(5);

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
    let mut connections = tokio::task::JoinSet::new();
    // `None` once the worker is disconnected (a roll, a graceful stop): the listener stops.
    while let Some((stream, _)) = listener.accept().await? {
        connections.spawn(connection(stream, worker.clone()));
        // Reap what finished, so the set holds only open connections.
        while connections.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(DRAIN_WITHIN, connections.join_all()).await;
    Ok(())
}

/// Serves one connection with keep-alive. Once the worker is disconnected it drains as
/// `hello`'s blocking server does: each response says `connection: close` (hyper closes
/// after it), and the connection is closed only once it has been idle for a `DRAIN_CHECK`
/// since the drain began, with no request begun, so that a request on its way (even half
/// its head) is answered, not reset.
async fn connection(stream: ringleader::Connection<tokio::net::TcpStream>, worker: Worker) {
    let id = worker.id();
    let counted = Counted {
        inner: stream,
        read: Arc::default(),
    };
    let read = counted.read.clone();
    // What had been read when the last request was dispatched: more means one has begun.
    let dispatched = Arc::new(AtomicU64::new(0));
    let service = {
        let (read, dispatched, worker) = (read.clone(), dispatched.clone(), worker.clone());
        hyper::service::service_fn(move |_req: Request<Incoming>| {
            dispatched.store(read.load(Ordering::Relaxed), Ordering::Relaxed);
            std::future::ready(Ok::<_, Infallible>(hello(id, !worker.is_connected())))
        })
    };
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(counted), service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(DRAIN_CHECK);
    let (mut last_read, mut idle_since, mut draining_since) = (0, Instant::now(), None);
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tick.tick() => {}
        }
        let now_read = read.load(Ordering::Relaxed);
        if now_read != last_read {
            (last_read, idle_since) = (now_read, Instant::now());
        }
        if now_read != dispatched.load(Ordering::Relaxed) {
            continue; // A request has begun: it is answered first.
        }
        if !worker.is_connected() {
            // Idle for a DRAIN_CHECK since the drain began: a request sent just as it began
            // is answered.
            idle_since = idle_since.max(*draining_since.get_or_insert_with(Instant::now));
            if idle_since.elapsed() >= DRAIN_CHECK {
                break;
            }
        }
        if idle_since.elapsed() >= IDLE {
            break;
        }
    }
    // No request under way: hyper closes an idle connection at once.
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// A connection that counts the bytes read from it.
struct Counted<S> {
    inner: S,
    read: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.read.fetch_add(n, Ordering::Relaxed);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `hello world`, naming the worker; `connection: close` once it drains.
fn hello(id: ringleader::WorkerId, close: bool) -> Response<Full<Bytes>> {
    let mut response = Response::builder()
        .header("content-type", "text/plain")
        .header("x-worker-id", id.to_string());
    if close {
        response = response.header("connection", "close");
    }
    response
        .body(Full::new(Bytes::from_static(b"hello world\n")))
        .unwrap_or_default()
}
