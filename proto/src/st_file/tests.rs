//! Tests of the `.st` codec: golden vectors from `spec/st-file.md`, one test per rejection
//! rule, and property tests of the round trip.

use super::*;
use proptest::prelude::*;

const SPEC: &str = include_str!("../../../spec/st-file.md");

/// Extracts the hex block that follows `<!-- vector: NAME -->` in the spec.
fn spec_vector(name: &str) -> Vec<u8> {
    let marker = format!("<!-- vector: {name} -->");
    let start = SPEC.find(&marker).expect("vector marker in spec") + marker.len();
    let rest = &SPEC[start..];
    let open = rest.find("```").expect("code block") + 3;
    let body_start = open + rest[open..].find('\n').expect("newline") + 1;
    let body_end = body_start + rest[body_start..].find("```").expect("block end");
    let mut out = Vec::new();
    for line in rest[body_start..body_end].lines() {
        // Each line: "OFFSET: hex hex ...  # comment"; the offset is checked too.
        let line = line.split('#').next().unwrap().trim();
        if line.is_empty() {
            continue;
        }
        let (off, hex) = line.split_once(':').expect("offset prefix");
        let off = usize::from_str_radix(off.trim(), 16).expect("hex offset");
        assert_eq!(off, out.len(), "offset column of vector {name} at {line:?}");
        for byte in hex.split_whitespace() {
            out.push(u8::from_str_radix(byte, 16).expect("hex byte"));
        }
    }
    out
}

