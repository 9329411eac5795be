//! The PROXY protocol header reader against arbitrary bytes from a client.
//!
//! Properties: nothing panics; a whole header is no longer than the bytes or the limit, and
//! reads the same alone; every shorter prefix of it reads as incomplete (the primary waits
//! for more, never refuses a header still arriving); a refusal stands whatever comes after
//! (refusing early is right); and what is incomplete is shorter than the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringleader::internals::{MAX_PROXY_HEADER, proxy_header};

fuzz_target!(|data: &[u8]| {
    match proxy_header(data) {
        None => assert!(data.len() < MAX_PROXY_HEADER),
        Some(Ok((len, proxied))) => {
            assert!(len <= data.len() && len <= MAX_PROXY_HEADER);
            assert_eq!(proxy_header(&data[..len]), Some(Ok((len, proxied))));
            for cut in 0..len {
                assert_eq!(proxy_header(&data[..cut]), None, "cut at {cut} of {len}");
            }
        }
        Some(Err(_)) => {
            let mut more = data.to_vec();
            more.extend_from_slice(b"\r\n\r\n0123456789");
            assert!(matches!(proxy_header(&more), Some(Err(_))));
        }
    }
});
