//! Unit tests of the connection that reach into its parts: MTU probe sizes (spec §8.4), a late
//! ACK of a retransmitted copy (the send buffer must not wedge), and the ranges an ACK carries
//! (spec §4.3).

use std::time::Duration;

use st_proto::packet::{self, TOKEN_LEN};

use super::ack_state::ACK_RANGES_SENT;
use super::{Config, Connection, State, Time};

/// Feeds `c` an ACK frame for exactly the packet numbers `lo..=hi`.
fn ack(c: &mut Connection, now: Time, lo: u64, hi: u64) {
    let mut buf = [0u8; 64];
    let n = packet::write_ack(&mut buf, 0, 0, [(lo, hi)]).expect("ack frame");
    let frames: Vec<packet::Frame<'_>> = packet::Frames::new(&buf[..n])
        .collect::<Result<_, _>>()
        .expect("parses");
    let packet::Frame::Ack(a) = &frames[0] else {
        panic!("not an ack: {frames:?}");
    };
    c.on_ack(now, a).expect("valid ack");
}

/// A client connection past its handshake, with default settings.
fn established(now: Time) -> Connection {
    let mut c = Connection::client(
        now,
        &Config::default(),
        1,
        "10.0.0.1:4000".parse().unwrap(),
        [0; TOKEN_LEN],
        7,
    );
    c.state = State::Established;
    c
}

/// Ethernet's step is 1452 bytes over IPv6, 1472 over IPv4 and IPv4-mapped addresses
/// (spec §8.4): a 1472-byte probe cannot leave an IPv6 socket on a 1500-byte link.
#[test]
fn the_ethernet_probe_size_follows_the_address_family() {
    let now = Time::from_micros(1_000_000);
    for (remote, want) in [
        ("10.0.0.1:4000", 1472),
        ("[::ffff:10.0.0.1]:4000", 1472),
        ("[fd00::1]:4000", 1452),
    ] {
        let c = Connection::client(
            now,
            &Config::default(),
            1,
            remote.parse().unwrap(),
            [0; TOKEN_LEN],
            7,
        );
        assert_eq!(c.mtu.next_candidate(), Some(want), "{remote}");
    }
}

/// Sends whatever is due and returns the packet number of the last packet sent.
fn transmit(c: &mut Connection, now: Time) -> u64 {
    let mut buf = vec![0u8; 65_536];
    c.poll_transmit(now, &mut buf, 1).expect("a packet");
    c.recovery.sent().back().expect("tracked").pn
}

/// A probe timeout resends the oldest data; the original's ACK then moves the send base
/// past it, and the copy's ACK arrives later. That late ACK once left a range below the
/// base at the front of `s_acked`; the base never advanced again and the sender wedged
/// with a full send buffer and nothing in flight (seen on real hosts under CPU starvation:
/// 16.6 MB buffered, nothing in flight, `s_next` equal to the receiver's `r_base`).
#[test]
fn a_copy_acknowledged_after_its_original_does_not_wedge_the_send_buffer() {
    let t0 = Time::ZERO;
    let mut c = established(t0);
    c.send.on_peer_max_data(1 << 20);
    c.send(&[1; 1000]).unwrap();
    let original = transmit(&mut c, t0);
    // Probe timeout: the oldest unacknowledged data goes out again.
    let t1 = t0 + Duration::from_secs(1);
    c.on_loss_timer(t1);
    let copy = transmit(&mut c, t1);
    assert!(copy > original);
    assert_eq!(
        c.recovery.sent().back().unwrap().stream,
        c.recovery.sent().front().unwrap().stream
    );
    // More data, acknowledged with the original: the base moves past both, so the copy's
    // range ends below the base, not at it.
    c.send(&[3; 1000]).unwrap();
    let more = transmit(&mut c, t1);
    let t2 = t1 + Duration::from_millis(10);
    ack(&mut c, t2, original, original);
    ack(&mut c, t2, more, more);
    assert_eq!(c.send.buffered(), 0, "the originals' ACKs release the data");
    ack(&mut c, t2, copy, copy);
    // New data must still be released once acknowledged.
    c.send(&[2; 1000]).unwrap();
    let next = transmit(&mut c, t2);
    ack(&mut c, t2 + Duration::from_millis(10), next, next);
    assert_eq!(
        c.send.buffered(),
        0,
        "send buffer wedged: s_acked {:?}",
        c.send.acked_ranges()
    );
}

