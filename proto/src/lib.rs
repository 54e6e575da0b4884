//! SwarmTorrent wire and file formats.
//!
//! This crate owns every byte format of the project: the `.st` file codec ([`st_file`]) and the
//! datagram layouts of the transport. It performs no IO and reads no clock; every parser here is
//! total (it returns an error, never panics) and is fuzzed (`fuzz/`).
#![warn(missing_docs, unreachable_pub)]
// `unsafe` only where `crc` and `sha256` reach CPU instructions (allowed there, with their
// reasons).
#![deny(unsafe_code)]

pub mod bencode;
pub mod crc;
pub mod discovery;
pub mod krpc;
pub mod packet;
pub mod peer;
pub mod sha256;
pub mod st_file;
pub mod tracker;

/// The one error of every `emit` in this crate: the caller's buffer is shorter than the
/// message (its `buffer_len`). Nothing useful was written. Parsers return their module's own
/// error enum, which names what was wrong with the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("buffer of {have} bytes is shorter than the {need} bytes of the message")]
pub struct BufferTooShort {
    /// Bytes the message needs.
    pub need: usize,
    /// Bytes the buffer had.
    pub have: usize,
}

/// Pseudo-random bytes for tests (xorshift64), the same every run for a given `seed`.
#[cfg(test)]
pub(crate) fn test_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ seed.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
