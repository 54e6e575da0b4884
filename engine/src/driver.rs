//! The driver contract: what a sans-IO core offers its driver, the reactor in production and
//! the simulator in tests. Depends on nothing but time.
//!
//! A driver passes every input in with the time it happened (`handle`, `handle_multicast`,
//! `handle_wake`, `handle_timeout`), then drains the core's output (`poll_transmit`,
//! `poll_multicast`) and sleeps until `poll_timeout`. A core never reads a clock, owns a
//! socket or blocks; work it hands to another thread (disk IO) comes back through
//! `handle_wake`, which the driver calls when that thread signals through a [`Wake`].

use std::net::SocketAddr;

use crate::time::Time;

/// What a core wrote into the driver's buffer in [`Core::poll_transmit`] or
/// [`Core::poll_multicast`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Destination (a multicast group for [`Core::poll_multicast`]).
    pub remote: SocketAddr,
    /// Bytes written.
    pub len: usize,
    /// When several packets were written: the size of each but the last (UDP GSO segment
    /// size). `None` for a single datagram.
    pub segment_size: Option<usize>,
}

impl Transmit {
    /// Iterates the datagrams of this transmit within `buf[..len]`.
    pub fn datagrams<'a>(&self, buf: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let seg = self.segment_size.unwrap_or(self.len).max(1);
        buf[..self.len].chunks(seg)
    }
}

/// A sans-IO core: it takes datagrams, completions and the time, and yields datagrams and its
/// next deadline. The transport endpoint, the tracker and the peer node are cores.
pub trait Core {
    /// A datagram arrived from `remote` on the core's socket.
    fn handle(&mut self, now: Time, remote: SocketAddr, data: &[u8]);
    /// The next datagram(s) to send, written into `buf`.
    fn poll_transmit(&mut self, now: Time, buf: &mut [u8]) -> Option<Transmit>;
    /// When [`Core::handle_timeout`] wants to run next (`None`: only on input).
    fn poll_timeout(&self) -> Option<Time>;
    /// Runs the timers due at `now`.
    fn handle_timeout(&mut self, now: Time);
    /// A datagram arrived from `remote` on a multicast group the driver joined for the core.
    fn handle_multicast(&mut self, _now: Time, _remote: SocketAddr, _data: &[u8]) {}
    /// The next datagram for a multicast group (`Transmit::remote` is the group).
    fn poll_multicast(&mut self, _now: Time, _buf: &mut [u8]) -> Option<Transmit> {
        None
    }
    /// Work the core handed to another thread signalled completion (through the [`Wake`] the
    /// driver gave it): take the results.
    fn handle_wake(&mut self, _now: Time) {}
}

/// Ends the driver's sleep from another thread, so that [`Core::handle_wake`] runs at once.
pub trait Wake: Send + Sync + 'static {
    /// Wakes the driver.
    fn wake(&self);
}

/// A [`Wake`] that wakes nobody: for drivers that poll (tests, the simulator).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoWake;

impl Wake for NoWake {
    fn wake(&self) {}
}
