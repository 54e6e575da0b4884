//! Replays the committed `st_file` fuzz corpus on stable, so that CI catches a regression on
//! any input the fuzzer once found interesting. Only the files the committed manifest lists
//! are read (`fuzz/manifest.sh`).

use std::path::Path;

use sha2::{Digest, Sha256};

/// Exactly the files `fuzz/corpus/st_file.sha256` lists, each checked against its hash (the
/// engine's `fuzzing::committed_corpus` does the same for the other targets).
fn committed(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let manifest =
        std::fs::read_to_string(root.join(format!("{target}.sha256"))).expect("corpus manifest");
    manifest
        .lines()
        .map(|line| {
            let (hash, name) = line.split_once("  ").expect("`HASH  NAME`");
            let data = std::fs::read(root.join(target).join(name))
                .unwrap_or_else(|e| panic!("{target}/{name}: {e}"));
            let got: String = Sha256::digest(&data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(got, hash, "{target}/{name} differs from its manifest");
            (name.to_owned(), data)
        })
        .collect()
}

#[test]
fn st_file_corpus_replays() {
    let mut n = 0;
    let mut decoded = 0;
    for (name, data) in committed("st_file") {
        if let Err(e) = st_proto::st_file::fuzz_check(&data) {
            panic!("{name}: {e}");
        }
        decoded += usize::from(st_proto::st_file::StFile::decode(&data).is_ok());
        n += 1;
    }
    // The spec vectors are in the corpus: at least they must decode.
    assert!(n >= 2, "corpus is empty");
    assert!(
        decoded >= 2,
        "the spec vectors in the corpus no longer decode"
    );
}
