//! UDP sockets for the reactor: creation with socket2 (large buffers, read back; dual-stack
//! IPv6), and batched receive and send with `recvmmsg`/`sendmmsg`.
//!
//! Only reactor code calls into this module: it is where the project touches sockets. The
//! batches own their buffers, allocated once, so a busy loop allocates nothing per datagram.

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use log::{debug, warn};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Socket buffer size asked for on both directions (the kernel caps it at `rmem_max`).
pub const SOCKET_BUFFER: usize = 8 << 20;

/// Opens a non-blocking UDP socket bound to `addr`. An unspecified IPv6 address (`[::]`)
/// serves IPv4 too (IPv4-mapped), unless the system forbids dual stack. The buffer sizes the
/// kernel granted are logged, since a small `net.core.rmem_max` silently costs throughput.
pub fn bind_udp(addr: SocketAddr) -> io::Result<mio::net::UdpSocket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual stack where possible; ignore failure (the socket then serves IPv6 only).
        let _ = socket.set_only_v6(false);
    }
    for (what, result) in [
        ("receive", socket.set_recv_buffer_size(SOCKET_BUFFER)),
        ("send", socket.set_send_buffer_size(SOCKET_BUFFER)),
    ] {
        if let Err(e) = result {
            warn!("cannot set the UDP {what} buffer to {SOCKET_BUFFER} bytes: {e}");
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    debug!(
        "udp socket {}: receive buffer {} bytes, send buffer {} bytes",
        socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map_or_else(|| addr.to_string(), |a| a.to_string()),
        socket.recv_buffer_size().unwrap_or(0),
        socket.send_buffer_size().unwrap_or(0)
    );
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}

/// Largest datagram a batch slot holds.
pub const SLOT: usize = 2048;

/// A set of datagram slots with the `mmsghdr` bookkeeping for one `recvmmsg`/`sendmmsg` call.
pub struct Batch {
    bufs: Vec<[u8; SLOT]>,
    lens: Vec<usize>,
    addrs: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Number of slots in use.
    len: usize,
}

impl Batch {
    /// A batch of `n` slots.
    pub fn new(n: usize) -> Batch {
        // SAFETY: sockaddr_storage and mmsghdr are plain C structs for which all-zero is valid.
        let zero_addr: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
        let zero_hdr: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
        Batch {
            bufs: vec![[0u8; SLOT]; n],
            lens: vec![0; n],
            addrs: vec![zero_addr; n],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                n
            ],
            hdrs: vec![zero_hdr; n],
            len: 0,
        }
    }

    /// Slots available.
    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// Slots in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no slot is in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when every slot is in use.
    pub fn is_full(&self) -> bool {
        self.len == self.bufs.len()
    }

    /// Empties the batch.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Datagram `i` and its peer address (received: the source; queued: the destination).
    pub fn get(&self, i: usize) -> (&[u8], SocketAddr) {
        (&self.bufs[i][..self.lens[i]], from_storage(&self.addrs[i]))
    }

    /// Fills the next free slot: `fill` writes into the buffer and returns the length.
    /// Returns false (and writes nothing) when the batch is full or `fill` declines.
    pub fn push_with(
        &mut self,
        to: SocketAddr,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        if self.is_full() {
            return false;
        }
        let i = self.len;
        match fill(&mut self.bufs[i]) {
            Some(n) if n <= SLOT => {
                self.lens[i] = n;
                self.addrs[i] = to_storage(to);
                self.len += 1;
                true
            }
            _ => false,
        }
    }

    /// Receives up to `capacity` datagrams in one `recvmmsg`. Returns how many (0 means
    /// nothing was waiting). Truncated datagrams (larger than a slot) are dropped.
    pub fn recv(&mut self, socket: &mio::net::UdpSocket) -> io::Result<usize> {
        let n = self.bufs.len();
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: SLOT,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points into buffers owned by `self` that outlive the call, with
        // lengths matching their allocations.
        let got = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let got = got as usize;
        // Compact: keep datagrams that arrived whole, in order.
        let mut kept = 0;
        for i in 0..got {
            let truncated = self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            if truncated {
                continue;
            }
            if kept != i {
                self.bufs.swap(kept, i);
                self.addrs.swap(kept, i);
            }
            self.lens[kept] = self.hdrs[i].msg_len as usize;
            kept += 1;
        }
        self.len = kept;
        Ok(got)
    }

    /// Sends the queued datagrams with `sendmmsg`, as many as the socket takes; the ones sent
    /// are removed from the front. Returns how many were sent; `Ok(0)` with datagrams left
    /// means the socket would block.
    pub fn send(&mut self, socket: &mio::net::UdpSocket) -> io::Result<usize> {
        let n = self.len;
        if n == 0 {
            return Ok(0);
        }
        for i in 0..n {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.lens[i],
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = storage_len(&self.addrs[i]);
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        // SAFETY: as in `recv`; the buffers are only read by the kernel.
        let sent = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if sent < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                // A datagram the network refuses (e.g. unreachable destination) is dropped
                // rather than retried forever: UDP promises nothing more.
                _ => {
                    debug!("sendmmsg: {e}; dropping one datagram");
                    self.drop_front(1);
                    Ok(1)
                }
            };
        }
        let sent = sent as usize;
        self.drop_front(sent);
        Ok(sent)
    }

    fn drop_front(&mut self, k: usize) {
        let k = k.min(self.len);
        for i in k..self.len {
            self.bufs.swap(i - k, i);
            self.addrs.swap(i - k, i);
            self.lens[i - k] = self.lens[i];
        }
        self.len -= k;
    }
}

