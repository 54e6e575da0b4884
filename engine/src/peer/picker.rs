//! Fragment selection (`spec/peer.md` §5): which blocks to request from a peer.
//!
//! Rules, in order:
//! 1. **started fragments first**: blocks still missing from fragments already in progress,
//!    the most complete fragment first, so partial fragments turn into verified ones (that can
//!    be served) as soon as possible;
//! 2. otherwise **rarest first**: a new fragment the peer has and we lack, with the fewest
//!    holders among our peers, ties broken at random (so that fetchers of one seed spread over
//!    different fragments);
//! 3. **endgame**: when every block still missing is already requested, blocks may be asked of
//!    a second peer (the caller says which: those whose request is overdue); the first copy to
//!    arrive wins and the caller cancels the others.
//!
//! The picker counts requests per block but does not know which peer holds which request: the
//! caller (the peer session) keeps its outstanding list, releases it when a peer goes, and
//! sends CANCELs in the endgame. Pure logic: no IO, no clock; randomness from a seeded [`Rng`].

use std::collections::BTreeMap;

use st_proto::st_file::Geometry;

use crate::rng::Rng;

/// Requests per block allowed in the endgame (the original plus duplicates).
const ENDGAME_COPIES: u8 = 2;

/// A block to request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Block {
    /// Fragment index.
    pub fragment: u32,
    /// Offset in the fragment.
    pub offset: u32,
    /// Length.
    pub length: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Missing,
    /// Requested this many times.
    Requested(u8),
    Received,
}

#[derive(Debug, Clone)]
struct Partial {
    blocks: Vec<State>,
    received: u32,
    /// Blocks in [`State::Missing`].
    missing: u32,
}

/// What a received block completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A block we did not need (a duplicate or unrequested): ignore it.
    Unneeded,
    /// Stored; the fragment still lacks blocks.
    Progress,
    /// The fragment's last block: assemble and verify it.
    FragmentComplete,
}

/// The fragment picker of one swarm.
#[derive(Debug)]
pub struct Picker {
    geometry: Geometry,
    block: u32,
    have: Vec<bool>,
    /// Fragments with an entry in `partial` (a flat copy of its key set, for the scans).
    started: Vec<bool>,
    /// Fragments in `have`.
    have_count: usize,
    /// Blocks in [`State::Missing`] over all of `partial`.
    missing_blocks: usize,
    availability: Vec<u32>,
    partial: BTreeMap<u32, Partial>,
    rng: Rng,
    /// Scans of every fragment for new ones ([`Picker::rarest_new`]), for the tests.
    #[cfg(test)]
    scans: usize,
}

impl Picker {
    /// A picker for the fragments of `geometry`, requesting blocks of `block` bytes (≤ the
    /// protocol's 256 KiB), holding nothing yet.
    pub fn new(geometry: Geometry, block: u32, seed: u64) -> Picker {
        let n = geometry.count() as usize;
        Picker {
            geometry,
            block: block.clamp(1, geometry.fragment_length()),
            have: vec![false; n],
            started: vec![false; n],
            have_count: 0,
            missing_blocks: 0,
            availability: vec![0; n],
            partial: BTreeMap::new(),
            rng: Rng::new(seed),
            #[cfg(test)]
            scans: 0,
        }
    }

    /// Number of fragments.
    pub fn fragment_count(&self) -> u32 {
        self.have.len() as u32
    }

    fn fragment_len(&self, i: u32) -> u32 {
        self.geometry.len(i)
    }

    fn blocks_in(&self, i: u32) -> usize {
        self.fragment_len(i).div_ceil(self.block) as usize
    }

    fn block_at(&self, i: u32, b: usize) -> Block {
        let offset = b as u32 * self.block;
        Block {
            fragment: i,
            offset,
            length: (self.fragment_len(i) - offset).min(self.block),
        }
    }

    /// True if fragment `i` is verified here.
    pub fn has(&self, i: u32) -> bool {
        self.have.get(i as usize).copied().unwrap_or(false)
    }

