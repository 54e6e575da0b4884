//! Connection ids (spec `tracker.md` §2): minting, checking, and the two keys they are
//! MACed under. Acceptance is a pure function of the time: the id carries its issue time, the
//! key is chosen by that time, and nothing depends on when housekeeping last ran.

use std::net::{IpAddr, SocketAddr};

use sha2::{Digest, Sha256};

use super::canonical_ip;
use crate::rng::Rng;
use crate::time::Time;

/// An id is accepted for this many seconds after its issue time (spec §2).
pub(super) const ID_LIFETIME_SECS: u64 = 120;

/// The high bit of every id: no id starts with the transport magic `53` (spec §1).
const HIGH_BIT: u32 = 1 << 31;

/// A key and the rotation epoch (`floor(t / key_rotation_secs)`) it serves.
#[derive(Clone, Copy)]
struct Key {
    bytes: [u8; 32],
    epoch: u64,
}

/// The current key and the previous one, each with the epoch it became valid in.
pub(super) struct Ids {
    keys: [Option<Key>; 2],
    rotation_secs: u64,
    rng: Rng,
}

impl Ids {
    /// Keys rotate every `rotation_secs` (at least 1); `seed` makes them.
    pub(super) fn new(rotation_secs: u64, seed: u64) -> Ids {
        Ids {
            keys: [None, None],
            rotation_secs: rotation_secs.max(1),
            rng: Rng::new(seed),
        }
    }

    fn epoch(&self, secs: u64) -> u64 {
        secs / self.rotation_secs
    }

    /// Makes the current key the one of `now`'s epoch. The previous key is kept only if it
    /// served the epoch just before (spec §2: a key is kept for one rotation after it is
    /// replaced); an older one is forgotten.
    pub(super) fn rotate(&mut self, now: Time) {
        let e = self.epoch(secs(now));
        match self.keys[0] {
            Some(k) if k.epoch >= e => {}
            cur => {
                self.keys[1] = cur.filter(|k| k.epoch + 1 == e);
                let mut bytes = [0u8; 32];
                self.rng.fill(&mut bytes);
                self.keys[0] = Some(Key { bytes, epoch: e });
            }
        }
        if self.keys[1].is_some_and(|k| k.epoch + 1 < e) {
            self.keys[1] = None;
        }
    }

    /// A fresh id for `src` at `now`: issue time (31 bits of seconds, high bit set) ‖ MAC.
    pub(super) fn mint(&mut self, now: Time, src: SocketAddr) -> u64 {
        self.rotate(now);
        let t = stamp(secs(now));
        let key = self.keys[0].map(|k| k.bytes).unwrap_or_default();
        u64::from(t) << 32 | u64::from(mac(&key, t, src))
    }

    /// True if `id` was minted for `src` no more than [`ID_LIFETIME_SECS`] before `now` (and
    /// not after it), under the key of its issue time's epoch, which must be `now`'s epoch or
    /// the one before (spec §2). The MAC is compared in constant time.
    pub(super) fn check(&self, now: Time, src: SocketAddr, id: u64) -> bool {
        let t = (id >> 32) as u32;
        if t & HIGH_BIT == 0 {
            return false;
        }
        let now_s = secs(now);
        // Age in 31-bit arithmetic: a future-dated id wraps to a huge age.
        let age = u64::from(stamp(now_s).wrapping_sub(t) & !HIGH_BIT);
        if age > ID_LIFETIME_SECS || age > now_s {
            return false;
        }
        let e = self.epoch(now_s - age);
        if self.epoch(now_s) - e > 1 {
            return false;
        }
        let Some(key) = self.keys.iter().flatten().find(|k| k.epoch == e) else {
            return false;
        };
        ct_eq(mac(&key.bytes, t, src), id as u32)
    }
}

fn secs(now: Time) -> u64 {
    now.as_micros() / 1_000_000
}

/// The issue-time field: seconds modulo 2^31, high bit set.
fn stamp(secs: u64) -> u32 {
    (secs as u32 & !HIGH_BIT) | HIGH_BIT
}

/// First 4 bytes of SHA-256(key ‖ time field ‖ source IP (4 or 16 bytes) ‖ source port).
fn mac(key: &[u8; 32], t: u32, src: SocketAddr) -> u32 {
    let mut h = Sha256::new();
    h.update(key);
    h.update(t.to_be_bytes());
    match canonical_ip(src.ip()) {
        IpAddr::V4(a) => h.update(a.octets()),
        IpAddr::V6(a) => h.update(a.octets()),
    }
    h.update(src.port().to_be_bytes());
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Equality whose time does not depend on where the values differ.
fn ct_eq(a: u32, b: u32) -> bool {
    std::hint::black_box(a ^ b) == 0
}
