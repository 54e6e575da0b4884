//! A swarm's sessions: dialling, the greeting when a connection is up, the peers discovery
//! hands in, and the end of a session (violations, closes, stalled connections).

use super::*;

impl SwarmCore {
    pub(super) fn on_connected(&mut self, now: Time, ep: &mut Endpoint, h: ConnHandle) {
        let Some(addr) = ep.remote(h) else {
            return;
        };
        let outbound = self.sessions.contains_key(&h);
        if self.leaving {
            ep.close(now, h, close_code::LEAVING, b"");
            self.on_closed(h);
            return;
        }
        if !outbound {
            if self.banned.contains(&addr) || self.sessions.len() >= self.cfg.max_peers {
                let code = if self.banned.contains(&addr) {
                    close_code::BANNED
                } else {
                    close_code::FULL
                };
                ep.close(now, h, code, b"");
                return;
            }
            self.sessions
                .insert(h, Session::new(addr, false, self.picker.fragment_count()));
            self.connected.insert(addr);
        }
        let hs = Handshake {
            version: PEER_VERSION,
            capabilities: (if self.cfg.pex { CAP_PEX } else { 0 }
                | if self.cfg.suggest { CAP_SUGGEST } else { 0 })
            .into(),
            swarm_id: self.swarm_id,
            peer_id: self.peer_id,
            listen_port: self.listen_port.into(),
        };
        let mut map = vec![0u8; (self.picker.fragment_count() as usize).div_ceil(8)];
        for i in 0..self.picker.fragment_count() {
            if self.picker.has(i) {
                map[(i / 8) as usize] |= 0x80 >> (i % 8);
            }
        }
        let s = self.sessions.get_mut(&h).expect("inserted above");
        Self::send(ep, h, s, &Message::Handshake(&hs));
        Self::send(ep, h, s, &Message::HaveMap(&map));
    }

    pub(super) fn violation(&mut self, ep: &mut Endpoint, now: Time, h: ConnHandle, code: u32) {
        ep.close(now, h, code, b"");
        self.on_closed(h);
    }

    pub(super) fn on_closed(&mut self, h: ConnHandle) {
        let Some(s) = self.sessions.remove(&h) else {
            return;
        };
        for (b, _) in s.outstanding {
            self.picker.release(b);
        }
        self.unclaim(s.offered);
        for i in 0..self.picker.fragment_count() {
            if s.have.get(i) {
                self.picker.remove_availability(i);
            }
        }
        if let Some(id) = s.peer_id
            && self.by_peer.get(&id) == Some(&h)
        {
            self.by_peer.remove(&id);
        }
        // Two sessions with one address (both sides dialled; the duplicate is being closed):
        // the address stays connected while the other lives, or it would be dialled again,
        // found a duplicate again, and so on for ever.
        if !self.sessions.values().any(|o| o.addr == s.addr) {
            self.connected.remove(&s.addr);
        }
        self.unpin(s.addr);
        if self.optimistic == Some(h) {
            self.optimistic = None;
        }
    }

    /// Peers learnt from a tracker or elsewhere; they are dialled in random order. Returns
    /// how many were new (at most [`SwarmConfig::max_candidates`] wait at once).
    pub fn add_peers(&mut self, addrs: &[SocketAddr]) -> usize {
        let mut added = 0;
        for &a in addrs {
            let a = canonical(a);
            if self.candidates.len() >= self.cfg.max_candidates {
                break;
            }
            if a.port() != 0
                && !a.ip().is_unspecified()
                && !a.ip().is_multicast()
                && !self.banned.contains(&a)
                && !self.connected.contains(&a)
                && !self.candidates.contains(&a)
            {
                self.candidates.push(a);
                added += 1;
            }
        }
        added
    }

    /// Dials candidates, in random order, up to the peer limit.
    pub(super) fn dial(&mut self, now: Time, ep: &mut Endpoint) {
        while self.sessions.len() < self.cfg.max_peers && !self.candidates.is_empty() {
            let k = self.rng.below(self.candidates.len() as u64) as usize;
            let addr = self.candidates.swap_remove(k);
            if self.banned.contains(&addr) || self.connected.contains(&addr) {
                continue;
            }
            let h = ep.connect(now, addr);
            self.sessions
                .insert(h, Session::new(addr, true, self.picker.fragment_count()));
            self.connected.insert(addr);
            self.dialled.push(h);
        }
    }

    /// Drops the connections `stalled` names (their requests keep timing out while nothing
    /// arrives: dead in effect) and dials their peers again on fresh connections.
    pub(super) fn reconnect(&mut self, now: Time, ep: &mut Endpoint, stalled: Vec<ConnHandle>) {
        for h in stalled {
            if let Some(addr) = self.sessions.get(&h).map(|s| s.addr) {
                log::debug!("peer {addr}: requests keep timing out; reconnecting");
                ep.close(now, h, close_code::STALLED, b"");
                self.on_closed(h);
                self.candidates.push(addr);
            }
        }
    }

    /// Its HANDSHAKE (spec §3): the version, the swarm, no self-connection, one connection per pair of peers; then the first PEX.
    pub(super) fn on_handshake(
        &mut self,
        now: Time,
        ep: &mut Endpoint,
        h: ConnHandle,
        hs: &Handshake,
    ) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        if s.peer_id.is_some() || hs.version != PEER_VERSION {
            return self.violation(ep, now, h, close_code::VIOLATION);
        }
        if hs.swarm_id != self.swarm_id {
            return self.violation(ep, now, h, close_code::WRONG_SWARM);
        }
        if hs.peer_id == self.peer_id {
            let addr = s.addr;
            self.banned.insert(addr);
            return self.violation(ep, now, h, close_code::SELF);
        }
        if let Some(&other) = self.by_peer.get(&hs.peer_id) {
            // Two connections between the same pair: the one opened by the peer with
            // the smaller id survives (spec §3).
            let keep_outbound = self.peer_id < hs.peer_id;
            let this_outbound = s.outbound;
            if this_outbound == keep_outbound {
                ep.close(now, other, close_code::DUPLICATE, b"");
                self.on_closed(other);
            } else {
                return self.violation(ep, now, h, close_code::DUPLICATE);
            }
        }
        let s = self.sessions.get_mut(&h).expect("checked");
        s.peer_id = Some(hs.peer_id);
        s.listen_port = hs.listen_port.get();
        s.pex = self.cfg.pex && hs.capabilities.get() & CAP_PEX != 0;
        s.suggest = self.cfg.suggest && hs.capabilities.get() & CAP_SUGGEST != 0;
        self.by_peer.insert(hs.peer_id, h);
        // The first PEX goes right after the handshake: a peer that learnt of only us
        // learns of the rest at once.
        if s.pex {
            let current = self.reachable_set();
            self.send_pex(now, ep, h, &current);
        }
    }
}
