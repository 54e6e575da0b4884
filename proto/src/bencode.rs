//! Bencode (BEP 3), strict and bounded: the encoding of the mainline DHT's KRPC messages
//! (normative text: `spec/dht.md` §4).
//!
//! The decoder is total and bounded before it allocates: an input longer than [`MAX_INPUT`]
//! is refused unread, nesting deeper than [`MAX_DEPTH`] and more than [`MAX_ITEMS`] values are
//! refused as they are met (each list or dictionary entry is counted before it is stored), so
//! one message never holds more than [`MAX_ITEMS`] values. It accepts only the canonical form:
//! integers without leading zeros or `-0`, string lengths without leading zeros, dictionary
//! keys strictly increasing, nothing after the top-level value. Hence `encode(decode(x)) == x`
//! for every `x` it accepts. Strings borrow from the input.

/// Longest input the decoder reads (a DHT datagram).
pub const MAX_INPUT: usize = 2048;
/// Deepest nesting of lists and dictionaries (the top level is depth 1).
pub const MAX_DEPTH: usize = 8;
/// Most values (integers, strings, lists, dictionaries) in one input.
pub const MAX_ITEMS: usize = 512;

/// A decoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    /// An integer.
    Int(i64),
    /// A byte string.
    Bytes(&'a [u8]),
    /// A list.
    List(Vec<Value<'a>>),
    /// A dictionary, keys strictly increasing.
    Dict(Vec<(&'a [u8], Value<'a>)>),
}

/// Why an input is not accepted. Offsets are into the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BencodeError {
    /// The input is longer than allowed ([`MAX_INPUT`] for a datagram).
    #[error("input of {0} bytes is too long")]
    TooLong(usize),
    /// Lists and dictionaries nest deeper than [`MAX_DEPTH`].
    #[error("nesting deeper than {MAX_DEPTH} at offset {0}")]
    TooDeep(usize),
    /// More than [`MAX_ITEMS`] values.
    #[error("more than {MAX_ITEMS} values at offset {0}")]
    TooManyItems(usize),
    /// The input ends inside a value.
    #[error("truncated at offset {0}")]
    Truncated(usize),
    /// A byte that starts no value, or a dictionary key that is not a string.
    #[error("unexpected byte 0x{1:02x} at offset {0}")]
    Unexpected(usize, u8),
    /// An integer that is empty, not canonical or out of range.
    #[error("bad integer at offset {0}")]
    BadInteger(usize),
    /// A string length that is not canonical or runs past the input.
    #[error("bad string length at offset {0}")]
    BadLength(usize),
    /// A dictionary key not greater than the one before it.
    #[error("dictionary key out of order at offset {0}")]
    UnsortedKey(usize),
    /// Bytes after the top-level value.
    #[error("trailing bytes at offset {0}")]
    Trailing(usize),
}

impl<'a> Value<'a> {
    /// The value under `key`, if this is a dictionary holding it.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        match self {
            Value::Dict(d) => d
                .binary_search_by(|(k, _)| (*k).cmp(key))
                .ok()
                .map(|i| &d[i].1),
            _ => None,
        }
    }

    /// The bytes, if this is a string.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The items, if this is a list.
    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// Appends the canonical encoding of this value to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => put_int(out, *i),
            Value::Bytes(b) => put_bytes(out, b),
            Value::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode(out);
                }
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    put_bytes(out, k);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }
}

/// Appends the encoding of integer `i`.
pub fn put_int(out: &mut Vec<u8>, i: i64) {
    out.push(b'i');
    out.extend_from_slice(i.to_string().as_bytes());
    out.push(b'e');
}

/// Appends the encoding of byte string `b`.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

/// Decodes one value that spans all of `input` (at most [`MAX_INPUT`] bytes).
pub fn decode(input: &[u8]) -> Result<Value<'_>, BencodeError> {
    decode_limited(input, MAX_INPUT)
}

