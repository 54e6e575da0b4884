//! Path MTU discovery (spec §8.4, DPLPMTUD as RFC 8899): the current MTU and the peer's
//! maximum, the next size to probe and the search ceiling, the probe in flight and its
//! outcome (raise on acknowledgement; retry once, then search below on loss), black hole
//! detection and the retry after [`MTU_RETRY`].
//!
//! Sending the probe (a PING + PADDING packet) is the packet builder's; telling the congestion
//! controller that the MTU changed is the connection's: the methods that change the MTU return
//! the new one.

use std::net::SocketAddr;
use std::time::Duration;

use crate::transport::Config;

/// Base MTU (spec §8.4).
pub(super) const BASE_MTU: usize = 1200;
/// Delay before probing the MTU again after a failure or a black hole.
pub(super) const MTU_RETRY: Duration = Duration::from_secs(60);
/// Probe sizes below the configured maximum (spec §8.4): Ethernet (1500 − 28 over IPv4,
/// 1500 − 48 over IPv6), and jumbo frames (9000 − 48, which fits IPv6 too).
const MTU_STEPS: [usize; 2] = [1472, 8952];
const MTU_STEPS_V6: [usize; 2] = [1452, 8952];
/// Stream bytes a connection sends before it probes beyond Ethernet's MTU: only bulk senders gain
/// from larger datagrams, and on a path that cannot carry them each lost probe costs uplink.
const JUMBO_PROBE_AFTER: u64 = 1 << 20;
/// Probes of one size lost in a row before the size counts as too big for the path.
const MTU_PROBE_ATTEMPTS: u8 = 2;
/// Probes of one size whose loss is put down to congestion (other packets were lost with
/// them) and not counted against the size, per search of that size; past this they count
/// (spec §8.4), so that a path that drops every large datagram among others still settles.
const MTU_PROBE_EXCUSED: u8 = 3;

/// Path MTU state of one connection.
#[derive(Debug)]
pub(super) struct Mtu {
    mtu: usize,
    max_mtu: usize,
    /// Probing is on (not a fixed `--mtu`).
    probe_mtu: bool,
    next: Option<usize>,
    /// The probe in flight: its packet number and size.
    probe: Option<(u64, usize)>,
    /// Probing searches sizes up to this (the largest size not yet found too big).
    ceiling: usize,
    /// Losses in a row of probes of the size being probed.
    probe_losses: u8,
    /// Losses of probes of that size put down to congestion, in this search of it.
    probe_excused: u8,
    /// The probe steps of this path's address family.
    steps: [usize; 2],
}

impl Mtu {
    /// The starting state for a path to `remote`: `initial_mtu` when probing, else the fixed
    /// `max_mtu`.
    pub(super) fn new(cfg: &Config, remote: SocketAddr) -> Self {
        let mtu = if cfg.probe_mtu {
            usize::from(cfg.initial_mtu).max(BASE_MTU)
        } else {
            usize::from(cfg.max_mtu).max(BASE_MTU)
        };
        Self {
            mtu,
            max_mtu: usize::from(cfg.max_mtu).max(BASE_MTU),
            probe_mtu: cfg.probe_mtu,
            next: None,
            probe: None,
            ceiling: usize::from(cfg.max_mtu).max(BASE_MTU),
            probe_losses: 0,
            probe_excused: 0,
            steps: Self::steps_for(remote),
        }
    }

    /// The probe steps of a path's address family: an IPv6 header is 20 bytes longer, so
    /// Ethernet carries 1452 bytes of UDP payload over IPv6 (an IPv4-mapped address is IPv4).
    fn steps_for(remote: SocketAddr) -> [usize; 2] {
        match remote.ip() {
            std::net::IpAddr::V6(a) if a.to_ipv4_mapped().is_none() => MTU_STEPS_V6,
            _ => MTU_STEPS,
        }
    }

    /// The current path MTU.
    pub(super) fn get(&self) -> usize {
        self.mtu
    }

    /// The peer's `max_udp_payload` arrived: it is never exceeded (spec §8.4), and probing
    /// starts. Returns the new MTU if it had to fall.
    pub(super) fn on_peer_max(&mut self, max_udp_payload: u16) -> Option<usize> {
        let peer_max = usize::from(max_udp_payload).max(BASE_MTU);
        self.max_mtu = self.max_mtu.min(peer_max);
        let lowered = if self.mtu > self.max_mtu {
            self.mtu = self.max_mtu;
            Some(self.mtu)
        } else {
            None
        };
        if self.probe_mtu {
            self.next = self.next_candidate();
        }
        lowered
    }

