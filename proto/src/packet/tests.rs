//! Golden vectors (read from `spec/transport.md` §11) and round-trip tests.

use super::*;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn params() -> Params {
    Params {
        max_message: 4 << 20,
        recv_window: 8 << 20,
        idle_timeout_ms: 30_000,
        max_ack_delay_ms: 25,
        max_udp_payload: 1472,
        reset_token: [0xaa; 16],
    }
}

fn hdr(ptype: PacketType, dcid: u64, scid: u64, pn: u64) -> Header {
    Header {
        ptype,
        dcid,
        scid,
        pn,
    }
}

/// Every packet type but INITIAL with the field values used in spec §11, in the spec's order.
pub(super) fn golden_packets() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2048];
    let mut frames = [0u8; 128];
    let mut n = write_ack(&mut frames, 0, 1000, [(5u64, 7u64), (1, 2)]).unwrap();
    n = write_stream_header(&mut frames, n, 4096, 5).unwrap();
    frames[n..n + 5].copy_from_slice(b"hello");
    n += 5;
    n = write_u64_frame(&mut frames, n, frame_type::MAX_DATA, 1 << 24).unwrap();
    n = write_ping(&mut frames, n).unwrap();
    let data_frames = &frames[..n];
    let packets: Vec<(&'static str, Packet<'_>)> = vec![
        (
            "retry",
            Packet::Retry {
                hdr: hdr(PacketType::Retry, 0x0102030405060708, 0, 0),
                cookie: [0x11; 16],
            },
        ),
        (
            "accept",
            Packet::Accept {
                hdr: hdr(
                    PacketType::Accept,
                    0x0102030405060708,
                    0x1112131415161718,
                    0,
                ),
                params: params(),
            },
        ),
        (
            "data",
            Packet::Data {
                hdr: hdr(PacketType::Data, 0x1112131415161718, 0x0102030405060708, 9),
                frames: data_frames,
            },
        ),
        (
            "close",
            Packet::Close {
                hdr: hdr(
                    PacketType::Close,
                    0x1112131415161718,
                    0x0102030405060708,
                    10,
                ),
                code: 0x0000_0101,
                reason: b"bye",
            },
        ),
        (
            "reset",
            Packet::Reset {
                hdr: hdr(PacketType::Reset, 0x0102030405060708, 0, 0),
                token: [0xaa; 16],
            },
        ),
        (
            "request",
            Packet::Request {
                hdr: hdr(PacketType::Request, 0, 0x2122232425262728, 42),
                payload: b"ann",
            },
        ),
        (
            "response",
            Packet::Response {
                hdr: hdr(PacketType::Response, 0x2122232425262728, 0, 42),
                payload: b"ok",
            },
        ),
    ];
    for (name, p) in packets {
        let n = emit(&p, &mut buf).unwrap();
        assert_eq!(n, p.buffer_len(), "{name}");
        assert_eq!(
            emit(&p, &mut vec![0; n - 1]),
            Err(BufferTooShort {
                need: n,
                have: n - 1
            }),
            "{name}: one byte short"
        );
        out.push((name, buf[..n].to_vec()));
    }
    out
}

/// The transport spec; its §11 holds the golden vectors this file checks.
const SPEC: &str = include_str!("../../../spec/transport.md");

/// The hex vectors of spec §11, in order: every code block of that section, one packet per
/// line that starts with the magic and version (`5354 01`), continuation lines appended.
fn spec_vectors() -> Vec<Vec<u8>> {
    let start = SPEC.find("## 11. Golden vectors").expect("spec §11");
    let end = SPEC[start..]
        .find("\n## 12.")
        .map_or(SPEC.len(), |e| start + e);
    let mut out: Vec<String> = Vec::new();
    let mut in_block = false;
    for line in SPEC[start..end].lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block || line.trim().is_empty() {
            continue;
        }
        if line.starts_with("5354 01") || out.is_empty() {
            out.push(String::new());
        }
        out.last_mut().unwrap().push_str(line);
    }
    out.iter().map(|h| unhex(h)).collect()
}

