//! One connection's state machine, orchestrated: the [`Connection`] composes its parts, holds
//! the handshake (client side of spec §5) and close and reset state (§7.1, §7.2), the
//! congestion controller and pacer (§8.1, §8.2) and the timers, and routes input, timeouts and
//! output between the parts:
//!
//! - [`timers`]: the timer table (spec §7, "Timers");
//! - [`recovery`]: packet numbers, sent packets, RTT, loss detection and probe timeouts
//!   (spec §7, RFC 9002), persistent congestion and loss discrimination (§8.1);
//! - [`ack_state`]: received packet numbers and the ACK policy (§4.3);
//! - [`send_stream`]: the send buffer, the peer's credit and the send allowance (§4.2, §8.3);
//! - [`recv_stream`]: reassembly, our credit and the out-of-order budget (§4.1, §8.3, §10);
//! - [`mtu`]: path MTU discovery (§8.4);
//! - [`builder`]: DATA packets and MTU probes out.
//!
//! It never sees a socket or a clock. The [`super::Endpoint`] routes datagrams to it and drains
//! its output.

mod ack_state;
mod builder;
mod mtu;
mod recovery;
mod recv_stream;
mod send_stream;
#[cfg(test)]
mod tests;
mod timers;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use st_proto::packet::{
    self, AckFrame, Frame, Frames, HEADER_LEN, Header, MIN_INITIAL_LEN, PARAMS_LEN, PacketType,
    Params, TOKEN_LEN,
};

use super::congestion::{Controller, Pacer};
use super::{CloseReason, Config, SendError, code};
use crate::rng::Rng;
use crate::time::Time;
use ack_state::AckState;
use mtu::{BASE_MTU, MTU_RETRY, Mtu};
use recovery::Recovery;
use recv_stream::RecvStream;
use send_stream::SendStream;
use timers::{Timer, Timers};

// The endpoint's tests bound fragmentation by it.
#[cfg(test)]
pub(crate) use recv_stream::MAX_STREAM_RANGES;

/// Largest `max_ack_delay_ms` a peer may announce (below 2^14, RFC 9000 §18.2).
const MAX_ACK_DELAY_MS: u16 = (1 << 14) - 1;
/// Packet numbers are below 2^62 (spec §7); a DATA packet with a larger one is dropped.
pub(crate) const MAX_PN: u64 = 1 << 62;
/// Longest interval between two INITIALs.
const HANDSHAKE_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Frames of a DATA packet parsed into a fixed array before anything acts on them: our own
/// packets carry at most five (ACK, MAX_DATA, DATA_BLOCKED, STREAM, PING or PADDING).
const PARSED_FRAMES: usize = 16;

/// What [`parse_frames`] found.
enum ParsedFrames {
    /// A frame is invalid (spec §4): the packet is dropped whole.
    Invalid,
    /// All frames valid, and this many of them in the array.
    All(usize),
    /// All frames valid, but more than [`PARSED_FRAMES`]: only the first ones are in the array.
    TooMany,
}

/// Parses the frames of a DATA packet's `body` into `out`, validating every one.
fn parse_frames<'a>(body: &'a [u8], out: &mut [Frame<'a>; PARSED_FRAMES]) -> ParsedFrames {
    let mut it = Frames::new(body);
    let mut n = 0;
    while let Some(f) = it.next() {
        let Ok(f) = f else {
            return ParsedFrames::Invalid;
        };
        if n == PARSED_FRAMES {
            // The rest is validated without being kept.
            return if it.any(|f| f.is_err()) {
                ParsedFrames::Invalid
            } else {
                ParsedFrames::TooMany
            };
        }
        out[n] = f;
        n += 1;
    }
    ParsedFrames::All(n)
}

/// The keep-alive interval: the configured one, at most a third of the (negotiated) idle
/// timeout (spec §7).
fn keep_alive_for(configured: Option<Duration>, idle: Duration) -> Option<Duration> {
    if idle.is_zero() {
        configured
    } else {
        configured.map(|k| k.min(idle / 3))
    }
}

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// It sent the INITIAL.
    Client,
    /// It accepted an INITIAL.
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

