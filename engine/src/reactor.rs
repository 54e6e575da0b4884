//! The single-threaded mio reactor: the only code in the project that touches a socket or
//! reads the clock.
//!
//! It owns one UDP socket (IPv4 or IPv6, made with socket2 with large kernel buffers), drains
//! reads until `WouldBlock`, queues sends that would block in a bounded queue, and sleeps until
//! the endpoint's next deadline. On Linux it batches system calls with `recvmmsg`/`sendmmsg`
//! and uses UDP GSO (`UDP_SEGMENT`) and GRO (`UDP_GRO`) when the kernel accepts them, falling
//! back cleanly to one datagram per message when it does not. It holds no protocol state: all
//! of that is in the [`Endpoint`] it drives through `handle`, `handle_timeout`,
//! `poll_transmit` and `poll_timeout`.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

pub use crate::driver::{Core, Transmit, Wake};
use crate::time::Time;

mod multicast;

const SOCKET: Token = Token(0);
/// Token of the waker (see [`Reactor::waker`]); multicast sockets use 1, 2, ….
const WAKER: Token = Token(usize::MAX);
/// Token of the signal pipe (see [`Reactor::signal_pipe`]).
const SIGNALS: Token = Token(usize::MAX - 1);
/// Most datagrams read from one multicast socket per turn (discovery is not a data path).
const MAX_MCAST_PER_TURN: usize = 64;
/// Buffer size of one send or receive slot: the largest UDP payload (GSO/GRO batches too).
const SLOT: usize = 65_536;
/// Largest transmit handed to the kernel: a UDP payload (or GSO batch) must stay below 65 507.
const MAX_TRANSMIT: usize = 65_000;

/// The reactor's [`Wake`]: a `mio::Waker` on the reactor's poll.
struct MioWake(mio::Waker);

impl Wake for MioWake {
    fn wake(&self) {
        // A failed wake only delays the results to the core's next deadline or input.
        let _ = self.0.wake();
    }
}

/// Reactor settings.
#[derive(Debug, Clone)]
pub struct ReactorConfig {
    /// Address to bind (port 0 for an ephemeral port).
    pub bind: SocketAddr,
    /// Requested SO_RCVBUF / SO_SNDBUF in bytes.
    pub socket_buffer: usize,
    /// Use UDP GSO when the kernel accepts it.
    pub gso: bool,
    /// Use UDP GRO when the kernel accepts it.
    pub gro: bool,
    /// Datagrams per `recvmmsg` / messages per `sendmmsg`. Each received one (a GRO batch)
    /// takes up to 64 KiB, so the default, 8, reads 512 KiB at a time: what one core's L2
    /// cache holds, so that the bytes are still there when the core takes them out of the
    /// batch (with 32, 2 MiB, `bench/lan.sh`'s st-lan case used 2–10 % more CPU in three sets
    /// of 6–10 alternated runs; the 1 GiB loopback fetch was unchanged). With
    /// [`MAX_RECV_BATCHES`], a turn reads at most 128 datagrams before its timers and sends.
    pub batch: usize,
    /// Most transmits queued when the socket would block.
    pub send_queue: usize,
}

impl Default for ReactorConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            socket_buffer: 8 << 20,
            gso: true,
            gro: true,
            batch: 8,
            send_queue: 64,
        }
    }
}

/// Counters of a reactor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReactorStats {
    /// Datagrams received (after GRO splitting).
    pub datagrams_in: u64,
    /// Transmits sent (a GSO batch counts once).
    pub transmits_out: u64,
    /// Send system calls.
    pub send_calls: u64,
    /// Receive system calls.
    pub recv_calls: u64,
    /// Sends that hit `WouldBlock`.
    pub would_block: u64,
    /// Datagrams received on multicast sockets.
    pub multicast_in: u64,
    /// Multicast sends (one per interface) that failed.
    pub multicast_send_errors: u64,
    /// Send errors other than `WouldBlock` (the transmit is dropped; the transport recovers).
    pub send_errors: u64,
    /// Turns that stopped receiving after [`MAX_RECV_BATCHES`] batches (a flood) so that
    /// timers run; the rest is read on the next turn, which does not sleep.
    pub recv_limited: u64,
    /// Calls of [`Reactor::turn`].
    pub turns: u64,
    /// Turns that polled without sleeping (work pending, or a deadline already due).
    pub busy_turns: u64,
}

