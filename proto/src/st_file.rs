//! The `.st` file format, version 1 (normative text: `spec/st-file.md`).
//!
//! This module owns the byte layout of a `.st` file: a strict, bounded decoder
//! ([`StFile::decode`]) and an encoder ([`StFile::encode`]) that refuses to write anything the
//! decoder would reject, so that `decode(encode(x)) == x` and `encode(decode(b)) == b`.
//! It does no IO. The decoder never allocates more than the input justifies: every length is
//! checked against the bytes that remain before a buffer is reserved, and all arithmetic on
//! lengths from the input is checked.
//!
//! Layout (all integers big-endian; section names match [`Section`]):
//!
//! ```text
//! header     magic[8] version:u16 flags:u16
//! info       kind:u8 name_len:u8 name total_length:u64 fragment_length:u32 fragment_count:u32
//! files      (directory only) file_count:u32 { length:u64 depth:u8 { len:u8 bytes }* }*
//! fragments  fragment_count × SHA-256[32]
//! trackers   tracker_count:u8 { transport:u8 host_len:u8 host port:u16 }*
//! ```
//!
//! The swarm id is the SHA-256 of every byte before the tracker section (spec §5).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use sha2::{Digest, Sha256};
use zerocopy::byteorder::network_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The eight bytes every `.st` file starts with (spec §2): `\x89 S T F \r \n \x1a \n`.
pub const MAGIC: [u8; 8] = *b"\x89STF\r\n\x1a\n";
/// The only format version this code reads and writes.
pub const VERSION: u16 = 1;
/// Smallest fragment length allowed by the format: 16 KiB.
pub const MIN_FRAGMENT_LENGTH: u32 = 1 << 14;
/// Largest fragment length allowed by the format: 64 MiB.
pub const MAX_FRAGMENT_LENGTH: u32 = 1 << 26;
/// Largest number of fragments in one file (4 Mi, i.e. 128 MiB of hashes).
pub const MAX_FRAGMENTS: u32 = 1 << 22;
/// Largest total length: `MAX_FRAGMENTS × MAX_FRAGMENT_LENGTH` = 256 TiB.
pub const MAX_TOTAL_LENGTH: u64 = (MAX_FRAGMENTS as u64) * (MAX_FRAGMENT_LENGTH as u64);
/// Longest name or path component, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Most path components in one file path of a directory.
pub const MAX_PATH_DEPTH: usize = 32;
/// Most files in a directory.
pub const MAX_FILES: u32 = 1 << 20;
/// Most entries in the tracker table.
pub const MAX_TRACKERS: usize = 32;
/// Longest tracker host, in bytes (the DNS limit).
pub const MAX_HOST_LEN: usize = 253;
/// Length of a SHA-256 digest.
pub const HASH_LEN: usize = 32;

/// Header flag bit 0: the swarm is private (spec §3).
pub const FLAG_PRIVATE: u16 = 1;

const KIND_FILE: u8 = 0;
const KIND_DIRECTORY: u8 = 1;
const TRANSPORT_UDP: u8 = 1;

/// The fixed header (spec §3).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct Header {
    magic: [u8; 8],
    version: U16,
    flags: U16,
}

/// The fixed fields of the info section that follow the name (spec §4.1).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
struct InfoFixed {
    total_length: U64,
    fragment_length: U32,
    fragment_count: U32,
}

/// A SHA-256 digest.
pub type Hash = [u8; HASH_LEN];

/// A decoded `.st` file: where to find peers, and what is shared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StFile {
    /// The tracker table (may be empty for LAN-only use). Not part of the swarm id.
    pub trackers: Vec<Tracker>,
    /// The info part: everything the swarm id covers.
    pub info: Info,
}

/// The info part of a `.st` file (spec §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    /// Advisory name: the file name, or the directory name for a directory.
    pub name: String,
    /// Total length in bytes of the shared data (all files laid end to end).
    pub total_length: u64,
    /// Fragment length in bytes; the last fragment may be shorter.
    pub fragment_length: u32,
    /// `None` for a single file; the files, in canonical order, for a directory.
    pub files: Option<Vec<FileEntry>>,
    /// SHA-256 of every fragment, in order.
    pub hashes: Vec<Hash>,
    /// Header flag bit 0 (spec §3): a private swarm, never announced to or looked up in the
    /// DHT nor announced on the LAN; its peers come from its trackers and peer exchange.
    pub private: bool,
}

/// One file of a shared directory.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileEntry {
    /// Relative path, one safe component per element (spec §4.3).
    pub path: Vec<String>,
    /// Length in bytes (may be zero).
    pub length: u64,
}

