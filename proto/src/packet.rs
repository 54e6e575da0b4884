//! Transport datagram layouts (normative text: `spec/transport.md`).
//!
//! This module owns the bytes of every datagram the transport sends: the 32-byte common header
//! (§2), the body of each packet type (§3) and the frames carried by DATA packets (§4). It does
//! no IO and keeps no state. Parsing is total: every length is checked before a field is read,
//! and unknown versions, packet types and frame types are errors, never panics.
//!
//! Fixed layouts are `zerocopy` structs (`#[repr(C)]`, unaligned, network byte order). Writers
//! take a `&mut [u8]` and return the number of bytes written (or the new end), or
//! [`BufferTooShort`] when the buffer is too small; [`seal`] fills in the checksum last.
//! [`write_ack`] and [`write_frame`] also refuse inputs they cannot encode and return `None`.

use crate::{BufferTooShort, crc};
use zerocopy::byteorder::network_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The two bytes every datagram starts with: `S T` (spec §2).
pub const MAGIC: [u8; 2] = *b"ST";
/// The only wire version this implementation speaks (spec §2).
pub const VERSION: u8 = 1;
/// Size of the common header in bytes (spec §2).
pub const HEADER_LEN: usize = 32;
/// Offset of the checksum field in the common header.
const CHECKSUM_AT: usize = 28;
/// Minimum UDP payload of an INITIAL datagram (spec §5.1, RFC 9000 §14.1).
pub const MIN_INITIAL_LEN: usize = 1200;
/// Length of a handshake cookie (spec §5.2).
pub const COOKIE_LEN: usize = 16;
/// Length of a stateless reset token (spec §7.2).
pub const TOKEN_LEN: usize = 16;
/// Largest CLOSE reason accepted or emitted (spec §3.5).
pub const MAX_REASON_LEN: usize = 256;
/// Largest number of extra ranges in one ACK frame (spec §4.3).
pub const MAX_ACK_RANGES: usize = 64;

/// Errors of [`parse`] and [`Frames`]; each names the first rule the input broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The datagram is shorter than the common header.
    #[error("datagram shorter than the 32-byte header")]
    TooShort,
    /// The first two bytes are not `ST`.
    #[error("bad magic")]
    BadMagic,
    /// The version byte is not one this implementation speaks.
    #[error("unknown version {0}")]
    UnknownVersion(u8),
    /// The type byte names no packet type.
    #[error("unknown packet type {0:#04x}")]
    UnknownType(u8),
    /// The checksum does not match the datagram's bytes.
    #[error("checksum mismatch")]
    BadChecksum,
    /// The body is shorter than its packet type requires.
    #[error("truncated packet body")]
    Truncated,
    /// An INITIAL datagram is shorter than 1200 bytes.
    #[error("INITIAL datagram shorter than 1200 bytes")]
    InitialTooSmall,
    /// A fixed-size body has bytes after it, or a field is out of range.
    #[error("malformed packet body")]
    Malformed,
    /// A frame type byte names no frame type.
    #[error("unknown frame type {0:#04x}")]
    UnknownFrame(u8),
    /// A frame runs past the end of the packet.
    #[error("truncated frame")]
    TruncatedFrame,
    /// An ACK frame's ranges are inconsistent (underflow, too many ranges).
    #[error("invalid ACK frame")]
    BadAck,
}

/// The type byte of the common header (spec §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// Client's first datagram, padded to 1200 bytes (§3.1).
    Initial = 0x01,
    /// Server's stateless answer carrying a cookie (§3.2).
    Retry = 0x02,
    /// Server accepts a connection (§3.3).
    Accept = 0x03,
    /// Frames of an established connection (§3.4).
    Data = 0x04,
    /// Connection close (§3.5).
    Close = 0x05,
    /// Stateless reset (§3.6).
    Reset = 0x06,
    /// Request of the request/response mode (§3.7).
    Request = 0x07,
    /// Response of the request/response mode (§3.7).
    Response = 0x08,
}

