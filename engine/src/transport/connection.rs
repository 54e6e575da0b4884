//! One connection's state machine: handshake (client side of spec §5), packet numbers and ACKs
//! (§4.3, §7), loss recovery (RFC 9002), congestion control and pacing (§8), flow control and
//! message framing (§6, §8.3), path MTU (§8.4), close and reset (§7.1, §7.2).
//!
//! It never sees a socket or a clock. The [`super::Endpoint`] routes datagrams to it and drains
//! its output.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use st_proto::packet::{
    self, AckFrame, Frame, Frames, HEADER_LEN, Header, MIN_INITIAL_LEN, PARAMS_LEN, PacketType,
    Params, STREAM_OVERHEAD, TOKEN_LEN, frame_type,
};

use super::assembler::Assembler;
use super::congestion::{Controller, Pacer};
use super::ranges::RangeSet;
use super::ring::Ring;
use super::rtt::RttEstimator;
use super::{CloseReason, Config, SendError, code};
use crate::rng::Rng;
use crate::time::Time;

/// Most ranges a receiver remembers (spec §4.3).
const MAX_RECV_RANGES: usize = 64;
/// Ranges put in one ACK frame: the newest 8, and more if more than that hold packets that
/// arrived since the previous ACK. Each range is repeated in every ACK while it is among the
/// newest, which is many times; sending all 64 would make every ACK of a connection that once
/// saw 64 gaps about 550 bytes for the rest of its life (spec §4.3).
const ACK_RANGES_SENT: usize = 8;
/// Ack-eliciting packets after which a receiver acknowledges at once (spec §4.3). At 1500-byte
/// datagrams an ACK every 2 packets cost the receiver a datagram and the sender a wake-up per
/// 3 KB; every 10 cuts both fivefold while leaving the sender 9 packets of its window at most
/// unacknowledged for `ack_delay`.
const ACK_EVERY: u32 = 10;
/// Shortest ACK delay timer (spec §4.3): the reactor sleeps in whole milliseconds.
const MIN_ACK_DELAY: Duration = Duration::from_millis(1);
/// Most out-of-order byte ranges the stream receiver holds (spec §10); a packet whose STREAM
/// frames would create more is dropped without being acknowledged.
pub(crate) const MAX_STREAM_RANGES: usize = 256;
/// Largest `max_ack_delay_ms` a peer may announce (below 2^14, RFC 9000 §18.2).
const MAX_ACK_DELAY_MS: u16 = (1 << 14) - 1;
/// Packet numbers are below 2^62 (spec §7); a DATA packet with a larger one is dropped.
pub(crate) const MAX_PN: u64 = 1 << 62;
/// Smallest send allowance in bytes (see `Connection::send_allowance`): room for a few
/// largest peer messages whatever the window.
const SEND_FLOOR: usize = 1 << 20;

/// Packet reordering threshold (RFC 9002 §6.1.1).
const PACKET_THRESHOLD: u64 = 3;
/// Base MTU (spec §8.4).
const BASE_MTU: usize = 1200;
/// Longest interval between two INITIALs.
const HANDSHAKE_MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Delay before probing the MTU again after a failure or a black hole.
const MTU_RETRY: Duration = Duration::from_secs(60);
/// Probe sizes below the configured maximum (spec §8.4): Ethernet (1500 − 28 over IPv4,
/// 1500 − 48 over IPv6), and jumbo frames (9000 − 48, which fits IPv6 too).
const MTU_STEPS: [usize; 2] = [1472, 8952];
const MTU_STEPS_V6: [usize; 2] = [1452, 8952];
/// Stream bytes a connection sends before it probes beyond Ethernet's MTU: only bulk senders gain
/// from larger datagrams, and on a path that cannot carry them each lost probe costs uplink.
const JUMBO_PROBE_AFTER: u64 = 1 << 20;
/// Probes of one size lost in a row before the size counts as too big for the path.
const MTU_PROBE_ATTEMPTS: u8 = 2;

/// The keep-alive interval: the configured one, at most a third of the (negotiated) idle
/// timeout (spec §7).
fn keep_alive_for(configured: Option<Duration>, idle: Duration) -> Option<Duration> {
    if idle.is_zero() {
        configured
    } else {
        configured.map(|k| k.min(idle / 3))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Handshake,
    Established,
    Closing,
    Draining,
    Drained,
}

#[derive(Debug, Clone, Copy)]
enum Timer {
    Loss = 0,
    Ack = 1,
    Pacing = 2,
    Idle = 3,
    KeepAlive = 4,
    Close = 5,
    MtuRetry = 6,
    /// A violation found outside input handling (no `now` there), closed at once.
    Deferred = 7,
}
const TIMER_COUNT: usize = 8;
const ALL_TIMERS: [Timer; TIMER_COUNT] = [
    Timer::Loss,
    Timer::Ack,
    Timer::Pacing,
    Timer::Idle,
    Timer::KeepAlive,
    Timer::Close,
    Timer::MtuRetry,
    Timer::Deferred,
];

/// Events a connection reports to the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnEvent {
    Connected,
    Readable,
    Writable,
    Closed(CloseReason),
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    pn: u64,
    time: Time,
    size: u32,
    stream: Option<(u64, u32)>,
    max_data: bool,
    mtu_probe: bool,
    done: bool,
    /// Sent while the window was in use (in flight, this packet included, at least half the
    /// window): only such packets may grow the window when acknowledged (spec §8.1).
    cwnd_limited: bool,
}

/// Counters and gauges of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ConnStats {
    /// Packets sent.
    pub packets_sent: u64,
    /// Packets received (valid, not duplicate).
    pub packets_received: u64,
    /// Packets declared lost.
    pub packets_lost: u64,
    /// Congestion events acted on.
    pub congestion_events: u64,
    /// UDP payload bytes sent.
    pub bytes_sent: u64,
    /// Stream bytes sent again after a loss or probe.
    pub stream_bytes_retransmitted: u64,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Bytes in flight.
    pub in_flight: u64,
    /// Smoothed RTT, µs.
    pub srtt_us: u64,
    /// Current path MTU.
    pub mtu: usize,
    /// Bytes held in the send buffer (unacknowledged and unsent).
    pub send_buffered: u64,
    /// Allocated capacity of the send buffer.
    pub send_capacity: usize,
    /// Allocated capacity of the receive buffer.
    pub recv_capacity: usize,
    /// Stream bytes received and not yet read by the application.
    pub recv_buffered: u64,
    /// Entries in the sent-packet table.
    pub tracked_packets: usize,
    /// Next packet number to be used.
    pub next_pn: u64,
    /// Disjoint byte ranges held in the receive buffer (at most 256 beyond the in-order
    /// prefix, spec §10).
    pub recv_ranges: usize,
    /// Packets dropped unacknowledged because they would fragment the receive buffer further.
    pub dropped_fragmented: u64,
    /// Flow control, sending side: next new stream byte, and the peer's limit.
    pub s_next: u64,
    /// The peer's flow-control limit on our stream.
    pub peer_max_data: u64,
    /// Flow control, receiving side: bytes consumed by the application, and our limit.
    pub r_base: u64,
    /// The limit we granted the peer.
    pub local_max_data: u64,
}

