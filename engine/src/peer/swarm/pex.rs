//! Peer exchange (spec `discovery.md` §4): which peers we may pass on, and telling each PEX
//! peer of the changes at most once per interval.

use super::*;

impl SwarmCore {
    /// The address a peer can be reached at, if we know it is reachable there: we dialled it,
    /// or it reached us from its listen port (spec `discovery.md` §4). Link-local IPv6
    /// addresses mean nothing off this host and are never passed on.
    pub(super) fn reachable(s: &Session) -> Option<SocketAddr> {
        s.peer_id?;
        let ok = s.outbound || (s.listen_port != 0 && s.listen_port == s.addr.port());
        let link_local =
            matches!(s.addr.ip(), std::net::IpAddr::V6(v6) if v6.is_unicast_link_local());
        (ok && !link_local).then_some(s.addr)
    }

    /// Sends `h` the peers we reached that we have not told it of yet, and those we lost.
    pub(super) fn send_pex(
        &mut self,
        now: Time,
        ep: &mut Endpoint,
        h: ConnHandle,
        current: &BTreeSet<SocketAddr>,
    ) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        if !s.pex || s.peer_id.is_none() {
            return;
        }
        let own = (s.addr, SocketAddr::new(s.addr.ip(), s.listen_port));
        let added: Vec<SocketAddr> = current
            .iter()
            .filter(|a| !s.told.contains(a) && **a != own.0 && **a != own.1)
            .take(MAX_PEX)
            .copied()
            .collect();
        let dropped: Vec<SocketAddr> = s
            .told
            .iter()
            .filter(|a| !current.contains(a))
            .take(MAX_PEX)
            .copied()
            .collect();
        s.pex_sent_at = Some(now);
        if added.is_empty() && dropped.is_empty() {
            return;
        }
        for a in &added {
            s.told.insert(*a);
        }
        for a in &dropped {
            s.told.remove(a);
        }
        let added: Vec<PexEntry> = added.into_iter().map(PexEntry::from_addr).collect();
        let dropped: Vec<PexEntry> = dropped.into_iter().map(PexEntry::from_addr).collect();
        self.stats.pex_sent += 1;
        Self::send(
            ep,
            h,
            s,
            &Message::Pex {
                added: &added,
                dropped: &dropped,
            },
        );
    }

    /// The addresses PEX may pass on now.
    pub(super) fn reachable_set(&self) -> BTreeSet<SocketAddr> {
        self.sessions.values().filter_map(Self::reachable).collect()
    }

    /// Peer exchange: each PEX peer hears of changes at most once per interval.
    pub(super) fn pex_round(&mut self, now: Time, ep: &mut Endpoint, handles: &[ConnHandle]) {
        let interval = self.cfg.pex_interval;
        let pex_due: Vec<ConnHandle> = handles
            .iter()
            .copied()
            .filter(|h| {
                let s = &self.sessions[h];
                s.pex
                    && s.pex_sent_at
                        .is_none_or(|t| now.saturating_since(t) >= interval)
            })
            .collect();
        if !pex_due.is_empty() {
            let current = self.reachable_set();
            for h in pex_due {
                self.send_pex(now, ep, h, &current);
            }
        }
    }

    /// A PEX message: candidates added and withdrawn, at the agreed rate (spec `discovery.md` §4).
    pub(super) fn on_pex(
        &mut self,
        now: Time,
        h: ConnHandle,
        added: &[PexEntry],
        dropped: &[PexEntry],
    ) {
        let Some(s) = self.sessions.get_mut(&h) else {
            return;
        };
        let interval = self.cfg.pex_interval;
        if !s.pex
            || s.pex_rx_at
                .is_some_and(|t| now.saturating_since(t) < interval / 2)
        {
            // Not negotiated, or faster than the agreed rate: ignored, not fatal.
            self.stats.pex_ignored += 1;
            return;
        }
        s.pex_rx_at = Some(now);
        self.stats.pex_received += 1;
        for e in dropped {
            let a = e.to_addr();
            self.candidates.retain(|c| *c != a);
        }
        let addrs: Vec<SocketAddr> = added.iter().map(PexEntry::to_addr).collect();
        let learned = self.add_peers(&addrs);
        self.stats.pex_learned += learned as u64;
    }
}
