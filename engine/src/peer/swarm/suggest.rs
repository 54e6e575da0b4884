//! A seed's suggestions (spec `peer.md` §5): which fragments it offers each peer it serves,
//! so that every fragment leaves it once before any leaves twice.

use super::*;

impl SwarmCore {
    /// Takes fragment `i` out of the unclaimed set (it is served, suggested, or held elsewhere).
    pub(super) fn claim(&mut self, i: u32) {
        let Some(&k) = self.unclaimed_at.get(i as usize) else {
            return;
        };
        if k == u32::MAX {
            return;
        }
        let last = self.unclaimed.pop().expect("non-empty: i is in it");
        if last != i {
            self.unclaimed[k as usize] = last;
            self.unclaimed_at[last as usize] = k;
        }
        self.unclaimed_at[i as usize] = u32::MAX;
    }

    /// Puts back suggestions a peer will not take up (choked, or gone), unless served since.
    pub(super) fn unclaim(&mut self, fragments: Vec<u32>) {
        for i in fragments {
            if self.served.get(i as usize) == Some(&0)
                && self.unclaimed_at.get(i as usize) == Some(&u32::MAX)
            {
                self.unclaimed_at[i as usize] = self.unclaimed.len() as u32;
                self.unclaimed.push(i);
            }
        }
    }

    /// A seed's suggestions to an unchoked, interested peer (spec §5): up to
    /// [`SUGGEST_AHEAD_BYTES`] of fragments (4 to 32) not taken up yet, each one no other peer of ours has and
    /// that was not served nor suggested before, so that what the seed uploads first is
    /// different for every peer.
    pub(super) fn offer(&mut self, ep: &mut Endpoint, h: ConnHandle) {
        if !self.cfg.suggest || !self.picker.complete() {
            return;
        }
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        if !s.suggest || s.choking || !s.interested {
            return;
        }
        // Suggestions that went stale: the fragment left us for someone else, or a peer
        // (maybe this one) has it and this one may then never ask us for it.
        let (picker, served) = (&self.picker, &self.served);
        s.offered
            .retain(|&i| served.get(i as usize) == Some(&0) && picker.availability(i) == 0);
        let mut scanned = 0;
        // Also no more than a share of the fragments that leaves some for every slot twice
        // over, so that peers unchoked later still get suggestions of their own.
        let share = u64::from(self.geometry.count()) / (2 * self.cfg.upload_slots.max(1) as u64);
        let ahead = (SUGGEST_AHEAD_BYTES / u64::from(self.geometry.fragment_length().max(1)))
            .min(share)
            .clamp(SUGGEST_AHEAD_MIN as u64, MAX_SUGGESTED as u64) as usize;
        while s.offered.len() < ahead && scanned < SUGGEST_SCAN {
            // Taken out either way: a fragment another peer has needs no spreading by us.
            let Some(i) = self.unclaimed.pop() else {
                return;
            };
            self.unclaimed_at[i as usize] = u32::MAX;
            scanned += 1;
            // Availability counts this peer too: a fragment it has is passed over here.
            if self.picker.availability(i) > 0 {
                continue;
            }
            s.offered.push(i);
            Self::send(ep, h, s, &Message::Suggest(i));
        }
    }
}
