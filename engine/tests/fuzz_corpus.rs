//! Replays the committed fuzz corpora on stable: `fuzz/corpus/packet/*` through the packet
//! round-trip check and `fuzz/corpus/transport/*` through the transport script check.

use std::path::PathBuf;

fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(name);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let d = std::fs::read(&p).unwrap();
            (p, d)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn packet_corpus_round_trips() {
    let files = corpus("packet");
    assert!(files.len() >= 8, "packet corpus present");
    let mut parsed = 0;
    for (p, d) in &files {
        match st_proto::packet::roundtrip_check(d) {
            Ok(true) => parsed += 1,
            Ok(false) => {}
            Err(e) => panic!("{}: {e}", p.display()),
        }
    }
    assert!(
        parsed >= 8,
        "the corpus holds valid packets of every type ({parsed})"
    );
}

#[test]
fn transport_corpus_keeps_invariants() {
    let files = corpus("transport");
    assert!(!files.is_empty(), "transport corpus present");
    for (p, d) in &files {
        if let Err(e) = st_engine::fuzzing::transport_check(d) {
            panic!("{}: {e}", p.display());
        }
    }
}
