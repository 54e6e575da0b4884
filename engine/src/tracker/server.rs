//! The tracker as a driver [`Core`]: the reactor reads datagrams in `recvmmsg` batches and
//! hands each to the sans-IO [`Tracker`]; replies wait in a bounded ring of preallocated slots
//! until the reactor drains them with `sendmmsg`; a [`Report`] of the counters falls due every
//! `report_every`. Nothing here touches a socket or reads the clock: the driver does both.

use std::net::SocketAddr;
use std::time::Duration;

use super::{MAX_REPLY, Outcome, Stats, Tracker};
use crate::driver::{Core, Transmit};
use crate::time::Time;

/// Replies waiting to be sent; past this, replies are dropped (the client retransmits).
const RING: usize = 512;

/// The tracker plus its outgoing ring: what the reactor drives.
pub struct TrackerCore {
    tracker: Tracker,
    bufs: Vec<[u8; MAX_REPLY]>,
    meta: Vec<(SocketAddr, usize)>,
    head: usize,
    len: usize,
    /// Replies dropped because the ring was full.
    pub dropped_replies: u64,
    started: Time,
    report_every: Duration,
    next_report: Time,
    /// A report fell due and was not taken yet.
    report_due: bool,
}

impl TrackerCore {
    /// Wraps a tracker started at `now`, with a [`Report`] due every `report_every`.
    pub fn new(tracker: Tracker, now: Time, report_every: Duration) -> TrackerCore {
        TrackerCore {
            started: now,
            report_every,
            next_report: now + report_every,
            report_due: false,
            tracker,
            bufs: vec![[0u8; MAX_REPLY]; RING],
            meta: vec![(SocketAddr::from(([0, 0, 0, 0], 0)), 0); RING],
            head: 0,
            len: 0,
            dropped_replies: 0,
        }
    }

    /// The tracker inside.
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// The counters and table sizes at `now`.
    pub fn report(&self, now: Time) -> Report {
        let (swarms, peers) = self.tracker.sizes();
        Report {
            stats: self.tracker.stats().clone(),
            swarms,
            peers,
            offender_entries: self.tracker.offender_entries(),
            uptime: now.saturating_since(self.started),
        }
    }

    /// The periodic report, once one fell due (the timer runs in `handle_timeout`, so the
    /// deadline moves on whether or not the driver takes the report).
    pub fn poll_report(&mut self, now: Time) -> Option<Report> {
        if !self.report_due {
            return None;
        }
        self.report_due = false;
        Some(self.report(now))
    }
}

impl Core for TrackerCore {
    fn handle(&mut self, now: Time, remote: SocketAddr, data: &[u8]) {
        if self.len == RING {
            self.dropped_replies += 1;
            return;
        }
        let slot = (self.head + self.len) % RING;
        if let Outcome::Reply(n) = self.tracker.handle(now, remote, data, &mut self.bufs[slot]) {
            self.meta[slot] = (remote, n);
            self.len += 1;
        }
    }

    fn poll_transmit(&mut self, _now: Time, buf: &mut [u8]) -> Option<Transmit> {
        if self.len == 0 {
            return None;
        }
        let (remote, n) = self.meta[self.head];
        buf.get_mut(..n)?
            .copy_from_slice(&self.bufs[self.head][..n]);
        self.head = (self.head + 1) % RING;
        self.len -= 1;
        Some(Transmit {
            remote,
            len: n,
            segment_size: None,
        })
    }

    fn poll_timeout(&self) -> Option<Time> {
        Some(self.tracker.poll_timeout().min(self.next_report))
    }

    fn handle_timeout(&mut self, now: Time) {
        if now >= self.next_report {
            self.report_due = true;
            self.next_report = now + self.report_every;
        }
        self.tracker.handle_timeout(now);
    }
}

/// A periodic report to the caller (the CLI logs it and writes the stats file).
#[derive(Clone, Debug)]
pub struct Report {
    /// Counters since start.
    pub stats: Stats,
    /// Swarms in the table.
    pub swarms: usize,
    /// Peers in the table.
    pub peers: usize,
    /// Addresses in the offender table (spec §2.1).
    pub offender_entries: usize,
    /// Time since start.
    pub uptime: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Config;

    #[test]
    fn ring_holds_replies_in_order_and_drops_past_capacity() {
        let mut core = TrackerCore::new(
            Tracker::new(Config::default(), 1),
            Time::ZERO,
            Duration::from_secs(60),
        );
        let mut req = [0u8; 16];
        st_proto::tracker::emit_bep15_connect(&mut req, 9).unwrap();
        for i in 0..RING + 3 {
            let src = SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 1000));
            core.handle(Time::ZERO, src, &req);
        }
        assert_eq!(core.dropped_replies, 3);
        let mut buf = [0u8; 2048];
        let first = core.poll_transmit(Time::ZERO, &mut buf).unwrap();
        assert_eq!(first.remote, SocketAddr::from(([10, 0, 0, 0], 1000)));
        assert_eq!(first.len, 16);
        let mut n = 1;
        while core.poll_transmit(Time::ZERO, &mut buf).is_some() {
            n += 1;
        }
        assert_eq!(n, RING);
    }
}

#[cfg(test)]
mod report_tests {
    use super::*;
    use crate::tracker::Config;

    #[test]
    fn a_report_falls_due_every_interval_and_is_part_of_the_deadline() {
        let every = Duration::from_secs(60);
        let t0 = Time::from_micros(5_000_000);
        let mut core = TrackerCore::new(Tracker::new(Config::default(), 1), t0, every);
        assert!(core.poll_timeout().unwrap() <= t0 + every);
        core.handle_timeout(t0 + Duration::from_secs(59));
        assert!(core.poll_report(t0 + Duration::from_secs(59)).is_none());
        core.handle_timeout(t0 + every);
        let r = core.poll_report(t0 + every).expect("due");
        assert_eq!(r.uptime, every);
        assert!(core.poll_report(t0 + every).is_none(), "once per interval");
        // The deadline moves on even when nobody takes the report (a driver that never
        // polls must not be woken at once for ever).
        core.handle_timeout(t0 + every * 2);
        assert!(core.poll_timeout().unwrap() > t0 + every * 2);
        assert!(core.poll_report(t0 + every * 2).is_some());
    }
}
