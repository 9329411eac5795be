//! `ringleader` as an operator used to PM2 runs it: a Node cluster app started from a config
//! file, its workers' lines tagged `[worker N] `, `ringleader status` listing each worker
//! with its pid, flags that win over the file, a file with a typo refused by name, shell
//! completions and man pages, and a worker that floods its output without a newline
//! neither growing the primary nor stopping its hand-offs.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ringleader_tests::{Spawned, free_port, http_get, ringleader_command};

const DOCS_EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/node/docs-example.mjs");
const FLOOD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/node/flood.mjs");

/// `ringleader args…`, run to its end.
fn ringleader(args: &[&str]) -> Output {
    Command::new(ringleader_command())
        .args(args)
        .output()
        .expect("run ringleader")
}

/// A config file in a directory of its own, removed on drop.
struct ConfigFile {
    dir: std::path::PathBuf,
}

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringleader-config-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a directory");
        std::fs::write(dir.join("ringleader.toml"), text).expect("write the file");
        ConfigFile { dir }
    }

    fn path(&self) -> String {
        self.dir.join("ringleader.toml").display().to_string()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads the primary's lines until `n` workers listen and `n` tagged `Worker PID started`
/// lines came (the docs example's): each worker's pid, by id.
fn started(h: &Spawned, n: usize, tagged: bool) -> BTreeMap<u32, u32> {
    let (mut listening, mut pids) = (0, Vec::new());
    let prefixes: &[&str] = if tagged {
        &["Worker ", "[worker "]
    } else {
        &["Worker "]
    };
    while listening < n || pids.len() < n {
        match h.expect_one_of(prefixes) {
            (0, rest) if rest.contains("listening on") => listening += 1,
            // Untagged: `Worker 4242 started`, the app's own line.
            (0, rest) if rest.ends_with("started") => {
                let pid = rest.split_whitespace().next().expect("a pid");
                pids.push((pids.len() as u32 + 1, pid.parse().expect("a pid")));
            }
            // `[worker 2] Worker 4242 started`.
            (1, rest) => {
                let (id, line) = rest.split_once("] ").expect("a tag");
                let pid = line
                    .strip_prefix("Worker ")
                    .and_then(|l| l.strip_suffix(" started"))
                    .unwrap_or_else(|| panic!("{rest:?}"));
                pids.push((id.parse().expect("an id"), pid.parse().expect("a pid")));
            }
            _ => {}
        }
    }
    pids.into_iter().collect()
}

#[test]
fn a_node_app_from_a_config_file_shows_in_status_with_its_output_tagged() {
    let (port, admin) = (free_port(), free_port());
    let admin_addr = format!("127.0.0.1:{admin}");
    let config = ConfigFile::new(&format!(
        "workers = 3\nadmin = \"{admin_addr}\"\ndrain-delay = 0\n\
         command = [\"node\", \"{DOCS_EXAMPLE}\"]\n"
    ));
    let h = Spawned::start(
        ringleader_command(),
        &["run", "--config", &config.path()],
        &[("PORT", &port.to_string())],
    );
    // Three workers, each line of theirs tagged with its id.
    let pids = started(&h, 3, true);
    assert_eq!(pids.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert!(
        http_get(port, "/")
            .expect("an answer")
            .contains("hello world")
    );

    // The table: the primary's line, a header, a row per worker with its pid.
    let out = ringleader(&["status", "--admin", &admin_addr]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with(&format!("Primary {}: policy rr, up ", h.pid())),
        "{table}"
    );
    assert!(lines[0].contains("ready (3 of 3 listening)"), "{table}");
    assert!(lines[1].starts_with("WORKER  PID"), "{table}");
    let rows: BTreeMap<u32, Vec<&str>> = lines[2..]
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .map(|cells| (cells[0].parse().expect("an id"), cells))
        .collect();
    assert_eq!(rows.len(), 3, "{table}");
    for (id, pid) in &pids {
        let row = &rows[id];
        assert_eq!(row[1], pid.to_string(), "{table}");
        assert_eq!(row[2], "listening", "{table}");
        assert!(row.last().expect("cpu").ends_with('%'), "{table}");
    }

    // The same primary by the config file's `admin`, and as JSON.
    let out = ringleader(&["status", "--config", &config.path(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["workers"].as_array().map(Vec::len), Some(3), "{json}");
    assert_eq!(json["primary"]["pid"], h.pid());

    // --watch: a table, then another, until it is stopped (or the primary goes).
    let watch = Spawned::start(
        ringleader_command(),
        &[
            "status",
            "--admin",
            &admin_addr,
            "--watch",
            "--interval",
            "100",
        ],
        &[],
    );
    for _ in 0..2 {
        let header = watch.expect_line("Primary ");
        assert!(
            header.starts_with(&format!("{}: policy rr", h.pid())),
            "{header}"
        );
    }
}

#[test]
fn flags_on_the_command_line_win_over_the_config_file() {
    let (port, admin) = (free_port(), free_port());
    let admin_addr = format!("127.0.0.1:{admin}");
    let config = ConfigFile::new(&format!(
        "workers = 3\npolicy = \"none\"\nadmin = \"{admin_addr}\"\n\
         command = [\"node\", \"{DOCS_EXAMPLE}\"]\n"
    ));
    let h = Spawned::start(
        ringleader_command(),
        &[
            "run",
            "--config",
            &config.path(),
            "--workers",
            "1",
            "--no-prefix",
        ],
        &[("PORT", &port.to_string())],
    );
    // One worker, and its line as it wrote it.
    let pids = started(&h, 1, false);
    assert_eq!(pids.len(), 1);
    let out = ringleader(&["status", "--admin", &admin_addr, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["workers"].as_array().map(Vec::len), Some(1), "{json}");
    // The file's values the command line left alone still apply.
    assert_eq!(json["primary"]["policy"], "none", "{json}");
}

#[test]
fn a_config_file_with_an_unknown_key_is_refused_by_name() {
    let config = ConfigFile::new("workers = 2\nwokers = 3\ncommand = [\"true\"]\n");
    let out = ringleader(&["run", "--config", &config.path()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("unknown key `wokers`"), "{err}");
    assert!(err.contains("workers, policy"), "{err}");
    // A value the flag would refuse, by its key.
    let config = ConfigFile::new("workers = 0\ncommand = [\"true\"]\n");
    let out = ringleader(&["run", "--config", &config.path()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`workers`: invalid value '0'"), "{err}");
    // And nothing to run at all.
    let config = ConfigFile::new("workers = 2\n");
    let out = ringleader(&["run", "--config", &config.path()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no PROGRAM to run"), "{err}");
}

#[test]
fn status_says_plainly_when_nothing_answers() {
    let addr = format!("127.0.0.1:{}", free_port());
    let out = ringleader(&["status", "--admin", &addr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("nothing answers at {addr}")), "{err}");
    assert!(err.contains("ringleader run --admin"), "{err}");
    let out = Command::new(ringleader_command())
        .arg("status")
        .env_remove("RINGLEADER_ADMIN")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("which primary? Give --admin ADDR"), "{err}");
}

#[test]
fn completions_and_man_pages_are_generated() {
    let out = ringleader(&["completions", "bash"]);
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(script.contains("_ringleader()"), "{script}");
    assert!(script.contains("complete -F _ringleader"), "{script}");
    assert!(script.contains("--max-memory"), "{script}");
    let config = ConfigFile::new("");
    let dir = config.dir.join("man");
    let out = ringleader(&["man", dir.to_str().expect("UTF-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in ["ringleader.1", "ringleader-run.1", "ringleader-status.1"] {
        let text = std::fs::read_to_string(dir.join(page)).expect(page);
        assert!(text.contains(".TH "), "{page}");
    }
    let run = std::fs::read_to_string(dir.join("ringleader-run.1")).expect("run's page");
    assert!(run.contains("kill\\-stalled\\-after"), "{run}");
}

/// A worker that writes 100 MiB with no newline: the primary relays every byte in pieces,
/// each a tagged line, stays small (its peak resident set), and hands connections over
/// all along.
#[test]
fn a_worker_flooding_its_output_without_a_newline_neither_grows_nor_stalls_the_primary() {
    const MIB: usize = 100;
    let port = free_port();
    let h = Spawned::start(
        ringleader_command(),
        &["run", "--workers", "2", "--", "node", FLOOD],
        &[("PORT", &port.to_string()), ("FLOOD_MB", &MIB.to_string())],
    );
    // Requests all along, counted from the first answer on.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, answered) = (stop.clone(), answered.clone());
        std::thread::spawn(move || {
            let mut failed = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match http_get(port, "/") {
                    Ok(a) if a.contains("hello world") => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    // Not listening yet.
                    Err(_) if answered.load(Ordering::Relaxed) == 0 => {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    other => failed.push(other),
                }
            }
            failed
        })
    };
    let (mut relayed, mut pieces) = (0, 0);
    let mut answered_at_start = None;
    while let (0, rest) = h.expect_one_of(&["[worker 1] x", "[worker 1] flooded"]) {
        answered_at_start.get_or_insert_with(|| answered.load(Ordering::Relaxed));
        relayed += rest.len() + 1;
        pieces += 1;
    }
    let during = answered.load(Ordering::Relaxed) - answered_at_start.unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    let failed = load.join().expect("the load thread");
    assert_eq!(relayed, MIB << 20, "every byte, in {pieces} pieces");
    assert!(pieces >= MIB * 16, "pieces of at most 64 KiB: {pieces}");
    assert!(failed.is_empty(), "{failed:?}");
    assert!(during > 0, "no request answered during the flood");
    let status = std::fs::read_to_string(format!("/proc/{}/status", h.pid())).expect("status");
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .expect("VmHWM");
    assert!(
        peak_kib < 32 * 1024,
        "the primary peaked at {peak_kib} KiB relaying {MIB} MiB"
    );
    eprintln!(
        "relayed {MIB} MiB in {pieces} pieces; {during} requests answered meanwhile; the \
         primary peaked at {peak_kib} KiB"
    );
}

/// `cli/ringleader.example.toml`, the file README shows, holds only keys the command takes:
/// it runs (its program and two of its values replaced on the command line).
#[test]
fn the_example_config_file_runs() {
    const EXAMPLE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../cli/ringleader.example.toml"
    );
    let (port, admin) = (free_port(), free_port());
    let admin_addr = format!("127.0.0.1:{admin}");
    let h = Spawned::start(
        ringleader_command(),
        &[
            "run",
            "--config",
            EXAMPLE,
            "--workers",
            "2",
            "--admin",
            &admin_addr,
            "--",
            "node",
            DOCS_EXAMPLE,
        ],
        &[("PORT", &port.to_string())],
    );
    started(&h, 2, true);
    let out = ringleader(&["status", "--admin", &admin_addr, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["workers"].as_array().map(Vec::len), Some(2), "{json}");
    // README quotes the file: every line of its TOML block is one of the file's.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let example = std::fs::read_to_string(EXAMPLE).expect("the example");
    let (_, block) = readme
        .split_once("```toml\ncommand")
        .expect("README's config block");
    let (block, _) = block.split_once("```").expect("the block's end");
    for line in format!("command{block}").lines().filter(|l| !l.is_empty()) {
        assert!(
            example.lines().any(|l| l == line),
            "README's {line:?} is not in the file"
        );
    }
}
