//! Repeat offenders (spec `tracker.md` §2.1): the bounded table of source addresses that sent
//! too many bad connection ids, and which of them are being ignored.
//!
//! A source that sends `threshold` bad ids within `window` seconds of its first one is ignored
//! (every datagram from its IP address dropped unread) for `ignore` seconds. The table holds
//! at most `capacity` addresses; a new one evicts the address that entered first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// Limits of the table (from [`super::Config`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub(super) capacity: usize,
    pub(super) threshold: u32,
    pub(super) window_secs: u32,
    pub(super) ignore_secs: u32,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Insertion number: matches the one queued in `order` while the entry lives.
    seq: u64,
    window_start: u32,
    bad: u32,
    /// Ignored while `now < ignored_until`.
    ignored_until: u32,
}

/// The table: a map for lookups, a queue of insertions for eviction of the oldest.
pub(super) struct Offenders {
    limits: Limits,
    map: HashMap<IpAddr, Entry>,
    /// (address, seq) in insertion order; entries whose seq no longer matches are stale.
    order: VecDeque<(IpAddr, u64)>,
    seq: u64,
}

impl Offenders {
    pub(super) fn new(limits: Limits) -> Offenders {
        Offenders {
            limits,
            map: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
        }
    }

    /// Addresses in the table.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// True if datagrams from `ip` are to be dropped at `now` (seconds).
    pub(super) fn is_ignored(&self, ip: IpAddr, now: u32) -> bool {
        !self.map.is_empty() && self.map.get(&ip).is_some_and(|e| now < e.ignored_until)
    }

    /// Records a bad connection id from `ip`; true if that made it ignored.
    pub(super) fn bad_id(&mut self, ip: IpAddr, now: u32) -> bool {
        let l = self.limits;
        if l.capacity == 0 {
            return false;
        }
        if let Some(e) = self.map.get_mut(&ip) {
            if now.saturating_sub(e.window_start) >= l.window_secs {
                e.window_start = now;
                e.bad = 0;
            }
            e.bad = e.bad.saturating_add(1);
            if e.bad >= l.threshold && now >= e.ignored_until {
                e.ignored_until = now.saturating_add(l.ignore_secs);
                e.bad = 0;
                e.window_start = now;
                return true;
            }
            return false;
        }
        // A new address: make room by evicting the oldest entry still in the table.
        while self.map.len() >= l.capacity || self.order.len() >= l.capacity {
            let Some((old, seq)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|e| e.seq == seq) {
                self.map.remove(&old);
            }
        }
        self.seq += 1;
        let ignored = l.threshold <= 1;
        self.map.insert(
            ip,
            Entry {
                seq: self.seq,
                window_start: now,
                bad: u32::from(!ignored),
                ignored_until: if ignored {
                    now.saturating_add(l.ignore_secs)
                } else {
                    0
                },
            },
        );
        self.order.push_back((ip, self.seq));
        ignored
    }

    /// Forgets addresses that are neither ignored nor inside a counting window at `now`.
    pub(super) fn expire(&mut self, now: u32) {
        let w = self.limits.window_secs;
        self.map
            .retain(|_, e| now < e.ignored_until || now.saturating_sub(e.window_start) < w);
        if self.map.is_empty() {
            self.order.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn limits() -> Limits {
        Limits {
            capacity: 4,
            threshold: 3,
            window_secs: 10,
            ignore_secs: 60,
        }
    }

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(i))
    }

    #[test]
    fn threshold_within_the_window_ignores_then_forgives() {
        let mut o = Offenders::new(limits());
        assert!(!o.bad_id(ip(1), 100));
        assert!(!o.bad_id(ip(1), 105));
        // The window restarted: two more do not reach the threshold.
        assert!(!o.bad_id(ip(1), 111));
        assert!(!o.is_ignored(ip(1), 111));
        assert!(!o.bad_id(ip(1), 112));
        assert!(o.bad_id(ip(1), 113));
        assert!(o.is_ignored(ip(1), 113));
        assert!(o.is_ignored(ip(1), 172));
        assert!(!o.is_ignored(ip(1), 173), "forgiven after the period");
        o.expire(200);
        assert_eq!(o.len(), 0);
    }

    #[test]
    fn table_stays_bounded_and_evicts_the_oldest() {
        let mut o = Offenders::new(limits());
        for _ in 0..3 {
            o.bad_id(ip(1), 0);
        }
        assert!(o.is_ignored(ip(1), 1));
        for i in 2..10_000 {
            o.bad_id(ip(i), 1);
            assert!(o.len() <= 4 && o.order.len() <= 4);
        }
        assert!(!o.is_ignored(ip(1), 1), "the oldest entry was evicted");
    }
}
