//! The DHT node's defence against floods: a per-source message limit in a bounded table
//! (`spec/dht.md` §13).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::table::addr_key;
use crate::time::Time;

#[derive(Debug, Clone, Copy)]
struct Rec {
    window: Time,
    count: u32,
    banned_until: Option<Time>,
}

/// Counts messages per source IP (per address and port on loopback) over a window; a source
/// over the limit is ignored for a while.
pub(crate) struct IpLimiter {
    map: HashMap<SocketAddr, Rec>,
    cap: usize,
    window: Duration,
    max: u32,
    ban: Duration,
}

impl IpLimiter {
    pub(crate) fn new(cap: usize, window: Duration, max: u32, ban: Duration) -> IpLimiter {
        IpLimiter {
            map: HashMap::new(),
            cap: cap.max(1),
            window,
            max,
            ban,
        }
    }

    /// Sources tracked.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Sources ignored now.
    pub(crate) fn banned(&self, now: Time) -> usize {
        self.map
            .values()
            .filter(|r| r.banned_until.is_some_and(|t| t > now))
            .count()
    }

    /// Counts one message from `from`; false when it is to be ignored.
    pub(crate) fn allow(&mut self, now: Time, from: SocketAddr) -> bool {
        let key = addr_key(from);
        if !self.map.contains_key(&key) && self.map.len() >= self.cap {
            let (window, ban) = (self.window, self.ban);
            self.map.retain(|_, r| {
                r.banned_until.is_some_and(|t| t > now) || now.saturating_since(r.window) < window
            });
            if self.map.len() >= self.cap {
                // Still full: a source whose window is oldest and that is not banned goes.
                let victim = self
                    .map
                    .iter()
                    .filter(|(_, r)| r.banned_until.is_none_or(|t| t <= now))
                    .min_by_key(|(_, r)| r.window)
                    .map(|(k, _)| *k);
                match victim {
                    Some(k) => {
                        self.map.remove(&k);
                    }
                    // Every entry is banned: the oldest ban goes.
                    None => {
                        if let Some(k) = self
                            .map
                            .iter()
                            .min_by_key(|(_, r)| r.banned_until.unwrap_or(now) - ban)
                            .map(|(k, _)| *k)
                        {
                            self.map.remove(&k);
                        }
                    }
                }
            }
        }
        let r = self.map.entry(key).or_insert(Rec {
            window: now,
            count: 0,
            banned_until: None,
        });
        if let Some(t) = r.banned_until {
            if t > now {
                return false;
            }
            r.banned_until = None;
            r.window = now;
            r.count = 0;
        }
        if now.saturating_since(r.window) >= self.window {
            r.window = now;
            r.count = 0;
        }
        r.count += 1;
        if r.count > self.max {
            r.banned_until = Some(now + self.ban);
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_over_the_limit_is_ignored_for_the_ban_and_the_table_is_bounded() {
        let t0 = Time::from_micros(1_000_000);
        let mut l = IpLimiter::new(4, Duration::from_secs(10), 50, Duration::from_secs(300));
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let same_ip: SocketAddr = "10.0.0.1:2".parse().unwrap();
        for _ in 0..25 {
            assert!(l.allow(t0, a));
            assert!(l.allow(t0, same_ip));
        }
        assert!(!l.allow(t0, a), "the 51st message in 10 s");
        assert!(!l.allow(t0 + Duration::from_secs(299), same_ip));
        assert!(l.allow(t0 + Duration::from_secs(300), a));
        // A new window resets the count.
        let b: SocketAddr = "10.0.0.2:1".parse().unwrap();
        for i in 0..200u64 {
            assert!(l.allow(t0 + Duration::from_secs(i * 11), b));
        }
        for i in 0..100u8 {
            l.allow(t0, SocketAddr::from(([10, 1, 0, i], 1)));
        }
        assert!(l.len() <= 4);
    }
}
