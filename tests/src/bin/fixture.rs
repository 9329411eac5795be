//! The test fixture: a primary and a worker in one program.
//!
//! As a worker (forked by a test, or by this program as a primary) it behaves as
//! `FIXTURE_MODE` says. As a primary (`fixture <scenario>`) it runs one of the scenarios that
//! need a primary in its own process, printing `KEY value` lines for the test to read.

use std::io::Write;
use std::time::Duration;

use ringleader::{Event, Role, Settings, Worker};

/// This worker's board slot, read before `role()` takes the variable away (for `scribble`).
static BOARD_SLOT: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();

fn main() {
    if std::env::args().nth(1).as_deref() == Some("role-in-a-runtime") {
        // As `#[tokio::main]` does: the runtime's threads start before role().
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        match runtime.block_on(async { ringleader::role() }) {
            Ok(_) => out(format_args!("ROLE TAKEN")),
            Err(e) => out(format_args!("REFUSED {}", e.report())),
        }
        return;
    }
    if std::env::args().nth(1).as_deref() == Some("signals-after-a-thread") {
        let Ok(Role::Primary(primary)) = ringleader::role() else {
            panic!("a primary")
        };
        // Once the thread runs its own code: glibc starts a thread with every signal blocked
        // and gives it the creator's mask only then.
        let (running, started) = std::sync::mpsc::channel::<()>();
        let (_stop, parked) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let _ = running.send(());
            parked.recv()
        });
        started.recv().expect("the thread runs");
        match primary.watch_signals(&[ringleader::Signal::HUP]) {
            Ok(()) => out(format_args!("WATCHING")),
            Err(e) => out(format_args!("REFUSED {}", e.report())),
        }
        return;
    }
    BOARD_SLOT.get_or_init(|| {
        std::env::var("RINGLEADER_BOARD_SLOT")
            .ok()
            .and_then(|v| v.split(':').next()?.parse().ok())
    });
    let role = match ringleader::role() {
        Ok(role) => role,
        Err(e) => {
            eprintln!("fixture: {}", e.report());
            std::process::exit(101);
        }
    };
    match role {
        Role::Worker(worker) => {
            // FIXTURE_MODE_OVERRIDE, from the settings' base environment, wins over the
            // mode a worker was forked with: a roll's successors can behave differently.
            let mode = std::env::var("FIXTURE_MODE_OVERRIDE")
                .or_else(|_| std::env::var("FIXTURE_MODE"))
                .unwrap_or_else(|_| "echo".into());
            run_worker(&worker, &mode);
        }
        Role::Primary(primary) => {
            let scenario = std::env::args().nth(1).unwrap_or_default();
            if scenario == "signals" {
                // Report watched signals as events; keep one worker to show it is untouched.
                primary
                    .watch_signals(&[ringleader::Signal::USR1, ringleader::Signal::TERM])
                    .expect("watch");
                primary
                    .setup(Settings::default().args(Vec::<String>::new()))
                    .expect("setup");
                primary.fork(&[("FIXTURE_MODE", "echo")]).expect("fork");
                for event in primary.events() {
                    match event.expect("event") {
                        Event::Online { worker } => {
                            let pid = primary.worker(worker).map_or(0, |w| w.pid());
                            out(format_args!("READY {pid}"));
                        }
                        Event::Signal(sig) if sig == ringleader::Signal::TERM => {
                            out(format_args!("SIGNAL {sig}"));
                            primary.disconnect_all().expect("disconnect all");
                        }
                        Event::Signal(sig) => out(format_args!("SIGNAL {sig}")),
                        Event::Exit { code, signal, .. } => {
                            out(format_args!("EXIT {code:?} {signal:?}"))
                        }
                        Event::AllDisconnected => {
                            out(format_args!("DONE"));
                            return;
                        }
                        _ => {}
                    }
                }
                return;
            }
            if scenario == "clients" {
                // Load from a process of its own: `clients PORT N` opens N connections at once
                // and prints `ANSWERS <ok> <failed>` once every one has its answer or failed.
                let arg = |i: usize| {
                    std::env::args()
                        .nth(i)
                        .and_then(|p| p.parse::<u64>().ok())
                        .expect("argument")
                };
                let (port, n) = (arg(2) as u16, arg(3));
                let threads: Vec<_> = (0..n)
                    .map(|_| {
                        std::thread::spawn(move || -> Result<(), String> {
                            use std::io::Read;
                            let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
                                .map_err(|e| format!("connect: {e}"))?;
                            let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                            let mut out = String::new();
                            s.read_to_string(&mut out)
                                .map_err(|e| format!("read: {e}"))?;
                            if out.starts_with("hello from ") {
                                Ok(())
                            } else {
                                Err(format!("answer {out:?}"))
                            }
                        })
                    })
                    .collect();
                out(format_args!("STARTED"));
                let results: Vec<Result<(), String>> = threads
                    .into_iter()
                    .map(|t| t.join().unwrap_or_else(|_| Err("panicked".into())))
                    .collect();
                let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
                if let Some(Err(first)) = results.iter().find(|r| r.is_err()) {
                    eprintln!("clients: first failure: {first}");
                }
                out(format_args!("ANSWERS {ok} {}", n - ok));
                return;
            }
            if scenario == "supervised" {
                supervised(&primary);
                return;
            }
            if scenario == "upgradable" {
                upgradable(&primary);
                return;
            }
            if scenario == "systemd" {
                systemd(&primary);
                return;
            }
            if scenario == "cluster" {
                cluster(&primary);
                return;
            }
            if scenario == "starved" {
                starved(&primary);
                return;
            }
            if scenario == "probe" {
                // For ci/test: which backend a default primary gets here.
                out(format_args!("{:?}", primary.backend()));
                return;
            }
            run_primary(&primary, &scenario);
        }
    }
}

