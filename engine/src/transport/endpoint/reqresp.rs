//! The request/response mode (spec §9): the requester's pending requests, retransmitted with
//! backoff until answered or given up, and [`respond`], the one responder (the tracker's):
//! a RESPONSE echoes the requester and request ids and is at most 3 × the REQUEST datagram.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use st_proto::packet::{self, HEADER_LEN, Header, Packet, PacketType};

use super::super::{Event, Transmit};
use super::Endpoint;
use crate::time::Time;

/// Id of a request made with [`Endpoint::request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Largest UDP payload the transport sends (spec §10).
const MAX_DATAGRAM: usize = 65_000;

/// The largest RESPONSE datagram for a REQUEST datagram of `request_len` bytes (spec §9):
/// 3 × the request (RFC 9000 §8.1 anti-amplification), at most the datagram limit (§10).
pub fn response_budget(request_len: usize) -> usize {
    request_len.saturating_mul(3).min(MAX_DATAGRAM)
}

/// Answers `request` (the header of a REQUEST datagram of `request_len` bytes) in `out`:
/// `fill` writes the response payload into the slice it is given, which ends where the
/// anti-amplification budget ([`response_budget`]) or `out` does, and returns its length, or
/// `None` for no answer. Returns the RESPONSE datagram's length. A request without a requester
/// id (scid 0, spec §9) gets no answer.
pub fn respond(
    out: &mut [u8],
    request: &Header,
    request_len: usize,
    fill: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> Option<usize> {
    if request.ptype != PacketType::Request || request.scid == 0 {
        return None;
    }
    let budget = out.len().min(response_budget(request_len));
    let n = fill(out.get_mut(HEADER_LEN..budget)?)?;
    let end = HEADER_LEN.checked_add(n).filter(|&e| e <= budget)?;
    let hdr = Header {
        ptype: PacketType::Response,
        dcid: request.scid,
        scid: 0,
        pn: request.pn,
    };
    packet::write_header(out, &hdr).ok()?;
    packet::seal(&mut out[..end]);
    Some(end)
}

struct PendingRequest {
    remote: SocketAddr,
    payload: Vec<u8>,
    attempts: u32,
    due: bool,
    next: Time,
}

/// The requester side: requests sent and not yet answered or given up.
pub(super) struct Requests {
    /// Random, non-zero: RESPONSEs must carry it in dcid.
    requester_id: u64,
    next_request: u64,
    pending: BTreeMap<u64, PendingRequest>,
}

impl Requests {
    pub(super) fn new(requester_id: u64) -> Requests {
        Requests {
            requester_id,
            next_request: 1,
            pending: BTreeMap::new(),
        }
    }

    /// A RESPONSE: the event for the pending request it answers, if any (from the address the
    /// request went to); anything else is ignored.
    pub(super) fn on_response(
        &mut self,
        remote: SocketAddr,
        hdr: &Header,
        payload: &[u8],
    ) -> Option<Event> {
        if hdr.dcid != self.requester_id
            || self.pending.get(&hdr.pn).is_none_or(|r| r.remote != remote)
        {
            return None;
        }
        self.pending.remove(&hdr.pn);
        Some(Event::Response(RequestId(hdr.pn), payload.to_vec()))
    }

    /// Marks requests whose retransmission time came as due, and gives up on those that used
    /// their `attempts`.
    pub(super) fn handle_timeout(
        &mut self,
        now: Time,
        attempts: u32,
        events: &mut VecDeque<Event>,
    ) {
        self.pending.retain(|&id, r| {
            if r.due || r.next > now {
                return true;
            }
            if r.attempts >= attempts {
                events.push_back(Event::RequestFailed(RequestId(id)));
                return false;
            }
            r.due = true;
            true
        });
    }

    /// The next retransmission time.
    pub(super) fn poll_timeout(&self) -> Option<Time> {
        self.pending
            .values()
            .filter(|r| !r.due)
            .map(|r| r.next)
            .min()
    }

    /// The next due REQUEST, written into `buf`; its next attempt is `timeout` doubled per
    /// attempt so far later.
    pub(super) fn poll_transmit(
        &mut self,
        now: Time,
        timeout: Duration,
        buf: &mut [u8],
    ) -> Option<Transmit> {
        let (&id, r) = self.pending.iter_mut().find(|(_, r)| r.due)?;
        r.due = false;
        r.attempts += 1;
        r.next = now + timeout * (1u32 << (r.attempts - 1).min(16));
        let p = Packet::Request {
            hdr: Header {
                ptype: PacketType::Request,
                dcid: 0,
                scid: self.requester_id,
                pn: id,
            },
            payload: &r.payload,
        };
        let n = packet::emit(&p, buf).ok()?;
        Some(Transmit {
            remote: r.remote,
            len: n,
            segment_size: None,
        })
    }
}

impl Endpoint {
    /// Sends an idempotent request (spec §9), retransmitted with backoff until answered
    /// ([`Event::Response`]) or given up ([`Event::RequestFailed`]).
    pub fn request(&mut self, now: Time, remote: SocketAddr, payload: &[u8]) -> RequestId {
        let r = &mut self.requests;
        let id = r.next_request;
        r.next_request += 1;
        r.pending.insert(
            id,
            PendingRequest {
                remote,
                payload: payload.to_vec(),
                attempts: 0,
                due: true,
                next: now,
            },
        );
        RequestId(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(scid: u64, payload: &[u8]) -> Vec<u8> {
        let p = Packet::Request {
            hdr: Header {
                ptype: PacketType::Request,
                dcid: 0,
                scid,
                pn: 7,
            },
            payload,
        };
        let mut b = vec![0; p.buffer_len()];
        let n = packet::emit(&p, &mut b).unwrap();
        b.truncate(n);
        b
    }

    /// The responder's rules (spec §9): ids echoed, at most 3 × the request and 65 000 bytes,
    /// no answer to a request without a requester id, nothing past the caller's buffer.
    #[test]
    fn responses_echo_ids_and_keep_to_the_budget() {
        let mut out = vec![0u8; 70_000];
        for (len, budget) in [(100usize, 300usize), (30_000, 65_000)] {
            let req = request(9, &vec![1; len - HEADER_LEN]);
            let hdr = packet::parse_header(&req).unwrap();
            let mut room = 0;
            let n = respond(&mut out, &hdr, req.len(), |b| {
                room = b.len();
                b.fill(5);
                Some(b.len())
            })
            .unwrap();
            assert_eq!((n, room), (budget, budget - HEADER_LEN));
            let Ok(Packet::Response { hdr: r, payload }) = packet::parse(&out[..n]) else {
                panic!("a RESPONSE");
            };
            assert_eq!((r.dcid, r.scid, r.pn), (9, 0, 7));
            assert!(payload.iter().all(|&b| b == 5));
            // A payload claimed beyond the room it was given is not sent.
            assert_eq!(
                respond(&mut out, &hdr, req.len(), |b| Some(b.len() + 1)),
                None
            );
        }
        let req = request(9, b"ann");
        let hdr = packet::parse_header(&req).unwrap();
        // The caller's buffer bounds it too.
        let mut small = [0u8; HEADER_LEN + 4];
        assert_eq!(
            respond(&mut small, &hdr, req.len(), |b| Some(b.len())),
            Some(HEADER_LEN + 4)
        );
        assert_eq!(respond(&mut out, &hdr, req.len(), |_| None), None);
        let anon = request(0, b"ann");
        let hdr = packet::parse_header(&anon).unwrap();
        assert_eq!(respond(&mut out, &hdr, anon.len(), |_| Some(0)), None);
    }
}
