//! Local (LAN) discovery, sans-IO (`spec/discovery.md` §3).
//!
//! A peer announces the swarms it serves or wants to a multicast group, eagerly at start (after
//! 0, 1, 2, 4 … seconds) and then every [`LanConfig::max_interval`]. A peer of the same swarm
//! that hears it connects to the announcer's listen port: the connection is the answer. Incoming
//! announces are parsed strictly, rate limited per source address with a bounded table, and
//! ignored when foreign, malformed or our own (multicast loops back to the sender).
//!
//! [`LanDiscovery`] reads no clock and owns no socket: the reactor hands it datagrams from the
//! multicast socket and sends what [`LanDiscovery::poll_transmit`] yields to every interface.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use st_proto::discovery::{emit_lan, parse_lan};

use crate::time::Time;
use crate::transport::Transmit;

/// The discovery UDP port.
pub const LAN_PORT: u16 = 6776;
/// The IPv4 group (administratively scoped, RFC 2365 organization-local range).
pub const LAN_GROUP_V4: Ipv4Addr = Ipv4Addr::new(239, 192, 83, 84);
/// The IPv6 group (transient, link-local scope).
pub const LAN_GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff12, 0, 0, 0, 0, 0, 0x5354, 0x4c44);

/// Settings of LAN discovery.
#[derive(Debug, Clone)]
pub struct LanConfig {
    /// Groups announced to (one announce per group per round).
    pub groups: Vec<SocketAddr>,
    /// The first gap between announces; it doubles each round up to `max_interval`.
    pub first_interval: Duration,
    /// The steady gap between announces.
    pub max_interval: Duration,
    /// Announces accepted from one source address in a burst.
    pub source_burst: u32,
    /// Announces accepted per source address per second, in the long run.
    pub source_rate: f64,
    /// Sources tracked for rate limiting (bounded memory); when full, the stalest is replaced.
    pub max_sources: usize,
    /// A peer already reported is not reported again for this long (it is connected or was
    /// dialled; reporting it on every announce would only make duplicate dials).
    pub report_again_after: Duration,
}

impl Default for LanConfig {
    fn default() -> Self {
        LanConfig {
            groups: vec![
                SocketAddr::V4(SocketAddrV4::new(LAN_GROUP_V4, LAN_PORT)),
                SocketAddr::V6(SocketAddrV6::new(LAN_GROUP_V6, LAN_PORT, 0, 0)),
            ],
            first_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(60),
            source_burst: 4,
            source_rate: 1.0,
            max_sources: 256,
            report_again_after: Duration::from_secs(60),
        }
    }
}

/// Counters of LAN discovery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LanStats {
    /// Announces sent (one per group).
    pub sent: u64,
    /// Datagrams received.
    pub received: u64,
    /// Datagrams that did not parse.
    pub malformed: u64,
    /// Announces over a source's rate.
    pub rate_limited: u64,
    /// Our own announces, looped back.
    pub own: u64,
    /// Announces for none of our swarms.
    pub foreign: u64,
    /// Peers reported to the swarm layer.
    pub found: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Time,
}

/// LAN discovery for the swarms of one process.
#[derive(Debug)]
pub struct LanDiscovery {
    cfg: LanConfig,
    peer_id: [u8; 16],
    listen_port: u16,
    swarms: Vec<[u8; 32]>,
    next_announce: Time,
    interval: Duration,
    /// Groups still to send to in this round.
    due: VecDeque<SocketAddr>,
    sources: HashMap<IpAddr, Bucket>,
    /// Peers reported, by peer id and swarm, with when.
    reported: HashMap<([u8; 16], [u8; 32]), Time>,
    found: VecDeque<([u8; 32], SocketAddr)>,
    buf: Vec<u8>,
    stats: LanStats,
    /// Where the next round's ids start in `swarms`: with more than
    /// [`st_proto::discovery::MAX_LAN_SWARMS`] swarms, each round announces the next ones
    /// (`spec/discovery.md` §3).
    cursor: usize,
    /// The ids the current round announces.
    round: Vec<[u8; 32]>,
}

