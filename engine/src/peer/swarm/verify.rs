//! Verification of completed fragments (spec `peer.md` §6): HAVE on a match; on a
//! mismatch a refetch, strikes and bans, or a refetch pinned to one peer.

use super::*;

impl SwarmCore {
    pub(super) fn fragment_done(
        &mut self,
        now: Time,
        ep: &mut Endpoint,
        store: &mut dyn Store,
        i: u32,
    ) {
        match store.verify(i) {
            Ok(Some(ok)) => self.fragment_verified(now, ep, i, ok),
            // Checked elsewhere: the driver reports the result.
            Ok(None) => {}
            Err(_) => self.fragment_verified(now, ep, i, false),
        }
    }

    /// The result of checking fragment `i`, whose blocks all arrived: announce it if it
    /// matched, fetch it again (and strike its sender) if not. Called by the swarm itself when
    /// the [`Store`] checks at once, and by the driver for a store that checks elsewhere.
    pub fn fragment_verified(&mut self, now: Time, ep: &mut Endpoint, i: u32, ok: bool) {
        if i >= self.picker.fragment_count() || self.picker.has(i) {
            return;
        }
        let contributors = self.contributors.remove(&i).unwrap_or_default();
        if ok {
            self.pinned.remove(&i);
            self.picker.verified(i);
            self.stats.downloaded += u64::from(self.fragment_len(i));
            self.left -= u64::from(self.fragment_len(i));
            let hs: Vec<ConnHandle> = self.sessions.keys().copied().collect();
            for h in hs {
                let s = self.sessions.get_mut(&h).expect("listed");
                if s.have.get(i) {
                    s.wanted = s.wanted.saturating_sub(1);
                }
                if s.peer_id.is_some() {
                    Self::send(ep, h, s, &Message::Have(i));
                }
                self.update_interest(ep, h);
            }
            return;
        }
        // Bad data: fetch the fragment again. Strike its sender only if it had one: with
        // several, an honest one cannot be told from the liar, so the next attempt is pinned
        // to a single peer instead (spec §6).
        self.stats.hash_failures += 1;
        self.picker.failed(i);
        if contributors.len() > 1 {
            log::debug!(
                "fragment {i} failed with {} senders; refetching it from one peer",
                contributors.len()
            );
            self.pinned.insert(i, None);
            return;
        }
        self.pinned.remove(&i);
        for addr in contributors {
            let strikes = self.strikes.entry(addr).or_default();
            *strikes += 1;
            if *strikes >= self.cfg.max_strikes {
                self.banned.insert(addr);
                let victims: Vec<ConnHandle> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.addr == addr)
                    .map(|(h, _)| *h)
                    .collect();
                for h in victims {
                    self.violation(ep, now, h, close_code::BANNED);
                }
            }
        }
    }
}
