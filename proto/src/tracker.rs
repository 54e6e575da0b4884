//! Tracker wire formats (normative text: `spec/tracker.md`): the native SwarmTorrent tracker
//! messages, carried in the payload of transport REQUEST/RESPONSE packets, and BitTorrent's
//! BEP 15 UDP tracker protocol, spoken on the same port.
//!
//! Fixed parts are zerocopy structs of network-endian fields; every parser checks the length
//! before it reads a field and returns `None` (drop, no reply) on anything malformed. Emitters
//! write into a caller's buffer and never allocate, so the tracker's hot path does not either;
//! they return the length written, or [`BufferTooShort`] (the two that also refuse arguments
//! out of range, [`emit_padded_announce_request`] and [`emit_scrape_request`], return `None`).

use crate::BufferTooShort;
use zerocopy::byteorder::network_endian::{I32, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Length of a swarm id (SHA-256 of the info part of a `.st` file).
pub const SWARM_ID_LEN: usize = 32;
/// Length of a BEP 15 info hash: the first 20 bytes of the swarm id.
pub const INFO_HASH_LEN: usize = 20;
/// Most swarms in one scrape request, in both protocols.
pub const MAX_SCRAPE: usize = 70;

/// A peer's state, as announced (spec §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A regular re-announce.
    Periodic,
    /// The peer joined the swarm.
    Started,
    /// The peer finished downloading (counted once).
    Completed,
    /// The peer leaves the swarm.
    Stopped,
}

impl Event {
    fn from_native(b: u8) -> Option<Event> {
        Some(match b {
            0 => Event::Periodic,
            1 => Event::Started,
            2 => Event::Completed,
            3 => Event::Stopped,
            _ => return None,
        })
    }

    fn native(self) -> u8 {
        match self {
            Event::Periodic => 0,
            Event::Started => 1,
            Event::Completed => 2,
            Event::Stopped => 3,
        }
    }

    /// BEP 15 numbering: 0 none, 1 completed, 2 started, 3 stopped.
    fn from_bep15(v: u32) -> Option<Event> {
        Some(match v {
            0 => Event::Periodic,
            1 => Event::Completed,
            2 => Event::Started,
            3 => Event::Stopped,
            _ => return None,
        })
    }

    fn bep15(self) -> u32 {
        match self {
            Event::Periodic => 0,
            Event::Completed => 1,
            Event::Started => 2,
            Event::Stopped => 3,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Native messages (spec §3).

/// Native message kinds (first byte of a payload).
pub mod kind {
    /// CONNECT request.
    pub const CONNECT: u8 = 0x01;
    /// ANNOUNCE request.
    pub const ANNOUNCE: u8 = 0x02;
    /// SCRAPE request.
    pub const SCRAPE: u8 = 0x03;
    /// CONNECT response.
    pub const CONNECTED: u8 = 0x81;
    /// ANNOUNCE response.
    pub const ANNOUNCED: u8 = 0x82;
    /// SCRAPE response.
    pub const SCRAPED: u8 = 0x83;
    /// ERROR response.
    pub const ERROR: u8 = 0xFF;
}

/// Native CONNECT request: 16 bytes, so that its 16-byte answer is no larger (spec §3.1).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct ConnectRequest {
    /// [`kind::CONNECT`].
    pub kind: u8,
    /// Zero.
    pub reserved: [u8; 15],
}

/// Native CONNECT response: 16 bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct ConnectResponse {
    /// [`kind::CONNECTED`].
    pub kind: u8,
    /// Zero.
    pub reserved: [u8; 7],
    /// The connection id to quote in announces and scrapes.
    pub connection_id: U64,
}

/// Native ANNOUNCE request: 88 bytes (spec §3.2).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct AnnounceRequest {
    /// [`kind::ANNOUNCE`].
    pub kind: u8,
    /// 0 periodic, 1 started, 2 completed, 3 stopped.
    pub event: u8,
    /// The UDP port the peer listens on for the peer protocol (never 0).
    pub port: U16,
    /// How many peers the requester wants (capped by the tracker).
    pub numwant: U16,
    /// Zero.
    pub reserved: [u8; 2],
    /// From a CONNECT response.
    pub connection_id: U64,
    /// The swarm.
    pub swarm_id: [u8; SWARM_ID_LEN],
    /// Random id of the peer process, stable for its life.
    pub peer_id: [u8; 16],
    /// Bytes the peer still lacks (0: it is a seed).
    pub left: U64,
    /// Bytes uploaded so far.
    pub uploaded: U64,
    /// Bytes downloaded so far.
    pub downloaded: U64,
}