impl PacketType {
    /// Decodes a type byte.
    pub fn from_u8(b: u8) -> Result<Self, PacketError> {
        Ok(match b {
            0x01 => Self::Initial,
            0x02 => Self::Retry,
            0x03 => Self::Accept,
            0x04 => Self::Data,
            0x05 => Self::Close,
            0x06 => Self::Reset,
            0x07 => Self::Request,
            0x08 => Self::Response,
            other => return Err(PacketError::UnknownType(other)),
        })
    }
}

/// The common header as it is on the wire (spec §2).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct WireHeader {
    /// `ST`.
    pub magic: [u8; 2],
    /// Wire version, 1.
    pub version: u8,
    /// Packet type byte.
    pub ptype: u8,
    /// Connection id chosen by the receiver of this datagram.
    pub dcid: U64,
    /// Connection id chosen by the sender of this datagram.
    pub scid: U64,
    /// Packet number (or request id in request/response mode).
    pub pn: U64,
    /// CRC32C of the datagram with this field skipped.
    pub checksum: U32,
}

/// A decoded common header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Packet type.
    pub ptype: PacketType,
    /// Destination connection id.
    pub dcid: u64,
    /// Source connection id.
    pub scid: u64,
    /// Packet number or request id.
    pub pn: u64,
}

/// Connection parameters carried by INITIAL and ACCEPT (spec §3.1).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct WireParams {
    /// Largest application message the sender accepts, bytes.
    pub max_message: U32,
    /// Initial receive window (stream bytes the peer may send), bytes.
    pub recv_window: U64,
    /// Idle timeout in milliseconds (0 = none).
    pub idle_timeout_ms: U32,
    /// Largest delay before the sender acknowledges, milliseconds.
    pub max_ack_delay_ms: U16,
    /// Largest UDP payload the sender is willing to receive.
    pub max_udp_payload: U16,
    /// Token that authenticates a stateless reset for this connection.
    pub reset_token: [u8; TOKEN_LEN],
}

/// Decoded connection parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Largest application message accepted, bytes.
    pub max_message: u32,
    /// Initial receive window, bytes.
    pub recv_window: u64,
    /// Idle timeout in milliseconds (0 = none).
    pub idle_timeout_ms: u32,
    /// Largest ack delay in milliseconds.
    pub max_ack_delay_ms: u16,
    /// Largest UDP payload accepted.
    pub max_udp_payload: u16,
    /// Stateless reset token.
    pub reset_token: [u8; TOKEN_LEN],
}

impl Params {
    fn from_wire(w: &WireParams) -> Self {
        Self {
            max_message: w.max_message.get(),
            recv_window: w.recv_window.get(),
            idle_timeout_ms: w.idle_timeout_ms.get(),
            max_ack_delay_ms: w.max_ack_delay_ms.get(),
            max_udp_payload: w.max_udp_payload.get(),
            reset_token: w.reset_token,
        }
    }
    fn to_wire(self) -> WireParams {
        WireParams {
            max_message: U32::new(self.max_message),
            recv_window: U64::new(self.recv_window),
            idle_timeout_ms: U32::new(self.idle_timeout_ms),
            max_ack_delay_ms: U16::new(self.max_ack_delay_ms),
            max_udp_payload: U16::new(self.max_udp_payload),
            reset_token: self.reset_token,
        }
    }
}

/// Size of [`WireParams`] on the wire.
pub const PARAMS_LEN: usize = core::mem::size_of::<WireParams>();

/// CLOSE body prefix (spec §3.5).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
struct WireClose {
    code: U32,
    reason_len: U16,
}

