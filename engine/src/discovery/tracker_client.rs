//! The peer's side of the native tracker protocol (`spec/tracker.md` §3), sans-IO.
//!
//! One [`TrackerClient`] per swarm keeps, for every tracker of the `.st` file, where it stands:
//! it connects (obtaining a connection id), announces at the interval the tracker gives,
//! reconnects when the id is about to expire, and backs off exponentially from a tracker that
//! does not answer. The caller carries the payloads in transport REQUESTs (which retransmit
//! them) and hands back each RESPONSE or failure. Events are sent once: `started` first,
//! `completed` once the download ends, `stopped` on the way out.

use std::net::SocketAddr;
use std::time::Duration;

use st_proto::tracker::{self as wire, Announce, Event, NativeResponse};

use crate::time::Time;

/// A connection id is trusted for this long after it was obtained (the tracker accepts it for
/// at least 60 s, spec §2).
const ID_LIFETIME: Duration = Duration::from_secs(50);
/// First retry delay after a failure; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(15);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30 * 60);
/// Peers asked for per announce.
const NUMWANT: u16 = 50;

/// Where one tracker stands.
#[derive(Debug, Clone)]
struct Slot {
    addr: SocketAddr,
    /// Connection id and when it was obtained.
    id: Option<(u64, Time)>,
    /// A request is out; no other is sent until it is answered or fails.
    in_flight: Option<Pending>,
    next: Time,
    interval: Duration,
    backoff: Duration,
    /// Last event this tracker acknowledged.
    told: Told,
    failures: u32,
    /// Requests sent (connects and announces) and whether any was ever answered.
    tries: u32,
    answered: bool,
    /// When it last answered.
    last_answer: Option<Time>,
}

/// Where one tracker stands, for diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerStatus {
    /// Its address.
    pub addr: SocketAddr,
    /// True once it answered anything.
    pub answered: bool,
    /// When it last answered.
    pub last_answer: Option<Time>,
    /// Requests sent to it.
    pub tries: u32,
    /// Failures in a row.
    pub failures: u32,
    /// When the next request is due.
    pub next: Time,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Connect,
    Announce(Event),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Told {
    Nothing,
    Started,
    Completed,
    Stopped,
}

/// Transfer figures reported in announces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes still missing (0 = seed).
    pub left: u64,
    /// Bytes uploaded.
    pub uploaded: u64,
    /// Bytes downloaded.
    pub downloaded: u64,
}

/// A request to send: carry `payload` in a transport REQUEST to `to`, then call
/// [`TrackerClient::handle_response`] or [`TrackerClient::handle_failure`] with `tracker`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Index of the tracker (stable for the client's life).
    pub tracker: usize,
    /// Its address.
    pub to: SocketAddr,
    /// The native message.
    pub payload: Vec<u8>,
}

/// What a response taught.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Learned {
    /// Peers to try.
    pub peers: Vec<SocketAddr>,
    /// Seeds and leechers, as the tracker counts them.
    pub seeders: u32,
    /// Leechers in the swarm.
    pub leechers: u32,
}

/// The native tracker client of one swarm.
#[derive(Debug)]
pub struct TrackerClient {
    slots: Vec<Slot>,
    /// Connection ids obtained since the last [`TrackerClient::take_new_ids`].
    new_ids: Vec<(SocketAddr, u64, Time)>,
    swarm_id: [u8; 32],
    peer_id: [u8; 16],
    port: u16,
    complete: bool,
    stopping: bool,
}

impl TrackerClient {
    /// A client for the trackers at `addrs` (already resolved), announcing `port`.
    pub fn new(
        addrs: &[SocketAddr],
        swarm_id: [u8; 32],
        peer_id: [u8; 16],
        port: u16,
        now: Time,
    ) -> Self {
        TrackerClient {
            slots: addrs
                .iter()
                .map(|&addr| Slot {
                    addr,
                    id: None,
                    in_flight: None,
                    next: now,
                    interval: Duration::from_secs(300),
                    backoff: FIRST_BACKOFF,
                    told: Told::Nothing,
                    failures: 0,
                    tries: 0,
                    answered: false,
                    last_answer: None,
                })
                .collect(),
            new_ids: Vec::new(),
            swarm_id,
            peer_id,
            port,
            complete: false,
            stopping: false,
        }
    }

