//! KRPC messages of the mainline DHT (BEP 5, with BEP 32 `want`/`nodes6`, BEP 42 `ip` and
//! BEP 43 `ro`): typed parsing and encoding (normative text: `spec/dht.md` §5).
//!
//! Parsing goes through the bounded decoder of [`crate::bencode`] and then checks every field
//! it uses: lengths of ids, tokens and compact addresses, port ranges, types. Keys it does not
//! know are ignored (they were bounded by the decoder). Encoding writes canonical bencode
//! (keys in order), so `parse(encode(parse(x))) == parse(x)`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::bencode::{self, BencodeError, Value, put_bytes, put_int};

/// A node id or an info hash: 160 bits.
pub type Id = [u8; 20];

/// Longest transaction id accepted.
pub const MAX_TID: usize = 16;
/// Longest `v` (client version) accepted.
pub const MAX_VERSION: usize = 16;
/// Longest token accepted.
pub const MAX_TOKEN: usize = 64;
/// Most peers of a `values` list read (the rest are ignored).
pub const MAX_VALUES: usize = 200;
/// Length of a compact IPv4 node (id, address, port).
pub const NODE4_LEN: usize = 26;
/// Length of a compact IPv6 node.
pub const NODE6_LEN: usize = 38;

/// Error codes of KRPC error messages (BEP 5).
pub mod code {
    /// Generic error.
    pub const GENERIC: i64 = 201;
    /// Server error.
    pub const SERVER: i64 = 202;
    /// Protocol error: a malformed packet, an invalid argument or a bad token.
    pub const PROTOCOL: i64 = 203;
    /// Method unknown.
    pub const METHOD_UNKNOWN: i64 = 204;
}

/// One KRPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// Transaction id, echoed in the reply (1 ..= [`MAX_TID`] bytes).
    pub tid: &'a [u8],
    /// The sender's client version (`v`), if given.
    pub version: Option<&'a [u8]>,
    /// BEP 42: in a reply, the address the replier saw the query come from.
    pub ip: Option<SocketAddr>,
    /// BEP 43: the sender is read-only (answers no queries; not to be put in routing tables).
    pub read_only: bool,
    /// What it is.
    pub body: Body<'a>,
}

/// The three kinds of KRPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<'a> {
    /// A query (`y` = `q`).
    Query {
        /// The querier's node id.
        id: Id,
        /// Which families of nodes it wants (BEP 32).
        want: Want,
        /// The method and its arguments.
        query: Query<'a>,
    },
    /// A reply (`y` = `r`).
    Reply(Reply<'a>),
    /// An error (`y` = `e`).
    Error {
        /// The code (see [`code`]).
        code: i64,
        /// Its text.
        message: &'a [u8],
    },
}

/// BEP 32 `want`: families of nodes asked for. Neither set: not given (the family of the
/// query's own address is meant).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Want {
    /// `n4`: IPv4 nodes.
    pub v4: bool,
    /// `n6`: IPv6 nodes.
    pub v6: bool,
}

/// A query method with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query<'a> {
    /// `ping`.
    Ping,
    /// `find_node`.
    FindNode {
        /// The id looked for.
        target: Id,
    },
    /// `get_peers`.
    GetPeers {
        /// The key.
        info_hash: Id,
    },
    /// `announce_peer`.
    AnnouncePeer {
        /// The key.
        info_hash: Id,
        /// The port peers reach the announcer on (ignored with `implied_port`).
        port: u16,
        /// Use the query's source port instead of `port`.
        implied_port: bool,
        /// The token a `get_peers` reply gave.
        token: &'a [u8],
    },
    /// A method we do not implement (answered with [`code::METHOD_UNKNOWN`]).
    Unknown {
        /// Its name.
        method: &'a [u8],
    },
}

/// A reply's fields (which are present depends on the query it answers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply<'a> {
    /// The replier's node id.
    pub id: Id,
    /// Compact IPv4 nodes ([`NODE4_LEN`] bytes each; see [`nodes4`]).
    pub nodes: &'a [u8],
    /// Compact IPv6 nodes ([`NODE6_LEN`] bytes each; see [`nodes6`]).
    pub nodes6: &'a [u8],
    /// Peers of the key (`get_peers`), at most [`MAX_VALUES`].
    pub values: Vec<SocketAddr>,
    /// A token for `announce_peer` (`get_peers`).
    pub token: Option<&'a [u8]>,
}

