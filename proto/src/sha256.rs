//! SHA-256 (FIPS 180-4) of fragments, and of two fragments at once: the check of every
//! fragment a node receives (`spec/peer.md` §8.2) runs through here.
//!
//! On x86-64 with the SHA extensions (checked at run time) the compression uses the
//! `sha256rnds2` instruction. Each of its two rounds waits for the previous two, so one
//! message leaves the unit idle most of the time: on this project's machines (AMD EPYC) one
//! stream ran at about 1.5 GB/s, the largest share of a 1 GiB fetch's CPU time. Two
//! independent messages interleaved in one loop keep it busy: [`Sha256::update_pair`] hashes
//! two fragments for about the time of one. Elsewhere the `sha2` crate's compression function
//! does the work, and a pair is two single runs.
// The `sha256*` instructions are reached through `core::arch` functions compiled for those
// features, which are `unsafe` to call from code that is not: the two calls into them are made
// after the features were detected at run time. Everything else is safe code.
#![allow(unsafe_code)]

/// SHA-256's initial hash value (FIPS 180-4 §5.3.3).
const H0: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// A SHA-256 computation in progress: fed with [`Sha256::update`] (or two at a time with
/// [`Sha256::update_pair`]), ended with [`Sha256::finalize`].
#[derive(Clone)]
pub struct Sha256 {
    /// The chaining value after the whole blocks so far.
    state: [u32; 8],
    /// Bytes after the last whole block (`buf[..buffered]`).
    buf: [u8; 64],
    /// How many bytes of `buf` are in use (under 64).
    buffered: usize,
    /// Bytes fed in all.
    len: u64,
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sha256").field("len", &self.len).finish()
    }
}

impl Sha256 {
    /// A computation over no bytes yet.
    pub fn new() -> Self {
        Sha256 {
            state: H0,
            buf: [0; 64],
            buffered: 0,
            len: 0,
        }
    }

    /// The SHA-256 of `data`.
    pub fn digest(data: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(data);
        h.finalize()
    }

    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        self.absorb(data);
    }

    /// [`Sha256::update`] without counting the bytes.
    fn absorb(&mut self, data: &[u8]) {
        let whole = self.take_head(data);
        let rest = &data[whole.len()..];
        let cut = rest.len() - rest.len() % 64;
        blocks(&mut self.state, &rest[..cut]);
        self.keep_tail(&rest[cut..]);
    }

    /// Feeds `a` to `x` and `b` to `y` (`x.update(a); y.update(b)`, in about the time of the
    /// longer one alone where the CPU has the SHA extensions).
    pub fn update_pair(x: &mut Sha256, a: &[u8], y: &mut Sha256, b: &[u8]) {
        x.len += a.len() as u64;
        y.len += b.len() as u64;
        let a = &a[x.take_head(a).len()..];
        let b = &b[y.take_head(b).len()..];
        let both = (a.len() / 64).min(b.len() / 64) * 64;
        blocks2(&mut x.state, &a[..both], &mut y.state, &b[..both]);
        x.absorb(&a[both..]);
        y.absorb(&b[both..]);
    }

    /// Completes a partly filled block from the front of `data` (compressing it once full);
    /// returns the part of `data` it took.
    fn take_head<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        if self.buffered == 0 {
            return &[];
        }
        let n = (64 - self.buffered).min(data.len());
        self.buf[self.buffered..self.buffered + n].copy_from_slice(&data[..n]);
        self.buffered += n;
        if self.buffered == 64 {
            let block = self.buf;
            blocks(&mut self.state, &block);
            self.buffered = 0;
        }
        &data[..n]
    }

    /// Keeps `tail` (under a block) for later; only called with nothing buffered, or with
    /// `tail` empty.
    fn keep_tail(&mut self, tail: &[u8]) {
        if tail.is_empty() {
            return;
        }
        self.buf[..tail.len()].copy_from_slice(tail);
        self.buffered = tail.len();
    }

    /// The hash of everything fed.
    pub fn finalize(mut self) -> [u8; 32] {
        // FIPS 180-4 §5.1.1: a 1 bit, zeros to 56 bytes mod 64, the length in bits.
        let bits = self.len.wrapping_mul(8);
        let mut pad = [0u8; 128];
        let n = self.buffered;
        pad[..n].copy_from_slice(&self.buf[..n]);
        pad[n] = 0x80;
        let total = if n < 56 { 64 } else { 128 };
        pad[total - 8..total].copy_from_slice(&bits.to_be_bytes());
        blocks(&mut self.state, &pad[..total]);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

/// Compresses whole 64-byte blocks of `data` (its length is a multiple of 64) into `state`.
fn blocks(state: &mut [u32; 8], data: &[u8]) {
    debug_assert_eq!(data.len() % 64, 0);
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: the instructions `x86::blocks` is compiled for were detected on this CPU.
        unsafe { x86::blocks(state, data) };
        return;
    }
    portable(state, data);
}

