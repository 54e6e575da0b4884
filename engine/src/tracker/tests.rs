//! Tracker core tests: both protocols, the rules of `spec/tracker.md`, and abuse.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use st_proto::packet::{self, Header, Packet, PacketType};
use st_proto::tracker::{
    self as wire, Announce, Event, NativeResponse, bep15_event, emit_bep15_connect,
};

use super::*;

const T0: Time = Time::from_micros(1_000_000_000);

fn v4(last: u8, port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, 0, 0, last), port))
}

fn v6(last: u16, port: u16) -> SocketAddr {
    SocketAddr::from((Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last), port))
}

fn tracker() -> Tracker {
    Tracker::new(Config::default(), 42)
}

fn reply(t: &mut Tracker, now: Time, src: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
    let mut out = [0u8; 2048];
    match t.handle(now, src, data, &mut out) {
        Outcome::Reply(n) => {
            assert!(n <= MAX_REPLY, "reply of {n} bytes exceeds one datagram");
            Some(out[..n].to_vec())
        }
        Outcome::Drop => None,
    }
}

fn bep15_connect(t: &mut Tracker, now: Time, src: SocketAddr) -> u64 {
    let mut b = [0u8; 16];
    emit_bep15_connect(&mut b, 77).unwrap();
    let r = reply(t, now, src, &b).expect("connect answered");
    assert_eq!(r.len(), 16, "connect reply no larger than the request");
    assert_eq!(&r[..8], &[0, 0, 0, 0, 0, 0, 0, 77]);
    u64::from_be_bytes(r[8..16].try_into().unwrap())
}

fn bep15_announce_bytes(
    cid: u64,
    hash: [u8; 20],
    left: u64,
    event: Event,
    numwant: i32,
    port: u16,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(98);
    b.extend(cid.to_be_bytes());
    b.extend(1u32.to_be_bytes());
    b.extend(1234u32.to_be_bytes());
    b.extend(hash);
    b.extend([9u8; 20]);
    b.extend(0u64.to_be_bytes());
    b.extend(left.to_be_bytes());
    b.extend(0u64.to_be_bytes());
    b.extend(bep15_event(event).to_be_bytes());
    b.extend([1, 2, 3, 4]); // an IP field that must be ignored
    b.extend(0u32.to_be_bytes());
    b.extend(numwant.to_be_bytes());
    b.extend(port.to_be_bytes());
    assert_eq!(b.len(), 98);
    b
}

/// Announces over BEP 15 from `src` (connecting first); returns (interval, leechers, seeders,
/// peers as socket addresses).
fn bep15_announce(
    t: &mut Tracker,
    now: Time,
    src: SocketAddr,
    hash: [u8; 20],
    left: u64,
    event: Event,
    numwant: i32,
) -> (u32, u32, u32, Vec<SocketAddr>) {
    let cid = bep15_connect(t, now, src);
    let r = reply(
        t,
        now,
        src,
        &bep15_announce_bytes(cid, hash, left, event, numwant, src.port()),
    )
    .expect("announce answered");
    let be = |i: usize| u32::from_be_bytes(r[i..i + 4].try_into().unwrap());
    assert_eq!(be(0), 1);
    assert_eq!(be(4), 1234);
    let size = if canonical_ip(src.ip()).is_ipv4() {
        6
    } else {
        18
    };
    assert_eq!((r.len() - 20) % size, 0);
    let peers = r[20..]
        .chunks(size)
        .map(|c| {
            let port = u16::from_be_bytes([c[size - 2], c[size - 1]]);
            if size == 6 {
                SocketAddr::from((<[u8; 4]>::try_from(&c[..4]).unwrap(), port))
            } else {
                SocketAddr::from((<[u8; 16]>::try_from(&c[..16]).unwrap(), port))
            }
        })
        .collect();
    (be(8), be(12), be(16), peers)
}

const H: [u8; 20] = [0xAB; 20];

