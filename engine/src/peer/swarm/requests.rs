//! What a swarm asks of its peers: request pipelines sized to the measured rate, DATA as it
//! arrives, requests that time out, interest, and a check for leaked request counts.

use super::*;

impl SwarmCore {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_data(
        &mut self,
        now: Time,
        ep: &mut Endpoint,
        store: &mut dyn Store,
        h: ConnHandle,
        fragment: u32,
        offset: u32,
        msg: &mut Vec<u8>,
    ) {
        // `msg` is the whole DATA message: the block is `msg[DATA_HEADER_LEN..]`. Its buffer
        // may be handed to the store (and replaced by another).
        let len = msg.len().saturating_sub(peer::DATA_HEADER_LEN);
        let b = Block {
            fragment,
            offset,
            length: len as u32,
        };
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        let Some(k) = s.outstanding.iter().position(|(x, _)| *x == b) else {
            self.stats.wasted += len as u64;
            return;
        };
        s.outstanding.swap_remove(k);
        s.outstanding_bytes -= u64::from(b.length);
        s.window_bytes += u64::from(b.length);
        let addr = s.addr;
        match self.picker.received(b) {
            Received::Unneeded => self.stats.wasted += len as u64,
            r => {
                let taken = std::mem::take(msg);
                let written = store.write_owned(fragment, offset, taken, peer::DATA_HEADER_LEN);
                if let Err(e) = written.map(|next| *msg = next) {
                    // A disk error (disk full, say): the block is requested again later and
                    // the driver decides whether to give up (see `take_io_error`).
                    self.picker.unreceive(b);
                    self.io_error.get_or_insert(e);
                    return;
                }
                let c = self.contributors.entry(fragment).or_default();
                if !c.contains(&addr) {
                    c.push(addr);
                }
                *self.stats.from_peer.entry(addr).or_default() += u64::from(b.length);
                // Endgame: withdraw the copies of this block asked of other peers.
                let others: Vec<ConnHandle> = self
                    .sessions
                    .iter()
                    .filter(|(oh, os)| **oh != h && os.outstanding.iter().any(|(x, _)| *x == b))
                    .map(|(oh, _)| *oh)
                    .collect();
                for oh in others {
                    let os = self.sessions.get_mut(&oh).expect("listed");
                    os.outstanding.retain(|(x, _)| *x != b);
                    os.outstanding_bytes -= u64::from(b.length);
                    Self::send(
                        ep,
                        oh,
                        os,
                        &Message::Cancel(peer::block(b.fragment, b.offset, b.length)),
                    );
                }
                if r == Received::FragmentComplete {
                    self.fragment_done(now, ep, store, fragment);
                }
            }
        }
        self.fill_requests(now, ep, h);
    }

