#!/usr/bin/python3
"""Hand-made KRPC (BEP 5) queries against a DHT node, printing the exact bytes.

  ip netns exec NS /usr/bin/python3 krpc_probe.py --bind 10.77.3.2:7000 \
      --target 10.77.1.2:6881 [--info-hash HEX40] [--id HEX40] STEP...

STEP is one of:
  ping  ping_ro  find_node  find_node_want  get_peers  get_peers_want
  announce  announce_implied  bad_no_id  bad_short_id  bad_no_t  unknown_q
  listen:SECONDS     (only receive; answers pings/find_node/get_peers from the target)
  flood:N            (send N pings back to back, count the replies)
Each step prints one JSON line: {"step", "sent_hex", "replies":[{"hex","msg"}...],
"ms"} where "msg" is the decoded reply (byte strings shown as text when printable
ASCII, else as "hex:..."). Queries *from* the target that arrive meanwhile are
answered (so the target can verify us) and reported as {"step":"incoming",...}.
No dependency besides the standard library.
"""

import argparse
import json
import os
import socket
import sys
import time


# --- bencode ------------------------------------------------------------------
def benc(x):
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, (bytes, bytearray)):
        return b"%d:%s" % (len(x), bytes(x))
    if isinstance(x, list):
        return b"l" + b"".join(benc(i) for i in x) + b"e"
    if isinstance(x, dict):
        items = sorted(((k.encode() if isinstance(k, str) else k), v) for k, v in x.items())
        return b"d" + b"".join(benc(k) + benc(v) for k, v in items) + b"e"
    raise TypeError(type(x))