/// One tracker table entry: `udp://HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tracker {
    /// The tracker's host.
    pub host: Host,
    /// The tracker's UDP port (never 0).
    pub port: u16,
}

/// A tracker host as stored in the file (spec §6.2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IPv4 address, stored in dotted-decimal canonical form.
    V4(Ipv4Addr),
    /// An IPv6 address, stored in RFC 5952 canonical form without brackets.
    V6(Ipv6Addr),
    /// A DNS name (letters, digits and hyphens in dot-separated labels).
    Dns(String),
}

/// A section of the file, named in truncation errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// The fixed header (magic, version, flags).
    Header,
    /// The info section (kind, name, lengths, counts).
    Info,
    /// The file list of a directory.
    Files,
    /// The fragment hashes.
    Fragments,
    /// The tracker table.
    Trackers,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Section::Header => "header",
            Section::Info => "info section",
            Section::Files => "file list",
            Section::Fragments => "fragment hashes",
            Section::Trackers => "tracker table",
        })
    }
}

/// Where an unsafe name was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameSite {
    /// The advisory name of the info section.
    Name,
    /// Component `component` (0-based) of the path of file `file` (0-based).
    File {
        /// Index of the file in the file list.
        file: usize,
        /// Index of the component in that file's path.
        component: usize,
    },
}

impl fmt::Display for NameSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameSite::Name => f.write_str("the name"),
            NameSite::File { file, component } => {
                write!(f, "component {} of file {}", component + 1, file + 1)
            }
        }
    }
}

/// Why a name or path component is unsafe (spec §4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The component is empty.
    #[error("is empty")]
    Empty,
    /// The component is `.`.
    #[error("is \".\"")]
    Dot,
    /// The component is `..`.
    #[error("is \"..\"")]
    DotDot,
    /// The component is absolute: it starts with a Windows drive prefix such as `C:`.
    #[error("is an absolute (drive) path")]
    Absolute,
    /// The component contains `/`.
    #[error("contains '/'")]
    Slash,
    /// The component contains `\`.
    #[error("contains '\\'")]
    Backslash,
    /// The component contains a NUL byte.
    #[error("contains a NUL byte")]
    Nul,
    /// The component contains a control character (U+0001..U+001F or U+007F).
    #[error("contains control character 0x{0:02x}")]
    Control(u8),
    /// The component is not valid UTF-8.
    #[error("is not valid UTF-8")]
    NotUtf8,
    /// The component is longer than 255 bytes.
    #[error("is longer than 255 bytes")]
    TooLong,
}

