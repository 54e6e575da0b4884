//! `cargo fuzz run st_file`: arbitrary bytes into the `.st` decoder. When a decode succeeds,
//! encoding the result must give back the same bytes (see `st_file::fuzz_check`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = st_proto::st_file::fuzz_check(data) {
        panic!("{e}");
    }
});