/// Fixed part of a native ANNOUNCE response: 20 bytes, then `count` peers (spec §3.2).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct AnnounceResponseHead {
    /// [`kind::ANNOUNCED`].
    pub kind: u8,
    /// 4: peers are 6 bytes (IPv4, port); 6: 18 bytes (IPv6, port).
    pub family: u8,
    /// Number of peers that follow.
    pub count: U16,
    /// Seconds until the next announce.
    pub interval: U32,
    /// Seeds in the swarm.
    pub seeders: U32,
    /// Leechers in the swarm.
    pub leechers: U32,
    /// Completed downloads counted so far.
    pub completed: U32,
}

/// Fixed part of a native SCRAPE request: 16 bytes, then `count` swarm ids.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct ScrapeRequestHead {
    /// [`kind::SCRAPE`].
    pub kind: u8,
    /// Number of swarm ids, 1..=70.
    pub count: u8,
    /// Zero.
    pub reserved: [u8; 6],
    /// From a CONNECT response.
    pub connection_id: U64,
}

/// One swarm's figures in a scrape response (both protocols use this order natively).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct ScrapeEntry {
    /// Seeds.
    pub seeders: U32,
    /// Completed downloads.
    pub completed: U32,
    /// Leechers.
    pub leechers: U32,
}

/// A parsed native request.
#[derive(Debug, Clone, Copy)]
pub enum NativeRequest<'a> {
    /// CONNECT.
    Connect,
    /// ANNOUNCE.
    Announce(&'a AnnounceRequest, Event),
    /// SCRAPE: the connection id and the swarm ids, 32 bytes each.
    Scrape(u64, &'a [[u8; SWARM_ID_LEN]]),
}

/// Parses a native request payload; `None` for anything malformed (spec §3.4).
pub fn parse_native_request(buf: &[u8]) -> Option<NativeRequest<'_>> {
    match *buf.first()? {
        kind::CONNECT => {
            let req = ConnectRequest::ref_from_bytes(buf).ok()?;
            (req.reserved == [0; 15]).then_some(NativeRequest::Connect)
        }
        kind::ANNOUNCE => {
            // Spec §3.2: the fixed 88 bytes, then up to MAX_ANNOUNCE_LEN in all of zero padding
            // (a requester pads to earn a larger reply under transport §9's 3× rule).
            if buf.len() > MAX_ANNOUNCE_LEN {
                return None;
            }
            let (req, padding) = AnnounceRequest::ref_from_prefix(buf).ok()?;
            if padding.iter().any(|&b| b != 0) {
                return None;
            }
            let event = Event::from_native(req.event)?;
            if req.port.get() == 0 || req.reserved != [0; 2] {
                return None;
            }
            Some(NativeRequest::Announce(req, event))
        }
        kind::SCRAPE => {
            let (head, rest) = ScrapeRequestHead::ref_from_prefix(buf).ok()?;
            let n = head.count as usize;
            if n == 0 || n > MAX_SCRAPE || head.reserved != [0; 6] {
                return None;
            }
            let ids = <[[u8; SWARM_ID_LEN]]>::ref_from_bytes(rest).ok()?;
            (ids.len() == n).then_some(NativeRequest::Scrape(head.connection_id.get(), ids))
        }
        _ => None,
    }
}

/// Writes a native CONNECT request (16 bytes), or returns [`BufferTooShort`].
pub fn emit_connect_request(out: &mut [u8]) -> Result<usize, BufferTooShort> {
    let req = ConnectRequest {
        kind: kind::CONNECT,
        reserved: [0; 15],
    };
    write(out, req.as_bytes())
}

/// Writes a native CONNECT response (16 bytes), or returns [`BufferTooShort`].
pub fn emit_connect_response(out: &mut [u8], connection_id: u64) -> Result<usize, BufferTooShort> {
    let resp = ConnectResponse {
        kind: kind::CONNECTED,
        reserved: [0; 7],
        connection_id: connection_id.into(),
    };
    write(out, resp.as_bytes())
}

/// Length of the fixed part of a native ANNOUNCE request (spec §3.2).
pub const ANNOUNCE_LEN: usize = size_of::<AnnounceRequest>();