#[test]
fn golden_vectors_match_spec() {
    let spec = spec_vectors();
    // INITIAL first: the spec shows its first 84 bytes; 1116 zero bytes follow.
    let initial = Packet::Initial {
        hdr: hdr(PacketType::Initial, 0, 0x0102030405060708, 1),
        cookie: [0; 16],
        params: params(),
        padding: MIN_INITIAL_LEN - HEADER_LEN - COOKIE_LEN - PARAMS_LEN,
    };
    let mut buf = vec![0u8; 1500];
    let n = emit(&initial, &mut buf).unwrap();
    assert_eq!(n, MIN_INITIAL_LEN);
    assert_eq!(spec[0].len(), 84, "INITIAL vector prefix");
    assert_eq!(hex(&buf[..84]), hex(&spec[0]), "vector initial");
    assert!(buf[84..n].iter().all(|&b| b == 0));
    let ours = golden_packets();
    assert_eq!(ours.len() + 1, spec.len(), "every packet type has a vector");
    for ((name, bytes), raw) in ours.iter().zip(&spec[1..]) {
        assert_eq!(hex(bytes), hex(raw), "vector {name}");
        let parsed = parse(raw).unwrap();
        assert_eq!(parsed.header().ptype as u8, raw[3]);
        assert_eq!(roundtrip_check(bytes), Ok(true));
    }
}

#[test]
fn golden_data_frames_decode() {
    let data = &golden_packets()[2].1;
    let Packet::Data { hdr, frames } = parse(data).unwrap() else {
        panic!("not data")
    };
    assert_eq!(hdr.pn, 9);
    let f: Vec<Frame<'_>> = Frames::new(frames).collect::<Result<_, _>>().unwrap();
    assert_eq!(f.len(), 4);
    let Frame::Ack(a) = f[0] else {
        panic!("ack first")
    };
    assert_eq!(a.iter().collect::<Vec<_>>(), vec![(5, 7), (1, 2)]);
    assert_eq!(a.delay_us, 1000);
    assert_eq!(
        f[1],
        Frame::Stream {
            offset: 4096,
            data: b"hello"
        }
    );
    assert_eq!(f[2], Frame::MaxData(1 << 24));
    assert_eq!(f[3], Frame::Ping);
}

#[test]
fn initial_is_padded_and_checked() {
    let p = Packet::Initial {
        hdr: hdr(PacketType::Initial, 0, 0x0102030405060708, 0),
        cookie: [0; 16],
        params: params(),
        padding: MIN_INITIAL_LEN - HEADER_LEN - COOKIE_LEN - PARAMS_LEN,
    };
    let mut buf = vec![0u8; 1500];
    let n = emit(&p, &mut buf).unwrap();
    assert_eq!(n, MIN_INITIAL_LEN);
    assert_eq!(parse(&buf[..n]), Ok(p));
    // One byte short of 1200 is refused even with a valid checksum.
    let mut short = buf[..n - 1].to_vec();
    seal(&mut short);
    assert_eq!(parse(&short), Err(PacketError::InitialTooSmall));
}

#[test]
fn rejects_bad_inputs() {
    let (_, good) = golden_packets().remove(0);
    for len in 0..good.len() {
        assert!(
            parse(&good[..len]).is_err(),
            "prefix of {len} bytes accepted"
        );
    }
    let mut v = good.clone();
    v[0] = b'X';
    assert_eq!(parse(&v), Err(PacketError::BadMagic));
    let mut v = good.clone();
    v[2] = 2;
    assert_eq!(parse(&v), Err(PacketError::UnknownVersion(2)));
    let mut v = good.clone();
    v[3] = 0x7f;
    assert_eq!(parse(&v), Err(PacketError::UnknownType(0x7f)));
    // Any single flipped bit is caught by the checksum.
    for i in 4..good.len() {
        for bit in 0..8 {
            let mut v = good.clone();
            v[i] ^= 1 << bit;
            assert!(parse(&v).is_err(), "bit {bit} of byte {i}");
        }
    }
}

