//! The tracker as a reactor [`Core`]: the project's one mio reactor reads datagrams in
//! `recvmmsg` batches and hands each to the sans-IO [`Tracker`]; replies wait in a bounded
//! ring of preallocated slots until the reactor drains them with `sendmmsg`. Nothing here
//! touches a socket or reads the clock: the reactor does both.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{info, warn};

use super::{MAX_REPLY, Outcome, Stats, Tracker};
use crate::reactor::{Core, Reactor, ReactorConfig};
use crate::time::Time;
use crate::transport::Transmit;

/// Replies waiting to be sent; past this, replies are dropped (the client retransmits).
const RING: usize = 512;
/// Longest sleep, so a stop flag is noticed within it.
const MAX_WAIT: Duration = Duration::from_millis(200);

/// The tracker plus its outgoing ring: what the reactor drives.
pub struct TrackerCore {
    tracker: Tracker,
    bufs: Vec<[u8; MAX_REPLY]>,
    meta: Vec<(SocketAddr, usize)>,
    head: usize,
    len: usize,
    /// Replies dropped because the ring was full.
    pub dropped_replies: u64,
}

impl TrackerCore {
    /// Wraps a tracker.
    pub fn new(tracker: Tracker) -> TrackerCore {
        TrackerCore {
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
        Some(self.tracker.poll_timeout())
    }

    fn handle_timeout(&mut self, now: Time) {
        self.tracker.handle_timeout(now);
    }
}

/// A running tracker: the reactor and the core it drives.
pub struct Server {
    reactor: Reactor,
    core: TrackerCore,
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
    /// Time since start.
    pub uptime: Duration,
}

fn reactor_config(bind: SocketAddr) -> ReactorConfig {
    ReactorConfig {
        bind,
        // Replies are single small datagrams: no segmentation offloads to negotiate.
        gso: false,
        gro: false,
        batch: 64,
        send_queue: 256,
        ..ReactorConfig::default()
    }
}

impl Server {
    /// Binds `bind`, or with `None` all addresses: `[::]` dual stack, falling back to
    /// `0.0.0.0` on a host without IPv6.
    pub fn bind(bind: Option<SocketAddr>, port: u16, tracker: Tracker) -> io::Result<Server> {
        let reactor = match bind {
            Some(addr) => Reactor::bind(reactor_config(addr))?,
            None => match Reactor::bind(reactor_config(SocketAddr::from((
                Ipv6Addr::UNSPECIFIED,
                port,
            )))) {
                Ok(r) => r,
                Err(e) => {
                    warn!("cannot bind [::]:{port} ({e}); serving IPv4 only");
                    Reactor::bind(reactor_config(SocketAddr::from((
                        Ipv4Addr::UNSPECIFIED,
                        port,
                    ))))?
                }
            },
        };
        Ok(Server {
            reactor,
            core: TrackerCore::new(tracker),
        })
    }

    /// The bound address (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.reactor.local_addr()
    }

    fn report(&self) -> Report {
        let t = self.core.tracker();
        let (swarms, peers) = t.sizes();
        Report {
            stats: t.stats().clone(),
            swarms,
            peers,
            uptime: Duration::from_micros(self.reactor.now().as_micros()),
        }
    }

    /// Runs until `stop` is set, calling `report` every `stats_every` and once more at the end.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        stats_every: Duration,
        mut report: impl FnMut(&Report),
    ) -> io::Result<()> {
        let mut next_report = Instant::now() + stats_every;
        while !stop.load(Ordering::Relaxed) {
            let wait = next_report
                .saturating_duration_since(Instant::now())
                .min(MAX_WAIT);
            self.reactor.turn(&mut self.core, wait)?;
            if Instant::now() >= next_report {
                next_report = Instant::now() + stats_every;
                report(&self.report());
            }
        }
        info!("tracker stopping");
        if self.core.dropped_replies > 0 {
            info!(
                "{} replies dropped on a full send ring",
                self.core.dropped_replies
            );
        }
        // A last report, so the final counters are never lost with the process.
        report(&self.report());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Config;

    #[test]
    fn ring_holds_replies_in_order_and_drops_past_capacity() {
        let mut core = TrackerCore::new(Tracker::new(Config::default(), 1));
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