/// Longest native ANNOUNCE payload, zero padding included (spec §3.2): a 368-byte payload
/// makes a 400-byte REQUEST datagram, which earns a reply of 3 × 400 = 1200 bytes, the most
/// the tracker ever sends. Longer announces are dropped.
pub const MAX_ANNOUNCE_LEN: usize = 368;

/// Largest reply datagram the tracker sends in either protocol (spec §5).
pub const MAX_REPLY_DATAGRAM: usize = 1200;

/// The size of the largest RESPONSE datagram a tracker may send for a REQUEST datagram of
/// `request_len` bytes: 3 × the request (transport §9), at most [`MAX_REPLY_DATAGRAM`].
pub fn native_reply_budget(request_len: usize) -> usize {
    request_len.saturating_mul(3).min(MAX_REPLY_DATAGRAM)
}

/// The native ANNOUNCE payload length (88 ..= [`MAX_ANNOUNCE_LEN`]) whose REQUEST datagram
/// earns room for `numwant` peers of `peer_len` bytes (6 for IPv4, 18 for IPv6) under the 3×
/// rule (spec §3.2): ⌈(32 + 20 + numwant × peer_len) / 3⌉ − 32, clamped to that range.
pub fn announce_len_for(numwant: u16, peer_len: usize) -> usize {
    let header = crate::packet::HEADER_LEN;
    let reply = header + size_of::<AnnounceResponseHead>() + usize::from(numwant) * peer_len;
    let reply = reply.min(MAX_REPLY_DATAGRAM);
    reply
        .div_ceil(3)
        .saturating_sub(header)
        .clamp(ANNOUNCE_LEN, MAX_ANNOUNCE_LEN)
}

/// The fields of a native announce, for [`emit_announce_request`].
#[derive(Debug, Clone, Copy)]
pub struct Announce {
    /// Connection id from CONNECT.
    pub connection_id: u64,
    /// The swarm.
    pub swarm_id: [u8; SWARM_ID_LEN],
    /// This peer process's id.
    pub peer_id: [u8; 16],
    /// What happened.
    pub event: Event,
    /// Listen port.
    pub port: u16,
    /// Peers wanted.
    pub numwant: u16,
    /// Bytes left.
    pub left: u64,
    /// Bytes uploaded.
    pub uploaded: u64,
    /// Bytes downloaded.
    pub downloaded: u64,
}

/// Writes a native ANNOUNCE request ([`ANNOUNCE_LEN`] bytes), or returns [`BufferTooShort`].
pub fn emit_announce_request(out: &mut [u8], a: &Announce) -> Result<usize, BufferTooShort> {
    let req = AnnounceRequest {
        kind: kind::ANNOUNCE,
        event: a.event.native(),
        port: a.port.into(),
        numwant: a.numwant.into(),
        reserved: [0; 2],
        connection_id: a.connection_id.into(),
        swarm_id: a.swarm_id,
        peer_id: a.peer_id,
        left: a.left.into(),
        uploaded: a.uploaded.into(),
        downloaded: a.downloaded.into(),
    };
    write(out, req.as_bytes())
}

/// Writes a native ANNOUNCE request padded with zeros to `len` bytes (at least the fixed 88,
/// at most [`MAX_ANNOUNCE_LEN`]; see [`announce_len_for`]). `None` if `len` is out of that
/// range or `out` is shorter than `len` (an `Option`, not [`BufferTooShort`], because of the
/// first).
pub fn emit_padded_announce_request(out: &mut [u8], a: &Announce, len: usize) -> Option<usize> {
    if !(ANNOUNCE_LEN..=MAX_ANNOUNCE_LEN).contains(&len) {
        return None;
    }
    let n = emit_announce_request(out, a).ok()?;
    out.get_mut(n..len)?.fill(0);
    Some(len)
}

/// Writes a native SCRAPE request for 1 to [`MAX_SCRAPE`] swarms. `None` if `ids` is empty or
/// longer, or `out` is too short (an `Option`, not [`BufferTooShort`], because of the first).
pub fn emit_scrape_request(
    out: &mut [u8],
    connection_id: u64,
    ids: &[[u8; SWARM_ID_LEN]],
) -> Option<usize> {
    if ids.is_empty() || ids.len() > MAX_SCRAPE {
        return None;
    }
    let head = ScrapeRequestHead {
        kind: kind::SCRAPE,
        count: ids.len() as u8,
        reserved: [0; 6],
        connection_id: connection_id.into(),
    };
    let n = write(out, head.as_bytes()).ok()?;
    let m = write(&mut out[n..], ids.as_bytes()).ok()?;
    Some(n + m)
}

