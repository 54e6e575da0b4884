//! The peer side of the swarm protocol (`spec/peer.md`), sans-IO: fragment selection today;
//! the peer sessions, upload slots and verification flow build on it.

pub mod picker;
pub mod swarm;
