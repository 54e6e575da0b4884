#!/usr/bin/env bash
# bench/many.sh — one process seeding a library: `st seed --dir` against aria2c seeding the
# same torrents, side by side in one run, in a namespace LAN (bench/netns.sh: 2 hosts).
#
# Usage: bench/many.sh [N=1000] [IDLE_S=60]      (root; iproute2)
#   N files of 1 MiB each, a .st (and a .torrent) for each, in one directory on /dev/shm.
#   Host 0 runs the tracker (st udp-tracker; opentracker for aria2c) and the seed; host 1 the
#   fetch. st announces every swarm to the tracker and on the LAN (multicast on the namespace
#   bridge only).
# Reports:
#   st: start-up time to "listening" the first time (hashing every file) and the second time
#       (what was verified is remembered in --state-dir: target <= 2 s), peak RSS (VmHWM,
#       target <= 128 MiB), CPU while idle over IDLE_S (target <= 2 % of a core), and the
#       wall time of a fetch of one file through the tracker (host 1).
#   aria2c (one process, every torrent, -V, DHT/LPD/PEX off as in bench/swarm.sh): time until
#       its check is over (CPU quiet for 2 s), peak RSS, CPU while idle over IDLE_S.
set -euo pipefail
N=${1:-1000}
IDLE_S=${2:-60}
ROOT_DIR=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT_DIR/bench/netns.sh"
P="stm$$"
source "$ROOT_DIR/bench/common.sh"
bench_cleanup_extra() { lan_down "$P" 2; }
bench_init many
lan_up "$P" 2
H0=$(lan_ip 0)

lib="$DATA/lib"
mkdir -p "$lib" "$DATA/state" "$DATA/torrents"
echo "making $N files of 1 MiB and their .st and .torrent files..."
head -c $((N << 20)) /dev/urandom | split -b 1M -d -a 5 - "$lib/f"
for f in "$lib"/f*; do
  b=$(basename "$f")
  "$ST" -q create "$f" -t "udp://$H0:6969" -o "$lib/$b.st" > /dev/null
  mktorrent -a "http://$H0:6970/announce" -l 18 -o "$DATA/torrents/$b.torrent" "$f" > /dev/null
done

hwm() { awk '/VmHWM/{printf "%.1f", $2/1024}' "/proc/$1/status"; }
# Seconds until "listening" appears in $1 (the process writing it is $2).
wait_listening() {
  local t0; t0=$(now)
  for _ in $(seq 6000); do
    grep -q listening "$1" && { python3 -c "print(f'{$(now) - $t0:.2f}')"; return; }
    kill -0 "$2" 2>/dev/null || { echo "process died" >&2; cat "$1" >&2; exit 1; }
    sleep 0.05
  done
  echo "timeout" >&2; exit 1
}
idle_cpu() { # $1 pid -> percent of a core over IDLE_S
  local a; a=$(ticks "$1"); sleep "$IDLE_S"; local b; b=$(ticks "$1")
  python3 -c "print(f'{100 * ($b - $a) / $HZ / $IDLE_S:.2f}')"
}

# ---------- st ----------
# Background processes are started with `ip netns exec` itself (not the in_host function, whose
# subshell's PID is not the process's): `ip netns exec` execs them, so $! is their PID.
ip netns exec "$P-h0" "$ST" udp-tracker --port 6969 > "$DATA/trk.out" 2>&1 & PIDS+=($!)
seed_run() { # $1 label -> "startup_s pid"
  ip netns exec "$P-h0" "$ST" -q seed --dir "$lib" --state-dir "$DATA/state" > "$DATA/seed-$1.out" 2> "$DATA/seed-$1.err" &
  local pid=$!; PIDS+=($pid)
  local t; t=$(wait_listening "$DATA/seed-$1.out" "$pid")
  echo "$t $pid"
}
read -r st_first pid < <(seed_run first)
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
read -r st_second pid < <(seed_run second)
sleep 5 # announces to the tracker go out
st_idle=$(idle_cpu "$pid")
mkdir -p "$DATA/out"
t0=$(now)
in_host "$P" 1 timeout 120 "$ST" -q fetch "$lib/f00007.st" -o "$DATA/out" > "$DATA/fetch.out" 2>&1 \
  || { echo "st fetch failed" >&2; cat "$DATA/fetch.out" >&2; exit 1; }
st_fetch=$(python3 -c "print(f'{$(now) - $t0:.2f}')")
cmp "$DATA/out/f00007" "$lib/f00007" || { echo "fetched data differs" >&2; exit 1; }
echo "st fetch: $(grep '^fetched' "$DATA/fetch.out")"
st_rss=$(hwm "$pid")
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true

# ---------- aria2c ----------
mkdir -p "$DATA/ot"
ip netns exec "$P-h0" opentracker -i "$H0" -p 6970 -P 6970 -d "$DATA/ot" > "$DATA/ot.log" 2>&1 & PIDS+=($!)
ls "$DATA"/torrents/*.torrent > "$DATA/list.txt"
t0=$(now)
ip netns exec "$P-h0" aria2c $ARIA -V --seed-ratio=0.0 --listen-port=6881 -j "$N" --bt-max-open-files=100 \
  -d "$lib" -i "$DATA/list.txt" > "$DATA/aria.out" 2>&1 & PIDS+=($!); apid=$!
# The check is over when the CPU stays quiet for 2 s.
last=$(ticks "$apid")
while sleep 2; do
  cur=$(ticks "$apid")
  (( cur - last <= HZ / 50 )) && break
  last=$cur
done
aria_start=$(python3 -c "print(f'{$(now) - $t0 - 2:.2f}')")
aria_idle=$(idle_cpu "$apid")
aria_rss=$(hwm "$apid")

echo
echo "library of $N files of 1 MiB, one seeding process:"
printf "%-8s %14s %14s %10s %12s %10s\n" tool "start 1st s" "start 2nd s" "RSS MiB" "idle CPU %" "fetch s"
printf "%-8s %14s %14s %10s %12s %10s\n" st "$st_first" "$st_second" "$st_rss" "$st_idle" "$st_fetch"
printf "%-8s %14s %14s %10s %12s %10s\n" aria2 "$aria_start" "-" "$aria_rss" "$aria_idle" "-"
python3 - "$st_rss" "$aria_rss" "$st_idle" "$aria_idle" <<'PY'
import sys
s_rss, a_rss, s_idle, a_idle = map(float, sys.argv[1:])
print(f"RSS st/aria2 {s_rss / a_rss:.2f}; idle CPU st {s_idle:.2f} % vs aria2 {a_idle:.2f} % of a core")
PY