/// Extracts the swarm id stated for a vector: "swarm id (NAME): HEX".
fn spec_swarm_id(name: &str) -> String {
    let marker = format!("swarm id ({name}): `");
    let start = SPEC.find(&marker).expect("swarm id in spec") + marker.len();
    SPEC[start..start + 64].to_owned()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha(data: &[u8]) -> Hash {
    Sha256::digest(data).into()
}

/// The single-file vector of the spec, built from its data.
fn single() -> StFile {
    let frag0 = vec![b'a'; 16384];
    let frag1 = vec![b'b'; 20000 - 16384];
    StFile {
        trackers: vec![
            Tracker {
                host: Host::V4(Ipv4Addr::new(127, 0, 0, 1)),
                port: 6969,
            },
            Tracker {
                host: Host::Dns("tracker.example.org".into()),
                port: 6969,
            },
        ],
        info: Info {
            name: "hello.bin".into(),
            total_length: 20000,
            fragment_length: 16384,
            files: None,
            hashes: vec![sha(&frag0), sha(&frag1)],
            private: false,
        },
    }
}

/// The directory vector of the spec.
fn directory() -> StFile {
    StFile {
        trackers: vec![],
        info: Info {
            name: "demo".into(),
            total_length: 11,
            fragment_length: 16384,
            files: Some(vec![
                FileEntry {
                    path: vec!["a.txt".into()],
                    length: 5,
                },
                FileEntry {
                    path: vec!["sub".into(), "b.txt".into()],
                    length: 6,
                },
            ]),
            hashes: vec![sha(b"helloworld\n")],
            private: false,
        },
    }
}

#[test]
fn golden_single_file() {
    let bytes = spec_vector("single");
    assert_eq!(StFile::decode(&bytes).unwrap(), single());
    assert_eq!(single().encode().unwrap(), bytes);
    assert_eq!(hex(&single().swarm_id().unwrap()), spec_swarm_id("single"));
    let (_, id) = StFile::decode_with_swarm_id(&bytes).unwrap();
    assert_eq!(hex(&id), spec_swarm_id("single"));
}

#[test]
fn golden_directory() {
    let bytes = spec_vector("directory");
    assert_eq!(StFile::decode(&bytes).unwrap(), directory());
    assert_eq!(directory().encode().unwrap(), bytes);
    assert_eq!(
        hex(&directory().swarm_id().unwrap()),
        spec_swarm_id("directory")
    );
}

#[test]
fn swarm_id_ignores_trackers() {
    let a = single();
    let mut b = single();
    b.trackers = vec![Tracker {
        host: Host::V6(Ipv6Addr::LOCALHOST),
        port: 1,
    }];
    assert_ne!(a.encode().unwrap(), b.encode().unwrap());
    assert_eq!(a.swarm_id().unwrap(), b.swarm_id().unwrap());
    let (_, ia) = StFile::decode_with_swarm_id(&a.encode().unwrap()).unwrap();
    let (_, ib) = StFile::decode_with_swarm_id(&b.encode().unwrap()).unwrap();
    assert_eq!(ia, ib);
    // …but any change to the info part changes it.
    let mut c = single();
    c.info.name = "other.bin".into();
    assert_ne!(a.swarm_id().unwrap(), c.swarm_id().unwrap());
}

/// Builds raw bytes field by field, independently of the encoder, for hostile inputs.
#[derive(Clone)]
struct Raw {
    magic: Vec<u8>,
    version: u16,
    flags: u16,
    kind: u8,
    name: Vec<u8>,
    total: u64,
    frag_len: u32,
    frag_count: u32,
    /// (length, components); written only when kind == 1.
    files: Vec<(u64, Vec<Vec<u8>>)>,
    file_count: Option<u32>,
    hashes: usize,
    /// (transport, host, port)
    trackers: Vec<(u8, Vec<u8>, u16)>,
    tracker_count: Option<u8>,
    trailing: Vec<u8>,
}

impl Raw {
    fn single() -> Raw {
        Raw {
            magic: MAGIC.to_vec(),
            version: 1,
            flags: 0,
            kind: 0,
            name: b"x.bin".to_vec(),
            total: 20000,
            frag_len: 16384,
            frag_count: 2,
            files: vec![],
            file_count: None,
            hashes: 2,
            trackers: vec![(1, b"127.0.0.1".to_vec(), 6969)],
            tracker_count: None,
            trailing: vec![],
        }
    }

    fn dir() -> Raw {
        Raw {
            kind: 1,
            total: 11,
            frag_count: 1,
            hashes: 1,
            files: vec![
                (5, vec![b"a".to_vec()]),
                (6, vec![b"b".to_vec(), b"c".to_vec()]),
            ],
            ..Raw::single()
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut o = self.magic.clone();
        o.extend(self.version.to_be_bytes());
        o.extend(self.flags.to_be_bytes());
        o.push(self.kind);
        o.push(self.name.len() as u8);
        o.extend(&self.name);
        o.extend(self.total.to_be_bytes());
        o.extend(self.frag_len.to_be_bytes());
        o.extend(self.frag_count.to_be_bytes());
        if self.kind == 1 {
            o.extend(
                self.file_count
                    .unwrap_or(self.files.len() as u32)
                    .to_be_bytes(),
            );
            for (len, comps) in &self.files {
                o.extend(len.to_be_bytes());
                o.push(comps.len() as u8);
                for c in comps {
                    o.push(c.len() as u8);
                    o.extend(c);
                }
            }
        }
        for i in 0..self.hashes {
            o.extend([i as u8; 32]);
        }
        o.push(self.tracker_count.unwrap_or(self.trackers.len() as u8));
        for (t, h, p) in &self.trackers {
            o.push(*t);
            o.push(h.len() as u8);
            o.extend(h);
            o.extend(p.to_be_bytes());
        }
        o.extend(&self.trailing);
        o
    }

    fn decode(&self) -> Result<StFile, StFileError> {
        StFile::decode(&self.bytes())
    }
}

#[test]
fn raw_builder_baselines_are_valid() {
    // The hostile cases below each change one field of these; they must start out valid so
    // that each test fails only for the reason it names.
    Raw::single().decode().unwrap();
    Raw::dir().decode().unwrap();
}

#[test]
fn rejects_bad_magic() {
    let mut r = Raw::single();
    r.magic[1] = b'X';
    assert_eq!(r.decode(), Err(StFileError::BadMagic));
    assert_eq!(StFile::decode(b"d8:announce"), Err(StFileError::BadMagic));
    assert_eq!(
        StFile::decode(b""),
        Err(StFileError::Truncated {
            offset: 0,
            section: Section::Header,
            field: "magic",
            needed: 8
        })
    );
}

#[test]
fn rejects_unknown_version_and_flags() {
    let mut r = Raw::single();
    r.version = 2;
    assert_eq!(r.decode(), Err(StFileError::UnsupportedVersion(2)));
    let mut r = Raw::single();
    r.flags = 0x8000;
    assert_eq!(r.decode(), Err(StFileError::ReservedFlags(0x8000)));
    let mut r = Raw::single();
    r.flags = 0x0003;
    assert_eq!(r.decode(), Err(StFileError::ReservedFlags(0x0002)));
}

#[test]
fn the_private_flag_is_bit_0_and_changes_the_swarm_id() {
    let mut r = Raw::single();
    r.flags = 0x0001;
    let f = r.decode().unwrap();
    assert!(f.info.private);
    let mut public = f.clone();
    public.info.private = false;
    assert_ne!(f.swarm_id().unwrap(), public.swarm_id().unwrap());
    let bytes = f.encode().unwrap();
    assert_eq!(&bytes[10..12], &[0, 1]);
    assert_eq!(StFile::decode(&bytes).unwrap(), f);
}

#[test]
fn rejects_unknown_kind() {
    let mut r = Raw::single();
    r.kind = 2;
    assert_eq!(r.decode(), Err(StFileError::UnknownKind(2)));
}

#[test]
fn every_truncation_is_reported_with_offset_and_section() {
    for raw in [Raw::single(), Raw::dir()] {
        let bytes = raw.bytes();
        for cut in 0..bytes.len() {
            match StFile::decode(&bytes[..cut]) {
                Err(StFileError::Truncated {
                    offset,
                    needed,
                    field,
                    ..
                }) => {
                    // The field named is the one the input ends in.
                    assert!(offset <= cut, "cut {cut}: offset {offset}");
                    assert!(needed >= 1, "cut {cut}: {field} needs {needed}");
                    assert!(!field.is_empty(), "cut {cut}: no field named");
                }
                other => panic!("prefix of {cut} bytes gave {other:?}"),
            }
        }
    }
    // Each fixed field is named where it starts (single vector: a 5-byte name).
    let bytes = Raw::single().bytes();
    let cases: [(usize, usize, Section, &str, u64); 9] = [
        (0, 0, Section::Header, "magic", 8),
        (9, 8, Section::Header, "version", 1),
        (10, 10, Section::Header, "flags", 2),
        (11, 10, Section::Header, "flags", 1),
        (13, 13, Section::Info, "name length", 1),
        (20, 19, Section::Info, "total_length", 7),
        (27, 27, Section::Info, "fragment_length", 4),
        (33, 31, Section::Info, "fragment_count", 2),
        (45, 35, Section::Fragments, "digests", 54),
    ];
    for (cut, offset, section, field, needed) in cases {
        assert_eq!(
            StFile::decode(&bytes[..cut]),
            Err(StFileError::Truncated {
                offset,
                section,
                field,
                needed
            }),
            "cut at {cut}"
        );
    }
    let msg = StFile::decode(&bytes[..9]).unwrap_err().to_string();
    assert_eq!(
        msg,
        "truncated at byte 8 in the header (version): 1 more byte(s) needed"
    );
}

#[test]
fn rejects_trailing_bytes() {
    let mut r = Raw::single();
    r.trailing = vec![0];
    let len = r.bytes().len();
    assert_eq!(
        r.decode(),
        Err(StFileError::TrailingBytes {
            offset: len - 1,
            count: 1
        })
    );
}

#[test]
fn rejects_bad_total_length() {
    let mut r = Raw::single();
    r.total = 0;
    r.frag_count = 0;
    r.hashes = 0;
    assert_eq!(r.decode(), Err(StFileError::ZeroLength));
    let mut r = Raw::single();
    r.total = MAX_TOTAL_LENGTH + 1;
    assert_eq!(
        r.decode(),
        Err(StFileError::LengthTooLarge(MAX_TOTAL_LENGTH + 1))
    );
    let mut r = Raw::single();
    r.total = u64::MAX;
    assert_eq!(r.decode(), Err(StFileError::LengthTooLarge(u64::MAX)));
}

#[test]
fn rejects_bad_fragment_length() {
    for bad in [
        0,
        1,
        16383,
        16385,
        3 << 14,
        MAX_FRAGMENT_LENGTH * 2,
        u32::MAX,
    ] {
        let mut r = Raw::single();
        r.frag_len = bad;
        assert_eq!(r.decode(), Err(StFileError::FragmentLength(bad)), "{bad}");
    }
}

#[test]
fn rejects_fragment_count_mismatch() {
    let mut r = Raw::single();
    r.frag_count = 3;
    r.hashes = 3;
    assert_eq!(
        r.decode(),
        Err(StFileError::FragmentCount {
            declared: 3,
            expected: 2
        })
    );
    // A huge declared count is rejected before any hash is read or allocated.
    let mut r = Raw::single();
    r.frag_count = u32::MAX;
    assert!(matches!(r.decode(), Err(StFileError::FragmentCount { .. })));
}

#[test]
fn rejects_too_many_fragments() {
    let mut r = Raw::single();
    r.frag_len = MIN_FRAGMENT_LENGTH;
    r.total = u64::from(MIN_FRAGMENT_LENGTH) * (u64::from(MAX_FRAGMENTS) + 1);
    r.frag_count = MAX_FRAGMENTS + 1;
    assert_eq!(
        r.decode(),
        Err(StFileError::TooManyFragments(u64::from(MAX_FRAGMENTS) + 1))
    );
}

#[test]
fn large_declared_count_with_short_input_is_truncated_not_allocated() {
    // 4 Mi fragments × 64 MiB declared, no hashes present: must fail on the size check.
    let mut r = Raw::single();
    r.frag_len = MAX_FRAGMENT_LENGTH;
    r.total = MAX_TOTAL_LENGTH;
    r.frag_count = MAX_FRAGMENTS;
    r.hashes = 0;
    r.trackers.clear();
    match r.decode() {
        Err(StFileError::Truncated {
            section: Section::Fragments,
            needed,
            ..
        }) => assert_eq!(needed, u64::from(MAX_FRAGMENTS) * 32 - 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejects_bad_file_count_and_depth() {
    let mut r = Raw::dir();
    r.file_count = Some(0);
    assert_eq!(r.decode(), Err(StFileError::FileCount(0)));
    let mut r = Raw::dir();
    r.file_count = Some(MAX_FILES + 1);
    assert_eq!(r.decode(), Err(StFileError::FileCount(MAX_FILES + 1)));
    // A count larger than the entries present: truncated in the file list.
    let mut r = Raw::dir();
    r.file_count = Some(1000);
    assert!(matches!(
        r.decode(),
        Err(StFileError::Truncated {
            section: Section::Files,
            ..
        }) | Err(StFileError::PathDepth { .. })
    ));
    let mut r = Raw::dir();
    r.files[1].1 = vec![];
    assert_eq!(
        r.decode(),
        Err(StFileError::PathDepth { file: 2, depth: 0 })
    );
    let mut r = Raw::dir();
    r.files[1].1 = vec![b"d".to_vec(); 33];
    assert_eq!(
        r.decode(),
        Err(StFileError::PathDepth { file: 2, depth: 33 })
    );
}

#[test]
fn rejects_file_list_not_adding_up() {
    let mut r = Raw::dir();
    r.files[0].0 = 4;
    assert_eq!(
        r.decode(),
        Err(StFileError::FileListMismatch { sum: 10, total: 11 })
    );
    // Overflowing sums saturate rather than wrap to the right total.
    let mut r = Raw::dir();
    r.files[0].0 = u64::MAX;
    r.files[1].0 = 12;
    assert_eq!(
        r.decode(),
        Err(StFileError::FileListMismatch {
            sum: u64::MAX,
            total: 11
        })
    );
}

#[test]
fn rejects_duplicate_unsorted_and_conflicting_paths() {
    let mut r = Raw::dir();
    r.files[1].1 = vec![b"a".to_vec()];
    assert_eq!(r.decode(), Err(StFileError::DuplicatePath { file: 2 }));
    let mut r = Raw::dir();
    r.files.swap(0, 1);
    assert_eq!(r.decode(), Err(StFileError::UnsortedFiles { file: 2 }));
    let mut r = Raw::dir();
    r.files[1].1 = vec![b"a".to_vec(), b"c".to_vec()];
    assert_eq!(r.decode(), Err(StFileError::PathConflict { file: 2 }));
}

fn name_error_of(name: &[u8]) -> Option<NameError> {
    let mut r = Raw::single();
    r.name = name.to_vec();
    match r.decode() {
        Ok(_) => None,
        Err(StFileError::UnsafeName {
            site: NameSite::Name,
            reason,
        }) => Some(reason),
        Err(e) => panic!("{name:?}: {e:?}"),
    }
}

#[test]
fn rejects_unsafe_names() {
    assert_eq!(name_error_of(b""), Some(NameError::Empty));
    assert_eq!(name_error_of(b"."), Some(NameError::Dot));
    assert_eq!(name_error_of(b".."), Some(NameError::DotDot));
    assert_eq!(name_error_of(b"/etc"), Some(NameError::Slash));
    assert_eq!(name_error_of(b"a/b"), Some(NameError::Slash));
    assert_eq!(name_error_of(b"..\\x"), Some(NameError::Backslash));
    assert_eq!(name_error_of(b"C:x"), Some(NameError::Absolute));
    assert_eq!(name_error_of(b"a\0b"), Some(NameError::Nul));
    assert_eq!(name_error_of(b"a\nb"), Some(NameError::Control(b'\n')));
    assert_eq!(name_error_of(b"a\x7f"), Some(NameError::Control(0x7f)));
    assert_eq!(name_error_of(b"\xff\xfe"), Some(NameError::NotUtf8));
    // Allowed: dots inside names, spaces, non-ASCII UTF-8, 255 bytes.
    assert_eq!(name_error_of(b"..."), None);
    assert_eq!(name_error_of(b".hidden"), None);
    assert_eq!(name_error_of("été 2026.tar".as_bytes()), None);
    assert_eq!(name_error_of(&[b'n'; 255]), None);
    // Over 255 bytes cannot be written with a u8 length; the checker still rejects it.
    assert_eq!(check_component(&[b'n'; 256]), Err(NameError::TooLong));
}

#[test]
fn rejects_unsafe_path_components() {
    for (bad, want) in [
        (&b".."[..], NameError::DotDot),
        (b"", NameError::Empty),
        (b"x/y", NameError::Slash),
        (b"\x01", NameError::Control(1)),
    ] {
        let mut r = Raw::dir();
        r.files[1].1[1] = bad.to_vec();
        assert_eq!(
            r.decode(),
            Err(StFileError::UnsafeName {
                site: NameSite::File {
                    file: 1,
                    component: 1
                },
                reason: want
            })
        );
    }
}

#[test]
fn rejects_bad_trackers() {
    let mut r = Raw::single();
    r.tracker_count = Some(33);
    r.trackers = vec![(1, b"a.b".to_vec(), 1); 33];
    assert_eq!(r.decode(), Err(StFileError::TooManyTrackers(33)));

    let mut r = Raw::single();
    r.trackers[0].0 = 2;
    assert_eq!(
        r.decode(),
        Err(StFileError::UnknownTransport {
            index: 1,
            transport: 2
        })
    );

    let mut r = Raw::single();
    r.trackers[0].2 = 0;
    assert_eq!(r.decode(), Err(StFileError::ZeroPort { index: 1 }));

    for (host, why) in [
        (&b""[..], HostError::Empty),
        (b"127.000.0.1", HostError::NumericName),
        (b"::0:1", HostError::NotCanonical),
        (b"[::1]", HostError::BadChar),
        (b"exa mple.org", HostError::BadChar),
        (b"-a.org", HostError::BadLabel),
        (b"a..org", HostError::BadLabel),
        (b"Example.org", HostError::NotCanonical),
        (b"1.2.3", HostError::NumericName),
        (b"\xff", HostError::BadChar),
        (&[b'a'; 254], HostError::TooLong),
    ] {
        let mut r = Raw::single();
        r.trackers[0].1 = host.to_vec();
        assert_eq!(
            r.decode(),
            Err(StFileError::BadHost {
                index: 1,
                reason: why
            }),
            "{:?}",
            String::from_utf8_lossy(host)
        );
    }
}

#[test]
fn encoder_refuses_what_the_decoder_rejects() {
    let mut f = single();
    f.info.name = "../x".into();
    assert!(matches!(f.encode(), Err(StFileError::UnsafeName { .. })));
    let mut f = single();
    f.info.hashes.pop();
    assert!(matches!(f.encode(), Err(StFileError::FragmentCount { .. })));
    let mut f = single();
    f.trackers[1].host = Host::Dns("UPPER.case".into());
    assert!(matches!(f.encode(), Err(StFileError::BadHost { .. })));
    let mut f = directory();
    f.info.files.as_mut().unwrap().reverse();
    assert!(matches!(f.encode(), Err(StFileError::UnsortedFiles { .. })));
}

#[test]
fn tracker_urls() {
    let ok = |s: &str| Tracker::parse_url(s).unwrap().to_string();
    assert_eq!(ok("udp://127.0.0.1:6969"), "udp://127.0.0.1:6969");
    assert_eq!(ok("udp://[::1]:6969/"), "udp://[::1]:6969");
    assert_eq!(ok("udp://[0:0::1]:1"), "udp://[::1]:1");
    assert_eq!(
        ok("udp://Tracker.Example.org:80"),
        "udp://tracker.example.org:80"
    );
    let err = |s: &str| Tracker::parse_url(s).unwrap_err();
    assert_eq!(err("http://a.org:80"), TrackerUrlError::Scheme);
    assert_eq!(err("udp://a.org"), TrackerUrlError::MissingPort);
    assert_eq!(err("udp://a.org:0"), TrackerUrlError::BadPort);
    assert_eq!(err("udp://a.org:65536"), TrackerUrlError::BadPort);
    assert_eq!(err("udp://a.org:+80"), TrackerUrlError::BadPort);
    assert_eq!(err("udp://a.org:80/announce"), TrackerUrlError::Path);
    assert_eq!(
        err("udp://::1:80"),
        TrackerUrlError::Host(HostError::BadChar)
    );
    assert_eq!(
        err("udp://a_b.org:80"),
        TrackerUrlError::Host(HostError::BadChar)
    );
    assert_eq!(
        err("udp://300.1.1.1:80"),
        TrackerUrlError::Host(HostError::NumericName)
    );
    assert_eq!(err("udp://:80"), TrackerUrlError::Host(HostError::Empty));
}

#[test]
fn file_map_spans() {
    let m = FileMap::new(&[5, 0, 6, 0]);
    assert_eq!(
        m.spans(0, 11),
        vec![
            Span {
                file: 0,
                offset: 0,
                len: 5
            },
            Span {
                file: 2,
                offset: 0,
                len: 6
            }
        ]
    );
    assert_eq!(
        m.spans(4, 2),
        vec![
            Span {
                file: 0,
                offset: 4,
                len: 1
            },
            Span {
                file: 2,
                offset: 0,
                len: 1
            }
        ]
    );
    assert_eq!(
        m.spans(7, 100),
        vec![Span {
            file: 2,
            offset: 2,
            len: 4
        }]
    );
    assert!(m.spans(11, 1).is_empty());
    let one = FileMap::new(&[20000]);
    assert_eq!(
        one.spans(16384, 16384),
        vec![Span {
            file: 0,
            offset: 16384,
            len: 3616
        }]
    );
}

#[test]
fn fragment_lengths() {
    let f = single();
    assert_eq!(f.info.fragment_len(0), 16384);
    assert_eq!(f.info.fragment_len(1), 3616);
    assert_eq!(f.info.fragment_len(2), 0);
}

fn component() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_ .é-]{1,20}".prop_filter("safe", |s| check_component(s.as_bytes()).is_ok())
}

fn host() -> impl Strategy<Value = Host> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| Host::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| Host::V6(Ipv6Addr::from(b))),
        "[a-z][a-z0-9]{0,10}(\\.[a-z][a-z0-9-]{0,8}[a-z0-9]){0,3}".prop_map(Host::Dns),
    ]
}