#[test]
fn ack_underflow_is_rejected() {
    let mut f = [0u8; 64];
    let n = write_ack(&mut f, 0, 0, [(2u64, 3u64)]).unwrap();
    // Patch first_range to exceed largest.
    f[1 + 8 + 4..1 + 8 + 4 + 4].copy_from_slice(&10u32.to_be_bytes());
    assert_eq!(Frames::new(&f[..n]).next(), Some(Err(PacketError::BadAck)));
    // Truncated range list.
    let n = write_ack(&mut f, 0, 0, [(10u64, 12u64), (2, 4)]).unwrap();
    assert!(Frames::new(&f[..n - 1]).next().unwrap().is_err());
    assert!(Frames::new(&[0x09]).next().unwrap().is_err());
}

#[test]
fn roundtrip_arbitrary_bytes_never_panics() {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for len in 0..400usize {
        let mut v = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.push((x >> 24) as u8 & if x & 3 == 0 { 0x07 } else { 0xff });
        }
        roundtrip_check(&v).unwrap();
        if len >= HEADER_LEN {
            v[..2].copy_from_slice(&MAGIC);
            v[2] = VERSION;
            v[3] = (x % 9) as u8;
            seal(&mut v);
            roundtrip_check(&v).unwrap();
        }
    }
}

#[test]
fn golden_initial() {
    // Spec §11: INITIAL from client cid 0102030405060708, attempt 1, no cookie, the ACCEPT
    // vector's parameters, zero padding to 1200 bytes.
    let p = Packet::Initial {
        hdr: hdr(PacketType::Initial, 0, 0x0102030405060708, 1),
        cookie: [0; 16],
        params: params(),
        padding: MIN_INITIAL_LEN - HEADER_LEN - COOKIE_LEN - PARAMS_LEN,
    };
    let mut buf = vec![0u8; 1200];
    let n = emit(&p, &mut buf).unwrap();
    assert_eq!(n, 1200);
    assert_eq!(hex(&buf[..84]), INITIAL_PREFIX);
    assert!(buf[84..].iter().all(|&b| b == 0));
}

const INITIAL_PREFIX: &str = "5354010100000000000000000102030405060708000000000000000113f6a62b0000000000000000000000000000000000400000000000000080000000007530001905c0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#[test]
fn writers_report_need_and_have() {
    let short = |need, have| Err(BufferTooShort { need, have });
    let h = hdr(PacketType::Data, 1, 2, 3);
    assert_eq!(write_header(&mut [0; 31], &h), short(HEADER_LEN, 31));
    let mut f = [0u8; 20];
    assert_eq!(write_ping(&mut f, 20), short(21, 20));
    assert_eq!(write_padding(&mut f, 15, 6), short(21, 20));
    assert_eq!(write_padding(&mut f, 1, usize::MAX), short(usize::MAX, 20));
    assert_eq!(
        write_u64_frame(&mut f, 12, frame_type::MAX_DATA, 7),
        short(21, 20)
    );
    assert_eq!(write_u64_frame(&mut f, 11, frame_type::MAX_DATA, 7), Ok(20));
    // The header fits but the data would not: refused, nothing written.
    let mut f = [0xEEu8; 20];
    assert_eq!(write_stream_header(&mut f, 2, 0, 8), short(21, 20));
    assert_eq!(f, [0xEE; 20]);
    assert_eq!(
        write_stream_header(&mut f, 2, 0, 7),
        Ok(2 + STREAM_OVERHEAD)
    );
    // An INITIAL whose padding no buffer holds.
    let p = Packet::Initial {
        hdr: hdr(PacketType::Initial, 0, 1, 1),
        cookie: [0; 16],
        params: params(),
        padding: usize::MAX,
    };
    assert_eq!(emit(&p, &mut [0; 64]), short(usize::MAX, 64));
}

#[test]
fn a_long_close_reason_is_cut() {
    let long = [b'x'; MAX_REASON_LEN + 10];
    let p = Packet::Close {
        hdr: hdr(PacketType::Close, 1, 2, 3),
        code: 0,
        reason: &long,
    };
    let mut buf = vec![0u8; 512];
    let n = emit(&p, &mut buf).unwrap();
    assert_eq!(n, p.buffer_len());
    match parse(&buf[..n]) {
        Ok(Packet::Close { reason, .. }) => assert_eq!(reason, &long[..MAX_REASON_LEN]),
        other => panic!("{other:?}"),
    }
}
