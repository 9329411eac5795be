//! Behind a real HAProxy: two hosts, each a network namespace with a veth pair running
//! `hello` (its readiness on `--admin`, its agent on `--agent`, a lame-duck of 1.5 s), and
//! HAProxy in front balancing round-robin with a `/readyz` check, the agent-check and its
//! safe retries. POSTs over keep-alive go through it while host 1 is stopped (then started
//! again), rolled and upgraded: none may fail, since a POST that was sent cannot be sent
//! again. Retired to 1 of its 2 workers, host 1 gets about a third of the requests through
//! the agent's weight.
//!
//! Needs root, `ip` and HAProxy (ci/integration.sh installs it); says plainly when it
//! cannot run here. Its addresses (10.77.x.0/24) live only in the namespaces and veth pairs
//! it makes, and it removes them.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringleader_tests::load::{self, Load};
use ringleader_tests::{Spawned, WATCHDOG, example, free_port, signal};

/// `ip ARGS`, successful or the error it printed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A host: a network namespace joined to this one by a veth pair; removed on drop.
struct Host {
    ns: String,
    /// Its address, on its end of the pair.
    addr: String,
}

impl Host {
    fn new(n: u32) -> Result<Host, String> {
        let pid = std::process::id();
        let ns = format!("rl-{pid}-h{n}");
        let (outer, inner) = (format!("rl{pid}o{n}"), format!("rl{pid}i{n}"));
        let net = format!("10.77.{}", (pid % 120) * 2 + n);
        ip(&["netns", "add", &ns])?;
        let host = Host {
            ns: ns.clone(),
            addr: format!("{net}.2"),
        };
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", &ns,
        ])?;
        ip(&["addr", "add", &format!("{net}.1/24"), "dev", &outer])?;
        ip(&["link", "set", &outer, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{net}.2/24"),
            "dev",
            &inner,
        ])?;
        ip(&["-n", &ns, "link", "set", &inner, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(host)
    }

    /// `hello` in this host: 2 workers on port 8000, readiness on 9000, the agent on 9001,
    /// and a lame-duck of `drain_ms`.
    fn hello(&self, drain_ms: &str) -> Spawned {
        let (admin, agent) = (format!("{}:9000", self.addr), format!("{}:9001", self.addr));
        self.run_hello(
            2,
            &[
                "--admin",
                &admin,
                "--agent",
                &agent,
                "--drain-delay",
                drain_ms,
            ],
        )
    }

    /// `hello` in this host: `workers` workers on port 8000, with `args`.
    fn run_hello(&self, workers: usize, args: &[&str]) -> Spawned {
        let hello = example("hello");
        let n = workers.to_string();
        let mut all = vec![
            "netns",
            "exec",
            &self.ns,
            hello.to_str().expect("a UTF-8 path"),
            "--workers",
            &n,
            "--port",
            "8000",
        ];
        all.extend_from_slice(args);
        let h = Spawned::start("ip", &all, &[]);
        h.expect_listening(workers);
        h
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // The veth pair goes with the namespace.
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

/// HAProxy in front of `hosts`, on 127.0.0.1:`port`, with its runtime API on `socket`.
fn haproxy(dir: &std::path::Path, port: u16, hosts: &[&Host]) -> Spawned {
    let socket = dir.join("admin.sock");
    let mut config = format!(
        "global\n    stats socket {} mode 600 level admin\n\
         defaults\n    mode http\n    timeout connect 1s\n    timeout client 30s\n    \
         timeout server 30s\n    retries {retries}\n    option redispatch 1\n    \
         retry-on conn-failure\n\
         frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n\
         backend be\n    balance roundrobin\n    option httpchk GET /readyz\n    \
         http-response set-header x-host %s\n",
        socket.display(),
        retries = std::env::var("RINGLEADER_BALANCER_RETRIES").unwrap_or_else(|_| "3".into()),
    );
    for (i, h) in hosts.iter().enumerate() {
        config.push_str(&format!(
            "    server h{} {}:8000 weight 100 check port 9000 inter 500ms fall 1 rise 1 \
             agent-check agent-port 9001 agent-inter 500ms\n",
            i + 1,
            h.addr
        ));
    }
    start_haproxy(dir, "haproxy.cfg", &config, port)
}

/// HAProxy in the foreground with `config`, written to `dir`/`name`, once it listens on
/// 127.0.0.1:`port`.
fn start_haproxy(dir: &std::path::Path, name: &str, config: &str, port: u16) -> Spawned {
    let path = dir.join(name);
    std::fs::write(&path, config).expect("write HAProxy's configuration");
    let haproxy = Spawned::start(
        "haproxy",
        &["-db", "-f", path.to_str().expect("a UTF-8 path")],
        &[],
    );
    let deadline = Instant::now() + WATCHDOG;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "watchdog: HAProxy does not listen"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    haproxy
}

/// A runtime API command's answer.
fn runtime(dir: &std::path::Path, command: &str) -> String {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(dir.join("admin.sock")) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(WATCHDOG));
    let _ = writeln!(s, "{command}");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
}

/// Answers per host (`h1`, `h2`), as HAProxy's `x-host` header names them.
type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

fn count(counts: &Counts, host: &str) -> u64 {
    counts.lock().expect("lock").get(host).copied().unwrap_or(0)
}

/// Waits until `host` answered `n` more times.
fn until_answered(counts: &Counts, host: &str, n: u64) {
    let (from, deadline) = (count(counts, host), Instant::now() + WATCHDOG);
    while count(counts, host) < from + n {
        assert!(
            Instant::now() < deadline,
            "watchdog: {host} answers no more"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Why this test cannot run here, if it cannot.
fn cannot_run() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root (network namespaces need it)".into());
    }
    if Command::new("haproxy").arg("-v").output().is_err() {
        return Some("no haproxy (apt-get install haproxy)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("no ip command (iproute2)".into());
    }
    None
}

/// The lame-duck's length: 1.5 s, three agent checks; `RINGLEADER_BALANCER_DRAIN_MS=0`
/// measures what happens without one (benches/scripts/balancer.sh), and then failures are
/// counted, not refused. (`RINGLEADER_BALANCER_RETRIES` sets HAProxy's `retries`, 3.)
fn drain_ms() -> String {
    std::env::var("RINGLEADER_BALANCER_DRAIN_MS").unwrap_or_else(|_| "1500".into())
}

#[test]
fn a_host_stops_rolls_upgrades_and_retires_behind_haproxy_with_no_failed_post() {
    if let Some(why) = cannot_run() {
        eprintln!("balancer: NOT RUN: {why}");
        return;
    }
    let hosts = match (Host::new(1), Host::new(2)) {
        (Ok(a), Ok(b)) => [a, b],
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("balancer: NOT RUN: no network namespace here: {e}");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("rl-balancer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let drain = drain_ms();
    let measuring = drain == "0";
    let mut host1 = hosts[0].hello(&drain);
    let _host2 = hosts[1].hello(&drain);
    let port = free_port();
    let _haproxy = haproxy(&dir, port, &[&hosts[0], &hosts[1]]);
    let counts: Counts = Arc::default();
    let mut clients = Load::new();
    let c = counts.clone();
    clients.clients(16, move |stop| {
        load::post_keep_alive(port, stop, &|host: &str| {
            *c.lock().expect("lock").entry(host.to_owned()).or_default() += 1;
        })
    });
    until_answered(&counts, "h1", 200);
    until_answered(&counts, "h2", 200);
    let mut report = Vec::new();
    let mut failed_before = 0;
    let mut phase = |name: &str, started: Instant, clients: &Load| {
        let (failed, first) = clients.failed();
        report.push(format!(
            "{name}: {} failed POSTs, host 1 done in {:.1} s",
            failed - failed_before,
            started.elapsed().as_secs_f64()
        ));
        failed_before = failed;
        assert!(
            measuring || failed == 0,
            "{name}: the first: {first:?}; {report:?}"
        );
    };

    // A stop: host 1 leaves; then it starts again and serves.
    let started = Instant::now();
    signal(host1.pid(), rustix::process::Signal::TERM);
    assert_eq!(host1.wait(), Some(0));
    let stopped = started.elapsed();
    until_answered(&counts, "h2", 200);
    drop(host1);
    let host1 = hosts[0].hello(&drain);
    until_answered(&counts, "h1", 200);
    // What failed until host 1 is back; the time is its stop's.
    phase(
        "stop (TERM) and a new start",
        Instant::now() - stopped,
        &clients,
    );

    // A roll.
    let started = Instant::now();
    signal(host1.pid(), rustix::process::Signal::HUP);
    host1.expect_line("Replaced ");
    until_answered(&counts, "h1", 200);
    phase("roll (HUP)", started, &clients);

    // An upgrade: the old primary leaves once the new one's workers serve.
    let started = Instant::now();
    signal(host1.pid(), rustix::process::Signal::USR2);
    let new_pid: u32 = host1
        .expect_line("The new primary ")
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the new primary's pid");
    host1.expect_line("The new primary serves; bye");
    until_answered(&counts, "h1", 200);
    phase("upgrade (USR2)", started, &clients);

    // A retirement: 1 of 2 workers, and the agent says so by its weight.
    let started = Instant::now();
    signal(new_pid, rustix::process::Signal::TTOU);
    let deadline = Instant::now() + WATCHDOG;
    loop {
        let weight = runtime(&dir, "get weight be/h1");
        if weight.starts_with("50 ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "watchdog: h1's weight is {weight:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    phase("retire (TTOU)", started, &clients);
    // The lame-duck before the retirement took h1 out; its next health check (500 ms
    // apart) brings it back. The share counts from then.
    until_answered(&counts, "h1", 1);
    let (h1, h2) = (count(&counts, "h1"), count(&counts, "h2"));
    until_answered(&counts, "h2", 1000);
    let share = (count(&counts, "h1") - h1) as f64
        / ((count(&counts, "h1") - h1) + (count(&counts, "h2") - h2)) as f64;
    let tally = clients.stop();
    let answered: u64 = counts.lock().expect("lock").values().sum();
    eprintln!(
        "balancer: drain delay {drain} ms: {}; {answered} POSTs answered; host 1's share at \
         half weight: {:.0} %",
        report.join("; "),
        share * 100.0
    );
    if !measuring {
        assert!((0.20..=0.45).contains(&share), "host 1's share {share}");
        assert_eq!(tally.failed, 0, "{tally:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// HAProxy in TCP mode on 127.0.0.1:`port` in front of `host`, each connection introduced
/// by a PROXY protocol v2 header (`send-proxy-v2`).
fn haproxy_tcp_proxy_v2(dir: &std::path::Path, port: u16, host: &Host) -> Spawned {
    let config = format!(
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n    \
         timeout server 30s\n\
         frontend fe\n    bind 127.0.0.1:{port}\n    default_backend be\n\
         backend be\n    server h1 {}:8000 send-proxy-v2\n",
        host.addr
    );
    start_haproxy(dir, "haproxy-tcp.cfg", &config, port)
}

/// One GET from 127.0.2.`client` through HAProxy at 127.0.0.1:`port`: the worker that
/// answered (`x-worker-id`).
fn worker_through(client: u8, port: u16) -> Result<String, String> {
    let mut s = ringleader_tests::connect_from([127, 0, 2, client], port)?;
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    answer
        .lines()
        .find_map(|l| l.strip_prefix("x-worker-id: "))
        .map(|id| id.trim().to_owned())
        .ok_or_else(|| format!("answer {answer:?}"))
}

#[test]
fn behind_haproxy_with_send_proxy_v2_each_client_keeps_its_worker() {
    if let Some(why) = cannot_run() {
        eprintln!("balancer: NOT RUN: {why}");
        return;
    }
    let host = match Host::new(3) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("balancer: NOT RUN: no network namespace here: {e}");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("rl-balancer-pp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let _hello = host.run_hello(4, &["--policy", "sticky", "--proxy-protocol"]);
    let port = free_port();
    let _haproxy = haproxy_tcp_proxy_v2(&dir, port, &host);
    // Every connection reaches the host from HAProxy's one address: only the header tells
    // the clients apart.
    let mut owners: BTreeMap<u8, String> = BTreeMap::new();
    for round in 0..3 {
        for client in 1..=40u8 {
            let w = worker_through(client, port).unwrap_or_else(|e| panic!("client {client}: {e}"));
            let first = owners.entry(client).or_insert_with(|| w.clone());
            assert_eq!(&w, first, "client 127.0.2.{client} moved in round {round}");
        }
    }
    let mut shares: BTreeMap<&str, usize> = BTreeMap::new();
    for w in owners.values() {
        *shares.entry(w).or_default() += 1;
    }
    eprintln!("balancer: send-proxy-v2, sticky: clients per worker {shares:?}");
    assert!(shares.len() >= 3, "clients per worker: {shares:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
