//! `cargo fuzz run packet`: arbitrary bytes into every datagram parser (header, each packet
//! body, the DATA frame sequence). When a parse succeeds, emitting the result must give back
//! the same bytes and an equal parse (see `st_proto::packet::roundtrip_check`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = st_proto::packet::roundtrip_check(data) {
        panic!("{e}");
    }
});