/// Everything that can be wrong with a `.st` file; each rule of the spec has its own variant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StFileError {
    /// The input ends before a field that must be there.
    #[error("truncated at byte {offset} in the {section} ({field}): {needed} more byte(s) needed")]
    Truncated {
        /// Offset at which the cut field starts.
        offset: usize,
        /// The section being read.
        section: Section,
        /// The field that is cut (spec names: `version`, `total_length`, …).
        field: &'static str,
        /// How many bytes of that field are missing.
        needed: u64,
    },
    /// The first eight bytes are not the `.st` magic.
    #[error("not a .st file (bad magic)")]
    BadMagic,
    /// The format version is not 1.
    #[error("unsupported format version {0} (this st reads version 1)")]
    UnsupportedVersion(u16),
    /// Reserved header flags are set.
    #[error("reserved header flags 0x{0:04x} are set")]
    ReservedFlags(u16),
    /// The kind byte is neither 0 (file) nor 1 (directory).
    #[error("unknown kind {0} (0 = file, 1 = directory)")]
    UnknownKind(u8),
    /// The name or a path component is unsafe.
    #[error("{site} {reason}")]
    UnsafeName {
        /// Where the name is.
        site: NameSite,
        /// What is wrong with it.
        reason: NameError,
    },
    /// The total length is zero.
    #[error("total length is zero")]
    ZeroLength,
    /// The total length is above [`MAX_TOTAL_LENGTH`].
    #[error("total length {0} is above the limit of 256 TiB")]
    LengthTooLarge(u64),
    /// The fragment length is zero, not a power of two, or outside 16 KiB..=64 MiB.
    #[error("fragment length {0} is not a power of two between 16 KiB and 64 MiB")]
    FragmentLength(u32),
    /// The fragment count is not ⌈total length / fragment length⌉.
    #[error("fragment count {declared} does not match the length (expected {expected})")]
    FragmentCount {
        /// The count in the file.
        declared: u32,
        /// The count the lengths imply.
        expected: u64,
    },
    /// More fragments than [`MAX_FRAGMENTS`].
    #[error("{0} fragments is above the limit of 4194304")]
    TooManyFragments(u64),
    /// The file count of a directory is zero or above [`MAX_FILES`].
    #[error("file count {0} is outside 1..=1048576")]
    FileCount(u32),
    /// A file path has zero components or more than [`MAX_PATH_DEPTH`].
    #[error("file {file} has path depth {depth}, outside 1..=32")]
    PathDepth {
        /// 1-based index of the file.
        file: usize,
        /// Its depth.
        depth: usize,
    },
    /// The file lengths do not add up to the total length.
    #[error("file lengths add up to {sum} but the total length is {total}")]
    FileListMismatch {
        /// Sum of the file lengths (saturated at `u64::MAX`).
        sum: u64,
        /// The declared total length.
        total: u64,
    },
    /// Two files have the same path.
    #[error("file {file} repeats the path of the file before it")]
    DuplicatePath {
        /// 1-based index of the second file.
        file: usize,
    },
    /// A file's path is a directory of another file's path (`a` and `a/b`).
    #[error("file {file} lies under the path of the file before it, which is not a directory")]
    PathConflict {
        /// 1-based index of the inner file.
        file: usize,
    },
    /// The files are not in canonical (sorted) order.
    #[error("file {file} is out of order (files must be sorted by path)")]
    UnsortedFiles {
        /// 1-based index of the file out of order.
        file: usize,
    },
    /// More trackers than [`MAX_TRACKERS`].
    #[error("{0} trackers is above the limit of 32")]
    TooManyTrackers(usize),
    /// A tracker entry names a transport other than UDP.
    #[error("tracker {index} has unknown transport {transport} (1 = udp)")]
    UnknownTransport {
        /// 1-based index of the tracker.
        index: usize,
        /// The transport byte.
        transport: u8,
    },
    /// A tracker host is not a canonical IPv4/IPv6 address or a valid DNS name.
    #[error("tracker {index} has an invalid host: {reason}")]
    BadHost {
        /// 1-based index of the tracker.
        index: usize,
        /// What is wrong with it.
        reason: HostError,
    },
    /// A tracker port is 0.
    #[error("tracker {index} has port 0")]
    ZeroPort {
        /// 1-based index of the tracker.
        index: usize,
    },
    /// Bytes follow the tracker table.
    #[error("{count} trailing byte(s) after the end at byte {offset}")]
    TrailingBytes {
        /// Where the file should have ended.
        offset: usize,
        /// How many bytes follow.
        count: usize,
    },
}

/// Why a tracker host is invalid (spec §6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The host is empty.
    #[error("empty")]
    Empty,
    /// The host is longer than 253 bytes.
    #[error("longer than 253 bytes")]
    TooLong,
    /// An IP address not written in its canonical form.
    #[error("address not in canonical form")]
    NotCanonical,
    /// A DNS label is empty, longer than 63 bytes, or starts or ends with '-'.
    #[error("bad DNS label")]
    BadLabel,
    /// A character other than letters, digits, '-' and '.'.
    #[error("character not allowed in a host name")]
    BadChar,
    /// The last label is all digits but the host is not an IPv4 address.
    #[error("numeric but not an IPv4 address")]
    NumericName,
}

impl Host {
    /// Parses a host as written in a tracker URL: an IPv4 address, an IPv6 address in
    /// brackets, or a DNS name. Returns a typed error for anything else.
    pub fn parse_url_host(s: &str) -> Result<Host, HostError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(HostError::BadChar)?;
            let addr: Ipv6Addr = inner.parse().map_err(|_| HostError::BadChar)?;
            return Ok(Host::V6(addr));
        }
        if s.contains(':') {
            // An IPv6 address must be bracketed in a URL.
            return Err(HostError::BadChar);
        }
        if let Ok(addr) = s.parse::<Ipv4Addr>() {
            return Ok(Host::V4(addr));
        }
        check_dns_name(s)?;
        Ok(Host::Dns(s.to_ascii_lowercase()))
    }

    /// Parses the host text stored in a `.st` file (no brackets; canonical forms only).
    fn from_stored(s: &str) -> Result<Host, HostError> {
        if s.is_empty() {
            return Err(HostError::Empty);
        }
        if s.contains(':') {
            let addr: Ipv6Addr = s.parse().map_err(|_| HostError::BadChar)?;
            if addr.to_string() != s {
                return Err(HostError::NotCanonical);
            }
            return Ok(Host::V6(addr));
        }
        if let Ok(addr) = s.parse::<Ipv4Addr>() {
            if addr.to_string() != s {
                return Err(HostError::NotCanonical);
            }
            return Ok(Host::V4(addr));
        }
        check_dns_name(s)?;
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(HostError::NotCanonical);
        }
        Ok(Host::Dns(s.to_owned()))
    }

    /// The text stored in the file for this host.
    fn stored(&self) -> String {
        match self {
            Host::V4(a) => a.to_string(),
            Host::V6(a) => a.to_string(),
            Host::Dns(n) => n.clone(),
        }
    }

    fn validate(&self) -> Result<(), HostError> {
        // Round-trips through the stored form, so an encoder never writes what the decoder
        // would reject (e.g. an upper-case or malformed DNS name built by hand).
        let s = self.stored();
        if s.len() > MAX_HOST_LEN {
            return Err(HostError::TooLong);
        }
        Host::from_stored(&s).map(|_| ())
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
            Host::Dns(n) => f.write_str(n),
        }
    }
}

