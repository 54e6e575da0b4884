//! Replays the committed fuzz corpora on stable: `packet` through the packet round-trip
//! check, `transport` through the transport script check, `krpc` through the KRPC and DHT
//! checks, `tracker` through the tracker wire and core checks. Only the files listed in
//! `fuzz/corpus/<target>.sha256` are read, and each must match its hash (`fuzz/manifest.sh`
//! rewrites the manifests), so a local fuzzing run does not change what the suite runs.

use std::path::PathBuf;

use st_proto::packet::{self, Header, Packet, PacketType};
use st_proto::tracker::{self as wire, Announce, Event};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    st_engine::fuzzing::committed_corpus(&root(), name)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|(n, d)| (PathBuf::from(name).join(n), d))
        .collect()
}

#[test]
fn every_corpus_directory_has_a_manifest_of_committed_files() {
    for t in ["packet", "transport", "krpc", "st_file", "tracker"] {
        let files = corpus(t);
        assert!(!files.is_empty(), "{t}: empty manifest");
    }
    // A file the manifest does not list is not read: an extra file is ignored, a listed file
    // that changed is an error.
    let dir = std::env::temp_dir().join(format!("st-corpus-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("x")).unwrap();
    std::fs::write(dir.join("x/a"), b"abc").unwrap();
    std::fs::write(dir.join("x/extra"), b"zzz").unwrap();
    std::fs::write(
        dir.join("x.sha256"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  a\n",
    )
    .unwrap();
    let got = st_engine::fuzzing::committed_corpus(&dir, "x").unwrap();
    assert_eq!(got, vec![("a".to_owned(), b"abc".to_vec())]);
    std::fs::write(dir.join("x/a"), b"abd").unwrap();
    assert!(st_engine::fuzzing::committed_corpus(&dir, "x").is_err());
    std::fs::remove_file(dir.join("x/a")).unwrap();
    assert!(st_engine::fuzzing::committed_corpus(&dir, "x").is_err());
    let _ = std::fs::remove_dir_all(&dir);
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

#[test]
fn tracker_corpus_round_trips_and_the_tracker_holds() {
    let files = corpus("tracker");
    assert!(files.len() >= 15, "tracker corpus present");
    let mut parsed = 0;
    for (p, d) in &files {
        match st_proto::tracker::fuzz_check(d) {
            Ok(true) => parsed += 1,
            Ok(false) => {}
            Err(e) => panic!("{}: {e}", p.display()),
        }
        if let Err(e) = st_engine::fuzzing::tracker_check(d) {
            panic!("{}: {e}", p.display());
        }
    }
    assert!(parsed >= 10, "valid requests of both protocols ({parsed})");
}

fn transport_request(payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; packet::HEADER_LEN + payload.len()];
    let hdr = Header {
        ptype: PacketType::Request,
        dcid: 0,
        scid: 0x5eed,
        pn: 1,
    };
    let n = packet::emit(&Packet::Request { hdr, payload }, &mut d).unwrap();
    d.truncate(n);
    d
}

fn bep15_announce(event: u32, extra: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(0x8000_0000_0000_0001u64.to_be_bytes());
    b.extend(1u32.to_be_bytes());
    b.extend(77u32.to_be_bytes());
    b.extend([0xAB; 20]);
    b.extend([0x2D; 20]);
    b.extend(0u64.to_be_bytes());
    b.extend(1000u64.to_be_bytes());
    b.extend(0u64.to_be_bytes());
    b.extend(event.to_be_bytes());
    b.extend(0u32.to_be_bytes());
    b.extend(9u32.to_be_bytes());
    b.extend((-1i32).to_be_bytes());
    b.extend(6881u16.to_be_bytes());
    b.extend(extra);
    b
}

fn bep15_scrape(n: usize, ragged: usize) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(0x8000_0000_0000_0001u64.to_be_bytes());
    b.extend(2u32.to_be_bytes());
    b.extend(78u32.to_be_bytes());
    for i in 0..n {
        b.extend([i as u8; 20]);
    }
    b.extend(vec![0xEE; ragged]);
    b
}

fn native_announce(len: usize) -> Vec<u8> {
    let a = Announce {
        connection_id: 0x8000_0000_0000_0001,
        swarm_id: [0xAB; 32],
        peer_id: [3; 16],
        event: Event::Started,
        port: 7000,
        numwant: 50,
        left: 1000,
        uploaded: 0,
        downloaded: 0,
    };
    let mut b = vec![0u8; wire::MAX_ANNOUNCE_LEN];
    let n = wire::emit_padded_announce_request(&mut b, &a, len).unwrap();
    b.truncate(n);
    b
}

/// Writes the tracker seed corpus: `ST_WRITE_SEEDS=1 cargo test -p st-engine --test
/// fuzz_corpus write_tracker_seeds -- --ignored`, then `fuzz/manifest.sh` after `git add`.
#[test]
#[ignore]
fn write_tracker_seeds() {
    if std::env::var_os("ST_WRITE_SEEDS").is_none() {
        return;
    }
    let mut connect = [0u8; 16];
    wire::emit_bep15_connect(&mut connect, 0xC0FFEE).unwrap();
    let mut bad_magic = connect;
    bad_magic[0] = 1;
    let mut unknown = connect;
    unknown[11] = 9;
    let mut native_connect = [0u8; 16];
    wire::emit_connect_request(&mut native_connect).unwrap();
    let mut scrape = vec![0u8; 16 + 3 * 32];
    let n = wire::emit_scrape_request(
        &mut scrape,
        0x8000_0000_0000_0001,
        &[[1; 32], [2; 32], [0xAB; 32]],
    )
    .unwrap();
    scrape.truncate(n);
    let mut scrape_short = scrape.clone();
    scrape_short.truncate(n - 32);
    let mut nonzero_pad = native_announce(120);
    nonzero_pad[100] = 1;
    let mut port0 = native_announce(88);
    port0[2..4].fill(0);
    let mut bad_sum = transport_request(&native_announce(88));
    bad_sum[40] ^= 0x10;
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("bep15_connect", connect.to_vec()),
        ("bep15_connect_bad_magic", bad_magic.to_vec()),
        ("bep15_unknown_action", unknown.to_vec()),
        ("bep15_announce_started", bep15_announce(2, &[])),
        ("bep15_announce_stopped", bep15_announce(3, &[])),
        (
            "bep15_announce_bep41_options",
            bep15_announce(0, &[2, 5, b'/', b'a', b'n', b'n', b'o', 1, 0]),
        ),
        (
            "bep15_announce_truncated",
            bep15_announce(2, &[])[..97].to_vec(),
        ),
        ("bep15_scrape_2", bep15_scrape(2, 0)),
        ("bep15_scrape_ragged", bep15_scrape(2, 7)),
        ("native_connect", transport_request(&native_connect)),
        ("native_connect_bare_payload", native_connect.to_vec()),
        ("native_announce", transport_request(&native_announce(88))),
        (
            "native_announce_padded_286",
            transport_request(&native_announce(286)),
        ),
        (
            "native_announce_padded_max",
            transport_request(&native_announce(wire::MAX_ANNOUNCE_LEN)),
        ),
        (
            "native_announce_nonzero_padding",
            transport_request(&nonzero_pad),
        ),
        ("native_announce_port0", transport_request(&port0)),
        ("native_announce_bad_checksum", bad_sum),
        ("native_scrape_3", transport_request(&scrape)),
        (
            "native_scrape_count_mismatch",
            transport_request(&scrape_short),
        ),
    ];
    let dir = root().join("tracker");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, data) in seeds {
        std::fs::write(dir.join(name), data).unwrap();
    }
}
