//! The README's example is `examples/first.rs` to the letter (the crate docs include the
//! file), and it does what the README says: both workers serve on one port.

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;

use ringleader_tests::{Spawned, WATCHDOG, example, free_port};

/// The text of the README's first `rust,no_run` block.
fn readme_example() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let (_, rest) = readme
        .split_once("```rust,no_run\n")
        .expect("a rust,no_run block in README.md");
    let (block, _) = rest.split_once("```\n").expect("the block's end");
    block.to_owned()
}

#[test]
fn the_readme_example_is_examples_first_rs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let file = std::fs::read_to_string(root.join("examples/first.rs")).expect("first.rs");
    assert!(
        readme_example() == file,
        "README.md's example differs from examples/first.rs: copy the file into the README"
    );
}

#[test]
fn the_readme_example_serves_from_both_workers() {
    let port = free_port();
    let first = Spawned::start(example("first"), &[], &[("PORT", &port.to_string())]);
    let mut listening = 0;
    while listening < 2 {
        if first
            .expect_line("Worker ")
            .contains(&format!("listening on 127.0.0.1:{port}"))
        {
            listening += 1;
        }
    }
    let mut answers = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(WATCHDOG)).expect("timeout");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("an answer");
        answers.insert(answer);
        if answers.len() == 2 {
            break;
        }
    }
    let expected: std::collections::BTreeSet<String> =
        ["hello from worker 1\n", "hello from worker 2\n"]
            .map(String::from)
            .into();
    assert_eq!(answers, expected);
}
