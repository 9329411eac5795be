//! `ringleader::tokio`: workers that accept in a tokio runtime under every scheduling, Unix
//! and UDP sockets and messages awaited there, and a primary whose events are awaited in a
//! current-thread runtime while it hands a burst of connections over.

use std::io::Read;
use std::time::Duration;

use ringleader::{Event, Primary, Scheduling, Settings};
use ringleader_tests::{Harness, WATCHDOG, burst, fetch_hello, hellos};

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

fn async_accept(scheduling: Scheduling) {
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(Settings::default().scheduling(scheduling))
        .expect("setup");
    let workers = [
        h.fork("tokio-serve:127.0.0.1:0"),
        h.fork("tokio-serve:127.0.0.1:0"),
    ];
    let port = h.listening(2)[0].port;
    assert_eq!(
        h.drive(move || hellos(&burst(port, 300))),
        300,
        "{scheduling:?}"
    );
    // The board counted them taken and finished (hand-off schedulings count hand-offs).
    if scheduling == Scheduling::RoundRobin {
        let taken: u64 = workers
            .iter()
            .map(|w| h.primary.worker(*w).expect("worker").load().taken)
            .sum();
        assert_eq!(taken, 300);
    }
    // A disconnect ends the natural accept loop (`while let Some(..) = accept().await?`):
    // the workers exit 0, as after a roll's or a stop's disconnect, not as crashes.
    for w in workers {
        h.primary
            .worker(w)
            .expect("worker")
            .disconnect()
            .expect("disconnect");
    }
    let mut codes = Vec::new();
    h.until(|e| {
        if let Event::Exit { code, .. } = e {
            codes.push(*code);
        }
        codes.len() == 2
    });
    assert_eq!(codes, [Some(0), Some(0)], "{scheduling:?}");
}

#[test]
fn async_accept_under_round_robin() {
    async_accept(Scheduling::RoundRobin);
}

#[test]
fn async_accept_under_shared_sockets() {
    async_accept(Scheduling::Shared);
}

#[test]
fn async_accept_under_reuseport() {
    async_accept(Scheduling::ReusePort);
}

#[test]
fn async_accept_under_steering() {
    async_accept(Scheduling::Steered);
}

#[test]
fn async_unix_udp_and_messages() {
    let h = Harness::new(FIXTURE);
    let path = std::env::temp_dir().join(format!("rl-tokio-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    h.fork(&format!("tokio-unix:{}", path.display()));
    let udp_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a port")
        .port();
    h.fork(&format!("tokio-udp:127.0.0.1:{udp_port}"));
    let echo = h.fork("tokio-echo");
    h.listening(2);
    let (unix, udp) = h.drive(move || {
        let unix = (0..20)
            .filter(|_| {
                let mut s = std::os::unix::net::UnixStream::connect(&path).expect("connect");
                let mut answer = String::new();
                s.read_to_string(&mut answer).is_ok() && answer.starts_with("hello from ")
            })
            .count();
        let _ = std::fs::remove_file(&path);
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut buf = [0u8; 64];
        let udp = (0..25).any(|_| {
            s.send_to(b"ping", ("127.0.0.1", udp_port)).expect("send");
            s.recv(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"pong from "))
        });
        (unix, udp)
    });
    assert_eq!(unix, 20);
    assert!(udp, "a UDP answer");
    h.online(echo);
    let handle = h.primary.worker(echo).expect("worker");
    for i in 0..50u32 {
        handle.send(&i.to_le_bytes()).expect("send");
    }
    let mut back = Vec::new();
    h.until(|e| {
        if let Event::Message { worker, message } = e {
            if *worker == echo {
                back.push(message.data.clone());
            }
        }
        back.len() == 50
    });
    let expected: Vec<Vec<u8>> = (0..50u32).map(|i| i.to_le_bytes().to_vec()).collect();
    assert_eq!(back, expected);
}

#[test]
fn a_primary_in_a_tokio_runtime_hands_a_burst_over() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let served = rt.block_on(async {
        let primary =
            ringleader::tokio::Primary::new(Primary::new().expect("primary")).expect("register");
        primary
            .get_ref()
            .setup(Settings::default().exec(FIXTURE).args(Vec::<String>::new()))
            .expect("setup");
        for _ in 0..2 {
            primary
                .get_ref()
                .fork(&[("FIXTURE_MODE", "serve:127.0.0.1:0")])
                .expect("fork");
        }
        let mut port = None;
        let mut listening = 0;
        while listening < 2 {
            let event = tokio::time::timeout(WATCHDOG, primary.next_event())
                .await
                .expect("watchdog: no event")
                .expect("event");
            if let Event::Listening { address, .. } = event {
                listening += 1;
                port = Some(address.port);
            }
        }
        let port = port.expect("a port");
        let clients = tokio::task::spawn_blocking(move || {
            let single = fetch_hello(port).is_ok();
            hellos(&burst(port, 300)) + usize::from(single)
        });
        tokio::pin!(clients);
        loop {
            tokio::select! {
                done = &mut clients => break done.expect("clients"),
                event = tokio::time::timeout(WATCHDOG, primary.next_event()) => {
                    event.expect("watchdog: the burst hangs").expect("event");
                }
            }
        }
    });
    assert_eq!(served, 301);
}