def bdec(b, i=0):
    c = b[i:i + 1]
    if c == b"i":
        j = b.index(b"e", i)
        return int(b[i + 1:j]), j + 1
    if c == b"l":
        i += 1
        out = []
        while b[i:i + 1] != b"e":
            v, i = bdec(b, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i += 1
        out = {}
        while b[i:i + 1] != b"e":
            k, i = bdec(b, i)
            v, i = bdec(b, i)
            out[k] = v
        return out, i + 1
    j = b.index(b":", i)
    n = int(b[i:j])
    return b[j + 1:j + 1 + n], j + 1 + n


def show(x):
    if isinstance(x, bytes):
        if all(32 <= c < 127 for c in x):
            return x.decode()
        return "hex:" + x.hex()
    if isinstance(x, list):
        return [show(i) for i in x]
    if isinstance(x, dict):
        return {show(k): show(v) for k, v in x.items()}
    return x


def out(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def endpoint(s):
    h, _, p = s.rpartition(":")
    return h, int(p)


class Probe:
    def __init__(self, a):
        self.a = a
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind(a.bind)
        self.target = a.target
        self.id = bytes.fromhex(a.id) if a.id else os.urandom(20)
        self.ih = bytes.fromhex(a.info_hash) if a.info_hash else os.urandom(20)
        self.tid = 0
        self.token = None

    def next_t(self):
        self.tid += 1
        return b"t" + bytes([self.tid & 0xff])

    def answer(self, msg, src):
        """Reply to a query from anyone, like a well-behaved node with an empty table."""
        t = msg.get(b"t", b"")
        q = msg.get(b"q", b"")
        r = {b"id": self.id}
        if q == b"get_peers":
            r[b"token"] = b"tokn"
            r[b"nodes"] = b""
        elif q == b"find_node":
            r[b"nodes"] = b""
        ip = socket.inet_aton(src[0]) + src[1].to_bytes(2, "big")
        reply = {b"t": t, b"y": b"r", b"r": r, b"ip": ip}
        raw = benc(reply)
        self.s.sendto(raw, src)
        return raw

    def recv_for(self, seconds, want_t=None, max_replies=1):
        """Collect replies (to want_t) for up to `seconds`; answer incoming queries."""
        replies = []
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            self.s.settimeout(left)
            try:
                data, src = self.s.recvfrom(65536)
            except socket.timeout:
                break
            try:
                msg, _ = bdec(data)
            except Exception:
                msg = None
            if isinstance(msg, dict) and msg.get(b"y") == b"q":
                raw = self.answer(msg, src)
                out({"step": "incoming", "from": "%s:%d" % src, "hex": data.hex(),
                     "msg": show(msg), "answered_hex": raw.hex()})
                continue
            replies.append({"from": "%s:%d" % src, "hex": data.hex(),
                            "msg": show(msg) if msg is not None else None})
            if isinstance(msg, dict) and isinstance(msg.get(b"r"), dict) \
                    and b"token" in msg[b"r"]:
                self.token = msg[b"r"][b"token"]
            if want_t is not None and isinstance(msg, dict) and msg.get(b"t") == want_t \
                    and len(replies) >= max_replies:
                break
        return replies

    def query(self, step, raw, t, wait=2.0):
        t0 = time.monotonic()
        self.s.sendto(raw, self.target)
        replies = self.recv_for(wait, want_t=t)
        out({"step": step, "sent_hex": raw.hex(), "sent": show(bdec(raw)[0]),
             "replies": replies, "ms": round((time.monotonic() - t0) * 1000, 1)})

    def krpc(self, q, args, extra=None):
        t = self.next_t()
        m = {b"t": t, b"y": b"q", b"q": q.encode(), b"a": args}
        if extra:
            m.update(extra)
        if self.a.ro:
            m[b"ro"] = 1
        return benc(m), t

    def run_step(self, step):
        ident = {b"id": self.id}
        if step == "ping":
            raw, t = self.krpc("ping", dict(ident))
        elif step == "ping_ro":
            raw, t = self.krpc("ping", dict(ident), {b"ro": 1})
        elif step == "find_node":
            raw, t = self.krpc("find_node", dict(ident, target=os.urandom(20)))
        elif step == "find_node_want":
            raw, t = self.krpc("find_node", dict(ident, target=os.urandom(20),
                                                 want=[b"n4", b"n6"]))
        elif step == "get_peers":
            raw, t = self.krpc("get_peers", dict(ident, info_hash=self.ih))
        elif step == "get_peers_want":
            raw, t = self.krpc("get_peers", dict(ident, info_hash=self.ih, want=[b"n4", b"n6"]))
        elif step in ("announce", "announce_implied"):
            if self.token is None:
                self.run_step("get_peers")
            args = dict(ident, info_hash=self.ih, port=self.a.bind[1] + 1,
                        token=self.token or b"none")
            if step == "announce_implied":
                args[b"implied_port"] = 1
            raw, t = self.krpc("announce_peer", args)
        elif step == "bad_no_id":
            raw, t = self.krpc("ping", {})
        elif step == "bad_short_id":
            raw, t = self.krpc("ping", {b"id": b"short"})
        elif step == "bad_no_t":
            raw = benc({b"y": b"q", b"q": b"ping", b"a": ident})
            self.s.sendto(raw, self.target)
            reps = self.recv_for(1.0)
            out({"step": step, "sent_hex": raw.hex(), "replies": reps})
            return
            t = None
        elif step == "unknown_q":
            raw, t = self.krpc("frobnicate", dict(ident))
        elif step.startswith("listen:"):
            secs = float(step.split(":", 1)[1])
            reps = self.recv_for(secs)
            out({"step": step, "replies": reps})
            return
        elif step.startswith("flood:"):
            n = int(step.split(":", 1)[1])
            t0 = time.monotonic()
            ts = []
            for _ in range(n):
                raw, t = self.krpc("ping", dict(ident))
                ts.append(t)
                self.s.sendto(raw, self.target)
                time.sleep(0.01)
            reps = self.recv_for(2.0)
            got = sum(1 for r in reps if isinstance(r["msg"], dict) and r["msg"].get("y") == "r")
            out({"step": step, "sent": n, "replies": got,
                 "ms": round((time.monotonic() - t0) * 1000, 1)})
            return
        else:
            raise SystemExit("unknown step %r" % step)
        self.query(step, raw, t)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bind", type=endpoint, required=True)
    p.add_argument("--target", type=endpoint, required=True)
    p.add_argument("--id", help="our node id (hex40); random by default")
    p.add_argument("--info-hash", help="info hash for get_peers/announce (hex40)")
    p.add_argument("--ro", action="store_true", help='add "ro":1 (BEP 43 read-only) to every query')
    p.add_argument("steps", nargs="+")
    a = p.parse_args()
    pr = Probe(a)
    out({"step": "start", "id": pr.id.hex(), "info_hash": pr.ih.hex()})
    for st in a.steps:
        pr.run_step(st)


if __name__ == "__main__":
    main()
