//! `cargo fuzz run krpc`: arbitrary bytes into the bencode and KRPC parsers of the DHT, and
//! into a DHT node. What decodes must re-encode to the same bytes (bencode) and to a message
//! that parses the same (KRPC) (`st_proto::krpc::fuzz_check`); the node must not panic and
//! must stay within its bounds (`st_engine::fuzzing::dht_check`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = st_proto::krpc::fuzz_check(data) {
        panic!("krpc: {e}");
    }
    if let Err(e) = st_engine::fuzzing::dht_check(data) {
        panic!("dht: {e}");
    }
});