#[test]
fn bep15_announce_lists_other_peers_not_self() {
    let mut t = tracker();
    let a = v4(1, 6881);
    let b = v4(2, 6882);
    let (interval, _, _, peers) = bep15_announce(&mut t, T0, a, H, 100, Event::Started, -1);
    assert_eq!(interval, 300);
    assert!(peers.is_empty(), "alone in the swarm: {peers:?}");
    let (_, leechers, seeders, peers) = bep15_announce(&mut t, T0, b, H, 0, Event::Started, -1);
    assert_eq!((leechers, seeders), (1, 1));
    assert_eq!(
        peers,
        vec![a],
        "the source address is used, never the IP field"
    );
    let (_, _, _, peers) = bep15_announce(&mut t, T0, a, H, 100, Event::Periodic, -1);
    assert_eq!(peers, vec![b]);
    assert_eq!(t.sizes(), (1, 2));
}

#[test]
fn seeds_are_not_sent_to_seeds() {
    let mut t = tracker();
    for i in 0..5 {
        bep15_announce(&mut t, T0, v4(i, 1000), H, 0, Event::Started, -1);
        bep15_announce(&mut t, T0, v4(100 + i, 1000), H, 50, Event::Started, -1);
    }
    let (_, l, s, peers) = bep15_announce(&mut t, T0, v4(0, 1000), H, 0, Event::Periodic, 50);
    assert_eq!((l, s), (5, 5));
    assert_eq!(peers.len(), 5);
    assert!(
        peers
            .iter()
            .all(|p| p.ip().to_string().starts_with("10.0.0.10")),
        "{peers:?}"
    );
    // A leecher gets both, never itself.
    let me = v4(100, 1000);
    let (_, _, _, peers) = bep15_announce(&mut t, T0, me, H, 50, Event::Periodic, 50);
    assert_eq!(peers.len(), 9);
    assert!(!peers.contains(&me));
}

#[test]
fn families_are_kept_apart() {
    let mut t = tracker();
    bep15_announce(&mut t, T0, v4(1, 1), H, 1, Event::Started, -1);
    bep15_announce(&mut t, T0, v6(1, 1), H, 1, Event::Started, -1);
    let (_, l, _, peers) = bep15_announce(&mut t, T0, v6(2, 2), H, 1, Event::Started, -1);
    assert_eq!(l, 3, "counts cover both families");
    assert_eq!(peers, vec![v6(1, 1)]);
    let (_, _, _, peers) = bep15_announce(&mut t, T0, v4(2, 2), H, 1, Event::Started, -1);
    assert_eq!(peers, vec![v4(1, 1)]);
    // An IPv4-mapped IPv6 source (dual-stack socket) is IPv4.
    let mapped = SocketAddr::from((Ipv4Addr::new(10, 0, 0, 3).to_ipv6_mapped(), 3));
    let (_, _, _, peers) = bep15_announce(&mut t, T0, mapped, H, 1, Event::Started, -1);
    assert_eq!(peers.len(), 2);
    assert!(peers.iter().all(|p| p.is_ipv4()));
}

#[test]
fn stopped_removes_and_completed_counts_once() {
    let mut t = tracker();
    let a = v4(1, 1);
    bep15_announce(&mut t, T0, a, H, 10, Event::Started, -1);
    bep15_announce(&mut t, T0, a, H, 0, Event::Completed, -1);
    bep15_announce(&mut t, T0, a, H, 0, Event::Completed, -1);
    assert_eq!(t.swarm_figures(&H), Some((1, 0, 1)));
    bep15_announce(&mut t, T0, v4(2, 2), H, 5, Event::Started, -1);
    bep15_announce(&mut t, T0, a, H, 0, Event::Stopped, -1);
    assert_eq!(t.swarm_figures(&H), Some((0, 1, 1)));
    assert_eq!(t.sizes(), (1, 1));
}

#[test]
fn silent_peers_expire_and_empty_swarms_go() {
    let mut t = tracker();
    t.handle_timeout(T0);
    bep15_announce(&mut t, T0, v4(1, 1), H, 1, Event::Started, -1);
    let later = T0 + Duration::from_secs(400);
    bep15_announce(&mut t, later, v4(2, 2), H, 1, Event::Started, -1);
    // At 610 s the first peer is past the 600 s timeout, the second is not.
    t.handle_timeout(T0 + Duration::from_secs(610));
    assert_eq!(t.sizes(), (1, 1));
    assert_eq!(t.stats().expired, 1);
    t.handle_timeout(later + Duration::from_secs(620));
    assert_eq!(t.sizes(), (0, 0));
}

