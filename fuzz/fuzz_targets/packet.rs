//! `cargo fuzz run packet`: arbitrary bytes into every datagram and message parser: the
//! transport (header, each packet body, the DATA frame sequence), the peer messages, the LAN
//! discovery announce and the tracker requests and responses. When a parse succeeds, emitting
//! the result must give back the same bytes (see `st_proto::packet::roundtrip_check`,
//! `st_proto::peer::fuzz_check`, `st_proto::discovery::fuzz_check`); no parser may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = st_proto::packet::roundtrip_check(data) {
        panic!("transport: {e}");
    }
    if let Err(e) = st_proto::peer::fuzz_check(data) {
        panic!("peer: {e}");
    }
    if let Err(e) = st_proto::discovery::fuzz_check(data) {
        panic!("discovery: {e}");
    }
    let _ = st_proto::tracker::parse_native_request(data);
    let _ = st_proto::tracker::parse_native_response(data);
    let _ = st_proto::tracker::parse_bep15_request(data);
});