/// Events a connection reports to the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnEvent {
    /// The handshake completed (client) or the connection was accepted (server).
    Connected,
    /// A message can be read.
    Readable,
    /// A refused send may now succeed.
    Writable,
    /// The connection ended.
    Closed(CloseReason),
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

/// One connection: its parts, and the handshake, close and timer state that ties them together.
pub(crate) struct Connection {
    side: Side,
    state: State,
    /// Our connection id.
    pub(crate) local_cid: u64,
    /// The peer's connection id (0 until known).
    pub(crate) remote_cid: u64,
    /// The peer's address.
    pub(crate) remote: SocketAddr,
    local_params: Params,
    peer_token: Option<[u8; TOKEN_LEN]>,
    idle_timeout: Duration,
    keep_alive: Option<Duration>,
    peer_max_message: u32,
    // Handshake.
    cookie: [u8; 16],
    initial_pending: bool,
    initial_sent_at: Option<Time>,
    initial_attempts: u32,
    accept_pending: bool,
    confirmed: bool,
    // Sending packet numbers, loss recovery, congestion.
    recovery: Recovery,
    cc: Box<dyn Controller>,
    pacer: Pacer,
    // Receiving packet numbers.
    ack: AckState,
    // The stream.
    send: SendStream,
    recv: RecvStream,
    /// A violation to close with at the next timeout ([`Timer::Deferred`]).
    deferred_violation: Option<u32>,
    mtu: Mtu,
    // Misc.
    ping_pending: bool,
    close_frame: Option<(u32, Vec<u8>)>,
    close_pending: bool,
    close_last_sent: Option<Time>,
    timers: Timers,
    /// Events for the endpoint, oldest first.
    pub(crate) events: VecDeque<ConnEvent>,
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
        let mtu = Mtu::new(cfg, remote);
        let rng = Rng::new(seed);
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
            idle_timeout: cfg.idle_timeout,
            keep_alive: keep_alive_for(cfg.keep_alive, cfg.idle_timeout),
            peer_max_message: cfg.max_message,
            cookie: [0; 16],
            initial_pending: false,
            initial_sent_at: None,
            initial_attempts: 0,
            accept_pending: false,
            confirmed: false,
            recovery: Recovery::new(cfg.skip_period, rng, cfg.max_ack_delay),
            cc: cfg.congestion.build(mtu.get() as u64),
            pacer: Pacer::default(),
            ack: AckState::new(cfg.max_ack_delay),
            send: SendStream::new(cfg.send_buffer.max(2 * (cfg.max_message as usize + 4))),
            recv: RecvStream::new(cfg.max_message, window),
            deferred_violation: None,
            mtu,
            ping_pending: false,
            close_frame: None,
            close_pending: false,
            close_last_sent: None,
            timers: Timers::default(),
            events: VecDeque::new(),
            stats: ConnStats::default(),
        };
        c.timers.set(Timer::Idle, now + c.idle_timeout);
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
        self.send.on_peer_max_data(p.recv_window);
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
        self.recovery.set_peer_max_ack_delay(ack_delay);
        // The peer's max_udp_payload is never exceeded (spec §8.4).
        if let Some(mtu) = self.mtu.on_peer_max(p.max_udp_payload) {
            self.cc.on_mtu(mtu as u64);
        }
    }

    /// True if a peer's parameters are acceptable (spec §3.1): `max_udp_payload` ≥ 1200 and
    /// `recv_window` ≥ `max_message + 4` (§8.3). Otherwise the handshake is refused.
    pub(crate) fn params_valid(p: &Params) -> bool {
        usize::from(p.max_udp_payload) >= BASE_MTU && p.recv_window >= u64::from(p.max_message) + 4
    }

    // -------------------------------------------------------------------------------------
    // Getters

    /// True once the connection is gone for good (drained, or closed without a peer to tell).
    pub(crate) fn is_drained(&self) -> bool {
        self.state == State::Drained
    }

    /// True once the connection is closing, draining or drained.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(
            self.state,
            State::Closing | State::Draining | State::Drained
        )
    }

    /// True for a server connection whose client has not yet shown it got the ACCEPT.
    pub(crate) fn is_server_unconfirmed(&self) -> bool {
        self.side == Side::Server && !self.confirmed
    }

    /// The smoothed round-trip time (the initial estimate before any sample).
    pub(crate) fn srtt(&self) -> std::time::Duration {
        self.recovery.rtt().smoothed()
    }

    /// Counters and gauges.
    pub(crate) fn stats(&self) -> ConnStats {
        let mut s = self.stats;
        let recv = self.recv.assembler();
        s.cwnd = self.cc.window();
        s.in_flight = self.recovery.in_flight();
        s.srtt_us = self.srtt().as_micros() as u64;
        s.mtu = self.mtu.get();
        s.send_buffered = self.send.buffered() as u64;
        s.send_capacity = self.send.capacity();
        s.recv_capacity = recv.capacity();
        s.recv_buffered = recv.buffered() as u64;
        s.tracked_packets = self.recovery.tracked();
        s.next_pn = self.recovery.next_pn();
        s.recv_ranges = recv.ranges().len();
        s.s_next = self.send.next_offset();
        s.peer_max_data = self.send.peer_max_data();
        s.r_base = recv.base();
        s.local_max_data = self.recv.local_max_data();
        s
    }

    /// The earliest deadline: call [`Self::handle_timeout`] then.
    pub(crate) fn poll_timeout(&self) -> Option<Time> {
        self.timers.earliest()
    }

    /// Bytes queued and not yet acknowledged; zero once everything sent was acknowledged.
    pub(crate) fn unacked_bytes(&self) -> u64 {
        self.send.buffered() as u64
    }

    // -------------------------------------------------------------------------------------
    // Commands

    /// Queues a message (spec §6).
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
        if self.is_closed() || self.send.is_finishing() {
            return Err(SendError::Closed);
        }
        let len = head.len() + body_len;
        let limit = self.local_params.max_message.min(self.peer_max_message) as usize;
        if len > limit {
            return Err(SendError::TooLarge);
        }
        self.send
            .write(head, body_len, fill, self.cc.window(), self.recovery.rtt())
    }

    /// The next message, if one is complete.
    pub(crate) fn recv(&mut self) -> Option<Vec<u8>> {
        let mut msg = Vec::new();
        self.recv_into(&mut msg).then_some(msg)
    }

    /// Like [`Connection::recv`], into `out` (whose allocation is reused).
    pub(crate) fn recv_into(&mut self, out: &mut Vec<u8>) -> bool {
        let closed = self.is_closed();
        if !self.recv.read(out, closed) {
            return false;
        }
        // The next message may be one above our limit whose bytes all arrived while it was
        // not the head: no more stream bytes will come to find it, so it is found here (and
        // the connection closed at the next timeout, which is now).
        if self.recv.head_too_large() && !self.is_closed() {
            self.deferred_violation = Some(code::MESSAGE_TOO_LARGE);
            self.timers.set(Timer::Deferred, Time::ZERO);
        }
        true
    }

    /// Closes after every byte written so far was acknowledged (spec §7.1).
    pub(crate) fn finish(&mut self, now: Time) {
        self.send.finish();
        self.maybe_finish(now);
    }

    fn maybe_finish(&mut self, now: Time) {
        if self.send.is_finishing() && self.send.is_empty() && self.state == State::Established {
            self.close(now, code::NO_ERROR, b"", CloseReason::Local(code::NO_ERROR));
        }
    }

    /// Closes with `code` and `reason` (spec §7.1): CLOSE goes out, then the connection is
    /// closing for 3 × PTO. `why` is reported in [`ConnEvent::Closed`].
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
        self.timers.clear_all();
        self.timers
            .set(Timer::Close, now + self.recovery.pto_base() * 3);
        self.events.push_back(ConnEvent::Closed(why));
    }

    fn enter_drained(&mut self, why: CloseReason) {
        let was_closed = self.is_closed();
        self.state = State::Drained;
        self.timers.clear_all();
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

    /// A RETRY with a cookie (spec §5.2): the INITIAL goes again, carrying it.
    pub(crate) fn handle_retry(&mut self, cookie: [u8; 16]) {
        if self.state == State::Handshake && self.side == Side::Client && cookie != self.cookie {
            self.cookie = cookie;
            self.initial_pending = true;
            self.initial_attempts = 0;
            self.recovery.reset_pto_count();
        }
    }

    /// An ACCEPT (spec §5.3): the client's handshake completes.
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
            self.recovery.on_handshake_rtt(now - t);
        }
        self.apply_peer_params(params);
        self.state = State::Established;
        self.confirmed = true;
        self.initial_pending = false;
        self.recovery.reset_pto_count();
        self.ping_pending = true;
        self.timers.clear(Timer::Loss);
        self.on_received(now);
        self.events.push_back(ConnEvent::Connected);
    }

    /// A repeated INITIAL for this (server) connection: ACCEPT again until confirmed.
    pub(crate) fn handle_initial_again(&mut self) {
        if self.side == Side::Server && !self.confirmed && self.state == State::Established {
            self.accept_pending = true;
        }
    }

    /// A RESET (spec §7.2): with the peer's token, the connection is dropped at once.
    pub(crate) fn handle_reset(&mut self, token: &[u8; TOKEN_LEN]) {
        if self.peer_token.as_ref() == Some(token) && self.state != State::Drained {
            self.enter_drained(CloseReason::Reset);
        }
    }

    /// A CLOSE from the peer (spec §7.1): draining for 3 × PTO.
    pub(crate) fn handle_close(&mut self, now: Time, code: u32, reason: &[u8]) {
        match self.state {
            State::Draining | State::Drained => {}
            State::Closing => {
                // Both sides closed: drain.
                self.state = State::Draining;
            }
            State::Handshake | State::Established => {
                self.state = State::Draining;
                self.timers.clear_all();
                self.timers
                    .set(Timer::Close, now + self.recovery.pto_base() * 3);
                self.events.push_back(ConnEvent::Closed(CloseReason::Peer {
                    code,
                    reason: reason.to_vec(),
                }));
            }
        }
    }

    fn on_received(&mut self, now: Time) {
        // RFC 9000 §10.1: the idle timeout is at least 3 PTOs.
        let idle = self.idle_timeout.max(self.recovery.pto_base() * 3);
        self.timers.set(Timer::Idle, now + idle);
    }

    /// A DATA packet for this connection (spec §4). Invalid frame sequences are dropped whole.
    /// The frames are parsed once, into a fixed array, and validated, budgeted and dispatched
    /// from there; a packet of more than [`PARSED_FRAMES`] frames (spec §4 sets no limit) is
    /// walked from its bytes again for each.
    pub(crate) fn handle_data(&mut self, now: Time, hdr: &Header, frames: &[u8]) {
        match self.state {
            State::Draining | State::Drained | State::Handshake => return,
            State::Closing => {
                let pto = self.recovery.pto_base();
                if self.close_last_sent.is_none_or(|t| now >= t + pto) {
                    self.close_pending = true;
                }
                return;
            }
            State::Established => {}
        }
        let pn = hdr.pn;
        if pn >= MAX_PN {
            return;
        }
        let mut parsed = [Frame::Padding(0); PARSED_FRAMES];
        match parse_frames(frames, &mut parsed) {
            ParsedFrames::Invalid => {}
            ParsedFrames::All(n) => self.on_data(now, pn, parsed[..n].iter().copied()),
            ParsedFrames::TooMany => self.on_data(now, pn, Frames::new(frames).flatten()),
        }
    }

    /// A DATA packet `pn` whose `frames` are all valid: duplicates and packets that would
    /// fragment the receive buffer too far are dropped, the rest acknowledged and dispatched.
    fn on_data<'a>(&mut self, now: Time, pn: u64, frames: impl Iterator<Item = Frame<'a>> + Clone) {
        if self.ack.is_duplicate(pn) {
            self.ack.ack_immediately();
            return;
        }
        if !self.recv.stream_ranges_fit(frames.clone()) {
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
        let out_of_order = self.ack.on_packet(now, pn);
        let mut eliciting = false;
        let mut pinged = false;
        for f in frames {
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
                    let closed = self.is_closed();
                    if let Err(c) = self.recv.on_stream(offset, data, closed) {
                        self.violation(now, c);
                        return;
                    }
                }
                Frame::MaxData(v) => {
                    eliciting = true;
                    self.send.on_peer_max_data(v);
                }
                Frame::DataBlocked(_) => {
                    eliciting = true;
                    self.recv.request_max_data();
                }
            }
        }
        // ACK frequency (spec §4.3): every ACK_EVERY ack-eliciting packets, at once on
        // reordering, a duplicate or a PING (loss and MTU probes want an answer now), else
        // after a quarter of the round trip (at least 1 ms, at most max_ack_delay).
        if eliciting
            && self.ack.on_eliciting(out_of_order || pinged)
            && self.timers.get(Timer::Ack).is_none()
        {
            let delay = self.ack.ack_delay(self.recovery.rtt());
            self.timers.set(Timer::Ack, now + delay);
        }
        if self.recv.poll_readable() {
            self.events.push_back(ConnEvent::Readable);
        }
    }

    /// Processes an ACK frame (RFC 9002 §A.7): recovery finds what it newly acknowledges, and
    /// each such packet is routed to the MTU part (a probe) or the controller, and to the send
    /// stream (its bytes). `Err` carries a CLOSE code.
    fn on_ack(&mut self, now: Time, ack: &AckFrame<'_>) -> Result<(), u32> {
        let newly = self.recovery.on_ack(now, ack, |p, rtt| {
            if let Some(l) = p.ack_largest {
                self.ack.on_ack_frame_seen(l);
            }
            if p.mtu_probe {
                if let Some(size) = self.mtu.on_probe_acked(p.pn) {
                    self.cc.on_mtu(size as u64);
                }
            } else {
                let app_limited = !p.cwnd_limited;
                self.cc
                    .on_ack(now, p.time, u64::from(p.size), app_limited, rtt);
            }
            if let Some((off, len)) = p.stream {
                self.send.on_acked(off, len);
            }
        })?;
        if !newly {
            return Ok(());
        }
        // Release acknowledged stream bytes from the send buffer.
        if self
            .send
            .release_acked(self.cc.window(), self.recovery.rtt())
        {
            self.events.push_back(ConnEvent::Writable);
        }
        self.detect_lost(now);
        self.recovery.reset_pto_count();
        self.recovery.drop_done_front();
        self.set_loss_timer();
        self.maybe_finish(now);
        Ok(())
    }

    /// Declares packets lost (RFC 9002 §6.1) and routes each: its stream bytes are queued
    /// again, a MAX_DATA it carried is due again, a lost MTU probe goes to the MTU part; then
    /// the controller hears of the congestion, if any (spec §8.1).
    fn detect_lost(&mut self, now: Time) {
        let mut probe_lost = None;
        let mut others_lost = false;
        let congestion = self.recovery.detect_lost(now, |p| {
            self.stats.packets_lost += 1;
            if let Some((off, len)) = p.stream {
                self.send.requeue(off, off + u64::from(len));
            }
            if p.max_data {
                self.recv.request_max_data();
            }
            if p.mtu_probe {
                probe_lost = Some(p.pn);
            } else {
                others_lost = true;
            }
        });
        // After the whole batch: whether the probe went down with other packets, in a loss
        // taken as congestion (spec §8.4).
        if let Some(pn) = probe_lost
            && self
                .mtu
                .on_probe_lost(pn, others_lost && congestion.is_some())
        {
            self.timers.set(Timer::MtuRetry, now + MTU_RETRY);
        }
        if let Some(e) = congestion {
            self.stats.congestion_events += 1;
            self.cc.on_congestion_event(now, e.sent, e.persistent);
        }
    }

    /// RFC 9002 §A.8.
    fn set_loss_timer(&mut self) {
        let t = if let Some(t) = self.recovery.loss_time() {
            Some(t)
        } else if self.state == State::Handshake {
            // INITIALs are cheap and the handshake must survive heavy loss: cap the backoff.
            self.initial_sent_at
                .map(|s| s + self.recovery.pto_backoff().min(HANDSHAKE_MAX_BACKOFF))
        } else {
            self.recovery.pto_deadline()
        };
        self.timers.set_opt(Timer::Loss, t);
    }

    /// Handles every timer due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Time) {
        for t in Timer::ALL {
            if !self.timers.take_expired(t, now) {
                continue;
            }
            match t {
                Timer::Loss => self.on_loss_timer(now),
                Timer::Ack => self.ack.on_ack_timer(),
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
                    self.timers.clear_all();
                    return;
                }
                Timer::Deferred => {
                    if let Some(code) = self.deferred_violation.take() {
                        self.violation(now, code);
                        return;
                    }
                }
                Timer::MtuRetry => {
                    if self.state == State::Established {
                        self.mtu.on_retry();
                    }
                }
            }
        }
    }

    fn on_loss_timer(&mut self, now: Time) {
        if self.recovery.loss_time_expired(now) {
            self.detect_lost(now);
            self.recovery.drop_done_front();
            self.set_loss_timer();
            return;
        }
        self.recovery.on_pto();
        if self.state == State::Handshake {
            self.initial_pending = true;
            return;
        }
        // Probe timeout (RFC 9002 §6.2.4): two ack-eliciting probes, carrying the oldest
        // unacknowledged data if there is any.
        if let Some((off, len)) = self.recovery.arm_probes() {
            self.send.requeue(off, off + u64::from(len));
        }
        // Black hole detection (RFC 8899 §4.3, spec §8.4).
        if self.recovery.pto_count() >= 2 && self.mtu.on_black_hole() {
            log::debug!(
                "connection {:x}: MTU black hole, back to {BASE_MTU}",
                self.local_cid
            );
            self.cc.on_mtu(BASE_MTU as u64);
            self.timers.set(Timer::MtuRetry, now + MTU_RETRY);
        }
        self.set_loss_timer();
    }

    // -------------------------------------------------------------------------------------
    // Output

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
                let pn = self.recovery.take_pn();
                let p = packet::Packet::Close {
                    hdr: self.header(PacketType::Close, pn),
                    code,
                    reason: &reason,
                };
                return packet::emit(&p, buf).ok().map(|n| (n, None));
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
                return packet::emit(&p, buf).ok().map(|n| (n, None));
            }
            State::Established => {}
        }
        if self.accept_pending {
            self.accept_pending = false;
            let p = packet::Packet::Accept {
                hdr: self.header(PacketType::Accept, 0),
                params: self.local_params,
            };
            return packet::emit(&p, buf).ok().map(|n| (n, None));
        }
        // Flow-control blocked? (spec §4.2)
        self.send.check_blocked();
        if let Some(n) = self.poll_mtu_probe(now, buf) {
            return Some((n, None));
        }
        let hold = self.mtu.probe_waits_for_room(
            buf.len(),
            self.send.next_offset(),
            self.confirmed,
            self.recovery.in_flight(),
            self.cc.window(),
        );
        let mtu = self.mtu.get();
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
}