/// Most receive batches (`recvmmsg` calls) per [`Reactor::turn`]: under a flood, timers and
/// sending still run between them.
pub const MAX_RECV_BATCHES: usize = 16;

struct TxSlot {
    buf: Vec<u8>,
    len: usize,
    seg: Option<usize>,
    dest: SocketAddr,
}

/// The reactor.
pub struct Reactor {
    poll: Poll,
    events: Events,
    socket: UdpSocket,
    local: SocketAddr,
    start: Instant,
    cfg: ReactorConfig,
    gso: bool,
    gro: bool,
    dont_fragment: bool,
    queue: VecDeque<TxSlot>,
    pool: Vec<Vec<u8>>,
    rx: Vec<Vec<u8>>,
    #[cfg(target_os = "linux")]
    tx_msgs: linux::MsgArrays,
    #[cfg(target_os = "linux")]
    rx_msgs: linux::MsgArrays,
    stats: ReactorStats,
    /// The last receive stopped at [`MAX_RECV_BATCHES`]: more may be waiting, and mio is
    /// edge-triggered, so the next turn must read without waiting for an event.
    rx_pending: bool,
    /// Multicast sockets (LAN discovery), polled with tokens 1, 2, ….
    mcast: Vec<multicast::McastSocket>,
    /// The waker fired: the core's off-thread work has results.
    woken: bool,
    /// The read end of the signal pipe, if one was made.
    signals: Option<mio::net::UnixStream>,
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("local", &self.local)
            .field("gso", &self.gso)
            .finish()
    }
}

