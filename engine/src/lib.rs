//! SwarmTorrent engine: sans-IO protocol state machines (transport, tracker, peer), the single
//! mio reactor that drives them, and the deterministic network simulator used by tests.
#![warn(missing_docs, unreachable_pub)]

pub mod discovery;
pub mod fuzzing;
pub mod node;
pub mod peer;
pub mod reactor;
pub mod rng;
pub mod sim;
pub mod storage;
pub mod time;
pub mod tracker;
pub mod transport;