impl fmt::Display for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "udp://{}:{}", self.host, self.port)
    }
}

/// Why a tracker URL could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrackerUrlError {
    /// The URL does not start with `udp://`.
    #[error("only udp:// trackers are supported")]
    Scheme,
    /// The URL has no `:PORT`.
    #[error("missing :PORT")]
    MissingPort,
    /// The port is not a number in 1..=65535.
    #[error("port must be a number from 1 to 65535")]
    BadPort,
    /// Something follows the port.
    #[error("nothing may follow the port (no path)")]
    Path,
    /// The host is invalid.
    #[error("host {0}")]
    Host(HostError),
}

impl Tracker {
    /// Parses `udp://HOST:PORT`, where HOST is an IPv4 address, a bracketed IPv6 address or a
    /// DNS name. A single trailing `/` is tolerated.
    pub fn parse_url(url: &str) -> Result<Tracker, TrackerUrlError> {
        let rest = url.strip_prefix("udp://").ok_or(TrackerUrlError::Scheme)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(TrackerUrlError::Path);
        }
        let (host, port) = if rest.starts_with('[') {
            let end = rest
                .find(']')
                .ok_or(TrackerUrlError::Host(HostError::BadChar))?;
            let (h, p) = rest.split_at(end + 1);
            (h, p.strip_prefix(':').ok_or(TrackerUrlError::MissingPort)?)
        } else {
            rest.rsplit_once(':').ok_or(TrackerUrlError::MissingPort)?
        };
        let host = Host::parse_url_host(host).map_err(TrackerUrlError::Host)?;
        if host.stored().len() > MAX_HOST_LEN {
            return Err(TrackerUrlError::Host(HostError::TooLong));
        }
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TrackerUrlError::BadPort);
        }
        let port: u16 = port.parse().map_err(|_| TrackerUrlError::BadPort)?;
        if port == 0 {
            return Err(TrackerUrlError::BadPort);
        }
        Ok(Tracker { host, port })
    }
}

fn check_dns_name(s: &str) -> Result<(), HostError> {
    if s.is_empty() {
        return Err(HostError::Empty);
    }
    if s.len() > MAX_HOST_LEN {
        return Err(HostError::TooLong);
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(HostError::BadChar);
    }
    let mut last = "";
    for label in s.split('.') {
        if label.is_empty() || label.len() > 63 || label.starts_with('-') || label.ends_with('-') {
            return Err(HostError::BadLabel);
        }
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::NumericName);
    }
    Ok(())
}

/// Checks one name or path component against spec §4.4.
pub fn check_component(bytes: &[u8]) -> Result<&str, NameError> {
    if bytes.is_empty() {
        return Err(NameError::Empty);
    }
    if bytes.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    if bytes == b"." {
        return Err(NameError::Dot);
    }
    if bytes == b".." {
        return Err(NameError::DotDot);
    }
    for &b in bytes {
        match b {
            b'/' => return Err(NameError::Slash),
            b'\\' => return Err(NameError::Backslash),
            0 => return Err(NameError::Nul),
            1..=0x1f | 0x7f => return Err(NameError::Control(b)),
            _ => {}
        }
    }
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return Err(NameError::Absolute);
    }
    std::str::from_utf8(bytes).map_err(|_| NameError::NotUtf8)
}

/// ⌈total / fragment⌉ without overflow; `fragment_length` must be non-zero.
pub fn fragment_count(total_length: u64, fragment_length: u32) -> u64 {
    total_length.div_ceil(u64::from(fragment_length))
}

/// The fragment layout of a swarm: `total_length` bytes in fragments of `fragment_length`
/// bytes, the last one possibly short (spec §4). The one place where fragment counts, starts
/// and lengths are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    total_length: u64,
    fragment_length: u32,
    count: u32,
}

