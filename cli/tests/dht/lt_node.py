#!/usr/bin/python3
"""One libtorrent session acting as a mainline DHT (BEP 5) node, for interop tests.

Run it with Debian's /usr/bin/python3 (python3-libtorrent installs the module
only for the system interpreter; a pyenv/venv "python3" on PATH will not see it),
normally inside a network namespace made by netns.sh:

  ip netns exec NS /usr/bin/python3 lt_node.py --bind 10.77.1.2:6881 \
      [--bootstrap IP:PORT]... [--router IP:PORT]... \
      [--announce HEX40]... [--search HEX40]... [--duration SECONDS]

Output: one JSON object per line on stdout, flushed after each line:
  {"event":"ready","addr":"ip:port","node_id":HEX40}  listening, DHT running
  {"event":"node_id","id":HEX40}         our DHT node id changed (BEP 42 re-derivation)
  {"event":"nodes","count":N,"replacements":N,"msgs_in":N,"msgs_out":N,"dropped_in":N}
                                          every --stats-interval seconds
  {"event":"table","nodes":[{"id":HEX40,"addr":"ip:port"},...]}  live routing table,
                                          printed when it changes
  {"event":"search","info_hash":HEX40,"num_peers":N}   one get_peers traversal ended
  {"event":"peer","info_hash":HEX40,"addr":"ip:port"}  new peer from a --search
  {"event":"announced","info_hash":HEX40,"num_peers":N} our announce traversal ended
  {"event":"announce_in","info_hash":HEX40,"addr":"ip:port"}  someone announced to us
  {"event":"ban","text":...,"alert":...}  libtorrent banned/blocked a node
  {"event":"warn","text":...,"alert":...} a node was ignored/evicted/dropped, an error
                                          reply, invalid message, dropped packets...
  {"event":"log","text":...} / {"event":"pkt","dir":"in"|"out","addr":...,"hex":...}
                                          only with --log-dht / --log-pkt
  {"event":"exit","reason":...}           last line

Notes (libtorrent 2.0.8, see README.md in this folder):
  * --bootstrap uses session.add_dht_node(): the node is pinged and, when it answers,
    enters our routing table like any node. --router uses the dht_bootstrap_nodes
    setting: libtorrent treats those as *routers*, uses them only to start lookups
    when its table is empty and never puts them in its routing table.
  * The python binding of session.dht_announce() in 2.0.8 cannot be called (no
    converter for its flags argument), so --announce adds a metadata-less torrent
    (info hash only, DHT only) and calls torrent_handle.force_dht_announce()
    every --announce-interval seconds. libtorrent announces with port = its listen
    port and implied_port=1 (uTP enabled), i.e. the receiver should use the UDP
    source port, which is the same port here.
"""

import argparse
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time

import libtorrent as lt


def emit(obj):
    try:
        sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # reader went away: nothing left to report to
        os._exit(0)


def endpoint(s):
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError("expected IP:PORT, got %r" % s)
    return host.strip("[]"), int(port)


def infohash(s):
    if not re.fullmatch(r"[0-9a-fA-F]{40}", s):
        raise argparse.ArgumentTypeError("expected 40 hex digits, got %r" % s)
    return s.lower()


def fmt_ep(ep):
    ip, port = ep
    return ("[%s]:%d" if ":" in ip else "%s:%d") % (ip, port)