/// Why a datagram is not a KRPC message we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KrpcError {
    /// Not bencode we accept.
    #[error("bencode: {0}")]
    Bencode(#[from] BencodeError),
    /// A field is missing, of the wrong type or length.
    #[error("bad or missing field {0}")]
    Field(&'static str),
}

fn field<'a, 'v>(d: &'v Value<'a>, key: &'static str) -> Result<&'v Value<'a>, KrpcError> {
    d.get(key.as_bytes()).ok_or(KrpcError::Field(key))
}

fn bytes<'a>(d: &Value<'a>, key: &'static str) -> Result<&'a [u8], KrpcError> {
    field(d, key)?.as_bytes().ok_or(KrpcError::Field(key))
}

fn id(d: &Value<'_>, key: &'static str) -> Result<Id, KrpcError> {
    bytes(d, key)?.try_into().map_err(|_| KrpcError::Field(key))
}

/// Reads a compact address: 6 bytes (IPv4 and port) or 18 (IPv6 and port).
pub fn parse_addr(b: &[u8]) -> Option<SocketAddr> {
    match b.len() {
        6 => {
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([b[4], b[5]]),
            ))
        }
        18 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[..16]);
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(o)),
                u16::from_be_bytes([b[16], b[17]]),
            ))
        }
        _ => None,
    }
}

/// Appends the compact form of `a` (6 or 18 bytes).
pub fn put_addr(out: &mut Vec<u8>, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

/// Appends a compact node (26 bytes for IPv4, 38 for IPv6).
pub fn put_node(out: &mut Vec<u8>, id: &Id, a: SocketAddr) {
    out.extend_from_slice(id);
    put_addr(out, a);
}

/// The nodes of a compact IPv4 list (a trailing partial entry is ignored).
pub fn nodes4(b: &[u8]) -> impl Iterator<Item = (Id, SocketAddr)> + '_ {
    b.chunks_exact(NODE4_LEN).filter_map(|c| {
        let id: Id = c[..20].try_into().ok()?;
        Some((id, parse_addr(&c[20..])?))
    })
}

/// The nodes of a compact IPv6 list (a trailing partial entry is ignored).
pub fn nodes6(b: &[u8]) -> impl Iterator<Item = (Id, SocketAddr)> + '_ {
    b.chunks_exact(NODE6_LEN).filter_map(|c| {
        let id: Id = c[..20].try_into().ok()?;
        Some((id, parse_addr(&c[20..])?))
    })
}

/// BEP 42: whether node id `id` is one the owner of `ip` may use (the first 21 bits follow
/// from a CRC32-C of the masked address and the id's last byte). Addresses of local networks
/// (private, loopback, link-local, unique-local) are exempt: any id is valid for them.
pub fn bep42_valid(id: &Id, ip: IpAddr) -> bool {
    let r = id[19] & 7;
    let crc = match ip {
        IpAddr::V4(v4) => {
            if v4.is_private() || v4.is_loopback() || v4.is_link_local() {
                return true;
            }
            let x = (u32::from(v4) & 0x030f_3fff) | (u32::from(r) << 29);
            crc32c::crc32c(&x.to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            if v6.is_loopback() || (o[0] & 0xfe) == 0xfc || (o[0] == 0xfe && (o[1] & 0xc0) == 0x80)
            {
                return true;
            }
            let hi = u64::from_be_bytes(o[..8].try_into().unwrap_or([0; 8]));
            let x = (hi & 0x0103_070f_1f3f_7fff) | (u64::from(r) << 61);
            crc32c::crc32c(&x.to_be_bytes())
        }
    };
    id[0] == (crc >> 24) as u8
        && id[1] == (crc >> 16) as u8
        && (id[2] & 0xf8) == ((crc >> 8) as u8 & 0xf8)
}

/// Parses one datagram.
pub fn parse(data: &[u8]) -> Result<Message<'_>, KrpcError> {
    let v = bencode::decode(data)?;
    if !matches!(v, Value::Dict(_)) {
        return Err(KrpcError::Field("top level"));
    }
    let tid = bytes(&v, "t")?;
    if tid.is_empty() || tid.len() > MAX_TID {
        return Err(KrpcError::Field("t"));
    }
    let version = match v.get(b"v") {
        None => None,
        Some(x) => Some(
            x.as_bytes()
                .filter(|b| b.len() <= MAX_VERSION)
                .ok_or(KrpcError::Field("v"))?,
        ),
    };
    let ip = match v.get(b"ip") {
        None => None,
        Some(x) => Some(
            x.as_bytes()
                .and_then(parse_addr)
                .ok_or(KrpcError::Field("ip"))?,
        ),
    };
    let read_only = match v.get(b"ro").map(Value::as_int) {
        None => false,
        Some(Some(0)) => false,
        Some(Some(1)) => true,
        Some(_) => return Err(KrpcError::Field("ro")),
    };
    let body = match bytes(&v, "y")? {
        b"q" => parse_query(&v)?,
        b"r" => Body::Reply(parse_reply(field(&v, "r")?)?),
        b"e" => {
            let e = field(&v, "e")?.as_list().ok_or(KrpcError::Field("e"))?;
            match e {
                [Value::Int(code), Value::Bytes(message)] => Body::Error {
                    code: *code,
                    message,
                },
                _ => return Err(KrpcError::Field("e")),
            }
        }
        _ => return Err(KrpcError::Field("y")),
    };
    Ok(Message {
        tid,
        version,
        ip,
        read_only,
        body,
    })
}