fn to_storage(addr: SocketAddr) -> libc::sockaddr_storage {
    // SAFETY: all-zero is a valid sockaddr_storage; the writes below stay within it because
    // sockaddr_in and sockaddr_in6 are smaller than sockaddr_storage.
    let mut s: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            unsafe { std::ptr::write((&mut s as *mut libc::sockaddr_storage).cast(), sin) };
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            unsafe { std::ptr::write((&mut s as *mut libc::sockaddr_storage).cast(), sin6) };
        }
    }
    s
}

fn storage_len(s: &libc::sockaddr_storage) -> libc::socklen_t {
    if i32::from(s.ss_family) == libc::AF_INET6 {
        size_of::<libc::sockaddr_in6>() as libc::socklen_t
    } else {
        size_of::<libc::sockaddr_in>() as libc::socklen_t
    }
}

fn from_storage(s: &libc::sockaddr_storage) -> SocketAddr {
    match i32::from(s.ss_family) {
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: libc::sockaddr_in6 =
                unsafe { std::ptr::read((s as *const libc::sockaddr_storage).cast()) };
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))
        }
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: libc::sockaddr_in =
                unsafe { std::ptr::read((s as *const libc::sockaddr_storage).cast()) };
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(a.sin_port),
            ))
        }
        _ => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_through_storage() {
        for a in [
            "127.0.0.1:6969".parse::<SocketAddr>().unwrap(),
            "[::1]:1".parse().unwrap(),
            "[::ffff:10.0.0.1]:65535".parse().unwrap(),
        ] {
            assert_eq!(from_storage(&to_storage(a)), a);
        }
    }

    #[test]
    fn batches_move_datagrams_over_loopback() {
        let a = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = b.local_addr().unwrap();
        let mut out = Batch::new(8);
        for i in 0..5u8 {
            assert!(out.push_with(to, |buf| {
                buf[..3].copy_from_slice(&[i, i, i]);
                Some(3)
            }));
        }
        let mut sent = 0;
        while !out.is_empty() {
            sent += out.send(&a).unwrap();
        }
        assert_eq!(sent, 5);
        // Loopback delivers synchronously, but allow for scheduling with a bounded retry.
        let mut inb = Batch::new(8);
        let mut got = Vec::new();
        for _ in 0..1000 {
            inb.recv(&b).unwrap();
            for i in 0..inb.len() {
                let (d, from) = inb.get(i);
                assert_eq!(from, a.local_addr().unwrap());
                got.push(d.to_vec());
            }
            if got.len() == 5 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(got, (0..5u8).map(|i| vec![i, i, i]).collect::<Vec<_>>());
    }
}
