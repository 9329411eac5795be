// A first cluster: two workers share one port, and each answers with its id.
// cargo run --example first, then: nc 127.0.0.1 3000 (PORT=8080 to change the port)
use std::io::Write;

use ringleader::{Event, Role};

fn main() -> Result<(), ringleader::Error> {
    match ringleader::role()? {
        // Node: cluster.isPrimary
        Role::Primary(primary) => {
            println!("Primary {} is running", std::process::id());
            for _ in 0..2 {
                primary.fork(&[])?; // cluster.fork()
            }
            // cluster.on('fork' / 'online' / 'listening' / 'exit' / ...)
            for event in primary.events() {
                match event? {
                    Event::Setup(_) => {}
                    Event::Exit { worker, .. } => println!("Worker {worker} died"),
                    event => println!("{event}"), // e.g. "Worker 1 listening on 127.0.0.1:3000"
                }
            }
        }
        // Node: cluster.worker
        Role::Worker(worker) => {
            let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
            // server.listen(): every worker listens on the same port.
            let listener = worker.listen_tcp(format!("127.0.0.1:{port}"))?;
            for stream in listener.incoming() {
                writeln!(stream?, "hello from worker {}", worker.id())?;
            }
        }
    }
    Ok(())
}
