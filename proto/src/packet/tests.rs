//! Golden vectors (copied from `spec/transport.md` §10) and round-trip tests.

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

/// Every packet type with the field values used in spec §10.
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
        out.push((name, buf[..n].to_vec()));
    }
    out
}

const GOLDEN: &[(&str, &str)] = &[
    (
        "retry",
        "535401020102030405060708000000000000000000000000000000000da6df2711111111111111111111111111111111",
    ),
    (
        "accept",
        "53540103010203040506070811121314151617180000000000000000000ad62c00400000000000000080000000007530001905c0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ),
    (
        "data",
        "5354010411121314151617180102030405060708000000000000000910cea933020000000000000007000003e80000000200010000000100000001030000000000001000000568656c6c6f04000000000100000001",
    ),
    (
        "close",
        "5354010511121314151617180102030405060708000000000000000a4cc57306000001010003627965",
    ),
    (
        "reset",
        "53540106010203040506070800000000000000000000000000000000adc2dbaeaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ),
    (
        "request",
        "5354010700000000000000002122232425262728000000000000002abb80d88c616e6e",
    ),
    (
        "response",
        "5354010821222324252627280000000000000000000000000000002a400cea9f6f6b",
    ),
];

#[test]
fn golden_vectors_match_spec() {
    let ours = golden_packets();
    assert_eq!(ours.len(), GOLDEN.len(), "every packet type has a vector");
    for ((name, bytes), (gname, ghex)) in ours.iter().zip(GOLDEN) {
        assert_eq!(name, gname);
        assert_eq!(hex(bytes), ghex.replace(' ', ""), "vector {name}");
        let raw = unhex(ghex);
        let parsed = parse(&raw).unwrap();
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