/// A parsed datagram. Borrowed parts point into the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// INITIAL: cookie (all zero when the client has none yet), parameters, padding length.
    Initial {
        /// Header.
        hdr: Header,
        /// Cookie echoed from a RETRY, or zeros.
        cookie: [u8; COOKIE_LEN],
        /// Client parameters.
        params: Params,
        /// Bytes of padding after the parameters.
        padding: usize,
    },
    /// RETRY: the cookie to echo.
    Retry {
        /// Header.
        hdr: Header,
        /// Cookie.
        cookie: [u8; COOKIE_LEN],
    },
    /// ACCEPT: server parameters.
    Accept {
        /// Header.
        hdr: Header,
        /// Server parameters.
        params: Params,
    },
    /// DATA: a frame sequence, iterate it with [`Frames`].
    Data {
        /// Header.
        hdr: Header,
        /// Frame bytes.
        frames: &'a [u8],
    },
    /// CLOSE: error code and reason.
    Close {
        /// Header.
        hdr: Header,
        /// Application or transport error code (spec §7.1).
        code: u32,
        /// Reason text (bytes, not necessarily UTF-8).
        reason: &'a [u8],
    },
    /// RESET: stateless reset token.
    Reset {
        /// Header.
        hdr: Header,
        /// Token.
        token: [u8; TOKEN_LEN],
    },
    /// REQUEST: opaque payload; `hdr.pn` is the request id.
    Request {
        /// Header.
        hdr: Header,
        /// Payload.
        payload: &'a [u8],
    },
    /// RESPONSE: opaque payload; `hdr.pn` is the id of the request answered.
    Response {
        /// Header.
        hdr: Header,
        /// Payload.
        payload: &'a [u8],
    },
}

impl Packet<'_> {
    /// Bytes [`emit`] writes for this packet: the header and the body (spec §3), a CLOSE
    /// reason cut to [`MAX_REASON_LEN`]. Saturates at `usize::MAX` (an INITIAL with absurd
    /// padding), which no buffer holds.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN.saturating_add(match self {
            Packet::Initial { padding, .. } => (COOKIE_LEN + PARAMS_LEN).saturating_add(*padding),
            Packet::Retry { .. } => COOKIE_LEN,
            Packet::Accept { .. } => PARAMS_LEN,
            Packet::Data { frames, .. } => frames.len(),
            Packet::Close { reason, .. } => {
                core::mem::size_of::<WireClose>() + reason.len().min(MAX_REASON_LEN)
            }
            Packet::Reset { .. } => TOKEN_LEN,
            Packet::Request { payload, .. } | Packet::Response { payload, .. } => payload.len(),
        })
    }

    /// The header of any packet.
    pub fn header(&self) -> &Header {
        match self {
            Packet::Initial { hdr, .. }
            | Packet::Retry { hdr, .. }
            | Packet::Accept { hdr, .. }
            | Packet::Data { hdr, .. }
            | Packet::Close { hdr, .. }
            | Packet::Reset { hdr, .. }
            | Packet::Request { hdr, .. }
            | Packet::Response { hdr, .. } => hdr,
        }
    }
}

/// CRC32C of a datagram, skipping the checksum field (spec §2.1). Of a datagram's first
/// bytes, it is the state to continue over the rest with [`crate::crc`] (a sender copying the
/// payload in), then to write with [`seal_with`].
pub fn checksum(datagram: &[u8]) -> u32 {
    if datagram.len() < HEADER_LEN {
        return crc::crc32c_append(0, datagram);
    }
    let c = crc::crc32c_append(0, &datagram[..CHECKSUM_AT]);
    crc::crc32c_append(c, &datagram[HEADER_LEN..])
}

/// Writes `checksum`, computed by the caller over the whole datagram as [`checksum`] does,
/// into its header. Does nothing on a buffer shorter than the header.
pub fn seal_with(datagram: &mut [u8], checksum: u32) {
    if let Some(field) = datagram.get_mut(CHECKSUM_AT..HEADER_LEN) {
        field.copy_from_slice(&checksum.to_be_bytes());
    }
}

/// Writes the checksum of `datagram` into its header. Call after the whole datagram is written.
/// Does nothing on a buffer shorter than the header.
pub fn seal(datagram: &mut [u8]) {
    if datagram.len() < HEADER_LEN {
        return;
    }
    let c = checksum(datagram);
    seal_with(datagram, c);
}

