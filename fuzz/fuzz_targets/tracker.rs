//! `cargo fuzz run tracker`: arbitrary bytes into the tracker's request parsers, native (bare
//! and inside a transport REQUEST) and BEP 15: what parses re-encodes to the same bytes and
//! parses the same (`st_proto::tracker::fuzz_check`); and into a tracker core, which must not
//! panic, must keep its replies within 1200 bytes and 3× a native request, and its tables
//! within their limits (`st_engine::fuzzing::tracker_check`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = st_proto::tracker::fuzz_check(data) {
        panic!("tracker wire: {e}");
    }
    if let Err(e) = st_engine::fuzzing::tracker_check(data) {
        panic!("tracker core: {e}");
    }
});
