//! systemd's side channels: sockets passed by socket activation (`LISTEN_FDS`) and the
//! service manager's notification socket (`sd_notify(3)`), both without libsystemd.
//!
//! # References
//! [`sd_listen_fds(3)`](https://man7.org/linux/man-pages/man3/sd_listen_fds.3.html),
//! [`sd_notify(3)`](https://man7.org/linux/man-pages/man3/sd_notify.3.html)

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use rustix::fd::OwnedFd;

use crate::env::{take_inherited_fd, take_var};

/// The first fd socket activation passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// The sockets this process was passed by socket activation, with their names
/// (`LISTEN_FDNAMES`), when `LISTEN_PID` names this process: taken close-on-exec, and the
/// three variables removed so that they reach no child. Empty otherwise. Call it at start-up,
/// before other threads ([`take_var`]'s contract).
pub fn listen_fds() -> Vec<(OwnedFd, Option<String>)> {
    let for_us = take_var("LISTEN_PID")
        .and_then(|p| p.to_str()?.parse::<u32>().ok())
        .is_some_and(|pid| pid == std::process::id());
    let count = take_var("LISTEN_FDS").and_then(|n| n.to_str()?.parse::<i32>().ok());
    let names = take_var("LISTEN_FDNAMES");
    let (true, Some(count)) = (for_us, count) else {
        return Vec::new();
    };
    let names: Vec<String> = names
        .and_then(|n| n.into_string().ok())
        .map(|n| n.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    (0..count.clamp(0, 1024))
        .filter_map(|i| {
            let fd = take_inherited_fd(LISTEN_FDS_START + i)?.ok()?;
            Some((fd, names.get(i as usize).cloned()))
        })
        .collect()
}

/// Sends `state` (`READY=1`, `RELOADING=1`, `STOPPING=1`, `WATCHDOG=1`, …, one per line) to
/// the service manager at `NOTIFY_SOCKET` (a path, or `@` and an abstract name). `Ok(false)`
/// without one: not run by a manager that listens.
///
/// # Errors
/// What `socket(2)` and `sendto(2)` return.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let target = target.to_string_lossy();
    let addr = match target.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(&*target)?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// `RELOADING=1` with the `MONOTONIC_USEC` systemd 253 asks to come with it.
///
/// # Errors
/// As [`notify`].
pub fn notify_reloading() -> io::Result<bool> {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"))
}

/// Whether a service manager listens for notifications (`NOTIFY_SOCKET` is set).
pub fn manager_listens() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// How often the service manager wants `WATCHDOG=1` (`WATCHDOG_USEC`, for this process when
/// `WATCHDOG_PID` is absent or names it), halved as sd_watchdog_enabled(3) advises.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    let pid_ok = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_none_or(|pid| pid == std::process::id());
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (pid_ok && usec > 0).then(|| std::time::Duration::from_micros(usec / 2))
}
