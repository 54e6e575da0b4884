#!/usr/bin/python3
"""libtorrent-only check of the DHT interop harness (no Rust involved). Needs root.

  /usr/bin/python3 cli/tests/dht/selftest.py [-v]

Builds a private namespace network with netns.sh (prefix stdht-<pid>-), then:
  1. R (router role, 10.77.1.2) starts alone; A (10.77.2.2) bootstraps from R and
     announces IH; S (10.77.3.2) bootstraps only from R and searches IH: S must print
     A's address as a peer.
  2. krpc_probe.py on 10.77.4.2 sends hand-made ping / get_peers / find_node /
     announce_peer / malformed queries to R and checks the replies.
  3. a probe on 10.77.5.2 sends only "ro":1 queries: R answers but must not put it in
     its routing table.
  4. a flood of pings from 10.77.4.2 makes R ban that IP ("BANNING PEER"), after which
     R no longer answers it.
Everything is torn down at the end (also on failure / Ctrl-C).
Prints timings, all ban/warn lines, and a closing "N passed, N failed" line.
"""

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
NETNS = os.path.join(HERE, "netns.sh")
PREFIX = "stdht-%d-" % os.getpid()
IH = "0123456789abcdef0123456789abcdef01234567"
VERBOSE = "-v" in sys.argv

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print("%s %s%s" % ("PASS" if ok else "FAIL", name, (": " + detail) if detail else ""),
          flush=True)


