//! LAN discovery datagrams (normative text: `spec/discovery.md`).
//!
//! A LAN announce is one UDP datagram sent to a multicast group: a fixed 25-byte header (magic,
//! version, flags, the sender's peer id and listen port, a count) followed by `count` swarm ids
//! of 32 bytes. Parsing checks the magic, the version, the count and the exact length before
//! anything is read, and borrows from the input.

use zerocopy::byteorder::network_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Magic bytes at the start of every LAN announce.
pub const LAN_MAGIC: [u8; 4] = *b"STLD";
/// The LAN discovery version this code speaks.
pub const LAN_VERSION: u8 = 1;
/// Most swarm ids one announce carries.
pub const MAX_LAN_SWARMS: usize = 16;
/// Length of the header before the swarm ids.
pub const LAN_HEADER_LEN: usize = 25;
/// Length of the largest announce.
pub const MAX_LAN_LEN: usize = LAN_HEADER_LEN + 32 * MAX_LAN_SWARMS;

/// Header of a LAN announce.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy, PartialEq, Eq,
)]
#[repr(C)]
pub struct LanHeader {
    /// [`LAN_MAGIC`].
    pub magic: [u8; 4],
    /// [`LAN_VERSION`].
    pub version: u8,
    /// Reserved, sent as 0 and ignored.
    pub flags: u8,
    /// The sender's peer id (the one in its peer HANDSHAKE); a receiver ignores its own.
    pub peer_id: [u8; 16],
    /// The UDP port the sender accepts peer connections on (never 0).
    pub listen_port: U16,
    /// Number of swarm ids that follow, 1 ..= [`MAX_LAN_SWARMS`].
    pub count: u8,
}

/// A parsed LAN announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanAnnounce<'a> {
    /// The header.
    pub header: &'a LanHeader,
    /// The swarm ids the sender serves or wants.
    pub swarms: &'a [[u8; 32]],
}

/// Why a LAN datagram was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LanError {
    /// Shorter than the header.
    #[error("shorter than a LAN announce header")]
    Short,
    /// Not our magic: some other protocol's datagram on the port.
    #[error("wrong magic")]
    Magic,
    /// A version this code does not speak.
    #[error("unknown version {0}")]
    Version(u8),
    /// A count of 0 or over [`MAX_LAN_SWARMS`].
    #[error("swarm count {0} out of range")]
    Count(u8),
    /// The length does not match the count.
    #[error("length does not match the swarm count")]
    Length,
    /// A listen port of 0.
    #[error("listen port 0")]
    Port,
}

/// Parses a LAN announce.
pub fn parse_lan(buf: &[u8]) -> Result<LanAnnounce<'_>, LanError> {
    let (header, rest) = LanHeader::ref_from_prefix(buf).map_err(|_| LanError::Short)?;
    if header.magic != LAN_MAGIC {
        return Err(LanError::Magic);
    }
    if header.version != LAN_VERSION {
        return Err(LanError::Version(header.version));
    }
    let count = usize::from(header.count);
    if count == 0 || count > MAX_LAN_SWARMS {
        return Err(LanError::Count(header.count));
    }
    if rest.len() != 32 * count {
        return Err(LanError::Length);
    }
    if header.listen_port.get() == 0 {
        return Err(LanError::Port);
    }
    let swarms = <[[u8; 32]]>::ref_from_bytes(rest).map_err(|_| LanError::Length)?;
    Ok(LanAnnounce { header, swarms })
}

/// Writes a LAN announce into `out` (cleared first). At most [`MAX_LAN_SWARMS`] ids are
/// written; `swarms` must not be empty and `listen_port` must not be 0 (else nothing is
/// written and false is returned).
pub fn emit_lan(
    peer_id: [u8; 16],
    listen_port: u16,
    swarms: &[[u8; 32]],
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    if swarms.is_empty() || listen_port == 0 {
        return false;
    }
    let swarms = &swarms[..swarms.len().min(MAX_LAN_SWARMS)];
    let h = LanHeader {
        magic: LAN_MAGIC,
        version: LAN_VERSION,
        flags: 0,
        peer_id,
        listen_port: listen_port.into(),
        count: swarms.len() as u8,
    };
    out.extend_from_slice(h.as_bytes());
    for s in swarms {
        out.extend_from_slice(s);
    }
    true
}

/// The fuzzing invariant (`fuzz/fuzz_targets/packet.rs` calls it): an announce that parses
/// re-emits to the same bytes (flags aside, which are sent as 0).
pub fn fuzz_check(data: &[u8]) -> Result<(), String> {
    if let Ok(a) = parse_lan(data) {
        let mut out = Vec::new();
        if !emit_lan(
            a.header.peer_id,
            a.header.listen_port.get(),
            a.swarms,
            &mut out,
        ) {
            return Err(format!("{a:?} does not re-emit"));
        }
        out[5] = a.header.flags;
        if out != data {
            return Err(format!("{a:?} re-emits differently"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes() {
        // The vector in spec/discovery.md §2.
        let mut out = Vec::new();
        assert!(emit_lan([0xBB; 16], 6881, &[[0xAA; 32]], &mut out));
        let mut want = b"STLD".to_vec();
        want.extend([0x01, 0x00]);
        want.extend([0xBB; 16]);
        want.extend([0x1A, 0xE1, 0x01]);
        want.extend([0xAA; 32]);
        assert_eq!(out, want);
        assert_eq!(out.len(), 57);
        let a = parse_lan(&out).unwrap();
        assert_eq!(a.header.peer_id, [0xBB; 16]);
        assert_eq!(a.header.listen_port.get(), 6881);
        assert_eq!(a.swarms, &[[0xAA; 32]]);
    }

    #[test]
    fn rejects_bad_announces() {
        let mut ok = Vec::new();
        assert!(emit_lan([1; 16], 7000, &[[2; 32], [3; 32]], &mut ok));
        assert!(parse_lan(&ok).is_ok());
        assert_eq!(parse_lan(&ok[..24]), Err(LanError::Short));
        assert_eq!(parse_lan(&ok[..ok.len() - 1]), Err(LanError::Length));
        let mut b = ok.clone();
        b.push(0);
        assert_eq!(parse_lan(&b), Err(LanError::Length));
        let mut b = ok.clone();
        b[0] = b'X';
        assert_eq!(parse_lan(&b), Err(LanError::Magic));
        let mut b = ok.clone();
        b[4] = 2;
        assert_eq!(parse_lan(&b), Err(LanError::Version(2)));
        let mut b = ok.clone();
        b[24] = 0;
        assert_eq!(parse_lan(&b), Err(LanError::Count(0)));
        let mut b = ok.clone();
        b[24] = 17;
        assert_eq!(parse_lan(&b), Err(LanError::Count(17)));
        let mut b = ok.clone();
        b[22] = 0;
        b[23] = 0;
        assert_eq!(parse_lan(&b), Err(LanError::Port));
        assert!(!emit_lan([1; 16], 0, &[[2; 32]], &mut b));
        assert!(!emit_lan([1; 16], 1, &[], &mut b));
        // More than the limit: only the first 16 are sent.
        assert!(emit_lan([1; 16], 1, &[[9; 32]; 20], &mut b));
        assert_eq!(b.len(), MAX_LAN_LEN);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 11u64;
        for len in 0..700 {
            let mut b: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (x >> 56) as u8
                })
                .collect();
            if b.len() >= 25 {
                b[..4].copy_from_slice(b"STLD");
                b[4] = 1;
                b[24] = ((len as u8) % 18).max(1);
            }
            fuzz_check(&b).unwrap();
        }
    }
}