    /// True when every fragment is verified.
    pub fn complete(&self) -> bool {
        self.have_count == self.have.len()
    }

    /// A peer announced fragment `i` (HAVE, or a bit of its HAVE_MAP).
    pub fn add_availability(&mut self, i: u32) {
        if let Some(a) = self.availability.get_mut(i as usize) {
            *a += 1;
        }
    }

    /// A peer that had fragment `i` went away.
    pub fn remove_availability(&mut self, i: u32) {
        if let Some(a) = self.availability.get_mut(i as usize) {
            *a = a.saturating_sub(1);
        }
    }

    /// Up to `max` blocks to request from a peer that has the fragments `peer_has` says.
    pub fn pick(&mut self, peer_has: impl Fn(u32) -> bool, max: usize) -> Vec<Block> {
        self.pick_excluding(peer_has, |_| false, max)
    }

    /// [`Picker::pick_excluding`], but the fragments of `prefer` (a seed's suggestions, spec
    /// §5), in order, come before everything else: each one we lack is started (if it is not
    /// yet) and its unrequested blocks are taken.
    pub fn pick_preferring(
        &mut self,
        prefer: &[u32],
        peer_has: impl Fn(u32) -> bool,
        no_copy: impl Fn(Block) -> bool,
        max: usize,
    ) -> Vec<Block> {
        let mut out = Vec::new();
        for &i in prefer {
            if out.len() >= max {
                return out;
            }
            if i >= self.fragment_count() || self.has(i) || !peer_has(i) {
                continue;
            }
            if !self.started[i as usize] {
                self.start(i);
            }
            self.take_missing(i, max, &mut out);
        }
        // The blocks just taken are asked of this peer too, though the caller does not know it
        // yet: if the rest goes to the endgame (a suggestion took the last missing blocks),
        // they must not come back as copies for the same peer (spec §5: never twice of one
        // peer), or every one of them is sent twice.
        let more = self.pick_excluding(
            peer_has,
            |b| no_copy(b) || out.contains(&b),
            max - out.len(),
        );
        out.extend(more);
        out
    }

    /// True if fragment `i` is held, or in progress with every block requested or received
    /// (a suggestion of it is spent).
    pub fn fully_requested(&self, i: u32) -> bool {
        self.has(i) || self.partial.get(&i).is_some_and(|p| p.missing == 0)
    }

    /// How many of our peers announced fragment `i`.
    pub fn availability(&self, i: u32) -> u32 {
        self.availability.get(i as usize).copied().unwrap_or(0)
    }

    /// Puts fragment `i` (not held, not started) in progress, every block missing.
    fn start(&mut self, i: u32) {
        let n = self.blocks_in(i);
        let partial = Partial {
            blocks: vec![State::Missing; n],
            received: 0,
            missing: n as u32,
        };
        self.partial.insert(i, partial);
        self.started[i as usize] = true;
        self.missing_blocks += n;
    }