/// A parsed native response (the client side).
#[derive(Debug, Clone)]
pub enum NativeResponse<'a> {
    /// CONNECT answered.
    Connected(u64),
    /// ANNOUNCE answered: the head, and the raw peer entries (6 or 18 bytes each).
    Announced(&'a AnnounceResponseHead, &'a [u8]),
    /// SCRAPE answered.
    Scraped(&'a [ScrapeEntry]),
    /// The tracker refused: a code and a UTF-8 message.
    Error(u8, &'a [u8]),
}

/// Parses a native response payload; `None` for anything malformed.
pub fn parse_native_response(buf: &[u8]) -> Option<NativeResponse<'_>> {
    match *buf.first()? {
        kind::CONNECTED => {
            let r = ConnectResponse::ref_from_bytes(buf).ok()?;
            Some(NativeResponse::Connected(r.connection_id.get()))
        }
        kind::ANNOUNCED => {
            let (head, rest) = AnnounceResponseHead::ref_from_prefix(buf).ok()?;
            let size = match head.family {
                4 => 6,
                6 => 18,
                _ => return None,
            };
            (rest.len() == head.count.get() as usize * size)
                .then_some(NativeResponse::Announced(head, rest))
        }
        kind::SCRAPED => {
            let rest = buf.get(4..)?;
            let entries = <[ScrapeEntry]>::ref_from_bytes(rest).ok()?;
            (entries.len() == buf[1] as usize).then_some(NativeResponse::Scraped(entries))
        }
        kind::ERROR => {
            let len = u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize;
            let msg = buf.get(4..)?;
            (msg.len() == len).then_some(NativeResponse::Error(buf[1], msg))
        }
        _ => None,
    }
}

/// Writes a native ERROR response: kind, code, message length, message (truncated to fit).
/// [`BufferTooShort`] only if `out` cannot hold the 4 bytes before the message.
pub fn emit_native_error(out: &mut [u8], code: u8, msg: &str) -> Result<usize, BufferTooShort> {
    let Some(room) = out.len().checked_sub(4) else {
        return Err(BufferTooShort {
            need: 4,
            have: out.len(),
        });
    };
    let m = &msg.as_bytes()[..msg.len().min(room)];
    out[0] = kind::ERROR;
    out[1] = code;
    out[2..4].copy_from_slice(&(m.len() as u16).to_be_bytes());
    out[4..4 + m.len()].copy_from_slice(m);
    Ok(4 + m.len())
}

// ---------------------------------------------------------------------------------------------
// BEP 15 (spec §4).

/// The BEP 15 connect magic ("protocol id").
pub const BEP15_PROTOCOL_ID: u64 = 0x0417_2710_1980;

/// BEP 15 actions.
pub mod action {
    /// connect
    pub const CONNECT: u32 = 0;
    /// announce
    pub const ANNOUNCE: u32 = 1;
    /// scrape
    pub const SCRAPE: u32 = 2;
    /// error
    pub const ERROR: u32 = 3;
}

/// BEP 15 connect request (16 bytes).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct Bep15Connect {
    /// [`BEP15_PROTOCOL_ID`].
    pub protocol_id: U64,
    /// 0.
    pub action: U32,
    /// Chosen by the client, echoed.
    pub transaction_id: U32,
}

/// BEP 15 connect response (16 bytes).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct Bep15Connected {
    /// 0.
    pub action: U32,
    /// Echoed.
    pub transaction_id: U32,
    /// To quote in announce and scrape.
    pub connection_id: U64,
}

/// BEP 15 announce request (98 bytes; BEP 41 options may follow and are ignored).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct Bep15Announce {
    /// From connect.
    pub connection_id: U64,
    /// 1.
    pub action: U32,
    /// Echoed.
    pub transaction_id: U32,
    /// The torrent.
    pub info_hash: [u8; INFO_HASH_LEN],
    /// The client's peer id.
    pub peer_id: [u8; 20],
    /// Bytes downloaded.
    pub downloaded: U64,
    /// Bytes left.
    pub left: U64,
    /// Bytes uploaded.
    pub uploaded: U64,
    /// 0 none, 1 completed, 2 started, 3 stopped.
    pub event: U32,
    /// Ignored: the source address is used.
    pub ip: U32,
    /// Client key (ignored).
    pub key: U32,
    /// Peers wanted; -1 for the default.
    pub num_want: I32,
    /// The client's listen port.
    pub port: U16,
}