fn out(line: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

fn run_worker(worker: &Worker, mode: &str) {
    match mode {
        // Echo every message (and its fd) until the channel closes.
        "echo" => echo(worker),
        // Report what the worker sees of its start-up, then echo.
        "env" => {
            let env = |k: &str| std::env::var(k).ok();
            // Each open fd and what it is ("3 -> socket:[…]").
            let fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| {
                            let target = std::fs::read_link(e.path())
                                .map(|t| t.display().to_string())
                                .unwrap_or_default();
                            format!("{} -> {target}", e.file_name().to_string_lossy())
                        })
                        .collect()
                })
                .unwrap_or_default();
            let report = serde_json::json!({
                "id": worker.id(),
                "worker_id_env": env("RINGLEADER_WORKER_ID"),
                "channel_fd_env": env("RINGLEADER_CHANNEL_FD"),
                "foo": env("FOO"),
                "base": env("FIXTURE_BASE"),
                "cwd": std::env::current_dir().ok(),
                "args": std::env::args().skip(1).collect::<Vec<_>>(),
                "uid": rustix::process::getuid().as_raw(),
                "gid": rustix::process::getgid().as_raw(),
                "fds": fds,
            });
            worker.send_json(&report).expect("send report");
            echo(worker);
        }
        // Print to stdout and stderr, then echo.
        "print" => {
            println!("worker {} stdout", worker.id());
            eprintln!("worker {} stderr", worker.id());
            echo(worker);
        }
        m if m.starts_with("exit:") => std::process::exit(m[5..].parse().unwrap_or(1)),
        m if m.starts_with("send-exit:") => {
            worker.send(b"bye").expect("send");
            std::process::exit(m[10..].parse().unwrap_or(1));
        }
        // The worker's own graceful disconnect; exit 0 only if it was seen as voluntary.
        "disconnect" => {
            worker.disconnect().expect("disconnect");
            let ok = worker.exited_after_disconnect() && !worker.is_connected();
            std::process::exit(if ok { 0 } else { 3 });
        }
        "kill-self" => worker.kill(),
        // Start a child that would outlive this worker (`sleep 60`), send its pid, then echo.
        "spawn-child" => {
            let child = std::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .expect("spawn sleep");
            worker
                .send(child.id().to_string().as_bytes())
                .expect("send the child's pid");
            echo(worker);
            // Left running on purpose: the primary ends it with this worker's group.
            std::mem::forget(child);
        }
        // Send `n` numbered messages as fast as possible, then `done`, then echo.
        m if m.starts_with("flood:") => {
            let n: u64 = m[6..].parse().unwrap_or(0);
            for i in 0..n {
                worker.send(&i.to_le_bytes()).expect("send");
            }
            worker.send(b"done").expect("send");
            echo(worker);
        }
        // Listen, answer every connection with a line naming this worker, close it; when the
        // primary stops handing connections here, fall back to echoing messages.
        // Serve once the primary says so (any message).
        m if m.starts_with("serve-when-told:") => {
            if matches!(worker.recv(), Ok(Some(_))) {
                let listener = worker.listen_tcp(&m[16..]).expect("listen");
                serve(worker, &listener);
            }
        }
        // `leak:ADDR:KIB`: serves as `serve:` does, and keeps KIB KiB (written, so resident)
        // for each connection it answers: a leak.
        m if m.starts_with("leak:") => {
            let (addr, kib) = m[5..].rsplit_once(':').expect("leak:ADDR:KIB");
            let kib: usize = kib.parse().expect("KiB");
            let listener = worker.listen_tcp(addr).expect("listen");
            let line = format!("hello from {}\n", worker.id());
            let mut kept: Vec<Vec<u8>> = Vec::new();
            for stream in listener.incoming() {
                let mut stream = stream.expect("accept");
                kept.push(vec![1; kib << 10]);
                let _ = stream.write_all(line.as_bytes());
            }
        }
        // `serve-once:ADDR`: answers one connection as `serve:` does, then exits 1 (a request
        // of death).
        m if m.starts_with("serve-once:") => {
            let listener = worker.listen_tcp(&m[11..]).expect("listen");
            if let Some(Ok(mut stream)) = listener.incoming().next() {
                let _ = writeln!(stream, "hello from {}", worker.id());
            }
            std::process::exit(1);
        }
        // `take-one:ADDR`: takes one connection, keeps it unanswered, and never accepts
        // again while it stays connected: a worker stuck in its own code.
        m if m.starts_with("take-one:") => {
            let listener = worker.listen_tcp(&m[9..]).expect("listen");
            let _held = listener.incoming().next();
            loop {
                std::thread::park();
            }
        }
        m if m.starts_with("serve:") => {
            let listener = worker.listen_tcp(&m[6..]).expect("listen");
            serve(worker, &listener);
            drop(listener);
            echo(worker);
        }
        // `serve-peer:ADDR`: `serve:`, each answer naming the client `accept` gave and, for a
        // connection that came with a PROXY protocol header, where it went:
        // `hello from N peer ADDR to ADDR|-`.
        m if m.starts_with("serve-peer:") => {
            let listener = worker.listen_tcp(&m[11..]).expect("listen");
            loop {
                let Ok((mut conn, peer)) = listener.accept() else {
                    break;
                };
                let to = conn
                    .proxied()
                    .map_or("-".to_owned(), |p| p.destination.to_string());
                let line = format!("hello from {} peer {peer} to {to}\n", worker.id());
                let _ = conn.write_all(line.as_bytes());
            }
            drop(listener);
            echo(worker);
        }
        // `tokio-serve:ADDR`: `serve:` from a tokio runtime (ringleader::tokio::TcpListener).
        m if m.starts_with("tokio-serve:") => {
            let listener = worker.listen_tcp(&m[12..]).expect("listen");
            tokio_runtime().block_on(async {
                let listener = ringleader::tokio::TcpListener::new(listener).expect("register");
                let line = format!("hello from {}\n", worker.id());
                // The natural loop: `None` once disconnected.
                while let Some((mut stream, _)) = listener.accept().await.expect("accept") {
                    let line = line.clone();
                    tokio::spawn(async move {
                        use tokio::io::AsyncWriteExt;
                        let _ = stream.write_all(line.as_bytes()).await;
                    });
                }
            });
            echo(worker);
        }
        // `tokio-unix:PATH`: `serve:` on a Unix socket, from a tokio runtime.
        m if m.starts_with("tokio-unix:") => {
            let listener = worker.listen_unix(&m[11..]).expect("listen");
            tokio_runtime().block_on(async {
                let listener = ringleader::tokio::UnixListener::new(listener).expect("register");
                let line = format!("hello from {}\n", worker.id());
                while let Some(mut stream) = listener.accept().await.expect("accept") {
                    use tokio::io::AsyncWriteExt;
                    let _ = stream.write_all(line.as_bytes()).await;
                }
            });
            echo(worker);
        }
        // `tokio-udp:ADDR`: `udp:` from a tokio runtime.
        m if m.starts_with("tokio-udp:") => {
            let socket = worker.bind_udp(&m[10..]).expect("bind");
            let pong = format!("pong from {}", worker.id());
            tokio_runtime().block_on(async {
                let socket = ringleader::tokio::UdpSocket::new(socket).expect("register");
                let mut buf = [0u8; 64];
                while let Ok((_, from)) = socket.recv_from(&mut buf).await {
                    let _ = socket.send_to(pong.as_bytes(), from).await;
                }
            });
        }
        // `tokio-echo`: `echo`, receiving with ringleader::tokio::Worker.
        "tokio-echo" => {
            tokio_runtime().block_on(async {
                let async_worker =
                    ringleader::tokio::Worker::new(worker.clone()).expect("register");
                while let Ok(Some(message)) = async_worker.recv().await {
                    let _ = worker.send(&message.data);
                }
            });
        }
        // `nb-serve:ET|LT:ADDR`: `serve:` from a loop of the worker's own over the non-blocking
        // listener's fd: edge-triggered accepting until `WouldBlock`, or level-triggered
        // accepting one connection per wake-up.
        m if m.starts_with("nb-serve:") => {
            let (trigger, addr) = m[9..].split_once(':').expect("nb-serve:ET|LT:ADDR");
            let listener = worker.listen_tcp(addr).expect("listen");
            listener.set_nonblocking(true).expect("non-blocking");
            own_loop(worker, &listener, trigger == "ET");
            echo(worker);
        }
        // `ready-after:MS:ADDR`: `serve:`, saying it is ready (`Worker::ready`) MS after it
        // listens, as an application that warms up would.
        m if m.starts_with("ready-after:") => {
            let (ms, addr) = m[12..].split_once(':').expect("ready-after:MS:ADDR");
            let listener = worker.listen_tcp(addr).expect("listen");
            let ms: u64 = ms.parse().expect("MS");
            std::thread::scope(|s| {
                s.spawn(|| {
                    std::thread::sleep(Duration::from_millis(ms));
                    worker.ready().expect("ready");
                });
                serve(worker, &listener);
            });
            echo(worker);
        }
        // `serve-all:PORT:PATH`: `serve:` on 127.0.0.1:PORT and on a Unix socket at PATH, and
        // `udp:` on 127.0.0.1:PORT, each in a thread of its own.
        m if m.starts_with("serve-all:") => {
            let (port, path) = m[10..].split_once(':').expect("serve-all:PORT:PATH");
            let tcp = worker.listen_tcp(format!("127.0.0.1:{port}").as_str());
            let unix = worker.listen_unix(path).expect("listen unix");
            let udp = worker
                .bind_udp(format!("127.0.0.1:{port}").as_str())
                .expect("bind udp");
            let line = format!("hello from {}\n", worker.id());
            let pong = format!("pong from {}", worker.id());
            let unix = std::thread::spawn(move || {
                for stream in unix.incoming() {
                    let _ = stream.expect("accept").write_all(line.as_bytes());
                }
            });
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok((_, from)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(pong.as_bytes(), from);
                }
            });
            serve(worker, &tcp.expect("listen"));
            // The Unix listener stops with the disconnect too; what it took is answered
            // before the process ends.
            unix.join().expect("unix listener");
            echo(worker);
        }
        // Listen twice on one address in this worker: the second gets its own socket.
        m if m.starts_with("listen-twice:") => {
            let first = worker.listen_tcp(&m[13..]).expect("listen");
            let again = format!("127.0.0.1:{}", first.local_addr().port());
            let report = match worker.listen_tcp(again.as_str()) {
                Ok(_) => "second: ok".to_owned(),
                Err(e) => format!("second: errno {:?}", e.raw_os_error()),
            };
            worker.send(report.as_bytes()).expect("send");
            echo(worker);
        }
        // Listen, report the outcome, and on a failure retry when told to.
        m if m.starts_with("listen-retry:") => loop {
            match worker.listen_tcp(&m[13..]) {
                Ok(listener) => {
                    worker
                        .send(format!("port {}", listener.local_addr().port()).as_bytes())
                        .expect("send");
                    serve(worker, &listener);
                    break;
                }
                Err(e) => {
                    worker
                        .send(format!("errno {:?}", e.raw_os_error()).as_bytes())
                        .expect("send");
                    if !matches!(worker.recv(), Ok(Some(_))) {
                        break;
                    }
                }
            }
        },
        // Serve; SIGTERM means a graceful stop: disconnect (the listener stops after the
        // connection in hand is answered), then exit 0.
        m if m.starts_with("serve-graceful:") => {
            let listener = worker.listen_tcp(&m[15..]).expect("listen");
            let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM])
                .expect("signals");
            let w = worker.clone();
            std::thread::spawn(move || {
                if signals.forever().next().is_some() {
                    let _ = w.disconnect();
                }
            });
            serve(worker, &listener);
        }
        // A Unix socket at a path relative to the worker's directory, open to everybody.
        m if m.starts_with("serve-unix:") => {
            let opts = ringleader::ListenOptions::default().all_may_connect(true);
            let listener = worker.listen_unix_with(&m[11..], opts).expect("listen");
            let line = format!("hello from {}\n", worker.id());
            for stream in listener.incoming() {
                let _ = stream.expect("accept").write_all(line.as_bytes());
            }
            drop(listener);
            echo(worker);
        }
        // `idle-http:IDLE_MS:CAPACITY:ADDR`. A thread per connection, like a real server's:
        // answer `hello from <id>` to the first bytes a client sends, then close; close a
        // connection idle for IDLE_MS. Prints `TOOK` for each connection taken and `IDLE` for
        // each closed idle (or by its client without a word). A CAPACITY other than 0 is
        // posted as a hint first.
        m if m.starts_with("idle-http:") => {
            let mut parts = m[10..].splitn(3, ':');
            let mut number = || -> u32 { parts.next().and_then(|n| n.parse().ok()).expect("n") };
            let idle = Duration::from_millis(number().into());
            let capacity = number();
            let addr = parts.next().expect("idle-http:IDLE_MS:CAPACITY:ADDR");
            if capacity > 0 {
                worker
                    .hint(ringleader::Hint::Capacity(capacity))
                    .expect("capacity hint");
            }
            // A backlog that holds a burst of thousands: one that overflows leaves idle
            // clients whose handshake never completes (their last ACK dropped, no SYN
            // cookie checked until they send), which no server could accept.
            let opts = ringleader::ListenOptions::default().backlog(4096);
            let addr = addr.parse().expect("an address");
            let listener = worker.listen_tcp_with(addr, opts).expect("listen");
            let line = format!("hello from {}\n", worker.id());
            for stream in listener.incoming() {
                let (mut stream, line) = (stream.expect("accept"), line.clone());
                out(format_args!("TOOK"));
                std::thread::spawn(move || {
                    use std::io::Read;
                    let _ = stream.set_read_timeout(Some(idle));
                    let mut buf = [0u8; 512];
                    match stream.read(&mut buf) {
                        Ok(n) if n > 0 => {
                            let _ = stream.write_all(line.as_bytes());
                        }
                        _ => out(format_args!("IDLE")),
                    }
                });
            }
        }
        // `exit-after:CODE:MS`: exit with CODE after MS milliseconds, unasked.
        m if m.starts_with("exit-after:") => {
            let (code, ms) = m[11..].split_once(':').expect("exit-after:CODE:MS");
            std::thread::sleep(Duration::from_millis(ms.parse().expect("ms")));
            std::process::exit(code.parse().expect("code"));
        }
        // Post a capacity hint of one connection at a time, then serve as `serve:` does.
        m if m.starts_with("capacity-1:") => {
            worker
                .hint(ringleader::Hint::Capacity(1))
                .expect("capacity hint");
            let listener = worker.listen_tcp(&m[11..]).expect("listen");
            serve(worker, &listener);
        }
        // Answer every line of every connection with `<id>: <line>`, a thread per connection;
        // when the listener stops, finish the open connections, then return (exit 0).
        m if m.starts_with("serve-lines:") => {
            use std::io::BufRead;
            let listener = worker.listen_tcp(&m[12..]).expect("listen");
            let id = worker.id();
            let mut open = Vec::new();
            for stream in listener.incoming() {
                let mut stream = stream.expect("accept");
                open.push(std::thread::spawn(move || {
                    let reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
                    for line in reader.lines().map_while(Result::ok) {
                        if writeln!(stream, "{id}: {line}").is_err() {
                            break;
                        }
                    }
                }));
            }
            for conn in open {
                let _ = conn.join();
            }
        }
        // Serve on a thread (`hinted-lazy`: only once told `serve`); on the main thread obey
        // messages: `pause`, `resume`, `drain`, `capacity:N` post that hint, `scribble`
        // writes garbage over this worker's board slot; each is answered `ok` or the error.
        m if m.starts_with("hinted:") || m.starts_with("hinted-lazy:") => {
            let (lazy, addr) = match m.strip_prefix("hinted-lazy:") {
                Some(addr) => (true, addr),
                None => (false, &m[7..]),
            };
            let listener = worker.listen_tcp(addr).expect("listen");
            let mut listener = Some(listener);
            let start = |listener: &mut Option<ringleader::TcpListener>| {
                if let Some(l) = listener.take() {
                    let server = worker.clone();
                    std::thread::spawn(move || serve(&server, &l));
                }
            };
            if !lazy {
                start(&mut listener);
            }
            while let Ok(Some(message)) = worker.recv() {
                let order = String::from_utf8_lossy(&message.data).into_owned();
                let done = match order.as_str() {
                    "pause" => worker
                        .hint(ringleader::Hint::Pause)
                        .map_err(|e| e.to_string()),
                    "resume" => worker
                        .hint(ringleader::Hint::Resume)
                        .map_err(|e| e.to_string()),
                    "drain" => worker
                        .hint(ringleader::Hint::Drain)
                        .map_err(|e| e.to_string()),
                    "scribble" => scribble(),
                    "serve" => {
                        start(&mut listener);
                        Ok(())
                    }
                    o => match o.strip_prefix("capacity:").and_then(|n| n.parse().ok()) {
                        Some(n) => worker
                            .hint(ringleader::Hint::Capacity(n))
                            .map_err(|e| e.to_string()),
                        None => Err(format!("unknown order {o:?}")),
                    },
                };
                let reply = done.map_or_else(|e| e, |()| "ok".to_owned());
                worker.send(reply.as_bytes()).expect("send");
            }
        }
        // Try a Unix listener for each path the primary sends; report `ok` or the errno.
        "unix-paths" => {
            let mut held = Vec::new();
            while let Ok(Some(message)) = worker.recv() {
                let path = String::from_utf8_lossy(&message.data).into_owned();
                let report = match worker.listen_unix(&path) {
                    Ok(listener) => {
                        held.push(listener);
                        "ok".to_owned()
                    }
                    Err(e) => format!("errno {:?}", e.raw_os_error()),
                };
                worker.send(report.as_bytes()).expect("send");
            }
        }
        // A shared UDP socket: answer each datagram with this worker's name.
        m if m.starts_with("udp:") => {
            let socket = worker.bind_udp(&m[4..]).expect("bind");
            let mut buf = [0u8; 64];
            let line = format!("pong from {}", worker.id());
            while let Ok((_, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(line.as_bytes(), from);
            }
        }
        // listen(0), close, listen(0) again, three times: each time the same shared port while
        // the other workers hold it (Node's index bookkeeping), reported as messages.
        m if m.starts_with("relisten:") => {
            for _ in 0..3 {
                let listener = worker.listen_tcp(&m[9..]).expect("listen");
                worker
                    .send(format!("port {}", listener.local_addr().port()).as_bytes())
                    .expect("send");
                // Wait for the go-ahead, then close.
                if !matches!(worker.recv(), Ok(Some(_))) {
                    return;
                }
            }
            worker.send(b"done").expect("send");
            echo(worker);
        }
        // Listen with options: `listen-opts:ADDR:ipv6only:backlog`.
        m if m.starts_with("listen-v6only:") => {
            let addr: std::net::SocketAddr = m[14..].parse().expect("addr");
            let opts = ringleader::ListenOptions::default()
                .ipv6_only(true)
                .backlog(64);
            let listener = worker.listen_tcp_with(addr, opts).expect("listen");
            serve(worker, &listener);
            echo(worker);
        }
        // Listen on the primary's fd N.
        m if m.starts_with("listen-fd:") => {
            let n: i32 = m[10..].parse().expect("fd number");
            match worker.listen_fd(n) {
                Ok(listener) => {
                    worker
                        .send(format!("port {}", listener.local_addr().port()).as_bytes())
                        .expect("send");
                    serve(worker, &listener);
                }
                Err(e) => worker
                    .send(format!("errno {:?}", e.raw_os_error()).as_bytes())
                    .expect("send"),
            }
            echo(worker);
        }
        // Hand every connection back (as a worker at maxConnections would).
        m if m.starts_with("reject-all:") => {
            let listener = worker.listen_tcp(&m[11..]).expect("listen");
            for stream in listener.incoming() {
                listener.reject(stream.expect("accept")).expect("reject");
            }
        }
        // An exclusive listener: this worker's own socket; reports its port.
        m if m.starts_with("exclusive:") => {
            let addr: std::net::SocketAddr = m[10..].parse().expect("addr");
            let opts = ringleader::ListenOptions::default().exclusive(true);
            let listener = worker.listen_tcp_with(addr, opts).expect("listen");
            worker
                .send(format!("port {}", listener.local_addr().port()).as_bytes())
                .expect("send");
            serve(worker, &listener);
        }
        // Listen, then spin without ever accepting.
        m if m.starts_with("listen-spin:") => {
            let _listener = worker.listen_tcp(&m[12..]).expect("listen");
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        // Read everything; answer an empty message with how many came before it.
        "sink" => {
            let mut count = 0u64;
            while let Ok(Some(m)) = worker.recv() {
                if m.data.is_empty() {
                    worker
                        .send(format!("count {count}").as_bytes())
                        .expect("send");
                    count = 0;
                } else {
                    count += 1;
                }
            }
        }
        // Spin without ever reading the channel.
        "busy" => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        // Block forever in something that is not the channel.
        "sleep" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        // Break the protocol: raw bytes that are not a frame.
        "garbage" => {
            raw_write(worker, b"this is not a frame at all");
            echo(worker);
        }
        // A header that announces a 1 GiB payload.
        "oversized" => {
            let mut header = (1u32 << 30).to_le_bytes().to_vec();
            header.extend_from_slice(&[0, 0, b'r', b'l']);
            raw_write(worker, &header);
            echo(worker);
        }
        // An empty user frame with 100 fds attached: more than the primary accepts at once.
        "fd-flood" => {
            use std::os::fd::AsFd;
            let files: Vec<std::fs::File> = (0..100)
                .map(|_| std::fs::File::open("/dev/null").expect("open"))
                .collect();
            let fds: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
            let mut space =
                vec![std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(100))];
            let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
            assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)));
            let frame = [0u8, 0, 0, 0, 0, 0, b'r', b'l'];
            rustix::net::sendmsg(
                worker.as_fd(),
                &[std::io::IoSlice::new(&frame)],
                &mut control,
                rustix::net::SendFlags::empty(),
            )
            .expect("sendmsg");
            echo(worker);
        }
        // Wait for the primary's disconnect request, then report how recv ended.
        "await-disconnect" => {
            while let Ok(Some(_)) = worker.recv() {}
            let ok = worker.exited_after_disconnect();
            std::process::exit(if ok { 0 } else { 4 });
        }
        other => {
            eprintln!("fixture: unknown FIXTURE_MODE {other}");
            std::process::exit(2);
        }
    }
}