    /// [`Picker::pick`], never offering an endgame copy of a block `no_copy` rules out: one this
    /// peer was already asked for (its copy could only arrive as waste), or, as the caller
    /// decides, one whose request is not yet overdue.
    pub fn pick_excluding(
        &mut self,
        peer_has: impl Fn(u32) -> bool,
        no_copy: impl Fn(Block) -> bool,
        max: usize,
    ) -> Vec<Block> {
        let mut out = Vec::new();
        // 1. Started fragments with unrequested blocks, most complete first.
        let mut started: Vec<(u32, u32)> = if self.missing_blocks == 0 {
            Vec::new()
        } else {
            self.partial
                .iter()
                .filter(|(i, p)| p.missing > 0 && peer_has(**i))
                .map(|(&i, p)| (i, p.received))
                .collect()
        };
        started.sort_by_key(|&(i, r)| (std::cmp::Reverse(r), i));
        for (i, _) in started {
            self.take_missing(i, max, &mut out);
            if out.len() >= max {
                return out;
            }
        }
        // 2. New fragments, rarest first, random tie-break: one scan yields as many of the
        //    equally rarest as the blocks wanted need (a scan per fragment, with a random draw
        //    per tie, was most of a fetch's picking time).
        let mut fresh = Vec::new();
        while out.len() < max {
            if fresh.is_empty() {
                let per = self.blocks_in(0).max(1);
                self.rarest_new(&peer_has, (max - out.len()).div_ceil(per), &mut fresh);
            }
            let Some(i) = fresh.pop() else {
                break;
            };
            self.start(i);
            self.take_missing(i, max, &mut out);
        }
        if !out.is_empty() {
            return out;
        }
        // 3. Endgame: nothing is missing unrequested; duplicate requests of this peer's
        //    fragments, least-requested blocks first.
        if self.in_endgame() {
            let frags: Vec<u32> = self
                .partial
                .keys()
                .copied()
                .filter(|&i| peer_has(i))
                .collect();
            for i in frags {
                let n = self.blocks_in(i);
                for b in 0..n {
                    if out.len() >= max {
                        return out;
                    }
                    let block = self.block_at(i, b);
                    if let Some(p) = self.partial.get_mut(&i)
                        && let State::Requested(c) = p.blocks[b]
                        && c < ENDGAME_COPIES
                        && !no_copy(block)
                    {
                        p.blocks[b] = State::Requested(c + 1);
                        out.push(block);
                    }
                }
            }
        }
        out
    }

    /// True in the endgame: every block still missing is requested (rule 3).
    pub fn in_endgame(&self) -> bool {
        !self.complete() && self.missing_blocks == 0 && self.unstarted_missing() == 0
    }

    fn unstarted_missing(&self) -> usize {
        // A fragment is held, started, or neither (verified fragments leave `partial`).
        self.have.len() - self.have_count - self.partial.len()
    }

    fn take_missing(&mut self, i: u32, max: usize, out: &mut Vec<Block>) {
        let n = self.blocks_in(i);
        for b in 0..n {
            if out.len() >= max {
                return;
            }
            let block = self.block_at(i, b);
            if let Some(p) = self.partial.get_mut(&i)
                && p.blocks[b] == State::Missing
            {
                p.blocks[b] = State::Requested(1);
                p.missing -= 1;
                self.missing_blocks -= 1;
                out.push(block);
            }
        }
    }

    /// Up to `want` of the rarest fragments the peer has that are neither held nor started,
    /// into `out` (emptied first), drawn at random among the equally rare: distributed as
    /// `want` draws of the rarest one each would be (not the same draws for a given seed), from
    /// one scan. Fewer if fewer are that rare: the caller asks again for the next rarity. The
    /// scan holds every equally rare fragment, at most one `u32` per fragment of the swarm.
    fn rarest_new(&mut self, peer_has: &impl Fn(u32) -> bool, want: usize, out: &mut Vec<u32>) {
        out.clear();
        #[cfg(test)]
        {
            self.scans += 1;
        }
        let mut rarest = u32::MAX;
        for (k, (&have, &started)) in self.have.iter().zip(&self.started).enumerate() {
            let i = k as u32;
            if have || started || !peer_has(i) {
                continue;
            }
            let a = self.availability[k];
            if a < rarest {
                rarest = a;
                out.clear();
            }
            if a == rarest {
                out.push(i);
            }
        }
        // A random `want` of them, in random order, at the end (where the caller pops them).
        let n = out.len();
        let take = want.min(n);
        for t in 0..take {
            let last = n - 1 - t;
            let r = self.rng.below(last as u64 + 1) as usize;
            out.swap(r, last);
        }
        out.drain(..n - take);
    }

    /// A request was not answered (the peer choked, rejected or left): the block may be
    /// requested again.
    pub fn release(&mut self, b: Block) {
        let block = self.block;
        if let Some((p, idx)) = Self::partial_of(&mut self.partial, block, b)
            && let State::Requested(c) = p.blocks[idx]
        {
            if c > 1 {
                p.blocks[idx] = State::Requested(c - 1);
            } else {
                p.blocks[idx] = State::Missing;
                p.missing += 1;
                self.missing_blocks += 1;
            }
        }
    }