    /// The download finished: every tracker is told `completed` at once.
    pub fn set_complete(&mut self, now: Time) {
        if !self.complete {
            self.complete = true;
            for s in &mut self.slots {
                s.next = now;
            }
        }
    }

    /// Leaving: every tracker that was told anything is told `stopped` (one attempt each).
    pub fn stop(&mut self, now: Time) {
        self.stopping = true;
        for s in &mut self.slots {
            s.next = now;
        }
    }

    /// True once every tracker that needed it was sent `stopped` (or gave up). A tracker that
    /// was never told anything needs nothing, even with a request still out (an unreachable
    /// tracker must not hold the exit).
    pub fn stopped(&self) -> bool {
        self.stopping
            && self.slots.iter().all(|s| {
                s.told == Told::Nothing || (s.in_flight.is_none() && s.told == Told::Stopped)
            })
    }

    /// Connection ids this client obtained since the last call: a process with many swarms
    /// hands them to its other clients ([`TrackerClient::share_id`]), so that one connect per
    /// tracker serves every swarm (spec `tracker.md` §2: an id is bound to the source
    /// address, not to a swarm).
    pub fn take_new_ids(&mut self) -> Vec<(SocketAddr, u64, Time)> {
        std::mem::take(&mut self.new_ids)
    }

    /// A connection id for `tracker` obtained at `at` by another client of this process:
    /// used instead of a connect of our own while it is fresh.
    pub fn share_id(&mut self, tracker: SocketAddr, id: u64, at: Time) {
        for s in &mut self.slots {
            if s.addr == tracker && s.id.is_none_or(|(_, t)| t < at) {
                s.id = Some((id, at));
            }
        }
    }

    /// Where each tracker stands.
    pub fn status(&self) -> Vec<TrackerStatus> {
        self.slots
            .iter()
            .map(|s| TrackerStatus {
                addr: s.addr,
                answered: s.answered,
                last_answer: s.last_answer,
                tries: s.tries,
                failures: s.failures,
                next: s.next,
            })
            .collect()
    }

    /// Failures in a row of each tracker (for the progress display).
    pub fn failures(&self) -> Vec<u32> {
        self.slots.iter().map(|s| s.failures).collect()
    }

    /// True if tracker slot `s` has anything left to send.
    fn wants_to_send(&self, s: &Slot) -> bool {
        s.in_flight.is_none()
            && !(self.stopping && (s.told == Told::Stopped || s.told == Told::Nothing))
    }