/// A tokio runtime for the worker modes that use one (built after `role()`, as they must).
fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Serves `listener` from an epoll of this worker's own until the listener stops.
fn own_loop(worker: &Worker, listener: &ringleader::TcpListener, edge: bool) {
    use rustix::event::epoll;
    use std::os::fd::AsFd;
    let line = format!("hello from {}\n", worker.id());
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll");
    let mut flags = epoll::EventFlags::IN;
    if edge {
        flags |= epoll::EventFlags::ET;
    }
    epoll::add(&ep, listener.as_fd(), epoll::EventData::new_u64(0), flags).expect("add");
    let mut events = Vec::with_capacity(1);
    loop {
        events.clear();
        match epoll::wait(&ep, rustix::buffer::spare_capacity(&mut events), None) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("epoll_wait: {e}"),
        }
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.write_all(line.as_bytes());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => return,
                Err(e) => panic!("accept: {e}"),
            }
            if !edge {
                break;
            }
        }
    }
}

fn serve(worker: &Worker, listener: &ringleader::TcpListener) {
    let line = format!("hello from {}\n", worker.id());
    for stream in listener.incoming() {
        // An accept error is a bug here, not something to retry past.
        let mut stream = stream.expect("accept");
        let _ = stream.write_all(line.as_bytes());
    }
}

