//! The endpoint: demultiplexes the datagrams of one socket by connection id to its connections
//! and owns their table, handles and events; the stateless handshake and reset
//! ([`handshake`]) and the request/response mode ([`reqresp`]) are its two other parts.
//!
//! No state is kept for a source address until it echoes a valid cookie; everything sent to an
//! unvalidated address is at most 3× what it sent (RFC 9000 §8.1).

mod handshake;
pub(super) mod reqresp;
mod schedule;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use slab::Slab;
use st_proto::packet::{self, Packet};

use super::connection::{ConnEvent, ConnStats, Connection};
use super::{CloseReason, Config, ConnHandle, Event, SendError, Transmit};
use crate::rng::Rng;
use crate::time::Time;

/// Counters of an endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams that failed to parse (including bad checksums).
    pub dropped_invalid: u64,
    /// RETRY packets sent.
    pub retries_sent: u64,
    /// INITIALs whose cookie did not validate.
    pub bad_cookies: u64,
    /// RESET packets sent.
    pub resets_sent: u64,
    /// Datagrams for unknown connections.
    pub unknown_cid: u64,
    /// REQUESTs received: an endpoint does not answer them (the tracker does, with
    /// [`reqresp::respond`]).
    pub requests_ignored: u64,
    /// Handshakes refused for invalid peer parameters (spec §3.1).
    pub bad_params: u64,
    /// Datagrams for a live connection id from an address other than its peer's (dropped).
    pub wrong_address: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Connections opened with [`Endpoint::connect`].
    pub connections_opened: u64,
    /// Connections accepted (an INITIAL with a valid cookie created one).
    pub connections_accepted: u64,
}

/// Most queued stateless datagrams (RETRY, RESET); more are dropped.
const STATELESS_QUEUE: usize = 1024;
/// The transport endpoint: all connections of one socket.
pub struct Endpoint {
    cfg: Config,
    rng: Rng,
    conns: Slab<Connection>,
    by_cid: HashMap<u64, usize>,
    by_initial: HashMap<(SocketAddr, u64), usize>,
    events: VecDeque<Event>,
    stateless: VecDeque<(SocketAddr, Vec<u8>)>,
    requests: reqresp::Requests,
    schedule: schedule::Schedule,
    /// Scratch list of slots whose timers are due (kept for its allocation).
    due: Vec<usize>,
    keys: handshake::Keys,
    generations: Vec<u32>,
    stats: EndpointStats,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("connections", &self.conns.len())
            .finish()
    }
}

