//! Upload slots (spec `peer.md` §5): choke rounds that give slots to the peers that send
//! fastest and to those that hold least, one optimistic unchoke, choke and unchoke.

use super::*;

impl SwarmCore {
    pub(super) fn unchoke(&mut self, ep: &mut Endpoint, h: ConnHandle) {
        if let Some(s) = self.sessions.get_mut(&h)
            && s.choking
        {
            s.choking = false;
            // Suggestions first: the peer fills its pipeline as soon as it reads the UNCHOKE,
            // and should pick them then, not fragments of its own choosing.
            self.offer(ep, h);
            if let Some(s) = self.sessions.get_mut(&h) {
                Self::send(ep, h, s, &Message::Unchoke);
            }
        }
    }

    pub(super) fn choke(&mut self, ep: &mut Endpoint, h: ConnHandle) {
        if let Some(s) = self.sessions.get_mut(&h)
            && !s.choking
        {
            s.choking = true;
            // Fragments asked of us but not served yet go back to the unclaimed set too.
            let mut back = std::mem::take(&mut s.offered);
            back.extend(s.serving.drain(..).map(|x| x.block.fragment));
            Self::send(ep, h, s, &Message::Choke);
            self.unclaim(back);
        }
    }

    /// A choke round (spec §5): upload slots to the peers that deserve them, one optimistic
    /// unchoke, the rest choked.
    pub(super) fn choke_round(&mut self, now: Time, ep: &mut Endpoint, handles: Vec<ConnHandle>) {
        self.next_choke = now + self.cfg.choke_interval;
        self.rounds += 1;
        if log::log_enabled!(log::Level::Debug) {
            for (h, s) in &self.sessions {
                log::trace!("peer {}: transport {:?}", s.addr, ep.stats(*h));
                log::debug!(
                    "peer {}: choked {} choking {} interested {} interesting {} outstanding {} queued {} serving {} rate {:.0} B/s",
                    s.addr,
                    s.choked,
                    s.choking,
                    s.interested,
                    s.interesting,
                    s.outstanding.len(),
                    s.queued.len(),
                    s.serving.len(),
                    s.rate
                );
            }
        }
        // Upload slots (spec §5): some to the interested peers that send to us fastest
        // (reciprocation), the rest, and every slot of a seed, to those that hold the fewest
        // fragments (the swarm is done when its slowest member is); random order among equals;
        // plus one optimistic unchoke rotated every third round.
        let mut interested: Vec<(f64, u32, u64, ConnHandle)> = handles
            .iter()
            .filter_map(|h| {
                let s = &self.sessions[h];
                (s.interested && s.peer_id.is_some())
                    .then(|| (s.rate, s.have.count(), self.rng.next_u64(), *h))
            })
            .collect();
        let by_rate = if self.picker.complete() {
            0
        } else {
            self.cfg.reciprocal_slots.min(self.cfg.upload_slots)
        };
        interested.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.2.cmp(&b.2)));
        let mut keep: HashSet<ConnHandle> = interested.iter().take(by_rate).map(|x| x.3).collect();
        let mut rest: Vec<&(f64, u32, u64, ConnHandle)> =
            interested.iter().filter(|x| !keep.contains(&x.3)).collect();
        rest.sort_by(|a, b| a.1.cmp(&b.1).then(a.2.cmp(&b.2)));
        keep.extend(
            rest.iter()
                .take(self.cfg.upload_slots - keep.len())
                .map(|x| x.3),
        );
        if self.rounds % 3 == 1
            || self
                .optimistic
                .is_none_or(|o| !self.sessions.contains_key(&o))
        {
            let rest: Vec<ConnHandle> = interested
                .iter()
                .map(|x| x.3)
                .filter(|h| !keep.contains(h))
                .collect();
            self.optimistic =
                (!rest.is_empty()).then(|| rest[self.rng.below(rest.len() as u64) as usize]);
        }
        for h in handles {
            if keep.contains(&h) || self.optimistic == Some(h) {
                self.unchoke(ep, h);
                // A peer kept unchoked gets its suggestions topped up (stale ones dropped; a
                // fetcher that became a seed starts suggesting).
                self.offer(ep, h);
            } else {
                self.choke(ep, h);
            }
            self.fill_requests(now, ep, h);
        }
    }

    /// INTERESTED: a free upload slot goes to it at once, and a seed suggests.
    pub(super) fn on_interested(&mut self, ep: &mut Endpoint, h: ConnHandle) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        s.interested = true;
        if self.slots_used() < self.cfg.upload_slots {
            self.unchoke(ep, h);
        }
        self.offer(ep, h);
    }

    /// Upload slots in use: unchoked peers that want something, the optimistic one aside.
    fn slots_used(&self) -> usize {
        self.sessions
            .iter()
            .filter(|(h, s)| !s.choking && s.interested && self.optimistic != Some(**h))
            .count()
    }

    /// A slot may have come free (its peer left or lost interest): it goes at once to the
    /// interested, choked peer holding the fewest fragments, not at the next choke round up
    /// to `choke_interval` later (spec peer.md §5). Without this, fetchers that outlived the
    /// first to finish waited seconds for the seed.
    pub(super) fn fill_free_slots(&mut self, ep: &mut Endpoint) {
        if self.leaving {
            return;
        }
        let free = self.cfg.upload_slots.saturating_sub(self.slots_used());
        for _ in 0..free {
            let waiting: Vec<(u32, ConnHandle)> = self
                .sessions
                .iter()
                .filter(|(h, s)| {
                    s.choking && s.interested && s.peer_id.is_some() && self.optimistic != Some(**h)
                })
                .map(|(h, s)| (s.have.count(), *h))
                .collect();
            let Some(fewest) = waiting.iter().map(|w| w.0).min() else {
                return;
            };
            // Random among equals, as in a choke round.
            let equal: Vec<ConnHandle> = waiting
                .iter()
                .filter(|w| w.0 == fewest)
                .map(|w| w.1)
                .collect();
            let h = equal[self.rng.below(equal.len() as u64) as usize];
            self.unchoke(ep, h);
        }
    }
}