/// Head of a BEP 15 announce response (20 bytes), then peers.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct Bep15Announced {
    /// 1.
    pub action: U32,
    /// Echoed.
    pub transaction_id: U32,
    /// Seconds until the next announce.
    pub interval: U32,
    /// Leechers.
    pub leechers: U32,
    /// Seeders.
    pub seeders: U32,
}

/// Head of a BEP 15 scrape request (16 bytes), then info hashes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct Bep15ScrapeHead {
    /// From connect.
    pub connection_id: U64,
    /// 2.
    pub action: U32,
    /// Echoed.
    pub transaction_id: U32,
}

/// Head of BEP 15 responses that carry only action and transaction id (scrape, error).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, Clone, Copy)]
#[repr(C)]
pub struct Bep15Head {
    /// The action.
    pub action: U32,
    /// Echoed.
    pub transaction_id: U32,
}

/// A parsed BEP 15 request.
#[derive(Debug, Clone, Copy)]
pub enum Bep15Request<'a> {
    /// connect, with the transaction id.
    Connect(u32),
    /// announce, with its decoded event.
    Announce(&'a Bep15Announce, Event),
    /// scrape: connection id, transaction id, info hashes (at most [`MAX_SCRAPE`] are used).
    Scrape(u64, u32, &'a [[u8; INFO_HASH_LEN]]),
}

/// True if a datagram may be BEP 15 rather than a SwarmTorrent transport packet: transport
/// packets start with `53 54 01` and no connection id the tracker issues does (spec §4.1).
pub fn looks_like_bep15(buf: &[u8]) -> bool {
    buf.len() >= 16 && buf[..3] != [0x53, 0x54, 0x01]
}

/// Parses a BEP 15 request; `None` for anything malformed (no reply is sent).
pub fn parse_bep15_request(buf: &[u8]) -> Option<Bep15Request<'_>> {
    let action = u32::from_be_bytes(buf.get(8..12)?.try_into().ok()?);
    match action {
        action::CONNECT => {
            let c = Bep15Connect::ref_from_prefix(buf).ok()?.0;
            (c.protocol_id.get() == BEP15_PROTOCOL_ID)
                .then(|| Bep15Request::Connect(c.transaction_id.get()))
        }
        action::ANNOUNCE => {
            // BEP 41 allows options after the 98 fixed bytes; they are ignored.
            let a = Bep15Announce::ref_from_prefix(buf).ok()?.0;
            let event = Event::from_bep15(a.event.get())?;
            Some(Bep15Request::Announce(a, event))
        }
        action::SCRAPE => {
            let (head, rest) = Bep15ScrapeHead::ref_from_prefix(buf).ok()?;
            let whole = rest.len() - rest.len() % INFO_HASH_LEN;
            let hashes = <[[u8; INFO_HASH_LEN]]>::ref_from_bytes(&rest[..whole]).ok()?;
            if hashes.is_empty() {
                return None;
            }
            Some(Bep15Request::Scrape(
                head.connection_id.get(),
                head.transaction_id.get(),
                hashes,
            ))
        }
        _ => None,
    }
}

/// Writes a BEP 15 connect response (16 bytes), or returns [`BufferTooShort`].
pub fn emit_bep15_connected(
    out: &mut [u8],
    transaction_id: u32,
    connection_id: u64,
) -> Result<usize, BufferTooShort> {
    let r = Bep15Connected {
        action: action::CONNECT.into(),
        transaction_id: transaction_id.into(),
        connection_id: connection_id.into(),
    };
    write(out, r.as_bytes())
}

/// Writes a BEP 15 error (action 3) with a message truncated to fit `out`.
/// [`BufferTooShort`] only if `out` cannot hold the 8 bytes before the message.
pub fn emit_bep15_error(
    out: &mut [u8],
    transaction_id: u32,
    msg: &str,
) -> Result<usize, BufferTooShort> {
    let head = Bep15Head {
        action: action::ERROR.into(),
        transaction_id: transaction_id.into(),
    };
    let n = write(out, head.as_bytes())?;
    let m = msg.len().min(out.len() - n);
    out[n..n + m].copy_from_slice(&msg.as_bytes()[..m]);
    Ok(n + m)
}

