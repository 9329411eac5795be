//! `ringleader status`: a table of a running primary's workers (PM2's `pm2 ls`), read from
//! its admin endpoint's `GET /status` (`ringleader run --admin ADDR`).
//!
//! ```text
//! Primary 4210: policy rr, up 2m 5s, ready (2 of 2 listening), on 127.0.0.1:8000
//! WORKER  PID   STATE      UPTIME  RESTARTS  ACTIVE  QUEUED  MEMORY    CPU
//! 1       4215  listening  2m 5s   0         3       0       41.2 MiB  12.5%
//! 2       4216  listening  2m 5s   0         2       0       40.8 MiB  11.9%
//! ```
//!
//! CPU is the share of one CPU each worker used between two reads of the document (0.25 s
//! apart, or `--interval` apart with `--watch`). ACTIVE is `-` for workers that publish no
//! counts (Node workers, socket-activated servers).
//!
//! The HTTP request is written here and the answer parsed with `httparse`, the parser the
//! endpoint itself uses: the endpoint answers one `GET` with a `content-length` and closes,
//! so an HTTP client crate would bring a connection pool and TLS to read one body. The table
//! is a handful of left-aligned columns, padded with `format!`.

use std::io::{IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How long one read of the endpoint may take.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The gap between the two reads a plain `status` takes to measure CPU.
const CPU_SAMPLE: Duration = Duration::from_millis(250);

/// The largest answer read (a primary with thousands of workers is about 300 bytes each).
const MAX_ANSWER: u64 = 16 << 20;

#[derive(clap::Args, Debug)]
pub(crate) struct Status {
    /// The admin endpoint of the primary (what `ringleader run --admin` serves on).
    #[arg(long, env = "RINGLEADER_ADMIN")]
    admin: Option<SocketAddr>,
    /// Take `admin` from this `ringleader run` config file.
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Refresh the table in place until interrupted (PM2's `monit`).
    #[arg(long)]
    watch: bool,
    /// How often --watch refreshes.
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(100..))]
    interval: u64,
    /// Print the endpoint's JSON document as it is.
    #[arg(long, conflicts_with = "watch")]
    json: bool,
}

/// The parts of `/status` the table shows (the library's `Metrics`, read back).
#[derive(Deserialize, Debug)]
struct Document {
    primary: Primary,
    workers: Vec<Worker>,
    health: Health,
}

#[derive(Deserialize, Debug)]
struct Primary {
    pid: u32,
    policy: String,
    listeners: Vec<String>,
    uptime_seconds: f64,
}

#[derive(Deserialize, Debug)]
struct Worker {
    id: u64,
    pid: u32,
    phase: String,
    uptime_seconds: f64,
    restarts: u64,
    queued: u64,
    active: Option<u64>,
    rss_bytes: Option<u64>,
    cpu_seconds: Option<f64>,
}

#[derive(Deserialize, Debug)]
struct Health {
    listening: usize,
    wanted: usize,
    draining: bool,
    reason: Option<String>,
}

pub(crate) fn status(args: Status) -> Result<(), Box<dyn std::error::Error>> {
    let addr = args.admin.ok_or(
        "which primary? Give --admin ADDR, the address `ringleader run --admin ADDR` serves \
         on (or set RINGLEADER_ADMIN, or --config FILE with `admin = \"ADDR\"`)",
    )?;
    if args.json {
        print!("{}", fetch(addr)?);
        return Ok(());
    }
    let mut before = (Instant::now(), read(addr)?);
    if !args.watch {
        std::thread::sleep(CPU_SAMPLE);
        let now = (Instant::now(), read(addr)?);
        print!("{}", table(&now.1, Some((&before.1, now.0 - before.0))));
        return Ok(());
    }
    let terminal = std::io::stdout().is_terminal();
    let mut first = true;
    loop {
        std::thread::sleep(Duration::from_millis(args.interval));
        let now = (
            Instant::now(),
            read(addr).map_err(|e| format!("{e} (it served before)"))?,
        );
        let shown = table(&now.1, Some((&before.1, now.0 - before.0)));
        let mut out = std::io::stdout().lock();
        // In place on a terminal (home, clear); one table after another elsewhere.
        if terminal {
            write!(out, "\x1b[H\x1b[2J")?;
        } else if !first {
            writeln!(out)?;
        }
        write!(out, "{shown}")?;
        out.flush()?;
        first = false;
        before = now;
    }
}

/// The endpoint's `/status` document.
fn read(addr: SocketAddr) -> Result<Document, String> {
    let body = fetch(addr)?;
    serde_json::from_str(&body).map_err(|e| {
        format!("{addr}/status is not the document of a ringleader primary of this version: {e}")
    })
}