fn parse_query<'a>(v: &Value<'a>) -> Result<Body<'a>, KrpcError> {
    let method = bytes(v, "q")?;
    let a = field(v, "a")?;
    let querier = id(a, "id")?;
    let mut want = Want::default();
    if let Some(w) = a.get(b"want") {
        for x in w.as_list().ok_or(KrpcError::Field("want"))? {
            match x.as_bytes() {
                Some(b"n4") => want.v4 = true,
                Some(b"n6") => want.v6 = true,
                Some(_) => {}
                None => return Err(KrpcError::Field("want")),
            }
        }
    }
    let query = match method {
        b"ping" => Query::Ping,
        b"find_node" => Query::FindNode {
            target: id(a, "target")?,
        },
        b"get_peers" => Query::GetPeers {
            info_hash: id(a, "info_hash")?,
        },
        b"announce_peer" => {
            let implied_port = match a.get(b"implied_port").map(Value::as_int) {
                None | Some(Some(0)) => false,
                Some(Some(1)) => true,
                Some(_) => return Err(KrpcError::Field("implied_port")),
            };
            // The port may be absent when implied (some clients send only implied_port).
            let port = match a.get(b"port") {
                None if implied_port => 0,
                None => return Err(KrpcError::Field("port")),
                Some(p) => p
                    .as_int()
                    .and_then(|p| u16::try_from(p).ok())
                    .ok_or(KrpcError::Field("port"))?,
            };
            let token = bytes(a, "token")?;
            if token.len() > MAX_TOKEN {
                return Err(KrpcError::Field("token"));
            }
            Query::AnnouncePeer {
                info_hash: id(a, "info_hash")?,
                port,
                implied_port,
                token,
            }
        }
        m => Query::Unknown { method: m },
    };
    Ok(Body::Query {
        id: querier,
        want,
        query,
    })
}

fn parse_reply<'a>(r: &Value<'a>) -> Result<Reply<'a>, KrpcError> {
    let mut reply = Reply {
        id: id(r, "id")?,
        ..Reply::default()
    };
    if let Some(n) = r.get(b"nodes") {
        reply.nodes = n
            .as_bytes()
            .filter(|b| b.len() % NODE4_LEN == 0)
            .ok_or(KrpcError::Field("nodes"))?;
    }
    if let Some(n) = r.get(b"nodes6") {
        reply.nodes6 = n
            .as_bytes()
            .filter(|b| b.len() % NODE6_LEN == 0)
            .ok_or(KrpcError::Field("nodes6"))?;
    }
    if let Some(vals) = r.get(b"values") {
        let l = vals.as_list().ok_or(KrpcError::Field("values"))?;
        for x in l.iter().take(MAX_VALUES) {
            let a = x
                .as_bytes()
                .and_then(parse_addr)
                .ok_or(KrpcError::Field("values"))?;
            reply.values.push(a);
        }
    }
    if let Some(t) = r.get(b"token") {
        reply.token = Some(
            t.as_bytes()
                .filter(|b| b.len() <= MAX_TOKEN)
                .ok_or(KrpcError::Field("token"))?,
        );
    }
    Ok(reply)
}