pub(crate) struct Connection {
    side: Side,
    state: State,
    pub(crate) local_cid: u64,
    pub(crate) remote_cid: u64,
    pub(crate) remote: SocketAddr,
    local_params: Params,
    peer_token: Option<[u8; TOKEN_LEN]>,
    max_ack_delay: Duration,
    peer_max_ack_delay: Duration,
    idle_timeout: Duration,
    keep_alive: Option<Duration>,
    send_limit: usize,
    peer_max_message: u32,
    window: u64,
    skip_period: u32,
    // Handshake.
    cookie: [u8; 16],
    initial_pending: bool,
    initial_sent_at: Option<Time>,
    initial_attempts: u32,
    accept_pending: bool,
    confirmed: bool,
    // Sending packet numbers.
    next_pn: u64,
    next_skip: u64,
    skipped: VecDeque<u64>,
    largest_acked: Option<u64>,
    sent: VecDeque<Sent>,
    in_flight: u64,
    eliciting_in_flight: u64,
    last_eliciting_sent: Option<Time>,
    rtt: RttEstimator,
    loss_time: Option<Time>,
    pto_count: u32,
    probes: u32,
    cc: Box<dyn Controller>,
    pacer: Pacer,
    loss_rate: f64,
    // Receiving packet numbers.
    recv_pns: RangeSet,
    largest_recv: Option<(u64, Time)>,
    /// Packet numbers at or above this one arrived after the last ACK we sent.
    acked_below: u64,
    ack_needed: bool,
    ack_now: bool,
    eliciting_since_ack: u32,
    // Stream, sending.
    sbuf: Ring,
    s_base: u64,
    s_next: u64,
    s_acked: RangeSet,
    s_retx: RangeSet,
    peer_max_data: u64,
    blocked_reported: Option<u64>,
    data_blocked_pending: bool,
    send_blocked: bool,
    finishing: bool,
    // Stream, receiving.
    recv: Assembler,
    local_max_data: u64,
    max_data_pending: bool,
    readable_signalled: bool,
    /// A violation to close with at the next timeout ([`Timer::Deferred`]).
    deferred_violation: Option<u32>,
    // Path MTU.
    mtu: usize,
    max_mtu: usize,
    probe_mtu: bool,
    mtu_next: Option<usize>,
    mtu_probe: Option<(u64, usize)>,
    /// Probing searches sizes up to this (the largest size not yet found too big).
    mtu_ceiling: usize,
    /// Losses in a row of probes of the size being probed.
    mtu_probe_losses: u8,
    // Misc.
    ping_pending: bool,
    close_frame: Option<(u32, Vec<u8>)>,
    close_pending: bool,
    close_last_sent: Option<Time>,
    timers: [Option<Time>; TIMER_COUNT],
    pub(crate) events: VecDeque<ConnEvent>,
    rng: Rng,
    stats: ConnStats,
}

impl Connection {
    fn new(
        now: Time,
        side: Side,
        cfg: &Config,
        local_cid: u64,
        remote: SocketAddr,
        local_token: [u8; TOKEN_LEN],
        seed: u64,
    ) -> Self {
        let window = cfg.effective_window();
        let mtu = if cfg.probe_mtu {
            usize::from(cfg.initial_mtu).max(BASE_MTU)
        } else {
            usize::from(cfg.max_mtu).max(BASE_MTU)
        };
        let mut rng = Rng::new(seed);
        let skip_period = cfg.skip_period;
        let next_skip = if skip_period == 0 {
            u64::MAX
        } else {
            1 + rng.below(2 * u64::from(skip_period))
        };
        let local_params = Params {
            max_message: cfg.max_message,
            recv_window: window,
            idle_timeout_ms: u32::try_from(cfg.idle_timeout.as_millis()).unwrap_or(u32::MAX),
            max_ack_delay_ms: u16::try_from(cfg.max_ack_delay.as_millis()).unwrap_or(u16::MAX),
            max_udp_payload: cfg.max_mtu.max(1472),
            reset_token: local_token,
        };
        let mut c = Self {
            side,
            state: State::Handshake,
            local_cid,
            remote_cid: 0,
            remote,
            local_params,
            peer_token: None,
            max_ack_delay: cfg.max_ack_delay,
            peer_max_ack_delay: cfg.max_ack_delay,
            idle_timeout: cfg.idle_timeout,
            keep_alive: keep_alive_for(cfg.keep_alive, cfg.idle_timeout),
            send_limit: cfg.send_buffer.max(2 * (cfg.max_message as usize + 4)),
            peer_max_message: cfg.max_message,
            window,
            skip_period,
            cookie: [0; 16],
            initial_pending: false,
            initial_sent_at: None,
            initial_attempts: 0,
            accept_pending: false,
            confirmed: false,
            next_pn: 0,
            next_skip,
            skipped: VecDeque::new(),
            largest_acked: None,
            sent: VecDeque::new(),
            in_flight: 0,
            eliciting_in_flight: 0,
            last_eliciting_sent: None,
            rtt: RttEstimator::default(),
            loss_time: None,
            pto_count: 0,
            probes: 0,
            cc: cfg.congestion.build(mtu as u64),
            pacer: Pacer::default(),
            loss_rate: 0.0,
            recv_pns: RangeSet::new(),
            largest_recv: None,
            acked_below: 0,
            ack_needed: false,
            ack_now: false,
            eliciting_since_ack: 0,
            sbuf: Ring::default(),
            s_base: 0,
            s_next: 0,
            s_acked: RangeSet::new(),
            s_retx: RangeSet::new(),
            peer_max_data: 0,
            blocked_reported: None,
            data_blocked_pending: false,
            send_blocked: false,
            finishing: false,
            recv: Assembler::new(cfg.max_message),
            local_max_data: window,
            max_data_pending: false,
            readable_signalled: false,
            deferred_violation: None,
            mtu,
            max_mtu: usize::from(cfg.max_mtu).max(BASE_MTU),
            probe_mtu: cfg.probe_mtu,
            mtu_next: None,
            mtu_probe: None,
            mtu_ceiling: usize::from(cfg.max_mtu).max(BASE_MTU),
            mtu_probe_losses: 0,
            ping_pending: false,
            close_frame: None,
            close_pending: false,
            close_last_sent: None,
            timers: [None; TIMER_COUNT],
            events: VecDeque::new(),
            rng,
            stats: ConnStats::default(),
        };
        c.timers[Timer::Idle as usize] = Some(now + c.idle_timeout);
        c
    }

    /// A client connection; its first [`Self::poll_transmit`] sends the INITIAL.
    pub(crate) fn client(
        now: Time,
        cfg: &Config,
        local_cid: u64,
        remote: SocketAddr,
        local_token: [u8; TOKEN_LEN],
        seed: u64,
    ) -> Self {
        let mut c = Self::new(now, Side::Client, cfg, local_cid, remote, local_token, seed);
        c.initial_pending = true;
        c
    }