/// `GET /status` at `addr`: the body of a 200 answer.
fn fetch(addr: SocketAddr) -> Result<String, String> {
    let failed = |e: std::io::Error| {
        format!(
            "nothing answers at {addr} ({e}): is `ringleader run --admin {addr}` running, and \
             is this its admin address?"
        )
    };
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(failed)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(failed)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(failed)?;
    stream
        .write_all(
            format!("GET /status HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .map_err(failed)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .map_err(failed)?;
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let not_ours =
        |why: &str| format!("{addr} answered, but not as a ringleader admin endpoint: {why}");
    let start = match response.parse(&answer) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(not_ours("the answer ended early")),
        Err(e) => return Err(not_ours(&e.to_string())),
    };
    let body = String::from_utf8_lossy(&answer[start..]).into_owned();
    match response.code {
        Some(200) => Ok(body),
        code => Err(not_ours(&format!(
            "GET /status got {} {}",
            code.unwrap_or(0),
            body.trim()
        ))),
    }
}

/// The table, with CPU shares measured against `before`, read `gap` earlier.
fn table(now: &Document, before: Option<(&Document, Duration)>) -> String {
    let p = &now.primary;
    let h = &now.health;
    let readiness = match (&h.reason, h.draining) {
        (_, true) => "draining (lame duck)".to_owned(),
        (None, false) => format!("ready ({} of {} listening)", h.listening, h.wanted),
        (Some(why), false) => format!("not ready: {why}"),
    };
    let on = if p.listeners.is_empty() {
        "no listener yet".to_owned()
    } else {
        format!("on {}", p.listeners.join(", "))
    };
    let mut out = format!(
        "Primary {}: policy {}, up {}, {readiness}, {on}\n",
        p.pid,
        p.policy,
        uptime(p.uptime_seconds)
    );
    let mut rows = vec![
        [
            "WORKER", "PID", "STATE", "UPTIME", "RESTARTS", "ACTIVE", "QUEUED", "MEMORY", "CPU",
        ]
        .map(str::to_owned),
    ];
    for w in &now.workers {
        let earlier = before.and_then(|(b, gap)| {
            let was = b.workers.iter().find(|o| o.id == w.id && o.pid == w.pid)?;
            let used = w.cpu_seconds? - was.cpu_seconds?;
            Some(100.0 * used.max(0.0) / gap.as_secs_f64())
        });
        rows.push([
            w.id.to_string(),
            w.pid.to_string(),
            w.phase.clone(),
            uptime(w.uptime_seconds),
            w.restarts.to_string(),
            w.active.map_or_else(|| "-".to_owned(), |a| a.to_string()),
            w.queued.to_string(),
            w.rss_bytes.map_or_else(|| "-".to_owned(), bytes),
            earlier.map_or_else(|| "-".to_owned(), |c| format!("{c:.1}%")),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if now.workers.is_empty() {
        out.push_str("(no worker)\n");
    }
    out
}

/// `2h 5m`, `5m 3s`, `42s`.
fn uptime(seconds: f64) -> String {
    let s = seconds as u64;
    match (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60) {
        (0, 0, 0, s) => format!("{s}s"),
        (0, 0, m, s) => format!("{m}m {s}s"),
        (0, h, m, _) => format!("{h}h {m}m"),
        (d, h, _, _) => format!("{d}d {h}h"),
    }
}

/// `41.2 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_as_people_write_them() {
        assert_eq!(uptime(42.9), "42s");
        assert_eq!(uptime(303.0), "5m 3s");
        assert_eq!(uptime(7_500.0), "2h 5m");
        assert_eq!(uptime(90_000.0), "1d 1h");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(43_200_000), "41.2 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn the_table_has_a_row_per_worker_and_cpu_from_two_reads() {
        let doc = |cpu: f64| -> Document {
            serde_json::from_value(serde_json::json!({
                "primary": {"pid": 10, "policy": "rr", "listeners": ["127.0.0.1:8000"],
                            "uptime_seconds": 65.0},
                "workers": [
                    {"id": 1, "pid": 11, "phase": "listening", "uptime_seconds": 60.0,
                     "restarts": 0, "queued": 0, "active": 3, "rss_bytes": 1048576,
                     "cpu_seconds": cpu},
                    {"id": 2, "pid": 12, "phase": "starting", "uptime_seconds": 1.0,
                     "restarts": 2, "queued": 1, "active": null, "rss_bytes": null,
                     "cpu_seconds": null}
                ],
                "health": {"ready": true, "draining": false, "listening": 1, "wanted": 1,
                           "weight_percent": 50, "reason": null},
                "cluster": {}
            }))
            .expect("a document")
        };
        let shown = table(&doc(1.5), Some((&doc(1.0), Duration::from_secs(1))));
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(
            lines[0],
            "Primary 10: policy rr, up 1m 5s, ready (1 of 1 listening), on 127.0.0.1:8000"
        );
        assert!(
            lines[1].starts_with("WORKER  PID  STATE      UPTIME"),
            "{shown}"
        );
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "1",
                "11",
                "listening",
                "1m",
                "0s",
                "0",
                "3",
                "0",
                "1.0",
                "MiB",
                "50.0%"
            ]
        );
        let row: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(row, ["2", "12", "starting", "1s", "2", "-", "1", "-", "-"]);
    }
}