/// Most peers kept waiting for [`LanDiscovery::poll_peer`].
const MAX_FOUND: usize = 1024;

impl LanDiscovery {
    /// Discovery for `swarms` (at most 16 are announced), for a peer with `peer_id`
    /// accepting connections on `listen_port`. The first announce is due at `now`.
    pub fn new(
        cfg: LanConfig,
        peer_id: [u8; 16],
        listen_port: u16,
        swarms: &[[u8; 32]],
        now: Time,
    ) -> LanDiscovery {
        LanDiscovery {
            interval: cfg.first_interval,
            cfg,
            peer_id,
            listen_port,
            swarms: swarms.to_vec(),
            next_announce: now,
            due: VecDeque::new(),
            sources: HashMap::new(),
            reported: HashMap::new(),
            found: VecDeque::new(),
            buf: Vec::new(),
            stats: LanStats::default(),
            cursor: 0,
            round: Vec::new(),
        }
    }

    /// The swarms to announce from now on. A changed set is announced at once, and the gap
    /// between announces starts again from `first_interval`.
    pub fn set_swarms(&mut self, now: Time, swarms: &[[u8; 32]]) {
        if self.swarms == swarms {
            return;
        }
        self.swarms = swarms.to_vec();
        self.cursor = 0;
        self.next_announce = now;
        self.interval = self.cfg.first_interval;
    }

    /// Counters.
    pub fn stats(&self) -> LanStats {
        self.stats
    }