impl Geometry {
    /// The layout, or `None` if `fragment_length` is zero or there would be more than
    /// `u32::MAX` fragments.
    pub fn new(total_length: u64, fragment_length: u32) -> Option<Geometry> {
        if fragment_length == 0 {
            return None;
        }
        let count = u32::try_from(fragment_count(total_length, fragment_length)).ok()?;
        Some(Geometry {
            total_length,
            fragment_length,
            count,
        })
    }

    /// Total length in bytes.
    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    /// Fragment length in bytes (of every fragment but possibly the last).
    pub fn fragment_length(&self) -> u32 {
        self.fragment_length
    }

    /// Number of fragments.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Offset of fragment `i`'s first byte in the data.
    pub fn start(&self, i: u32) -> u64 {
        u64::from(i) * u64::from(self.fragment_length)
    }

    /// Length of fragment `i` (the last may be short); 0 if out of range.
    pub fn len(&self, i: u32) -> u32 {
        if i >= self.count {
            return 0;
        }
        (self.total_length - self.start(i)).min(u64::from(self.fragment_length)) as u32
    }

    /// Bytes in the fragments `indices` names.
    pub fn bytes_in(&self, indices: impl IntoIterator<Item = u32>) -> u64 {
        indices.into_iter().map(|i| u64::from(self.len(i))).sum()
    }
}

fn check_fragment_length(len: u32) -> Result<(), StFileError> {
    if !len.is_power_of_two() || !(MIN_FRAGMENT_LENGTH..=MAX_FRAGMENT_LENGTH).contains(&len) {
        return Err(StFileError::FragmentLength(len));
    }
    Ok(())
}

fn check_total_length(total: u64) -> Result<(), StFileError> {
    if total == 0 {
        return Err(StFileError::ZeroLength);
    }
    if total > MAX_TOTAL_LENGTH {
        return Err(StFileError::LengthTooLarge(total));
    }
    Ok(())
}

/// Checks the fragment count against the lengths (spec §4.2); the lengths are valid.
fn check_fragment_count(total: u64, frag_len: u32, declared: u64) -> Result<(), StFileError> {
    let expected = fragment_count(total, frag_len);
    if expected > u64::from(MAX_FRAGMENTS) {
        return Err(StFileError::TooManyFragments(expected));
    }
    if declared != expected {
        return Err(StFileError::FragmentCount {
            declared: u32::try_from(declared).unwrap_or(u32::MAX),
            expected,
        });
    }
    Ok(())
}

/// Checks the rules of a directory's file list that involve more than one entry
/// (spec §4.3): order, duplicates, conflicts and the sum of lengths.
fn check_file_list(files: &[FileEntry], total: u64) -> Result<(), StFileError> {
    let mut sum: u64 = 0;
    for (i, f) in files.iter().enumerate() {
        sum = sum.saturating_add(f.length);
        if i > 0 {
            let prev = &files[i - 1].path;
            match cmp_paths(prev, &f.path) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => {
                    return Err(StFileError::DuplicatePath { file: i + 1 });
                }
                std::cmp::Ordering::Greater => {
                    return Err(StFileError::UnsortedFiles { file: i + 1 });
                }
            }
            if f.path.len() > prev.len() && f.path[..prev.len()] == prev[..] {
                return Err(StFileError::PathConflict { file: i + 1 });
            }
        }
    }
    if sum != total {
        return Err(StFileError::FileListMismatch { sum, total });
    }
    Ok(())
}

/// The canonical order of paths: component by component, bytewise (spec §4.3).
pub fn cmp_paths(a: &[String], b: &[String]) -> std::cmp::Ordering {
    a.iter()
        .map(|c| c.as_bytes())
        .cmp(b.iter().map(|c| c.as_bytes()))
}

