//! A peer process's core for the reactor: its transport [`Endpoint`] (peer connections and
//! tracker requests on one UDP socket) and, optionally, [`LanDiscovery`] on the multicast
//! sockets. Both are sans-IO; this only routes datagrams and merges their deadlines.

use std::net::SocketAddr;

use crate::discovery::lan::LanDiscovery;
use crate::reactor::Core;
use crate::time::Time;
use crate::transport::{Endpoint, Transmit};

/// The endpoint plus LAN discovery.
#[derive(Debug)]
pub struct Node {
    /// Peer connections and tracker requests.
    pub ep: Endpoint,
    /// LAN discovery, if enabled.
    pub lan: Option<LanDiscovery>,
}

impl Core for Node {
    fn handle(&mut self, now: Time, remote: SocketAddr, data: &[u8]) {
        self.ep.handle(now, remote, data);
    }
    fn poll_transmit(&mut self, now: Time, buf: &mut [u8]) -> Option<Transmit> {
        self.ep.poll_transmit(now, buf)
    }
    fn poll_timeout(&self) -> Option<Time> {
        let lan = self.lan.as_ref().and_then(LanDiscovery::poll_timeout);
        match (self.ep.poll_timeout(), lan) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
    fn handle_timeout(&mut self, now: Time) {
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
        if let Some(lan) = &mut self.lan
            && lan.poll_timeout().is_some_and(|t| t <= now)
        {
            lan.handle_timeout(now);
        }
    }
    fn handle_multicast(&mut self, now: Time, remote: SocketAddr, data: &[u8]) {
        if let Some(lan) = &mut self.lan {
            lan.handle(now, remote, data);
        }
    }
    fn poll_multicast(&mut self, now: Time, buf: &mut [u8]) -> Option<Transmit> {
        self.lan.as_mut()?.poll_transmit(now, buf)
    }
}
