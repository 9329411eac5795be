//! Figures of a running process, read from `/proc`.

/// The CPU time of process `pid`, in microseconds: the scheduler's own sum for each of its
/// threads (`se.sum_exec_runtime` in `/proc/<pid>/task/<tid>/sched`, nanoseconds), or
/// utime + stime from `/proc/<pid>/stat` (10 ms steps) where that sum is missing or short
/// (threads that exited took theirs with them).
pub fn cpu_us(pid: u32) -> u64 {
    let coarse = stat_cpu_us(pid);
    let precise = sched_cpu_us(pid);
    match precise {
        Some(p) if p + 20_000 >= coarse => p,
        _ => coarse,
    }
}

/// The scheduler's sum of every thread's run time, in microseconds.
pub fn sched_cpu_us(pid: u32) -> Option<u64> {
    let mut total = 0.0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let sched = std::fs::read_to_string(task.ok()?.path().join("sched")).ok()?;
        let ms: f64 = sched
            .lines()
            .find_map(|l| l.strip_prefix("se.sum_exec_runtime"))?
            .trim_start_matches([' ', ':'])
            .trim()
            .parse()
            .ok()?;
        total += ms;
    }
    Some((total * 1000.0) as u64)
}

/// utime + stime of `pid`, in microseconds.
pub fn stat_cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // state is field 3; utime 14 and stime 15 are at 11 and 12 after ')'.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    let hz = rustix::param::clock_ticks_per_second();
    ticks * 1_000_000 / hz
}

/// A `kB` figure of `/proc/<pid>/status` (`VmHWM:`, `VmRSS:`…), 0 if missing.
pub fn status_kb(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0)
}

/// The child processes of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The open fds of process `pid` (0 when it is gone).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// The live processes of process group `group`, oldest first (by start time).
pub fn group_members(group: u32) -> Vec<u32> {
    let mut found: Vec<(u64, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the command name: state, ppid, pgrp, ... starttime is the 20th.
            let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let zombie = rest.first() == Some(&"Z");
            (!zombie && rest.get(2)?.parse::<u32>().ok()? == group)
                .then(|| Some((rest.get(19)?.parse().ok()?, pid)))?
        })
        .collect();
    found.sort_unstable();
    found.into_iter().map(|(_, pid)| pid).collect()
}
