//! The peer protocol's messages (normative text: `spec/peer.md`).
//!
//! Every peer message is one transport message (the transport frames, orders and delivers it
//! whole), so a message needs no length prefix: the first byte is its type and the rest is a
//! fixed body, except HAVE_MAP (a bitmap) and DATA (block bytes) whose lengths are what remains.
//! Parsing borrows from the input and checks every length and limit before use; emitting
//! writes into a caller's buffer.

use zerocopy::byteorder::network_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::BufferTooShort;

/// The peer protocol version this code speaks.
pub const PEER_VERSION: u8 = 1;
/// Largest block a REQUEST may ask for and a DATA may carry: 256 KiB.
pub const MAX_BLOCK: u32 = 256 * 1024;
/// Header bytes of a DATA message before the block (type, fragment, offset).
pub const DATA_HEADER_LEN: usize = std::mem::size_of::<DataHeader>();
const _: () = assert!(DATA_HEADER_LEN == 9);

/// Message types (spec §2).
pub mod msg {
    /// HANDSHAKE
    pub const HANDSHAKE: u8 = 0x01;
    /// HAVE_MAP
    pub const HAVE_MAP: u8 = 0x02;
    /// HAVE
    pub const HAVE: u8 = 0x03;
    /// INTERESTED
    pub const INTERESTED: u8 = 0x04;
    /// NOT_INTERESTED
    pub const NOT_INTERESTED: u8 = 0x05;
    /// CHOKE
    pub const CHOKE: u8 = 0x06;
    /// UNCHOKE
    pub const UNCHOKE: u8 = 0x07;
    /// REQUEST
    pub const REQUEST: u8 = 0x08;
    /// DATA
    pub const DATA: u8 = 0x09;
    /// CANCEL
    pub const CANCEL: u8 = 0x0A;
    /// REJECT
    pub const REJECT: u8 = 0x0B;
    /// PEX (peer exchange, `spec/discovery.md` §4)
    pub const PEX: u8 = 0x0C;
    /// SUGGEST (a seed's hint of which fragment to ask it for next)
    pub const SUGGEST: u8 = 0x0D;
}

/// Handshake capability bit: the sender speaks peer exchange (PEX messages).
pub const CAP_PEX: u32 = 1;
/// Handshake capability bit: the sender takes SUGGEST messages into account.
pub const CAP_SUGGEST: u32 = 2;
/// Most addresses in each of a PEX message's two lists (added, dropped).
pub const MAX_PEX: usize = 50;

/// One address in a PEX message: an IPv6 address (IPv4 as `::ffff:a.b.c.d`) and a port.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy, PartialEq, Eq,
)]
#[repr(C)]
pub struct PexEntry {
    /// The address; IPv4 in the IPv4-mapped form.
    pub addr: [u8; 16],
    /// The peer's listen port (never 0).
    pub port: U16,
}

impl PexEntry {
    /// The entry for a socket address (IPv4 mapped into IPv6).
    pub fn from_addr(a: std::net::SocketAddr) -> PexEntry {
        let ip = match a.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            std::net::IpAddr::V6(v6) => v6,
        };
        PexEntry {
            addr: ip.octets(),
            port: a.port().into(),
        }
    }

    /// The socket address (IPv4-mapped addresses come back as IPv4).
    pub fn to_addr(&self) -> std::net::SocketAddr {
        let v6 = std::net::Ipv6Addr::from(self.addr);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6(v6),
        };
        std::net::SocketAddr::new(ip, self.port.get())
    }
}

/// HANDSHAKE body (55 bytes after the type byte).
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy, PartialEq, Eq,
)]
#[repr(C)]
pub struct Handshake {
    /// Peer protocol version ([`PEER_VERSION`]).
    pub version: u8,
    /// Capability bits; unknown bits are ignored (spec §3).
    pub capabilities: U32,
    /// The swarm both sides must be in.
    pub swarm_id: [u8; 32],
    /// The sender's random peer id (detects self-connections and duplicates).
    pub peer_id: [u8; 16],
    /// The UDP port the sender accepts connections on (0: it does not).
    pub listen_port: U16,
}

/// A block reference: REQUEST, CANCEL and REJECT bodies (12 bytes).
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy, PartialEq, Eq,
)]
#[repr(C)]
pub struct BlockRef {
    /// Fragment index.
    pub fragment: U32,
    /// Byte offset within the fragment.
    pub offset: U32,
    /// Length in bytes, 1..=[`MAX_BLOCK`].
    pub length: U32,
}