def parse_args(argv):
    p = argparse.ArgumentParser(description="libtorrent DHT-only node (JSON lines on stdout)")
    p.add_argument("--bind", type=endpoint, required=True, help="IP:PORT for UDP (DHT) and TCP")
    p.add_argument("--bootstrap", type=endpoint, action="append", default=[],
                   help="node to add with add_dht_node (repeatable)")
    p.add_argument("--router", type=endpoint, action="append", default=[],
                   help="router for dht_bootstrap_nodes (repeatable; never enters the table)")
    p.add_argument("--announce", type=infohash, action="append", default=[],
                   help="info hash to announce with our port (repeatable)")
    p.add_argument("--search", type=infohash, action="append", default=[],
                   help="info hash to look up repeatedly, printing peers (repeatable)")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to run (0: until SIGTERM)")
    p.add_argument("--search-interval", type=float, default=5.0)
    p.add_argument("--announce-interval", type=float, default=10.0)
    p.add_argument("--stats-interval", type=float, default=2.0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any libtorrent setting (repeatable)")
    p.add_argument("--log-dht", action="store_true", help="print every DHT log line")
    p.add_argument("--log-pkt", action="store_true", help="print every DHT packet (hex)")
    return p.parse_args(argv)


# Which DHT log lines are worth surfacing. libtorrent 2.0.8 texts (src/kademlia):
#   dht_tracker/dos_blocker: "BANNING PEER [ ip: X time: N ms count: N ]" -- 50 packets
#       (10 * dht_block_ratelimit) from one IP inside a 10 s window; everything from that
#       IP (any port, queries *and* replies) is then dropped for dht_block_timeout (300 s)
#   routing_table: "ignoring node (duplicate IP): ID IP"  (same IP, other port/ID)
#                  "ignoring node: ID IP existing node: ID IP" (same /24 in one bucket,
#                  dht_restrict_routing_ips), "evicting node (changed ID): ..."
#   traversal:     "[n] traversal DUPLICATE node. id: .. addr: .." (same /24 twice in one
#                  lookup, dht_restrict_search_ips), "WARNING node returned a list which
#                  included a node with id 0", "invalid id in response", "missing response dict"
#   rpc_manager:   "reply with unknown transaction id size: N from EP" (t not echoed),
#                  "[n] reply with error from EP: (203) text"
#   node:          "NODE FAILED id: .. ip: .. fails: N" (a node did not answer us),
#                  "INCOMING ERROR: (203) ...", "token of incorrect length: N"
BAN_RE = re.compile(r"\bBANN|\bblock(ed|ing)\b", re.I)
WARN_RE = re.compile(
    r"ignoring|duplicate|evict|drop|rate.?limit|invalid|INCOMING ERROR|reply with error"
    r"|malformed|incorrect|unknown transaction|NODE FAILED|WARNING|missing|too many|quota"
    r"|refus|filtered|unreachable|failed to|spoof", re.I)


def build_settings(a):
    ip, port = a.bind
    listen = ("[%s]:%d" if ":" in ip else "%s:%d") % (ip, port)
    s = {
        "listen_interfaces": listen,
        "enable_dht": True,
        # the default is dht.libtorrent.org:25401: a DNS lookup + packets to the internet
        "dht_bootstrap_nodes": ",".join(fmt_ep(r) for r in a.router),
        "enable_lsd": False,          # LSD multicasts on the LAN
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_ip_notifier": False,
        # internet-like anti-sybil rules stay ON (these are the defaults anyway):
        "dht_restrict_routing_ips": True,   # one node per /24 per bucket, no dup IPs
        "dht_restrict_search_ips": True,    # one node per /24 per lookup
        # only drops packets from 3/8, 6/8, 7/8, 9/8, 11/8, ... (DoD class-A nets);
        # 10/8 is NOT in that list, so the default (True) is harmless here.
        "dht_ignore_dark_internet": True,
        "alert_mask": int(lt.alert_category.dht | lt.alert_category.dht_log
                          | lt.alert_category.dht_operation | lt.alert_category.error
                          | lt.alert_category.status | lt.alert_category.ip_block
                          | lt.alert_category.stats),
        "alert_queue_size": 100000,
        "peer_fingerprint": "-LT2080-",
    }
    defaults = lt.default_settings()
    for kv in a.set:
        k, _, v = kv.partition("=")
        if k not in defaults:
            sys.exit("lt_node.py: unknown setting %r" % k)
        d = defaults[k]
        if isinstance(d, bool):
            s[k] = v.strip().lower() in ("1", "true", "yes", "on")
        elif isinstance(d, int):
            s[k] = int(v, 0)
        else:
            s[k] = v
    return s


class Node:
    def __init__(self, a):
        self.a = a
        self.stop_reason = None
        self.tmp = tempfile.mkdtemp(prefix="lt_node-")
        self.ses = lt.session(build_settings(a))
        metrics = {m.name: m.value_index for m in lt.session_stats_metrics()}
        self.idx = {k: metrics["dht." + k] for k in (
            "dht_nodes", "dht_node_cache", "dht_messages_in", "dht_messages_out",
            "dht_messages_in_dropped", "dht_messages_out_dropped")}
        self.ready = False
        self.udp_up = False
        self.node_id = None
        self.table = None
        self.dropped = 0
        self.peers = {h: set() for h in a.search}
        self.handles = []
        for ep in a.bootstrap:
            self.ses.add_dht_node(ep)

    # --- helpers -------------------------------------------------------------
    def current_node_id(self):
        try:
            st = self.ses.save_state(lt.save_state_flags_t.save_dht_state)
        except Exception:
            return None
        dht = st.get(b"dht state") or {}
        nids = dht.get(b"node-id") or []
        if isinstance(nids, bytes):
            nids = [nids]
        for n in nids:
            if len(n) >= 20:
                return n[:20].hex()
        return None

    def add_announce_torrents(self):
        for h in self.a.announce:
            atp = lt.add_torrent_params()
            atp.info_hashes = lt.info_hash_t(lt.sha1_hash(bytes.fromhex(h)))
            atp.save_path = self.tmp
            atp.name = "lt_node-" + h[:8]
            atp.flags = (lt.torrent_flags.upload_mode | lt.torrent_flags.disable_lsd
                         | lt.torrent_flags.disable_pex)
            self.handles.append(self.ses.add_torrent(atp))

    # --- alerts ---------------------------------------------------------------
    def on_alert(self, al):
        t = type(al).__name__
        if t == "listen_succeeded_alert":
            if al.socket_type in (lt.socket_type_t.udp, lt.socket_type_t.utp) \
                    or "uTP" in al.message() or "UDP" in al.message():
                self.udp_up = True
        elif t == "listen_failed_alert":
            emit({"event": "warn", "alert": t, "text": al.message()})
            self.stop_reason = "listen_failed"
        elif t == "dht_get_peers_reply_alert":
            ih = str(al.info_hash)
            peers = al.peers() if callable(al.peers) else al.peers
            emit({"event": "search", "info_hash": ih, "num_peers": len(peers)})
            seen = self.peers.setdefault(ih, set())
            for p in peers:
                addr = fmt_ep(p)
                if addr not in seen:
                    seen.add(addr)
                    emit({"event": "peer", "info_hash": ih, "addr": addr})
        elif t == "dht_reply_alert":
            ih = str(al.handle.info_hashes().v1) if al.handle.is_valid() else None
            emit({"event": "announced", "info_hash": ih, "num_peers": al.num_peers})
        elif t == "dht_announce_alert":
            emit({"event": "announce_in", "info_hash": str(al.info_hash),
                  "addr": fmt_ep((str(al.ip), al.port))})
        elif t == "dht_live_nodes_alert":
            raw = al.nodes() if callable(al.nodes) else al.nodes
            nodes = sorted((fmt_ep(tuple(n["endpoint"])), str(n["nid"])) for n in raw)
            if nodes != self.table:
                self.table = nodes
                emit({"event": "table", "nodes": [{"id": i, "addr": e} for e, i in nodes]})
        elif t == "session_stats_alert":
            v = al.values
            c = {k: v[self.idx[k]] if not isinstance(v, dict) else v.get("dht." + k, 0)
                 for k in self.idx}
            emit({"event": "nodes", "count": c["dht_nodes"],
                  "replacements": c["dht_node_cache"], "msgs_in": c["dht_messages_in"],
                  "msgs_out": c["dht_messages_out"],
                  "dropped_in": c["dht_messages_in_dropped"]})
            if c["dht_messages_in_dropped"] > self.dropped:
                emit({"event": "warn", "alert": t,
                      "text": "dht_messages_in_dropped +%d (bad bencoding, DoS-blocked IP, "
                              "dark-internet source or upload quota exhausted)"
                              % (c["dht_messages_in_dropped"] - self.dropped)})
                self.dropped = c["dht_messages_in_dropped"]
        elif t == "dht_log_alert":
            msg = al.log_message()
            if self.a.log_dht:
                emit({"event": "log", "text": msg})
            if BAN_RE.search(msg):
                emit({"event": "ban", "alert": t, "text": msg})
            elif WARN_RE.search(msg):
                emit({"event": "warn", "alert": t, "text": msg})
        elif t == "dht_pkt_alert":
            if self.a.log_pkt:
                m = al.message()  # "<== 10.77.1.2:6881 [...]" / "==> ..."
                direction = "in" if m.startswith("<==") else "out"
                parts = m.split()
                emit({"event": "pkt", "dir": direction,
                      "addr": parts[1] if len(parts) > 1 else None,
                      "hex": bytes(al.pkt_buf).hex()})
        elif t == "peer_blocked_alert":
            emit({"event": "ban", "alert": t, "text": al.message()})
        elif al.category() & lt.alert_category.error:
            emit({"event": "warn", "alert": t, "text": al.message()})

    # --- main loop ------------------------------------------------------------
    def run(self):
        start = time.monotonic()
        next_stats = next_search = next_announce = start
        announced_torrents = False
        while self.stop_reason is None:
            now = time.monotonic()
            if self.a.duration and now - start >= self.a.duration:
                self.stop_reason = "duration"
                break
            if not self.ready and self.udp_up and self.ses.is_dht_running():
                self.ready = True
                self.node_id = self.current_node_id()
                emit({"event": "ready", "addr": fmt_ep(self.a.bind), "node_id": self.node_id})
            if self.ready and not announced_torrents:
                self.add_announce_torrents()
                announced_torrents = True
                next_announce = now + self.a.announce_interval
            if self.ready and now >= next_stats:
                next_stats = now + self.a.stats_interval
                self.ses.post_session_stats()
                nid = self.current_node_id()
                if nid and nid != self.node_id:
                    self.node_id = nid
                    emit({"event": "node_id", "id": nid})
                if self.node_id:
                    self.ses.dht_live_nodes(lt.sha1_hash(bytes.fromhex(self.node_id)))
            if self.ready and self.a.search and now >= next_search:
                next_search = now + self.a.search_interval
                for h in self.a.search:
                    self.ses.dht_get_peers(lt.sha1_hash(bytes.fromhex(h)))
            if self.ready and self.handles and now >= next_announce:
                next_announce = now + self.a.announce_interval
                for th in self.handles:
                    th.force_dht_announce()
            self.ses.wait_for_alert(100)
            for al in self.ses.pop_alerts():
                self.on_alert(al)

    def close(self):
        emit({"event": "exit", "reason": self.stop_reason})
        try:
            self.ses.pause()
            del self.ses
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def main(argv):
    a = parse_args(argv)
    node = Node(a)

    def on_signal(signum, _frame):
        node.stop_reason = signal.Signals(signum).name

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        node.run()
    except BaseException as e:
        node.stop_reason = "error: %r" % (e,)
        raise
    finally:
        node.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