/// [`decode`] with another input bound (a state file); the depth and item bounds stay.
pub fn decode_limited(input: &[u8], max_input: usize) -> Result<Value<'_>, BencodeError> {
    if input.len() > max_input {
        return Err(BencodeError::TooLong(input.len()));
    }
    let mut p = Parser {
        buf: input,
        pos: 0,
        items: 0,
    };
    let v = p.value(1)?;
    if p.pos != input.len() {
        return Err(BencodeError::Trailing(p.pos));
    }
    Ok(v)
}

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    items: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Result<u8, BencodeError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(BencodeError::Truncated(self.pos))
    }

    fn count(&mut self) -> Result<(), BencodeError> {
        self.items += 1;
        if self.items > MAX_ITEMS {
            return Err(BencodeError::TooManyItems(self.pos));
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, BencodeError> {
        self.count()?;
        match self.peek()? {
            b'i' => self.int().map(Value::Int),
            b'0'..=b'9' => self.bytes().map(Value::Bytes),
            b'l' | b'd' if depth >= MAX_DEPTH => Err(BencodeError::TooDeep(self.pos)),
            b'l' => {
                self.pos += 1;
                let mut l = Vec::new();
                while self.peek()? != b'e' {
                    l.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(l))
            }
            b'd' => {
                self.pos += 1;
                let mut d: Vec<(&'a [u8], Value<'a>)> = Vec::new();
                while self.peek()? != b'e' {
                    let at = self.pos;
                    let c = self.peek()?;
                    if !c.is_ascii_digit() {
                        return Err(BencodeError::Unexpected(at, c));
                    }
                    let k = self.bytes()?;
                    if d.last().is_some_and(|(last, _)| *last >= k) {
                        return Err(BencodeError::UnsortedKey(at));
                    }
                    let v = self.value(depth + 1)?;
                    d.push((k, v));
                }
                self.pos += 1;
                Ok(Value::Dict(d))
            }
            c => Err(BencodeError::Unexpected(self.pos, c)),
        }
    }

    /// `i<canonical decimal>e`.
    fn int(&mut self) -> Result<i64, BencodeError> {
        let start = self.pos;
        self.pos += 1;
        let rest = &self.buf[self.pos..];
        let Some(end) = rest.iter().position(|&c| c == b'e') else {
            return Err(BencodeError::Truncated(self.buf.len()));
        };
        let text = &rest[..end];
        let digits = text.strip_prefix(b"-").unwrap_or(text);
        let canonical = !digits.is_empty()
            && digits.len() <= 19
            && digits.iter().all(u8::is_ascii_digit)
            && (digits == b"0" || digits[0] != b'0')
            && !(text[0] == b'-' && digits == b"0");
        if !canonical {
            return Err(BencodeError::BadInteger(start));
        }
        let v = std::str::from_utf8(text)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or(BencodeError::BadInteger(start))?;
        self.pos += end + 1;
        Ok(v)
    }

    /// `<canonical length>:<bytes>`.
    fn bytes(&mut self) -> Result<&'a [u8], BencodeError> {
        let start = self.pos;
        let rest = &self.buf[self.pos..];
        let Some(colon) = rest.iter().position(|&c| c == b':') else {
            return Err(BencodeError::Truncated(self.buf.len()));
        };
        let digits = &rest[..colon];
        if digits.is_empty()
            || digits.len() > 4
            || !digits.iter().all(u8::is_ascii_digit)
            || (digits.len() > 1 && digits[0] == b'0')
        {
            return Err(BencodeError::BadLength(start));
        }
        let len = digits
            .iter()
            .fold(0usize, |a, &d| a * 10 + usize::from(d - b'0'));
        let from = self.pos + colon + 1;
        let Some(b) = self.buf.get(from..from + len) else {
            return Err(BencodeError::BadLength(start));
        };
        self.pos = from + len;
        Ok(b)
    }
}