/// The head of a DATA message (spec §2): its type byte, then the fragment and the offset of the
/// block that fills the rest of the message. The parser reads it and the sender writes it with
/// this one layout (a sender writes the block itself straight into its send buffer).
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy, PartialEq, Eq,
)]
#[repr(C)]
pub struct DataHeader {
    /// [`msg::DATA`].
    pub ty: u8,
    /// Fragment index.
    pub fragment: U32,
    /// Byte offset of the block within the fragment.
    pub offset: U32,
}

impl DataHeader {
    /// The head of a DATA message carrying a block of `fragment` at `offset`.
    pub fn new(fragment: u32, offset: u32) -> DataHeader {
        DataHeader {
            ty: msg::DATA,
            fragment: fragment.into(),
            offset: offset.into(),
        }
    }
}

/// A parsed peer message; borrowed parts point into the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// Opens the conversation (spec §3).
    Handshake(&'a Handshake),
    /// Which fragments the sender has: bit i (most significant bit first) = fragment i.
    HaveMap(&'a [u8]),
    /// The sender now has this fragment (verified).
    Have(u32),
    /// The sender wants fragments the receiver has.
    Interested,
    /// The sender wants nothing from the receiver.
    NotInterested,
    /// The sender will not serve requests (pending ones are dropped, spec §5).
    Choke,
    /// The sender will serve requests.
    Unchoke,
    /// Asks for a block.
    Request(BlockRef),
    /// A block: fragment, offset, bytes.
    Data {
        /// Fragment index.
        fragment: u32,
        /// Offset in the fragment.
        offset: u32,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// Withdraws a request.
    Cancel(BlockRef),
    /// Refuses a request (the requester asks elsewhere).
    Reject(BlockRef),
    /// Peer exchange: peers the sender connected to since its last PEX, and peers it lost.
    Pex {
        /// Newly connected peers, at most [`MAX_PEX`].
        added: &'a [PexEntry],
        /// Peers no longer connected, at most [`MAX_PEX`].
        dropped: &'a [PexEntry],
    },
    /// A seed suggests the receiver ask it for this fragment next (spec §5).
    Suggest(u32),
}

/// Why a message was refused (the connection is then closed: spec §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// No bytes at all.
    #[error("empty message")]
    Empty,
    /// A type byte this version does not know.
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    /// The body has the wrong length for its type.
    #[error("message type 0x{0:02x} has a wrong length")]
    Length(u8),
    /// A block length of 0 or over [`MAX_BLOCK`].
    #[error("block length out of range")]
    BlockLength,
    /// A PEX list over [`MAX_PEX`] entries, or an entry with port 0.
    #[error("bad peer exchange list")]
    Pex,
}

/// Parses one peer message.
pub fn parse(buf: &[u8]) -> Result<Message<'_>, PeerError> {
    let (&ty, body) = buf.split_first().ok_or(PeerError::Empty)?;
    let exact = |n: usize| {
        if body.len() == n {
            Ok(())
        } else {
            Err(PeerError::Length(ty))
        }
    };
    let index = |body: &[u8]| -> Result<u32, PeerError> {
        U32::read_from_bytes(body)
            .map(|i| i.get())
            .map_err(|_| PeerError::Length(ty))
    };
    let block = |body: &[u8]| -> Result<BlockRef, PeerError> {
        let b = BlockRef::read_from_bytes(body).map_err(|_| PeerError::Length(ty))?;
        if b.length.get() == 0 || b.length.get() > MAX_BLOCK {
            return Err(PeerError::BlockLength);
        }
        Ok(b)
    };
    Ok(match ty {
        msg::HANDSHAKE => {
            Message::Handshake(Handshake::ref_from_bytes(body).map_err(|_| PeerError::Length(ty))?)
        }
        msg::HAVE_MAP => Message::HaveMap(body),
        msg::HAVE => Message::Have(index(body)?),
        msg::SUGGEST => Message::Suggest(index(body)?),
        msg::INTERESTED => exact(0).map(|()| Message::Interested)?,
        msg::NOT_INTERESTED => exact(0).map(|()| Message::NotInterested)?,
        msg::CHOKE => exact(0).map(|()| Message::Choke)?,
        msg::UNCHOKE => exact(0).map(|()| Message::Unchoke)?,
        msg::REQUEST => Message::Request(block(body)?),
        msg::CANCEL => Message::Cancel(block(body)?),
        msg::REJECT => Message::Reject(block(body)?),
        msg::DATA => {
            let (head, bytes) =
                DataHeader::ref_from_prefix(buf).map_err(|_| PeerError::Length(ty))?;
            if bytes.is_empty() || bytes.len() > MAX_BLOCK as usize {
                return Err(PeerError::BlockLength);
            }
            Message::Data {
                fragment: head.fragment.get(),
                offset: head.offset.get(),
                bytes,
            }
        }
        msg::PEX => {
            let (&added, rest) = body.split_first().ok_or(PeerError::Length(ty))?;
            let entries = <[PexEntry]>::ref_from_bytes(rest).map_err(|_| PeerError::Length(ty))?;
            let added = usize::from(added);
            if added > MAX_PEX || added > entries.len() || entries.len() - added > MAX_PEX {
                return Err(PeerError::Pex);
            }
            if entries.iter().any(|e| e.port.get() == 0) {
                return Err(PeerError::Pex);
            }
            let (added, dropped) = entries.split_at(added);
            Message::Pex { added, dropped }
        }
        other => return Err(PeerError::UnknownType(other)),
    })
}

