//! `RINGLEADER_SCHED_POLICY` and `RINGLEADER_BACKEND` are read when the primary starts.

use ringleader::{ErrorKind, Primary, Scheduling};

#[test]
fn environment_selects_policy_and_rejects_nonsense() {
    // Each setting is tried in a fresh process (this binary, running `child_reports`), so no
    // test changes its own environment.
    let set = |k: &str, v: &str| {
        let mut cmd = std::process::Command::new(std::env::current_exe().expect("exe"));
        cmd.env(k, v)
            .arg("--exact")
            .arg("child_reports")
            .arg("--nocapture")
            .env("SCHED_ENV_CHILD", "1");
        let out = cmd.output().expect("run child");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(set("RINGLEADER_SCHED_POLICY", "none").contains("policy=Ok(Shared)"));
    assert!(set("RINGLEADER_SCHED_POLICY", "rr").contains("policy=Ok(RoundRobin)"));
    assert!(set("RINGLEADER_SCHED_POLICY", "fastest").contains("policy=Err(Settings)"));
    assert!(set("RINGLEADER_BACKEND", "epoll").contains("backend=Ok(Epoll)"));
    assert!(set("RINGLEADER_BACKEND", "kqueue").contains("policy=Err(Settings)"));
}

#[test]
fn child_reports() {
    if std::env::var_os("SCHED_ENV_CHILD").is_none() {
        return;
    }
    let p = Primary::new();
    let policy: Result<Scheduling, ErrorKind> =
        p.as_ref().map(|p| p.scheduling()).map_err(|e| e.kind());
    let backend = p.as_ref().map(|p| p.backend()).map_err(|e| e.kind());
    println!("policy={policy:?} backend={backend:?}");
}
