//! `ringleader`: runs a program's workers under ringleader's supervisor, and shows them.
//!
//! ```text
//! ringleader run [OPTIONS] [--config FILE] -- PROGRAM [ARGS...]
//! ringleader status [--admin ADDR | --config FILE] [--watch] [--json]
//! ringleader completions SHELL
//! ringleader man DIR
//! ```
//!
//! `run` is the supervisor ([`run`]), `status` a table of its workers read from its admin
//! endpoint ([`status`]), `--config` a TOML file of `run`'s flags ([`config`]); the workers'
//! output reaches ours a whole line at a time, each tagged with its worker ([`relay`]).

mod config;
mod relay;
mod run;
mod status;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches};

/// Many cores for one program: its workers share its ports under a supervisor.
#[derive(clap::Parser, Debug)]
#[command(name = "ringleader", version)]
enum Cli {
    /// Runs PROGRAM's workers under the supervisor.
    Run(Box<run::Run>),
    /// Shows the workers of a running `ringleader run` (its admin endpoint's /status).
    Status(status::Status),
    /// Prints a completion script for SHELL (bash: `ringleader completions bash >
    /// /etc/bash_completion.d/ringleader`).
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Writes the man pages (ringleader.1, ringleader-run.1, …) into DIR.
    Man {
        /// Where to write them (created if missing).
        dir: PathBuf,
    },
}

fn main() {
    if let Err(e) = dispatch() {
        // The error and its causes: what failed, and the OS's reason.
        let mut line = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            line.push_str(&format!(": {c}"));
            cause = c.source();
        }
        eprintln!("ringleader: {line}");
        std::process::exit(1);
    }
}

fn dispatch() -> Result<(), Box<dyn std::error::Error>> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let matches = config::with_config_file(Cli::command(), argv)?;
    match Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()) {
        Cli::Run(args) => run::run(*args),
        Cli::Status(args) => status::status(args),
        Cli::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "ringleader",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Cli::Man { dir } => man(&dir),
    }
}

/// Writes `ringleader.1` and one page per command into `dir`, and names them.
fn man(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let top = Cli::command();
    let mut pages = vec![("ringleader".to_owned(), top.clone())];
    for sub in top.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("ringleader-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    for (name, command) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(command).render(&mut page)?;
        std::fs::write(&path, page).map_err(|e| format!("write {}: {e}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}