/// The ranges of the ACK frame in a DATA packet `p`, as `(smallest, largest)`, newest first.
fn ack_ranges(p: &[u8]) -> Vec<(u64, u64)> {
    packet::Frames::new(&p[packet::HEADER_LEN..])
        .collect::<Result<Vec<packet::Frame<'_>>, _>>()
        .expect("parses")
        .iter()
        .find_map(|f| match f {
            packet::Frame::Ack(a) => Some(a.iter().collect()),
            _ => None,
        })
        .expect("an ACK frame")
}

/// An established connection that received packets 0, 2, 4, …, 58, each followed by a lost
/// one (30 ranges remembered), all acknowledged by earlier ACKs.
fn gapped(now: Time) -> Connection {
    let mut c = established(now);
    for k in 0..30u64 {
        c.ack.insert_received(2 * k, 2 * k + 1);
    }
    c.ack.set_largest_recv(58, now);
    c.ack.set_acked_below(59);
    c
}

/// A receiver that saw many gaps acknowledges only the newest ranges: an ACK stays small
/// (spec §4.3). Sending every remembered range made each ACK of a lossy connection about
/// 550 bytes for good, 17 % of the bytes a swarm node sent in the simulator.
#[test]
fn an_ack_carries_the_fresh_ranges_and_else_only_the_newest() {
    let t0 = Time::ZERO;
    let mut c = gapped(t0);
    c.ack.ack_immediately();
    let mut buf = vec![0u8; 65_536];
    let (n, _) = c.poll_transmit(t0, &mut buf, 1).expect("an ACK");
    let ranges = ack_ranges(&buf[..n]);
    let want: Vec<(u64, u64)> = (22..30u64).rev().map(|k| (2 * k, 2 * k)).collect();
    assert_eq!(
        ranges, want,
        "the newest {ACK_RANGES_SENT} ranges, newest first"
    );
    assert!(n <= packet::HEADER_LEN + packet::ACK_BASE_LEN + 7 * packet::ACK_RANGE_LEN);
    assert_eq!(
        c.ack.received_ranges(),
        30,
        "all ranges are still remembered"
    );
    // 12 more gapped packets before the next ACK (a lossy batch): every range holding a
    // packet not yet acknowledged goes out, more than 8 if need be.
    for k in 30..42u64 {
        c.ack.insert_received(2 * k, 2 * k + 1);
    }
    c.ack.set_largest_recv(82, t0);
    c.ack.ack_immediately();
    let (n, _) = c.poll_transmit(t0, &mut buf, 1).expect("an ACK");
    let ranges = ack_ranges(&buf[..n]);
    let want: Vec<(u64, u64)> = (30..42u64).rev().map(|k| (2 * k, 2 * k)).collect();
    assert_eq!(ranges, want, "all 12 fresh ranges");
}

