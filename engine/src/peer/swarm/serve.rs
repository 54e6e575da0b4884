//! Serving: queued messages and requested blocks, read from the store straight into the
//! transport's send buffer, within the upload allowance.

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
        // transport cannot take now stays in `serving`, unread.
        while let Some(b) = s.serving.pop_front() {
            if self.up_allow.is_some_and(|a| a < u64::from(b.length)) {
                s.serving.push_front(b);
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
                Err(SendError::Blocked) => {
                    s.serving.push_front(b);
                    return;
                }
                Err(_) => return,
            }
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
            s.serving.push_back(Block {
                fragment: f,
                offset: o,
                length: l,
            });
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
        s.serving.retain(|x| *x != target);
    }
}