#[test]
fn connection_ids_forged_expired_future_or_foreign_get_no_reply() {
    let mut t = tracker();
    let a = v4(1, 1);
    let cid = bep15_connect(&mut t, T0, a);
    let ann = |cid| bep15_announce_bytes(cid, H, 1, Event::Started, -1, 1);
    // Valid now and for the next two minutes.
    assert!(reply(&mut t, T0, a, &ann(cid)).is_some());
    assert!(reply(&mut t, T0 + Duration::from_secs(60), a, &ann(cid)).is_some());
    assert!(reply(&mut t, T0 + Duration::from_secs(120), a, &ann(cid)).is_some());
    // Expired after that.
    assert!(reply(&mut t, T0 + Duration::from_secs(121), a, &ann(cid)).is_none());
    // From another address or port.
    assert!(reply(&mut t, T0, v4(2, 1), &ann(cid)).is_none());
    assert!(reply(&mut t, T0, v4(1, 2), &ann(cid)).is_none());
    // Forged.
    assert!(reply(&mut t, T0, a, &ann(cid ^ 1)).is_none());
    assert!(reply(&mut t, T0, a, &ann(0)).is_none());
    // Future-dated: minted two slots ahead, used now.
    let future = bep15_connect(&mut t, T0 + Duration::from_secs(180), a);
    assert!(reply(&mut t, T0, a, &ann(future)).is_none());
    assert_eq!(t.stats().bad_connection_ids, 6);
    assert_eq!(t.sizes(), (1, 1), "no state from rejected requests");
    assert_eq!(
        t.stats().offenders,
        0,
        "six bad ids are below the threshold"
    );
}

#[test]
fn ids_survive_one_key_rotation() {
    let cfg = Config {
        key_rotation_secs: 30,
        ..Config::default()
    };
    let mut t = Tracker::new(cfg, 1);
    t.handle_timeout(T0);
    let a = v4(1, 1);
    let cid = bep15_connect(&mut t, T0, a);
    t.handle_timeout(T0 + Duration::from_secs(31));
    let ann = bep15_announce_bytes(cid, H, 1, Event::Started, -1, 1);
    assert!(reply(&mut t, T0 + Duration::from_secs(31), a, &ann).is_some());
    t.handle_timeout(T0 + Duration::from_secs(62));
    assert!(reply(&mut t, T0 + Duration::from_secs(62), a, &ann).is_none());
}

#[test]
fn connection_id_carries_its_issue_time_and_a_mac() {
    let mut t = tracker();
    let a = v4(1, 1);
    let cid = bep15_connect(&mut t, T0, a);
    // Spec §2: issue time in seconds (31 bits, high bit set) ‖ 32-bit MAC.
    assert_eq!(cid >> 32, (1 << 31) | 1000);
    // The same second and source give the same id; another second changes both halves.
    assert_eq!(
        bep15_connect(&mut t, T0 + Duration::from_millis(999), a),
        cid
    );
    let next = bep15_connect(&mut t, T0 + Duration::from_secs(1), a);
    assert_eq!(next >> 32, (1 << 31) | 1001);
    assert_ne!(next as u32, cid as u32);
    // A valid MAC moved to another issue time is refused.
    let moved = (next & !0xFFFF_FFFF) | (cid & 0xFFFF_FFFF);
    let ann = bep15_announce_bytes(moved, H, 1, Event::Started, -1, 1);
    assert!(reply(&mut t, T0 + Duration::from_secs(2), a, &ann).is_none());
}

