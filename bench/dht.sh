#!/usr/bin/env bash
# bench/dht.sh — the DHT (issue #15), in two parts.
#
# Usage: bench/dht.sh [NODES=10000] [SWARMS=1000]      (root, iproute2, python3-libtorrent)
#        env SKIP_SIM=1 runs part 2 only.
#
# 1. Lookups in the simulator (engine/examples/dht_sim.rs): NODES production DhtNodes at
#    100 ms round trip, 50 announced swarms, 500 lookups from random nodes: median and p99
#    virtual time to the first peer and queries per lookup (targets: median <= 1 s and <= 60
#    messages), and the reply/query size ratio over the network.
# 2. One real node on a namespace network (cli/tests/dht/netns.sh, 2 hosts): `st seed --dir`
#    serving SWARMS swarms with the DHT on (no router: the DHT idle), side by side with a
#    libtorrent DHT node (python3-libtorrent, the reference implementation) on the same host:
#    - idle: CPU (% of a core) over 30 s and RSS;
#    - flood A: 10 000 get_peers queries from one address (the per-source limit answers 50);
#    - flood B: 10 000 get_peers queries from 200 addresses of one namespace (the global reply
#      budget governs);
#    for each: replies and reply bytes the flooder got, CPU seconds of the node, RSS after.
set -euo pipefail
NODES=${1:-10000}
SWARMS=${2:-1000}
ROOT_DIR=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT_DIR/bench/common.sh"
NETNS="$ROOT_DIR/cli/tests/dht/netns.sh"
P="stdb$$-"
bench_cleanup_extra() { bash "$NETNS" down "$P" >/dev/null 2>&1 || true; }
bench_init dht
/usr/bin/python3 -c 'import libtorrent' 2>/dev/null \
  || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-libtorrent; }

if [ -z "${SKIP_SIM:-}" ]; then
  echo "== 1. lookups in the simulator: $NODES nodes, 100 ms RTT"
  (cd "$ROOT_DIR" && cargo run --release -q -p st-engine --example dht_sim -- --nodes "$NODES")
fi

echo "== 2. one node serving $SWARMS swarms: idle and flooded, st vs libtorrent"
bash "$NETNS" up "$P" 2 > /dev/null
H1=10.77.1.2
for i in $(seq 10 208); do ip netns exec "${P}h2" ip addr add "10.77.2.$i/24" dev eth0; done
lib="$DATA/lib"; mkdir -p "$lib" "$DATA/state"
head -c $((SWARMS * 65536)) /dev/urandom | split -b 64K -d -a 5 - "$lib/f"
for f in "$lib"/f*; do "$ST" -q create "$f" -o "$f.st" > /dev/null; done

rss() { awk '/VmRSS/{printf "%.1f", $2/1024}' "/proc/$1/status"; }
cpu_over() { # $1 pid, $2 seconds -> percent of a core
  local a b; a=$(ticks "$1"); sleep "$2"; b=$(ticks "$1")
  python3 -c "print(f'{100 * ($b - $a) / $HZ / $2:.2f}')"
}
flood() { # $1 pid, $2 port, $3 sources -> "json cpu_s rss"
  local a b out
  a=$(ticks "$1")
  out=$(ip netns exec "${P}h2" python3 "$ROOT_DIR/bench/dht_flood.py" "$H1" "$2" 10000 "$3")
  b=$(ticks "$1")
  echo "$out $(python3 -c "print(f'{($b - $a) / $HZ:.2f}')") $(rss "$1")"
}

ip netns exec "${P}h1" "$ST" -q seed --dir "$lib" --state-dir "$DATA/state" --bind "$H1" \
  --port 6881 --no-lan --dht-bootstrap none > "$DATA/st.out" 2> "$DATA/st.err" & st_pid=$!; PIDS+=($st_pid)
for _ in $(seq 1200); do grep -q listening "$DATA/st.out" && break; sleep 0.1; done
grep -q listening "$DATA/st.out" || { echo "st did not start" >&2; cat "$DATA/st.err" >&2; exit 1; }
ip netns exec "${P}h1" /usr/bin/python3 "$ROOT_DIR/cli/tests/dht/lt_node.py" --bind "$H1:6882" \
  > "$DATA/lt.out" 2>&1 & lt_pid=$!; PIDS+=($lt_pid)
sleep 10
st_idle=$(cpu_over "$st_pid" 30); lt_idle=$(cpu_over "$lt_pid" 30)
st_rss0=$(rss "$st_pid"); lt_rss0=$(rss "$lt_pid")
read -r st_a st_a_cpu st_a_rss < <(flood "$st_pid" 6881 1)
read -r lt_a lt_a_cpu lt_a_rss < <(flood "$lt_pid" 6882 1)
read -r st_b st_b_cpu st_b_rss < <(flood "$st_pid" 6881 200)
read -r lt_b lt_b_cpu lt_b_rss < <(flood "$lt_pid" 6882 200)
kill -0 "$st_pid" || { echo "st died" >&2; exit 1; }

python3 - "$SWARMS" "$st_idle" "$lt_idle" "$st_rss0" "$lt_rss0" \
  "$st_a" "$st_a_cpu" "$st_a_rss" "$lt_a" "$lt_a_cpu" "$lt_a_rss" \
  "$st_b" "$st_b_cpu" "$st_b_rss" "$lt_b" "$lt_b_cpu" "$lt_b_rss" <<'PY'
import json, sys
a = sys.argv[1:]
print(f"st node: {a[0]} swarms, DHT on; libtorrent node: DHT only (same host, same floods)")
print(f"idle 30 s: st {a[1]} % of a core, RSS {a[3]} MiB | libtorrent {a[2]} %, RSS {a[4]} MiB")
for name, i in (("flood A (1 source)", 5), ("flood B (200 sources)", 11)):
    s, l = json.loads(a[i]), json.loads(a[i + 3])
    print(f"{name}: 10000 queries of {s['query_bytes'] / s['sent']:.0f} B")
    for who, r, cpu, rss in (("st", s, a[i + 1], a[i + 2]), ("libtorrent", l, a[i + 4], a[i + 5])):
        per = r["reply_bytes"] / r["replies"] if r["replies"] else 0
        print(f"  {who:10} replies {r['replies']:5}  reply bytes {r['reply_bytes']:7}"
              f" ({per:.0f} B each, {r['reply_bytes'] / r['query_bytes']:.3f} of the flood's bytes)"
              f"  CPU {cpu} s  RSS after {rss} MiB")
PY
