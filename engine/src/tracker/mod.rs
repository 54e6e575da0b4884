//! The tracker core (normative text: `spec/tracker.md`), sans-IO.
//!
//! It owns the swarm tables and answers one datagram at a time: [`Tracker::handle`] takes the
//! time, the source address and the bytes of a datagram, and writes the reply (if any) into a
//! caller's buffer. It reads no clock and touches no socket; the reactor does both. It speaks
//! two protocols on one port: native SwarmTorrent messages inside transport REQUEST packets,
//! and BitTorrent's BEP 15. Nothing on the request path allocates except the growth of the
//! tables themselves (amortised, and bounded by [`Config`]).
//!
//! Anti-spoofing (spec §2): a connection id carries its issue time and a keyed MAC of it and
//! the source address (`ids.rs`); an announce or scrape that quotes a wrong, expired or future
//! id gets no reply, a source that keeps doing so is ignored for a while (`offenders.rs`), and
//! the only thing an unvalidated source can get is a connect answer no larger than the connect
//! request it sent. A native reply is never larger than 3× its request (transport §9).

mod config;
mod ids;
mod offenders;
pub mod server;
mod swarm;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use slab::Slab;
use st_proto::packet::{self, Packet};
use st_proto::tracker::{
    self as wire, AnnounceResponseHead, Bep15Announced, Bep15Head, Bep15Request, Event,
    INFO_HASH_LEN, MAX_SCRAPE, NativeRequest, ScrapeEntry,
};
use zerocopy::IntoBytes;

pub use config::{Config, ConfigError};
use ids::Ids;
use offenders::Offenders;
use swarm::{Family, Swarm};

use crate::rng::Rng;
use crate::time::Time;
use crate::transport;

/// Largest reply the tracker writes: one datagram that crosses any path (spec §5).
pub const MAX_REPLY: usize = wire::MAX_REPLY_DATAGRAM;

/// Counters for the stats line and the Prometheus file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connect requests answered (both protocols).
    pub connects: u64,
    /// Announces answered.
    pub announces: u64,
    /// Scrapes answered.
    pub scrapes: u64,
    /// Requests dropped for a bad, expired or forged connection id.
    pub bad_connection_ids: u64,
    /// Datagrams dropped as malformed (runts, garbage, bad checksums, unknown kinds).
    pub malformed: u64,
    /// Announces whose peer could not be stored because a limit was reached.
    pub refused_by_limits: u64,
    /// Peers removed because they stopped announcing.
    pub expired: u64,
    /// Peers evicted to make room (spec §6).
    pub evicted: u64,
    /// Datagrams dropped unread because their source is ignored (spec §2.1).
    pub ignored: u64,
    /// Times a source was put on the ignore list for repeated bad connection ids.
    pub offenders: u64,
}

/// The tracker: swarm tables, connection-id keys and counters.
pub struct Tracker {
    config: Config,
    /// Swarm id prefix → slot in `swarms`. Kept apart from the swarms themselves so that the
    /// hash table's entries are 24 bytes, not 70 (a million swarms is the load we plan for).
    index: HashMap<[u8; INFO_HASH_LEN], u32>,
    swarms: Slab<Swarm>,
    peers: usize,
    ids: Ids,
    offenders: Offenders,
    rng: Rng,
    stats: Stats,
    next_housekeeping: Time,
}

/// What the tracker made of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Send `out[..n]` back to the source.
    Reply(usize),
    /// Send nothing.
    Drop,
}