    /// The partial fragment holding block `b`, and the block's index in it.
    fn partial_of(
        partial: &mut BTreeMap<u32, Partial>,
        block: u32,
        b: Block,
    ) -> Option<(&mut Partial, usize)> {
        if !b.offset.is_multiple_of(block) {
            return None;
        }
        let idx = (b.offset / block) as usize;
        let p = partial.get_mut(&b.fragment)?;
        (idx < p.blocks.len()).then_some((p, idx))
    }

    /// Rebuilds the request counts from the requests actually outstanding (all peers'), so a
    /// count that leaked (a request lost without being released) cannot stall the download.
    /// Returns how many blocks went back to "missing".
    pub fn reconcile(&mut self, outstanding: impl Iterator<Item = Block>) -> usize {
        let mut freed: usize = 0;
        for p in self.partial.values_mut() {
            for st in p.blocks.iter_mut() {
                if matches!(st, State::Requested(_)) {
                    *st = State::Missing;
                    freed += 1;
                }
            }
        }
        let block = self.block;
        for b in outstanding {
            if let Some((p, idx)) = Self::partial_of(&mut self.partial, block, b) {
                p.blocks[idx] = match p.blocks[idx] {
                    State::Missing => {
                        freed = freed.saturating_sub(1);
                        State::Requested(1)
                    }
                    State::Requested(c) => State::Requested(c.saturating_add(1)),
                    State::Received => State::Received,
                };
            }
        }
        self.missing_blocks = 0;
        for p in self.partial.values_mut() {
            p.missing = p.blocks.iter().filter(|s| **s == State::Missing).count() as u32;
            self.missing_blocks += p.missing as usize;
        }
        freed
    }

    /// A block arrived (its length was checked against the request by the caller).
    pub fn received(&mut self, b: Block) -> Received {
        let block = self.block;
        let Some((p, idx)) = Self::partial_of(&mut self.partial, block, b) else {
            return Received::Unneeded;
        };
        match p.blocks[idx] {
            State::Received => return Received::Unneeded,
            State::Missing => {
                p.missing -= 1;
                self.missing_blocks -= 1;
            }
            State::Requested(_) => {}
        }
        p.blocks[idx] = State::Received;
        p.received += 1;
        if p.received as usize == p.blocks.len() {
            Received::FragmentComplete
        } else {
            Received::Progress
        }
    }

    /// A received block could not be stored (a disk error): it is missing again, to be
    /// requested anew.
    pub fn unreceive(&mut self, b: Block) {
        let block = self.block;
        if let Some((p, idx)) = Self::partial_of(&mut self.partial, block, b)
            && p.blocks[idx] == State::Received
        {
            p.blocks[idx] = State::Missing;
            p.received -= 1;
            p.missing += 1;
            self.missing_blocks += 1;
        }
    }

    /// The assembled fragment matched its hash.
    pub fn verified(&mut self, i: u32) {
        self.forget(i);
        if let Some(h) = self.have.get_mut(i as usize)
            && !*h
        {
            *h = true;
            self.have_count += 1;
        }
    }

    /// The assembled fragment did not match: fetch all of it again.
    pub fn failed(&mut self, i: u32) {
        self.forget(i);
    }

    /// Drops fragment `i`'s partial state.
    fn forget(&mut self, i: u32) {
        if let Some(p) = self.partial.remove(&i) {
            self.missing_blocks -= p.missing as usize;
            self.started[i as usize] = false;
        }
    }

    /// Fragment `i` was already verified on disk (resume).
    pub fn mark_have(&mut self, i: u32) {
        self.verified(i);
    }