/// [`blocks`] on two states and two messages of the same length at once.
fn blocks2(x: &mut [u32; 8], a: &[u8], y: &mut [u32; 8], b: &[u8]) {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if x86::available() {
        // SAFETY: as in `blocks`.
        unsafe { x86::blocks2(x, a, y, b) };
        return;
    }
    portable(x, a);
    portable(y, b);
}

/// The `sha2` crate's compression function, block by block.
fn portable(state: &mut [u32; 8], data: &[u8]) {
    use sha2::digest::generic_array::GenericArray;
    for block in data.chunks_exact(64) {
        sha2::compress256(state, &[*GenericArray::from_slice(block)]);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::{
        __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_extract_epi32, _mm_set_epi32,
        _mm_sha256msg1_epu32, _mm_sha256msg2_epu32, _mm_sha256rnds2_epu32, _mm_shuffle_epi32,
    };

    /// The round constants (FIPS 180-4 §4.2.2).
    const K: [u32; 64] = [
        0x428a_2f98,
        0x7137_4491,
        0xb5c0_fbcf,
        0xe9b5_dba5,
        0x3956_c25b,
        0x59f1_11f1,
        0x923f_82a4,
        0xab1c_5ed5,
        0xd807_aa98,
        0x1283_5b01,
        0x2431_85be,
        0x550c_7dc3,
        0x72be_5d74,
        0x80de_b1fe,
        0x9bdc_06a7,
        0xc19b_f174,
        0xe49b_69c1,
        0xefbe_4786,
        0x0fc1_9dc6,
        0x240c_a1cc,
        0x2de9_2c6f,
        0x4a74_84aa,
        0x5cb0_a9dc,
        0x76f9_88da,
        0x983e_5152,
        0xa831_c66d,
        0xb003_27c8,
        0xbf59_7fc7,
        0xc6e0_0bf3,
        0xd5a7_9147,
        0x06ca_6351,
        0x1429_2967,
        0x27b7_0a85,
        0x2e1b_2138,
        0x4d2c_6dfc,
        0x5338_0d13,
        0x650a_7354,
        0x766a_0abb,
        0x81c2_c92e,
        0x9272_2c85,
        0xa2bf_e8a1,
        0xa81a_664b,
        0xc24b_8b70,
        0xc76c_51a3,
        0xd192_e819,
        0xd699_0624,
        0xf40e_3585,
        0x106a_a070,
        0x19a4_c116,
        0x1e37_6c08,
        0x2748_774c,
        0x34b0_bcb5,
        0x391c_0cb3,
        0x4ed8_aa4a,
        0x5b9c_ca4f,
        0x682e_6ff3,
        0x748f_82ee,
        0x78a5_636f,
        0x84c8_7814,
        0x8cc7_0208,
        0x90be_fffa,
        0xa450_6ceb,
        0xbef9_a3f7,
        0xc671_78f2,
    ];

    /// Whether this CPU has the SHA extensions and the SSE levels used with them (std caches
    /// the answer).
    pub(super) fn available() -> bool {
        std::is_x86_feature_detected!("sha")
            && std::is_x86_feature_detected!("sse4.1")
            && std::is_x86_feature_detected!("ssse3")
    }

    /// One message's chaining value as the instructions hold it.
    #[derive(Clone, Copy)]
    struct Lane {
        /// Words A, B, E, F (A in the highest element).
        abef: __m128i,
        /// Words C, D, G, H (C in the highest element).
        cdgh: __m128i,
    }

    /// The chaining value `s` as [`Lane`] holds it.
    #[inline]
    #[target_feature(enable = "sha,ssse3,sse4.1")]
    fn lane(s: &[u32; 8]) -> Lane {
        Lane {
            abef: _mm_set_epi32(s[0] as i32, s[1] as i32, s[4] as i32, s[5] as i32),
            cdgh: _mm_set_epi32(s[2] as i32, s[3] as i32, s[6] as i32, s[7] as i32),
        }
    }

    /// The chaining value of `l` back into `s`.
    #[inline]
    #[target_feature(enable = "sha,ssse3,sse4.1")]
    fn store(l: &Lane, s: &mut [u32; 8]) {
        s[0] = _mm_extract_epi32(l.abef, 3) as u32;
        s[1] = _mm_extract_epi32(l.abef, 2) as u32;
        s[4] = _mm_extract_epi32(l.abef, 1) as u32;
        s[5] = _mm_extract_epi32(l.abef, 0) as u32;
        s[2] = _mm_extract_epi32(l.cdgh, 3) as u32;
        s[3] = _mm_extract_epi32(l.cdgh, 2) as u32;
        s[6] = _mm_extract_epi32(l.cdgh, 1) as u32;
        s[7] = _mm_extract_epi32(l.cdgh, 0) as u32;
    }

    /// Message words `4g ..= 4g + 3` of `block` (big-endian in the bytes).
    #[inline]
    #[target_feature(enable = "sha,ssse3,sse4.1")]
    fn load(block: &[u8; 64], g: usize) -> __m128i {
        let w = |i: usize| {
            let o = 16 * g + 4 * i;
            u32::from_be_bytes([block[o], block[o + 1], block[o + 2], block[o + 3]]) as i32
        };
        _mm_set_epi32(w(3), w(2), w(1), w(0))
    }

    /// Schedule words `4g ..= 4g + 3` for `g >= 4` from those of groups `g - 4 ..= g - 1`:
    /// W[t] = σ1(W[t-2]) + W[t-7] + σ0(W[t-15]) + W[t-16], where msg1 adds σ0, the byte shift
    /// picks W[t-7], and msg2 adds σ1 (it needs the two words it makes itself).
    #[inline]
    #[target_feature(enable = "sha,ssse3,sse4.1")]
    fn schedule(m0: __m128i, m1: __m128i, m2: __m128i, m3: __m128i) -> __m128i {
        let t = _mm_add_epi32(_mm_sha256msg1_epu32(m0, m1), _mm_alignr_epi8(m3, m2, 4));
        _mm_sha256msg2_epu32(t, m3)
    }

    /// Rounds `4g ..= 4g + 3` of `l` with that group's schedule words `w`.
    #[inline]
    #[target_feature(enable = "sha,ssse3,sse4.1")]
    fn rounds(l: &mut Lane, w: __m128i, g: usize) {
        let k = _mm_set_epi32(
            K[4 * g + 3] as i32,
            K[4 * g + 2] as i32,
            K[4 * g + 1] as i32,
            K[4 * g] as i32,
        );
        let wk = _mm_add_epi32(w, k);
        // Two rounds use the two lowest words; after them the old A, B, E, F are the new
        // C, D, G, H.
        let t = _mm_sha256rnds2_epu32(l.cdgh, l.abef, wk);
        let u = _mm_sha256rnds2_epu32(l.abef, t, _mm_shuffle_epi32(wk, 0x0E));
        l.cdgh = t;
        l.abef = u;
    }

    /// Adds the chaining value before a block to the one after it.
    #[inline]
    #[target_feature(enable = "sha,ssse3,sse4.1")]
    fn feed_forward(l: &mut Lane, before: &Lane) {
        l.abef = _mm_add_epi32(l.abef, before.abef);
        l.cdgh = _mm_add_epi32(l.cdgh, before.cdgh);
    }

    /// The 64 rounds of `N` messages' blocks, interleaved group by group (straight-line code:
    /// the schedule words stay in registers).
    // The indices address the lanes, their blocks and their schedule words in lockstep.
    #[allow(clippy::needless_range_loop)]
    #[inline]
    #[target_feature(enable = "sha,ssse3,sse4.1")]
    fn compress<const N: usize>(l: &mut [Lane; N], b: [&[u8; 64]; N]) {
        let before = *l;
        let mut m = [[_mm_set_epi32(0, 0, 0, 0); 4]; N];
        for g in 0..4 {
            for j in 0..N {
                m[j][g] = load(b[j], g);
                rounds(&mut l[j], m[j][g], g);
            }
        }
        // Groups 4..16, unrolled by four so that every index is a constant.
        macro_rules! four {
            ($g:expr) => {
                for j in 0..N {
                    m[j][0] = schedule(m[j][0], m[j][1], m[j][2], m[j][3]);
                    rounds(&mut l[j], m[j][0], $g);
                }
                for j in 0..N {
                    m[j][1] = schedule(m[j][1], m[j][2], m[j][3], m[j][0]);
                    rounds(&mut l[j], m[j][1], $g + 1);
                }
                for j in 0..N {
                    m[j][2] = schedule(m[j][2], m[j][3], m[j][0], m[j][1]);
                    rounds(&mut l[j], m[j][2], $g + 2);
                }
                for j in 0..N {
                    m[j][3] = schedule(m[j][3], m[j][0], m[j][1], m[j][2]);
                    rounds(&mut l[j], m[j][3], $g + 3);
                }
            };
        }
        four!(4);
        four!(8);
        four!(12);
        for j in 0..N {
            feed_forward(&mut l[j], &before[j]);
        }
    }

    /// The `i`th 64-byte block of `data`.
    #[inline]
    fn block(data: &[u8], i: usize) -> &[u8; 64] {
        data[64 * i..64 * i + 64].try_into().expect("64 bytes")
    }

    /// Compresses the 64-byte blocks of `data` into `s`.
    #[target_feature(enable = "sha,ssse3,sse4.1")]
    pub(super) fn blocks(s: &mut [u32; 8], data: &[u8]) {
        let mut l = [lane(s)];
        for i in 0..data.len() / 64 {
            compress(&mut l, [block(data, i)]);
        }
        store(&l[0], s);
    }

    /// Compresses the blocks of `a` into `x` and those of `b` into `y` (the same number),
    /// with the two messages' rounds interleaved.
    #[target_feature(enable = "sha,ssse3,sse4.1")]
    pub(super) fn blocks2(x: &mut [u32; 8], a: &[u8], y: &mut [u32; 8], b: &[u8]) {
        let mut l = [lane(x), lane(y)];
        for i in 0..(a.len() / 64).min(b.len() / 64) {
            compress(&mut l, [block(a, i), block(b, i)]);
        }
        store(&l[0], x);
        store(&l[1], y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_bytes as bytes;
    use sha2::Digest;

    fn reference(d: &[u8]) -> [u8; 32] {
        sha2::Sha256::digest(d).into()
    }

    #[test]
    fn known_answers() {
        // FIPS 180-4 examples (via NIST's published values).
        let hex = |h: [u8; 32]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(Sha256::digest(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(Sha256::digest(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn every_length_matches_the_sha2_crate() {
        let d = bytes(700, 1);
        for n in 0..=d.len() {
            assert_eq!(Sha256::digest(&d[..n]), reference(&d[..n]), "length {n}");
        }
    }

    #[test]
    fn split_updates_match_one_update() {
        let d = bytes(1000, 2);
        let want = reference(&d);
        for cut in [0, 1, 55, 56, 63, 64, 65, 127, 128, 129, 500, 999, 1000] {
            for cut2 in [cut, (cut + 1).min(1000), (cut + 64).min(1000), 1000] {
                let mut h = Sha256::new();
                h.update(&d[..cut]);
                h.update(&d[cut..cut2]);
                h.update(&d[cut2..]);
                assert_eq!(h.len, 1000);
                assert_eq!(h.finalize(), want, "cuts {cut} {cut2}");
            }
        }
    }

    #[test]
    fn pairs_match_single_updates_at_any_lengths_and_offsets() {
        let a = bytes(4096 + 77, 3);
        let b = bytes(8192 + 5, 4);
        for (pa, pb) in [(0, 0), (1, 0), (0, 63), (17, 40), (64, 128)] {
            for (la, lb) in [
                (0, 0),
                (0, 64),
                (64, 64),
                (100, 3000),
                (4096, 4096),
                (4096 + 77 - pa, 8192 + 5 - pb),
            ] {
                let (la, lb) = (la.min(a.len() - pa), lb.min(b.len() - pb));
                let (mut x, mut y) = (Sha256::new(), Sha256::new());
                x.update(&a[..pa]);
                y.update(&b[..pb]);
                Sha256::update_pair(&mut x, &a[pa..pa + la], &mut y, &b[pb..pb + lb]);
                x.update(&a[pa + la..]);
                y.update(&b[pb + lb..]);
                assert_eq!(x.finalize(), reference(&a), "a: {pa} {la}");
                assert_eq!(y.finalize(), reference(&b), "b: {pb} {lb}");
            }
        }
    }

    /// The instructions' compression against the `sha2` crate's, block by block, one message
    /// and two (on a CPU without the SHA extensions there is nothing to compare: it says so).
    #[test]
    fn the_instructions_match_the_portable_compression() {
        #[cfg(target_arch = "x86_64")]
        {
            if !x86::available() {
                eprintln!("skipped: this CPU has no SHA extensions (only the crate's path runs)");
                return;
            }
            let d = bytes(64 * 9, 5);
            let mut want = H0;
            portable(&mut want, &d);
            let mut one = H0;
            // SAFETY: the features were detected just above.
            unsafe { x86::blocks(&mut one, &d) };
            assert_eq!(one, want);
            let (mut x, mut y) = (H0, [7u32; 8]);
            // SAFETY: as above.
            unsafe { x86::blocks2(&mut x, &d, &mut y, &d) };
            let mut y_want = [7u32; 8];
            portable(&mut y_want, &d);
            assert_eq!((x, y), (want, y_want));
        }
    }
}
