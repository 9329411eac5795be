//! The decoder of Node.js's IPC lines against arbitrary bytes from a worker.
//!
//! The first byte picks how the rest is split into reads. Properties: nothing panics; the
//! line splitter yields the same lines whatever the split; each line decodes to a message or
//! an error, and a key built from any query is one line of text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringleader::internals::node::{self, Cluster, FromWorker, Lines};

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else { return };
    let whole: Vec<&[u8]> = {
        let mut v: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        v.pop(); // the part after the last newline is no line yet
        v
    };
    let step = usize::from(split % 64) + 1;
    let mut lines = Lines::default();
    let mut got = Vec::new();
    for chunk in bytes.chunks(step) {
        lines.push(chunk);
        while let Ok(Some(line)) = lines.next_line() {
            got.push(line);
        }
    }
    assert_eq!(got.len(), whole.len());
    for (a, b) in got.iter().zip(&whole) {
        assert_eq!(&a[..], *b);
    }
    for line in got {
        if let Ok(FromWorker::Cluster {
            body: Cluster::QueryServer(q) | Cluster::Listening(q),
            ..
        }) = node::decode(&line)
        {
            assert!(!q.key().contains('\n'));
        }
    }
});