#[test]
fn a_rotated_out_key_refuses_ids_without_housekeeping() {
    // Spec §2: acceptance is a function of the time alone. Two rotations after its key's
    // epoch an id is refused even though housekeeping never ran (18.7).
    let cfg = Config {
        key_rotation_secs: 30,
        ..Config::default()
    };
    let mut t = Tracker::new(cfg, 1);
    let a = v4(1, 1);
    let cid = bep15_connect(&mut t, T0, a);
    let ann = bep15_announce_bytes(cid, H, 1, Event::Started, -1, 1);
    assert!(reply(&mut t, T0 + Duration::from_secs(25), a, &ann).is_some());
    assert!(reply(&mut t, T0 + Duration::from_secs(65), a, &ann).is_none());
    // A fresh connect at that time works (the key of its epoch is made on demand).
    let later = T0 + Duration::from_secs(65);
    let cid = bep15_connect(&mut t, later, a);
    let ann = bep15_announce_bytes(cid, H, 1, Event::Periodic, -1, 1);
    assert!(reply(&mut t, later, a, &ann).is_some());
}

#[test]
fn numwant_is_capped_to_one_datagram() {
    let mut t = tracker();
    for i in 0..=255u8 {
        for p in 0..2u16 {
            bep15_announce(&mut t, T0, v4(i, 2000 + p), H, 1, Event::Started, 0);
        }
    }
    let (_, _, _, peers) = bep15_announce(&mut t, T0, v4(7, 9), H, 1, Event::Started, i32::MAX);
    assert_eq!(peers.len(), 196, "(1200 - 20) / 6 peers fit");
    t.config = Config {
        max_numwant: 30,
        ..Config::default()
    };
    let (_, _, _, peers) = bep15_announce(&mut t, T0, v4(7, 9), H, 1, Event::Started, 1 << 30);
    assert_eq!(peers.len(), 30);
    let (_, _, _, peers) = bep15_announce(&mut t, T0, v4(7, 9), H, 1, Event::Started, -1);
    assert_eq!(peers.len(), 30, "default 50 capped by max_numwant");
}

#[test]
fn limits_bound_memory_with_eviction() {
    let cfg = Config {
        max_swarms: 2,
        max_peers_per_swarm: 4,
        max_peers: 6,
        ..Config::default()
    };
    let mut t = Tracker::new(cfg, 3);
    for (i, h) in [[1u8; 20], [2u8; 20], [3u8; 20]].into_iter().enumerate() {
        bep15_announce(&mut t, T0, v4(i as u8, 1), h, 1, Event::Started, -1);
    }
    assert_eq!(t.sizes(), (2, 2), "third swarm refused");
    assert_eq!(t.swarm_figures(&[3u8; 20]), None);
    // Fill swarm 1 to its cap at increasing times, then one more evicts.
    for i in 10..14u8 {
        let now = T0 + Duration::from_secs(u64::from(i));
        bep15_announce(&mut t, now, v4(i, 1), [1u8; 20], 1, Event::Started, -1);
    }
    let (s, l, _) = t.swarm_figures(&[1u8; 20]).unwrap();
    assert_eq!(s + l, 4, "per-swarm cap");
    assert!(t.stats().evicted >= 1);
    // The global cap: 6 peers at most, whatever arrives.
    for i in 20..40u8 {
        bep15_announce(
            &mut t,
            T0 + Duration::from_secs(50),
            v4(i, 1),
            [2u8; 20],
            1,
            Event::Started,
            -1,
        );
    }
    assert!(t.sizes().1 <= 6, "{:?}", t.sizes());
    // The newest announcer is always stored (it evicted someone): announcing again finds it
    // in place, so nothing more is evicted.
    let evicted = t.stats().evicted;
    bep15_announce(
        &mut t,
        T0 + Duration::from_secs(51),
        v4(39, 1),
        [2u8; 20],
        1,
        Event::Periodic,
        -1,
    );
    assert_eq!(t.stats().evicted, evicted);
    assert!(t.sizes().1 <= 6);
}

#[test]
fn scrape_is_capped_at_70_and_never_amplifies() {
    let mut t = tracker();
    let a = v4(1, 1);
    bep15_announce(&mut t, T0, v4(2, 2), H, 0, Event::Completed, -1);
    let cid = bep15_connect(&mut t, T0, a);
    let mut req = Vec::new();
    req.extend(cid.to_be_bytes());
    req.extend(2u32.to_be_bytes());
    req.extend(5u32.to_be_bytes());
    req.extend(H);
    for i in 0..999u32 {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(&i.to_be_bytes());
        req.extend(h);
    }
    let r = reply(&mut t, T0, a, &req).unwrap();
    assert_eq!(r.len(), 8 + 70 * 12);
    assert_eq!(
        &r[8..20],
        &[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0],
        "seeders, completed, leechers"
    );
    // A tiny scrape gets a reply no larger than itself.
    let r = reply(&mut t, T0, a, &req[..36]).unwrap();
    assert!(r.len() <= 36);
}

