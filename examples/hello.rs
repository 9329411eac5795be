//! Node's cluster example, ringleader style: one worker per CPU, each echoing what the primary
//! sends it, respawned if it dies, all stopped gracefully on Ctrl-C / SIGTERM.
//!
//! ```text
//! cargo run --release --example hello -- [--workers N] [--rounds R]
//! ```
//! The primary greets every worker `R` times (default 3), prints the echoes, then disconnects
//! the cluster and exits. Shared server ports come with the next release.

use std::time::Instant;

use ringleader::{Event, Role, Signal};

fn arg(name: &str) -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
}

fn main() -> Result<(), ringleader::Error> {
    match ringleader::role()? {
        Role::Primary(primary) => {
            println!("Primary {} is running", std::process::id());
            primary.watch_signals(&[Signal::INT, Signal::TERM])?;
            let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
            let workers = arg("--workers").unwrap_or(cpus);
            let rounds = arg("--rounds").unwrap_or(3);
            for _ in 0..workers {
                primary.fork(&[])?;
            }
            let mut echoes = 0;
            let mut stopping = false;
            let mut sent_at = std::collections::HashMap::new();
            for event in primary.events() {
                match event? {
                    Event::Online { worker } => {
                        let handle = primary.worker(worker).expect("just online");
                        for round in 1..=rounds {
                            handle.send_json(
                                &serde_json::json!({ "hello": worker, "round": round }),
                            )?;
                        }
                        sent_at.insert(worker, Instant::now());
                    }
                    Event::Message { worker, message } => {
                        echoes += 1;
                        let took = sent_at
                            .get(&worker)
                            .map(|t| t.elapsed())
                            .unwrap_or_default();
                        println!("worker {worker} echoed {} after {took:?}", message.text());
                        if echoes == workers * rounds && !stopping {
                            println!("Every worker answered; disconnecting the cluster");
                            stopping = true;
                            primary.disconnect_all()?;
                        }
                    }
                    Event::Exit {
                        worker,
                        code,
                        signal,
                        exited_after_disconnect,
                    } => {
                        let how = match (code, signal) {
                            (Some(code), _) => format!("code {code}"),
                            (None, Some(signal)) => format!("signal {signal}"),
                            _ => "an unknown cause".into(),
                        };
                        println!("worker {worker} died ({how})");
                        if !exited_after_disconnect && !stopping {
                            println!("Starting a replacement");
                            primary.fork(&[])?;
                        }
                    }
                    Event::Signal(signal) => {
                        println!("Primary got {signal}; disconnecting the cluster");
                        stopping = true;
                        primary.disconnect_all()?;
                    }
                    Event::AllDisconnected => {
                        println!("All workers are gone; bye");
                        return Ok(());
                    }
                    Event::Error { worker, error } => eprintln!("worker {worker:?}: {error}"),
                    _ => {}
                }
            }
        }
        Role::Worker(worker) => {
            println!("Worker {} started", std::process::id());
            while let Some(message) = worker.recv()? {
                worker.send(&message.data)?;
            }
        }
    }
    Ok(())
}
