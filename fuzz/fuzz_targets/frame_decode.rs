//! The control channel's decoder against arbitrary bytes from a worker.
//!
//! The first byte picks how the rest is split into reads. Properties: nothing panics; the
//! chunked receive buffer yields exactly the frames the one-shot decoder finds, whatever the
//! split; and every frame found re-encodes to the bytes it was decoded from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringleader::internals::frame::{self, HEADER_LEN};
use ringleader::internals::inbound_frames;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else { return };
    let whole = frame::decode_all(bytes);
    assert!(whole.consumed <= bytes.len());

    // Re-encoding reproduces the consumed bytes exactly.
    let mut again = Vec::with_capacity(whole.consumed);
    for (h, payload) in &whole.frames {
        assert_eq!(payload.len(), h.len);
        again.extend_from_slice(&frame::encode_header(h.kind, h.nfds, h.len));
        again.extend_from_slice(payload);
    }
    assert_eq!(&again[..], &bytes[..whole.consumed]);

    // Any split into reads gives the same frames (fds aside: frames that claim one fail
    // with MissingFd in both views at the same frame).
    let step = usize::from(split % 64) + 1;
    let chunks: Vec<&[u8]> = bytes.chunks(step).collect();
    match inbound_frames(&chunks) {
        Ok(frames) => {
            assert!(whole.error.is_none() || whole.frames.len() >= frames.len());
            let expected: Vec<(u8, Vec<u8>)> = whole
                .frames
                .iter()
                .map(|(h, p)| (h.kind as u8, p.to_vec()))
                .collect();
            assert_eq!(frames, expected);
        }
        Err(e) => {
            // The buffer stops at the same place: a header error, or a frame that claims an fd.
            let claims_fd = whole.frames.iter().any(|(h, _)| h.nfds > 0);
            assert!(whole.error.as_ref() == Some(&e) || claims_fd, "{e:?} vs {:?}", whole.error);
        }
    }
    let _ = HEADER_LEN;
});