/// Parses only the header, verifying magic, version, type and checksum.
pub fn parse_header(datagram: &[u8]) -> Result<Header, PacketError> {
    let (w, _) = WireHeader::ref_from_prefix(datagram).map_err(|_| PacketError::TooShort)?;
    if w.magic != MAGIC {
        return Err(PacketError::BadMagic);
    }
    if w.version != VERSION {
        return Err(PacketError::UnknownVersion(w.version));
    }
    let ptype = PacketType::from_u8(w.ptype)?;
    if w.checksum.get() != checksum(datagram) {
        return Err(PacketError::BadChecksum);
    }
    Ok(Header {
        ptype,
        dcid: w.dcid.get(),
        scid: w.scid.get(),
        pn: w.pn.get(),
    })
}

/// Parses a whole datagram (spec §2–§3). Never panics; checks every length first.
pub fn parse(datagram: &[u8]) -> Result<Packet<'_>, PacketError> {
    let hdr = parse_header(datagram)?;
    let body = &datagram[HEADER_LEN..];
    Ok(match hdr.ptype {
        PacketType::Initial => {
            if datagram.len() < MIN_INITIAL_LEN {
                return Err(PacketError::InitialTooSmall);
            }
            let (cookie, rest) =
                <[u8; COOKIE_LEN]>::read_from_prefix(body).map_err(|_| PacketError::Truncated)?;
            let (p, pad) = WireParams::ref_from_prefix(rest).map_err(|_| PacketError::Truncated)?;
            if pad.iter().any(|&b| b != 0) {
                return Err(PacketError::Malformed);
            }
            Packet::Initial {
                hdr,
                cookie,
                params: Params::from_wire(p),
                padding: pad.len(),
            }
        }
        PacketType::Retry => {
            let cookie =
                <[u8; COOKIE_LEN]>::read_from_bytes(body).map_err(|_| PacketError::Malformed)?;
            Packet::Retry { hdr, cookie }
        }
        PacketType::Accept => {
            let p = WireParams::ref_from_bytes(body).map_err(|_| PacketError::Malformed)?;
            Packet::Accept {
                hdr,
                params: Params::from_wire(p),
            }
        }
        PacketType::Data => Packet::Data { hdr, frames: body },
        PacketType::Close => {
            let (c, rest) = WireClose::ref_from_prefix(body).map_err(|_| PacketError::Truncated)?;
            let n = usize::from(c.reason_len.get());
            if n > MAX_REASON_LEN || rest.len() != n {
                return Err(PacketError::Malformed);
            }
            Packet::Close {
                hdr,
                code: c.code.get(),
                reason: rest,
            }
        }
        PacketType::Reset => {
            let token =
                <[u8; TOKEN_LEN]>::read_from_bytes(body).map_err(|_| PacketError::Malformed)?;
            Packet::Reset { hdr, token }
        }
        PacketType::Request => Packet::Request { hdr, payload: body },
        PacketType::Response => Packet::Response { hdr, payload: body },
    })
}

/// Writes a common header with a zero checksum. Returns [`HEADER_LEN`], or [`BufferTooShort`]
/// if `buf` is shorter.
pub fn write_header(buf: &mut [u8], h: &Header) -> Result<usize, BufferTooShort> {
    let w = WireHeader {
        magic: MAGIC,
        version: VERSION,
        ptype: h.ptype as u8,
        dcid: U64::new(h.dcid),
        scid: U64::new(h.scid),
        pn: U64::new(h.pn),
        checksum: U32::new(0),
    };
    w.write_to_prefix(buf).map_err(|_| BufferTooShort {
        need: HEADER_LEN,
        have: buf.len(),
    })?;
    Ok(HEADER_LEN)
}

