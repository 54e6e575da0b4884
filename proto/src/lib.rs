//! SwarmTorrent wire and file formats.
//!
//! This crate owns every byte format of the project: the `.st` file codec ([`st_file`]) and the
//! datagram layouts of the transport. It performs no IO and reads no clock; every parser here is
//! total (it returns an error, never panics) and is fuzzed (`fuzz/`).
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod bencode;
pub mod discovery;
pub mod krpc;
pub mod packet;
pub mod peer;
pub mod st_file;
pub mod tracker;