/// The fuzz invariant: whatever decodes re-encodes to the same bytes. `Ok(true)` when the
/// input decoded.
pub fn fuzz_check(data: &[u8]) -> Result<bool, String> {
    let Ok(v) = decode(data) else {
        return Ok(false);
    };
    let mut out = Vec::new();
    v.encode(&mut out);
    if out != data {
        return Err(format!(
            "re-encoding differs: {:?} vs {:?}",
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(&out)
        ));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_values_decode_and_re_encode_byte_for_byte() {
        for s in [
            &b"i0e"[..],
            b"i-42e",
            b"i9223372036854775807e",
            b"i-9223372036854775808e",
            b"0:",
            b"4:spam",
            b"le",
            b"de",
            b"l4:spami42ee",
            b"d3:bar4:spam3:fooi42ee",
            b"d1:ad1:bld1:ci1eeeee",
        ] {
            assert_eq!(fuzz_check(s), Ok(true), "{}", String::from_utf8_lossy(s));
        }
        let v = decode(b"d3:bar4:spam3:fooi42ee").unwrap();
        assert_eq!(v.get(b"foo").and_then(Value::as_int), Some(42));
        assert_eq!(v.get(b"bar").and_then(Value::as_bytes), Some(&b"spam"[..]));
        assert_eq!(v.get(b"baz"), None);
    }

    #[test]
    fn non_canonical_and_malformed_inputs_are_refused_with_their_offset() {
        use BencodeError::*;
        let cases: &[(&[u8], BencodeError)] = &[
            (b"", Truncated(0)),
            (b"i01e", BadInteger(0)),
            (b"i-0e", BadInteger(0)),
            (b"ie", BadInteger(0)),
            (b"i-e", BadInteger(0)),
            (b"i1", Truncated(2)),
            (b"i9223372036854775808e", BadInteger(0)),
            (b"i12345678901234567890e", BadInteger(0)),
            (b"01:a", BadLength(0)),
            (b"5:abc", BadLength(0)),
            (b"3", Truncated(1)),
            (b"l", Truncated(1)),
            (b"d3:fooi1e3:bari2ee", UnsortedKey(9)),
            (b"d3:fooi1e3:fooi2ee", UnsortedKey(9)),
            (b"di1ei2ee", Unexpected(1, b'i')),
            (b"i1ei2e", Trailing(3)),
            (b"x", Unexpected(0, b'x')),
        ];
        for (s, e) in cases {
            assert_eq!(decode(s), Err(*e), "{}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn bounds_are_enforced_before_allocation() {
        let deep = [b"l".repeat(MAX_DEPTH), b"e".repeat(MAX_DEPTH)].concat();
        assert!(matches!(decode(&deep), Err(BencodeError::TooDeep(_))));
        let ok = [b"l".repeat(MAX_DEPTH - 1), b"e".repeat(MAX_DEPTH - 1)].concat();
        assert!(decode(&ok).is_ok());
        let many = [&b"l"[..], &b"i0e".repeat(MAX_ITEMS), b"e"].concat();
        assert!(matches!(decode(&many), Err(BencodeError::TooManyItems(_))));
        let fits = [&b"l"[..], &b"i0e".repeat(MAX_ITEMS - 1), b"e"].concat();
        assert!(decode(&fits).is_ok());
        let long = vec![b'0'; MAX_INPUT + 1];
        assert_eq!(decode(&long), Err(BencodeError::TooLong(MAX_INPUT + 1)));
        // A string length past the input is refused without reading (or allocating) it.
        assert_eq!(decode(b"9999:x"), Err(BencodeError::BadLength(0)));
    }

    proptest::proptest! {
        #[test]
        fn any_input_is_total_and_round_trips(data in proptest::collection::vec(
            proptest::sample::select(b"dlie0123456789:-xa".to_vec()), 0..64)) {
            proptest::prop_assert!(fuzz_check(&data).is_ok());
        }
    }
}