/// `buf[at..at + len]`, or [`BufferTooShort`] naming the end that did not fit.
fn room(buf: &mut [u8], at: usize, len: usize) -> Result<&mut [u8], BufferTooShort> {
    let have = buf.len();
    let need = at.saturating_add(len);
    match at.checked_add(len) {
        Some(end) if end <= have => Ok(&mut buf[at..end]),
        _ => Err(BufferTooShort { need, have }),
    }
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) -> Result<usize, BufferTooShort> {
    room(buf, at, bytes.len())?.copy_from_slice(bytes);
    Ok(at + bytes.len())
}

/// Emits `p` into `buf` (header, body, checksum). Returns the datagram length
/// ([`Packet::buffer_len`]), or [`BufferTooShort`] with nothing useful written. A CLOSE reason
/// longer than [`MAX_REASON_LEN`] is cut rather than sent malformed (callers keep to it).
pub fn emit(p: &Packet<'_>, buf: &mut [u8]) -> Result<usize, BufferTooShort> {
    let need = p.buffer_len();
    if buf.len() < need {
        return Err(BufferTooShort {
            need,
            have: buf.len(),
        });
    }
    let mut n = write_header(buf, p.header())?;
    match p {
        Packet::Initial {
            cookie,
            params,
            padding,
            ..
        } => {
            n = put(buf, n, cookie)?;
            n = put(buf, n, params.to_wire().as_bytes())?;
            n = write_padding(buf, n, *padding)?;
        }
        Packet::Retry { cookie, .. } => n = put(buf, n, cookie)?,
        Packet::Accept { params, .. } => n = put(buf, n, params.to_wire().as_bytes())?,
        Packet::Data { frames, .. } => n = put(buf, n, frames)?,
        Packet::Close { code, reason, .. } => {
            let reason = &reason[..reason.len().min(MAX_REASON_LEN)];
            let c = WireClose {
                code: U32::new(*code),
                reason_len: U16::new(reason.len() as u16),
            };
            n = put(buf, n, c.as_bytes())?;
            n = put(buf, n, reason)?;
        }
        Packet::Reset { token, .. } => n = put(buf, n, token)?,
        Packet::Request { payload, .. } | Packet::Response { payload, .. } => {
            n = put(buf, n, payload)?
        }
    }
    seal(&mut buf[..n]);
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// Frames (spec §4)

/// Frame type bytes (spec §4).
pub mod frame_type {
    /// One byte of padding.
    pub const PADDING: u8 = 0x00;
    /// Ack-eliciting no-op.
    pub const PING: u8 = 0x01;
    /// Acknowledgement ranges.
    pub const ACK: u8 = 0x02;
    /// Stream bytes.
    pub const STREAM: u8 = 0x03;
    /// Flow-control credit.
    pub const MAX_DATA: u8 = 0x04;
    /// Sender is blocked by flow control.
    pub const DATA_BLOCKED: u8 = 0x05;
}

/// ACK frame fixed part (after the type byte).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct WireAck {
    /// Largest acknowledged packet number.
    pub largest: U64,
    /// Ack delay in microseconds.
    pub delay_us: U32,
    /// Number of packet numbers below `largest` in the first range.
    pub first_range: U32,
    /// Number of [`WireAckRange`] entries that follow.
    pub range_count: U16,
}

/// One additional ACK range (spec §4.3, as RFC 9000 §19.3.1).
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct WireAckRange {
    /// Unacknowledged packet numbers between ranges, minus one... exactly: the next range's
    /// largest is the previous range's smallest minus `gap` minus 2.
    pub gap: U32,
    /// Number of packet numbers below the range's largest that are acknowledged.
    pub len: U32,
}

/// STREAM frame fixed part (after the type byte).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct WireStream {
    /// Stream offset of the first data byte.
    pub offset: U64,
    /// Number of data bytes that follow.
    pub len: U16,
}