impl Message<'_> {
    /// Appends the message's canonical encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(b'd');
        // Keys in byte order: a, e, ip, q, r, ro, t, v, y.
        if let Body::Query { id, want, query } = &self.body {
            put_bytes(out, b"a");
            encode_args(out, id, *want, query);
        }
        if let Body::Error { code, message } = &self.body {
            put_bytes(out, b"e");
            out.push(b'l');
            put_int(out, *code);
            put_bytes(out, message);
            out.push(b'e');
        }
        if let Some(ip) = self.ip {
            put_bytes(out, b"ip");
            let mut a = Vec::with_capacity(18);
            put_addr(&mut a, ip);
            put_bytes(out, &a);
        }
        if let Body::Query { query, .. } = &self.body {
            put_bytes(out, b"q");
            put_bytes(out, query.method());
        }
        if let Body::Reply(r) = &self.body {
            put_bytes(out, b"r");
            encode_reply(out, r);
        }
        if self.read_only {
            put_bytes(out, b"ro");
            put_int(out, 1);
        }
        put_bytes(out, b"t");
        put_bytes(out, self.tid);
        if let Some(v) = self.version {
            put_bytes(out, b"v");
            put_bytes(out, v);
        }
        put_bytes(out, b"y");
        put_bytes(
            out,
            match self.body {
                Body::Query { .. } => b"q",
                Body::Reply(_) => b"r",
                Body::Error { .. } => b"e",
            },
        );
        out.push(b'e');
    }
}

impl Query<'_> {
    /// The method name.
    pub fn method(&self) -> &[u8] {
        match self {
            Query::Ping => b"ping",
            Query::FindNode { .. } => b"find_node",
            Query::GetPeers { .. } => b"get_peers",
            Query::AnnouncePeer { .. } => b"announce_peer",
            Query::Unknown { method } => method,
        }
    }
}

fn encode_args(out: &mut Vec<u8>, id: &Id, want: Want, q: &Query<'_>) {
    out.push(b'd');
    // Keys in byte order: id, implied_port, info_hash, port, target, token, want.
    put_bytes(out, b"id");
    put_bytes(out, id);
    match q {
        Query::Ping | Query::Unknown { .. } => {}
        Query::FindNode { target } => {
            put_bytes(out, b"target");
            put_bytes(out, target);
        }
        Query::GetPeers { info_hash } => {
            put_bytes(out, b"info_hash");
            put_bytes(out, info_hash);
        }
        Query::AnnouncePeer {
            info_hash,
            port,
            implied_port,
            token,
        } => {
            if *implied_port {
                put_bytes(out, b"implied_port");
                put_int(out, 1);
            }
            put_bytes(out, b"info_hash");
            put_bytes(out, info_hash);
            put_bytes(out, b"port");
            put_int(out, i64::from(*port));
            put_bytes(out, b"token");
            put_bytes(out, token);
        }
    }
    if want.v4 || want.v6 {
        put_bytes(out, b"want");
        out.push(b'l');
        if want.v4 {
            put_bytes(out, b"n4");
        }
        if want.v6 {
            put_bytes(out, b"n6");
        }
        out.push(b'e');
    }
    out.push(b'e');
}

fn encode_reply(out: &mut Vec<u8>, r: &Reply<'_>) {
    out.push(b'd');
    // Keys in byte order: id, nodes, nodes6, token, values.
    put_bytes(out, b"id");
    put_bytes(out, &r.id);
    if !r.nodes.is_empty() {
        put_bytes(out, b"nodes");
        put_bytes(out, r.nodes);
    }
    if !r.nodes6.is_empty() {
        put_bytes(out, b"nodes6");
        put_bytes(out, r.nodes6);
    }
    if let Some(t) = r.token {
        put_bytes(out, b"token");
        put_bytes(out, t);
    }
    if !r.values.is_empty() {
        put_bytes(out, b"values");
        out.push(b'l');
        let mut a = Vec::with_capacity(18);
        for v in &r.values {
            a.clear();
            put_addr(&mut a, *v);
            put_bytes(out, &a);
        }
        out.push(b'e');
    }
    out.push(b'e');
}

/// Longest DHT state file read.
pub const MAX_STATE_LEN: usize = 16 * 1024;
/// Most nodes of each family a state file holds.
pub const MAX_STATE_NODES: usize = 200;

/// What a DHT node keeps across restarts (`spec/dht.md` §15): its id and good nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The node id.
    pub id: Id,
    /// Nodes of either family.
    pub nodes: Vec<(Id, SocketAddr)>,
}