/// Writes a BEP 15 connect request (16 bytes; for clients and tests), or returns
/// [`BufferTooShort`].
pub fn emit_bep15_connect(out: &mut [u8], transaction_id: u32) -> Result<usize, BufferTooShort> {
    let c = Bep15Connect {
        protocol_id: BEP15_PROTOCOL_ID.into(),
        action: action::CONNECT.into(),
        transaction_id: transaction_id.into(),
    };
    write(out, c.as_bytes())
}

/// The event number BEP 15 uses for `e`.
pub fn bep15_event(e: Event) -> u32 {
    e.bep15()
}

/// Copies `bytes` to the front of `out` and returns their length; [`BufferTooShort`] (nothing
/// written) if they do not fit.
pub fn write(out: &mut [u8], bytes: &[u8]) -> Result<usize, BufferTooShort> {
    let have = out.len();
    let Some(out) = out.get_mut(..bytes.len()) else {
        return Err(BufferTooShort {
            need: bytes.len(),
            have,
        });
    };
    out.copy_from_slice(bytes);
    Ok(bytes.len())
}

/// The `tracker` fuzz target's check (also run by the corpus replay in `cargo test`): a
/// datagram that parses as a native request (bare or inside a transport REQUEST) or as a BEP 15
/// request re-encodes to exactly the bytes it was parsed from (BEP 15 announce and connect: the
/// fixed part; scrape: the whole hashes), and the re-encoding parses to the same request.
/// `Ok(true)` if something parsed; `Err` names a broken invariant.
pub fn fuzz_check(data: &[u8]) -> Result<bool, String> {
    let mut parsed = false;
    let mut payloads = vec![data];
    if let Ok(crate::packet::Packet::Request { payload, .. }) = crate::packet::parse(data) {
        payloads.push(payload);
    }
    for p in payloads {
        if let Some(req) = parse_native_request(p) {
            parsed = true;
            native_round_trip(p, &req)?;
        }
    }
    if looks_like_bep15(data)
        && let Some(req) = parse_bep15_request(data)
    {
        parsed = true;
        bep15_round_trip(data, &req)?;
    }
    Ok(parsed)
}

fn native_round_trip(p: &[u8], req: &NativeRequest<'_>) -> Result<(), String> {
    let mut buf = [0u8; 16 + MAX_SCRAPE * SWARM_ID_LEN];
    let n = match *req {
        NativeRequest::Connect => emit_connect_request(&mut buf).ok(),
        NativeRequest::Announce(a, event) => {
            let fields = Announce {
                connection_id: a.connection_id.get(),
                swarm_id: a.swarm_id,
                peer_id: a.peer_id,
                event,
                port: a.port.get(),
                numwant: a.numwant.get(),
                left: a.left.get(),
                uploaded: a.uploaded.get(),
                downloaded: a.downloaded.get(),
            };
            emit_padded_announce_request(&mut buf, &fields, p.len())
        }
        NativeRequest::Scrape(cid, ids) => emit_scrape_request(&mut buf, cid, ids),
    }
    .ok_or("a parsed native request does not re-encode")?;
    if &buf[..n] != p {
        return Err(format!("native request re-encodes differently: {req:?}"));
    }
    let again = parse_native_request(&buf[..n]).ok_or("a re-encoded request does not parse")?;
    if format!("{again:?}") != format!("{req:?}") {
        return Err("a re-encoded native request parses differently".into());
    }
    Ok(())
}