impl Message<'_> {
    /// The message's type byte (spec §2).
    pub fn ty(&self) -> u8 {
        match self {
            Message::Handshake(_) => msg::HANDSHAKE,
            Message::HaveMap(_) => msg::HAVE_MAP,
            Message::Have(_) => msg::HAVE,
            Message::Interested => msg::INTERESTED,
            Message::NotInterested => msg::NOT_INTERESTED,
            Message::Choke => msg::CHOKE,
            Message::Unchoke => msg::UNCHOKE,
            Message::Request(_) => msg::REQUEST,
            Message::Data { .. } => msg::DATA,
            Message::Cancel(_) => msg::CANCEL,
            Message::Reject(_) => msg::REJECT,
            Message::Pex { .. } => msg::PEX,
            Message::Suggest(_) => msg::SUGGEST,
        }
    }

    /// Bytes [`emit`] writes for this message.
    pub fn buffer_len(&self) -> usize {
        1 + match self {
            Message::Handshake(h) => h.as_bytes().len(),
            Message::HaveMap(bits) => bits.len(),
            Message::Have(_) | Message::Suggest(_) => 4,
            Message::Interested | Message::NotInterested | Message::Choke | Message::Unchoke => 0,
            Message::Request(b) | Message::Cancel(b) | Message::Reject(b) => b.as_bytes().len(),
            Message::Data { bytes, .. } => DATA_HEADER_LEN - 1 + bytes.len(),
            Message::Pex { added, dropped } => {
                1 + (added.len().min(MAX_PEX) + dropped.len().min(MAX_PEX))
                    * std::mem::size_of::<PexEntry>()
            }
        }
    }
}

/// Largest [`Message::buffer_len`] of a message other than HAVE_MAP, DATA and PEX: a
/// buffer this long on the stack takes any of them.
pub const MAX_CONTROL_LEN: usize = 1 + std::mem::size_of::<Handshake>();

/// Writes one message at the start of `out` and returns its length ([`Message::buffer_len`]),
/// or [`BufferTooShort`] with nothing useful written. A PEX list longer than [`MAX_PEX`] is
/// cut rather than sent malformed (callers keep to it).
pub fn emit(m: &Message<'_>, out: &mut [u8]) -> Result<usize, BufferTooShort> {
    let need = m.buffer_len();
    let Some(out) = out.get_mut(..need) else {
        return Err(BufferTooShort {
            need,
            have: out.len(),
        });
    };
    let (ty, body) = out.split_first_mut().expect("buffer_len is at least 1");
    *ty = m.ty();
    match m {
        Message::Handshake(h) => body.copy_from_slice(h.as_bytes()),
        Message::HaveMap(bits) => body.copy_from_slice(bits),
        Message::Have(i) | Message::Suggest(i) => body.copy_from_slice(&i.to_be_bytes()),
        Message::Interested | Message::NotInterested | Message::Choke | Message::Unchoke => {}
        Message::Request(b) | Message::Cancel(b) | Message::Reject(b) => {
            body.copy_from_slice(b.as_bytes())
        }
        Message::Data {
            fragment,
            offset,
            bytes,
        } => {
            let (head, rest) = out.split_at_mut(DATA_HEADER_LEN);
            head.copy_from_slice(DataHeader::new(*fragment, *offset).as_bytes());
            rest.copy_from_slice(bytes);
        }
        Message::Pex { added, dropped } => {
            let added = &added[..added.len().min(MAX_PEX)];
            let dropped = &dropped[..dropped.len().min(MAX_PEX)];
            let (n, rest) = body.split_first_mut().expect("PEX has a count byte");
            *n = added.len() as u8;
            let (a, d) = rest.split_at_mut(added.as_bytes().len());
            a.copy_from_slice(added.as_bytes());
            d.copy_from_slice(dropped.as_bytes());
        }
    }
    Ok(need)
}