impl Endpoint {
    /// An endpoint with this configuration; `seed` drives every random choice.
    pub fn new(cfg: Config, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let requests = reqresp::Requests::new(rng.nonzero());
        let secret = cfg.secret.unwrap_or_else(|| {
            let mut s = [0u8; 32];
            rng.fill(&mut s);
            s
        });
        Self {
            keys: handshake::Keys::new(secret, cfg.cookie_lifetime),
            cfg,
            rng,
            conns: Slab::new(),
            by_cid: HashMap::new(),
            by_initial: HashMap::new(),
            events: VecDeque::new(),
            stateless: VecDeque::new(),
            requests,
            schedule: schedule::Schedule::default(),
            due: Vec::new(),
            generations: Vec::new(),
            stats: EndpointStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Endpoint counters.
    pub fn endpoint_stats(&self) -> EndpointStats {
        self.stats
    }

    /// Number of live connections (the state a handshake flood must not grow).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    fn new_cid(&mut self) -> u64 {
        loop {
            let c = self.rng.nonzero();
            if !self.by_cid.contains_key(&c) {
                return c;
            }
        }
    }

    fn queue_stateless(&mut self, remote: SocketAddr, p: &Packet<'_>) -> bool {
        if self.stateless.len() >= STATELESS_QUEUE {
            return false;
        }
        let mut buf = vec![0u8; p.buffer_len()];
        if let Ok(n) = packet::emit(p, &mut buf) {
            buf.truncate(n);
            self.stateless.push_back((remote, buf));
            true
        } else {
            false
        }
    }

    fn insert(&mut self, c: Connection) -> usize {
        let k = self.conns.insert(c);
        if self.generations.len() <= k {
            self.generations.resize(k + 1, 0);
        }
        self.generations[k] = self.generations[k].wrapping_add(1);
        k
    }

    fn slot(&self, h: ConnHandle) -> Option<usize> {
        (self.generations.get(h.index) == Some(&h.generation) && self.conns.contains(h.index))
            .then_some(h.index)
    }

    fn get(&self, h: ConnHandle) -> Option<&Connection> {
        self.slot(h).and_then(|k| self.conns.get(k))
    }

    fn get_mut(&mut self, h: ConnHandle) -> Option<&mut Connection> {
        self.slot(h).and_then(|k| self.conns.get_mut(k))
    }

    /// After anything that may have changed connection `k`: its events are taken, a drained
    /// connection removed, and the rest filed under its next deadline and queued as ready.
    fn flush(&mut self, k: usize) {
        self.flush_events(k);
        if self.conns.contains(k) {
            self.schedule.mark_ready(k);
        }
    }

    /// Like [`Self::flush`], without queueing the connection as ready (it just said it has
    /// nothing to send).
    fn flush_events(&mut self, k: usize) {
        let Some(c) = self.conns.get_mut(k) else {
            return;
        };
        while let Some(e) = c.events.pop_front() {
            let h = ConnHandle {
                index: k,
                generation: self.generations[k],
            };
            self.events.push_back(match e {
                ConnEvent::Connected => Event::Connected(h),
                ConnEvent::Readable => Event::Readable(h),
                ConnEvent::Writable => Event::Writable(h),
                ConnEvent::Closed(r) => {
                    log::debug!("connection to {} closed ({r:?}): {:?}", c.remote, c.stats());
                    Event::Closed(h, r)
                }
            });
        }
        if c.is_drained() {
            self.remove(k);
        } else {
            self.schedule.set_deadline(k, c.poll_timeout());
        }
    }

    fn remove(&mut self, k: usize) {
        self.schedule.forget(k);
        if let Some(c) = self.conns.try_remove(k) {
            self.by_cid.remove(&c.local_cid);
            if self.by_initial.get(&(c.remote, c.remote_cid)) == Some(&k) {
                self.by_initial.remove(&(c.remote, c.remote_cid));
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Input

    /// Handles one received datagram from `remote`. Never panics on any input.
    pub fn handle(&mut self, now: Time, remote: SocketAddr, data: &[u8]) {
        self.stats.bytes_received += data.len() as u64;
        let p = match packet::parse(data) {
            Ok(p) => p,
            Err(_) => {
                self.stats.dropped_invalid += 1;
                return;
            }
        };
        let hdr = *p.header();
        let known = |s: &Self| {
            s.by_cid
                .get(&hdr.dcid)
                .copied()
                .filter(|&k| s.conns[k].remote == remote)
        };
        match p {
            Packet::Initial { cookie, params, .. } => {
                self.on_initial(now, remote, &hdr, cookie, &params);
            }
            Packet::Retry { cookie, .. } => {
                if let Some(k) = known(self) {
                    self.conns[k].handle_retry(cookie);
                    self.flush(k);
                }
            }
            Packet::Accept { params, .. } => {
                if let Some(k) = known(self) {
                    self.conns[k].handle_accept(now, hdr.scid, &params);
                    self.flush(k);
                }
            }
            Packet::Data { frames, .. } => {
                if let Some(k) = known(self) {
                    self.conns[k].handle_data(now, &hdr, frames);
                    self.flush(k);
                } else {
                    self.unroutable(remote, &hdr, data.len());
                }
            }
            Packet::Close { code, reason, .. } => {
                if let Some(k) = known(self) {
                    self.conns[k].handle_close(now, code, reason);
                    self.flush(k);
                } else {
                    // Spec §7.2: a CLOSE to an unknown cid is answered like DATA.
                    self.unroutable(remote, &hdr, data.len());
                }
            }
            Packet::Reset { token, .. } => {
                if let Some(k) = known(self) {
                    self.conns[k].handle_reset(&token);
                    self.flush(k);
                }
            }
            Packet::Request { .. } => self.stats.requests_ignored += 1,
            Packet::Response { payload, .. } => {
                if let Some(ev) = self.requests.on_response(remote, &hdr, payload) {
                    self.events.push_back(ev);
                }
            }
        }
    }

    /// A DATA or CLOSE that no connection takes from `remote`. A live cid from another address
    /// (spoofed, or a NAT rebinding) is dropped silently: a RESET would leak the live token
    /// and kill the connection. An unknown cid may get a stateless reset (spec §7.2).
    fn unroutable(&mut self, remote: SocketAddr, hdr: &packet::Header, len: usize) {
        if self.by_cid.contains_key(&hdr.dcid) {
            self.stats.wrong_address += 1;
        } else {
            self.stats.unknown_cid += 1;
            self.maybe_reset(remote, hdr, len);
        }
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        let mut due = std::mem::take(&mut self.due);
        self.schedule.take_due(now, &mut due);
        for k in due.drain(..) {
            if let Some(c) = self.conns.get_mut(k) {
                c.handle_timeout(now);
                self.flush(k);
            }
        }
        self.due = due;
        self.requests
            .handle_timeout(now, self.cfg.request_attempts, &mut self.events);
    }

    // -----------------------------------------------------------------------------------------
    // Output

    /// The earliest time [`Self::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        let c = self.schedule.earliest();
        let r = self.requests.poll_timeout();
        match (c, r) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Writes the next datagram (or GSO batch of same-size datagrams) into `buf`, which should
    /// hold at least the largest MTU times `max_segments` (64 KiB is enough for the defaults).
    pub fn poll_transmit(&mut self, now: Time, buf: &mut [u8]) -> Option<Transmit> {
        // Checked before popping: a datagram that does not fit `buf` stays queued.
        if self
            .stateless
            .front()
            .is_some_and(|(_, b)| b.len() <= buf.len())
            && let Some((remote, bytes)) = self.stateless.pop_front()
        {
            buf[..bytes.len()].copy_from_slice(&bytes);
            return Some(Transmit {
                remote,
                len: bytes.len(),
                segment_size: None,
            });
        }
        if let Some(t) = self
            .requests
            .poll_transmit(now, self.cfg.request_timeout, buf)
        {
            return Some(t);
        }
        // Connections that may have something to send, in turn: one that sends goes to the
        // back of the queue; one that has nothing leaves it until something changes for it.
        let max_seg = self.cfg.max_segments;
        while let Some(k) = self.schedule.next_ready() {
            let Some(c) = self.conns.get_mut(k) else {
                continue;
            };
            match c.poll_transmit(now, buf, max_seg) {
                Some((len, segment_size)) => {
                    let t = Transmit {
                        remote: c.remote,
                        len,
                        segment_size,
                    };
                    self.flush(k);
                    return Some(t);
                }
                // It may have set a pacing timer instead.
                None => self.flush_events(k),
            }
        }
        None
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // -----------------------------------------------------------------------------------------
    // Commands

    /// Opens a connection to `remote`; [`Event::Connected`] follows when the handshake is done.
    pub fn connect(&mut self, now: Time, remote: SocketAddr) -> ConnHandle {
        let cid = self.new_cid();
        let token = self.keys.reset_token(cid);
        let seed = self.rng.next_u64();
        let c = Connection::client(now, &self.cfg, cid, remote, token, seed);
        let k = self.insert(c);
        self.stats.connections_opened += 1;
        self.by_cid.insert(cid, k);
        self.flush(k);
        ConnHandle {
            index: k,
            generation: self.generations[k],
        }
    }

    /// Queues one message. Fails with [`SendError::Blocked`] when the send buffer is full.
    pub fn send(&mut self, h: ConnHandle, msg: &[u8]) -> Result<(), SendError> {
        let r = self.get_mut(h).ok_or(SendError::Closed)?.send(msg);
        self.flush(h.index);
        r
    }

    /// Queues one message made of `head` and `body_len` bytes that `fill` writes in place
    /// (into two slices: the send buffer may wrap), so a large body is not copied twice. The
    /// outer error is the transport's (as [`Endpoint::send`]); the inner one is `fill`'s, in
    /// which case nothing was queued.
    pub fn send_with<E>(
        &mut self,
        h: ConnHandle,
        head: &[u8],
        body_len: usize,
        fill: impl FnOnce(&mut [u8], &mut [u8]) -> Result<(), E>,
    ) -> Result<Result<(), E>, SendError> {
        let r = self
            .get_mut(h)
            .ok_or(SendError::Closed)?
            .send_with(head, body_len, fill);
        self.flush(h.index);
        r
    }

    /// Takes the next complete message, in order.
    pub fn recv(&mut self, h: ConnHandle) -> Option<Vec<u8>> {
        let m = self.get_mut(h)?.recv();
        // Reading may grant credit (MAX_DATA to send) or find a violation (a timer).
        self.flush(h.index);
        m
    }

    /// Like [`Endpoint::recv`], into `out` (cleared first; its allocation is reused, so a
    /// receive loop allocates nothing per message). False if no message is ready.
    pub fn recv_into(&mut self, h: ConnHandle, out: &mut Vec<u8>) -> bool {
        let got = self.get_mut(h).is_some_and(|c| c.recv_into(out));
        if got {
            self.flush(h.index);
        }
        got
    }

    /// Closes at once with an application code (spec §7.1).
    pub fn close(&mut self, now: Time, h: ConnHandle, code: u32, reason: &[u8]) {
        if let Some(c) = self.get_mut(h) {
            c.close(now, code, reason, CloseReason::Local(code));
            self.flush(h.index);
        }
    }

    /// Closes gracefully once everything sent so far is acknowledged.
    pub fn finish(&mut self, now: Time, h: ConnHandle) {
        if let Some(c) = self.get_mut(h) {
            c.finish(now);
            self.flush(h.index);
        }
    }

    /// Counters of a connection.
    pub fn stats(&self, h: ConnHandle) -> Option<ConnStats> {
        self.get(h).map(|c| c.stats())
    }

    /// A connection's smoothed round-trip time (the initial estimate before any sample).
    pub fn srtt(&self, h: ConnHandle) -> Option<std::time::Duration> {
        self.get(h).map(|c| c.srtt())
    }

    /// Bytes written with [`Self::send`] and not yet acknowledged.
    pub fn unacked(&self, h: ConnHandle) -> Option<u64> {
        self.get(h).map(|c| c.unacked_bytes())
    }

    /// `(local cid, remote cid)` of a connection.
    pub fn cids(&self, h: ConnHandle) -> Option<(u64, u64)> {
        self.get(h).map(|c| (c.local_cid, c.remote_cid))
    }

    /// Peer address of a connection.
    pub fn remote(&self, h: ConnHandle) -> Option<SocketAddr> {
        self.get(h).map(|c| c.remote)
    }

    /// True if the handle names a live connection.
    pub fn is_open(&self, h: ConnHandle) -> bool {
        self.get(h).is_some_and(|c| !c.is_closed())
    }

    /// True if a server connection has not yet heard from its client after ACCEPT.
    pub fn is_unconfirmed(&self, h: ConnHandle) -> bool {
        self.get(h).is_some_and(|c| c.is_server_unconfirmed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use st_proto::packet::{COOKIE_LEN, Header, PacketType, Params};

    /// A client and a server endpoint joined by perfect in-memory links (virtual time).
    struct Pair {
        c: Endpoint,
        s: Endpoint,
        ch: ConnHandle,
        sh: Option<ConnHandle>,
        caddr: SocketAddr,
        saddr: SocketAddr,
        now: Time,
        /// Every datagram the server sent, with its destination.
        server_out: Vec<(SocketAddr, Vec<u8>)>,
        /// Messages the server application received.
        server_msgs: Vec<Vec<u8>>,
        server_events: Vec<Event>,
        client_events: Vec<Event>,
        /// Rewrites each datagram before delivery (`true`: client to server).
        tamper: fn(bool, &mut Vec<u8>),
        /// Datagrams from the client are lost.
        client_muted: bool,
    }

    impl Pair {
        fn new(ccfg: Config, scfg: Config) -> Self {
            let p = Self::start(ccfg, scfg, |_, _| {});
            assert!(p.sh.is_some() && p.c.is_open(p.ch), "handshake done");
            p
        }

        fn start(ccfg: Config, scfg: Config, tamper: fn(bool, &mut Vec<u8>)) -> Self {
            let caddr: SocketAddr = "10.0.0.1:1000".parse().unwrap();
            let saddr: SocketAddr = "10.0.0.2:2000".parse().unwrap();
            let now = Time::from_micros(1_000_000);
            let mut c = Endpoint::new(ccfg, 1);
            let s = Endpoint::new(
                Config {
                    accept: true,
                    ..scfg
                },
                2,
            );
            let ch = c.connect(now, saddr);
            let mut p = Self {
                c,
                s,
                ch,
                sh: None,
                caddr,
                saddr,
                now,
                server_out: Vec::new(),
                server_msgs: Vec::new(),
                server_events: Vec::new(),
                client_events: Vec::new(),
                tamper,
                client_muted: false,
            };
            p.pump();
            p
        }

        /// Exchanges datagrams until both sides are quiet (no clock movement).
        fn pump(&mut self) {
            let mut buf = vec![0u8; 65_536];
            for _ in 0..10_000 {
                let mut moved = false;
                while let Some(t) = self.c.poll_transmit(self.now, &mut buf) {
                    moved = true;
                    let d: Vec<Vec<u8>> = t.datagrams(&buf).map(<[u8]>::to_vec).collect();
                    for mut d in d {
                        (self.tamper)(true, &mut d);
                        if !self.client_muted {
                            self.s.handle(self.now, self.caddr, &d);
                        }
                    }
                }
                while let Some(t) = self.s.poll_transmit(self.now, &mut buf) {
                    moved = true;
                    let d: Vec<Vec<u8>> = t.datagrams(&buf).map(<[u8]>::to_vec).collect();
                    for mut d in d {
                        (self.tamper)(false, &mut d);
                        if t.remote == self.caddr {
                            self.c.handle(self.now, self.saddr, &d);
                        }
                        self.server_out.push((t.remote, d));
                    }
                }
                while let Some(e) = self.s.poll_event() {
                    moved = true;
                    match &e {
                        Event::Connected(h) => self.sh = Some(*h),
                        Event::Readable(h) => {
                            while let Some(m) = self.s.recv(*h) {
                                self.server_msgs.push(m);
                            }
                        }
                        _ => {}
                    }
                    self.server_events.push(e);
                }
                while let Some(e) = self.c.poll_event() {
                    moved = true;
                    self.client_events.push(e);
                }
                if !moved {
                    return;
                }
            }
            panic!("pump did not settle");
        }

        /// Advances the clock by `d`, running timers and exchanging datagrams on the way.
        fn advance(&mut self, d: std::time::Duration) {
            let end = self.now + d;
            loop {
                let next = [self.c.poll_timeout(), self.s.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                match next {
                    Some(t) if t <= end => self.now = self.now.max(t),
                    _ => break,
                }
                self.c.handle_timeout(self.now);
                self.s.handle_timeout(self.now);
                self.pump();
            }
            self.now = end;
            self.c.handle_timeout(self.now);
            self.s.handle_timeout(self.now);
            self.pump();
        }

        /// A DATA datagram from the client's cid to the server's cid with this pn and frames.
        fn data_to_server(&mut self, pn: u64, frames: &[u8]) -> Vec<u8> {
            let (ccid, scid) = self.c.cids(self.ch).unwrap();
            let p = Packet::Data {
                hdr: Header {
                    ptype: PacketType::Data,
                    dcid: scid,
                    scid: ccid,
                    pn,
                },
                frames,
            };
            let mut buf = vec![0u8; 2048];
            let n = packet::emit(&p, &mut buf).unwrap();
            buf.truncate(n);
            buf
        }
    }

    #[test]
    fn huge_packet_number_is_dropped() {
        let mut p = Pair::new(Config::default(), Config::default());
        // pn = u64::MAX, then 2^62 (the first invalid one): both dropped, nothing panics.
        for pn in [u64::MAX, 1 << 62] {
            let d = p.data_to_server(pn, &[packet::frame_type::PING]);
            p.s.handle(p.now, p.caddr, &d);
            p.pump();
        }
        // The connection keeps working: a normal message goes through and the client does
        // not see an ACK for a packet it never sent (which it would treat as a violation).
        p.c.send(p.ch, b"hello").unwrap();
        p.pump();
        assert_eq!(p.server_msgs, vec![b"hello".to_vec()]);
        assert!(p.c.is_open(p.ch) && p.s.is_open(p.sh.unwrap()));
        let st = p.s.stats(p.sh.unwrap()).unwrap();
        assert!(st.packets_received >= 1);
    }

    #[test]
    fn stale_handle_never_names_a_new_connection() {
        let mut ep = Endpoint::new(Config::default(), 1);
        let remote: SocketAddr = "10.0.0.2:4000".parse().unwrap();
        let now = Time::from_micros(1);
        let h1 = ep.connect(now, remote);
        ep.close(now, h1, 0x100, b"");
        assert_eq!(
            ep.connection_count(),
            0,
            "closed before the handshake: gone at once"
        );
        let h2 = ep.connect(now, remote);
        assert_ne!(h1, h2);
        assert!(ep.is_open(h2) && !ep.is_open(h1));
        assert_eq!(ep.send(h1, b"x"), Err(SendError::Closed));
        assert!(ep.stats(h1).is_none() && ep.stats(h2).is_some());
    }

    fn stream_frame(offset: u64, data: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; packet::STREAM_OVERHEAD + data.len()];
        let at = packet::write_stream_header(&mut f, 0, offset, data.len() as u16).unwrap();
        f[at..].copy_from_slice(data);
        f
    }

    #[test]
    fn fragmented_stream_is_bounded() {
        use super::super::connection::MAX_STREAM_RANGES;
        let mut p = Pair::new(Config::default(), Config::default());
        let sh = p.sh.unwrap();
        let before = p.s.stats(sh).unwrap().packets_received;
        // 1-byte STREAM frames at every other offset, descending: each would be a new range.
        let n = 3 * MAX_STREAM_RANGES as u64;
        for i in 0..n {
            let d = p.data_to_server(1_000 + i, &stream_frame(2 * (n - i), b"x"));
            p.s.handle(p.now, p.caddr, &d);
        }
        let st = p.s.stats(sh).unwrap();
        assert_eq!(st.recv_ranges, MAX_STREAM_RANGES);
        assert_eq!(st.dropped_fragmented, n - MAX_STREAM_RANGES as u64);
        assert_eq!(
            st.packets_received - before,
            MAX_STREAM_RANGES as u64,
            "dropped packets are not acknowledged"
        );
        // Bytes that extend the in-order prefix are still taken.
        for (i, off) in [0u64, 1].into_iter().enumerate() {
            let d = p.data_to_server(10_000 + i as u64, &stream_frame(off, b"x"));
            p.s.handle(p.now, p.caddr, &d);
        }
        let st = p.s.stats(sh).unwrap();
        assert_eq!(st.recv_ranges, MAX_STREAM_RANGES + 1);
        assert_eq!(st.packets_received - before, MAX_STREAM_RANGES as u64 + 2);
        assert!(p.s.is_open(sh));
    }

    /// Rewrites a parameter field of an INITIAL (`true`) or ACCEPT and fixes the checksum.
    fn set_param(d: &mut [u8], initial: bool, at: usize, v: &[u8]) {
        let ptype = if initial {
            PacketType::Initial
        } else {
            PacketType::Accept
        };
        if packet::parse_header(d).is_ok_and(|h| h.ptype == ptype) {
            let base = packet::HEADER_LEN + if initial { COOKIE_LEN } else { 0 };
            d[base + at..base + at + v.len()].copy_from_slice(v);
            packet::seal(d);
        }
    }

    #[test]
    fn invalid_peer_params_are_refused() {
        // A client announcing max_udp_payload 1199: the server keeps no connection.
        let p = Pair::start(Config::default(), Config::default(), |to_s, d| {
            if to_s {
                set_param(d, true, 18, &1199u16.to_be_bytes());
            }
        });
        assert_eq!(p.s.connection_count(), 0);
        assert!(p.s.endpoint_stats().bad_params >= 1);
        // A client announcing recv_window < max_message + 4 (spec §8.3): refused too.
        let p = Pair::start(Config::default(), Config::default(), |to_s, d| {
            if to_s {
                set_param(d, true, 4, &(4u64 << 20).to_be_bytes());
            }
        });
        assert_eq!(p.s.connection_count(), 0);
        // A server sending such parameters in ACCEPT: the client closes with a violation.
        let p = Pair::start(Config::default(), Config::default(), |to_s, d| {
            if !to_s {
                set_param(d, false, 18, &512u16.to_be_bytes());
            }
        });
        assert!(!p.c.is_open(p.ch));
        assert!(p.client_events.iter().any(|e| matches!(
            e,
            Event::Closed(_, CloseReason::Violation(c)) if *c == super::super::code::PROTOCOL_VIOLATION
        )));
        assert!(
            !p.client_events
                .iter()
                .any(|e| matches!(e, Event::Connected(_)))
        );
    }

    #[test]
    fn peer_ack_delay_cannot_stretch_the_idle_timeout() {
        // The client announces max_ack_delay 65 535 ms; then it goes silent. The server's
        // connection must still time out near its own 30 s idle timeout, not after 3 × 65 s.
        let mut p = Pair::start(Config::default(), Config::default(), |to_s, d| {
            if to_s {
                set_param(d, true, 16, &u16::MAX.to_be_bytes());
            }
        });
        assert!(p.sh.is_some() && p.c.is_open(p.ch));
        p.client_muted = true;
        p.advance(std::time::Duration::from_secs(35));
        assert_eq!(p.s.connection_count(), 0, "server connection idled out");
        assert!(
            p.server_events
                .iter()
                .any(|e| matches!(e, Event::Closed(_, CloseReason::IdleTimeout)))
        );
    }

    /// A REQUEST to an endpoint is counted and not answered: the tracker is the one
    /// responder (spec §9, `reqresp::respond`).
    #[test]
    fn requests_to_an_endpoint_are_counted_not_answered() {
        let mut s = Endpoint::new(Config::default(), 3);
        let remote: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let now = Time::from_micros(1);
        let p = Packet::Request {
            hdr: Header {
                ptype: PacketType::Request,
                dcid: 0,
                scid: 9,
                pn: 1,
            },
            payload: &[7u8; 1200],
        };
        let mut buf = vec![0u8; 65_536];
        let n = packet::emit(&p, &mut buf).unwrap();
        s.handle(now, remote, &buf[..n]);
        assert_eq!(s.endpoint_stats().requests_ignored, 1);
        assert!(s.poll_event().is_none());
        assert!(s.poll_transmit(now, &mut buf).is_none());
    }

    /// A stateless datagram that does not fit the caller's buffer stays queued.
    #[test]
    fn a_queued_datagram_waits_for_a_buffer_that_fits() {
        let mut s = Endpoint::new(
            Config {
                accept: true,
                ..Config::default()
            },
            3,
        );
        let remote: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let now = Time::from_micros(1);
        let p = Packet::Initial {
            hdr: Header {
                ptype: PacketType::Initial,
                dcid: 0,
                scid: 9,
                pn: 1,
            },
            cookie: [0; COOKIE_LEN],
            params: Params {
                max_message: 1 << 20,
                recv_window: 2 << 20,
                idle_timeout_ms: 30_000,
                max_ack_delay_ms: 25,
                max_udp_payload: 1472,
                reset_token: [0; 16],
            },
            padding: packet::MIN_INITIAL_LEN - packet::HEADER_LEN - COOKIE_LEN - packet::PARAMS_LEN,
        };
        let mut buf = vec![0u8; 65_536];
        let n = packet::emit(&p, &mut buf).unwrap();
        s.handle(now, remote, &buf[..n]);
        let mut small = vec![0u8; 20];
        assert!(s.poll_transmit(now, &mut small).is_none());
        let t = s.poll_transmit(now, &mut buf).expect("RETRY still queued");
        assert_eq!(t.remote, remote);
        assert!(matches!(
            packet::parse(&buf[..t.len]),
            Ok(Packet::Retry { .. })
        ));
    }

    #[test]
    fn keep_alive_follows_a_shorter_negotiated_idle_timeout() {
        // The client asks for a 5 s idle timeout and sends no keep-alives itself; the server is
        // configured with a 10 s keep-alive. It must ping every 5/3 s so nothing idles out.
        let client = Config {
            idle_timeout: std::time::Duration::from_secs(5),
            keep_alive: None,
            ..Config::default()
        };
        let mut p = Pair::new(client, Config::default());
        p.advance(std::time::Duration::from_secs(60));
        assert!(p.c.is_open(p.ch), "client connection still up");
        assert!(p.s.is_open(p.sh.unwrap()), "server connection still up");
        assert!(
            !p.client_events
                .iter()
                .chain(&p.server_events)
                .any(|e| matches!(e, Event::Closed(..)))
        );
    }

    #[test]
    fn close_to_an_unknown_cid_gets_a_reset() {
        let mut s = Endpoint::new(Config::default(), 5);
        let remote: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let now = Time::from_micros(1);
        let mut buf = vec![0u8; 512];
        for (reason, resets) in [(&b"bye"[..], 0), (&[b'x'; 40][..], 1)] {
            let p = Packet::Close {
                hdr: Header {
                    ptype: PacketType::Close,
                    dcid: 77,
                    scid: 88,
                    pn: 3,
                },
                code: 0,
                reason,
            };
            let n = packet::emit(&p, &mut buf).unwrap();
            s.handle(now, remote, &buf[..n]);
            // A 41-byte CLOSE is not longer than a RESET: no answer; a 78-byte one is.
            assert_eq!(s.endpoint_stats().resets_sent, resets);
        }
        let t = s.poll_transmit(now, &mut buf).expect("RESET");
        match packet::parse(&buf[..t.len]) {
            Ok(Packet::Reset { hdr, token }) => {
                assert_eq!(hdr.dcid, 88);
                assert_eq!(token, s.keys.reset_token(77));
            }
            p => panic!("expected RESET, got {p:?}"),
        }
    }
}