/// Writes garbage over this worker's board slot (and its hint ring), the way a buggy or
/// hostile worker could: through /proc/self/mem at the board mapping's address.
fn scribble() -> Result<(), String> {
    use std::io::{Seek, SeekFrom};
    let index = BOARD_SLOT.get().copied().flatten().ok_or("no board slot")?;
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
    let start = maps
        .lines()
        .find(|l| l.contains("memfd:ringleader-board"))
        .and_then(|l| u64::from_str_radix(l.split('-').next()?, 16).ok())
        .ok_or("no board mapping")?;
    // Header of 16 words, then 64 words (512 bytes) per slot.
    let at = start + 16 * 8 + index as u64 * 512;
    let garbage: Vec<u8> = (0..512u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut mem = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/mem")
        .map_err(|e| e.to_string())?;
    mem.seek(SeekFrom::Start(at)).map_err(|e| e.to_string())?;
    mem.write_all(&garbage).map_err(|e| e.to_string())
}

fn raw_write(worker: &Worker, bytes: &[u8]) {
    use std::os::fd::AsFd;
    rustix::io::write(worker.as_fd(), bytes).expect("raw write");
}

fn echo(worker: &Worker) {
    loop {
        match worker.recv() {
            Ok(Some(message)) => {
                let sent = match message.fd {
                    Some(fd) => worker.send_fd(&message.data, fd),
                    None => worker.send(&message.data),
                };
                if sent.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                eprintln!("fixture worker {}: {}", worker.id(), e.report());
                std::process::exit(5);
            }
        }
    }
}

/// B10: a primary that runs out of fds while accepting. It lowers its fd limit to a few
/// above what it needs, two workers listen, it prints `READY <port>` and serves until killed
/// (SIGUSR1 prints `STATS <accepted> <handed over> <starved>`): accepts fail with EMFILE whenever it holds a connection, and every client
/// must still be answered.
fn starved(primary: &ringleader::Primary) {
    primary
        .setup(Settings::default().args(Vec::<String>::new()))
        .expect("setup");
    let ids: Vec<_> = (0..2)
        .map(|_| {
            primary
                .fork(&[("FIXTURE_MODE", "serve-when-told:127.0.0.1:0")])
                .expect("fork")
        })
        .collect();
    let mut events = primary.events();
    let mut online = 0;
    while online < 2 {
        if let Event::Online { .. } = events.next().expect("open").expect("event") {
            online += 1;
        }
    }
    // The limit comes before the listens: io_uring reads it when an accept is queued.
    let open: std::collections::BTreeSet<u64> = std::fs::read_dir("/proc/self/fd")
        .expect("fds")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .collect();
    // The directory's own fd was open while listing; it is free again now. The listening
    // socket and two socketpair ends per worker take five of the six fds allowed: the primary
    // can hold one connection at a time.
    let free = (0..).find(|n| !open.contains(n)).expect("a free fd");
    let limit = rustix::process::Rlimit {
        current: Some(free + 6),
        maximum: rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum,
    };
    rustix::process::setrlimit(rustix::process::Resource::Nofile, limit).expect("setrlimit");
    for worker in ids {
        worker.send(b"go").expect("send");
    }
    let mut listening = 0;
    let mut port = 0;
    while listening < 2 {
        if let Event::Listening { address, .. } = events.next().expect("open").expect("event") {
            listening += 1;
            port = address.port;
        }
    }
    primary
        .watch_signals(&[ringleader::Signal::USR1])
        .expect("watch");
    out(format_args!("READY {port}"));
    for event in events {
        match event.expect("event") {
            Event::Error { error, .. } => out(format_args!("ERROR {}", error.report())),
            Event::Signal(_) => {
                let s = primary.handoff_stats();
                out(format_args!(
                    "STATS {} {} {}",
                    s.accepted, s.handed_over, s.starved
                ));
            }
            _ => {}
        }
    }
}

/// `cluster POLICY N MODE`: a primary in a process of its own (its fds counted from outside,
/// its loop woken by nothing but its own waits) with `N` workers in `MODE` on round-robin
/// hand-off under the policy named `POLICY`. Prints `READY <port>` once every worker listens,
/// and on SIGUSR1 `STATS <accepted> <handed over> <taken> <finished> <closed gone>`, taken and
/// finished as the workers' board slots count them.
fn cluster(primary: &ringleader::Primary) {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let [policy, n, mode] = &args[..] else {
        eprintln!("fixture: cluster POLICY N MODE");
        std::process::exit(2);
    };
    let policy = ringleader::SharedPolicy::named(policy).expect("a policy name");
    let n: usize = n.parse().expect("a number of workers");
    primary
        .watch_signals(&[ringleader::Signal::USR1])
        .expect("watch");
    primary
        .setup(
            Settings::default()
                .args(Vec::<String>::new())
                .policy(policy),
        )
        .expect("setup");
    for _ in 0..n {
        primary.fork(&[("FIXTURE_MODE", mode)]).expect("fork");
    }
    let mut listening = 0;
    for event in primary.events() {
        match event.expect("event") {
            Event::Listening { address, .. } => {
                listening += 1;
                if listening == n {
                    out(format_args!("READY {}", address.port));
                }
            }
            Event::Signal(_) => {
                let s = primary.handoff_stats();
                let (mut taken, mut finished) = (0, 0);
                for id in primary.workers() {
                    if let Some(load) = primary.worker(id).map(|w| w.load()) {
                        taken += load.taken;
                        finished += load.finished;
                    }
                }
                out(format_args!(
                    "STATS {} {} {taken} {finished} {}",
                    s.accepted, s.handed_over, s.closed_gone
                ));
            }
            Event::Exit { .. } => std::process::exit(9),
            _ => {}
        }
    }
}

/// `systemd PORT`: a service as systemd runs it (the test plays the manager): two workers
/// listening on 127.0.0.1:PORT, which socket activation passed; SIGHUP rolls the workers,
/// SIGTERM stops them. Prints `ROLLED` after each roll and `DONE` at the end.
fn systemd(primary: &ringleader::Primary) {
    let port: u16 = std::env::args()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .expect("systemd PORT");
    primary
        .watch_signals(&[ringleader::Signal::HUP, ringleader::Signal::TERM])
        .expect("watch");
    primary
        .setup(Settings::default().args(Vec::<String>::new()))
        .expect("setup");
    let mode = format!("serve:127.0.0.1:{port}");
    for _ in 0..2 {
        primary.fork(&[("FIXTURE_MODE", &mode)]).expect("fork");
    }
    for event in primary.events() {
        match event.expect("event") {
            Event::Signal(ringleader::Signal::HUP) => {
                primary.roll(ringleader::Roll::default()).expect("roll")
            }
            Event::Signal(_) => primary.disconnect_all().expect("disconnect"),
            Event::RollDone { .. } => out(format_args!("ROLLED")),
            Event::RollFailed { reason, .. } => out(format_args!("ROLL FAILED {reason}")),
            Event::Error { error, .. } => out(format_args!("ERROR {}", error.report())),
            Event::AllDisconnected => {
                out(format_args!("DONE"));
                return;
            }
            _ => {}
        }
    }
}

/// `upgradable PORT [EXEC]`: four workers serving on 127.0.0.1:PORT, scheduled as
/// `FIXTURE_SCHED` says (rr, none, reuseport, steer; rr by default), and with
/// `FIXTURE_UNIX=PATH` on a Unix socket there and on UDP port PORT as well (`serve-all:`),
/// and with `FIXTURE_READY_MS=MS` giving the new primary that long to be ready;
/// prints `LISTENING <pid>` once all listen. SIGUSR2 upgrades the primary (to EXEC if given):
/// `UPGRADE READY <pid>` or `UPGRADE FAILED <reason>`, and `OLD DONE` once its workers are
/// gone, when it exits. The new primary runs this same scenario.
fn upgradable(primary: &ringleader::Primary) {
    const WORKERS: usize = 4;
    let port: u16 = std::env::args()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .expect("upgradable PORT");
    let exec = std::env::args().nth(3);
    let scheduling = match std::env::var("FIXTURE_SCHED").as_deref() {
        Ok("none") => ringleader::Scheduling::Shared,
        Ok("reuseport") => ringleader::Scheduling::ReusePort,
        Ok("steer") => ringleader::Scheduling::Steered,
        _ => ringleader::Scheduling::RoundRobin,
    };
    let unix = std::env::var("FIXTURE_UNIX").ok();
    primary
        .watch_signals(&[ringleader::Signal::USR2])
        .expect("watch");
    primary
        .setup(
            Settings::default()
                .args(std::env::args().skip(1).collect::<Vec<_>>())
                .scheduling(scheduling),
        )
        .expect("setup");
    let (mode, kinds) = match &unix {
        Some(path) => (format!("serve-all:{port}:{path}"), 3),
        None => (format!("serve:127.0.0.1:{port}"), 1),
    };
    for _ in 0..WORKERS {
        primary.fork(&[("FIXTURE_MODE", &mode)]).expect("fork");
    }
    let mut listening = 0;
    for event in primary.events() {
        match event.expect("event") {
            Event::Listening { .. } => {
                listening += 1;
                if listening == WORKERS * kinds {
                    out(format_args!("LISTENING {}", std::process::id()));
                }
            }
            Event::Signal(_) => {
                let mut up = exec
                    .as_ref()
                    .map_or_else(ringleader::Upgrade::default, |e| {
                        ringleader::Upgrade::default().exec(e)
                    });
                if let Some(ms) = std::env::var("FIXTURE_READY_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                {
                    up = up.ready_within(Duration::from_millis(ms));
                }
                primary.upgrade(up).expect("upgrade");
            }
            Event::UpgradeReady { pid } => out(format_args!("UPGRADE READY {pid}")),
            Event::UpgradeFailed { reason } => out(format_args!("UPGRADE FAILED {reason}")),
            Event::AllDisconnected => {
                out(format_args!("OLD DONE"));
                return;
            }
            _ => {}
        }
    }
}

/// `supervised N MODE`: `Primary::supervise` with N workers in MODE. Prints `LISTENING`,
/// `EXIT`, `ROLLED`, `GAVEUP` as those events come, then `ENDING <how>`, and exits with the
/// ending's status.
fn supervised(primary: &ringleader::Primary) {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let [n, mode] = &args[..] else {
        eprintln!("fixture: supervised N MODE");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("a number of workers");
    // Workers are forked with no fork environment: the mode comes from the base one.
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.push(("FIXTURE_MODE".into(), mode.clone()));
    primary
        .setup(Settings::default().args(Vec::<String>::new()).env(env))
        .expect("setup");
    let supervise = ringleader::Supervise::new(n).stop_within(Duration::from_secs(5));
    let ending = primary
        .supervise(supervise, |_, event| match event {
            Event::Listening { .. } => out(format_args!("LISTENING")),
            Event::Exit { .. } => out(format_args!("EXIT")),
            Event::RollDone { .. } => out(format_args!("ROLLED")),
            Event::GaveUp { .. } => out(format_args!("GAVEUP")),
            _ => {}
        })
        .expect("supervise");
    out(format_args!("ENDING {ending:?}"));
    std::process::exit(ending.exit_code());
}

/// Scenarios that need a primary of their own, so the test can kill it or watch it exit.
fn run_primary(primary: &ringleader::Primary, scenario: &str) {
    let (mode, death_signal_off, exit_after_online) = match scenario {
        // The test SIGKILLs this primary; the busy worker must go with it.
        "hold-busy" => ("busy", false, false),
        // The same without PDEATHSIG: the worker's watcher must end it.
        "hold-busy-no-deathsig" => ("busy", true, false),
        // Exit without disconnecting: the worker sees its channel close and exits 0.
        "exit-early" => ("echo", true, true),
        other => {
            eprintln!("fixture: unknown scenario {other:?}");
            std::process::exit(2);
        }
    };
    let mut settings = Settings::default().args(Vec::<String>::new());
    if death_signal_off {
        settings = settings.death_signal(None);
    }
    primary.setup(settings).expect("setup");
    primary.fork(&[("FIXTURE_MODE", mode)]).expect("fork");
    for event in primary.events() {
        match event.expect("event") {
            Event::Online { worker } => {
                let pid = primary.worker(worker).map(|w| w.pid()).unwrap_or(0);
                out(format_args!("WORKER {pid}"));
                if exit_after_online {
                    // Leave without Drop: nothing kills the worker but its own rule.
                    std::process::exit(0);
                }
            }
            Event::Exit { .. } => std::process::exit(9),
            _ => {}
        }
    }
}