    /// The next size to probe (spec §8.4): the first of [`MTU_STEPS`] and the maximum that is
    /// above the current MTU and not above the search ceiling.
    pub(super) fn next_candidate(&self) -> Option<usize> {
        let top = self.max_mtu.min(self.ceiling);
        self.steps
            .into_iter()
            .chain([self.max_mtu])
            .find(|&c| c > self.mtu && c <= top)
    }

    /// The size of the MTU probe due now, window room aside: one is to be sent, none is in
    /// flight, the handshake is `confirmed`, it fits `room`, and sizes above Ethernet's wait
    /// for [`JUMBO_PROBE_AFTER`] stream bytes sent (`stream_sent`).
    pub(super) fn probe_due(
        &self,
        room: usize,
        stream_sent: u64,
        confirmed: bool,
    ) -> Option<usize> {
        let size = self.next?;
        (self.probe.is_none()
            && !(size > self.steps[0] && stream_sent < JUMBO_PROBE_AFTER)
            && confirmed
            && size <= room)
            .then_some(size)
    }

    /// True if an MTU probe is due but larger than the room left in the window; new data then
    /// waits until the room is there (spec §8.4): each ACK frees less than a jumbo probe, and
    /// refilling the window with data at once would keep the probe out for as long as the
    /// sender is window-limited. Only a probe that fits half the window waits so; with a
    /// smaller window data goes.
    pub(super) fn probe_waits_for_room(
        &self,
        room: usize,
        stream_sent: u64,
        confirmed: bool,
        in_flight: u64,
        window: u64,
    ) -> bool {
        self.probe_due(room, stream_sent, confirmed)
            .is_some_and(|size| in_flight + size as u64 > window && 2 * size as u64 <= window)
    }

    /// A probe is about to be built: it is no longer due.
    pub(super) fn probe_starting(&mut self) {
        self.next = None;
    }

    /// The probe of `size` bytes left as packet `pn`.
    pub(super) fn probe_sent(&mut self, pn: u64, size: usize) {
        self.probe = Some((pn, size));
    }

    /// The MTU probe packet `pn` was acknowledged: if it is the current probe, the MTU rises to
    /// its size (returned) and the next size is due.
    pub(super) fn on_probe_acked(&mut self, pn: u64) -> Option<usize> {
        let (ppn, size) = self.probe?;
        if ppn != pn {
            return None;
        }
        self.probe = None;
        self.probe_losses = 0;
        self.probe_excused = 0;
        self.mtu = size;
        self.next = self.next_candidate();
        Some(size)
    }

    /// The MTU probe packet `pn` was lost; `with_others` if packets that were not probes were
    /// declared lost with it, in a loss the congestion controller took as congestion (spec
    /// §8.4). Such a loss is put down to a queue or a receive buffer that overflowed, not to
    /// the size: the same size is tried again, uncounted, up to [`MTU_PROBE_EXCUSED`] times
    /// in a search of that size. Otherwise one loss may still be congestion:
    /// the same size is tried again; after [`MTU_PROBE_ATTEMPTS`] in a row the size is too big
    /// and the search goes on below it. Returns true if larger sizes are to be tried again
    /// after [`MTU_RETRY`].
    pub(super) fn on_probe_lost(&mut self, pn: u64, with_others: bool) -> bool {
        let Some((ppn, size)) = self.probe else {
            return false;
        };
        if ppn != pn {
            return false;
        }
        self.probe = None;
        if with_others && self.probe_excused < MTU_PROBE_EXCUSED {
            self.probe_excused += 1;
            self.next = Some(size);
            return false;
        }
        self.probe_losses += 1;
        if self.probe_losses < MTU_PROBE_ATTEMPTS {
            // One loss may be congestion: try the same size again.
            self.next = Some(size);
            false
        } else {
            // Too big for the path: search below it, and look again later.
            self.probe_losses = 0;
            self.probe_excused = 0;
            self.ceiling = size - 1;
            self.next = self.next_candidate();
            true
        }
    }

    /// Black hole detection (RFC 8899 §4.3, spec §8.4), after 2 probe timeouts in a row: if the
    /// MTU is above the base, it falls back to [`BASE_MTU`] and probing stops until the retry.
    /// Returns true if it fell.
    pub(super) fn on_black_hole(&mut self) -> bool {
        if self.mtu <= BASE_MTU {
            return false;
        }
        self.mtu = BASE_MTU;
        self.next = None;
        self.probe = None;
        self.probe_losses = 0;
        self.probe_excused = 0;
        true
    }

    /// The retry timer fired: the path may have changed, so the search goes up to the maximum
    /// again (when probing at all).
    pub(super) fn on_retry(&mut self) {
        if self.probe_mtu {
            // The path may have changed: search up to the maximum again.
            self.ceiling = self.max_mtu;
            self.probe_losses = 0;
            self.probe_excused = 0;
            if self.probe.is_none() {
                self.next = self.next_candidate();
            }
        }
    }
}