prop_compose! {
    fn st_file()(
        frag_shift in 14u32..=26,
        lengths in proptest::collection::vec(0u64..100_000, 1..6),
        paths in proptest::collection::btree_set(proptest::collection::vec(component(), 1..4), 1..6),
        directory in any::<bool>(),
        name in component(),
        trackers in proptest::collection::vec((host(), 1u16..), 0..4),
        seed in any::<u8>(),
    ) -> StFile {
        let fragment_length = 1u32 << frag_shift;
        let files = if directory {
            // Sorted, then drop entries that are prefixes of the next to avoid conflicts.
            let mut ps: Vec<Vec<String>> = paths.into_iter().collect();
            ps.sort_by(|a, b| cmp_paths(a, b));
            let mut kept: Vec<Vec<String>> = Vec::new();
            for p in ps {
                if let Some(last) = kept.last()
                    && p.len() > last.len()
                    && p[..last.len()] == last[..]
                {
                    continue;
                }
                kept.push(p);
            }
            let mut fs: Vec<FileEntry> = kept.into_iter().zip(lengths.iter().cycle())
                .map(|(path, &length)| FileEntry { path, length }).collect();
            if fs.iter().all(|f| f.length == 0) { fs[0].length = 1; }
            Some(fs)
        } else { None };
        let total_length = match &files {
            Some(fs) => fs.iter().map(|f| f.length).sum(),
            None => lengths[0].max(1),
        };
        let n = fragment_count(total_length, fragment_length) as usize;
        let hashes = (0..n).map(|i| [seed.wrapping_add(i as u8); 32]).collect();
        StFile {
            trackers: trackers.into_iter().map(|(host, port)| Tracker { host, port }).collect(),
            info: Info { name, total_length, fragment_length, files, hashes, private: seed % 2 == 1 },
        }
    }
}

