//! `--config FILE`: `ringleader run`'s flags in a TOML file (PM2's ecosystem file).
//!
//! ```toml
//! workers = 4
//! policy = "lc"
//! admin = "127.0.0.1:9100"
//! listen = ["web=127.0.0.1:8000"]
//! no-prefix = true
//! command = ["node", "app.js"]
//! ```
//!
//! Each key is a flag's long name, and its value what the flag takes: a string or a number,
//! a list for a flag that repeats, `true` for a flag that takes none. `command` is PROGRAM
//! and its arguments. The file's values become flags ahead of the command line's and are
//! checked by the same parser, so they mean exactly what the flags mean; a flag given on the
//! command line (or in its environment variable) wins and the file's is left out. A key that
//! is no flag is an error that names it. `ringleader status --config FILE` reads `admin`
//! from the same file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// The key for PROGRAM and its arguments.
const COMMAND: &str = "command";

/// Flags that are no setting of a run.
const NOT_KEYS: [&str; 3] = ["config", "help", "version"];

/// Parses `argv` with `cli`, the values of a `--config` file merged in (for `run` and
/// `status`). Exits as clap does on a usage error, `--help` or `--version`.
pub(crate) fn with_config_file(
    cli: Command,
    argv: Vec<OsString>,
) -> Result<ArgMatches, Box<dyn std::error::Error>> {
    let matches = cli.clone().get_matches_from(&argv);
    let Some((name, given)) = matches.subcommand() else {
        return Ok(matches);
    };
    let Some(path) = given.try_get_one::<PathBuf>("config").ok().flatten() else {
        return Ok(matches);
    };
    let run = cli.find_subcommand("run").ok_or("no run command")?;
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| format!("--config {}: not TOML: {e}", path.display()))?;
    let mut from_file = Vec::new();
    for (key, value) in &table {
        if key == COMMAND {
            if name == "run" && !given.contains_id("program") {
                from_file.push((key.clone(), program(path, value)?));
            }
            continue;
        }
        let arg = run
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && !NOT_KEYS.contains(&key.as_str()))
            .ok_or_else(|| unknown(path, key, run))?;
        // `status` takes only where the admin endpoint is.
        let applies = name == "run" || key == "admin";
        if !applies {
            continue;
        }
        let on_command_line = matches!(
            given.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !on_command_line {
            from_file.push((key.clone(), flags(path, key, value, arg.get_action())?));
        }
    }
    if from_file.is_empty() {
        return Ok(matches);
    }
    // [program, subcommand, the file's flags, the command line's, the file's command].
    let at = argv.iter().position(|a| a == name).ok_or("no subcommand")?;
    let mut merged: Vec<OsString> = argv[..=at].to_vec();
    let command = from_file.iter().position(|(k, _)| k == COMMAND);
    let command = command.map(|i| from_file.remove(i).1);
    merged.extend(from_file.iter().flat_map(|(_, f)| f.iter().cloned()));
    merged.extend(argv[at + 1..].iter().cloned());
    merged.extend(command.into_iter().flatten());
    cli.try_get_matches_from(merged).map_err(|e| {
        // A value of the file's that the parser refused: say which key holds it.
        let refused = e
            .get(clap::error::ContextKind::InvalidArg)
            .map(|a| a.to_string());
        let key = refused.as_deref().and_then(|a| {
            from_file
                .iter()
                .find(|(k, _)| a.starts_with(&format!("--{k} ")) || a == format!("--{k}"))
        });
        match key {
            Some((key, _)) => format!("--config {}: `{key}`: {}", path.display(), plain(&e)).into(),
            None => Box::<dyn std::error::Error>::from(e.render().to_string()),
        }
    })
}

/// A clap error's first line without its `error: ` lead.
fn plain(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

/// The error for `key`, which is no flag of `run`: names it, and the keys there are.
fn unknown(path: &Path, key: &str, run: &Command) -> String {
    let keys: Vec<&str> = run
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|k| !NOT_KEYS.contains(k))
        .chain([COMMAND])
        .collect();
    format!(
        "--config {}: unknown key `{key}`; the keys are `ringleader run`'s long flags and \
         `command`: {}",
        path.display(),
        keys.join(", ")
    )
}

/// `command = ["node", "app.js"]`: `--` and PROGRAM and its arguments.
fn program(path: &Path, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let words: Option<Vec<&str>> = value
        .as_array()
        .and_then(|a| a.iter().map(toml::Value::as_str).collect());
    match words {
        Some(words) if !words.is_empty() => Ok(std::iter::once("--")
            .chain(words)
            .map(OsString::from)
            .collect()),
        _ => Err(format!(
            "--config {}: `command` is PROGRAM and its arguments, a list of strings such as \
             [\"node\", \"app.js\"]",
            path.display()
        )),
    }
}

/// The flags that say what `key = value` says.
fn flags(
    path: &Path,
    key: &str,
    value: &toml::Value,
    action: &ArgAction,
) -> Result<Vec<OsString>, String> {
    let wrong = |what: &str| format!("--config {}: `{key}` takes {what}", path.display());
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    };
    let flag = |v: String| OsString::from(format!("--{key}={v}"));
    match (action, value) {
        (ArgAction::SetTrue, toml::Value::Boolean(true)) => Ok(vec![format!("--{key}").into()]),
        (ArgAction::SetTrue, toml::Value::Boolean(false)) => Ok(Vec::new()),
        (ArgAction::SetTrue, _) => Err(wrong("true or false")),
        (ArgAction::Append, toml::Value::Array(values)) => values
            .iter()
            .map(|v| scalar(v).map(flag))
            .collect::<Option<_>>()
            .ok_or_else(|| wrong("a list of strings or numbers")),
        (_, v) => scalar(v)
            .map(|v| vec![flag(v)])
            .ok_or_else(|| wrong("a string or a number")),
    }
}