    /// Keeps this connection's request pipeline full: the bandwidth × delay product at the
    /// rate it is sized by (spec §5).
    pub(super) fn fill_requests(&mut self, now: Time, ep: &mut Endpoint, h: ConnHandle) {
        let (min, max) = (self.cfg.min_outstanding, self.cfg.max_outstanding);
        let Some(s) = self.sessions.get(&h) else {
            return;
        };
        if s.choked || s.peer_id.is_none() {
            return;
        }
        // Twice the round trip and 100 ms more of data in flight (the bandwidth × delay
        // product with room for the request's own trip and the refill batches), at the mean
        // rate of the peers we download from, or at half this peer's own rate if that is more
        // (spec §5). Not at its own rate alone: where fetchers compete for one uplink (a
        // seed's), a pipeline sized by what that peer gave us lets whoever got more get more
        // still. But never more than this peer delivers in half a request timeout at its own
        // rate (a slow peer among fast ones is not asked for what it cannot send in time; an
        // unmeasured one gets the floor). A peer whose last requests timed out gets one probe
        // block until it delivers again, so a dead or stalled connection cannot keep
        // re-taking the endgame's copies of the last blocks.
        let target = if s.stalls > 0 {
            u64::from(self.cfg.block).min(min)
        } else {
            let srtt = ep.srtt(h).unwrap_or_default().as_secs_f64();
            let horizon = 2.0 * srtt + PIPELINE_SLACK.as_secs_f64();
            let want = self.fair_rate.max(s.rate * 0.5) * horizon;
            let cap = s.rate * self.cfg.request_timeout.as_secs_f64() / 2.0;
            (want.min(cap) as u64).max(min).min(max)
        };
        // Refill in batches (a quarter of the target, at least a block) rather than one block
        // per DATA received: each pick scans the partial fragments and, when a peer has
        // nothing new to offer, every fragment.
        let batch = u64::from(self.cfg.block).max(target / 4);
        if !s.outstanding.is_empty() && s.outstanding_bytes + batch > target {
            return;
        }
        // Endgame copies only of overdue requests (spec §5), sorted for the lookups below.
        let overdue = if self.picker.in_endgame() {
            self.overdue_requests(now, ep)
        } else {
            Vec::new()
        };
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        while s.outstanding_bytes < target {
            let room = target - s.outstanding_bytes;
            let mut count = (room / u64::from(self.cfg.block)).max(1) as usize;
            if let Some(a) = self.down_allow {
                // Rate limit: ask for no more than the allowance covers (whole blocks).
                let n = (a / u64::from(self.cfg.block)) as usize;
                if n == 0 {
                    self.throttled = true;
                    break;
                }
                count = count.min(n);
            }
            let (have, addr, pinned) = (&s.have, s.addr, &self.pinned);
            // A pinned fragment is only for the peer it is pinned to (or the first to take it).
            let may = |i: u32| {
                have.get(i)
                    && (pinned.is_empty()
                        || pinned.get(&i).is_none_or(|p| p.is_none_or(|a| a == addr)))
            };
            // In the endgame the picker offers blocks already asked of someone: only overdue
            // ones, and never of this same peer again (the copy could only arrive as waste).
            let outstanding = &s.outstanding;
            let no_copy = |b: Block| {
                overdue.binary_search(&b).is_err() || outstanding.iter().any(|(x, _)| *x == b)
            };
            // A seed's suggestions first (spec §5), while they still have blocks to ask for.
            let picker = &self.picker;
            s.suggested.retain(|&i| !picker.fully_requested(i));
            let blocks = self
                .picker
                .pick_preferring(&s.suggested, may, no_copy, count.min(64));
            if blocks.is_empty() {
                break;
            }
            for b in &blocks {
                if let Some(p @ None) = self.pinned.get_mut(&b.fragment) {
                    *p = Some(addr);
                }
            }
            for b in blocks {
                if let Some(a) = &mut self.down_allow {
                    *a = a.saturating_sub(u64::from(b.length));
                }
                s.outstanding.push((b, now));
                s.outstanding_bytes += u64::from(b.length);
                Self::send(
                    ep,
                    h,
                    s,
                    &Message::Request(peer::block(b.fragment, b.offset, b.length)),
                );
            }
        }
    }

    /// Requests overdue for an endgame copy (spec §5), sorted: older than four times what
    /// their peer's whole pipeline should take at the rate measured from it (at least one rate
    /// window, at most [`ENDGAME_PATIENCE`]) plus two of its round trips. Copying every block
    /// still missing at once instead, as BitTorrent's endgame does with 16 KiB blocks, spends
    /// the last half second of a saturated downlink on whole-block duplicates that a CANCEL
    /// arrives too late to stop. (A request count that leaked, held by no session, is never
    /// overdue: `reconcile_if_starved` frees it at a later rate window.)
    fn overdue_requests(&self, now: Time, ep: &Endpoint) -> Vec<Block> {
        let (lo, hi) = (RATE_WINDOW.as_secs_f64(), ENDGAME_PATIENCE.as_secs_f64());
        let mut out = Vec::new();
        for (h, s) in &self.sessions {
            let expect = if s.rate > 0.0 {
                4.0 * s.outstanding_bytes as f64 / s.rate
            } else {
                hi
            };
            let trips = 2.0 * ep.srtt(*h).unwrap_or_default().as_secs_f64();
            let patience = Duration::from_secs_f64(expect.clamp(lo, hi) + trips);
            let late = s
                .outstanding
                .iter()
                .filter(|(_, at)| now.saturating_since(*at) > patience);
            out.extend(late.map(|(b, _)| *b));
        }
        out.sort_unstable();
        out
    }

