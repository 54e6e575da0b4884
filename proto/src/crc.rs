//! CRC-32C (Castagnoli), the transport's datagram checksum (`spec/transport.md` §2.1): over a
//! slice, and fused with a copy so that a sender checksums a packet's payload as it copies it
//! in, reading the bytes once.
//!
//! On x86-64 with SSE 4.2 and PCLMULQDQ (checked at run time) the bytes go through the
//! `crc32` instruction in three interleaved lanes whose states are joined with a carry-less
//! multiply, for any length of at least 96 bytes. The `crc32c` crate interleaves only in
//! strides of 768 and 24 576 bytes, so 672 of the 1 440 checksummed bytes of a datagram at a
//! 1 500-byte MTU went through one lane, at a third of the speed. Elsewhere the `crc32c` crate
//! computes it (and the copy is a plain copy).
//!
//! The math: a CRC state `s` (reflected: bit 0 is the coefficient of x^31) followed by `n`
//! zero bytes becomes `s · x^(8n) mod P`, and CRCs are linear, so for a stretch split into
//! lanes A, B, C of `l` 8-byte words each, with A started from the running state and B, C from
//! 0, `crc(ABC) = shift(shift(a) ^ b) ^ c` where `shift(s) = s · x^(64l) mod P`. A carry-less
//! product of two reflected 32-bit values, read as a reflected 64-bit value, is `x · s · k`,
//! and `crc32(0, v)` of a 64-bit `v` is `v · x^32 mod P`; so with `k = x^(64l - 33) mod P`,
//! `crc32(0, clmul(s, k)) = s · x^(64l) mod P`: one multiply and one `crc32` per join, with
//! `k` from a table built at compile time.
// The `crc32` and `pclmulqdq` instructions are reached through `core::arch` functions compiled
// for those features, which are `unsafe` to call from code that is not: the two calls into
// them are made after the features were detected at run time. Everything else is safe code.
#![allow(unsafe_code)]

/// CRC-32C of `data` continued from `crc`: `crc32c_append(0, d)` is the CRC-32C of `d`, and
/// `crc32c_append(crc32c_append(0, a), b)` that of `a` followed by `b` (as the `crc32c`
/// crate's `crc32c_append`).
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: the instructions `x86::crc` is compiled for were detected on this CPU.
        return !unsafe { x86::crc(!crc, data) };
    }
    crc32c::crc32c_append(crc, data)
}