impl Tracker {
    /// A tracker with `config`, keyed from `seed` (take it from the OS's random source in
    /// production, a constant in tests).
    pub fn new(config: Config, seed: u64) -> Tracker {
        let mut rng = Rng::new(seed);
        let ids = Ids::new(u64::from(config.key_rotation_secs), rng.next_u64());
        let offenders = Offenders::new(offenders::Limits {
            capacity: config.offender_table_size,
            threshold: config.offender_threshold.max(1),
            window_secs: config.offender_window_secs,
            ignore_secs: config.offender_ignore_secs,
        });
        Tracker {
            config,
            index: HashMap::new(),
            swarms: Slab::new(),
            peers: 0,
            ids,
            offenders,
            rng,
            stats: Stats::default(),
            next_housekeeping: Time::ZERO,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Addresses in the offender table (spec §2.1).
    pub fn offender_entries(&self) -> usize {
        self.offenders.len()
    }

    /// Number of swarms and of peers (both families) in the tables.
    pub fn sizes(&self) -> (usize, usize) {
        (self.index.len(), self.peers)
    }

    /// The figures of one swarm, by the first 20 bytes of its id: (seeders, leechers,
    /// completed).
    pub fn swarm_figures(&self, info_hash: &[u8; INFO_HASH_LEN]) -> Option<(u32, u32, u32)> {
        self.index
            .get(info_hash)
            .map(|&i| &self.swarms[i as usize])
            .map(|s| (s.seeders(), s.leechers(), s.completed))
    }

    /// When [`Tracker::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Time {
        self.next_housekeeping
    }

    /// Housekeeping: expires peers that stopped announcing, drops empty swarms, rotates the
    /// connection-id key. Cheap to call early.
    pub fn handle_timeout(&mut self, now: Time) {
        if now < self.next_housekeeping {
            return;
        }
        self.next_housekeeping = now + self.config.housekeeping_interval();
        // Retires keys that can no longer validate anything (acceptance does not depend on
        // it: spec §2 makes it a function of the time alone).
        self.ids.rotate(now);
        self.offenders.expire(secs(now));
        let deadline = secs(now).saturating_sub(self.config.peer_timeout_secs);
        let mut expired = 0;
        let swarms = &mut self.swarms;
        self.index.retain(|_, &mut i| {
            let s = &mut swarms[i as usize];
            expired += s.expire(deadline);
            let keep = !s.is_empty();
            if !keep {
                swarms.remove(i as usize);
            }
            keep
        });
        self.peers -= expired;
        self.stats.expired += expired as u64;
    }

    /// Handles one datagram from `src` and writes the reply, if any, into `out` (at least
    /// [`MAX_REPLY`] bytes). Never replies to something malformed or unauthenticated.
    pub fn handle(&mut self, now: Time, src: SocketAddr, data: &[u8], out: &mut [u8]) -> Outcome {
        let cap = out.len().min(MAX_REPLY);
        let out = &mut out[..cap];
        if self.offenders.is_ignored(canonical_ip(src.ip()), secs(now)) {
            self.stats.ignored += 1;
            return Outcome::Drop;
        }
        if wire::looks_like_bep15(data) {
            return self.handle_bep15(now, src, data, out);
        }
        let Ok(Packet::Request { hdr, payload }) = packet::parse(data) else {
            self.stats.malformed += 1;
            return Outcome::Drop;
        };
        // Answer inside a RESPONSE that echoes the requester and request ids, no larger than
        // 3× the REQUEST datagram (transport §9, spec §3.2), and than a tracker's largest reply.
        let out = &mut out[..wire::native_reply_budget(data.len()).min(cap)];
        match transport::respond(out, &hdr, data.len(), |body| {
            self.handle_native(now, src, payload, data.len(), body)
        }) {
            Some(n) => Outcome::Reply(n),
            None => Outcome::Drop,
        }
    }

    /// A native request payload; `request_len` is the whole datagram's size (the bound on a
    /// reply to an unvalidated source).
    fn handle_native(
        &mut self,
        now: Time,
        src: SocketAddr,
        payload: &[u8],
        request_len: usize,
        out: &mut [u8],
    ) -> Option<usize> {
        let Some(req) = wire::parse_native_request(payload) else {
            self.stats.malformed += 1;
            return None;
        };
        match req {
            NativeRequest::Connect => {
                // Header (32) + 16 ≤ the request's own header + 16: never an amplifier.
                self.stats.connects += 1;
                let id = self.ids.mint(now, src);
                let n = wire::emit_connect_response(out, id).ok()?;
                // The anti-amplification rule, checked rather than assumed.
                (packet::HEADER_LEN + n <= request_len).then_some(n)
            }
            NativeRequest::Announce(a, event) => {
                if !self.check_connection_id(now, src, a.connection_id.get()) {
                    return None;
                }
                self.stats.announces += 1;
                let mut key = [0u8; INFO_HASH_LEN];
                key.copy_from_slice(&a.swarm_id[..INFO_HASH_LEN]);
                let family = Family::of(src.ip());
                let peer_size = family.peer_len();
                let head = size_of::<AnnounceResponseHead>();
                let room = (out.len().saturating_sub(head)) / peer_size;
                let want = usize::from(a.numwant.get())
                    .min(usize::from(self.config.max_numwant))
                    .min(room);
                let seed = a.left.get() == 0;
                let (count, fig) = self.announce(
                    now,
                    key,
                    src,
                    a.port.get(),
                    seed,
                    event,
                    want,
                    &mut out[head..],
                )?;
                let h = AnnounceResponseHead {
                    kind: wire::kind::ANNOUNCED,
                    family: family.code(),
                    count: (count as u16).into(),
                    interval: self.config.interval_secs.into(),
                    seeders: fig.0.into(),
                    leechers: fig.1.into(),
                    completed: fig.2.into(),
                };
                out[..head].copy_from_slice(h.as_bytes());
                Some(head + count * peer_size)
            }
            NativeRequest::Scrape(cid, ids) => {
                if !self.check_connection_id(now, src, cid) {
                    return None;
                }
                self.stats.scrapes += 1;
                out[0] = wire::kind::SCRAPED;
                out[1] = ids.len() as u8;
                out[2..4].fill(0);
                let mut at = 4;
                for id in ids {
                    let mut key = [0u8; INFO_HASH_LEN];
                    key.copy_from_slice(&id[..INFO_HASH_LEN]);
                    at += wire::write(&mut out[at..], self.scrape_entry(&key).as_bytes()).ok()?;
                }
                Some(at)
            }
        }
    }

    fn handle_bep15(&mut self, now: Time, src: SocketAddr, data: &[u8], out: &mut [u8]) -> Outcome {
        let Some(req) = wire::parse_bep15_request(data) else {
            self.stats.malformed += 1;
            return Outcome::Drop;
        };
        let n = match req {
            Bep15Request::Connect(tid) => {
                self.stats.connects += 1;
                let id = self.ids.mint(now, src);
                wire::emit_bep15_connected(out, tid, id).ok()
            }
            Bep15Request::Announce(a, event) => {
                if !self.check_connection_id(now, src, a.connection_id.get()) {
                    return Outcome::Drop;
                }
                self.stats.announces += 1;
                let family = Family::of(src.ip());
                let head = size_of::<Bep15Announced>();
                let room = (out.len() - head) / family.peer_len();
                let asked = a.num_want.get();
                let asked = if asked < 0 {
                    usize::from(self.config.default_numwant)
                } else {
                    asked as usize
                };
                let want = asked.min(usize::from(self.config.max_numwant)).min(room);
                let seed = a.left.get() == 0;
                let port = a.port.get();
                if port == 0 {
                    self.stats.malformed += 1;
                    return Outcome::Drop;
                }
                let Some((count, fig)) = self.announce(
                    now,
                    a.info_hash,
                    src,
                    port,
                    seed,
                    event,
                    want,
                    &mut out[head..],
                ) else {
                    return Outcome::Drop;
                };
                let h = Bep15Announced {
                    action: wire::action::ANNOUNCE.into(),
                    transaction_id: a.transaction_id,
                    interval: self.config.interval_secs.into(),
                    leechers: fig.1.into(),
                    seeders: fig.0.into(),
                };
                out[..head].copy_from_slice(h.as_bytes());
                Some(head + count * family.peer_len())
            }
            Bep15Request::Scrape(cid, tid, hashes) => {
                if !self.check_connection_id(now, src, cid) {
                    return Outcome::Drop;
                }
                self.stats.scrapes += 1;
                let head = Bep15Head {
                    action: wire::action::SCRAPE.into(),
                    transaction_id: tid.into(),
                };
                out[..8].copy_from_slice(head.as_bytes());
                let mut at = 8;
                for h in hashes.iter().take(MAX_SCRAPE) {
                    let e = self.scrape_entry(h);
                    // BEP 15 order: seeders, completed, leechers (same as ours).
                    let Ok(n) = wire::write(&mut out[at..], e.as_bytes()) else {
                        break;
                    };
                    at += n;
                }
                Some(at)
            }
        };
        n.map_or(Outcome::Drop, Outcome::Reply)
    }

    fn scrape_entry(&self, key: &[u8; INFO_HASH_LEN]) -> ScrapeEntry {
        let (s, l, c) = self.swarm_figures(key).unwrap_or((0, 0, 0));
        ScrapeEntry {
            seeders: s.into(),
            completed: c.into(),
            leechers: l.into(),
        }
    }

    /// Records an announce and writes up to `want` peers of the requester's family into
    /// `out`. Returns the count written and the swarm's (seeders, leechers, completed).
    #[allow(clippy::too_many_arguments)]
    fn announce(
        &mut self,
        now: Time,
        key: [u8; INFO_HASH_LEN],
        src: SocketAddr,
        port: u16,
        seed: bool,
        event: Event,
        want: usize,
        out: &mut [u8],
    ) -> Option<(usize, (u32, u32, u32))> {
        let ip = canonical_ip(src.ip());
        let now_s = secs(now);
        if event == Event::Stopped {
            let Some(&slot) = self.index.get(&key) else {
                return Some((0, (0, 0, 0)));
            };
            let s = &mut self.swarms[slot as usize];
            if s.remove(ip, port) {
                self.peers -= 1;
            }
            let fig = (s.seeders(), s.leechers(), s.completed);
            if s.is_empty() {
                self.drop_swarm(&key, slot);
            }
            return Some((0, fig));
        }
        let slot = match self.index.get(&key) {
            Some(&slot) => slot,
            None => {
                if self.index.len() >= self.config.max_swarms {
                    // Spec §6: no new swarm past the limit; the request is still answered.
                    self.stats.refused_by_limits += 1;
                    return Some((0, (0, 0, 0)));
                }
                let slot = self.swarms.insert(Swarm::default()) as u32;
                self.index.insert(key, slot);
                slot
            }
        };
        let full = self.peers >= self.config.max_peers;
        let per_swarm = self.config.max_peers_per_swarm;
        let swarm = &mut self.swarms[slot as usize];
        match swarm.upsert(ip, port, seed, now_s, full, per_swarm, &mut self.rng) {
            swarm::Upsert::Updated { became_seed } => {
                if became_seed && event == Event::Completed {
                    swarm.completed = swarm.completed.saturating_add(1);
                }
            }
            swarm::Upsert::Inserted { evicted } => {
                if evicted {
                    self.stats.evicted += 1;
                } else {
                    self.peers += 1;
                }
                if event == Event::Completed && seed {
                    swarm.completed = swarm.completed.saturating_add(1);
                }
            }
            swarm::Upsert::Refused => self.stats.refused_by_limits += 1,
        }
        let count = swarm.select(ip, port, seed, want, &mut self.rng, out);
        let fig = (swarm.seeders(), swarm.leechers(), swarm.completed);
        if swarm.is_empty() {
            self.drop_swarm(&key, slot);
        }
        Some((count, fig))
    }

    fn drop_swarm(&mut self, key: &[u8; INFO_HASH_LEN], slot: u32) {
        self.index.remove(key);
        self.swarms.remove(slot as usize);
    }

    /// Checks a quoted connection id (spec §2); a bad one is counted against its source's
    /// address (spec §2.1).
    fn check_connection_id(&mut self, now: Time, src: SocketAddr, id: u64) -> bool {
        let ok = self.ids.check(now, src, id);
        if !ok {
            self.stats.bad_connection_ids += 1;
            if self.offenders.bad_id(canonical_ip(src.ip()), secs(now)) {
                self.stats.offenders += 1;
            }
        }
        ok
    }
}

fn secs(now: Time) -> u32 {
    u32::try_from(now.as_micros() / 1_000_000).unwrap_or(u32::MAX)
}

/// IPv4-mapped IPv6 addresses count as IPv4 (a dual-stack socket reports them).
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests;