#[test]
fn garbage_and_runts_are_dropped_and_counted() {
    let mut t = tracker();
    let mut rng = Rng::new(9);
    let mut dropped = 0;
    for len in 0..400usize {
        let mut b = vec![0u8; len];
        rng.fill(&mut b);
        if reply(&mut t, T0, v4(1, 1), &b).is_none() {
            dropped += 1;
        }
    }
    assert_eq!(dropped, 400, "random bytes never earn a reply");
    assert!(t.stats().malformed >= 390);
    // A BEP 15 announce cut short by one byte.
    let cid = bep15_connect(&mut t, T0, v4(1, 1));
    let ann = bep15_announce_bytes(cid, H, 1, Event::Started, -1, 1);
    assert!(reply(&mut t, T0, v4(1, 1), &ann[..97]).is_none());
    assert_eq!(t.sizes(), (0, 0));
}

#[test]
fn spoofed_connect_flood_keeps_no_state() {
    let mut t = tracker();
    let mut b = [0u8; 16];
    emit_bep15_connect(&mut b, 1).unwrap();
    for i in 0..20_000u32 {
        let src = SocketAddr::from((
            Ipv4Addr::from(i.wrapping_mul(2654435761)),
            (i % 60000) as u16 + 1,
        ));
        let r = reply(&mut t, T0, src, &b).unwrap();
        assert!(r.len() <= b.len());
    }
    assert_eq!(t.sizes(), (0, 0));
    assert_eq!(t.stats().connects, 20_000);
}

// --- native protocol -------------------------------------------------------------------------

fn native(
    t: &mut Tracker,
    now: Time,
    src: SocketAddr,
    payload: &[u8],
    rid: u64,
) -> Option<Vec<u8>> {
    let mut d = [0u8; 2048];
    let hdr = Header {
        ptype: PacketType::Request,
        dcid: 0,
        scid: 0x1234,
        pn: rid,
    };
    let n = packet::emit(&Packet::Request { hdr, payload }, &mut d).unwrap();
    let r = reply(t, now, src, &d[..n])?;
    assert!(r.len() <= n.max(MAX_REPLY));
    match packet::parse(&r).expect("a valid, checksummed packet") {
        Packet::Response { hdr, payload } => {
            assert_eq!(
                (hdr.dcid, hdr.pn),
                (0x1234, rid),
                "echoes requester and request ids"
            );
            Some(payload.to_vec())
        }
        other => panic!("{other:?}"),
    }
}

fn native_connect(t: &mut Tracker, now: Time, src: SocketAddr) -> u64 {
    let mut b = [0u8; 16];
    wire::emit_connect_request(&mut b).unwrap();
    let r = native(t, now, src, &b, 1).unwrap();
    match wire::parse_native_response(&r) {
        Some(NativeResponse::Connected(c)) => c,
        other => panic!("{other:?}"),
    }
}

