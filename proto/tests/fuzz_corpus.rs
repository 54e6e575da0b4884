//! Replays the committed `st_file` fuzz corpus on stable, so that CI catches a regression on
//! any input the fuzzer once found interesting.

use std::path::Path;

#[test]
fn st_file_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/st_file");
    let mut n = 0;
    let mut decoded = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        if let Err(e) = st_proto::st_file::fuzz_check(&data) {
            panic!("{}: {e}", path.display());
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