class LtNode:
    """lt_node.py running in host namespace hK; its JSON lines collected in self.lines."""

    def __init__(self, host, *args):
        self.name = host
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(
            ["ip", "netns", "exec", PREFIX + host, PY, os.path.join(HERE, "lt_node.py")]
            + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.set_blocking(self.p.stdout.fileno(), False)
        self.lines = []   # (seconds since start, dict)
        self.buf = ""

    def poll(self):
        try:
            chunk = self.p.stdout.read()
        except (BlockingIOError, TypeError):
            chunk = None
        if chunk:
            self.buf += chunk
            while "\n" in self.buf:
                line, self.buf = self.buf.split("\n", 1)
                ev = json.loads(line)
                self.lines.append((time.monotonic() - self.t0, ev))
                if VERBOSE and ev.get("event") not in ("nodes",):
                    print("   [%s +%.3fs] %s" % (self.name, self.lines[-1][0], line))

    def wait_for(self, pred, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.poll()
            for t, ev in self.lines:
                if pred(ev):
                    return t, ev
            time.sleep(0.02)
        return None, None

    def events(self, *kinds):
        self.poll()
        return [ev for _, ev in self.lines if ev.get("event") in kinds]

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.poll()
        rest = self.p.stdout.read() if self.p.stdout else ""
        if rest:
            self.buf += rest
            self.poll()


def probe(host, bind, *steps, extra=()):
    r = subprocess.run(["ip", "netns", "exec", PREFIX + host, PY,
                        os.path.join(HERE, "krpc_probe.py"), "--bind", bind,
                        "--target", "10.77.1.2:6881", "--info-hash", IH] + list(extra)
                       + list(steps), capture_output=True, text=True, timeout=120)
    out = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
    if VERBOSE:
        for o in out:
            print("   [probe %s] %s" % (host, json.dumps(o)[:400]))
    return {o["step"]: o for o in out if o["step"] != "incoming"}, \
        [o for o in out if o["step"] == "incoming"]


def first_reply(step):
    reps = step.get("replies") or []
    return reps[0] if reps else None


def main():
    up = subprocess.run([NETNS, "up", PREFIX, "5"], capture_output=True, text=True)
    if up.returncode != 0:
        print(up.stderr)
        check("netns up", False)
        return
    check("netns up", True, up.stdout.strip().replace("\n", "; "))
    nodes = []
    try:
        # -- 1. R / A / S ------------------------------------------------------------
        R = LtNode("h1", "--bind", "10.77.1.2:6881", "--stats-interval", "1")
        nodes.append(R)
        t, ev = R.wait_for(lambda e: e["event"] == "ready", 15)
        check("R ready", ev is not None, "%.3fs" % (t or -1))
        A = LtNode("h2", "--bind", "10.77.2.2:6881", "--bootstrap", "10.77.1.2:6881",
                   "--announce", IH)
        nodes.append(A)
        t, ev = A.wait_for(lambda e: e["event"] == "ready", 15)
        check("A ready", ev is not None, "%.3fs" % (t or -1))
        t, ev = R.wait_for(lambda e: e["event"] == "announce_in"
                           and e["addr"] == "10.77.2.2:6881", 30)
        check("R stored A's announce", ev is not None,
              "%.3fs after A started" % (t - A.t0 + R.t0) if t is not None else "")
        S = LtNode("h3", "--bind", "10.77.3.2:6881", "--bootstrap", "10.77.1.2:6881",
                   "--search", IH, "--search-interval", "1")
        nodes.append(S)
        t_ready, _ = S.wait_for(lambda e: e["event"] == "ready", 15)
        t, ev = S.wait_for(lambda e: e["event"] == "peer" and e["addr"] == "10.77.2.2:6881", 60)
        check("S found A as peer", ev is not None,
              "%.3fs after S started (ready at %.3fs)" % (t, t_ready or -1)
              if t is not None else "")

        # -- 2. hand-made KRPC -----------------------------------------------------------
        st, incoming = probe("h4", "10.77.4.2:7000", "ping", "get_peers", "find_node",
                             "announce", "bad_no_id", "unknown_q", "listen:3")
        rp = first_reply(st["ping"])
        m = rp and rp["msg"]
        check("ping reply", bool(m) and m.get("y") == "r" and set(m) == {"ip", "r", "t", "v", "y"}
              and set(m["r"]) == {"id", "p"} and m["r"]["p"] == 7000
              and m["ip"] == "hex:0a4d04021b58" and m["v"] == "hex:4c540208",
              rp and rp["hex"])
        rp = first_reply(st["get_peers"])
        m = rp and rp["msg"]
        check("get_peers reply has A in values + token", bool(m) and
              "hex:0a4d02021ae1" in m["r"].get("values", []) and "token" in m["r"],
              rp and rp["hex"])
        rp = first_reply(st["find_node"])
        m = rp and rp["msg"]
        check("find_node reply has nodes", bool(m) and "nodes" in m.get("r", {}), rp and rp["hex"])
        rp = first_reply(st["announce"])
        m = rp and rp["msg"]
        check("announce_peer accepted", bool(m) and m.get("y") == "r", rp and rp["hex"])
        t, ev = R.wait_for(lambda e: e["event"] == "announce_in"
                           and e["addr"] == "10.77.4.2:7001", 5)
        check("R reports the probe's announce", ev is not None)
        rp = first_reply(st["bad_no_id"])
        m = rp and rp["msg"]
        check("missing id -> error 203", bool(m) and m.get("y") == "e"
              and m.get("e", [None])[0] == 203, rp and rp["hex"])
        rp = first_reply(st["unknown_q"])
        m = rp and rp["msg"]
        check("unknown query -> error 203", bool(m) and m.get("y") == "e", rp and rp["hex"])
        qs = sorted(set("%s<-%s" % (i["msg"].get("q"), i["from"]) for i in incoming))
        print("     queries R/A/S sent to the probe: %s" % (", ".join(qs) or "none"))

        # -- 3. read-only node -------------------------------------------------------------
        st, incoming = probe("h5", "10.77.5.2:7000", "ping", "get_peers", "find_node",
                             "listen:4", extra=["--ro"])
        ok = all(first_reply(st[s]) and first_reply(st[s])["msg"].get("y") == "r"
                 for s in ("ping", "get_peers", "find_node"))
        check("ro:1 queries are answered", ok)
        in_table = any(n["addr"].startswith("10.77.5.2:")
                       for ev in R.events("table") for n in ev["nodes"])
        check("ro:1 node not added to R's table", not in_table)
        check("R did not query the ro:1 node",
              not any(i["from"].startswith("10.77.1.2:") for i in incoming))

        # -- 4. DoS blocker -----------------------------------------------------------------
        st, _ = probe("h4", "10.77.4.2:7002", "flood:120", "ping")
        t, ev = R.wait_for(lambda e: e["event"] == "ban", 5)
        check("flood -> R bans the IP", ev is not None, ev and ev["text"])
        check("banned IP gets no reply", not st["ping"]["replies"],
              "flood got %s/%s replies" % (st["flood:120"]["replies"], st["flood:120"]["sent"]))
    finally:
        for n in nodes:
            n.stop()
        down = subprocess.run([NETNS, "down", PREFIX], capture_output=True, text=True)
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        check("netns down", down.returncode == 0 and PREFIX not in left, down.stderr.strip())
        for n in nodes:
            seen = {}
            for ev in n.events("ban", "warn"):
                key = "%s: %s" % (ev["event"], ev["text"])
                seen[key] = seen.get(key, 0) + 1
            for key, cnt in seen.items():
                print("     %s %s%s" % (n.name, key, " (x%d)" % cnt if cnt > 1 else ""))
            st = n.events("nodes")
            if st:
                print("     %s last stats: %s" % (n.name, json.dumps(st[-1])))


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("selftest.py: must run as root")
    try:
        main()
    except KeyboardInterrupt:
        results.append(False)
    passed = sum(results)
    failed = len(results) - passed
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)