    /// A peer that choked us or left gives up its pinned fragments: the next peer asked takes
    /// them (the blocks it already sent stay; a failure with both senders pins again).
    pub(super) fn unpin(&mut self, addr: SocketAddr) {
        for p in self.pinned.values_mut() {
            if *p == Some(addr) {
                *p = None;
            }
        }
    }

    pub(super) fn update_interest(&mut self, ep: &mut Endpoint, h: ConnHandle) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        let want = s.wanted > 0;
        if want != s.interesting {
            s.interesting = want;
            let m = if want {
                Message::Interested
            } else {
                Message::NotInterested
            };
            Self::send(ep, h, s, &m);
        }
    }

    /// The rate window ended: each connection's receive rate is updated and its requests
    /// nobody answered are withdrawn (CANCEL) to be asked elsewhere. Returns the connections
    /// that stalled too often.
    pub(super) fn measure_and_expire(&mut self, now: Time, ep: &mut Endpoint) -> Vec<ConnHandle> {
        let secs = RATE_WINDOW.as_secs_f64();
        let handles: Vec<ConnHandle> = self.sessions.keys().copied().collect();
        // Requests nobody answered: ask elsewhere.
        let mut stalled = Vec::new();
        for &h in &handles {
            let s = self.sessions.get_mut(&h).expect("listed");
            let got = s.window_bytes;
            s.rate = 0.75 * s.rate + 0.25 * (got as f64 / secs);
            s.window_bytes = 0;
            let timeout = self.cfg.request_timeout;
            let (stale, keep): (Vec<_>, Vec<_>) = s
                .outstanding
                .drain(..)
                .partition(|(_, at)| now.saturating_since(*at) > timeout);
            s.outstanding = keep;
            if got > 0 {
                s.stalls = 0;
            } else if !stale.is_empty() {
                s.stalls += 1;
            }
            if s.stalls >= MAX_STALLS {
                stalled.push(h);
            }
            if !stale.is_empty() {
                log::debug!(
                    "peer {}: {} requests timed out ({} B received this window); transport {:?}",
                    s.addr,
                    stale.len(),
                    got,
                    ep.stats(h)
                );
            }
            for (b, _) in stale {
                s.outstanding_bytes -= u64::from(b.length);
                self.picker.release(b);
                // Withdraw it, so that the peer does not spend upload on a block that is now
                // asked elsewhere (and would arrive as waste).
                Self::send(
                    ep,
                    h,
                    s,
                    &Message::Cancel(peer::block(b.fragment, b.offset, b.length)),
                );
            }
        }
        let (sum, n) = self
            .sessions
            .values()
            .filter(|s| !s.choked && s.interesting)
            .fold((0.0, 0u32), |(r, n), s| (r + s.rate, n + 1));
        self.fair_rate = if n > 0 { sum / f64::from(n) } else { 0.0 };
        stalled
    }

    /// A peer we may ask, that has what we lack, with nothing asked of it: if the picker
    /// still offers nothing, request counts leaked somewhere; they are rebuilt from the
    /// requests really outstanding rather than stall.
    pub(super) fn reconcile_if_starved(
        &mut self,
        now: Time,
        ep: &mut Endpoint,
        handles: &[ConnHandle],
    ) {
        let starved = handles.iter().any(|h| {
            let s = &self.sessions[h];
            !s.choked && s.interesting && s.outstanding.is_empty()
        });
        if starved && !self.picker.complete() {
            let live: Vec<Block> = self
                .sessions
                .values()
                .flat_map(|s| s.outstanding.iter().map(|(b, _)| *b))
                .collect();
            let freed = self.picker.reconcile(live.into_iter());
            if freed > 0 {
                log::debug!("picker: {freed} leaked block requests freed");
                for &h in handles {
                    self.fill_requests(now, ep, h);
                }
            }
        }
    }

    /// The peer's HAVE_MAP: what it holds, and so whether it interests us.
    pub(super) fn on_have_map(&mut self, now: Time, ep: &mut Endpoint, h: ConnHandle, bits: &[u8]) {
        let n = self.picker.fragment_count();
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        if !peer::check_have_map(bits, n) {
            return self.violation(ep, now, h, close_code::VIOLATION);
        }
        s.have = Bits::from_wire(bits, n);
        s.wanted = 0;
        for i in 0..n {
            if s.have.get(i) {
                self.picker.add_availability(i);
                s.wanted += u32::from(!self.picker.has(i));
            }
        }
        // No refill here: HAVE_MAP follows the HANDSHAKE (spec §3), before the peer can have
        // unchoked us, and its UNCHOKE refills (spec §5).
        self.update_interest(ep, h);
    }

    /// A HAVE: the peer holds fragment `i` now.
    pub(super) fn on_have(&mut self, now: Time, ep: &mut Endpoint, h: ConnHandle, i: u32) {
        let n = self.picker.fragment_count();
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        if i >= n {
            return self.violation(ep, now, h, close_code::VIOLATION);
        }
        let mut ask = false;
        if s.have.set(i) {
            self.picker.add_availability(i);
            s.wanted += u32::from(!self.picker.has(i));
            ask = !self.picker.fully_requested(i);
        }
        self.update_interest(ep, h);
        // Spec peer.md §5: a fragment we lack and have not asked for is asked at once, not at
        // the next rate window; a connection with nothing outstanding would otherwise idle.
        if ask {
            self.fill_requests(now, ep, h);
        }
        // A seed's suggestion of `i` to someone else is moot now that a peer has it:
        // they may never ask us for it, so it must not hold their suggestion slot.
        if self.picker.complete() {
            let stale: Vec<ConnHandle> = self
                .sessions
                .iter()
                .filter(|(_, o)| o.offered.contains(&i))
                .map(|(oh, _)| *oh)
                .collect();
            for oh in stale {
                self.offer(ep, oh);
            }
        }
    }

    /// A seed's SUGGEST (spec §5).
    pub(super) fn on_suggest(&mut self, now: Time, ep: &mut Endpoint, h: ConnHandle, i: u32) {
        let n = self.picker.fragment_count();
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        if i >= n {
            return self.violation(ep, now, h, close_code::VIOLATION);
        }
        // Not negotiated: ignored. Otherwise kept (bounded) for the next requests.
        if s.suggest && !self.picker.fully_requested(i) && !s.suggested.contains(&i) {
            if s.suggested.len() >= MAX_SUGGESTED {
                s.suggested.remove(0);
            }
            s.suggested.push(i);
            self.fill_requests(now, ep, h);
        }
    }

    /// CHOKE: what we asked of the peer is asked elsewhere.
    pub(super) fn on_choke(&mut self, h: ConnHandle) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        s.choked = true;
        let addr = s.addr;
        let blocks: Vec<Block> = s.outstanding.drain(..).map(|(b, _)| b).collect();
        s.outstanding_bytes = 0;
        for b in blocks {
            self.picker.release(b);
        }
        self.unpin(addr);
    }

    /// UNCHOKE: ask.
    pub(super) fn on_unchoke(&mut self, now: Time, ep: &mut Endpoint, h: ConnHandle) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        s.choked = false;
        self.fill_requests(now, ep, h);
    }

    /// A REJECT: the block is asked elsewhere.
    pub(super) fn on_reject(&mut self, h: ConnHandle, b: peer::BlockRef) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        let target = block_of(b);
        if let Some(k) = s.outstanding.iter().position(|(x, _)| *x == target) {
            s.outstanding.swap_remove(k);
            s.outstanding_bytes -= u64::from(target.length);
            self.picker.release(target);
        }
    }
}