impl Reactor {
    /// Binds the socket and sets it up.
    pub fn bind(cfg: ReactorConfig) -> io::Result<Self> {
        let sock = Socket::new(
            Domain::for_address(cfg.bind),
            Type::DGRAM,
            Some(Protocol::UDP),
        )?;
        if cfg.bind.is_ipv6() {
            let _ = sock.set_only_v6(false);
        }
        sock.set_nonblocking(true)?;
        set_buffers(&sock, cfg.socket_buffer);
        log::info!(
            "udp socket buffers: rcv {} snd {} (asked {})",
            sock.recv_buffer_size().unwrap_or(0),
            sock.send_buffer_size().unwrap_or(0),
            cfg.socket_buffer
        );
        sock.bind(&cfg.bind.into())?;
        let (gso, gro) = offloads(&sock, cfg.gso, cfg.gro);
        log::info!("udp offloads: gso {gso} gro {gro}");
        let dont_fragment = set_dont_fragment(&sock, cfg.bind.is_ipv6());
        if !dont_fragment {
            log::info!("cannot set the don't-fragment bit; datagrams stay at 1472 bytes");
        }
        let std_sock: std::net::UdpSocket = sock.into();
        let mut socket = UdpSocket::from_std(std_sock);
        let local = socket.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE | Interest::WRITABLE)?;
        let batch = cfg.batch.max(1);
        Ok(Self {
            poll,
            events: Events::with_capacity(16),
            socket,
            local,
            start: Instant::now(),
            rx: (0..batch).map(|_| vec![0u8; SLOT]).collect(),
            #[cfg(target_os = "linux")]
            tx_msgs: linux::MsgArrays::new(batch),
            #[cfg(target_os = "linux")]
            rx_msgs: linux::MsgArrays::new(batch),
            cfg,
            gso,
            gro,
            dont_fragment,
            queue: VecDeque::new(),
            pool: Vec::new(),
            stats: ReactorStats::default(),
            rx_pending: false,
            mcast: Vec::new(),
            woken: false,
            signals: None,
        })
    }

    /// Binds `cfg` with the address `bind` and `port`; with no address, `[::]` (IPv4 and IPv6)
    /// and, on a host without IPv6, `0.0.0.0` with a warning.
    pub fn bind_any(cfg: ReactorConfig, bind: Option<IpAddr>, port: u16) -> io::Result<Self> {
        match bind {
            Some(ip) => Reactor::bind(ReactorConfig {
                bind: SocketAddr::new(ip, port),
                ..cfg
            }),
            None => Reactor::bind(ReactorConfig {
                bind: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
                ..cfg.clone()
            })
            .or_else(|e| {
                log::warn!("cannot bind [::]:{port} ({e}); IPv4 only");
                Reactor::bind(ReactorConfig {
                    bind: SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port)),
                    ..cfg
                })
            }),
        }
    }

    /// Opens a socket bound to `group`'s port, joins `group` on every interface that is up
    /// and multicast-capable (only the one holding `only`, if given), and registers it:
    /// datagrams that arrive go to [`Core::handle_multicast`], and what
    /// [`Core::poll_multicast`] yields for this group is sent out of each of those
    /// interfaces. Returns how many interfaces joined; fails if none could.
    pub fn join_multicast(&mut self, group: SocketAddr, only: Option<IpAddr>) -> io::Result<usize> {
        let mut m = multicast::McastSocket::open(group, only)?;
        let token = Token(1 + self.mcast.len());
        self.poll
            .registry()
            .register(&mut m.socket, token, Interest::READABLE)?;
        let n = m.ifaces.len();
        self.mcast.push(m);
        Ok(n)
    }

    /// A waker for another thread (the disk thread): `wake()` ends the reactor's current
    /// sleep and the reactor calls [`Core::handle_wake`], so the core takes that thread's
    /// results at once instead of at its next deadline. One per reactor (a second call fails).
    pub fn waker(&self) -> io::Result<std::sync::Arc<dyn Wake>> {
        Ok(std::sync::Arc::new(MioWake(mio::Waker::new(
            self.poll.registry(),
            WAKER,
        )?)))
    }

    /// A pipe for signal handlers: a byte written to the returned end (by
    /// `signal_hook::low_level::pipe::register`, say) ends the reactor's sleep, so that `run`'s
    /// callback sees a signal's flag at once and the driver needs no periodic wake-up.
    pub fn signal_pipe(&mut self) -> io::Result<std::os::unix::net::UnixStream> {
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let mut read = mio::net::UnixStream::from_std(read);
        self.poll
            .registry()
            .register(&mut read, SIGNALS, Interest::READABLE)?;
        self.signals = Some(read);
        Ok(write)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// True if the socket sets the don't-fragment bit, which path MTU probing beyond 1472
    /// bytes needs: without it a probe leaves as IP fragments, arrives, and the path looks
    /// able to carry datagrams it only carries in pieces. Drivers cap the MTU at 1472 then.
    pub fn dont_fragment(&self) -> bool {
        self.dont_fragment
    }

    /// True if GSO is in use.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// True if GRO is in use.
    pub fn gro(&self) -> bool {
        self.gro
    }

    /// Counters.
    pub fn stats(&self) -> ReactorStats {
        self.stats
    }

    /// Now, on the engine clock.
    pub fn now(&self) -> Time {
        Time::from_micros(self.start.elapsed().as_micros() as u64)
    }

    /// Runs until `app` breaks. `app` is called once per turn, after the core handled what
    /// arrived and its due timers, to read the core's events and issue commands (the core
    /// handles its own input as it arrives: the driver does not schedule it). `max_wait`
    /// bounds each sleep, so `app` also sees a flag set by a signal handler within it.
    pub fn run<C: Core>(
        &mut self,
        core: &mut C,
        max_wait: Duration,
        mut app: impl FnMut(&mut C, Time) -> ControlFlow<()>,
    ) -> io::Result<()> {
        loop {
            let now = self.now();
            if app(core, now).is_break() {
                self.flush(core)?;
                return Ok(());
            }
            self.turn(core, max_wait)?;
        }
    }

    /// One iteration: send, sleep until readable, woken or the next deadline, receive, run
    /// timers, send again.
    pub fn turn<C: Core>(&mut self, core: &mut C, max_wait: Duration) -> io::Result<()> {
        self.flush(core)?;
        let now = self.now();
        let mut wait = match core.poll_timeout() {
            Some(t) => (t.saturating_since(now)).min(max_wait),
            None => max_wait,
        };
        if self.rx_pending || self.woken || self.mcast.iter().any(|m| m.readable) {
            wait = Duration::ZERO;
        }
        if !self.queue.is_empty() && wait > Duration::from_millis(1) {
            // Waiting for WRITABLE; also wake up soon in case the edge was missed.
            wait = Duration::from_millis(1);
        }
        // epoll sleeps in whole milliseconds (mio rounds a shorter wait up to 1 ms). A deadline
        // closer than that is slept to, not spun for (spec/transport.md §8.2): the pacer's
        // bucket holds 2 ms of its rate, so waking up to 1 ms late sends the same bytes in a
        // larger burst, while a process that spins starves the others on the same cores (16
        // `st lab` hosts on 2 cores took twice as long and 1.6× the CPU when every process spun
        // for deadlines under 500 µs).
        self.stats.turns += 1;
        if wait.is_zero() {
            self.stats.busy_turns += 1;
        }
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        for e in self.events.iter() {
            if e.token() == WAKER {
                self.woken = true;
            } else if e.token() == SIGNALS {
                // Drained: the wake-up was the point; the handlers set their flags.
                if let Some(r) = &mut self.signals {
                    let mut b = [0u8; 64];
                    while matches!(io::Read::read(r, &mut b), Ok(n) if n > 0) {}
                }
            } else if let Some(m) = e
                .token()
                .0
                .checked_sub(1)
                .and_then(|k| self.mcast.get_mut(k))
            {
                m.readable = true;
            }
        }
        if self.woken {
            self.woken = false;
            let now = self.now();
            core.handle_wake(now);
        }
        if !self.mcast.is_empty() {
            self.receive_multicast(core);
        }
        self.receive(core)?;
        let now = self.now();
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now);
        }
        self.flush(core)
    }

    /// Reads the multicast sockets that are readable, a bounded number of datagrams each.
    fn receive_multicast<C: Core>(&mut self, ep: &mut C) {
        for k in 0..self.mcast.len() {
            if !self.mcast[k].readable {
                continue;
            }
            let mut left = MAX_MCAST_PER_TURN;
            while left > 0 {
                match self.mcast[k].socket.recv_from(&mut self.rx[0]) {
                    Ok((n, src)) => {
                        self.stats.multicast_in += 1;
                        let now = self.now();
                        ep.handle_multicast(now, src, &self.rx[0][..n]);
                        left -= 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        // WouldBlock: drained. Any other error: nothing to read now.
                        self.mcast[k].readable = false;
                        break;
                    }
                }
            }
        }
    }

    /// Sends the core's multicast datagrams (never queued: discovery tolerates loss).
    fn flush_multicast<C: Core>(&mut self, ep: &mut C) {
        let now = self.now();
        // A pooled transmit buffer: this runs on every flush, so no fresh zeroed buffer.
        let mut buf = self.pool.pop().unwrap_or_else(|| vec![0u8; SLOT]);
        while let Some(t) = ep.poll_multicast(now, &mut buf) {
            if let Some(m) = self.mcast.iter().find(|m| m.group == t.remote) {
                self.stats.multicast_send_errors += m.send(&buf[..t.len]) as u64;
            }
        }
        self.pool.push(buf);
    }

    /// Sends everything the endpoint has, until the socket would block or the queue is full.
    pub fn flush<C: Core>(&mut self, ep: &mut C) -> io::Result<()> {
        if !self.mcast.is_empty() {
            self.flush_multicast(ep);
        }
        loop {
            self.send_queued()?;
            if !self.queue.is_empty() {
                return Ok(()); // would block
            }
            let now = self.now();
            let mut produced = 0;
            while self.queue.len() < self.cfg.send_queue.max(1) && produced < self.cfg.batch.max(1)
            {
                let mut buf = self.pool.pop().unwrap_or_else(|| vec![0u8; SLOT]);
                match ep.poll_transmit(now, &mut buf[..MAX_TRANSMIT]) {
                    Some(t) => {
                        self.queue.push_back(TxSlot {
                            buf,
                            len: t.len,
                            seg: t.segment_size,
                            dest: t.remote,
                        });
                        produced += 1;
                    }
                    None => {
                        self.pool.push(buf);
                        break;
                    }
                }
            }
            if produced == 0 {
                return Ok(());
            }
            #[cfg(target_os = "linux")]
            if !self.gso {
                self.split_queue();
            }
        }
    }

    fn receive<C: Core>(&mut self, core: &mut C) -> io::Result<()> {
        // Drain until WouldBlock (mio is edge-triggered), but at most MAX_RECV_BATCHES batches:
        // the rest waits for the next turn (which then does not sleep, see `rx_pending`).
        self.rx_pending = false;
        for _ in 0..MAX_RECV_BATCHES {
            if self.recv_batch(core)? == 0 {
                return Ok(());
            }
            // Acknowledge promptly between batches so the sender's window keeps moving.
            self.flush(core)?;
        }
        self.rx_pending = true;
        self.stats.recv_limited += 1;
        Ok(())
    }

    fn done_slot(&mut self, s: TxSlot) {
        self.pool.push(s.buf);
    }
}