#[test]
fn native_connect_announce_scrape() {
    let mut t = tracker();
    let swarm = [0xAB; 32]; // same first 20 bytes as H: the same swarm as BEP 15 sees
    let a = v6(1, 7000);
    let b = v6(2, 7001);
    for (src, left) in [(a, 0u64), (b, 10)] {
        let cid = native_connect(&mut t, T0, src);
        let mut buf = [0u8; 96];
        let ann = Announce {
            connection_id: cid,
            swarm_id: swarm,
            peer_id: [1; 16],
            event: Event::Started,
            port: src.port(),
            numwant: 50,
            left,
            uploaded: 0,
            downloaded: 0,
        };
        let n = wire::emit_announce_request(&mut buf, &ann).unwrap();
        let r = native(&mut t, T0, src, &buf[..n], 2).unwrap();
        match wire::parse_native_response(&r) {
            Some(NativeResponse::Announced(h, peers)) => {
                assert_eq!(h.family, 6);
                if src == b {
                    assert_eq!((h.seeders.get(), h.leechers.get()), (1, 1));
                    assert_eq!(peers.len(), 18);
                    assert_eq!(&peers[16..], &7000u16.to_be_bytes());
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(t.swarm_figures(&H), Some((1, 1, 0)));
    let cid = native_connect(&mut t, T0, a);
    let mut buf = [0u8; 200];
    let n = wire::emit_scrape_request(&mut buf, cid, &[swarm, [0; 32]]).unwrap();
    let r = native(&mut t, T0, a, &buf[..n], 3).unwrap();
    match wire::parse_native_response(&r) {
        Some(NativeResponse::Scraped(e)) => {
            assert_eq!(e.len(), 2);
            assert_eq!((e[0].seeders.get(), e[0].leechers.get()), (1, 1));
            assert_eq!(e[1].seeders.get(), 0);
        }
        other => panic!("{other:?}"),
    }
    // A forged id: no reply at all.
    let n = wire::emit_scrape_request(&mut buf, cid ^ 4, &[swarm]).unwrap();
    assert!(native(&mut t, T0, a, &buf[..n], 4).is_none());
}

#[test]
fn native_connect_reply_is_no_larger_than_request() {
    let mut t = tracker();
    let mut p = [0u8; 16];
    wire::emit_connect_request(&mut p).unwrap();
    let mut d = [0u8; 64];
    let hdr = Header {
        ptype: PacketType::Request,
        dcid: 0,
        scid: 9,
        pn: 1,
    };
    let n = packet::emit(&Packet::Request { hdr, payload: &p }, &mut d).unwrap();
    let r = reply(&mut t, T0, v4(1, 1), &d[..n]).unwrap();
    assert!(r.len() <= n, "{} > {n}", r.len());
    // A corrupted request (bad checksum) is dropped.
    d[40] ^= 1;
    assert!(reply(&mut t, T0, v4(1, 1), &d[..n]).is_none());
}

/// A native ANNOUNCE written from the table of spec §3.2, padded with `pad` zero bytes.
fn spec_announce(cid: u64, numwant: u16, port: u16, pad: usize) -> Vec<u8> {
    let mut b = vec![0x02, 1];
    b.extend(port.to_be_bytes());
    b.extend(numwant.to_be_bytes());
    b.extend([0, 0]);
    b.extend(cid.to_be_bytes());
    b.extend([0xAB; 32]);
    b.extend([7; 16]);
    b.extend(5u64.to_be_bytes()); // left: a leecher
    b.extend(0u64.to_be_bytes());
    b.extend(0u64.to_be_bytes());
    assert_eq!(b.len(), 88);
    b.resize(88 + pad, 0);
    b
}

/// Sends a native request from `src`; returns (request datagram size, reply datagram size,
/// peers in the reply).
fn native_sizes(t: &mut Tracker, src: SocketAddr, payload: &[u8]) -> (usize, usize, usize) {
    let mut d = [0u8; 2048];
    let hdr = Header {
        ptype: PacketType::Request,
        dcid: 0,
        scid: 0x77,
        pn: 3,
    };
    let n = packet::emit(&Packet::Request { hdr, payload }, &mut d).unwrap();
    let r = reply(t, T0, src, &d[..n]).expect("announce answered");
    let Ok(Packet::Response { payload, .. }) = packet::parse(&r) else {
        panic!("not a RESPONSE");
    };
    let Some(NativeResponse::Announced(h, _)) = wire::parse_native_response(payload) else {
        panic!("not ANNOUNCED");
    };
    (n, r.len(), usize::from(h.count.get()))
}

#[test]
fn native_reply_is_at_most_3x_the_request_and_padding_earns_more_peers() {
    // Spec §3.2 and transport §9 (18.5): a RESPONSE is never larger than 3× its REQUEST
    // datagram; a client that wants more peers pads its ANNOUNCE with zeros.
    let mut t = tracker();
    for i in 0..=255u8 {
        bep15_announce(&mut t, T0, v4(i, 3000), H, 1, Event::Started, 0);
        bep15_announce(&mut t, T0, v6(u16::from(i), 3000), H, 1, Event::Started, 0);
    }
    for (src, peer) in [(v4(9, 9), 6usize), (v6(9, 9), 18)] {
        let cid = native_connect(&mut t, T0, src);
        let (req, rep, plain) = native_sizes(&mut t, src, &spec_announce(cid, 500, 9, 0));
        assert_eq!(req, 32 + 88);
        assert!(rep <= 3 * req, "{rep} > 3 × {req}");
        assert_eq!(plain, (3 * req - 32 - 20) / peer);
        let (req, rep, padded) = native_sizes(&mut t, src, &spec_announce(cid, 500, 9, 280));
        assert!(rep <= 3 * req && rep <= 1200, "{rep} for {req}");
        assert_eq!(
            padded,
            (1200 - 32 - 20) / peer,
            "padding earns a full datagram"
        );
        assert!(padded > plain);
    }
    // Padding must be zero, and no longer than the bound.
    let src = v4(9, 9);
    let cid = native_connect(&mut t, T0, src);
    let mut bad = spec_announce(cid, 50, 9, 10);
    bad[95] = 1;
    assert!(native(&mut t, T0, src, &bad, 5).is_none());
    let long = spec_announce(cid, 50, 9, wire::MAX_ANNOUNCE_LEN + 1 - 88);
    assert!(native(&mut t, T0, src, &long, 6).is_none());
}

fn offender_config() -> Config {
    Config {
        offender_threshold: 5,
        offender_window_secs: 60,
        offender_ignore_secs: 100,
        offender_table_size: 16,
        ..Config::default()
    }
}

#[test]
fn a_source_flooding_bad_ids_is_ignored_then_forgiven() {
    let mut t = Tracker::new(offender_config(), 5);
    let bad = v4(66, 6666);
    let good = v4(1, 1);
    let forged = bep15_announce_bytes(0x8000_0000_1234_5678, H, 1, Event::Started, -1, 1);
    for _ in 0..5 {
        assert!(reply(&mut t, T0, bad, &forged).is_none());
    }
    assert_eq!(t.stats().offenders, 1);
    // Ignored: not even a connect is answered, from any port of that address.
    let mut c = [0u8; 16];
    emit_bep15_connect(&mut c, 1).unwrap();
    assert!(reply(&mut t, T0, bad, &c).is_none());
    assert!(reply(&mut t, T0 + Duration::from_secs(99), v4(66, 1), &c).is_none());
    assert_eq!(t.stats().ignored, 2);
    assert_eq!(
        t.stats().bad_connection_ids,
        5,
        "ignored datagrams are not even read"
    );
    // Another address is served as usual.
    let (_, _, _, peers) = bep15_announce(&mut t, T0, good, H, 1, Event::Started, -1);
    assert!(peers.is_empty());
    assert_eq!(t.sizes(), (1, 1));
    // Forgiven after the period.
    let later = T0 + Duration::from_secs(100);
    bep15_announce(&mut t, later, bad, H, 1, Event::Started, -1);
    assert_eq!(t.sizes(), (1, 2));
    // Housekeeping forgets it once its window is over too.
    t.handle_timeout(later + Duration::from_secs(60));
    assert_eq!(t.offender_entries(), 0);
}

#[test]
fn the_offender_table_stays_bounded_under_many_sources() {
    let mut t = Tracker::new(offender_config(), 6);
    let forged = bep15_announce_bytes(0x8000_0000_1234_5678, H, 1, Event::Started, -1, 1);
    for i in 0..5000u32 {
        let src = SocketAddr::from((Ipv4Addr::from(0x0A00_0000 + i), 1));
        assert!(reply(&mut t, T0, src, &forged).is_none());
        assert!(t.offender_entries() <= 16);
    }
    assert_eq!(t.stats().bad_connection_ids, 5000);
    // A good client is unaffected.
    let good = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 1));
    bep15_announce(&mut t, T0, good, H, 1, Event::Started, -1);
    assert_eq!(t.sizes(), (1, 1));
}