/// Bytes a STREAM frame adds before its data.
pub const STREAM_OVERHEAD: usize = 1 + core::mem::size_of::<WireStream>();
/// Bytes of an ACK frame with no extra ranges.
pub const ACK_BASE_LEN: usize = 1 + core::mem::size_of::<WireAck>();
/// Bytes of one extra ACK range.
pub const ACK_RANGE_LEN: usize = core::mem::size_of::<WireAckRange>();

/// A validated ACK frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckFrame<'a> {
    /// Largest acknowledged.
    pub largest: u64,
    /// Ack delay, microseconds.
    pub delay_us: u32,
    /// First range length below `largest`.
    pub first_range: u32,
    /// Extra ranges in wire form.
    pub ranges: &'a [WireAckRange],
}

impl AckFrame<'_> {
    /// Inclusive `(smallest, largest)` ranges, from highest to lowest. Validated at parse time,
    /// so this never underflows.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let hi = self.largest;
        let mut lo = self.largest.saturating_sub(u64::from(self.first_range));
        let first = core::iter::once((lo, hi));
        first.chain(self.ranges.iter().map(move |r| {
            let hi = lo.saturating_sub(u64::from(r.gap.get()) + 2);
            lo = hi.saturating_sub(u64::from(r.len.get()));
            (lo, hi)
        }))
    }
}

/// A parsed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A run of padding bytes.
    Padding(usize),
    /// PING.
    Ping,
    /// ACK.
    Ack(AckFrame<'a>),
    /// STREAM data at an offset.
    Stream {
        /// Offset of `data[0]`.
        offset: u64,
        /// Bytes.
        data: &'a [u8],
    },
    /// MAX_DATA: the peer may send stream bytes below this offset.
    MaxData(u64),
    /// DATA_BLOCKED: the sender is blocked at this offset.
    DataBlocked(u64),
}

/// Iterator over the frames of a DATA packet. Yields an error once and then stops.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    rest: &'a [u8],
}

impl<'a> Frames<'a> {
    /// Iterates `body`, the bytes after the header of a DATA packet.
    pub fn new(body: &'a [u8]) -> Self {
        Self { rest: body }
    }

    fn next_frame(&mut self) -> Result<Frame<'a>, PacketError> {
        let (&ty, rest) = self.rest.split_first().ok_or(PacketError::TruncatedFrame)?;
        match ty {
            frame_type::PADDING => {
                let n = 1 + rest.iter().take_while(|&&b| b == 0).count();
                self.rest = &self.rest[n..];
                Ok(Frame::Padding(n))
            }
            frame_type::PING => {
                self.rest = rest;
                Ok(Frame::Ping)
            }
            frame_type::ACK => {
                let (a, rest) =
                    WireAck::ref_from_prefix(rest).map_err(|_| PacketError::TruncatedFrame)?;
                let count = usize::from(a.range_count.get());
                if count > MAX_ACK_RANGES {
                    return Err(PacketError::BadAck);
                }
                let (ranges, rest) = <[WireAckRange]>::ref_from_prefix_with_elems(rest, count)
                    .map_err(|_| PacketError::TruncatedFrame)?;
                // Validate: no range may go below zero (RFC 9000 §19.3.1).
                let largest = a.largest.get();
                let mut lo = largest
                    .checked_sub(u64::from(a.first_range.get()))
                    .ok_or(PacketError::BadAck)?;
                for r in ranges {
                    let hi = lo
                        .checked_sub(u64::from(r.gap.get()) + 2)
                        .ok_or(PacketError::BadAck)?;
                    lo = hi
                        .checked_sub(u64::from(r.len.get()))
                        .ok_or(PacketError::BadAck)?;
                }
                self.rest = rest;
                Ok(Frame::Ack(AckFrame {
                    largest,
                    delay_us: a.delay_us.get(),
                    first_range: a.first_range.get(),
                    ranges,
                }))
            }
            frame_type::STREAM => {
                let (s, rest) =
                    WireStream::ref_from_prefix(rest).map_err(|_| PacketError::TruncatedFrame)?;
                let n = usize::from(s.len.get());
                let data = rest.get(..n).ok_or(PacketError::TruncatedFrame)?;
                let offset = s.offset.get();
                offset.checked_add(n as u64).ok_or(PacketError::Malformed)?;
                self.rest = &rest[n..];
                Ok(Frame::Stream { offset, data })
            }
            frame_type::MAX_DATA | frame_type::DATA_BLOCKED => {
                let (v, rest) =
                    U64::read_from_prefix(rest).map_err(|_| PacketError::TruncatedFrame)?;
                self.rest = rest;
                Ok(if ty == frame_type::MAX_DATA {
                    Frame::MaxData(v.get())
                } else {
                    Frame::DataBlocked(v.get())
                })
            }
            other => Err(PacketError::UnknownFrame(other)),
        }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, PacketError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = self.next_frame();
        if r.is_err() {
            self.rest = &[];
        }
        Some(r)
    }
}