    /// A datagram from the multicast socket.
    pub fn handle(&mut self, now: Time, from: SocketAddr, data: &[u8]) {
        self.stats.received += 1;
        let Ok(a) = parse_lan(data) else {
            self.stats.malformed += 1;
            return;
        };
        if !self.take_token(now, from.ip()) {
            self.stats.rate_limited += 1;
            return;
        }
        if a.header.peer_id == self.peer_id {
            self.stats.own += 1;
            return;
        }
        let addr = match from {
            SocketAddr::V4(v4) => {
                SocketAddr::V4(SocketAddrV4::new(*v4.ip(), a.header.listen_port.get()))
            }
            SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
                Some(ip) => SocketAddr::V4(SocketAddrV4::new(ip, a.header.listen_port.get())),
                None => SocketAddr::V6(SocketAddrV6::new(
                    *v6.ip(),
                    a.header.listen_port.get(),
                    0,
                    v6.scope_id(),
                )),
            },
        };
        let mut ours = false;
        for s in a.swarms {
            if !self.swarms.contains(s) {
                continue;
            }
            ours = true;
            let key = (a.header.peer_id, *s);
            if self
                .reported
                .get(&key)
                .is_some_and(|&t| now.saturating_since(t) < self.cfg.report_again_after)
            {
                continue;
            }
            if self.reported.len() >= self.cfg.max_sources * 4 {
                let horizon = self.cfg.report_again_after;
                self.reported
                    .retain(|_, t| now.saturating_since(*t) < horizon);
                if self.reported.len() >= self.cfg.max_sources * 4 {
                    continue;
                }
            }
            self.reported.insert(key, now);
            if self.found.len() < MAX_FOUND {
                self.found.push_back((*s, addr));
                self.stats.found += 1;
            }
        }
        if !ours {
            self.stats.foreign += 1;
        }
    }

    /// Token bucket per source address, in a bounded table.
    fn take_token(&mut self, now: Time, ip: IpAddr) -> bool {
        let (burst, rate) = (f64::from(self.cfg.source_burst), self.cfg.source_rate);
        if !self.sources.contains_key(&ip) && self.sources.len() >= self.cfg.max_sources {
            // Replace the source heard from longest ago.
            if let Some(old) = self
                .sources
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| *k)
            {
                self.sources.remove(&old);
            }
        }
        let b = self.sources.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let dt = now.saturating_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + dt * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// A peer of one of our swarms heard on the LAN: (swarm id, its listen address).
    pub fn poll_peer(&mut self) -> Option<([u8; 32], SocketAddr)> {
        self.found.pop_front()
    }

    /// When [`LanDiscovery::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.swarms.is_empty() || self.listen_port == 0 {
            None
        } else {
            Some(self.next_announce)
        }
    }

    /// Timers: an announce round when due.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.swarms.is_empty() || self.listen_port == 0 || now < self.next_announce {
            return;
        }
        self.due = self.cfg.groups.iter().copied().collect();
        // This round's ids: the next MAX_LAN_SWARMS of the list, round robin.
        let n = self.swarms.len();
        let take = n.min(st_proto::discovery::MAX_LAN_SWARMS);
        self.cursor %= n.max(1);
        self.round = (0..take)
            .map(|k| self.swarms[(self.cursor + k) % n])
            .collect();
        self.cursor = (self.cursor + take) % n;
        self.next_announce = now + self.interval;
        self.interval = (self.interval * 2).min(self.cfg.max_interval);
    }

    /// The next announce to send to a group, written into `buf`.
    pub fn poll_transmit(&mut self, _now: Time, buf: &mut [u8]) -> Option<Transmit> {
        let group = self.due.pop_front()?;
        if !emit_lan(self.peer_id, self.listen_port, &self.round, &mut self.buf)
            || self.buf.len() > buf.len()
        {
            self.due.clear();
            return None;
        }
        buf[..self.buf.len()].copy_from_slice(&self.buf);
        self.stats.sent += 1;
        Some(Transmit {
            remote: group,
            len: self.buf.len(),
            segment_size: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SWARM: [u8; 32] = [7; 32];

    fn lan(id: u8, port: u16) -> LanDiscovery {
        LanDiscovery::new(LanConfig::default(), [id; 16], port, &[SWARM], Time::ZERO)
    }

    fn sent(d: &mut LanDiscovery, now: Time) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        if d.poll_timeout().is_some_and(|t| t <= now) {
            d.handle_timeout(now);
        }
        while let Some(t) = d.poll_transmit(now, &mut buf) {
            out.push((t.remote, buf[..t.len].to_vec()));
        }
        out
    }

    #[test]
    fn announces_eagerly_then_backs_off() {
        let mut d = lan(1, 7000);
        let mut times = Vec::new();
        let mut now = Time::ZERO;
        while now < Time::ZERO + Duration::from_secs(400) {
            let out = sent(&mut d, now);
            if !out.is_empty() {
                assert_eq!(out.len(), 2, "one per group");
                assert!(out[0].0.is_ipv4() && out[1].0.is_ipv6());
                times.push(now.saturating_since(Time::ZERO).as_secs());
            }
            now = d.poll_timeout().unwrap();
        }
        assert_eq!(&times[..8], &[0, 1, 3, 7, 15, 31, 63, 123]);
        assert!(times.windows(2).all(|w| w[1] - w[0] <= 60));
        assert_eq!(d.stats().sent, 2 * times.len() as u64);
    }

    #[test]
    fn peers_of_our_swarm_are_reported_once_with_their_listen_port() {
        let mut a = lan(1, 7000);
        let mut b = lan(2, 8000);
        let from: SocketAddr = "10.0.0.2:6776".parse().unwrap();
        let out = sent(&mut b, Time::ZERO);
        a.handle(Time::ZERO, from, &out[0].1);
        assert_eq!(
            a.poll_peer(),
            Some((SWARM, "10.0.0.2:8000".parse().unwrap()))
        );
        // The IPv6 copy of the same round, and the next rounds: already reported.
        let v6: SocketAddr = "[fe80::2%3]:6776".parse().unwrap();
        a.handle(Time::ZERO, v6, &out[1].1);
        a.handle(Time::from_micros(2_000_000), from, &out[0].1);
        assert_eq!(a.poll_peer(), None);
        // Long after, it is reported again (it may have restarted).
        a.handle(Time::from_micros(61_000_000), from, &out[0].1);
        assert!(a.poll_peer().is_some());
    }

    #[test]
    fn own_foreign_malformed_and_flooding_announces_are_ignored() {
        let mut a = lan(1, 7000);
        let from: SocketAddr = "10.0.0.9:6776".parse().unwrap();
        let own = sent(&mut a, Time::ZERO);
        a.handle(Time::ZERO, from, &own[0].1);
        let mut other =
            LanDiscovery::new(LanConfig::default(), [3; 16], 9000, &[[8; 32]], Time::ZERO);
        let foreign = sent(&mut other, Time::ZERO);
        let from2: SocketAddr = "10.0.0.3:6776".parse().unwrap();
        a.handle(Time::ZERO, from2, &foreign[0].1);
        let from3: SocketAddr = "10.0.0.4:6776".parse().unwrap();
        a.handle(Time::ZERO, from3, b"BT-SEARCH * HTTP/1.1\r\n");
        let s = a.stats();
        assert_eq!((s.own, s.foreign, s.malformed, s.found), (1, 1, 1, 0));
        assert_eq!(a.poll_peer(), None);
        // A flood from one source: only the burst passes, then one per second.
        let mut flood =
            LanDiscovery::new(LanConfig::default(), [4; 16], 9001, &[[9; 32]], Time::ZERO);
        let f = sent(&mut flood, Time::ZERO);
        let src: SocketAddr = "10.0.0.5:6776".parse().unwrap();
        for _ in 0..100 {
            a.handle(Time::ZERO, src, &f[0].1);
        }
        assert_eq!(a.stats().rate_limited, 100 - 4);
        a.handle(Time::from_micros(1_000_000), src, &f[0].1);
        assert_eq!(a.stats().rate_limited, 100 - 4, "refilled after a second");
    }

    #[test]
    fn the_source_table_is_bounded() {
        let mut a = lan(1, 7000);
        let mut b = lan(2, 8000);
        let out = sent(&mut b, Time::ZERO);
        for i in 0..10_000u32 {
            let ip = Ipv4Addr::from(0x0a00_0000 + i);
            a.handle(
                Time::from_micros(u64::from(i)),
                SocketAddr::new(ip.into(), 1),
                &out[0].1,
            );
        }
        assert!(a.sources.len() <= LanConfig::default().max_sources);
        assert!(a.reported.len() <= LanConfig::default().max_sources * 4);
    }

    #[test]
    fn more_swarms_than_one_announce_holds_are_announced_in_turn() {
        let ids: Vec<[u8; 32]> = (0..40u8).map(|i| [i; 32]).collect();
        let mut d = LanDiscovery::new(LanConfig::default(), [1; 16], 4000, &ids, Time::ZERO);
        let mut seen = std::collections::HashSet::new();
        let mut now = Time::ZERO;
        for _ in 0..3 {
            for (_, bytes) in sent(&mut d, now) {
                let a = parse_lan(&bytes).unwrap();
                assert!(a.swarms.len() <= st_proto::discovery::MAX_LAN_SWARMS);
                seen.extend(a.swarms.iter().copied());
            }
            now = d.poll_timeout().unwrap();
        }
        assert_eq!(seen.len(), 40, "every swarm announced within three rounds");
    }

    #[test]
    fn a_changed_swarm_set_is_announced_at_once() {
        let mut d = lan(1, 4000);
        let t = Time::from_micros(1_500_000);
        let _ = sent(&mut d, Time::ZERO);
        let next = d.poll_timeout().unwrap();
        let _ = sent(&mut d, next);
        assert!(d.poll_timeout().unwrap() > t);
        d.set_swarms(t, &[SWARM, [9; 32]]);
        let out = sent(&mut d, t);
        assert!(!out.is_empty());
        let a = parse_lan(&out[0].1).unwrap();
        assert_eq!(a.swarms.len(), 2);
    }
}
