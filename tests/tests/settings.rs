//! Settings (B26, B27): exec, args, env merging, cwd, uid/gid, silent stdio; settings
//! accumulate, `Setup` is emitted, and the scheduling policy freezes at the first fork.

use std::io::Read;

use ringleader::{ErrorKind, Event, Primary, Scheduling, Settings, Stdio};
use ringleader_tests::Harness;

const FIXTURE: &str = env!("CARGO_BIN_EXE_fixture");

fn report(h: &Harness) -> serde_json::Value {
    let seen = h.until(|e| matches!(e, Event::Message { .. }));
    match seen.last() {
        Some(Event::Message { message, .. }) => message.json().expect("json"),
        _ => unreachable!(),
    }
}

#[test]
fn b26_env_merges_over_the_base_and_args_and_cwd_apply() {
    let h = Harness::new(FIXTURE);
    let dir = std::env::temp_dir();
    h.primary
        .setup(
            Settings::default()
                .args(["--flag", "value"])
                .cwd(&dir)
                .env([
                    ("FIXTURE_BASE", "base"),
                    ("FOO", "from-settings"),
                    ("PATH", "/usr/bin:/bin"),
                ]),
        )
        .expect("setup");
    h.primary
        .fork(&[("FIXTURE_MODE", "env"), ("FOO", "from-fork")])
        .expect("fork");
    let r = report(&h);
    assert_eq!(r["base"], "base", "settings env is the base");
    assert_eq!(r["foo"], "from-fork", "fork(env) overrides it");
    assert_eq!(r["args"], serde_json::json!(["--flag", "value"]));
    assert_eq!(
        r["cwd"],
        serde_json::json!(dir.canonicalize().expect("canonical"))
    );
}

#[test]
fn b26_inherits_the_primary_environment_by_default() {
    // The harness process has HOME or PATH; a worker without Settings::env sees the same.
    let h = Harness::new(FIXTURE);
    h.fork("env");
    let r = report(&h);
    assert!(r["foo"].is_null());
    assert_eq!(r["worker_id_env"], serde_json::Value::Null);
}

#[test]
fn b26_uid_and_gid_are_applied() {
    if !rustix::process::getuid().is_root() {
        eprintln!(
            "skipped: setuid/setgid need root, and this test runs as uid {}",
            rustix::process::getuid().as_raw()
        );
        return;
    }
    // The worker execs the fixture as uid 65534: every directory above it must let others
    // through, which a target directory under a private home (root's, mode 700) does not.
    let path = std::path::Path::new(FIXTURE);
    let closed = path.ancestors().find(|p| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 == 0)
    });
    if let Some(closed) = closed {
        eprintln!(
            "skipped: uid 65534 cannot reach the fixture: {} lets others nothing (put the \
             target directory where they can, with CARGO_TARGET_DIR)",
            closed.display()
        );
        return;
    }
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(Settings::default().uid(65534).gid(65534))
        .expect("setup");
    h.fork("env");
    let r = report(&h);
    assert_eq!(
        (r["uid"].as_u64(), r["gid"].as_u64()),
        (Some(65534), Some(65534))
    );
}

#[test]
fn b26_silent_pipes_the_workers_output_to_the_primary() {
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(Settings::default().silent(true))
        .expect("setup");
    let w = h.primary.fork(&[("FIXTURE_MODE", "print")]).expect("fork");
    let mut stdout = w.take_stdout().expect("stdout is piped");
    let mut stderr = w.take_stderr().expect("stderr is piped");
    assert!(w.take_stdout().is_none(), "taken once");
    w.disconnect().expect("disconnect");
    h.until_gone(w.id());
    let (mut out, mut err) = (String::new(), String::new());
    stdout.read_to_string(&mut out).expect("read stdout");
    stderr.read_to_string(&mut err).expect("read stderr");
    assert_eq!(out, "worker 1 stdout\n");
    assert_eq!(err, "worker 1 stderr\n");
}

#[test]
fn b26_custom_stdio_per_stream() {
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(Settings::default().stdio(Stdio::Null, Stdio::Pipe, Stdio::Null))
        .expect("setup");
    let w = h.primary.fork(&[("FIXTURE_MODE", "print")]).expect("fork");
    assert!(w.take_stdin().is_none() && w.take_stderr().is_none());
    let mut stdout = w.take_stdout().expect("stdout is piped");
    w.disconnect().expect("disconnect");
    h.until_gone(w.id());
    let mut out = String::new();
    stdout.read_to_string(&mut out).expect("read");
    assert_eq!(out, "worker 1 stdout\n");
}

#[test]
fn b27_settings_accumulate_and_setup_is_emitted() {
    let primary = Primary::new().expect("primary");
    primary
        .setup(Settings::default().exec(FIXTURE))
        .expect("setup");
    primary
        .setup(Settings::default().silent(true))
        .expect("setup");
    let s = primary.settings();
    assert_eq!(
        s.get_exec(),
        Some(std::path::Path::new(FIXTURE)),
        "exec kept"
    );
    assert_eq!(s.get_silent(), Some(true));
    let mut setups = 0;
    while let Some(e) = primary
        .next_event(Some(std::time::Duration::ZERO))
        .expect("event")
    {
        if let Event::Setup(settings) = e {
            setups += 1;
            if setups == 2 {
                assert_eq!(settings.get_silent(), Some(true));
            }
        }
    }
    assert_eq!(setups, 2);
}

#[test]
fn b27_scheduling_policy_freezes_at_the_first_fork() {
    let h = Harness::new(FIXTURE);
    assert_eq!(
        h.primary.scheduling(),
        Scheduling::RoundRobin,
        "the default"
    );
    h.primary
        .setup(Settings::default().scheduling(Scheduling::Shared))
        .expect("still open");
    let id = h.fork("echo");
    let err = h
        .primary
        .setup(Settings::default().scheduling(Scheduling::RoundRobin))
        .expect_err("frozen");
    assert_eq!(err.kind(), ErrorKind::Settings);
    // The same value again is fine, and so are other settings.
    h.primary
        .setup(
            Settings::default()
                .scheduling(Scheduling::Shared)
                .silent(false),
        )
        .expect("same policy");
    assert_eq!(h.primary.scheduling(), Scheduling::Shared);
    h.primary
        .worker(id)
        .expect("worker")
        .disconnect()
        .expect("disconnect");
    h.until_gone(id);
}

#[test]
fn spawn_failure_is_an_error_with_the_errno_and_no_id_is_used() {
    let h = Harness::new(FIXTURE);
    h.primary
        .setup(Settings::default().exec("/nonexistent/program"))
        .expect("setup");
    let err = h.primary.fork(&[]).expect_err("no such program");
    assert_eq!(err.raw_os_error(), Some(2), "{err}");
    assert!(h.primary.workers().is_empty());
    h.primary
        .setup(Settings::default().exec(FIXTURE))
        .expect("setup");
    assert_eq!(h.fork("exit:0"), 1, "the failed fork did not use an id");
}
