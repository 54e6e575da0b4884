//! `cargo fuzz run transport`: arbitrary sequences of datagrams (delivered, dropped,
//! duplicated, mutated, injected) and clock steps fed to a client and a server endpoint. No
//! panic, and connections and buffers stay within their configured bounds
//! (see `st_engine::fuzzing::transport_check`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = st_engine::fuzzing::transport_check(data) {
        panic!("{e}");
    }
});