impl State {
    /// The file's bytes: a bencoded dictionary `{id, nodes, nodes6}` (at most
    /// [`MAX_STATE_NODES`] of each family are written).
    pub fn encode(&self) -> Vec<u8> {
        let (mut n4, mut n6) = (Vec::new(), Vec::new());
        for (id, a) in &self.nodes {
            let (buf, max) = if a.is_ipv4() {
                (&mut n4, NODE4_LEN)
            } else {
                (&mut n6, NODE6_LEN)
            };
            if buf.len() < MAX_STATE_NODES * max {
                put_node(buf, id, *a);
            }
        }
        let mut out = Vec::with_capacity(64 + n4.len() + n6.len());
        out.push(b'd');
        put_bytes(&mut out, b"id");
        put_bytes(&mut out, &self.id);
        put_bytes(&mut out, b"nodes");
        put_bytes(&mut out, &n4);
        put_bytes(&mut out, b"nodes6");
        put_bytes(&mut out, &n6);
        out.push(b'e');
        out
    }

    /// Reads a state file.
    pub fn decode(data: &[u8]) -> Result<State, KrpcError> {
        let v = bencode::decode_limited(data, MAX_STATE_LEN)?;
        let id = id(&v, "id")?;
        let mut nodes = Vec::new();
        if let Some(n) = v.get(b"nodes") {
            let b = n
                .as_bytes()
                .filter(|b| b.len() % NODE4_LEN == 0)
                .ok_or(KrpcError::Field("nodes"))?;
            nodes.extend(nodes4(b).take(MAX_STATE_NODES));
        }
        if let Some(n) = v.get(b"nodes6") {
            let b = n
                .as_bytes()
                .filter(|b| b.len() % NODE6_LEN == 0)
                .ok_or(KrpcError::Field("nodes6"))?;
            nodes.extend(nodes6(b).take(MAX_STATE_NODES));
        }
        Ok(State { id, nodes })
    }
}

/// The fuzz invariant of the `krpc` target: bencode round-trips byte for byte, and a message
/// that parses re-encodes to one that parses to the same message. `Ok(true)` when the input
/// is a KRPC message.
pub fn fuzz_check(data: &[u8]) -> Result<bool, String> {
    bencode::fuzz_check(data)?;
    let Ok(m) = parse(data) else {
        return Ok(false);
    };
    let mut out = Vec::new();
    m.encode(&mut out);
    match parse(&out) {
        Ok(again) if again == m => {}
        Ok(again) => return Err(format!("round trip changed {m:?} into {again:?}")),
        Err(e) => return Err(format!("re-encoded {m:?} does not parse: {e}")),
    }
    for (_, a) in nodes4(m_nodes(&m).0).chain(nodes6(m_nodes(&m).1)) {
        let mut b = Vec::new();
        put_addr(&mut b, a);
        if parse_addr(&b) != Some(a) {
            return Err(format!("compact address {a} does not round-trip"));
        }
    }
    Ok(true)
}