fn set_buffers(sock: &Socket, size: usize) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        const SO_SNDBUFFORCE: libc::c_int = 32;
        const SO_RCVBUFFORCE: libc::c_int = 33;
        let v = size.min(i32::MAX as usize) as libc::c_int;
        for (force, plain) in [
            (SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            // SAFETY: setsockopt with a valid fd and a c_int option value of the right size.
            let r = unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    force,
                    (&v as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r != 0 {
                // Not privileged: the plain option, capped by net.core.[rw]mem_max.
                // SAFETY: as above.
                unsafe {
                    libc::setsockopt(
                        sock.as_raw_fd(),
                        libc::SOL_SOCKET,
                        plain,
                        (&v as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    );
                }
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = sock.set_recv_buffer_size(size);
        let _ = sock.set_send_buffer_size(size);
    }
}

#[cfg(target_os = "linux")]
mod linux {
    //! recvmmsg/sendmmsg with GSO/GRO control messages.

    use super::*;
    use std::mem::{size_of, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;

    /// The C arrays of one `sendmmsg`/`recvmmsg` call, allocated once per reactor.
    pub(super) struct MsgArrays {
        hdrs: Vec<libc::mmsghdr>,
        iovs: Vec<libc::iovec>,
        names: Vec<libc::sockaddr_storage>,
        cmsgs: Vec<[u64; CMSG_LEN / 8]>,
    }

    // SAFETY: the raw pointers inside the arrays are written just before each system call and
    // only read by it; between calls they are inert data, so moving the arrays to another thread
    // is sound.
    unsafe impl Send for MsgArrays {}

    impl MsgArrays {
        pub(super) fn new(n: usize) -> Self {
            // SAFETY: all-zero bytes are valid values of these C structs.
            Self {
                hdrs: (0..n).map(|_| unsafe { zeroed() }).collect(),
                iovs: (0..n).map(|_| unsafe { zeroed() }).collect(),
                names: (0..n).map(|_| unsafe { zeroed() }).collect(),
                cmsgs: vec![[0u64; CMSG_LEN / 8]; n],
            }
        }

        /// Zeroes the first `n` entries (`n` is at most the batch size given to `new`).
        fn reset(&mut self, n: usize) {
            for i in 0..n {
                // SAFETY: as in `new`.
                self.hdrs[i] = unsafe { zeroed() };
                self.cmsgs[i] = [0; CMSG_LEN / 8];
            }
        }
    }

    pub(super) const UDP_SEGMENT: libc::c_int = 103;
    pub(super) const UDP_GRO: libc::c_int = 104;
    const CMSG_LEN: usize = 64;

    /// Sets the don't-fragment bit and ignores the kernel's path MTU cache
    /// (`IP_PMTUDISC_PROBE`, and its IPv6 twin on an IPv6 socket, which also carries IPv4):
    /// the transport finds the path MTU itself (spec §8.4), so a datagram larger than the
    /// interface's MTU fails at once with `EMSGSIZE` instead of leaving as IP fragments. True
    /// if the bit is set for the socket's own family.
    pub(super) fn set_dont_fragment(sock: &Socket, v6: bool) -> bool {
        let fd = sock.as_raw_fd();
        let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
            // SAFETY: setsockopt with a valid fd and a c_int option value of the right size.
            unsafe {
                libc::setsockopt(
                    fd,
                    level,
                    name,
                    (&value as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                ) == 0
            }
        };
        let v4 = set(
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        );
        if v6 {
            set(
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_PROBE,
            )
        } else {
            v4
        }
    }

    pub(super) fn offloads(sock: &Socket, want_gso: bool, want_gro: bool) -> (bool, bool) {
        let fd = sock.as_raw_fd();
        let gso = want_gso && {
            let mut v: libc::c_int = 0;
            let mut l = size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt into a c_int with its size.
            unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_UDP,
                    UDP_SEGMENT,
                    (&mut v as *mut libc::c_int).cast(),
                    &mut l,
                ) == 0
            }
        };
        let gro = want_gro && {
            let v: libc::c_int = 1;
            // SAFETY: setsockopt with a c_int.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_UDP,
                    UDP_GRO,
                    (&v as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                ) == 0
            }
        };
        (gso, gro)
    }

    fn to_storage(a: &SocketAddr, st: &mut libc::sockaddr_storage) -> libc::socklen_t {
        match a {
            SocketAddr::V4(v4) => {
                // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in.
                let sin = unsafe {
                    &mut *(st as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
                };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = v4.port().to_be();
                sin.sin_addr = libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                };
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(v6) => {
                // SAFETY: as above for sockaddr_in6.
                let sin6 = unsafe {
                    &mut *(st as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = v6.port().to_be();
                sin6.sin6_addr = libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                };
                sin6.sin6_flowinfo = v6.flowinfo();
                sin6.sin6_scope_id = v6.scope_id();
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }

    fn from_storage(st: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match i32::from(st.ss_family) {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in (family checked).
                let sin =
                    unsafe { &*(st as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the kernel wrote a sockaddr_in6 (family checked).
                let sin6 =
                    unsafe { &*(st as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                let a = match ip.to_ipv4_mapped() {
                    Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, u16::from_be(sin6.sin6_port))),
                    None => SocketAddr::V6(SocketAddrV6::new(
                        ip,
                        u16::from_be(sin6.sin6_port),
                        sin6.sin6_flowinfo,
                        sin6.sin6_scope_id,
                    )),
                };
                Some(a)
            }
            _ => None,
        }
    }

    fn map_dest(local_v6: bool, a: SocketAddr) -> SocketAddr {
        match (local_v6, a) {
            (true, SocketAddr::V4(v4)) => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            _ => a,
        }
    }

    impl Reactor {
        pub(super) fn send_queued(&mut self) -> io::Result<()> {
            while !self.queue.is_empty() {
                let n = self.queue.len().min(self.tx_msgs.hdrs.len());
                self.tx_msgs.reset(n);
                let MsgArrays {
                    hdrs,
                    iovs,
                    names,
                    cmsgs,
                } = &mut self.tx_msgs;
                let v6 = self.local.is_ipv6();
                for i in 0..n {
                    let s = &mut self.queue[i];
                    iovs[i].iov_base = s.buf.as_mut_ptr().cast();
                    iovs[i].iov_len = s.len;
                    let dest = map_dest(v6, s.dest);
                    let nl = to_storage(&dest, &mut names[i]);
                    let h = &mut hdrs[i].msg_hdr;
                    h.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
                    h.msg_namelen = nl;
                    h.msg_iov = &mut iovs[i];
                    h.msg_iovlen = 1;
                    if let Some(seg) = s.seg.filter(|&g| g < s.len) {
                        let space = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
                        h.msg_control = cmsgs[i].as_mut_ptr().cast();
                        h.msg_controllen = space as _;
                        // SAFETY: the control buffer holds CMSG_SPACE(2) bytes, aligned to u64.
                        unsafe {
                            let c = libc::CMSG_FIRSTHDR(h);
                            (*c).cmsg_level = libc::SOL_UDP;
                            (*c).cmsg_type = UDP_SEGMENT;
                            (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg as u16);
                        }
                    }
                }
                self.stats.send_calls += 1;
                // SAFETY: every pointer in hdrs points into buffers that live until the call
                // returns; n matches the array length.
                let r = unsafe {
                    libc::sendmmsg(self.socket.as_raw_fd(), hdrs.as_mut_ptr(), n as u32, 0)
                };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::WouldBlock => {
                            self.stats.would_block += 1;
                            return Ok(());
                        }
                        io::ErrorKind::Interrupted => continue,
                        _ => {
                            let errno = e.raw_os_error().unwrap_or(0);
                            // A refused GSO batch of Ethernet-sized segments means the kernel
                            // or the device cannot do GSO; larger segments may just be too big
                            // for the path (the kernel says EINVAL then too): drop those only.
                            let first_seg = self
                                .queue
                                .front()
                                .and_then(|s| s.seg)
                                .is_some_and(|g| g <= 1472);
                            if self.gso
                                && first_seg
                                && (errno == libc::EIO || errno == libc::EINVAL)
                            {
                                log::warn!(
                                    "UDP GSO refused ({e}); falling back to single datagrams"
                                );
                                self.gso = false;
                                self.split_queue();
                                continue;
                            }
                            // Unreachable destination and the like: drop this transmit.
                            self.stats.send_errors += 1;
                            log::debug!(
                                "send to {:?} failed: {e}",
                                self.queue.front().map(|s| s.dest)
                            );
                            if let Some(s) = self.queue.pop_front() {
                                self.done_slot(s);
                            }
                            continue;
                        }
                    }
                }
                for _ in 0..r as usize {
                    if let Some(s) = self.queue.pop_front() {
                        self.stats.transmits_out += 1;
                        self.done_slot(s);
                    }
                }
            }
            Ok(())
        }

        /// Without GSO: turn every batched transmit into single datagrams.
        pub(super) fn split_queue(&mut self) {
            let old: Vec<TxSlot> = self.queue.drain(..).collect();
            for s in old {
                match s.seg {
                    Some(seg) if seg < s.len => {
                        for chunk in s.buf[..s.len].chunks(seg) {
                            let mut b = self.pool.pop().unwrap_or_else(|| vec![0u8; SLOT]);
                            b[..chunk.len()].copy_from_slice(chunk);
                            self.queue.push_back(TxSlot {
                                buf: b,
                                len: chunk.len(),
                                seg: None,
                                dest: s.dest,
                            });
                        }
                        self.pool.push(s.buf);
                    }
                    _ => self.queue.push_back(TxSlot { seg: None, ..s }),
                }
            }
        }

        /// One recvmmsg; hands every datagram (GRO batches split) to the core. Returns how
        /// many messages were read.
        pub(super) fn recv_batch<C: Core>(&mut self, ep: &mut C) -> io::Result<usize> {
            let n = self.rx.len().min(self.rx_msgs.hdrs.len());
            self.rx_msgs.reset(n);
            let now = Time::from_micros(self.start.elapsed().as_micros() as u64);
            let MsgArrays {
                hdrs,
                iovs,
                names,
                cmsgs,
            } = &mut self.rx_msgs;
            for i in 0..n {
                iovs[i].iov_base = self.rx[i].as_mut_ptr().cast();
                iovs[i].iov_len = self.rx[i].len();
                let h = &mut hdrs[i].msg_hdr;
                h.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_iov = &mut iovs[i];
                h.msg_iovlen = 1;
                h.msg_control = cmsgs[i].as_mut_ptr().cast();
                h.msg_controllen = CMSG_LEN as _;
            }
            self.stats.recv_calls += 1;
            // SAFETY: all pointers refer to live buffers of the stated sizes.
            let r = unsafe {
                libc::recvmmsg(
                    self.socket.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    n as u32,
                    0,
                    std::ptr::null_mut(),
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                let got = match e.kind() {
                    io::ErrorKind::WouldBlock => 0,
                    io::ErrorKind::Interrupted => 1,
                    // ICMP errors surface here (e.g. ECONNREFUSED); they are not fatal.
                    _ => {
                        log::debug!("recvmmsg: {e}");
                        1
                    }
                };
                return Ok(got);
            }
            for i in 0..r as usize {
                let len = hdrs[i].msg_len as usize;
                let Some(src) = from_storage(&names[i]) else {
                    continue;
                };
                let mut seg = len;
                let h = &hdrs[i].msg_hdr;
                // SAFETY: walking the control messages the kernel wrote, within msg_controllen.
                unsafe {
                    let mut c = libc::CMSG_FIRSTHDR(h);
                    while !c.is_null() {
                        if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                            let v =
                                std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                            if v > 0 {
                                seg = v as usize;
                            }
                        }
                        c = libc::CMSG_NXTHDR(h, c);
                    }
                }
                let data = &self.rx[i][..len.min(SLOT)];
                for d in data.chunks(seg.max(1)) {
                    self.stats.datagrams_in += 1;
                    ep.handle(now, src, d);
                }
            }
            Ok(r as usize)
        }
    }
}

#[cfg(target_os = "linux")]
use linux::{offloads, set_dont_fragment};

#[cfg(not(target_os = "linux"))]
fn offloads(_: &Socket, _: bool, _: bool) -> (bool, bool) {
    (false, false)
}

#[cfg(not(target_os = "linux"))]
fn set_dont_fragment(_: &Socket, _: bool) -> bool {
    false
}

#[cfg(not(target_os = "linux"))]
impl Reactor {
    fn send_queued(&mut self) -> io::Result<()> {
        while let Some(s) = self.queue.front() {
            let seg = s.seg.unwrap_or(s.len).max(1);
            let mut off = 0;
            while off < s.len {
                let end = (off + seg).min(s.len);
                match self.socket.send_to(&s.buf[off..end], s.dest) {
                    Ok(_) => off = end,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(_) => off = end,
                }
            }
            self.stats.send_calls += 1;
            if let Some(s) = self.queue.pop_front() {
                self.done_slot(s);
            }
        }
        Ok(())
    }

    fn recv_batch<C: Core>(&mut self, ep: &mut C) -> io::Result<usize> {
        let mut got = 0;
        while got < self.rx.len() {
            match self.socket.recv_from(&mut self.rx[0]) {
                Ok((n, src)) => {
                    let now = self.now();
                    ep.handle(now, src, &self.rx[0][..n]);
                    got += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => got += 1,
            }
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts datagrams and timer runs; its timer is always due.
    #[derive(Default)]
    struct Counter {
        handled: usize,
        timeouts: usize,
    }

    impl Core for Counter {
        fn handle(&mut self, _: Time, _: SocketAddr, _: &[u8]) {
            self.handled += 1;
        }
        fn poll_transmit(&mut self, _: Time, _: &mut [u8]) -> Option<Transmit> {
            None
        }
        fn poll_timeout(&self) -> Option<Time> {
            Some(Time::from_micros(0))
        }
        fn handle_timeout(&mut self, _: Time) {
            self.timeouts += 1;
        }
    }

    #[test]
    fn a_flood_is_read_in_bounded_slices_with_timers_in_between() {
        let batch = 4;
        let mut r = Reactor::bind(ReactorConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            gso: false,
            gro: false,
            batch,
            ..ReactorConfig::default()
        })
        .unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let total = 3 * MAX_RECV_BATCHES * batch + 5;
        for i in 0..total {
            // Loopback delivers into the receive buffer before send_to returns.
            tx.send_to(&(i as u32).to_be_bytes(), r.local_addr())
                .unwrap();
        }
        let mut core = Counter::default();
        let mut per_turn = Vec::new();
        while core.handled < total && per_turn.len() < 100 {
            let before = core.handled;
            // A long max_wait: a turn with pending input must not sleep.
            r.turn(&mut core, Duration::from_secs(30)).unwrap();
            per_turn.push(core.handled - before);
        }
        let slice = MAX_RECV_BATCHES * batch;
        assert_eq!(per_turn, vec![slice, slice, slice, 5]);
        assert_eq!(core.timeouts, per_turn.len(), "timers ran every turn");
        assert_eq!(r.stats().recv_limited, 3);
    }

    /// A core with no deadline: the reactor sleeps until input or `max_wait`.
    struct Idle;

    impl Core for Idle {
        fn handle(&mut self, _: Time, _: SocketAddr, _: &[u8]) {}
        fn poll_transmit(&mut self, _: Time, _: &mut [u8]) -> Option<Transmit> {
            None
        }
        fn poll_timeout(&self) -> Option<Time> {
            None
        }
        fn handle_timeout(&mut self, _: Time) {}
    }

    #[test]
    fn a_byte_on_the_signal_pipe_ends_the_sleep() {
        let mut r = Reactor::bind(ReactorConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..ReactorConfig::default()
        })
        .unwrap();
        let mut w = r.signal_pipe().unwrap();
        io::Write::write_all(&mut w, &[1]).unwrap();
        let t0 = Instant::now();
        // Without the pipe this sleeps the whole minute.
        r.turn(&mut Idle, Duration::from_secs(60)).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(20), "woken by the pipe");
    }
}