/// Ranges the peer has seen are not repeated (spec §4.3): once the peer acknowledges a packet
/// that carried an ACK frame, the ranges at or below that frame's largest packet number leave
/// later ACKs. The sender's skipped packet numbers (one in ~256, spec §7) left a gap each, so
/// before this every ACK of a long connection carried 8 ranges (a 75-byte frame, not 19): in a
/// 16-host swarm at 100 Mbit/s, 1 % of each host's downlink went to ACKs of its uploads.
#[test]
fn ranges_the_peer_has_seen_leave_the_ack() {
    let t0 = Time::ZERO;
    let mut c = gapped(t0);
    c.ack.ack_immediately();
    // The ACK rides on a packet of stream data, which the peer will acknowledge.
    c.send(b"hello").expect("room");
    let mut buf = vec![0u8; 65_536];
    let (n, _) = c.poll_transmit(t0, &mut buf, 1).expect("a packet");
    assert_eq!(ack_ranges(&buf[..n]).len(), ACK_RANGES_SENT);
    let carrier = c.recovery.sent().back().expect("tracked").pn;
    // Before the peer acknowledges it, the next ACK still repeats the newest ranges.
    c.ack.insert_received(60, 61);
    c.ack.set_largest_recv(60, t0);
    c.ack.ack_immediately();
    let (n, _) = c.poll_transmit(t0, &mut buf, 1).expect("an ACK");
    assert_eq!(ack_ranges(&buf[..n]).len(), ACK_RANGES_SENT);
    // The peer acknowledges the carrier: it saw every range up to 58. A new packet (62, after
    // a gap) is acknowledged with its own range and 60's, which the peer has not seen in an
    // acknowledged frame, and nothing older.
    ack(&mut c, t0 + Duration::from_millis(1), carrier, carrier);
    c.ack.insert_received(62, 63);
    c.ack.set_largest_recv(62, t0);
    c.ack.ack_immediately();
    let (n, _) = c.poll_transmit(t0, &mut buf, 1).expect("an ACK");
    assert_eq!(ack_ranges(&buf[..n]), vec![(62, 62), (60, 60)]);
    assert_eq!(
        c.ack.received_ranges(),
        32,
        "all ranges are still remembered"
    );
}

/// A STREAM frame carrying `data` at `offset`.
fn stream_frame(offset: u64, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; packet::STREAM_OVERHEAD + data.len()];
    let at = packet::write_stream_header(&mut f, 0, offset, data.len() as u16).unwrap();
    f[at..].copy_from_slice(data);
    f
}

/// Feeds `c` a DATA packet `pn` whose body is `frames`.
fn data(c: &mut Connection, now: Time, pn: u64, frames: &[u8]) {
    let hdr = packet::Header {
        ptype: packet::PacketType::Data,
        dcid: c.local_cid,
        scid: c.remote_cid,
        pn,
    };
    c.handle_data(now, &hdr, frames);
}

/// A DATA packet's frames are parsed into an array of 16; a packet with more (spec §4 sets no
/// limit) is still validated whole and dispatched, and an invalid frame anywhere drops it.
#[test]
fn a_packet_of_more_frames_than_the_parse_array_is_handled_whole() {
    let t0 = Time::ZERO;
    let mut c = established(t0);
    // A message "abc" (7 bytes with its length prefix) in 7 one-byte STREAM frames after 12
    // PINGs: 19 frames.
    let msg = [0, 0, 0, 3, b'a', b'b', b'c'];
    let mut body = vec![packet::frame_type::PING; 12];
    for (i, b) in msg.iter().enumerate() {
        body.extend(stream_frame(i as u64, &[*b]));
    }
    // An unknown frame type after the 16th frame, and within the first 16: dropped whole.
    for bad in [
        [body.as_slice(), &[0x7f]].concat(),
        [&[0x7f], body.as_slice()].concat(),
    ] {
        data(&mut c, t0, 0, &bad);
        assert_eq!(c.stats().packets_received, 0);
        assert_eq!(c.recv(), None);
    }
    data(&mut c, t0, 0, &body);
    assert_eq!(c.stats().packets_received, 1);
    assert_eq!(c.recv(), Some(b"abc".to_vec()));
    // A packet of a few frames goes through the array the same way.
    let few = [
        &[packet::frame_type::PING][..],
        &stream_frame(7, &[0, 0, 0, 1, b'd']),
    ]
    .concat();
    data(&mut c, t0, 1, &few);
    assert_eq!(c.stats().packets_received, 2);
    assert_eq!(c.recv(), Some(b"d".to_vec()));
}
