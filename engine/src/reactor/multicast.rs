//! Multicast sockets for LAN discovery (`spec/discovery.md` §3): one per group, bound to the
//! group's port with address reuse (several peers on one host), joined on every interface that
//! is up and multicast-capable, and sending each announce out of every one of them. Nothing
//! here interprets a datagram: the [`Core`](super::Core) does.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use mio::net::UdpSocket;

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// An interface a multicast socket sends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Iface {
    /// IPv4: the interface's address.
    V4(Ipv4Addr),
    /// IPv6: the interface index.
    V6(u32),
}

/// One multicast socket.
#[derive(Debug)]
pub(super) struct McastSocket {
    pub(super) socket: UdpSocket,
    pub(super) group: SocketAddr,
    pub(super) ifaces: Vec<Iface>,
    /// An edge said readable and the socket was not drained to `WouldBlock` yet.
    pub(super) readable: bool,
}

impl McastSocket {
    /// Opens a socket for `group` and joins it on every suitable interface (only the one
    /// holding `only`, when given and not unspecified). Fails if no interface could join.
    pub(super) fn open(group: SocketAddr, only: Option<IpAddr>) -> io::Result<McastSocket> {
        let only = only.filter(|ip| !ip.is_unspecified());
        let sock = Socket::new(Domain::for_address(group), Type::DGRAM, Some(Protocol::UDP))?;
        sock.set_reuse_address(true)?;
        #[cfg(unix)]
        sock.set_reuse_port(true)?;
        if group.is_ipv6() {
            sock.set_only_v6(true)?;
        }
        sock.set_nonblocking(true)?;
        let any: SocketAddr = match group {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, group.port()).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, group.port()).into(),
        };
        sock.bind(&any.into())?;
        let mut ifaces = Vec::new();
        let mut last_err = None;
        for i in interfaces()? {
            let candidate = match (group.ip(), i.addr) {
                (IpAddr::V4(_), Some(IpAddr::V4(a))) => Iface::V4(a),
                (IpAddr::V6(_), Some(IpAddr::V6(_))) => Iface::V6(i.index),
                _ => continue,
            };
            if only.is_some_and(|o| Some(o) != i.addr) || ifaces.contains(&candidate) {
                continue;
            }
            let joined = match (group.ip(), candidate) {
                (IpAddr::V4(g), Iface::V4(a)) => sock.join_multicast_v4(&g, &a),
                (IpAddr::V6(g), Iface::V6(idx)) => sock.join_multicast_v6(&g, idx),
                _ => continue,
            };
            match joined {
                Ok(()) => ifaces.push(candidate),
                Err(e) => last_err = Some(e),
            }
        }
        if ifaces.is_empty() {
            return Err(last_err.unwrap_or_else(|| {
                let msg = match only {
                    Some(ip) => format!("no multicast-capable interface that is up holds {ip}"),
                    None => "no multicast-capable interface is up".to_owned(),
                };
                io::Error::new(io::ErrorKind::NotFound, msg)
            }));
        }
        match group {
            SocketAddr::V4(_) => {
                sock.set_multicast_loop_v4(true)?;
                sock.set_multicast_ttl_v4(1)?;
            }
            SocketAddr::V6(_) => {
                sock.set_multicast_loop_v6(true)?;
                sock.set_multicast_hops_v6(1)?;
            }
        }
        Ok(McastSocket {
            socket: UdpSocket::from_std(sock.into()),
            group,
            ifaces,
            readable: true,
        })
    }

    /// Sends `data` to the group out of every joined interface; returns how many sends failed.
    pub(super) fn send(&self, data: &[u8]) -> usize {
        let s = SockRef::from(&self.socket);
        let mut failed = 0;
        for i in &self.ifaces {
            let set = match i {
                Iface::V4(a) => s.set_multicast_if_v4(a),
                Iface::V6(idx) => s.set_multicast_if_v6(*idx),
            };
            if set
                .and_then(|()| self.socket.send_to(data, self.group))
                .is_err()
            {
                failed += 1;
            }
        }
        failed
    }
}

struct IfAddr {
    index: u32,
    addr: Option<IpAddr>,
}

/// Interfaces that are up and multicast-capable, with their addresses.
fn interfaces() -> io::Result<Vec<IfAddr>> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut p = head;
    while !p.is_null() {
        // SAFETY: p is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        let flags = ifa.ifa_flags;
        let want = libc::IFF_UP as libc::c_uint | libc::IFF_MULTICAST as libc::c_uint;
        if flags & want != want || ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let index = unsafe { libc::if_nametoindex(ifa.ifa_name) };
        // SAFETY: ifa_addr is non-null and points at a sockaddr of the family it names.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let addr = match family {
            libc::AF_INET => {
                // SAFETY: family checked: a sockaddr_in.
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                Some(IpAddr::V4(Ipv4Addr::from(
                    sin.sin_addr.s_addr.to_ne_bytes(),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: family checked: a sockaddr_in6.
                let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
            }
            _ => None,
        };
        if index != 0 && addr.is_some() {
            out.push(IfAddr { index, addr });
        }
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}