    /// A server connection for a validated INITIAL (spec §5.3).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn server(
        now: Time,
        cfg: &Config,
        local_cid: u64,
        remote_cid: u64,
        remote: SocketAddr,
        peer: &Params,
        local_token: [u8; TOKEN_LEN],
        seed: u64,
    ) -> Self {
        let mut c = Self::new(now, Side::Server, cfg, local_cid, remote, local_token, seed);
        c.remote_cid = remote_cid;
        c.apply_peer_params(peer);
        c.state = State::Established;
        c.accept_pending = true;
        c.events.push_back(ConnEvent::Connected);
        c
    }

    fn apply_peer_params(&mut self, p: &Params) {
        self.peer_token = Some(p.reset_token);
        self.peer_max_message = p.max_message;
        self.peer_max_data = self.peer_max_data.max(p.recv_window);
        if p.idle_timeout_ms > 0 {
            let peer = Duration::from_millis(u64::from(p.idle_timeout_ms));
            self.idle_timeout = self.idle_timeout.min(peer);
        }
        // Spec §7: a PING after idle_timeout / 3 without sending, if that is sooner.
        self.keep_alive = keep_alive_for(self.keep_alive, self.idle_timeout);
        // Spec §3.1: below 2^14 ms (RFC 9000 §18.2) and at most a quarter of the idle timeout,
        // so a peer cannot stretch the 3 × PTO idle floor (§7) past the idle timeout.
        let mut ack_delay =
            Duration::from_millis(u64::from(p.max_ack_delay_ms.min(MAX_ACK_DELAY_MS)));
        if !self.idle_timeout.is_zero() {
            ack_delay = ack_delay.min(self.idle_timeout / 4);
        }
        self.peer_max_ack_delay = ack_delay;
        let peer_max = usize::from(p.max_udp_payload).max(BASE_MTU);
        self.max_mtu = self.max_mtu.min(peer_max);
        if self.mtu > self.max_mtu {
            self.mtu = self.max_mtu;
            self.cc.on_mtu(self.mtu as u64);
        }
        if self.probe_mtu {
            self.mtu_next = self.next_mtu_candidate();
        }
    }

    /// True if a peer's parameters are acceptable (spec §3.1): `max_udp_payload` ≥ 1200 and
    /// `recv_window` ≥ `max_message + 4` (§8.3). Otherwise the handshake is refused.
    pub(crate) fn params_valid(p: &Params) -> bool {
        usize::from(p.max_udp_payload) >= BASE_MTU && p.recv_window >= u64::from(p.max_message) + 4
    }

    /// The next size to probe (spec §8.4): the first of [`MTU_STEPS`] and the maximum that is
    /// above the current MTU and not above the search ceiling.
    fn next_mtu_candidate(&self) -> Option<usize> {
        let top = self.max_mtu.min(self.mtu_ceiling);
        self.mtu_steps()
            .into_iter()
            .chain([self.max_mtu])
            .find(|&c| c > self.mtu && c <= top)
    }

    /// The probe steps of this path's address family: an IPv6 header is 20 bytes longer, so
    /// Ethernet carries 1452 bytes of UDP payload over IPv6 (an IPv4-mapped address is IPv4).
    fn mtu_steps(&self) -> [usize; 2] {
        match self.remote.ip() {
            std::net::IpAddr::V6(a) if a.to_ipv4_mapped().is_none() => MTU_STEPS_V6,
            _ => MTU_STEPS,
        }
    }

    // -------------------------------------------------------------------------------------
    // Getters

    pub(crate) fn is_drained(&self) -> bool {
        self.state == State::Drained
    }

    pub(crate) fn is_closed(&self) -> bool {
        matches!(
            self.state,
            State::Closing | State::Draining | State::Drained
        )
    }

    pub(crate) fn is_server_unconfirmed(&self) -> bool {
        self.side == Side::Server && !self.confirmed
    }

    pub(crate) fn stats(&self) -> ConnStats {
        let mut s = self.stats;
        s.cwnd = self.cc.window();
        s.in_flight = self.in_flight;
        s.srtt_us = self.rtt.smoothed().as_micros() as u64;
        s.mtu = self.mtu;
        s.send_buffered = self.sbuf.len() as u64;
        s.send_capacity = self.sbuf.capacity();
        s.recv_capacity = self.recv.capacity();
        s.recv_buffered = self.recv.buffered() as u64;
        s.tracked_packets = self.sent.len();
        s.next_pn = self.next_pn;
        s.recv_ranges = self.recv.ranges().len();
        s.s_next = self.s_next;
        s.peer_max_data = self.peer_max_data;
        s.r_base = self.recv.base();
        s.local_max_data = self.local_max_data;
        s
    }

    pub(crate) fn poll_timeout(&self) -> Option<Time> {
        self.timers.iter().flatten().min().copied()
    }

    /// Bytes queued and not yet acknowledged; zero once everything sent was acknowledged.
    pub(crate) fn unacked_bytes(&self) -> u64 {
        self.sbuf.len() as u64
    }

    // -------------------------------------------------------------------------------------
    // Commands

    /// How many unacknowledged bytes (in flight, lost and waiting, or not sent yet) the send
    /// buffer may hold before it refuses messages (spec §8.3): one and a half times what the
    /// path holds without a queue (the congestion window scaled by min RTT / smoothed RTT), at
    /// least [`SEND_FLOOR`]. Sized to the path rather than fixed, the buffer neither starves
    /// a fast path nor holds megabytes for a slow or bloated one (which a CANCEL could no
    /// longer withdraw and which would only wait in a queue), and a connection's memory
    /// follows its rate. The configured send buffer stays the hard limit on everything held,
    /// acknowledged bytes above a hole included.
    fn send_allowance(&self) -> usize {
        let mut w = self.cc.window() as f64;
        if self.rtt.has_sample() {
            let (min, srtt) = (
                self.rtt.min().as_secs_f64(),
                self.rtt.smoothed().as_secs_f64(),
            );
            if srtt > min && min > 0.0 {
                w *= min / srtt;
            }
        }
        ((w * 1.5) as usize).max(SEND_FLOOR)
    }

    /// Bytes in the send buffer not yet acknowledged.
    fn unacked_in_buffer(&self) -> usize {
        let acked: u64 = self.s_acked.iter().map(|(s, e)| e - s).sum();
        self.sbuf.len().saturating_sub(acked as usize)
    }

    pub(crate) fn send(&mut self, msg: &[u8]) -> Result<(), SendError> {
        self.send_with(msg, 0, |_, _| Ok::<(), std::convert::Infallible>(()))
            .map(|_| ())
    }

    /// Like [`Connection::send`] for a message of `head` and then `body_len` bytes that
    /// `fill` writes straight into the send buffer (two slices: the buffer may wrap). The
    /// outer error is the transport's; the inner one is `fill`'s, and then nothing is queued.
    pub(crate) fn send_with<E>(
        &mut self,
        head: &[u8],
        body_len: usize,
        fill: impl FnOnce(&mut [u8], &mut [u8]) -> Result<(), E>,
    ) -> Result<Result<(), E>, SendError> {
        if self.is_closed() || self.finishing {
            return Err(SendError::Closed);
        }
        let len = head.len() + body_len;
        let limit = self.local_params.max_message.min(self.peer_max_message) as usize;
        if len > limit {
            return Err(SendError::TooLarge);
        }
        let add = 4 + len;
        // A message is taken while the allowance is not used up (so it may overshoot by one
        // message: messages larger than the allowance still go), never past the hard limit.
        if self.sbuf.len() + add > self.send_limit
            || self.unacked_in_buffer() >= self.send_allowance()
        {
            self.send_blocked = true;
            return Err(SendError::Blocked);
        }
        self.sbuf.push(&(len as u32).to_be_bytes());
        self.sbuf.push(head);
        match self.sbuf.append_with(body_len, fill) {
            Ok(()) => Ok(Ok(())),
            Err(e) => {
                self.sbuf.truncate_tail(4 + head.len());
                Ok(Err(e))
            }
        }
    }

    pub(crate) fn recv(&mut self) -> Option<Vec<u8>> {
        let mut msg = Vec::new();
        self.recv_into(&mut msg).then_some(msg)
    }

    /// Like [`Connection::recv`], into `out` (whose allocation is reused).
    pub(crate) fn recv_into(&mut self, out: &mut Vec<u8>) -> bool {
        let Some(len) = self.recv.ready_len() else {
            self.readable_signalled = false;
            return false;
        };
        self.recv.pop_into(len, out);
        self.refresh_credit();
        // The next message may be one above our limit whose bytes all arrived while it was
        // not the head: no more stream bytes will come to find it, so it is found here (and
        // the connection closed at the next timeout, which is now).
        if self.recv.head_too_large() && !self.is_closed() {
            self.deferred_violation = Some(code::MESSAGE_TOO_LARGE);
            self.timers[Timer::Deferred as usize] = Some(Time::ZERO);
        }
        true
    }

    /// Flow control credit (spec §8.3): the limit moves to a window past what the application
    /// read once less than half a window is left, or once the next message needs more than is
    /// left (with a window of `max_message + 4`, a long message after a short one can need
    /// more than the credit left while more than half the window is: without this both sides
    /// would wait forever).
    fn refresh_credit(&mut self) {
        if self.is_closed() {
            return;
        }
        let base = self.recv.base();
        let next_end = self.recv.head_len().map_or(0, |l| base + 4 + l);
        if self.local_max_data.saturating_sub(base) < self.window / 2
            || next_end > self.local_max_data
        {
            self.local_max_data = self.local_max_data.max(base + self.window);
            self.max_data_pending = true;
        }
    }

    /// Closes after every byte written so far was acknowledged (spec §7.1).
    pub(crate) fn finish(&mut self, now: Time) {
        self.finishing = true;
        self.maybe_finish(now);
    }

    fn maybe_finish(&mut self, now: Time) {
        if self.finishing && self.sbuf.is_empty() && self.state == State::Established {
            self.close(now, code::NO_ERROR, b"", CloseReason::Local(code::NO_ERROR));
        }
    }

    pub(crate) fn close(&mut self, now: Time, code: u32, reason: &[u8], why: CloseReason) {
        if self.is_closed() {
            return;
        }
        let r = &reason[..reason.len().min(packet::MAX_REASON_LEN)];
        if self.state == State::Handshake && self.remote_cid == 0 {
            // Nobody to tell.
            self.enter_drained(why);
            return;
        }
        self.close_frame = Some((code, r.to_vec()));
        self.close_pending = true;
        self.state = State::Closing;
        self.timers = [None; TIMER_COUNT];
        self.timers[Timer::Close as usize] = Some(now + self.pto_base() * 3);
        self.events.push_back(ConnEvent::Closed(why));
    }

    fn enter_drained(&mut self, why: CloseReason) {
        let was_closed = self.is_closed();
        self.state = State::Drained;
        self.timers = [None; TIMER_COUNT];
        if !was_closed {
            self.events.push_back(ConnEvent::Closed(why));
        }
    }

    fn violation(&mut self, now: Time, code: u32) {
        log::debug!("connection {:x}: violation {code}", self.local_cid);
        self.close(now, code, b"", CloseReason::Violation(code));
    }

    // -------------------------------------------------------------------------------------
    // Input

    pub(crate) fn handle_retry(&mut self, cookie: [u8; 16]) {
        if self.state == State::Handshake && self.side == Side::Client && cookie != self.cookie {
            self.cookie = cookie;
            self.initial_pending = true;
            self.initial_attempts = 0;
            self.pto_count = 0;
        }
    }

    pub(crate) fn handle_accept(&mut self, now: Time, scid: u64, params: &Params) {
        if self.state != State::Handshake || self.side != Side::Client || scid == 0 {
            return;
        }
        self.remote_cid = scid;
        if !Self::params_valid(params) {
            self.violation(now, code::PROTOCOL_VIOLATION);
            return;
        }
        if self.initial_attempts == 1
            && let Some(t) = self.initial_sent_at
        {
            self.rtt.update(now - t, Duration::ZERO);
        }
        self.apply_peer_params(params);
        self.state = State::Established;
        self.confirmed = true;
        self.initial_pending = false;
        self.pto_count = 0;
        self.ping_pending = true;
        self.timers[Timer::Loss as usize] = None;
        self.on_received(now);
        self.events.push_back(ConnEvent::Connected);
    }

    /// A repeated INITIAL for this (server) connection: ACCEPT again until confirmed.
    pub(crate) fn handle_initial_again(&mut self) {
        if self.side == Side::Server && !self.confirmed && self.state == State::Established {
            self.accept_pending = true;
        }
    }

    pub(crate) fn handle_reset(&mut self, token: &[u8; TOKEN_LEN]) {
        if self.peer_token.as_ref() == Some(token) && self.state != State::Drained {
            self.enter_drained(CloseReason::Reset);
        }
    }

    pub(crate) fn handle_close(&mut self, now: Time, code: u32, reason: &[u8]) {
        match self.state {
            State::Draining | State::Drained => {}
            State::Closing => {
                // Both sides closed: drain.
                self.state = State::Draining;
            }
            State::Handshake | State::Established => {
                self.state = State::Draining;
                self.timers = [None; TIMER_COUNT];
                self.timers[Timer::Close as usize] = Some(now + self.pto_base() * 3);
                self.events.push_back(ConnEvent::Closed(CloseReason::Peer {
                    code,
                    reason: reason.to_vec(),
                }));
            }
        }
    }

    /// How long an ack-eliciting packet may wait for its ACK when fewer than [`ACK_EVERY`]
    /// arrived (spec §4.3): a quarter of the smoothed round trip, at least [`MIN_ACK_DELAY`], at
    /// most `max_ack_delay` (which the peer's PTO allows for); `max_ack_delay` before the first
    /// round-trip sample.
    fn ack_delay(&self) -> Duration {
        if self.rtt.has_sample() {
            (self.rtt.smoothed() / 4)
                .max(MIN_ACK_DELAY)
                .min(self.max_ack_delay)
        } else {
            self.max_ack_delay
        }
    }

    fn on_received(&mut self, now: Time) {
        // RFC 9000 §10.1: the idle timeout is at least 3 PTOs.
        let idle = self.idle_timeout.max(self.pto_base() * 3);
        self.timers[Timer::Idle as usize] = Some(now + idle);
    }

    /// A DATA packet for this connection (spec §4). Invalid frame sequences are dropped whole.
    pub(crate) fn handle_data(&mut self, now: Time, hdr: &Header, frames: &[u8]) {
        match self.state {
            State::Draining | State::Drained | State::Handshake => return,
            State::Closing => {
                let pto = self.pto_base();
                if self.close_last_sent.is_none_or(|t| now >= t + pto) {
                    self.close_pending = true;
                }
                return;
            }
            State::Established => {}
        }
        let pn = hdr.pn;
        if pn >= MAX_PN || Frames::new(frames).any(|f| f.is_err()) {
            return;
        }
        if self.recv_pns.contains(pn) || self.recv_pns.first().is_some_and(|(s, _)| pn < s) {
            self.ack_now = true;
            return;
        }
        if !self.stream_ranges_fit(frames) {
            // Too fragmented (spec §10): not acknowledged, so the peer sends it again later.
            self.stats.dropped_fragmented += 1;
            return;
        }
        if self.side == Side::Server && !self.confirmed {
            self.confirmed = true;
            self.accept_pending = false;
        }
        self.stats.packets_received += 1;
        self.on_received(now);
        let out_of_order = match self.largest_recv {
            Some((l, _)) => pn != l + 1,
            None => pn != 0,
        };
        self.recv_pns.insert(pn, pn + 1);
        self.recv_pns.truncate_low(MAX_RECV_RANGES);
        if self.largest_recv.is_none_or(|(l, _)| pn > l) {
            self.largest_recv = Some((pn, now));
        }
        let mut eliciting = false;
        let mut pinged = false;
        for f in Frames::new(frames).flatten() {
            match f {
                Frame::Padding(_) => {}
                Frame::Ping => {
                    eliciting = true;
                    pinged = true;
                }
                Frame::Ack(a) => {
                    if let Err(c) = self.on_ack(now, &a) {
                        self.violation(now, c);
                        return;
                    }
                }
                Frame::Stream { offset, data } => {
                    eliciting = true;
                    if let Err(c) = self.on_stream(offset, data) {
                        self.violation(now, c);
                        return;
                    }
                }
                Frame::MaxData(v) => {
                    eliciting = true;
                    self.peer_max_data = self.peer_max_data.max(v);
                }
                Frame::DataBlocked(_) => {
                    eliciting = true;
                    self.max_data_pending = true;
                }
            }
        }
        if eliciting {
            self.eliciting_since_ack += 1;
            self.ack_needed = true;
            // ACK frequency (spec §4.3): every ACK_EVERY ack-eliciting packets, at once on
            // reordering, a duplicate or a PING (loss and MTU probes want an answer now), else
            // after a quarter of the round trip (at least 1 ms, at most max_ack_delay).
            if self.eliciting_since_ack >= ACK_EVERY || out_of_order || pinged {
                self.ack_now = true;
            } else if self.timers[Timer::Ack as usize].is_none() {
                self.timers[Timer::Ack as usize] = Some(now + self.ack_delay());
            }
        }
        if !self.readable_signalled && self.recv.ready_len().is_some() {
            self.readable_signalled = true;
            self.events.push_back(ConnEvent::Readable);
        }
    }

    /// True if the STREAM frames of a packet leave at most [`MAX_STREAM_RANGES`] out-of-order
    /// ranges in the receive buffer (counted against the current set, an upper bound). Bytes
    /// that extend the in-order prefix are always taken, so a full set never stalls the stream.
    fn stream_ranges_fit(&self, frames: &[u8]) -> bool {
        let base = self.recv.base();
        let prefix_end = base + self.recv.contiguous();
        let mut new = 0;
        for f in Frames::new(frames).flatten() {
            if let Frame::Stream { offset, data } = f {
                let end = offset.saturating_add(data.len() as u64);
                let off = offset.max(base);
                if off > prefix_end && self.recv.ranges().would_add_range(off, end) {
                    new += 1;
                }
            }
        }
        let out_of_order = self.recv.ranges().len() - usize::from(prefix_end > base);
        out_of_order + new <= MAX_STREAM_RANGES
    }

    fn on_stream(&mut self, offset: u64, data: &[u8]) -> Result<(), u32> {
        let end = offset + data.len() as u64;
        if end > self.local_max_data {
            return Err(code::FLOW_CONTROL_ERROR);
        }
        let base = self.recv.base();
        if end <= base || data.is_empty() {
            return Ok(());
        }
        let (off, data) = if offset < base {
            (base, &data[(base - offset) as usize..])
        } else {
            (offset, data)
        };
        if self.recv.ranges().contains_range(off, end) {
            return Ok(());
        }
        self.recv.insert(off, data);
        // A length prefix above our limit is a violation as soon as it is readable.
        if self.recv.head_too_large() {
            return Err(code::MESSAGE_TOO_LARGE);
        }
        self.refresh_credit();
        Ok(())
    }

    /// Processes an ACK frame (RFC 9002 §A.7). `Err` carries a CLOSE code.
    fn on_ack(&mut self, now: Time, ack: &AckFrame<'_>) -> Result<(), u32> {
        if ack.largest >= self.next_pn {
            return Err(code::PROTOCOL_VIOLATION);
        }
        for (lo, hi) in ack.iter() {
            if self.skipped.iter().any(|&s| s >= lo && s <= hi) {
                return Err(code::PROTOCOL_VIOLATION);
            }
        }
        self.largest_acked = Some(
            self.largest_acked
                .map_or(ack.largest, |l| l.max(ack.largest)),
        );
        // RTT sample from the largest acknowledged if it is newly acknowledged (§5.1).
        let i = self.sent.partition_point(|p| p.pn < ack.largest);
        if let Some(p) = self.sent.get(i)
            && p.pn == ack.largest
            && !p.done
        {
            let delay = Duration::from_micros(u64::from(ack.delay_us)).min(self.peer_max_ack_delay);
            self.rtt.update(now - p.time, delay);
        }
        let mut newly = false;
        for (lo, hi) in ack.iter() {
            let mut i = self.sent.partition_point(|p| p.pn < lo);
            while let Some(p) = self.sent.get_mut(i) {
                if p.pn > hi {
                    break;
                }
                i += 1;
                if p.done {
                    continue;
                }
                p.done = true;
                let p = *p;
                newly = true;
                self.in_flight = self.in_flight.saturating_sub(u64::from(p.size));
                self.eliciting_in_flight = self.eliciting_in_flight.saturating_sub(1);
                self.loss_rate *= 1.0 - 1.0 / 128.0;
                if p.mtu_probe {
                    if let Some((ppn, size)) = self.mtu_probe
                        && ppn == p.pn
                    {
                        self.mtu_probe = None;
                        self.mtu_probe_losses = 0;
                        self.mtu = size;
                        self.cc.on_mtu(size as u64);
                        self.mtu_next = self.next_mtu_candidate();
                    }
                } else {
                    let app_limited = !p.cwnd_limited;
                    self.cc
                        .on_ack(now, p.time, u64::from(p.size), app_limited, &self.rtt);
                }
                if let Some((off, len)) = p.stream {
                    // A copy (probe or retransmission) can be acknowledged after the original
                    // moved the send buffer's base past it: record only what lies above the
                    // base, or a stale range at the front of `s_acked` would stop the base from
                    // ever advancing again (the sender wedges with a full send buffer).
                    let end = off + u64::from(len);
                    let start = off.max(self.s_base);
                    if start < end {
                        self.s_acked.insert(start, end);
                    }
                    self.s_retx.remove(off, end);
                }
            }
        }
        if !newly {
            return Ok(());
        }
        // Release acknowledged stream bytes from the send buffer.
        self.s_acked.remove_below(self.s_base);
        if let Some((s, e)) = self.s_acked.first()
            && s <= self.s_base
            && e > self.s_base
        {
            let n = e - self.s_base;
            self.sbuf.consume(n as usize);
            self.s_base = e;
            self.s_acked.remove_below(e);
            self.s_retx.remove_below(e);
            if self.send_blocked
                && self.sbuf.len() <= self.send_limit / 2
                && self.unacked_in_buffer() <= self.send_allowance() / 2
            {
                self.send_blocked = false;
                self.events.push_back(ConnEvent::Writable);
            }
        }
        self.detect_lost(now);
        self.pto_count = 0;
        while self.sent.front().is_some_and(|p| p.done) {
            self.sent.pop_front();
        }
        self.set_loss_timer();
        self.maybe_finish(now);
        Ok(())
    }

    /// Declares packets lost (RFC 9002 §6.1, §A.10) and signals congestion (spec §8.1).
    fn detect_lost(&mut self, now: Time) {
        let Some(la) = self.largest_acked else { return };
        let loss_delay = self.rtt.loss_delay();
        let lost_before = now - loss_delay;
        self.loss_time = None;
        let mut largest_lost_time: Option<Time> = None;
        let mut first_lost: Option<Time> = None;
        let mut last_lost: Option<Time> = None;
        let mut i = 0;
        while let Some(p) = self.sent.get_mut(i) {
            i += 1;
            if p.pn > la {
                break;
            }
            if p.done {
                continue;
            }
            if p.time <= lost_before || la >= p.pn + PACKET_THRESHOLD {
                p.done = true;
                let p = *p;
                self.stats.packets_lost += 1;
                self.in_flight = self.in_flight.saturating_sub(u64::from(p.size));
                self.eliciting_in_flight = self.eliciting_in_flight.saturating_sub(1);
                if let Some((off, len)) = p.stream {
                    self.requeue(off, off + u64::from(len));
                }
                if p.max_data {
                    self.max_data_pending = true;
                }
                if p.mtu_probe {
                    if let Some((pn, size)) = self.mtu_probe
                        && pn == p.pn
                    {
                        self.mtu_probe = None;
                        self.mtu_probe_losses += 1;
                        if self.mtu_probe_losses < MTU_PROBE_ATTEMPTS {
                            // One loss may be congestion: try the same size again.
                            self.mtu_next = Some(size);
                        } else {
                            // Too big for the path: search below it, and look again later.
                            self.mtu_probe_losses = 0;
                            self.mtu_ceiling = size - 1;
                            self.mtu_next = self.next_mtu_candidate();
                            self.timers[Timer::MtuRetry as usize] = Some(now + MTU_RETRY);
                        }
                    }
                    continue;
                }
                self.loss_rate = self.loss_rate * (1.0 - 1.0 / 128.0) + 1.0 / 128.0;
                largest_lost_time = Some(largest_lost_time.map_or(p.time, |t| t.max(p.time)));
                first_lost = Some(first_lost.map_or(p.time, |t| t.min(p.time)));
                last_lost = Some(last_lost.map_or(p.time, |t| t.max(p.time)));
            } else {
                let t = p.time + loss_delay;
                self.loss_time = Some(self.loss_time.map_or(t, |x| x.min(t)));
            }
        }
        if let (Some(sent), Some(first), Some(last)) = (largest_lost_time, first_lost, last_lost) {
            // Persistent congestion (RFC 9002 §7.6.1), approximated by the span of lost packets.
            let pc = (self.rtt.smoothed()
                + (self.rtt.var() * 4).max(super::rtt::GRANULARITY)
                + self.peer_max_ack_delay)
                * 3;
            let persistent = self.rtt.has_sample() && last - first > pc;
            if persistent || self.loss_is_congestion() {
                self.stats.congestion_events += 1;
                self.cc.on_congestion_event(now, sent, persistent);
            }
        }
    }

    /// Loss discrimination (spec §8.1).
    fn loss_is_congestion(&self) -> bool {
        if !self.rtt.has_sample() {
            return true;
        }
        let min = self.rtt.min();
        let thr = min + min / 4 + Duration::from_millis(1);
        self.rtt.latest() > thr || self.rtt.smoothed() > thr || self.loss_rate > 0.1
    }

    fn requeue(&mut self, s: u64, e: u64) {
        let s = s.max(self.s_base);
        if s >= e {
            return;
        }
        self.s_retx.insert(s, e);
        let acked: Vec<(u64, u64)> = self
            .s_acked
            .iter()
            .filter(|&(a, b)| b > s && a < e)
            .collect();
        for (a, b) in acked {
            self.s_retx.remove(a, b);
        }
    }

    fn pto_base(&self) -> Duration {
        self.rtt.pto(self.peer_max_ack_delay)
    }

    fn pto_backoff(&self) -> Duration {
        (self.pto_base() * (1u32 << self.pto_count.min(10))).min(Duration::from_secs(60))
    }

    /// RFC 9002 §A.8.
    fn set_loss_timer(&mut self) {
        let t = if let Some(t) = self.loss_time {
            Some(t)
        } else if self.state == State::Handshake {
            // INITIALs are cheap and the handshake must survive heavy loss: cap the backoff.
            self.initial_sent_at
                .map(|s| s + self.pto_backoff().min(HANDSHAKE_MAX_BACKOFF))
        } else if self.eliciting_in_flight == 0 {
            None
        } else {
            self.last_eliciting_sent.map(|s| s + self.pto_backoff())
        };
        self.timers[Timer::Loss as usize] = t;
    }

    pub(crate) fn handle_timeout(&mut self, now: Time) {
        for t in ALL_TIMERS {
            let Some(at) = self.timers[t as usize] else {
                continue;
            };
            if at > now {
                continue;
            }
            self.timers[t as usize] = None;
            match t {
                Timer::Loss => self.on_loss_timer(now),
                Timer::Ack => self.ack_now = self.ack_needed,
                Timer::Pacing => {}
                Timer::Idle => {
                    let why = if self.state == State::Handshake {
                        CloseReason::HandshakeTimeout
                    } else {
                        CloseReason::IdleTimeout
                    };
                    self.enter_drained(why);
                    return;
                }
                Timer::KeepAlive => {
                    if self.state == State::Established {
                        self.ping_pending = true;
                    }
                }
                Timer::Close => {
                    self.state = State::Drained;
                    self.timers = [None; TIMER_COUNT];
                    return;
                }
                Timer::Deferred => {
                    if let Some(code) = self.deferred_violation.take() {
                        self.violation(now, code);
                        return;
                    }
                }
                Timer::MtuRetry => {
                    if self.probe_mtu && self.state == State::Established {
                        // The path may have changed: search up to the maximum again.
                        self.mtu_ceiling = self.max_mtu;
                        self.mtu_probe_losses = 0;
                        if self.mtu_probe.is_none() {
                            self.mtu_next = self.next_mtu_candidate();
                        }
                    }
                }
            }
        }
    }

    fn on_loss_timer(&mut self, now: Time) {
        if self.loss_time.is_some_and(|t| t <= now) {
            self.detect_lost(now);
            while self.sent.front().is_some_and(|p| p.done) {
                self.sent.pop_front();
            }
            self.set_loss_timer();
            return;
        }
        self.pto_count += 1;
        if self.state == State::Handshake {
            self.initial_pending = true;
            return;
        }
        // Probe timeout (RFC 9002 §6.2.4): two ack-eliciting probes, carrying the oldest
        // unacknowledged data if there is any.
        self.probes = 2;
        if let Some((off, len)) = self.sent.iter().find(|p| !p.done).and_then(|p| p.stream) {
            self.requeue(off, off + u64::from(len));
        }
        // Black hole detection (RFC 8899 §4.3, spec §8.4).
        if self.pto_count >= 2 && self.mtu > BASE_MTU {
            log::debug!(
                "connection {:x}: MTU black hole, back to {BASE_MTU}",
                self.local_cid
            );
            self.mtu = BASE_MTU;
            self.cc.on_mtu(BASE_MTU as u64);
            self.mtu_next = None;
            self.mtu_probe = None;
            self.mtu_probe_losses = 0;
            self.timers[Timer::MtuRetry as usize] = Some(now + MTU_RETRY);
        }
        self.set_loss_timer();
    }

    // -------------------------------------------------------------------------------------
    // Output

    fn header(&self, ptype: PacketType, pn: u64) -> Header {
        Header {
            ptype,
            dcid: self.remote_cid,
            scid: self.local_cid,
            pn,
        }
    }

    fn take_pn(&mut self) -> u64 {
        let mut pn = self.next_pn;
        if pn == self.next_skip {
            // Optimistic-ACK defence (spec §7).
            self.skipped.push_back(pn);
            if self.skipped.len() > 32 {
                self.skipped.pop_front();
            }
            pn += 1;
            self.next_skip = pn + 1 + self.rng.below(2 * u64::from(self.skip_period));
        }
        self.next_pn = pn + 1;
        pn
    }

    /// Writes up to `max_segments` packets of one size (the last may be shorter) into `buf`.
    /// Returns `(len, segment_size)`.
    pub(crate) fn poll_transmit(
        &mut self,
        now: Time,
        buf: &mut [u8],
        max_segments: usize,
    ) -> Option<(usize, Option<usize>)> {
        match self.state {
            State::Drained | State::Draining => return None,
            State::Closing => {
                if !self.close_pending {
                    return None;
                }
                self.close_pending = false;
                self.close_last_sent = Some(now);
                let (code, reason) = self.close_frame.clone().unwrap_or((0, Vec::new()));
                let pn = self.take_pn();
                let p = packet::Packet::Close {
                    hdr: self.header(PacketType::Close, pn),
                    code,
                    reason: &reason,
                };
                return packet::emit(&p, buf).map(|n| (n, None));
            }
            State::Handshake => {
                if self.side != Side::Client || !self.initial_pending {
                    return None;
                }
                self.initial_pending = false;
                self.initial_attempts += 1;
                self.initial_sent_at = Some(now);
                let p = packet::Packet::Initial {
                    hdr: Header {
                        ptype: PacketType::Initial,
                        dcid: 0,
                        scid: self.local_cid,
                        pn: u64::from(self.initial_attempts),
                    },
                    cookie: self.cookie,
                    params: self.local_params,
                    padding: MIN_INITIAL_LEN - HEADER_LEN - 16 - PARAMS_LEN,
                };
                self.set_loss_timer();
                return packet::emit(&p, buf).map(|n| (n, None));
            }
            State::Established => {}
        }
        if self.accept_pending {
            self.accept_pending = false;
            let p = packet::Packet::Accept {
                hdr: self.header(PacketType::Accept, 0),
                params: self.local_params,
            };
            return packet::emit(&p, buf).map(|n| (n, None));
        }
        // Flow-control blocked? (spec §4.2)
        let s_end = self.s_base + self.sbuf.len() as u64;
        if self.s_next < s_end
            && self.s_next >= self.peer_max_data
            && self.blocked_reported != Some(self.peer_max_data)
        {
            self.blocked_reported = Some(self.peer_max_data);
            self.data_blocked_pending = true;
        }
        if let Some(n) = self.poll_mtu_probe(now, buf) {
            return Some((n, None));
        }
        let hold = self.probe_waits_for_room(buf.len());
        let mtu = self.mtu;
        let mut total = 0;
        let mut seg = 0;
        let mut count = 0;
        while count < max_segments.max(1) && buf.len() - total >= mtu {
            let Some(n) = self.write_packet(now, &mut buf[total..total + mtu], hold) else {
                break;
            };
            total += n;
            count += 1;
            if count == 1 {
                seg = n;
            }
            if n < mtu || n < seg {
                break;
            }
        }
        if count == 0 {
            return None;
        }
        Some((total, (count > 1).then_some(seg)))
    }

    /// The size of the MTU probe due now, window room aside.
    fn probe_due(&self, room: usize) -> Option<usize> {
        let size = self.mtu_next?;
        (self.mtu_probe.is_none()
            && !(size > self.mtu_steps()[0] && self.s_next < JUMBO_PROBE_AFTER)
            && self.confirmed
            && size <= room)
            .then_some(size)
    }

    /// True if an MTU probe is due but larger than the room left in the window; new data then
    /// waits until the room is there (spec §8.4): each ACK frees less than a jumbo probe, and
    /// refilling the window with data at once would keep the probe out for as long as the
    /// sender is window-limited. Only a probe that fits half the window waits so; with a
    /// smaller window data goes.
    fn probe_waits_for_room(&self, room: usize) -> bool {
        self.probe_due(room).is_some_and(|size| {
            let w = self.cc.window();
            self.in_flight + size as u64 > w && 2 * size as u64 <= w
        })
    }

    fn poll_mtu_probe(&mut self, now: Time, buf: &mut [u8]) -> Option<usize> {
        let size = self.probe_due(buf.len())?;
        if self.in_flight + size as u64 > self.cc.window() {
            return None;
        }
        self.mtu_next = None;
        let pn = self.take_pn();
        let mut n = packet::write_header(buf, &self.header(PacketType::Data, pn))?;
        n = packet::write_ping(buf, n)?;
        n = packet::write_padding(buf, n, size - n)?;
        packet::seal(&mut buf[..n]);
        self.mtu_probe = Some((pn, size));
        self.on_packet_sent(
            now,
            Sent {
                pn,
                time: now,
                size: n as u32,
                stream: None,
                max_data: false,
                mtu_probe: true,
                done: false,
                cwnd_limited: false,
            },
        );
        Some(n)
    }

    fn on_packet_sent(&mut self, now: Time, mut s: Sent) {
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += u64::from(s.size);
        self.in_flight += u64::from(s.size);
        s.cwnd_limited = 2 * self.in_flight >= self.cc.window();
        self.eliciting_in_flight += 1;
        self.cc.on_sent(now, u64::from(s.size));
        self.pacer.on_sent(u64::from(s.size));
        self.last_eliciting_sent = Some(now);
        self.sent.push_back(s);
        self.probes = self.probes.saturating_sub(1);
        self.ping_pending = false;
        if let Some(k) = self.keep_alive {
            self.timers[Timer::KeepAlive as usize] = Some(now + k);
        }
        self.set_loss_timer();
    }

    /// Writes one DATA packet into `out` (exactly one MTU long) if anything is due; with `hold`
    /// (an MTU probe waits for room in the window) nothing ack-eliciting but loss probes.
    fn write_packet(&mut self, now: Time, out: &mut [u8], hold: bool) -> Option<usize> {
        let mtu = out.len() as u64;
        let s_end = self.s_base + self.sbuf.len() as u64;
        let has_new = self.s_next < s_end.min(self.peer_max_data);
        let has_stream = !self.s_retx.is_empty() || has_new;
        let wants = has_stream
            || self.max_data_pending
            || self.data_blocked_pending
            || self.ping_pending
            || self.probes > 0;
        let mut may_elicit =
            wants && (self.probes > 0 || (!hold && self.in_flight + mtu <= self.cc.window()));
        if may_elicit && self.probes == 0 {
            let srtt = self.rtt.smoothed();
            if let Some(t) = self.pacer.delay(
                now,
                mtu,
                mtu,
                self.cc.window(),
                srtt,
                self.cc.in_slow_start(),
            ) {
                self.timers[Timer::Pacing as usize] = Some(t);
                may_elicit = false;
            }
        }
        let send_ack = self.ack_now || (self.ack_needed && may_elicit);
        if !send_ack && !may_elicit {
            return None;
        }
        let pn = self.take_pn();
        let mut n = packet::write_header(out, &self.header(PacketType::Data, pn))?;
        if send_ack && !self.recv_pns.is_empty() {
            let delay = self
                .largest_recv
                .map_or(0, |(_, t)| (now - t).as_micros() as u32);
            let fresh = self
                .recv_pns
                .iter()
                .rev()
                .take_while(|&(_, e)| e > self.acked_below)
                .count();
            let ranges = self
                .recv_pns
                .iter()
                .rev()
                .take(fresh.max(ACK_RANGES_SENT))
                .map(|(s, e)| (s, e - 1));
            if let Some(m) = packet::write_ack(out, n, delay, ranges) {
                n = m;
            }
            self.acked_below = self.recv_pns.iter().next_back().map_or(0, |(_, e)| e);
            self.ack_now = false;
            self.ack_needed = false;
            self.eliciting_since_ack = 0;
            self.timers[Timer::Ack as usize] = None;
        }
        if !may_elicit {
            packet::seal(&mut out[..n]);
            self.stats.packets_sent += 1;
            self.stats.bytes_sent += n as u64;
            return Some(n);
        }
        let mut sent = Sent {
            pn,
            time: now,
            size: 0,
            stream: None,
            max_data: false,
            mtu_probe: false,
            done: false,
            cwnd_limited: false,
        };
        let mut elicit = false;
        if self.max_data_pending && out.len() - n >= 9 {
            n = packet::write_u64_frame(out, n, frame_type::MAX_DATA, self.local_max_data)?;
            self.max_data_pending = false;
            sent.max_data = true;
            elicit = true;
        }
        if self.data_blocked_pending && out.len() - n >= 9 {
            n = packet::write_u64_frame(out, n, frame_type::DATA_BLOCKED, self.peer_max_data)?;
            self.data_blocked_pending = false;
            elicit = true;
        }
        let room = (out.len() - n)
            .saturating_sub(STREAM_OVERHEAD)
            .min(usize::from(u16::MAX)) as u64;
        if room > 0 {
            let range = if let Some((s, e)) = self.s_retx.pop_first(room) {
                self.stats.stream_bytes_retransmitted += e - s;
                Some((s, e))
            } else if has_new {
                let s = self.s_next;
                let e = s_end.min(self.peer_max_data).min(s + room);
                self.s_next = e;
                Some((s, e))
            } else {
                None
            };
            if let Some((s, e)) = range {
                let len = (e - s) as usize;
                let d = packet::write_stream_header(out, n, s, len as u16)?;
                self.sbuf
                    .read_at((s - self.s_base) as usize, &mut out[d..d + len]);
                n = d + len;
                sent.stream = Some((s, len as u32));
                elicit = true;
            }
        }
        if !elicit {
            n = packet::write_ping(out, n)?;
        }
        packet::seal(&mut out[..n]);
        sent.size = n as u32;
        self.on_packet_sent(now, sent);
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert_eq!(c.next_mtu_candidate(), Some(want), "{remote}");
        }
    }

    /// Sends whatever is due and returns the packet number of the last packet sent.
    fn transmit(c: &mut Connection, now: Time) -> u64 {
        let mut buf = vec![0u8; 65_536];
        c.poll_transmit(now, &mut buf, 1).expect("a packet");
        c.sent.back().expect("tracked").pn
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
        c.peer_max_data = 1 << 20;
        c.send(&[1; 1000]).unwrap();
        let original = transmit(&mut c, t0);
        // Probe timeout: the oldest unacknowledged data goes out again.
        let t1 = t0 + Duration::from_secs(1);
        c.on_loss_timer(t1);
        let copy = transmit(&mut c, t1);
        assert!(copy > original);
        assert_eq!(
            c.sent.back().unwrap().stream,
            c.sent.front().unwrap().stream
        );
        // More data, acknowledged with the original: the base moves past both, so the copy's
        // range ends below the base, not at it.
        c.send(&[3; 1000]).unwrap();
        let more = transmit(&mut c, t1);
        let t2 = t1 + Duration::from_millis(10);
        ack(&mut c, t2, original, original);
        ack(&mut c, t2, more, more);
        assert_eq!(c.sbuf.len(), 0, "the originals' ACKs release the data");
        ack(&mut c, t2, copy, copy);
        // New data must still be released once acknowledged.
        c.send(&[2; 1000]).unwrap();
        let next = transmit(&mut c, t2);
        ack(&mut c, t2 + Duration::from_millis(10), next, next);
        assert_eq!(
            c.sbuf.len(),
            0,
            "send buffer wedged: s_acked {:?}",
            c.s_acked
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

    /// A receiver that saw many gaps acknowledges only the newest ranges: an ACK stays small
    /// (spec §4.3). Sending every remembered range made each ACK of a lossy connection about
    /// 550 bytes for good, 17 % of the bytes a swarm node sent in the simulator.
    #[test]
    fn an_ack_carries_the_fresh_ranges_and_else_only_the_newest() {
        let t0 = Time::ZERO;
        let mut c = established(t0);
        // 30 packets received, each followed by a lost one: 30 ranges remembered.
        for k in 0..30u64 {
            c.recv_pns.insert(2 * k, 2 * k + 1);
        }
        c.largest_recv = Some((58, t0));
        c.acked_below = 59; // all of them acknowledged by earlier ACKs
        c.ack_now = true;
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
            c.recv_pns.iter().count(),
            30,
            "all ranges are still remembered"
        );
        // 12 more gapped packets before the next ACK (a lossy batch): every range holding a
        // packet not yet acknowledged goes out, more than 8 if need be.
        for k in 30..42u64 {
            c.recv_pns.insert(2 * k, 2 * k + 1);
        }
        c.largest_recv = Some((82, t0));
        c.ack_now = true;
        let (n, _) = c.poll_transmit(t0, &mut buf, 1).expect("an ACK");
        let ranges = ack_ranges(&buf[..n]);
        let want: Vec<(u64, u64)> = (30..42u64).rev().map(|k| (2 * k, 2 * k)).collect();
        assert_eq!(ranges, want, "all 12 fresh ranges");
    }
}