    /// Checks every kept count against a recount from scratch (panics on a mismatch).
    #[cfg(test)]
    fn check_invariants(&self) {
        let n = self.have.len();
        assert_eq!(self.started.len(), n);
        assert_eq!(self.availability.len(), n);
        let have_count = self.have.iter().filter(|&&h| h).count();
        assert_eq!(self.have_count, have_count, "have_count");
        for (i, &started) in self.started.iter().enumerate() {
            assert_eq!(
                started,
                self.partial.contains_key(&(i as u32)),
                "started[{i}]"
            );
            assert!(!(started && self.have[i]), "fragment {i} held and started");
        }
        let mut missing_blocks = 0;
        for (&i, p) in &self.partial {
            assert_eq!(p.blocks.len(), self.blocks_in(i), "fragment {i}: blocks");
            let count = |f: fn(&State) -> bool| p.blocks.iter().filter(|s| f(s)).count() as u32;
            assert_eq!(
                p.missing,
                count(|s| *s == State::Missing),
                "fragment {i}: missing"
            );
            assert_eq!(
                p.received,
                count(|s| *s == State::Received),
                "fragment {i}: received"
            );
            missing_blocks += p.missing as usize;
        }
        assert_eq!(self.missing_blocks, missing_blocks, "missing_blocks");
        assert_eq!(
            self.unstarted_missing(),
            n - have_count - self.partial.len()
        );
        assert_eq!(self.complete(), have_count == n, "complete");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picker(total: u64, fragment_length: u32, block: u32, seed: u64) -> Picker {
        Picker::new(Geometry::new(total, fragment_length).unwrap(), block, seed)
    }

    const K: u32 = 16 * 1024;

    #[test]
    fn rarest_first_among_what_the_peer_has() {
        let mut p = picker(u64::from(4 * K), K, K, 1);
        for (i, n) in [(0u32, 3u32), (1, 1), (2, 2), (3, 0)] {
            for _ in 0..n {
                p.add_availability(i);
            }
        }
        // The peer has all but 1 and 3: the rarest it can give is 2.
        let got = p.pick(|i| i == 0 || i == 2, 1);
        assert_eq!(
            got,
            vec![Block {
                fragment: 2,
                offset: 0,
                length: K
            }]
        );
        let got = p.pick(|_| true, 1);
        assert_eq!(got[0].fragment, 3, "availability 0 is rarest");
    }

    /// A block whose write failed is missing again: asked for anew, and its fragment does not
    /// count as complete without it.
    #[test]
    fn an_unstored_block_is_requested_again() {
        let mut p = picker(u64::from(2 * K), 2 * K, K, 1);
        let got = p.pick(|_| true, 2);
        assert_eq!(got.len(), 2);
        assert_eq!(p.received(got[0]), Received::Progress);
        p.unreceive(got[0]);
        assert_eq!(p.pick(|_| true, 2), vec![got[0]], "asked for again");
        assert_eq!(p.received(got[1]), Received::Progress);
        assert_eq!(p.received(got[0]), Received::FragmentComplete);
        p.unreceive(got[1]);
        p.unreceive(got[1]);
        assert_eq!(
            p.pick(|_| true, 2),
            vec![got[1]],
            "once, however often unreceived"
        );
    }

    /// A seed's suggestions (spec §5) come before started and rarest fragments; a suggestion
    /// with every block requested, or one the peer lacks, is passed over.
    #[test]
    fn suggested_fragments_come_first() {
        // 6 fragments of 2 blocks.
        let mut p = picker(u64::from(12 * K), 2 * K, K, 1);
        p.add_availability(0); // 1..=5 rarer than 0, and 0 is started below
        let first = p.pick(|i| i == 0, 1);
        assert_eq!(first[0].fragment, 0);
        let got = p.pick_preferring(&[4, 2], |_| true, |_| false, 3);
        let frags: Vec<(u32, u32)> = got.iter().map(|b| (b.fragment, b.offset)).collect();
        assert_eq!(frags, vec![(4, 0), (4, K), (2, 0)]);
        assert!(p.fully_requested(4));
        assert!(!p.fully_requested(2));
        assert!(!p.fully_requested(0));
        // 4 is spent, 2 has a block left; then the started 0; the peer lacks 5.
        let got = p.pick_preferring(&[4, 5, 2], |i| i != 5, |_| false, 2);
        let frags: Vec<(u32, u32)> = got.iter().map(|b| (b.fragment, b.offset)).collect();
        assert_eq!(frags, vec![(2, K), (0, K)]);
        assert_eq!(p.availability(0), 1);
        assert_eq!(p.availability(9), 0, "out of range: none");
    }

    /// A suggestion that takes every missing block leaves nothing new, so the rest of the
    /// same pick is the endgame: it must not offer copies of the blocks it just took (they go
    /// to the same peer, and each would arrive twice).
    #[test]
    fn a_suggestion_is_not_copied_by_the_endgame_of_the_same_pick() {
        // 1 to 4 fragments of 2 blocks, all suggested.
        for n in 1..=4u32 {
            let mut p = picker(u64::from(n * 2 * K), 2 * K, K, 1);
            let prefer: Vec<u32> = (0..n).collect();
            let got = p.pick_preferring(&prefer, |_| true, |_| false, 64);
            let mut unique = got.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(
                got.len(),
                unique.len(),
                "{n} fragments: a block twice: {got:?}"
            );
            assert_eq!(got.len(), (2 * n) as usize);
            // A second peer may still get the endgame copies.
            assert_eq!(p.pick(|_| true, 64).len(), (2 * n) as usize);
        }
    }

    #[test]
    fn ties_are_broken_at_random() {
        let mut firsts = std::collections::BTreeSet::new();
        for seed in 0..32 {
            let mut p = picker(u64::from(64 * K), K, K, seed);
            firsts.insert(p.pick(|_| true, 1)[0].fragment);
        }
        assert!(
            firsts.len() > 8,
            "fetchers of one seed should spread: {firsts:?}"
        );
    }

    /// One pick of many new fragments takes all of the rarest before any of the next rarity,
    /// each once, and spreads the choice among the equally rare.
    #[test]
    fn a_pick_of_many_fragments_takes_the_rarest_first() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..16 {
            let mut p = picker(u64::from(32 * K), K, K, seed);
            // 0..8 rarest (no peer announced them), 8..20 next, 20..32 the most common.
            for i in 8..32 {
                p.add_availability(i);
            }
            for i in 20..32 {
                p.add_availability(i);
            }
            let got: Vec<u32> = p.pick(|_| true, 12).iter().map(|b| b.fragment).collect();
            assert_eq!(got.len(), 12);
            let mut sorted = got.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 12, "each fragment once: {got:?}");
            assert!(got[..8].iter().all(|&i| i < 8), "rarest first: {got:?}");
            assert!(got[8..].iter().all(|&i| (8..20).contains(&i)), "{got:?}");
            seen.extend(got[8..].iter().copied());
        }
        assert!(seen.len() > 8, "ties are broken at random: {seen:?}");
    }

    /// Starting many fragments at once costs one scan of the swarm's fragments, not one per
    /// fragment (which made picking quadratic in the fragment count).
    #[test]
    fn new_fragments_for_one_pick_come_from_one_scan() {
        let mut p = picker(u64::from(4096 * K), K, K, 7);
        let got = p.pick(|_| true, 64);
        assert_eq!(got.len(), 64);
        assert_eq!(p.scans, 1);
        // A peer with nothing new: one scan finds nothing, and the pick stops.
        let none = p.pick(|i| got.iter().any(|b| b.fragment == i), 8);
        assert!(none.is_empty(), "{none:?}");
        assert_eq!(p.scans, 2);
    }

    #[test]
    fn started_fragments_are_finished_first() {
        let mut p = picker(u64::from(8 * K), 4 * K, K, 3);
        let first = p.pick(|_| true, 2);
        assert_eq!(first.len(), 2);
        let f = first[0].fragment;
        assert!(first.iter().all(|b| b.fragment == f));
        // Another peer continues the same fragment before starting another.
        let next = p.pick(|_| true, 2);
        assert!(next.iter().all(|b| b.fragment == f), "{next:?}");
        assert_eq!(next[0].offset, 2 * K);
    }

    #[test]
    fn blocks_cover_a_short_last_fragment_exactly() {
        let mut p = picker(u64::from(K) + 100, K, 64 * 1024, 5);
        let mut all = p.pick(|_| true, 10);
        all.sort();
        assert_eq!(
            all,
            vec![
                Block {
                    fragment: 0,
                    offset: 0,
                    length: K
                },
                Block {
                    fragment: 1,
                    offset: 0,
                    length: 100
                }
            ]
        );
    }

    #[test]
    fn completion_verification_and_failure() {
        let mut p = picker(u64::from(2 * K), 2 * K, K, 9);
        let bs = p.pick(|_| true, 10);
        assert_eq!(bs.len(), 2);
        assert_eq!(p.received(bs[0]), Received::Progress);
        assert_eq!(p.received(bs[0]), Received::Unneeded, "duplicate");
        assert_eq!(p.received(bs[1]), Received::FragmentComplete);
        // Bad hash: everything is requested again.
        p.failed(0);
        let again = p.pick(|_| true, 10);
        assert_eq!(again.len(), 2);
        for b in &again {
            p.received(*b);
        }
        p.verified(0);
        assert!(p.complete());
        assert!(p.pick(|_| true, 10).is_empty());
        assert_eq!(p.received(bs[0]), Received::Unneeded, "after verification");
    }

    #[test]
    fn reconcile_frees_leaked_requests_and_keeps_live_ones() {
        let mut p = picker(u64::from(4 * K), 4 * K, K, 9);
        let bs = p.pick(|_| true, 4);
        assert_eq!(bs.len(), 4);
        assert!(p.pick(|_| true, 4).len() == 4, "endgame copies");
        // Only two requests are really outstanding; the rest leaked.
        assert_eq!(p.reconcile([bs[0], bs[1]].into_iter()), 2);
        let again = p.pick(|_| true, 2);
        assert_eq!(again, vec![bs[2], bs[3]]);
    }

    #[test]
    fn released_blocks_are_requested_again() {
        let mut p = picker(u64::from(2 * K), 2 * K, K, 9);
        let bs = p.pick(|_| true, 1);
        p.release(bs[0]);
        assert_eq!(p.pick(|_| true, 1), bs);
    }

    #[test]
    fn endgame_duplicates_outstanding_blocks_once() {
        let mut p = picker(u64::from(2 * K), K, K, 11);
        let a = p.pick(|_| true, 10);
        assert_eq!(a.len(), 2);
        // A second peer: nothing unrequested is left, so it gets copies.
        let b = p.pick(|_| true, 10);
        assert_eq!(b.len(), 2, "endgame copies");
        // A third gets nothing: two copies is the limit.
        assert!(p.pick(|_| true, 10).is_empty());
        let mut sorted_a = a.clone();
        sorted_a.sort();
        let mut sorted_b = b.clone();
        sorted_b.sort();
        assert_eq!(
            sorted_a, sorted_b,
            "the copies are of the outstanding blocks"
        );
        assert_eq!(p.received(b[0]), Received::FragmentComplete);
        assert_eq!(
            p.received(b[0]),
            Received::Unneeded,
            "the loser's copy is ignored"
        );
    }

    /// A few thousand random operations, in the order a swarm might make them and in orders
    /// it should not (blocks that were never requested or are malformed, fragments verified
    /// twice or before they were started); after each, the kept counters (`started`,
    /// `have_count`, `missing_blocks`, `Partial::missing`) match a recount, and `complete()`
    /// is true exactly when every fragment is verified.
    #[test]
    fn counters_match_a_recount_after_random_operations() {
        const B: u32 = 1024;
        let mut ops = 0;
        for seed in 0..16u64 {
            // 23 fragments of 4 blocks and a short last one of 2 blocks (1024 + 476 bytes).
            let total = 23 * 4 * u64::from(B) + 1500;
            let mut p = picker(total, 4 * B, B, seed);
            let n = p.fragment_count();
            let mut r = Rng::new(seed ^ 0x9e37);
            // Requests outstanding (as the sessions would hold them), and fragments verified.
            let mut outstanding: Vec<Block> = Vec::new();
            let mut verified = vec![false; n as usize];
            // Until a little after completion.
            let mut after = 0;
            while after < 20 {
                ops += 1;
                assert!(ops < 100_000, "seed {seed}: never completes");
                let take = |r: &mut Rng, v: &mut Vec<Block>| {
                    (!v.is_empty()).then(|| v.swap_remove(r.below(v.len() as u64) as usize))
                };
                match r.below(100) {
                    0..=29 => {
                        let mask = r.next_u64() | r.next_u64();
                        let max = 1 + r.below(8) as usize;
                        let got = p.pick(|i| mask & (1 << i) != 0, max);
                        assert!(got.len() <= max);
                        for b in &got {
                            assert!(mask & (1 << b.fragment) != 0, "not the peer's: {b:?}");
                            assert!(!verified[b.fragment as usize], "verified: {b:?}");
                        }
                        outstanding.extend(got);
                    }
                    30..=39 => {
                        if let Some(b) = take(&mut r, &mut outstanding) {
                            p.release(b);
                        }
                    }
                    40..=71 => {
                        if let Some(b) = take(&mut r, &mut outstanding)
                            && p.received(b) == Received::FragmentComplete
                        {
                            p.check_invariants();
                            if r.chance(0.8) {
                                p.verified(b.fragment);
                                verified[b.fragment as usize] = true;
                            } else {
                                p.failed(b.fragment);
                            }
                        }
                    }
                    72..=76 => {
                        // Something never requested, possibly malformed.
                        let b = Block {
                            fragment: r.below(u64::from(n) + 2) as u32,
                            offset: r.below(u64::from(6 * B)) as u32 / 512 * 512,
                            length: B,
                        };
                        p.received(b);
                    }
                    77..=81 => {
                        let b = Block {
                            fragment: r.below(u64::from(n) + 2) as u32,
                            offset: r.below(6) as u32 * B,
                            length: B,
                        };
                        p.release(b);
                    }
                    82..=86 => {
                        // Some requests leaked (lost without a release): reconcile with
                        // what is really outstanding.
                        outstanding.retain(|_| !r.chance(0.2));
                        p.reconcile(outstanding.iter().copied());
                    }
                    87..=92 => {
                        let i = r.below(u64::from(n)) as u32;
                        if r.chance(0.5) {
                            p.add_availability(i);
                        } else {
                            p.remove_availability(i);
                        }
                    }
                    93..=96 => p.failed(r.below(u64::from(n) + 1) as u32),
                    97..=98 => {
                        // A fragment verified out of turn (resume), or again.
                        let i = r.below(u64::from(n) + 1) as u32;
                        p.mark_have(i);
                        if let Some(v) = verified.get_mut(i as usize) {
                            *v = true;
                        }
                    }
                    _ => {
                        let i = r.below(u64::from(n)) as u32;
                        p.verified(i);
                        verified[i as usize] = true;
                    }
                }
                p.check_invariants();
                for i in 0..n {
                    assert_eq!(p.has(i), verified[i as usize], "seed {seed}: has({i})");
                }
                let all = verified.iter().all(|&v| v);
                assert_eq!(p.complete(), all, "seed {seed}: complete()");
                if all {
                    assert!(
                        p.pick(|_| true, 8).is_empty(),
                        "seed {seed}: picks when complete"
                    );
                    after += 1;
                }
            }
        }
        assert!(ops >= 2000, "only {ops} operations");
    }

    #[test]
    fn no_endgame_while_fragments_are_unstarted() {
        let mut p = picker(u64::from(3 * K), K, K, 2);
        // Peer 1 has only fragment 0 and takes it; fragments 1, 2 are unstarted and nobody
        // offers them: peer 1 must not be given duplicates yet.
        assert_eq!(p.pick(|i| i == 0, 10).len(), 1);
        assert!(p.pick(|i| i == 0, 10).is_empty());
    }
}
