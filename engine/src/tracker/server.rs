//! The tracker's reactor: one single-threaded mio loop that reads datagrams in batches,
//! hands each to the sans-IO [`Tracker`], and sends the replies in batches. It owns the clock
//! for the tracker; nothing else here decides anything.
//!
//! Loop shape (as aquatic's workers): fixed tokens for sockets; on readiness, drain with
//! `recvmmsg` until nothing is left, answering each batch with one `sendmmsg`; replies that
//! would block wait in a bounded per-socket queue (beyond it they are dropped, as UDP may);
//! the poll timeout is the tracker's next housekeeping or stats deadline, and at most
//! 200 ms so that a stop request is seen promptly.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{debug, info};
use mio::{Events, Interest, Poll, Token};

use super::{MAX_REPLY, Outcome, Stats, Tracker};
use crate::net::{Batch, bind_udp};
use crate::time::Time;

/// Datagrams per `recvmmsg`/`sendmmsg`.
const BATCH: usize = 64;
/// Longest sleep, so a stop flag is noticed within it.
const MAX_WAIT: Duration = Duration::from_millis(200);

/// A running tracker's sockets and state.
pub struct Server {
    poll: Poll,
    sockets: Vec<mio::net::UdpSocket>,
    tracker: Tracker,
    start: Instant,
    inbox: Batch,
    outboxes: Vec<Batch>,
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
    /// Seconds since start.
    pub uptime: Duration,
}

impl Server {
    /// Binds every address in `binds` (e.g. `[::]:6969` for dual stack) and registers them.
    pub fn bind(binds: &[SocketAddr], tracker: Tracker) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut sockets = Vec::new();
        for (i, addr) in binds.iter().enumerate() {
            let mut s = bind_udp(*addr)?;
            poll.registry()
                .register(&mut s, Token(i), Interest::READABLE)?;
            sockets.push(s);
        }
        let outboxes = (0..sockets.len()).map(|_| Batch::new(BATCH * 4)).collect();
        Ok(Server {
            poll,
            sockets,
            tracker,
            start: Instant::now(),
            inbox: Batch::new(BATCH),
            outboxes,
        })
    }

    /// The bound addresses (with the ports the system chose for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    fn now(&self) -> Time {
        // Tracker time starts at one second so that "never" (0) is in the past.
        Time::from_micros(1_000_000 + self.start.elapsed().as_micros() as u64)
    }

    /// Runs until `stop` is set, calling `report` every `stats_every` and once more at the end.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        stats_every: Duration,
        mut report: impl FnMut(&Report),
    ) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        let mut next_report = Instant::now() + stats_every;
        while !stop.load(Ordering::Relaxed) {
            let now = self.now();
            self.tracker.handle_timeout(now);
            let until_housekeeping = Duration::from_micros(
                self.tracker
                    .poll_timeout()
                    .as_micros()
                    .saturating_sub(now.as_micros()),
            );
            let wait = until_housekeeping
                .min(next_report.saturating_duration_since(Instant::now()))
                .min(MAX_WAIT);
            match self.poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                let i = ev.token().0;
                if ev.is_readable() {
                    self.drain(i)?;
                }
                if ev.is_writable() {
                    self.flush(i)?;
                }
            }
            if Instant::now() >= next_report {
                next_report = Instant::now() + stats_every;
                let (swarms, peers) = self.tracker.sizes();
                report(&Report {
                    stats: self.tracker.stats().clone(),
                    swarms,
                    peers,
                    uptime: self.start.elapsed(),
                });
            }
        }
        info!("tracker stopping");
        // A last report, so the final counters are never lost with the process.
        let (swarms, peers) = self.tracker.sizes();
        report(&Report {
            stats: self.tracker.stats().clone(),
            swarms,
            peers,
            uptime: self.start.elapsed(),
        });
        Ok(())
    }

    /// Reads socket `i` until it has nothing more, answering as it goes.
    fn drain(&mut self, i: usize) -> io::Result<()> {
        loop {
            let got = self.inbox.recv(&self.sockets[i])?;
            if got == 0 {
                return Ok(());
            }
            let now = self.now();
            for k in 0..self.inbox.len() {
                let (data, src) = self.inbox.get(k);
                let tracker = &mut self.tracker;
                // A full outbox drops the reply: the client retransmits (BEP 15, transport §9).
                self.outboxes[i].push_with(src, |out| {
                    match tracker.handle(now, src, data, &mut out[..MAX_REPLY]) {
                        Outcome::Reply(n) => Some(n),
                        Outcome::Drop => None,
                    }
                });
            }
            self.flush(i)?;
        }
    }

    /// Sends what socket `i` has queued; asks for writability if the socket is full.
    fn flush(&mut self, i: usize) -> io::Result<()> {
        while !self.outboxes[i].is_empty() {
            if self.outboxes[i].send(&self.sockets[i])? == 0 {
                debug!(
                    "socket {i} would block; {} replies queued",
                    self.outboxes[i].len()
                );
                return self.poll.registry().reregister(
                    &mut self.sockets[i],
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                );
            }
        }
        Ok(())
    }

    /// The tracker core, for inspection.
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }
}
