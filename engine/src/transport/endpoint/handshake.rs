//! The stateless handshake (spec §5.2, §5.3) and stateless reset (§7.2): cookies and reset
//! tokens keyed by the endpoint's secret, so that an address gets no state until it has echoed
//! a valid cookie, and nothing sent to it is larger than what it sent.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sha2::{Digest, Sha256};
use st_proto::packet::{self, COOKIE_LEN, Header, Packet, PacketType, Params, TOKEN_LEN};

use super::super::connection::Connection;
use super::Endpoint;
use crate::time::Time;

/// The endpoint's keyed values: handshake cookies and reset tokens.
pub(super) struct Keys {
    secret: [u8; 32],
    cookie_lifetime: Duration,
}

impl Keys {
    pub(super) fn new(secret: [u8; 32], cookie_lifetime: Duration) -> Keys {
        Keys {
            secret,
            cookie_lifetime,
        }
    }

    fn keyed(&self, parts: &[&[u8]]) -> [u8; 16] {
        let mut h = Sha256::new();
        h.update(self.secret);
        for p in parts {
            h.update(p);
        }
        let d = h.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&d[..16]);
        out
    }

    /// The cookie of `remote` and its connection id in a validity window (spec §5.2).
    fn cookie(&self, window: u64, remote: SocketAddr, cid: u64) -> [u8; COOKIE_LEN] {
        let ip = match remote.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        self.keyed(&[
            b"cookie",
            &window.to_be_bytes(),
            &ip,
            &remote.port().to_be_bytes(),
            &cid.to_be_bytes(),
        ])
    }

    fn window(&self, now: Time) -> u64 {
        now.as_micros() / crate::time::micros(self.cookie_lifetime).max(1)
    }

    /// A cookie is valid in the window it was made in and the next (one to two lifetimes).
    fn cookie_valid(&self, now: Time, remote: SocketAddr, cid: u64, c: &[u8; COOKIE_LEN]) -> bool {
        let w = self.window(now);
        *c == self.cookie(w, remote, cid) || (w > 0 && *c == self.cookie(w - 1, remote, cid))
    }

    /// The reset token of a local connection id (spec §7.2).
    pub(super) fn reset_token(&self, cid: u64) -> [u8; TOKEN_LEN] {
        self.keyed(&[b"reset", &cid.to_be_bytes()])
    }
}

impl Endpoint {
    /// An INITIAL (spec §5.2, §5.3): a RETRY with a cookie unless it echoes a valid one, then a
    /// server connection (at most `max_connections`, only for acceptable parameters, §3.1).
    pub(super) fn on_initial(
        &mut self,
        now: Time,
        remote: SocketAddr,
        hdr: &Header,
        cookie: [u8; COOKIE_LEN],
        params: &Params,
    ) {
        if !self.cfg.accept || hdr.scid == 0 {
            return;
        }
        if let Some(&k) = self.by_initial.get(&(remote, hdr.scid)) {
            self.conns[k].handle_initial_again();
            self.flush(k);
            return;
        }
        if !self.keys.cookie_valid(now, remote, hdr.scid, &cookie) {
            if cookie != [0; COOKIE_LEN] {
                self.stats.bad_cookies += 1;
            }
            // Stateless RETRY (spec §5.2): 48 bytes in answer to at least 1200.
            let c = self.keys.cookie(self.keys.window(now), remote, hdr.scid);
            let retry = Packet::Retry {
                hdr: Header {
                    ptype: PacketType::Retry,
                    dcid: hdr.scid,
                    scid: 0,
                    pn: 0,
                },
                cookie: c,
            };
            if self.queue_stateless(remote, &retry) {
                self.stats.retries_sent += 1;
            }
            return;
        }
        if self.conns.len() >= self.cfg.max_connections {
            return;
        }
        if !Connection::params_valid(params) {
            // Spec §3.1: refused, no state kept.
            self.stats.bad_params += 1;
            return;
        }
        let cid = self.new_cid();
        let token = self.keys.reset_token(cid);
        let seed = self.rng.next_u64();
        let c = Connection::server(now, &self.cfg, cid, hdr.scid, remote, params, token, seed);
        let k = self.insert(c);
        self.stats.connections_accepted += 1;
        self.by_cid.insert(cid, k);
        self.by_initial.insert((remote, hdr.scid), k);
        self.flush(k);
    }

    /// Stateless reset for a packet to an unknown cid (spec §7.2): never larger than the packet.
    pub(super) fn maybe_reset(&mut self, remote: SocketAddr, hdr: &Header, len: usize) {
        const RESET_LEN: usize = packet::HEADER_LEN + TOKEN_LEN;
        if hdr.scid == 0 || len <= RESET_LEN || self.by_cid.contains_key(&hdr.dcid) {
            return;
        }
        let token = self.keys.reset_token(hdr.dcid);
        let p = Packet::Reset {
            hdr: Header {
                ptype: PacketType::Reset,
                dcid: hdr.scid,
                scid: 0,
                pn: 0,
            },
            token,
        };
        if self.queue_stateless(remote, &p) {
            self.stats.resets_sent += 1;
        }
    }
}