/// A bounds-checked cursor over the input that names the section it is reading.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    section: Section,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], StFileError> {
        let rest = &self.buf[self.pos..];
        if rest.len() < n {
            return Err(StFileError::Truncated {
                offset: self.pos,
                section: self.section,
                field,
                needed: (n - rest.len()) as u64,
            });
        }
        let out = &rest[..n];
        self.pos += n;
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, StFileError> {
        Ok(self.take(1, field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, StFileError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, StFileError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, StFileError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A fixed structure whose `fields` (name and width, in order) add up to its size. If the
    /// input is cut inside it, the error names the field that is cut and where it starts.
    fn read<T: FromBytes + KnownLayout + Immutable + Unaligned>(
        &mut self,
        fields: &[(&'static str, usize)],
    ) -> Result<&'a T, StFileError> {
        debug_assert_eq!(fields.iter().map(|f| f.1).sum::<usize>(), size_of::<T>());
        let have = self.remaining();
        let mut start = 0;
        for &(field, width) in fields {
            if have < start + width {
                return Err(StFileError::Truncated {
                    offset: self.pos + start,
                    section: self.section,
                    field,
                    needed: (start + width - have) as u64,
                });
            }
            start += width;
        }
        let bytes = self.take(size_of::<T>(), "")?;
        // The length was checked above; an unaligned type cannot fail otherwise.
        T::ref_from_bytes(bytes).map_err(|_| StFileError::Truncated {
            offset: self.pos,
            section: self.section,
            field: "",
            needed: 0,
        })
    }

    /// A length-prefixed (u8) component, checked against spec §4.4.
    fn component(&mut self, site: NameSite) -> Result<String, StFileError> {
        let len = self.u8("name length")? as usize;
        let bytes = self.take(len, "name")?;
        check_component(bytes)
            .map(str::to_owned)
            .map_err(|reason| StFileError::UnsafeName { site, reason })
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

impl StFile {
    /// Decodes a `.st` file, applying every rule of `spec/st-file.md`.
    pub fn decode(buf: &[u8]) -> Result<StFile, StFileError> {
        let (file, _) = Self::decode_with_info_len(buf)?;
        Ok(file)
    }

    /// Decodes and also returns the swarm id, hashed over the input's own info bytes.
    pub fn decode_with_swarm_id(buf: &[u8]) -> Result<(StFile, Hash), StFileError> {
        let (file, info_len) = Self::decode_with_info_len(buf)?;
        Ok((file, Sha256::digest(&buf[..info_len]).into()))
    }

    fn decode_with_info_len(buf: &[u8]) -> Result<(StFile, usize), StFileError> {
        let mut r = Reader {
            buf,
            pos: 0,
            section: Section::Header,
        };
        // §3 header. The magic is checked on what is there, so that a short non-.st file
        // reports "bad magic" rather than "truncated".
        let head = &buf[..buf.len().min(MAGIC.len())];
        if head != &MAGIC[..head.len()] {
            return Err(StFileError::BadMagic);
        }
        let header: &Header = r.read(&[("magic", 8), ("version", 2), ("flags", 2)])?;
        let version = header.version.get();
        if version != VERSION {
            return Err(StFileError::UnsupportedVersion(version));
        }
        let flags = header.flags.get();
        if flags & !FLAG_PRIVATE != 0 {
            return Err(StFileError::ReservedFlags(flags & !FLAG_PRIVATE));
        }
        let private = flags & FLAG_PRIVATE != 0;

        // §4.1 info.
        r.section = Section::Info;
        let kind = r.u8("kind")?;
        if kind != KIND_FILE && kind != KIND_DIRECTORY {
            return Err(StFileError::UnknownKind(kind));
        }
        let name = r.component(NameSite::Name)?;
        let fixed: &InfoFixed = r.read(&[
            ("total_length", 8),
            ("fragment_length", 4),
            ("fragment_count", 4),
        ])?;
        let total_length = fixed.total_length.get();
        let fragment_length = fixed.fragment_length.get();
        let declared = fixed.fragment_count.get();
        check_total_length(total_length)?;
        check_fragment_length(fragment_length)?;
        check_fragment_count(total_length, fragment_length, u64::from(declared))?;

        // §4.3 file list.
        let files = if kind == KIND_DIRECTORY {
            r.section = Section::Files;
            let count = r.u32("file_count")?;
            if count == 0 || count > MAX_FILES {
                return Err(StFileError::FileCount(count));
            }
            // No reservation from `count`: each entry takes at least 11 bytes of input, so the
            // vector grows only as far as the input justifies.
            let mut files = Vec::new();
            for file in 0..count as usize {
                let length = r.u64("file length")?;
                let depth = r.u8("path depth")? as usize;
                if depth == 0 || depth > MAX_PATH_DEPTH {
                    return Err(StFileError::PathDepth {
                        file: file + 1,
                        depth,
                    });
                }
                let mut path = Vec::with_capacity(depth);
                for component in 0..depth {
                    path.push(r.component(NameSite::File { file, component })?);
                }
                files.push(FileEntry { path, length });
            }
            check_file_list(&files, total_length)?;
            Some(files)
        } else {
            None
        };

        // §4.5 fragment hashes: the size is checked before anything is reserved.
        r.section = Section::Fragments;
        let hash_bytes = declared as usize * HASH_LEN;
        let raw = r.take(hash_bytes, "digests")?;
        let hashes: Vec<Hash> = raw
            .chunks_exact(HASH_LEN)
            .map(|c| {
                let mut h = [0u8; HASH_LEN];
                h.copy_from_slice(c);
                h
            })
            .collect();
        let info_len = r.pos;

        // §6 trackers.
        r.section = Section::Trackers;
        let count = r.u8("tracker_count")? as usize;
        if count > MAX_TRACKERS {
            return Err(StFileError::TooManyTrackers(count));
        }
        let mut trackers = Vec::with_capacity(count);
        for i in 0..count {
            let index = i + 1;
            let transport = r.u8("transport")?;
            if transport != TRANSPORT_UDP {
                return Err(StFileError::UnknownTransport { index, transport });
            }
            let len = r.u8("host length")? as usize;
            let host_bytes = r.take(len, "host")?;
            let host = std::str::from_utf8(host_bytes)
                .map_err(|_| HostError::BadChar)
                .and_then(|s| {
                    if s.len() > MAX_HOST_LEN {
                        Err(HostError::TooLong)
                    } else {
                        Host::from_stored(s)
                    }
                })
                .map_err(|reason| StFileError::BadHost { index, reason })?;
            let port = r.u16("port")?;
            if port == 0 {
                return Err(StFileError::ZeroPort { index });
            }
            trackers.push(Tracker { host, port });
        }
        if r.remaining() != 0 {
            return Err(StFileError::TrailingBytes {
                offset: r.pos,
                count: r.remaining(),
            });
        }
        let info = Info {
            name,
            total_length,
            fragment_length,
            files,
            hashes,
            private,
        };
        Ok((StFile { trackers, info }, info_len))
    }

    /// Encodes the file. Fails, with the error the decoder would give, on anything the decoder
    /// would reject, so a written file always reads back.
    pub fn encode(&self) -> Result<Vec<u8>, StFileError> {
        let mut out = self.info.encode()?;
        if self.trackers.len() > MAX_TRACKERS {
            return Err(StFileError::TooManyTrackers(self.trackers.len()));
        }
        out.push(self.trackers.len() as u8);
        for (i, t) in self.trackers.iter().enumerate() {
            let index = i + 1;
            t.host
                .validate()
                .map_err(|reason| StFileError::BadHost { index, reason })?;
            if t.port == 0 {
                return Err(StFileError::ZeroPort { index });
            }
            let host = t.host.stored();
            out.push(TRANSPORT_UDP);
            out.push(host.len() as u8);
            out.extend_from_slice(host.as_bytes());
            out.extend_from_slice(&t.port.to_be_bytes());
        }
        Ok(out)
    }

    /// The swarm id: SHA-256 of the header and info part (spec §5).
    pub fn swarm_id(&self) -> Result<Hash, StFileError> {
        self.info.swarm_id()
    }
}

impl Info {
    /// Checks every rule of the info part (spec §4) without encoding it.
    pub fn validate(&self) -> Result<(), StFileError> {
        check_component(self.name.as_bytes()).map_err(|reason| StFileError::UnsafeName {
            site: NameSite::Name,
            reason,
        })?;
        check_total_length(self.total_length)?;
        check_fragment_length(self.fragment_length)?;
        check_fragment_count(
            self.total_length,
            self.fragment_length,
            self.hashes.len() as u64,
        )?;
        if let Some(files) = &self.files {
            let count = u32::try_from(files.len()).unwrap_or(u32::MAX);
            if files.is_empty() || count > MAX_FILES {
                return Err(StFileError::FileCount(count));
            }
            for (file, f) in files.iter().enumerate() {
                if f.path.is_empty() || f.path.len() > MAX_PATH_DEPTH {
                    return Err(StFileError::PathDepth {
                        file: file + 1,
                        depth: f.path.len(),
                    });
                }
                for (component, c) in f.path.iter().enumerate() {
                    check_component(c.as_bytes()).map_err(|reason| StFileError::UnsafeName {
                        site: NameSite::File { file, component },
                        reason,
                    })?;
                }
            }
            check_file_list(files, self.total_length)?;
        }
        Ok(())
    }

    /// Encodes the header and info part: the bytes the swarm id is the hash of.
    pub fn encode(&self) -> Result<Vec<u8>, StFileError> {
        self.validate()?;
        let mut out = Vec::with_capacity(64 + self.hashes.len() * HASH_LEN);
        let header = Header {
            magic: MAGIC,
            version: VERSION.into(),
            flags: (if self.private { FLAG_PRIVATE } else { 0 }).into(),
        };
        out.extend_from_slice(header.as_bytes());
        out.push(if self.files.is_some() {
            KIND_DIRECTORY
        } else {
            KIND_FILE
        });
        push_component(&mut out, &self.name);
        let fixed = InfoFixed {
            total_length: self.total_length.into(),
            fragment_length: self.fragment_length.into(),
            fragment_count: (self.hashes.len() as u32).into(),
        };
        out.extend_from_slice(fixed.as_bytes());
        if let Some(files) = &self.files {
            out.extend_from_slice(&(files.len() as u32).to_be_bytes());
            for f in files {
                out.extend_from_slice(&f.length.to_be_bytes());
                out.push(f.path.len() as u8);
                for c in &f.path {
                    push_component(&mut out, c);
                }
            }
        }
        for h in &self.hashes {
            out.extend_from_slice(h);
        }
        Ok(out)
    }

    /// The swarm id: SHA-256 of [`Info::encode`]'s output (spec §5).
    pub fn swarm_id(&self) -> Result<Hash, StFileError> {
        Ok(Sha256::digest(self.encode()?).into())
    }

    /// Number of fragments.
    pub fn fragment_count(&self) -> u32 {
        self.hashes.len() as u32
    }

    /// Length in bytes of fragment `index` (the last one may be short); 0 if out of range.
    pub fn fragment_len(&self, index: u32) -> u32 {
        self.geometry().map_or(0, |g| g.len(index))
    }

    /// The fragment layout (`None` only for an `Info` the decoder would refuse).
    pub fn geometry(&self) -> Option<Geometry> {
        Geometry::new(self.total_length, self.fragment_length)
    }

    /// The length of each file laid end to end: one entry (the whole length) for a single file.
    pub fn file_lengths(&self) -> Vec<u64> {
        match &self.files {
            None => vec![self.total_length],
            Some(files) => files.iter().map(|f| f.length).collect(),
        }
    }
}

fn push_component(out: &mut Vec<u8>, c: &str) {
    out.push(c.len() as u8);
    out.extend_from_slice(c.as_bytes());
}

/// Maps byte ranges of the shared data onto the files that hold them.
///
/// Files are laid end to end in file-list order (spec §4.3); a fragment may span several files,
/// and zero-length files hold no bytes at all.
#[derive(Clone, Debug)]
pub struct FileMap {
    /// Start offset of each file in the concatenated data, plus the total length at the end.
    starts: Vec<u64>,
}

/// One piece of a byte range that lies within a single file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Index of the file in the file list (0 for a single file).
    pub file: usize,
    /// Offset within that file.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
}

impl FileMap {
    /// Builds the map from the lengths of the files, in order.
    pub fn new(lengths: &[u64]) -> FileMap {
        let mut starts = Vec::with_capacity(lengths.len() + 1);
        let mut at = 0u64;
        for &l in lengths {
            starts.push(at);
            at = at.saturating_add(l);
        }
        starts.push(at);
        FileMap { starts }
    }

    /// The spans covering `offset..offset + len` of the data, in order, skipping empty files.
    /// Bytes beyond the total length are not covered.
    pub fn spans(&self, offset: u64, len: u64) -> Vec<Span> {
        let mut out = Vec::new();
        let total = *self.starts.last().unwrap_or(&0);
        let end = offset.saturating_add(len).min(total);
        if offset >= end {
            return out;
        }
        // Last file whose start is <= offset (files of length 0 share starts; skip them below).
        let mut file = self.starts[..self.starts.len() - 1].partition_point(|&s| s <= offset);
        file = file.saturating_sub(1);
        let mut at = offset;
        while at < end && file + 1 < self.starts.len() {
            let (fs, fe) = (self.starts[file], self.starts[file + 1]);
            if fe > at {
                let take = fe.min(end) - at;
                out.push(Span {
                    file,
                    offset: at - fs,
                    len: take,
                });
                at += take;
            }
            file += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests;

/// The fuzzing invariant of the decoder (`fuzz/fuzz_targets/st_file.rs`, replayed by
/// `proto/tests/fuzz_corpus.rs`): decoding any input either fails with a typed error, or
/// succeeds and re-encoding gives back exactly the input (one encoding per value), with a
/// swarm id equal to the hash of the input's own info bytes.
pub fn fuzz_check(data: &[u8]) -> Result<(), String> {
    let Ok((file, id)) = StFile::decode_with_swarm_id(data) else {
        return Ok(());
    };
    let again = file
        .encode()
        .map_err(|e| format!("decoded file does not re-encode: {e}"))?;
    if again != data {
        return Err("re-encoding differs from the input".into());
    }
    if file.swarm_id().map_err(|e| e.to_string())? != id {
        return Err("swarm id differs from the hash of the info bytes".into());
    }
    Ok(())
}