/// Writes a PING frame at `buf[at..]`; returns the new end, or [`BufferTooShort`].
pub fn write_ping(buf: &mut [u8], at: usize) -> Result<usize, BufferTooShort> {
    put(buf, at, &[frame_type::PING])
}

/// Writes `n` bytes of padding at `buf[at..]`; returns the new end, or [`BufferTooShort`].
pub fn write_padding(buf: &mut [u8], at: usize, n: usize) -> Result<usize, BufferTooShort> {
    room(buf, at, n)?.fill(0);
    Ok(at + n)
}

/// Writes a MAX_DATA or DATA_BLOCKED frame at `buf[at..]`; returns the new end, or
/// [`BufferTooShort`] with nothing written.
pub fn write_u64_frame(buf: &mut [u8], at: usize, ty: u8, v: u64) -> Result<usize, BufferTooShort> {
    let out = room(buf, at, 1 + 8)?;
    out[0] = ty;
    out[1..].copy_from_slice(&v.to_be_bytes());
    Ok(at + 1 + 8)
}

/// Writes a STREAM frame header for `len` bytes at `offset`; the caller copies the data to
/// `buf[ret..ret + len]`. Returns the index where the data starts, or [`BufferTooShort`] (with
/// nothing written) if the header and the `len` data bytes do not both fit.
pub fn write_stream_header(
    buf: &mut [u8],
    at: usize,
    offset: u64,
    len: u16,
) -> Result<usize, BufferTooShort> {
    let w = WireStream {
        offset: U64::new(offset),
        len: U16::new(len),
    };
    let frame = room(buf, at, STREAM_OVERHEAD + usize::from(len))?;
    frame[0] = frame_type::STREAM;
    frame[1..STREAM_OVERHEAD].copy_from_slice(w.as_bytes());
    Ok(at + STREAM_OVERHEAD)
}

/// Writes an ACK frame from inclusive ranges given highest first (as a receiver keeps them).
/// Writes at most [`MAX_ACK_RANGES`] extra ranges and no more than fit in `buf`. Returns the new
/// end, or `None` if not even the base frame fits or `ranges` is empty or not descending.
/// (`None` rather than [`BufferTooShort`]: an unencodable first range is not a buffer
/// problem.)
pub fn write_ack(
    buf: &mut [u8],
    at: usize,
    delay_us: u32,
    ranges: impl IntoIterator<Item = (u64, u64)>,
) -> Option<usize> {
    let mut it = ranges.into_iter();
    let (lo0, hi0) = it.next()?;
    if lo0 > hi0 {
        return None;
    }
    let base_end = at.checked_add(ACK_BASE_LEN)?;
    if buf.len() < base_end {
        return None;
    }
    let first = u32::try_from(hi0 - lo0).ok()?;
    let mut n = base_end;
    let mut count: u16 = 0;
    let mut prev_lo = lo0;
    for (lo, hi) in it {
        if usize::from(count) >= MAX_ACK_RANGES || n + ACK_RANGE_LEN > buf.len() {
            break;
        }
        if lo > hi || hi.checked_add(2).is_none_or(|h| h > prev_lo) {
            break;
        }
        let (Ok(gap), Ok(len)) = (u32::try_from(prev_lo - hi - 2), u32::try_from(hi - lo)) else {
            break;
        };
        let r = WireAckRange {
            gap: U32::new(gap),
            len: U32::new(len),
        };
        buf[n..n + ACK_RANGE_LEN].copy_from_slice(r.as_bytes());
        n += ACK_RANGE_LEN;
        count += 1;
        prev_lo = lo;
    }
    buf[at] = frame_type::ACK;
    let a = WireAck {
        largest: U64::new(hi0),
        delay_us: U32::new(delay_us),
        first_range: U32::new(first),
        range_count: U16::new(count),
    };
    buf[at + 1..base_end].copy_from_slice(a.as_bytes());
    Some(n)
}