fn bep15_round_trip(data: &[u8], req: &Bep15Request<'_>) -> Result<(), String> {
    let mut buf = vec![0u8; data.len() + 16];
    let (n, original) = match *req {
        Bep15Request::Connect(tid) => (emit_bep15_connect(&mut buf, tid), &data[..16]),
        Bep15Request::Announce(a, _) => {
            let bytes = a.as_bytes();
            (write(&mut buf, bytes), &data[..bytes.len()])
        }
        Bep15Request::Scrape(cid, tid, hashes) => {
            let head = Bep15ScrapeHead {
                connection_id: cid.into(),
                action: action::SCRAPE.into(),
                transaction_id: tid.into(),
            };
            let n = write(&mut buf, head.as_bytes())
                .and_then(|n| Ok(n + write(&mut buf[n..], hashes.as_bytes())?));
            (n, &data[..16 + hashes.len() * INFO_HASH_LEN])
        }
    };
    let n = n.map_err(|e| format!("a parsed BEP 15 request does not re-encode: {e}"))?;
    if &buf[..n] != original {
        return Err(format!("BEP 15 request re-encodes differently: {req:?}"));
    }
    let again = parse_bep15_request(&buf[..n]).ok_or("a re-encoded BEP 15 request fails")?;
    if format!("{again:?}") != format!("{req:?}") {
        return Err("a re-encoded BEP 15 request parses differently".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small announce, for the tests that check lengths and buffer sizes.
    fn minimal_announce() -> Announce {
        Announce {
            connection_id: 1,
            swarm_id: [0; 32],
            peer_id: [0; 16],
            event: Event::Started,
            port: 1,
            numwant: 1,
            left: 1,
            uploaded: 0,
            downloaded: 0,
        }
    }

    #[test]
    fn native_sizes_match_the_spec() {
        assert_eq!(size_of::<ConnectRequest>(), 16);
        assert_eq!(size_of::<ConnectResponse>(), 16);
        assert_eq!(size_of::<AnnounceRequest>(), 88);
        assert_eq!(size_of::<AnnounceResponseHead>(), 20);
        assert_eq!(size_of::<ScrapeRequestHead>(), 16);
        assert_eq!(size_of::<ScrapeEntry>(), 12);
        assert_eq!(size_of::<Bep15Announce>(), 98);
        assert_eq!(size_of::<Bep15Announced>(), 20);
    }

    #[test]
    fn native_round_trips() {
        let mut buf = [0u8; 2400];
        let n = emit_connect_request(&mut buf).unwrap();
        assert!(matches!(
            parse_native_request(&buf[..n]),
            Some(NativeRequest::Connect)
        ));
        let a = Announce {
            connection_id: 7,
            swarm_id: [3; 32],
            peer_id: [4; 16],
            event: Event::Completed,
            port: 6881,
            numwant: 50,
            left: 0,
            uploaded: 10,
            downloaded: 20,
        };
        let n = emit_announce_request(&mut buf, &a).unwrap();
        match parse_native_request(&buf[..n]) {
            Some(NativeRequest::Announce(r, e)) => {
                assert_eq!(e, Event::Completed);
                assert_eq!(r.port.get(), 6881);
                assert_eq!(r.connection_id.get(), 7);
                assert_eq!(r.swarm_id, [3; 32]);
            }
            other => panic!("{other:?}"),
        }
        let ids = [[1u8; 32], [2u8; 32]];
        let n = emit_scrape_request(&mut buf, 9, &ids).unwrap();
        match parse_native_request(&buf[..n]) {
            Some(NativeRequest::Scrape(c, got)) => {
                assert_eq!(c, 9);
                assert_eq!(got, &ids);
            }
            other => panic!("{other:?}"),
        }
        assert!(emit_scrape_request(&mut buf, 9, &[[0; 32]; 71]).is_none());
    }

    #[test]
    fn announce_padding_earns_room_under_the_3x_rule() {
        // Spec §3.2: 50 IPv4 peers fit the reply to an unpadded announce; 50 IPv6 peers need
        // a 286-byte payload; anything past 1200 bytes of reply is capped.
        assert_eq!(announce_len_for(50, 6), ANNOUNCE_LEN);
        assert_eq!(announce_len_for(50, 18), 286);
        assert_eq!(announce_len_for(u16::MAX, 6), MAX_ANNOUNCE_LEN);
        for (numwant, peer) in [(0u16, 6usize), (1, 18), (50, 18), (191, 6), (63, 18)] {
            let len = announce_len_for(numwant, peer);
            let reply = crate::packet::HEADER_LEN + 20 + usize::from(numwant) * peer;
            assert!(reply <= native_reply_budget(crate::packet::HEADER_LEN + len));
        }
        let a = minimal_announce();
        let mut buf = [0xEE; 400];
        let n = emit_padded_announce_request(&mut buf, &a, 286).unwrap();
        assert_eq!(n, 286);
        assert!(matches!(
            parse_native_request(&buf[..n]),
            Some(NativeRequest::Announce(..))
        ));
        assert!(emit_padded_announce_request(&mut buf, &a, 87).is_none());
        assert!(emit_padded_announce_request(&mut buf, &a, MAX_ANNOUNCE_LEN + 1).is_none());
    }

    #[test]
    fn emitters_report_need_and_have() {
        let short = |need, have| Err(BufferTooShort { need, have });
        let mut b = [0u8; 15];
        assert_eq!(emit_connect_request(&mut b), short(16, 15));
        assert_eq!(emit_connect_response(&mut b, 1), short(16, 15));
        assert_eq!(emit_bep15_connect(&mut b, 1), short(16, 15));
        assert_eq!(emit_bep15_connected(&mut b, 1, 2), short(16, 15));
        assert_eq!(write(&mut b, &[1; 16]), short(16, 15));
        assert_eq!(emit_native_error(&mut b[..3], 1, "no"), short(4, 3));
        assert_eq!(emit_native_error(&mut b[..5], 1, "no"), Ok(5));
        assert_eq!(emit_bep15_error(&mut b[..7], 1, "no"), short(8, 7));
        assert_eq!(emit_bep15_error(&mut b, 1, "no"), Ok(10));
        let a = minimal_announce();
        let mut big = [0u8; ANNOUNCE_LEN];
        assert_eq!(
            emit_announce_request(&mut big[..ANNOUNCE_LEN - 1], &a),
            short(ANNOUNCE_LEN, ANNOUNCE_LEN - 1)
        );
        assert_eq!(emit_announce_request(&mut big, &a), Ok(ANNOUNCE_LEN));
    }

    #[test]
    fn native_rejects_malformed() {
        let mut buf = [0u8; 200];
        let n = emit_connect_request(&mut buf).unwrap();
        assert!(parse_native_request(&buf[..n - 1]).is_none());
        buf[5] = 1;
        assert!(
            parse_native_request(&buf[..n]).is_none(),
            "reserved bytes must be zero"
        );
        let a = minimal_announce();
        let mut big = [0u8; MAX_ANNOUNCE_LEN + 1];
        let n = emit_announce_request(&mut big, &a).unwrap();
        assert!(
            parse_native_request(&big[..MAX_ANNOUNCE_LEN]).is_some(),
            "zero padding up to the bound"
        );
        assert!(
            parse_native_request(&big[..MAX_ANNOUNCE_LEN + 1]).is_none(),
            "longer than the bound"
        );
        big[n + 7] = 1;
        assert!(
            parse_native_request(&big[..n + 8]).is_none(),
            "non-zero padding"
        );
        let n = emit_announce_request(&mut buf, &a).unwrap();
        buf[1] = 4;
        assert!(parse_native_request(&buf[..n]).is_none(), "unknown event");
        buf[1] = 0;
        buf[2..4].copy_from_slice(&[0, 0]);
        assert!(parse_native_request(&buf[..n]).is_none(), "port 0");
        let n = emit_scrape_request(&mut buf, 1, &[[0; 32]; 2]).unwrap();
        assert!(
            parse_native_request(&buf[..n - 32]).is_none(),
            "count mismatch"
        );
        buf[1] = 0;
        assert!(parse_native_request(&buf[..16]).is_none(), "zero count");
        assert!(parse_native_request(&[]).is_none());
        assert!(parse_native_request(&[0x7e; 40]).is_none());
    }

    #[test]
    fn bep15_parses() {
        let mut buf = [0u8; 200];
        let n = emit_bep15_connect(&mut buf, 0xdead).unwrap();
        assert_eq!(
            &buf[..n],
            &[
                0, 0, 4, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 0, 0, 0xde, 0xad
            ]
        );
        assert!(matches!(
            parse_bep15_request(&buf[..n]),
            Some(Bep15Request::Connect(0xdead))
        ));
        buf[0] = 1;
        assert!(parse_bep15_request(&buf[..n]).is_none(), "bad protocol id");
        assert!(parse_bep15_request(&buf[..10]).is_none());
        // A scrape with a ragged tail uses the whole hashes only.
        let mut s = vec![0u8; 16 + 45];
        s[8..12].copy_from_slice(&2u32.to_be_bytes());
        match parse_bep15_request(&s) {
            Some(Bep15Request::Scrape(_, _, h)) => assert_eq!(h.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(!looks_like_bep15(&[
            0x53, 0x54, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ]));
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut x = 1u64;
        for len in 0..300 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (x >> 56) as u8
                })
                .collect();
            for first in [0x01u8, 0x02, 0x03, 0x81, 0x82, 0x83, 0xFF] {
                let mut b = buf.clone();
                if let Some(f) = b.first_mut() {
                    *f = first;
                }
                let _ = parse_native_request(&b);
                let _ = parse_native_response(&b);
                let _ = parse_bep15_request(&b);
            }
        }
    }
}
