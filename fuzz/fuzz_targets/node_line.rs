//! The decoder of Node.js's IPC lines against arbitrary bytes from a worker.
//!
//! The first byte picks how the rest is split into reads. Properties: nothing panics; the
//! line splitter yields the same lines whatever the split; each line decodes to a message or
//! an error, and a line carrying a key built from any query is one line.
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
            // A key is what the worker's address makes it (Node builds it the same way, a
            // newline included); what must hold is that the line carrying it is one line.
            let line = node::to_worker::newconn(1, &q.key());
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        }
    }
});
