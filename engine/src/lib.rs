//! SwarmTorrent engine: sans-IO protocol state machines (transport, tracker, peer), the single
//! mio reactor that drives them, and the deterministic network simulator used by tests.
#![warn(missing_docs, unreachable_pub)]

pub mod dht;
pub mod discovery;
pub mod driver;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod lab;
pub mod node;
pub mod peer;
// The one place that reads the clock and touches mio and sockets (engine/clippy.toml).
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod reactor;
pub mod rng;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod storage;
pub mod time;
pub mod tracker;
pub mod transport;
