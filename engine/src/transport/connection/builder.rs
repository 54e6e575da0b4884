//! Building DATA packets (spec §4): what goes into the next packet (ACK, MAX_DATA,
//! DATA_BLOCKED, STREAM, PING), within the congestion window and the pacer (spec §8.1, §8.2),
//! MTU probes (spec §8.4), and recording what was sent.
//!
//! These are methods of [`Connection`]: a packet draws on every part, so the builder reads
//! them all and tells each what it took.

use st_proto::packet::{self, Header, PacketType, STREAM_OVERHEAD, frame_type};

use super::Connection;
use super::recovery::Sent;
use super::timers::Timer;
use crate::time::Time;

impl Connection {
    /// The header of a packet of this connection.
    pub(super) fn header(&self, ptype: PacketType, pn: u64) -> Header {
        Header {
            ptype,
            dcid: self.remote_cid,
            scid: self.local_cid,
            pn,
        }
    }

    /// Writes the MTU probe (PING + PADDING, spec §8.4) into `buf` if one is due and fits the
    /// congestion window.
    pub(super) fn poll_mtu_probe(&mut self, now: Time, buf: &mut [u8]) -> Option<usize> {
        let size = self
            .mtu
            .probe_due(buf.len(), self.send.next_offset(), self.confirmed)?;
        if self.recovery.in_flight() + size as u64 > self.cc.window() {
            return None;
        }
        self.mtu.probe_starting();
        let pn = self.recovery.take_pn();
        let mut n = packet::write_header(buf, &self.header(PacketType::Data, pn)).ok()?;
        n = packet::write_ping(buf, n).ok()?;
        n = packet::write_padding(buf, n, size - n).ok()?;
        packet::seal(&mut buf[..n]);
        self.mtu.probe_sent(pn, size);
        let mut sent = Sent::new(pn, now);
        sent.size = n as u32;
        sent.mtu_probe = true;
        self.on_packet_sent(now, sent);
        Some(n)
    }

    /// Records an ack-eliciting packet sent: counted in flight, told to the controller and the
    /// pacer, keep-alive and loss timers re-armed.
    fn on_packet_sent(&mut self, now: Time, s: Sent) {
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += u64::from(s.size);
        self.recovery.on_sent(now, s, self.cc.window());
        self.cc.on_sent(now, u64::from(s.size));
        self.pacer.on_sent(u64::from(s.size));
        self.ping_pending = false;
        if let Some(k) = self.keep_alive {
            self.timers.set(Timer::KeepAlive, now + k);
        }
        self.set_loss_timer();
    }

    /// Writes one DATA packet into `out` (exactly one MTU long) if anything is due; with `hold`
    /// (an MTU probe waits for room in the window) nothing ack-eliciting but loss probes.
    pub(super) fn write_packet(&mut self, now: Time, out: &mut [u8], hold: bool) -> Option<usize> {
        let mtu = out.len() as u64;
        let probes = self.recovery.probes();
        let wants = self.send.has_data()
            || self.recv.max_data_pending()
            || self.send.data_blocked_pending()
            || self.ping_pending
            || probes > 0;
        let mut may_elicit =
            wants && (probes > 0 || (!hold && self.recovery.in_flight() + mtu <= self.cc.window()));
        if may_elicit && probes == 0 {
            let srtt = self.recovery.rtt().smoothed();
            if let Some(t) = self.pacer.delay(
                now,
                mtu,
                mtu,
                self.cc.window(),
                srtt,
                self.cc.in_slow_start(),
            ) {
                self.timers.set(Timer::Pacing, t);
                may_elicit = false;
            }
        }
        let send_ack = self.ack.should_send(may_elicit);
        if !send_ack && !may_elicit {
            return None;
        }
        let pn = self.recovery.take_pn();
        let mut n = packet::write_header(out, &self.header(PacketType::Data, pn)).ok()?;
        let mut ack_largest = None;
        if send_ack && let Some(m) = self.ack.write_frame(out, n, now) {
            if m > n {
                ack_largest = self.ack.largest();
            }
            n = m;
            self.timers.clear(Timer::Ack);
        }
        if !may_elicit {
            packet::seal(&mut out[..n]);
            self.stats.packets_sent += 1;
            self.stats.bytes_sent += n as u64;
            return Some(n);
        }
        let mut sent = Sent::new(pn, now);
        sent.ack_largest = ack_largest;
        let mut elicit = false;
        if self.recv.max_data_pending() && out.len() - n >= 9 {
            n = packet::write_u64_frame(out, n, frame_type::MAX_DATA, self.recv.local_max_data())
                .ok()?;
            self.recv.max_data_sent();
            sent.max_data = true;
            elicit = true;
        }
        if self.send.data_blocked_pending() && out.len() - n >= 9 {
            n = packet::write_u64_frame(
                out,
                n,
                frame_type::DATA_BLOCKED,
                self.send.peer_max_data(),
            )
            .ok()?;
            self.send.data_blocked_sent();
            elicit = true;
        }
        // The checksum the STREAM frame's copy computed, and where the frame ended.
        let mut checksum = None;
        let room = (out.len() - n)
            .saturating_sub(STREAM_OVERHEAD)
            .min(usize::from(u16::MAX)) as u64;
        if room > 0
            && let Some((s, e, retransmission)) = self.send.next_range(room)
        {
            if retransmission {
                self.stats.stream_bytes_retransmitted += e - s;
            }
            let len = (e - s) as usize;
            let d = packet::write_stream_header(out, n, s, len as u16).ok()?;
            // The STREAM frame is the packet's last: its payload is checksummed as it is
            // copied in (spec §2.1), continuing from what precedes it.
            let head = packet::checksum(&out[..d]);
            n = d + len;
            checksum = Some((self.send.read_at_crc(s, &mut out[d..n], head), n));
            sent.stream = Some((s, len as u32));
            elicit = true;
        }
        if !elicit {
            n = packet::write_ping(out, n).ok()?;
        }
        match checksum {
            // It covers the packet only if nothing was written after the frame.
            Some((c, end)) if end == n => {
                debug_assert_eq!(c, packet::checksum(&out[..n]));
                packet::seal_with(&mut out[..n], c);
            }
            _ => packet::seal(&mut out[..n]),
        }
        sent.size = n as u32;
        self.on_packet_sent(now, sent);
        Some(n)
    }
}
