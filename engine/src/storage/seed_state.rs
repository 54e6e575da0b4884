//! A seed's memory of what it verified (`spec/peer.md` §8.4): for each swarm, the identity of
//! every data file (device, inode, size, modification time) and the fragments that matched,
//! so that a restart re-hashes only data that changed. A text file per swarm, replaced
//! atomically; anything unreadable or not matching is ignored (the data is hashed again).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// First line of a state file.
const MAGIC: &str = "swarmtorrent-seed-state 1";

/// What identifies a file's contents without reading them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Length in bytes.
    pub size: u64,
    /// Modification time, seconds and nanoseconds.
    pub mtime: (i64, i64),
    /// Status change time (a write that restores the mtime still moves it).
    pub ctime: (i64, i64),
}

impl FileId {
    /// The identity of the file at `p`.
    pub fn of(p: &Path) -> io::Result<FileId> {
        let m = fs::metadata(p)?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    fn line(&self) -> String {
        format!(
            "file {} {} {} {} {} {} {}",
            self.dev, self.ino, self.size, self.mtime.0, self.mtime.1, self.ctime.0, self.ctime.1
        )
    }
}

/// The state file of swarm `id` (hex) under `dir`.
pub fn path(dir: &Path, id_hex: &str) -> PathBuf {
    dir.join(format!("{id_hex}.seed"))
}

/// The fragments recorded as verified for `files` (whose identities must all match what was
/// recorded), or `None`.
pub fn load(state: &Path, files: &[PathBuf], fragments: u32) -> Option<Vec<bool>> {
    let text = fs::read_to_string(state).ok()?;
    let mut lines = text.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    for f in files {
        if lines.next()? != FileId::of(f).ok()?.line() {
            return None;
        }
    }
    let bits = lines.next()?.strip_prefix("verified ")?;
    if bits.len() != fragments as usize || lines.next().is_some() {
        return None;
    }
    bits.bytes()
        .map(|b| match b {
            b'1' => Some(true),
            b'0' => Some(false),
            _ => None,
        })
        .collect()
}

/// The identities of `files` now: take them before hashing, and record them with what the
/// hashing found ([`save`]), so that a file changed while it was hashed is hashed again.
pub fn snapshot(files: &[PathBuf]) -> io::Result<Vec<FileId>> {
    files.iter().map(|f| FileId::of(f)).collect()
}

/// Records `verified` for files of identities `ids` (from [`snapshot`]), atomically.
pub fn save(state: &Path, ids: &[FileId], verified: &[bool]) -> io::Result<()> {
    let mut text = String::from(MAGIC);
    text.push('\n');
    for id in ids {
        text.push_str(&id.line());
        text.push('\n');
    }
    text.push_str("verified ");
    text.extend(verified.iter().map(|&v| if v { '1' } else { '0' }));
    text.push('\n');
    if let Some(dir) = state.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut tmp = state.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, state)?;
    if let Some(dir) = state.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_is_trusted_only_while_every_file_is_unchanged() {
        let dir = std::env::temp_dir().join(format!("st-seed-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        fs::write(&a, b"hello").unwrap();
        fs::write(&b, b"world!").unwrap();
        let files = vec![a.clone(), b.clone()];
        let st = path(&dir.join("state"), "00ff");
        assert_eq!(load(&st, &files, 3), None, "nothing recorded yet");
        save(&st, &snapshot(&files).unwrap(), &[true, false, true]).unwrap();
        assert_eq!(load(&st, &files, 3), Some(vec![true, false, true]));
        assert_eq!(load(&st, &files, 4), None, "another fragment count");
        assert_eq!(load(&st, &files[..1], 3), None, "another file list");
        // Rewritten (same size): the identity changes, the state is void.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&b, b"World!").unwrap();
        assert_eq!(load(&st, &files, 3), None);
        // Identities taken before a change are void after it (a file changed while hashed).
        let before = snapshot(&files).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&a, b"hellO").unwrap();
        save(&st, &before, &[true, true, true]).unwrap();
        assert_eq!(load(&st, &files, 3), None);
        fs::write(&st, "garbage").unwrap();
        assert_eq!(load(&st, &files, 3), None);
        let _ = fs::remove_dir_all(&dir);
    }
}
