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
        // The packet target also feeds the peer and LAN discovery parsers.
        if let Err(e) = st_proto::peer::fuzz_check(d) {
            panic!("{}: peer: {e}", p.display());
        }
        if let Err(e) = st_proto::discovery::fuzz_check(d) {
            panic!("{}: discovery: {e}", p.display());
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

/// A transport script that completes the handshake, then injects a DATA packet with packet
/// number `u64::MAX` at the live server connection from the client's address, then carries on
/// (spec §7: packet numbers are below 2^62).
#[test]
fn transport_check_survives_a_huge_packet_number() {
    let mut script = vec![1, 2, 1, 2, 1];
    // Op 6: 5 × 8 raw bytes; flags 11 = valid header, type DATA, live dcid, client address.
    let mut raw = [0u8; 40];
    raw[20..28].copy_from_slice(&u64::MAX.to_be_bytes());
    raw[32] = 0x01; // PING, then padding
    script.extend_from_slice(&[6, 5]);
    script.extend_from_slice(&raw);
    script.push(11);
    // Send, deliver both ways, step the clock, deliver again.
    script.extend_from_slice(&[7, 0, 100, 1, 1, 1, 2, 2, 2, 0, 5, 1, 1, 2, 2]);
    st_engine::fuzzing::transport_check(&script).unwrap();
}

#[test]
fn krpc_corpus_round_trips_and_the_dht_node_holds() {
    let files = corpus("krpc");
    assert!(files.len() >= 16, "krpc corpus present");
    let mut parsed = 0;
    for (p, d) in &files {
        match st_proto::krpc::fuzz_check(d) {
            Ok(true) => parsed += 1,
            Ok(false) => {}
            Err(e) => panic!("{}: {e}", p.display()),
        }
        if let Err(e) = st_engine::fuzzing::dht_check(d) {
            panic!("{}: {e}", p.display());
        }
    }
    assert!(
        parsed >= 14,
        "the corpus holds valid messages of every kind ({parsed})"
    );
}