proptest! {
    #[test]
    fn round_trip(f in st_file()) {
        let bytes = f.encode().unwrap();
        let back = StFile::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &f);
        prop_assert_eq!(back.encode().unwrap(), bytes);
    }

    #[test]
    fn decode_never_panics_and_reencodes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut input = MAGIC.to_vec();
        input.extend_from_slice(&bytes);
        if let Ok(f) = StFile::decode(&input) {
            prop_assert_eq!(f.encode().unwrap(), input);
        }
    }

    #[test]
    fn single_byte_corruption_never_panics(f in st_file(), at in any::<usize>(), x in 1u8..) {
        let mut bytes = f.encode().unwrap();
        let i = at % bytes.len();
        bytes[i] ^= x;
        if let Ok(g) = StFile::decode(&bytes) {
            prop_assert_eq!(g.encode().unwrap(), bytes);
        }
    }
}

/// The stored IPv6 text form (spec st-file.md §6.2): RFC 5952, dotted decimal for
/// IPv4-mapped addresses only.
#[test]
fn ipv6_hosts_must_be_in_the_one_canonical_form() {
    let ok = [
        "::",
        "::1",
        "2001:db8::7",
        "::ffff:192.0.2.1",
        "::c000:201",
        "64:ff9b::c000:201",
        "2001:db8:0:1:1:1:1:1",
        "2001:db8::1:0:0:1",
    ];
    for h in ok {
        assert_eq!(
            Host::from_stored(h).map(|x| x.stored()),
            Ok(h.to_owned()),
            "{h}"
        );
    }
    let bad = [
        "::ffff:c000:201",
        "::192.0.2.1",
        "64:ff9b::192.0.2.1",
        "2001:db8::1:1:1:1:1",
        "2001:db8:0:0:1::1",
        "2001:DB8::7",
        "2001:db8::07",
        "0:0:0:0:0:0:0:1",
    ];
    for h in bad {
        assert_eq!(Host::from_stored(h), Err(HostError::NotCanonical), "{h}");
    }
}
