//! The layers of the `ringleader` crate point one way (DESIGN.md, section 2): this reads the
//! crate's sources and fails on an import that goes against them. A module's place is its
//! top-level name under `src/`; what it uses is every `crate::<name>` path in its code
//! (comments aside), wherever it stands.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The leaves: they import no cluster code (`primary`, `worker`, `role`).
const LEAVES: &[&str] = &[
    "ids",
    "contract",
    "tuning",
    "error",
    "ipc",
    "board",
    "policy",
    "proxy_protocol",
];

/// Every `.rs` file under `dir`, with its top-level module name.
fn sources(dir: &Path, top: Option<&str>, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if path.is_dir() {
            sources(&path, Some(top.unwrap_or(name)), out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let module = top.unwrap_or(name).to_owned();
            out.push((module, std::fs::read_to_string(&path).expect("read")));
        }
    }
}

/// The top-level modules a source names as `crate::<name>`, comments aside.
fn uses(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + 7..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                found.insert(name);
            }
        }
        // `use crate::{a, b}` groups.
        if let Some(group) = code.trim_start().strip_prefix("use crate::{") {
            for part in group.split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
    }
    found
}

/// Which top-level module uses which.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../src");
    let mut files = Vec::new();
    sources(&src, None, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in files {
        if module == "lib" {
            continue; // the crate root declares and re-exports everything
        }
        let used = uses(&text);
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(used.into_iter().filter(|u| *u != module));
    }
    graph
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = graph();
    // Depth-first search for a back edge; the path to it is the cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == node) {
            panic!("an import cycle: {} -> {node}", path[at..].join(" -> "));
        }
        if done.contains(node) {
            return;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(node.to_owned());
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_leaves_primary_and_worker_import_only_downwards() {
    let graph = graph();
    assert!(graph.contains_key("primary") && graph.contains_key("policy"));
    for (module, used) in &graph {
        let wrong: Vec<&String> = used
            .iter()
            .filter(|u| match module.as_str() {
                m if LEAVES.contains(&m) => !LEAVES.contains(&u.as_str()),
                "primary" => matches!(u.as_str(), "worker" | "role"),
                "worker" => matches!(u.as_str(), "primary" | "role"),
                _ => false,
            })
            .collect();
        assert!(wrong.is_empty(), "{module} imports {wrong:?}");
    }
}

/// Within each folder module (`primary/`, `primary/listeners/`, `worker/`…), which of its
/// children (files and folders, the folder's own `mod.rs` aside) each child names, through
/// `super::<name>` or the folder's full path.
fn sibling_graphs() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    fn walk(
        dir: &Path,
        path: &str,
        out: &mut BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    ) {
        let mut children = BTreeMap::new();
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let p = entry.expect("entry").path();
            let name = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .to_owned();
            if p.is_dir() {
                walk(&p, &format!("{path}::{name}"), out);
                children.insert(name, p);
            } else if p.extension().is_some_and(|e| e == "rs") && name != "mod" && name != "lib" {
                children.insert(name, p);
            }
        }
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, p) in &children {
            let mut texts = Vec::new();
            if p.is_dir() {
                // A folder child names its siblings as `super::super::x` or by full path;
                // its own `mod.rs` as `super::x`.
                for f in std::fs::read_dir(p).expect("read dir") {
                    let f = f.expect("entry").path();
                    if f.extension().is_some_and(|e| e == "rs") {
                        let own = f.file_stem().is_some_and(|s| s == "mod");
                        let up = if own { "super::" } else { "super::super::" };
                        texts.push((up, std::fs::read_to_string(&f).expect("read")));
                    }
                }
            } else {
                texts.push(("super::", std::fs::read_to_string(p).expect("read")));
            }
            let names = graph.entry(name.clone()).or_default();
            for (up, text) in texts {
                for line in text.lines() {
                    let code = line.split("//").next().unwrap_or("");
                    for prefix in [format!("{path}::"), up.to_owned()] {
                        let mut rest = code;
                        while let Some(at) = rest.find(prefix.as_str()) {
                            rest = &rest[at + prefix.len()..];
                            let group = rest.strip_prefix('{').unwrap_or(rest);
                            for part in group.split(',') {
                                let n: String = part
                                    .trim()
                                    .chars()
                                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                                    .collect();
                                if children.contains_key(&n) && n != *name {
                                    names.insert(n);
                                }
                                if !rest.starts_with('{') {
                                    break;
                                }
                            }
                        }
                    }
                }
            }
        }
        if !graph.is_empty() {
            out.insert(path.to_owned(), graph);
        }
    }
    let mut out = BTreeMap::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../src"),
        "crate",
        &mut out,
    );
    out
}

#[test]
fn no_file_imports_a_sibling_that_imports_it_back() {
    let graphs = sibling_graphs();
    assert!(
        graphs["crate::primary"].contains_key("listeners"),
        "{graphs:?}"
    );
    for (folder, graph) in &graphs {
        let mut done = BTreeSet::new();
        for node in graph.keys() {
            let mut path = Vec::new();
            if let Some(cycle) = find_cycle(node, graph, &mut path, &mut done) {
                panic!("an import cycle in {folder}: {cycle}");
            }
        }
    }
}

/// A cycle through `node`'s descendants, as `a -> b -> a`, if there is one.
fn find_cycle(
    node: &str,
    graph: &BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<String> {
    if let Some(at) = path.iter().position(|p| p == node) {
        return Some(format!("{} -> {node}", path[at..].join(" -> ")));
    }
    if !done.insert(node.to_owned()) {
        return None;
    }
    path.push(node.to_owned());
    for next in graph.get(node).into_iter().flatten() {
        if let Some(c) = find_cycle(next, graph, path, done) {
            return Some(c);
        }
    }
    path.pop();
    None
}

#[test]
fn the_reader_sees_imports_however_they_are_written() {
    let text = "use crate::ipc::frame::Kind;\nuse crate::{board, error::Error};\n\
                // crate::primary in a comment\nlet x = crate::worker::board::WorkerBoard::attach();";
    let found: Vec<String> = uses(text).into_iter().collect();
    assert_eq!(found, ["board", "error", "ipc", "worker"]);
}
