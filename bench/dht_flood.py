#!/usr/bin/env python3
"""bench/dht_flood.py TARGET_IP PORT COUNT [SOURCES] -- a DHT query flood (bench/dht.sh).

Sends COUNT well-formed KRPC get_peers queries (random info hashes and node ids) to
TARGET_IP:PORT as fast as the socket takes them, from SOURCES local addresses in turn (each an
address of this host: 10.77.2.2, .10, .11, ...; default 1), then listens 2 s more. Prints one
JSON line: queries and bytes sent, replies and bytes received, seconds.
"""
import json, os, select, socket, sys, time

target, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
nsrc = int(sys.argv[4]) if len(sys.argv) > 4 else 1
base = "10.77.2."
srcs = [base + "2"] + [base + str(10 + i) for i in range(nsrc - 1)]
socks = []
for ip in srcs:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((ip, 0))
    s.setblocking(False)
    socks.append(s)
sent = qbytes = replies = rbytes = 0

def drain(timeout):
    global replies, rbytes
    r, _, _ = select.select(socks, [], [], timeout)
    for s in r:
        while True:
            try:
                d = s.recv(4096)
            except BlockingIOError:
                break
            replies += 1
            rbytes += len(d)

t0 = time.time()
for i in range(count):
    tid = (i & 0xffff).to_bytes(2, "big")
    m = (b"d1:ad2:id20:" + os.urandom(20) + b"9:info_hash20:" + os.urandom(20)
         + b"e1:q9:get_peers1:t2:" + tid + b"1:y1:qe")
    s = socks[i % len(socks)]
    while True:
        try:
            s.sendto(m, (target, port))
            break
        except BlockingIOError:
            drain(0.001)
    sent += 1
    qbytes += len(m)
    if i % 256 == 0:
        drain(0)
t1 = time.time()
end = time.time() + 2
while time.time() < end:
    drain(0.1)
print(json.dumps({"sent": sent, "query_bytes": qbytes, "replies": replies,
                  "reply_bytes": rbytes, "send_seconds": round(t1 - t0, 3)}, separators=(",", ":")))
