//! The reliable-datagram transport (spec `spec/transport.md`), sans-IO.
//!
//! This module owns connection state: handshake, packet numbers, acknowledgements, loss
//! recovery, congestion and flow control, message framing, close and reset, and the
//! request/response mode. It never touches a socket or reads a clock: the driver (the reactor
//! or the simulator) passes datagrams and `now` in through [`Endpoint::handle`] and
//! [`Endpoint::handle_timeout`], then drains [`Endpoint::poll_transmit`] and
//! [`Endpoint::poll_event`], and sleeps until [`Endpoint::poll_timeout`].

mod assembler;
pub mod congestion;
mod connection;
mod endpoint;
pub mod ranges;
mod ring;
pub mod rtt;

use std::net::SocketAddr;
use std::time::Duration;

pub use crate::driver::Transmit;
pub use congestion::{CongestionKind, Controller};
pub use connection::ConnStats;
pub use endpoint::reqresp::{RequestId, respond, response_budget};
pub use endpoint::{Endpoint, EndpointStats};

/// Transport error codes carried in CLOSE (spec §7.1).
pub mod code {
    /// Graceful close.
    pub const NO_ERROR: u32 = 0;
    /// The peer broke a protocol rule (including an optimistic ACK).
    pub const PROTOCOL_VIOLATION: u32 = 1;
    /// The peer sent beyond the credit it was granted.
    pub const FLOW_CONTROL_ERROR: u32 = 2;
    /// The peer sent a message above our `max_message`.
    pub const MESSAGE_TOO_LARGE: u32 = 3;
    /// Internal error.
    pub const INTERNAL: u32 = 4;
}

/// Endpoint and connection configuration. One documented struct with defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest message this side accepts and the largest it lets the application send.
    pub max_message: u32,
    /// Receive window: stream bytes the peer may send beyond what the application consumed.
    /// Raised to at least `max_message + 4`.
    pub recv_window: u64,
    /// Send buffer limit in bytes (unacknowledged plus unsent).
    pub send_buffer: usize,
    /// Idle timeout.
    pub idle_timeout: Duration,
    /// Send a PING after this long without sending; `None` disables keep-alive.
    pub keep_alive: Option<Duration>,
    /// Longest delay before acknowledging.
    pub max_ack_delay: Duration,
    /// Starting UDP payload size.
    pub initial_mtu: u16,
    /// Largest UDP payload to probe for (or to use at once when `probe_mtu` is false).
    pub max_mtu: u16,
    /// Probe from `initial_mtu` up to `max_mtu` (DPLPMTUD). When false, `max_mtu` is used as
    /// the fixed MTU from the start (the `--mtu` option).
    pub probe_mtu: bool,
    /// Congestion controller.
    pub congestion: CongestionKind,
    /// Accept incoming connections (servers, peers).
    pub accept: bool,
    /// Most connections at once.
    pub max_connections: usize,
    /// Cookie time window (spec §5.2).
    pub cookie_lifetime: Duration,
    /// Node secret keying cookies and reset tokens (spec §5.2, §7.2). Set it from a random
    /// value kept across restarts so that a restarted node can reset its old connections. `None`
    /// derives one from the endpoint's seed (fine when the seed itself is random).
    pub secret: Option<[u8; 32]>,
    /// First retransmission delay of a request.
    pub request_timeout: Duration,
    /// Attempts before a request is given up.
    pub request_attempts: u32,
    /// Most packets in one [`Transmit`] (one GSO batch).
    pub max_segments: usize,
    /// On average one packet number in this many is skipped (spec §7); 0 disables.
    pub skip_period: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_message: 4 << 20,
            recv_window: 8 << 20,
            send_buffer: 16 << 20,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Some(Duration::from_secs(10)),
            max_ack_delay: Duration::from_millis(25),
            initial_mtu: 1200,
            max_mtu: 65_000,
            probe_mtu: true,
            congestion: CongestionKind::Cubic,
            accept: false,
            max_connections: 4096,
            cookie_lifetime: Duration::from_secs(10),
            secret: None,
            request_timeout: Duration::from_millis(250),
            request_attempts: 4,
            max_segments: 64,
            skip_period: 256,
        }
    }
}

impl Config {
    /// Sets a fixed MTU (`--mtu`), disabling probing.
    pub fn with_fixed_mtu(mut self, mtu: u16) -> Self {
        let mtu = mtu.clamp(1200, 65_000);
        self.initial_mtu = mtu;
        self.max_mtu = mtu;
        self.probe_mtu = false;
        self
    }
    pub(crate) fn effective_window(&self) -> u64 {
        self.recv_window.max(u64::from(self.max_message) + 4)
    }
}

/// Handle of a connection inside an [`Endpoint`]. A handle outlives its connection safely: once
/// the connection is gone, the handle never names another one (slots carry a generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnHandle {
    index: usize,
    generation: u32,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The application closed it with this code.
    Local(u32),
    /// The peer sent CLOSE.
    Peer {
        /// Code.
        code: u32,
        /// Reason bytes.
        reason: Vec<u8>,
    },
    /// This side detected a violation and closed with this code.
    Violation(u32),
    /// Nothing received for the idle timeout.
    IdleTimeout,
    /// The handshake did not complete in time.
    HandshakeTimeout,
    /// The peer sent a valid stateless reset.
    Reset,
}

/// Output events, drained with [`Endpoint::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A connection completed its handshake (client) or was accepted (server).
    Connected(ConnHandle),
    /// At least one message can be read with [`Endpoint::recv`].
    Readable(ConnHandle),
    /// A previously blocked [`Endpoint::send`] may now succeed.
    Writable(ConnHandle),
    /// The connection ended. Messages already received may still be read until it is drained.
    Closed(ConnHandle, CloseReason),
    /// A response to one of our requests.
    Response(RequestId, Vec<u8>),
    /// A request was given up after its last attempt.
    RequestFailed(RequestId),
}

/// Errors of [`Endpoint::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The message is larger than the peer's or our `max_message`.
    #[error("message larger than the limit")]
    TooLarge,
    /// The send buffer is full; wait for [`Event::Writable`].
    #[error("send buffer full")]
    Blocked,
    /// The connection is closed or the handle is unknown.
    #[error("connection closed")]
    Closed,
}

impl crate::driver::Core for Endpoint {
    fn handle(&mut self, now: crate::time::Time, remote: SocketAddr, data: &[u8]) {
        Endpoint::handle(self, now, remote, data);
    }
    fn poll_transmit(&mut self, now: crate::time::Time, buf: &mut [u8]) -> Option<Transmit> {
        Endpoint::poll_transmit(self, now, buf)
    }
    fn poll_timeout(&self) -> Option<crate::time::Time> {
        Endpoint::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: crate::time::Time) {
        Endpoint::handle_timeout(self, now);
    }
}