    /// When something is next due.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.slots
            .iter()
            .filter(|s| self.wants_to_send(s))
            .map(|s| s.next)
            .min()
    }

    /// The next request due at `now`, if any.
    pub fn poll_request(&mut self, now: Time, p: Progress) -> Option<Outgoing> {
        let (swarm_id, peer_id, port, complete, stopping) = (
            self.swarm_id,
            self.peer_id,
            self.port,
            self.complete,
            self.stopping,
        );
        let due = (0..self.slots.len())
            .find(|&i| self.wants_to_send(&self.slots[i]) && self.slots[i].next <= now)?;
        {
            let i = due;
            let s = &mut self.slots[i];
            let id =
                s.id.filter(|&(_, at)| now.saturating_since(at) < ID_LIFETIME)
                    .map(|(id, _)| id);
            let mut buf = [0u8; wire::MAX_ANNOUNCE_LEN];
            let (pending, n) = match id {
                None => (Pending::Connect, wire::emit_connect_request(&mut buf).ok()?),
                Some(connection_id) => {
                    let event = if stopping {
                        Event::Stopped
                    } else if s.told == Told::Nothing {
                        Event::Started
                    } else if complete && s.told < Told::Completed {
                        Event::Completed
                    } else {
                        Event::Periodic
                    };
                    let numwant = if stopping { 0 } else { NUMWANT };
                    // Padded so that the reply with `numwant` peers of the tracker's family
                    // fits 3× the request (spec `tracker.md` §3.2, `transport.md` §9).
                    let peer_len = if s.addr.ip().to_canonical().is_ipv4() {
                        6
                    } else {
                        18
                    };
                    let a = Announce {
                        connection_id,
                        swarm_id,
                        peer_id,
                        event,
                        port,
                        numwant,
                        left: p.left,
                        uploaded: p.uploaded,
                        downloaded: p.downloaded,
                    };
                    (
                        Pending::Announce(event),
                        wire::emit_padded_announce_request(
                            &mut buf,
                            &a,
                            wire::announce_len_for(numwant, peer_len),
                        )?,
                    )
                }
            };
            s.in_flight = Some(pending);
            s.tries += 1;
            Some(Outgoing {
                tracker: i,
                to: s.addr,
                payload: buf[..n].to_vec(),
            })
        }
    }

    /// A response from tracker `i`.
    pub fn handle_response(&mut self, now: Time, i: usize, payload: &[u8]) -> Learned {
        let Some(s) = self.slots.get_mut(i) else {
            return Learned::default();
        };
        let Some(pending) = s.in_flight.take() else {
            return Learned::default();
        };
        match (pending, wire::parse_native_response(payload)) {
            (Pending::Connect, Some(NativeResponse::Connected(id))) => {
                s.answered = true;
                s.last_answer = Some(now);
                s.id = Some((id, now));
                self.new_ids.push((s.addr, id, now));
                s.next = now;
                s.failures = 0;
                Learned::default()
            }
            (Pending::Announce(event), Some(NativeResponse::Announced(h, raw))) => {
                s.answered = true;
                s.last_answer = Some(now);
                s.failures = 0;
                s.backoff = FIRST_BACKOFF;
                s.interval = Duration::from_secs(u64::from(h.interval.get().clamp(10, 24 * 3600)));
                s.next = now + s.interval;
                s.told = match event {
                    Event::Started => Told::Started,
                    Event::Completed => Told::Completed,
                    Event::Stopped => Told::Stopped,
                    Event::Periodic => s.told,
                };
                if (self.complete && s.told < Told::Completed)
                    || (self.stopping && s.told != Told::Stopped)
                {
                    // Completed, or leaving, while this announce was out: tell it now, not
                    // an interval later (a stop would otherwise sit out its whole grace).
                    s.next = now;
                }
                let size = if h.family == 6 { 18 } else { 6 };
                let peers = raw
                    .chunks_exact(size)
                    .filter_map(|c| {
                        let port = u16::from_be_bytes([c[size - 2], c[size - 1]]);
                        let ip: std::net::IpAddr = if size == 6 {
                            <[u8; 4]>::try_from(&c[..4]).ok()?.into()
                        } else {
                            <[u8; 16]>::try_from(&c[..16]).ok()?.into()
                        };
                        (port != 0).then_some(SocketAddr::new(ip, port))
                    })
                    .collect();
                Learned {
                    peers,
                    seeders: h.seeders.get(),
                    leechers: h.leechers.get(),
                }
            }
            _ => {
                // Anything else (an error, a malformed or mismatched reply): as a failure.
                s.in_flight = Some(pending);
                self.handle_failure(now, i);
                Learned::default()
            }
        }
    }

    /// Tracker `i` did not answer (the transport gave up on the request).
    pub fn handle_failure(&mut self, now: Time, i: usize) {
        let stopping = self.stopping;
        let Some(s) = self.slots.get_mut(i) else {
            return;
        };
        if s.in_flight.take().is_none() {
            return;
        }
        s.failures += 1;
        s.id = None;
        if stopping {
            // One attempt on the way out; do not hold the exit for a dead tracker.
            s.told = Told::Stopped;
            return;
        }
        s.next = now + s.backoff;
        s.backoff = (s.backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::{Config, Outcome, Tracker};
    use st_proto::packet::{self, Header, Packet, PacketType};

    /// Carries a client's payload to a real tracker core as a transport REQUEST and returns the
    /// RESPONSE payload, the way the endpoint would.
    fn exchange(t: &mut Tracker, now: Time, from: SocketAddr, o: &Outgoing) -> Option<Vec<u8>> {
        let mut d = [0u8; 1500];
        let hdr = Header {
            ptype: PacketType::Request,
            dcid: 0,
            scid: 5,
            pn: 1,
        };
        let n = packet::emit(
            &Packet::Request {
                hdr,
                payload: &o.payload,
            },
            &mut d,
        )
        .unwrap();
        let mut out = [0u8; 1500];
        match t.handle(now, from, &d[..n], &mut out) {
            Outcome::Reply(m) => match packet::parse(&out[..m]).unwrap() {
                Packet::Response { payload, .. } => Some(payload.to_vec()),
                other => panic!("{other:?}"),
            },
            Outcome::Drop => None,
        }
    }

    fn run(
        c: &mut TrackerClient,
        t: &mut Tracker,
        now: Time,
        me: SocketAddr,
        p: Progress,
    ) -> Vec<Learned> {
        let mut out = Vec::new();
        while let Some(o) = c.poll_request(now, p) {
            match exchange(t, now, me, &o) {
                Some(r) => out.push(c.handle_response(now, o.tracker, &r)),
                None => c.handle_failure(now, o.tracker),
            }
        }
        out
    }

    const T0: Time = Time::from_micros(10_000_000);

    #[test]
    fn pads_its_announce_so_numwant_peers_fit_3x_the_request() {
        // Spec `tracker.md` §3.2: over IPv6, 50 peers of 18 bytes need a padded announce; the
        // tracker answers within 3× the request and the client learns all 50.
        let tr: SocketAddr = "[fd00::1]:6969".parse().unwrap();
        let mut t = Tracker::new(Config::default(), 1);
        let leech = Progress {
            left: 100,
            ..Progress::default()
        };
        for i in 0..80u16 {
            let me = SocketAddr::new(format!("fd00::{:x}", 0x100 + i).parse().unwrap(), 7000);
            let mut c = TrackerClient::new(&[tr], [9; 32], [1; 16], 7000, T0);
            run(&mut c, &mut t, T0, me, leech);
        }
        let me: SocketAddr = "[fd00::2]:7000".parse().unwrap();
        let mut c = TrackerClient::new(&[tr], [9; 32], [2; 16], 7000, T0);
        let connect = c.poll_request(T0, leech).unwrap();
        let r = exchange(&mut t, T0, me, &connect).unwrap();
        c.handle_response(T0, 0, &r);
        let announce = c.poll_request(T0, leech).unwrap();
        assert_eq!(announce.payload.len(), 286);
        let r = exchange(&mut t, T0, me, &announce).unwrap();
        assert!(32 + r.len() <= 3 * (32 + announce.payload.len()));
        assert_eq!(c.handle_response(T0, 0, &r).peers.len(), 50);
        // Over IPv4 the fixed 88 bytes suffice.
        let tr4: SocketAddr = "10.0.0.1:6969".parse().unwrap();
        let mut c = TrackerClient::new(&[tr4], [9; 32], [2; 16], 7000, T0);
        c.share_id(tr4, 1, T0);
        assert_eq!(c.poll_request(T0, leech).unwrap().payload.len(), 88);
    }

    #[test]
    fn connects_announces_and_learns_peers() {
        let tr: SocketAddr = "10.0.0.1:6969".parse().unwrap();
        let mut t = Tracker::new(Config::default(), 1);
        let (a, b): (SocketAddr, SocketAddr) = (
            "10.0.0.2:7000".parse().unwrap(),
            "10.0.0.3:7001".parse().unwrap(),
        );
        let mut ca = TrackerClient::new(&[tr], [9; 32], [1; 16], 7000, T0);
        let mut cb = TrackerClient::new(&[tr], [9; 32], [2; 16], 7001, T0);
        let seed = Progress {
            left: 0,
            ..Progress::default()
        };
        let leech = Progress {
            left: 100,
            ..Progress::default()
        };
        assert!(
            run(&mut ca, &mut t, T0, a, seed)
                .last()
                .unwrap()
                .peers
                .is_empty()
        );
        let learned = run(&mut cb, &mut t, T0, b, leech);
        let last = learned.last().unwrap();
        assert_eq!(last.peers, vec![a]);
        assert_eq!((last.seeders, last.leechers), (1, 1));
        // Nothing more until the interval (300 s) has passed; then a reconnect (the id is
        // older than 50 s) and a periodic announce.
        assert!(
            ca.poll_request(T0 + Duration::from_secs(299), seed)
                .is_none()
        );
        assert_eq!(ca.poll_timeout(), Some(T0 + Duration::from_secs(300)));
        let later = T0 + Duration::from_secs(300);
        let learned = run(&mut ca, &mut t, later, a, seed);
        assert_eq!(learned.len(), 2, "reconnect, then announce");
        assert_eq!(learned[1].peers, vec![b]);
    }

    #[test]
    fn completed_is_sent_once_and_stopped_on_exit() {
        let tr: SocketAddr = "10.0.0.1:6969".parse().unwrap();
        let me: SocketAddr = "10.0.0.2:7000".parse().unwrap();
        let mut t = Tracker::new(Config::default(), 2);
        let mut c = TrackerClient::new(&[tr], [4; 32], [1; 16], 7000, T0);
        run(
            &mut c,
            &mut t,
            T0,
            me,
            Progress {
                left: 10,
                ..Progress::default()
            },
        );
        let h = [4u8; 20];
        assert_eq!(t.swarm_figures(&h), Some((0, 1, 0)));
        let t1 = T0 + Duration::from_secs(5);
        c.set_complete(t1);
        run(&mut c, &mut t, t1, me, Progress::default());
        assert_eq!(t.swarm_figures(&h), Some((1, 0, 1)), "completed counted");
        c.set_complete(t1);
        assert!(
            c.poll_request(t1, Progress::default()).is_none(),
            "told once"
        );
        let t2 = t1 + Duration::from_secs(1);
        c.stop(t2);
        assert!(!c.stopped());
        run(&mut c, &mut t, t2, me, Progress::default());
        assert!(c.stopped());
        assert_eq!(t.swarm_figures(&h), None, "the tracker forgot us at once");
    }

    #[test]
    fn a_stop_while_an_announce_is_out_sends_stopped_as_soon_as_it_is_answered() {
        let tr: SocketAddr = "10.0.0.1:6969".parse().unwrap();
        let me: SocketAddr = "10.0.0.2:7000".parse().unwrap();
        let mut t = Tracker::new(Config::default(), 3);
        let mut c = TrackerClient::new(&[tr], [4; 32], [1; 16], 7000, T0);
        let p = Progress {
            left: 10,
            ..Progress::default()
        };
        run(&mut c, &mut t, T0, me, p);
        let t1 = T0 + Duration::from_secs(5);
        c.set_complete(t1);
        let completed = c.poll_request(t1, Progress::default()).expect("completed");
        // The process decides to leave before the tracker answered `completed`.
        c.stop(t1);
        let r = exchange(&mut t, t1, me, &completed).expect("answered");
        c.handle_response(t1, completed.tracker, &r);
        let stopped = c.poll_request(t1, Progress::default());
        assert!(
            stopped.is_some(),
            "stopped is due at once, not an interval later"
        );
        let r = exchange(&mut t, t1, me, &stopped.unwrap()).expect("answered");
        c.handle_response(t1, 0, &r);
        assert!(c.stopped());
        assert_eq!(t.swarm_figures(&[4u8; 20]), None, "the tracker forgot us");
    }

    #[test]
    fn backs_off_from_a_silent_tracker() {
        let dead: SocketAddr = "10.0.0.9:6969".parse().unwrap();
        let mut c = TrackerClient::new(&[dead], [4; 32], [1; 16], 7000, T0);
        let mut now = T0;
        let mut gaps = Vec::new();
        for _ in 0..5 {
            let o = c.poll_request(now, Progress::default()).expect("due");
            c.handle_failure(now, o.tracker);
            let next = c.poll_timeout().unwrap();
            gaps.push(next.saturating_since(now).as_secs());
            now = next;
        }
        assert_eq!(gaps, vec![15, 30, 60, 120, 240]);
        assert_eq!(c.failures(), vec![5]);
        // On the way out a tracker never reached is not waited for, nor woken up for.
        c.stop(now);
        assert!(c.stopped());
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn garbage_responses_count_as_failures() {
        let tr: SocketAddr = "10.0.0.1:6969".parse().unwrap();
        let mut c = TrackerClient::new(&[tr], [4; 32], [1; 16], 7000, T0);
        let o = c.poll_request(T0, Progress::default()).unwrap();
        let learned = c.handle_response(T0, o.tracker, &[0x82, 9, 9]);
        assert_eq!(learned, Learned::default());
        assert_eq!(c.failures(), vec![1]);
        // A response nobody asked for is ignored.
        assert_eq!(c.handle_response(T0, 0, &[0x81; 16]), Learned::default());
        assert_eq!(c.handle_response(T0, 7, &[0x81; 16]), Learned::default());
    }

    #[test]
    fn a_tracker_never_reached_does_not_hold_the_exit_even_with_a_request_out() {
        let dead: SocketAddr = "10.0.0.9:6969".parse().unwrap();
        let mut c = TrackerClient::new(&[dead], [4; 32], [1; 16], 7000, T0);
        let _connect = c.poll_request(T0, Progress::default()).expect("due");
        c.stop(T0 + Duration::from_millis(10));
        assert!(c.stopped(), "nothing was ever told: nothing to take back");
    }

    #[test]
    fn a_shared_connection_id_saves_the_connect() {
        let tr: SocketAddr = "10.0.0.1:6969".parse().unwrap();
        let me: SocketAddr = "10.0.0.2:7000".parse().unwrap();
        let mut t = Tracker::new(Config::default(), 3);
        let mut a = TrackerClient::new(&[tr], [4; 32], [1; 16], 7000, T0);
        let mut b = TrackerClient::new(&[tr], [5; 32], [1; 16], 7000, T0);
        let connect = a.poll_request(T0, Progress::default()).unwrap();
        let r = exchange(&mut t, T0, me, &connect).expect("answered");
        a.handle_response(T0, 0, &r);
        let ids = a.take_new_ids();
        assert_eq!(ids.len(), 1);
        for (addr, id, at) in ids {
            b.share_id(addr, id, at);
        }
        // b's first request is an announce the tracker accepts, not a connect.
        let first = b.poll_request(T0, Progress::default()).unwrap();
        let r = exchange(&mut t, T0, me, &first).expect("answered");
        let learned = b.handle_response(T0, 0, &r);
        assert_eq!(learned.peers, Vec::<SocketAddr>::new());
        assert!(b.take_new_ids().is_empty(), "b never connected");
        assert_eq!(
            t.swarm_figures(&[5u8; 20]).map(|f| f.0 + f.1),
            Some(1),
            "b is in its swarm"
        );
    }
}