/// Emits one parsed frame (used by round-trip checks). Returns the new end, or `None` if `buf`
/// is too small or the frame has no exact encoding (an ACK that [`write_ack`] would cut, a
/// STREAM of more than 65535 bytes).
pub fn write_frame(buf: &mut [u8], at: usize, f: &Frame<'_>) -> Option<usize> {
    match f {
        Frame::Padding(n) => write_padding(buf, at, *n).ok(),
        Frame::Ping => write_ping(buf, at).ok(),
        Frame::Ack(a) => {
            let n = write_ack(buf, at, a.delay_us, a.iter())?;
            // write_ack stops early on odd inputs; require an exact re-encoding.
            (n == at + ACK_BASE_LEN + a.ranges.len() * ACK_RANGE_LEN).then_some(n)
        }
        Frame::Stream { offset, data } => {
            let len = u16::try_from(data.len()).ok()?;
            let n = write_stream_header(buf, at, *offset, len).ok()?;
            put(buf, n, data).ok()
        }
        Frame::MaxData(v) => write_u64_frame(buf, at, frame_type::MAX_DATA, *v).ok(),
        Frame::DataBlocked(v) => write_u64_frame(buf, at, frame_type::DATA_BLOCKED, *v).ok(),
    }
}

/// The fuzz and corpus check (spec §9): parse `data`; if that succeeds, emit the packet (and,
/// for DATA, each frame) and parse again; the two parses must be equal. Returns `Err` with a
/// description when the invariant breaks; `Ok(true)` if the input parsed, `Ok(false)` if not.
pub fn roundtrip_check(data: &[u8]) -> Result<bool, String> {
    let Ok(p) = parse(data) else {
        // Frames of arbitrary bytes are checked too, as if they were a DATA body.
        frames_roundtrip(data)?;
        return Ok(false);
    };
    let mut buf = vec![0u8; data.len() + 64];
    let n = emit(&p, &mut buf).map_err(|e| format!("emit failed on a parsed packet: {e}"))?;
    if buf[..n] != *data {
        return Err(format!("emit differs from input: {:?}", p));
    }
    let q = parse(&buf[..n]).map_err(|e| format!("re-parse failed: {e}"))?;
    if p != q {
        return Err(format!("re-parse differs: {p:?} vs {q:?}"));
    }
    if let Packet::Data { frames, .. } = p {
        frames_roundtrip(frames)?;
    }
    Ok(true)
}

fn frames_roundtrip(body: &[u8]) -> Result<(), String> {
    let frames: Vec<Frame<'_>> = match Frames::new(body).collect::<Result<_, _>>() {
        Ok(f) => f,
        Err(_) => return Ok(()),
    };
    let mut buf = vec![0u8; body.len() + 16];
    let mut n = 0;
    for f in &frames {
        n = write_frame(&mut buf, n, f).ok_or_else(|| format!("frame emit failed: {f:?}"))?;
    }
    if buf[..n] != *body {
        return Err(format!("frame re-encoding differs: {frames:?}"));
    }
    let again: Vec<Frame<'_>> = Frames::new(&buf[..n])
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if again != frames {
        return Err("frame re-parse differs".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