/// [`emit`] into a new vector of exactly the message's length.
pub fn to_vec(m: &Message<'_>) -> Vec<u8> {
    let mut v = vec![0; m.buffer_len()];
    let n = emit(m, &mut v).unwrap_or(0);
    v.truncate(n);
    v
}

/// A block reference from plain numbers.
pub fn block(fragment: u32, offset: u32, length: u32) -> BlockRef {
    BlockRef {
        fragment: fragment.into(),
        offset: offset.into(),
        length: length.into(),
    }
}

/// Checks a HAVE_MAP against the swarm's fragment count (spec §4): exactly ⌈n/8⌉ bytes, and
/// the padding bits after fragment n − 1 are zero.
pub fn check_have_map(bits: &[u8], fragments: u32) -> bool {
    let n = fragments as usize;
    if bits.len() != n.div_ceil(8) {
        return false;
    }
    let spare = bits.len() * 8 - n;
    spare == 0 || bits.last().is_some_and(|&b| b & ((1u8 << spare) - 1) == 0)
}

/// The fuzzing invariant (`fuzz/fuzz_targets/packet.rs` may call it): a message that parses
/// re-emits to the same bytes.
pub fn fuzz_check(data: &[u8]) -> Result<(), String> {
    if let Ok(m) = parse(data) {
        if m.buffer_len() != data.len() {
            return Err(format!(
                "{m:?}: buffer_len {} of {}",
                m.buffer_len(),
                data.len()
            ));
        }
        let out = to_vec(&m);
        if out != data {
            return Err(format!("{m:?} re-emits differently"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(m: Message<'_>) -> Vec<u8> {
        let out = to_vec(&m);
        assert_eq!(out.len(), m.buffer_len());
        assert_eq!(parse(&out), Ok(m));
        // One byte short: refused, whatever the message.
        let mut short = vec![0; out.len() - 1];
        assert_eq!(
            emit(&m, &mut short),
            Err(BufferTooShort {
                need: out.len(),
                have: out.len() - 1
            })
        );
        out
    }

    #[test]
    fn golden_bytes() {
        let h = Handshake {
            version: 1,
            capabilities: 0.into(),
            swarm_id: [0xAA; 32],
            peer_id: [0xBB; 16],
            listen_port: 6881.into(),
        };
        let b = round(Message::Handshake(&h));
        assert_eq!(b.len(), 56);
        assert_eq!(&b[..6], &[0x01, 0x01, 0, 0, 0, 0]);
        assert_eq!(&b[54..], &[0x1A, 0xE1]);
        assert_eq!(round(Message::Have(258)), vec![0x03, 0, 0, 1, 2]);
        assert_eq!(round(Message::Suggest(7)), vec![0x0D, 0, 0, 0, 7]);
        assert_eq!(parse(&[0x0D, 0, 0, 7]), Err(PeerError::Length(0x0D)));
        assert_eq!(
            round(Message::Request(block(1, 16384, 16384))),
            vec![0x08, 0, 0, 0, 1, 0, 0, 0x40, 0, 0, 0, 0x40, 0]
        );
        assert_eq!(
            round(Message::Data {
                fragment: 2,
                offset: 0,
                bytes: b"xy"
            }),
            vec![0x09, 0, 0, 0, 2, 0, 0, 0, 0, b'x', b'y']
        );
        for (m, t) in [
            (Message::Interested, 4u8),
            (Message::NotInterested, 5),
            (Message::Choke, 6),
            (Message::Unchoke, 7),
        ] {
            assert_eq!(round(m), vec![t]);
        }
        round(Message::Cancel(block(0, 0, 1)));
        round(Message::Reject(block(0, 0, MAX_BLOCK)));
        round(Message::HaveMap(&[0b1010_0000]));
        // The PEX vector of spec/discovery.md §4: added 10.0.0.2:6881, dropped [fd00::1]:7000.
        let a = [PexEntry::from_addr("10.0.0.2:6881".parse().unwrap())];
        let d = [PexEntry::from_addr("[fd00::1]:7000".parse().unwrap())];
        let b = round(Message::Pex {
            added: &a,
            dropped: &d,
        });
        let mut want = vec![0x0C, 0x01];
        want.extend([
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 10, 0, 0, 2, 0x1A, 0xE1,
        ]);
        want.extend([
            0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x1B, 0x58,
        ]);
        assert_eq!(b, want);
        assert_eq!(a[0].to_addr(), "10.0.0.2:6881".parse().unwrap());
        assert_eq!(d[0].to_addr(), "[fd00::1]:7000".parse().unwrap());
        round(Message::Pex {
            added: &[],
            dropped: &[],
        });
    }

    #[test]
    fn pex_lists_are_bounded() {
        let e = PexEntry::from_addr("10.0.0.2:1".parse().unwrap());
        let mut m = vec![0x0C, 51];
        for _ in 0..51 {
            m.extend_from_slice(e.as_bytes());
        }
        assert_eq!(parse(&m), Err(PeerError::Pex), "51 added");
        m[1] = 0;
        assert_eq!(parse(&m), Err(PeerError::Pex), "51 dropped");
        m[1] = 2;
        m.truncate(2 + 18);
        assert_eq!(parse(&m), Err(PeerError::Pex), "count over entries");
        m[1] = 1;
        assert!(parse(&m).is_ok());
        m.push(0);
        assert_eq!(parse(&m), Err(PeerError::Length(0x0C)), "partial entry");
        assert_eq!(parse(&[0x0C]), Err(PeerError::Length(0x0C)));
        let mut z = vec![0x0C, 1];
        z.extend_from_slice(PexEntry::from_addr("10.0.0.2:0".parse().unwrap()).as_bytes());
        assert_eq!(parse(&z), Err(PeerError::Pex), "port 0");
    }

    #[test]
    fn rejects_bad_messages() {
        assert_eq!(parse(&[]), Err(PeerError::Empty));
        assert_eq!(parse(&[0x77]), Err(PeerError::UnknownType(0x77)));
        assert_eq!(parse(&[0x04, 0]), Err(PeerError::Length(0x04)));
        assert_eq!(parse(&[0x03, 0, 0, 0]), Err(PeerError::Length(0x03)));
        assert_eq!(parse(&[0x01; 40]), Err(PeerError::Length(0x01)));
        let mut r = vec![0x08];
        r.extend(block(0, 0, 0).as_bytes());
        assert_eq!(parse(&r), Err(PeerError::BlockLength));
        let mut r = vec![0x08];
        r.extend(block(0, 0, MAX_BLOCK + 1).as_bytes());
        assert_eq!(parse(&r), Err(PeerError::BlockLength));
        assert_eq!(
            parse(&[0x09, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(PeerError::BlockLength)
        );
        let big = vec![0u8; 9 + MAX_BLOCK as usize + 1];
        let mut big = big;
        big[0] = 0x09;
        assert_eq!(parse(&big), Err(PeerError::BlockLength));
    }

    #[test]
    fn have_maps_are_checked() {
        assert!(check_have_map(&[0xFF, 0x80], 9));
        assert!(!check_have_map(&[0xFF, 0xC0], 9), "padding bit set");
        assert!(!check_have_map(&[0xFF], 9), "too short");
        assert!(!check_have_map(&[0xFF, 0, 0], 9), "too long");
        assert!(check_have_map(&[0xFF], 8));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 7u64;
        for len in 0..600 {
            let mut b: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (x >> 56) as u8
                })
                .collect();
            for t in 0..14u8 {
                if let Some(f) = b.first_mut() {
                    *f = t;
                }
                fuzz_check(&b).unwrap();
            }
        }
    }
}
