//! Helpers shared by the CLI's end-to-end tests.
#![allow(dead_code)]

use std::fs;
use std::path::PathBuf;

/// A scratch directory, unique to the test process and tag, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// Creates (empty) the scratch directory for `tag`.
    pub fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("st-test-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    /// A path inside the scratch directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
