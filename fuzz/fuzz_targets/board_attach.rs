//! The load board against arbitrary memory: a worker controls every byte of the shared
//! region, so attaching to it, reading every slot and draining every hint ring must never
//! panic or loop, and what a read accepts must be consistent (finished <= taken <= handed).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((handed, bytes)) = data.split_first_chunk::<8>() else { return };
    ringleader::internals::board_attach(bytes, u64::from_le_bytes(*handed));
});
