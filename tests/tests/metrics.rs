//! Metrics and the admin endpoint: `GET /metrics` parses as Prometheus text with the names
//! its conventions ask for and counts what happened, `GET /status` is the same as JSON, and
//! hostile clients (hundreds of idle connections, a 1 MiB request) stall neither the
//! endpoint nor the hand-offs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use ringleader_tests::{Harness, WATCHDOG, fetch_hello, http_status};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

/// One GET to the admin endpoint: the status line and the body.
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    http_status(addr.port(), path)
}

fn cluster() -> (Harness, u16, SocketAddr) {
    let h = Harness::new(FIXTURE);
    h.fork("serve:127.0.0.1:0");
    h.fork("serve:127.0.0.1:0");
    let port = h.listening(2)[0].port;
    let admin = h.primary.serve_admin("127.0.0.1:0").expect("admin");
    (h, port, admin)
}

#[test]
fn metrics_parse_as_prometheus_text_and_count_what_happened() {
    let (h, port, admin) = cluster();
    let answered = h.drive(move || (0..20).filter(|_| fetch_hello(port).is_ok()).count());
    assert_eq!(answered, 20);
    let (status, body) = h.drive(move || get(admin, "/metrics"));
    assert_eq!(status, "HTTP/1.1 200 OK");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let value = |name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
                _ => f64::NAN,
            })
            .collect::<Vec<f64>>()
    };
    assert!(value("ringleader_connections_accepted_total", &[])[0] >= 20.0);
    assert!(value("ringleader_connections_handed_over_total", &[])[0] >= 20.0);
    assert_eq!(
        value("ringleader_workers", &[("state", "listening")]),
        [2.0]
    );
    for worker in ["1", "2"] {
        let handed = value(
            "ringleader_worker_connections_handed_total",
            &[("worker", worker)],
        );
        assert_eq!(handed.len(), 1, "worker {worker}");
        assert_eq!(
            value("ringleader_worker_info", &[("worker", worker)]),
            [1.0]
        );
    }
    let handed: f64 = value("ringleader_worker_connections_handed_total", &[])
        .iter()
        .sum();
    assert!(handed >= 20.0, "{handed}");
    assert_eq!(
        value("ringleader_rolls_total", &[("outcome", "done")]),
        [0.0]
    );
    for name in [
        "ringleader_worker_resident_memory_bytes",
        "ringleader_worker_cpu_seconds_total",
        "ringleader_worker_active_connections",
    ] {
        assert_eq!(value(name, &[]).len(), 2, "{name}");
    }
    assert!(value("ringleader_worker_resident_memory_bytes", &[])[0] > 0.0);
    // Prometheus's conventions: a prefix, `_total` on counters only, base units.
    for s in &scrape.samples {
        assert!(s.metric.starts_with("ringleader_"), "{}", s.metric);
        let counter = matches!(s.value, prometheus_parse::Value::Counter(_));
        assert_eq!(counter, s.metric.ends_with("_total"), "{}", s.metric);
    }
    // The same as JSON.
    let (status, body) = h.drive(move || get(admin, "/status"));
    assert_eq!(status, "HTTP/1.1 200 OK");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let workers = json["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 2);
    assert!(workers.iter().all(|w| w["state"] == "listening"));
    assert!(workers.iter().all(|w| w["phase"] == "listening"));
    // What `ringleader status` shows: the process's own figures, and the board's.
    for w in workers {
        assert!(w["rss_bytes"].as_u64() > Some(0), "{w}");
        assert!(w["cpu_seconds"].as_f64() >= Some(0.0), "{w}");
        assert!(w["active"].as_u64().is_some(), "{w}");
    }
    assert_eq!(json["primary"]["pid"], std::process::id());
    assert_eq!(json["primary"]["policy"], "rr");
    assert_eq!(
        json["primary"]["listeners"],
        serde_json::json!([format!("127.0.0.1:{port}")])
    );
    assert!(json["cluster"]["accepted"].as_u64() >= Some(20));
    // Anything else is refused plainly.
    let (status, _) = h.drive(move || get(admin, "/nope"));
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert_eq!(h.primary.metrics().workers.len(), 2);
}

/// The Grafana dashboard (`contrib/grafana/ringleader.json`) queries only metrics that
/// `/metrics` has: every `ringleader_…` name in its queries is a family the endpoint emits.
#[test]
fn the_grafana_dashboard_queries_only_metrics_the_endpoint_emits() {
    const DASHBOARD: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../contrib/grafana/ringleader.json"
    );
    let (h, _port, admin) = cluster();
    let (_, body) = h.drive(move || get(admin, "/metrics"));
    let emitted: std::collections::BTreeSet<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("the dashboard"))
            .expect("JSON");
    // Every query: the panels' and the variables'.
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            queries.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().expect("list") {
        if let Some(q) = variable["query"]["query"].as_str() {
            queries.push(q.to_owned());
        }
    }
    let mut used = std::collections::BTreeSet::new();
    for q in &queries {
        let mut rest = q.as_str();
        while let Some(at) = rest.find("ringleader_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            used.insert(name);
        }
    }
    assert!(used.len() >= 20, "{used:?}");
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !emitted.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "not emitted: {missing:?}; emitted: {emitted:?}"
    );
}

#[test]
fn hostile_admin_clients_stall_neither_the_endpoint_nor_the_hand_offs() {
    let (h, port, admin) = cluster();
    let (served, big, metrics) = h.drive(move || {
        // 500 connections that never send a byte.
        let idle: Vec<TcpStream> = (0..500)
            .filter_map(|_| TcpStream::connect(admin).ok())
            .collect();
        // A 1 MiB request: answered 431 (or cut off) once 8 KiB are in.
        let big = std::thread::spawn(move || {
            let mut s = TcpStream::connect(admin).expect("connect");
            s.set_read_timeout(Some(WATCHDOG)).expect("timeout");
            let mut request = b"GET /metrics HTTP/1.1\r\nx: ".to_vec();
            request.resize(1 << 20, b'a');
            let _ = s.write_all(&request);
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            answer.lines().next().unwrap_or_default().to_owned()
        });
        let served = (0..200).filter(|_| fetch_hello(port).is_ok()).count();
        let big = big.join().expect("big request");
        // The endpoint still answers while the idle ones are open: the silent make room.
        let metrics = get(admin, "/metrics").0;
        drop(idle);
        (served, big, metrics)
    });
    assert_eq!(served, 200);
    assert!(
        big.is_empty() || big == "HTTP/1.1 431 Request Header Fields Too Large",
        "{big:?}"
    );
    assert_eq!(metrics, "HTTP/1.1 200 OK");
    // The primary still hands connections over at once.
    let answered = h.drive(move || (0..20).filter(|_| fetch_hello(port).is_ok()).count());
    assert_eq!(answered, 20);
}
