//! Serving: queued messages and requested blocks, read from the store straight into the
//! transport's send buffer, within the upload allowance. A block is read only once the store
//! says it can be without waiting for a disk ([`Store::prefetch`], asked [`READ_AHEAD`] bytes
//! ahead of the sending); until then it, and that peer's requests behind it, wait, while other
//! peers are served (`spec/peer.md` §8.2).

use super::*;

impl SwarmCore {
    /// Sends queued messages, then serves queued requests, until the transport pushes back.
    pub(super) fn pump(&mut self, ep: &mut Endpoint, store: &mut dyn Store, h: ConnHandle) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        while let Some(m) = s.queued.front() {
            match ep.send(h, m) {
                Ok(()) => {
                    s.queued.pop_front();
                }
                Err(SendError::Blocked) => return,
                Err(_) => {
                    s.queued.clear();
                    return;
                }
            }
        }
        // DATA is read from the store straight into the transport's send buffer; a block the
        // transport cannot take now, or that the store is still bringing in, stays in
        // `serving`, unread.
        loop {
            Self::read_ahead(store, s);
            let Some(&Serve { block: b, ahead }) = s.serving.front() else {
                return;
            };
            if ahead != Ahead::Ready {
                return;
            }
            if self.up_allow.is_some_and(|a| a < u64::from(b.length)) {
                self.throttled = true;
                return;
            }
            let head = peer::DataHeader::new(b.fragment, b.offset);
            let sent = ep.send_with(h, head.as_bytes(), b.length as usize, |x, y| {
                store.read(b.fragment, b.offset, x)?;
                if !y.is_empty() {
                    store.read(b.fragment, b.offset + x.len() as u32, y)?;
                }
                Ok::<(), io::Error>(())
            });
            if let Err(SendError::Blocked) = sent {
                return;
            }
            s.serving.pop_front();
            match sent {
                Ok(Ok(())) => {
                    // Only what was sent is charged to the upload allowance.
                    if let Some(a) = &mut self.up_allow {
                        *a = a.saturating_sub(u64::from(b.length));
                    }
                    self.stats.uploaded += u64::from(b.length);
                    if let Some(x) = self.served.get_mut(b.fragment as usize) {
                        *x += u64::from(b.length);
                    }
                }
                // Unreadable (it was verified, so the disk failed): skip it; the peer asks
                // elsewhere when its request times out.
                Ok(Err(_)) => {}
                Err(_) => return,
            }
        }
    }

    /// Asks the store to ready the blocks in the first [`READ_AHEAD`] bytes of the session's
    /// queue that it was not asked for yet (at least the first block).
    fn read_ahead(store: &mut dyn Store, s: &mut Session) {
        let mut bytes = 0u64;
        for x in s.serving.iter_mut() {
            if bytes >= READ_AHEAD {
                break;
            }
            if x.ahead == Ahead::No {
                let b = x.block;
                x.ahead = if store.prefetch(b.fragment, b.offset, b.length) {
                    Ahead::Ready
                } else {
                    Ahead::Asked
                };
            }
            bytes += u64::from(x.block.length);
        }
    }

    /// The store readied `len` bytes at `offset` of `fragment`, asked for by
    /// [`Store::prefetch`] ([`crate::storage::Done::Prefetched`]): the blocks queued in that
    /// range, of every session, are ready, and the sessions they head are served. A range no
    /// longer queued (cancelled, choked, closed) is ignored.
    pub fn prefetched(
        &mut self,
        ep: &mut Endpoint,
        store: &mut dyn Store,
        fragment: u32,
        offset: u32,
        len: u32,
    ) {
        let end = u64::from(offset) + u64::from(len);
        let mut hit = Vec::new();
        for (&h, s) in &mut self.sessions {
            let mut any = false;
            // Only the head of a queue was asked for.
            for x in s.serving.iter_mut().take_while(|x| x.ahead != Ahead::No) {
                let b = x.block;
                if x.ahead == Ahead::Asked
                    && b.fragment == fragment
                    && b.offset >= offset
                    && u64::from(b.offset) + u64::from(b.length) <= end
                {
                    x.ahead = Ahead::Ready;
                    any = true;
                }
            }
            if any {
                hit.push(h);
            }
        }
        for h in hit {
            self.pump(ep, store, h);
        }
    }

    /// A REQUEST: served if the peer is unchoked and we hold the fragment, else rejected.
    pub(super) fn on_request(
        &mut self,
        now: Time,
        ep: &mut Endpoint,
        store: &mut dyn Store,
        h: ConnHandle,
        b: peer::BlockRef,
    ) {
        let n = self.picker.fragment_count();
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        let (f, o, l) = (b.fragment.get(), b.offset.get(), b.length.get());
        let flen = self.geometry.len(f);
        if f >= n || u64::from(o) + u64::from(l) > u64::from(flen) {
            return self.violation(ep, now, h, close_code::VIOLATION);
        }
        if s.choking || !self.picker.has(f) {
            Self::send(ep, h, s, &Message::Reject(b));
        } else {
            s.serving.push_back(Serve {
                block: Block {
                    fragment: f,
                    offset: o,
                    length: l,
                },
                ahead: Ahead::No,
            });
            // The disk starts on it now, even if the transport cannot take more yet.
            Self::read_ahead(store, s);
            // A suggestion taken up: the fragment is spoken for; suggest another.
            let took = s.offered.iter().position(|&x| x == f);
            if let Some(k) = took {
                s.offered.swap_remove(k);
            }
            self.claim(f);
            self.pump(ep, store, h);
            if took.is_some() {
                self.offer(ep, h);
            }
        }
    }

    /// A CANCEL: the block is not served.
    pub(super) fn on_cancel(&mut self, h: ConnHandle, b: peer::BlockRef) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        let target = block_of(b);
        s.serving.retain(|x| x.block != target);
    }
}