fn m_nodes<'a>(m: &Message<'a>) -> (&'a [u8], &'a [u8]) {
    match &m.body {
        Body::Reply(r) => (r.nodes, r.nodes6),
        _ => (&[], &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(m: &Message<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        m.encode(&mut out);
        assert_eq!(parse(&out).as_ref(), Ok(m));
        assert_eq!(fuzz_check(&out), Ok(true));
        out
    }

    #[test]
    fn bep5_examples_parse_and_re_encode_identically() {
        // The examples of BEP 5 (with 20-byte ids).
        let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
        let m = parse(ping).unwrap();
        assert_eq!(m.tid, b"aa");
        assert_eq!(
            m.body,
            Body::Query {
                id: *b"abcdefghij0123456789",
                want: Want::default(),
                query: Query::Ping
            }
        );
        assert_eq!(round(&m), ping);
        let ann = b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe";
        let m = parse(ann).unwrap();
        assert!(matches!(
            m.body,
            Body::Query {
                query: Query::AnnouncePeer {
                    port: 6881,
                    implied_port: true,
                    token: b"aoeusnth",
                    ..
                },
                ..
            }
        ));
        assert_eq!(round(&m), ann);
        let err = b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee";
        let m = parse(err).unwrap();
        assert_eq!(
            m.body,
            Body::Error {
                code: 201,
                message: b"A Generic Error Ocurred"
            }
        );
        assert_eq!(round(&m), err);
    }

    #[test]
    fn replies_carry_nodes_values_token_ip_and_read_only() {
        let mut nodes = Vec::new();
        put_node(&mut nodes, &[7; 20], "10.1.2.3:6881".parse().unwrap());
        let mut n6 = Vec::new();
        put_node(&mut n6, &[8; 20], "[fd00::1]:6882".parse().unwrap());
        let m = Message {
            tid: b"\x01\x02",
            version: Some(b"ST\x00\x01"),
            ip: Some("10.9.9.9:4000".parse().unwrap()),
            read_only: true,
            body: Body::Reply(Reply {
                id: [1; 20],
                nodes: &nodes,
                nodes6: &n6,
                values: vec![
                    "10.0.0.1:1".parse().unwrap(),
                    "[fd00::2]:65535".parse().unwrap(),
                ],
                token: Some(b"tok"),
            }),
        };
        round(&m);
        let n: Vec<_> = nodes4(&nodes).chain(nodes6(&n6)).collect();
        assert_eq!(n[0], ([7; 20], "10.1.2.3:6881".parse().unwrap()));
        assert_eq!(n[1], ([8; 20], "[fd00::1]:6882".parse().unwrap()));
        let q = Message {
            tid: b"x",
            version: None,
            ip: None,
            read_only: false,
            body: Body::Query {
                id: [2; 20],
                want: Want { v4: true, v6: true },
                query: Query::FindNode { target: [3; 20] },
            },
        };
        round(&q);
    }

    #[test]
    fn the_state_file_round_trips_and_bad_ones_are_refused() {
        let s = State {
            id: [5; 20],
            nodes: vec![
                ([1; 20], "10.0.0.1:6881".parse().unwrap()),
                ([2; 20], "[fd00::1]:6881".parse().unwrap()),
            ],
        };
        assert_eq!(State::decode(&s.encode()), Ok(s));
        assert!(State::decode(b"d2:id3:abce").is_err());
        assert!(State::decode(b"garbage").is_err());
        assert!(State::decode(&vec![b'x'; MAX_STATE_LEN + 1]).is_err());
    }

    #[test]
    fn bep42_test_vectors() {
        // The examples of BEP 42: IP, rand (id[19]), and the id prefix.
        for (ip, r, prefix) in [
            ("124.31.75.21", 1u8, [0x5f, 0xbf, 0xbf]),
            ("21.75.31.124", 86, [0x5a, 0x3c, 0xe9]),
            ("65.23.51.170", 22, [0xa5, 0xd4, 0x32]),
            ("84.124.73.14", 65, [0x1b, 0x03, 0x21]),
            ("43.213.53.83", 90, [0xe5, 0x6f, 0x6c]),
        ] {
            let mut id = [0u8; 20];
            id[..3].copy_from_slice(&prefix);
            id[19] = r;
            let ip: IpAddr = ip.parse().unwrap();
            assert!(bep42_valid(&id, ip), "{ip}");
            id[0] ^= 1;
            assert!(!bep42_valid(&id, ip), "{ip}");
        }
        assert!(bep42_valid(&[0; 20], "10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn bad_fields_are_refused() {
        for (s, f) in [
            (&b"d1:t0:1:y1:qe"[..], "t"),
            (b"d1:t2:aa1:y1:xe", "y"),
            (b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe", "id"),
            (
                b"d1:rd2:id20:abcdefghij01234567895:nodes3:abce1:t2:aa1:y1:re",
                "nodes",
            ),
            (
                b"d1:rd2:id20:abcdefghij01234567896:valuesl3:abcee1:t2:aa1:y1:re",
                "values",
            ),
            (b"d1:eli201ee1:t2:aa1:y1:ee", "e"),
            (
                b"d1:rd2:id20:abcdefghij0123456789e2:roi2e1:t2:aa1:y1:re",
                "ro",
            ),
        ] {
            assert_eq!(
                parse(s),
                Err(KrpcError::Field(f)),
                "{}",
                String::from_utf8_lossy(s)
            );
        }
        // An unknown method still parses (and is answered with 204).
        let m = parse(b"d1:ad2:id20:abcdefghij0123456789e1:q3:get1:t2:aa1:y1:qe").unwrap();
        assert!(matches!(
            m.body,
            Body::Query {
                query: Query::Unknown { method: b"get" },
                ..
            }
        ));
    }
}