/// Copies `src` into `dst` and returns the CRC-32C of `src` continued from `crc`, reading each
/// byte once.
///
/// # Panics
/// If the lengths differ (a caller's bug, as with `copy_from_slice`).
pub fn copy_crc32c_append(crc: u32, dst: &mut [u8], src: &[u8]) -> u32 {
    assert_eq!(dst.len(), src.len(), "copy_crc32c_append: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: as in `crc32c_append`.
        return !unsafe { x86::copy_crc(!crc, dst, src) };
    }
    dst.copy_from_slice(src);
    crc32c::crc32c_append(crc, src)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::{
        _mm_clmulepi64_si128, _mm_crc32_u8, _mm_crc32_u64, _mm_cvtsi32_si128, _mm_cvtsi128_si64,
    };

    /// CRC-32C's polynomial, reflected.
    const POLY: u32 = 0x82F6_3B78;
    /// Most 8-byte words per lane in one stride: 8 KiB, so that each lane reads whole pages
    /// in a row (with 2 KiB lanes, bytes not in cache were checksummed a third slower: the
    /// hardware prefetcher kept starting over).
    const MAX_LANE: usize = 1024;
    /// Fewest words per lane worth a join (96 bytes in all; below, one lane does it).
    const MIN_LANE: usize = 4;

    /// `JOIN[l] = x^(64 l - 33) mod P`, reflected: shifts a state over `l` words (module doc).
    static JOIN: [u32; MAX_LANE + 1] = join_table();

    const fn join_table() -> [u32; MAX_LANE + 1] {
        let mut t = [0u32; MAX_LANE + 1];
        // x^31 (64 - 33, for l = 1) is bit 0 of the reflected form.
        let mut v: u32 = 1;
        let mut l = 1;
        while l <= MAX_LANE {
            t[l] = v;
            // Times x^64, one x at a time, modulo P.
            let mut j = 0;
            while j < 64 {
                v = if v & 1 != 0 { (v >> 1) ^ POLY } else { v >> 1 };
                j += 1;
            }
            l += 1;
        }
        t
    }

    /// Whether this CPU has both instructions (std caches the answer).
    pub(super) fn available() -> bool {
        std::is_x86_feature_detected!("sse4.2") && std::is_x86_feature_detected!("pclmulqdq")
    }

    /// `s · x^(64l) mod P`, with `k = JOIN[l]`.
    #[inline]
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    fn shift(s: u32, k: u32) -> u32 {
        let p = _mm_clmulepi64_si128(_mm_cvtsi32_si128(s as i32), _mm_cvtsi32_si128(k as i32), 0);
        _mm_crc32_u64(0, _mm_cvtsi128_si64(p) as u64) as u32
    }

    /// The `i`th 8-byte word of `b`, little-endian.
    #[inline(always)]
    fn word(b: &[u8], i: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[8 * i..8 * i + 8]);
        u64::from_le_bytes(w)
    }

    /// One lane, for what is left after the strides (under 96 bytes).
    #[inline]
    #[target_feature(enable = "sse4.2")]
    fn tail(s: u32, d: &[u8]) -> u32 {
        let mut s = u64::from(s);
        let mut words = d.chunks_exact(8);
        for w in &mut words {
            s = _mm_crc32_u64(s, word(w, 0));
        }
        let mut s = s as u32;
        for &b in words.remainder() {
            s = _mm_crc32_u8(s, b);
        }
        s
    }

    /// The raw state (no inversions) after `d`, from `s`.
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    pub(super) fn crc(mut s: u32, mut d: &[u8]) -> u32 {
        while d.len() >= 24 * MIN_LANE {
            let l = (d.len() / 24).min(MAX_LANE);
            let (a, rest) = d.split_at(8 * l);
            let (b, rest) = rest.split_at(8 * l);
            let (c, rest) = rest.split_at(8 * l);
            let (mut s0, mut s1, mut s2) = (u64::from(s), 0u64, 0u64);
            for i in 0..l {
                s0 = _mm_crc32_u64(s0, word(a, i));
                s1 = _mm_crc32_u64(s1, word(b, i));
                s2 = _mm_crc32_u64(s2, word(c, i));
            }
            let k = JOIN[l];
            s = shift(shift(s0 as u32, k) ^ s1 as u32, k) ^ s2 as u32;
            d = rest;
        }
        tail(s, d)
    }

    /// [`crc`] of `src`, copying it into `dst` (as long) on the way.
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    pub(super) fn copy_crc(mut s: u32, dst: &mut [u8], src: &[u8]) -> u32 {
        let (mut d, mut o) = (src, dst);
        while d.len() >= 24 * MIN_LANE {
            let l = (d.len() / 24).min(MAX_LANE);
            let (a, rest) = d.split_at(8 * l);
            let (b, rest) = rest.split_at(8 * l);
            let (c, rest) = rest.split_at(8 * l);
            let (oa, orest) = std::mem::take(&mut o).split_at_mut(8 * l);
            let (ob, orest) = orest.split_at_mut(8 * l);
            let (oc, orest) = orest.split_at_mut(8 * l);
            let (mut s0, mut s1, mut s2) = (u64::from(s), 0u64, 0u64);
            for i in 0..l {
                let (x, y, z) = (word(a, i), word(b, i), word(c, i));
                oa[8 * i..8 * i + 8].copy_from_slice(&x.to_le_bytes());
                ob[8 * i..8 * i + 8].copy_from_slice(&y.to_le_bytes());
                oc[8 * i..8 * i + 8].copy_from_slice(&z.to_le_bytes());
                s0 = _mm_crc32_u64(s0, x);
                s1 = _mm_crc32_u64(s1, y);
                s2 = _mm_crc32_u64(s2, z);
            }
            let k = JOIN[l];
            s = shift(shift(s0 as u32, k) ^ s1 as u32, k) ^ s2 as u32;
            d = rest;
            o = orest;
        }
        o.copy_from_slice(d);
        tail(s, d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Vec<u8> {
        crate::test_bytes(n, 0)
    }

    #[test]
    fn the_check_value_of_the_standard() {
        // The CRC catalogue's check value: CRC-32C("123456789") = 0xE3069283.
        assert_eq!(crc32c_append(0, b"123456789"), 0xE306_9283);
        let mut out = [0u8; 9];
        assert_eq!(copy_crc32c_append(0, &mut out, b"123456789"), 0xE306_9283);
        assert_eq!(&out, b"123456789");
    }

    #[test]
    fn matches_the_crc32c_crate_at_every_length_and_alignment() {
        let data = bytes(80_000);
        // Every length to past the first strides, then datagram sizes, a full stride (24 KiB)
        // and its neighbours, and long ones.
        let lens = (0..=700).chain([1_440, 1_472, 8_952, 24_575, 24_576, 24_577, 65_000, 79_990]);
        for len in lens {
            for at in [0, 1, 5] {
                let d = &data[at..at + len];
                for init in [0, 0xDEAD_BEEF] {
                    let want = crc32c::crc32c_append(init, d);
                    assert_eq!(crc32c_append(init, d), want, "len {len} at {at}");
                    let mut out = vec![0xA5; len];
                    assert_eq!(
                        copy_crc32c_append(init, &mut out, d),
                        want,
                        "copy, len {len}"
                    );
                    assert_eq!(out, d, "copied bytes, len {len}");
                }
            }
        }
    }

    /// On x86-64 the tests above go through the fast path only if this CPU has it: say so,
    /// rather than compare the crate with itself unnoticed.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_fast_path_is_what_was_tested_here() {
        assert!(
            x86::available(),
            "this CPU lacks SSE 4.2 or PCLMULQDQ: the crate's fallback was tested, not the lanes"
        );
    }

    #[test]
    fn appending_is_the_crc_of_the_concatenation() {
        let data = bytes(3_000);
        for cut in [0, 1, 95, 96, 1_000, 2_999, 3_000] {
            let (a, b) = data.split_at(cut);
            assert_eq!(
                crc32c_append(crc32c_append(0, a), b),
                crc32c_append(0, &data)
            );
        }
    }
}
