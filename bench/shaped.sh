#!/usr/bin/env bash
# bench/shaped.sh — 1 seed -> N hosts on shaped links, against the lower bound and aria2c (#17).
#
# Usage: bench/shaped.sh [RUNS=1]        (root; iproute2)
#   env HOSTS=16 (fetchers), SIZE=256M (binary units), RATE=100mbit (each host's link, both ways)
#   st-lan      `st lab --discovery lan`: LAN discovery alone
#   st-tracker  `st lab --discovery tracker`: `st udp-tracker` on the seed's host, LAN off
#   aria2       aria2c with Debian's opentracker (HTTP) on the seed's host, DHT, LPD and PEX off
#               (as in bench/lan.sh), the .torrent made by `mktorrent -l 18` (256 KiB pieces)
# Reports, per case (medians over RUNS): time from starting the fetchers to the median (p50,
# nearest rank, as st lab) and to the last completion, CPU seconds (fetchers + seed, user +
# system; trackers not counted), and last / bound, bound = (1 + floor(log2 N)/M) * F/u with F
# the size, u the rate and M the piece count (st's fragments from its results.json, aria2c's
# 256 KiB pieces). Then the targets of issue #17: st's last completion / bound <= 1.15, and
# st's last / aria2c's last <= 0.8, for both st cases.
#
# Every host is a network namespace on one bridge and its link is shaped with tc exactly as
# st lab shapes its own (a tbf on the host's eth0 egress and on the switch-side veth egress:
# bench/netns.sh lan_shape). st lab builds and removes its own namespaces (10.77.0.0/16);
# aria2c's are made here with bench/netns.sh (10.78.0.0/24) and removed at exit. Data lives on
# /dev/shm (st lab's under its OUT, which is in DATA). aria2c fetchers run under /usr/bin/time;
# each one's completion is the time its --on-bt-download-complete hook ran (its exit, if the
# hook left nothing); the seed's CPU is its ticks over the fetch (it is started directly, so
# its PID is aria2c's). A fetcher that does not finish (timeout, wrong data) is reported, and
# the case's last completion is then "fail". As in bench/lan.sh, each run is preceded by
# warm_memory (WARM=0 skips it) and the order of the cases rotates from round to round.
set -euo pipefail
RUNS=${1:-1}
N=${HOSTS:-16}
SIZE=${SIZE:-256M}
RATE=${RATE:-100mbit}
ROOT_DIR=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT_DIR/bench/netns.sh"
P="sts$$"
source "$ROOT_DIR/bench/common.sh"
bench_cleanup_extra() { lan_down "$P" $((N + 1)); }
BPS=$(rate_bps "$RATE")
BYTES=$(numfmt --from=iec "$SIZE")
bench_init shaped
SEED_IP=$(lan_ip 0)
# Fetchers' timeout: 60 s + 5 x what the seed alone needs for N copies' worth at one link.
TMO=$(python3 -c "print(int(60 + 5 * $BYTES * 8 / $BPS * 2))")

wait_line() { for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "timeout waiting for $2 in $1" >&2; exit 1; }

# One st lab run; prints "p50 last cpu bound done".
run_st() { # $1 discovery, $2 run number
  local out="$DATA/st-$1-$2"
  "$ST" -q lab --hosts "$N" --size "$SIZE" --rate "$RATE" --discovery "$1" --out "$out" > "$DATA/st-$1-$2.log" 2>&1 \
    || echo "st lab --discovery $1 failed ($?): $(tail -3 "$DATA/st-$1-$2.log")" >&2
  [ -f "$out/results.json" ] || { echo "nan nan nan nan 0"; return; }
  python3 - "$out/results.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
done = [f["complete_s"] for f in r["fetchers"] if f["complete_s"] is not None and f["exit_code"] == 0]
cpu = (r["seed"]["cpu_s"] or 0) + sum(f["cpu_s"] for f in r["fetchers"])
last = r["max_s"] if len(done) == r["hosts"] else float("nan")
print(f'{r["p50_s"] if r["p50_s"] is not None else float("nan"):.3f} {last:.3f} {cpu:.2f} {r["bound_s"]:.3f} {len(done)}')
PY
  rm -rf "$out/work"
}

lan_up "$P" $((N + 1))
lan_shape "$P" $((N + 1)) "$RATE"
mkdir -p "$DATA/src"
head -c "$SIZE" /dev/urandom > "$DATA/src/blob.bin"
want=$(sha256sum < "$DATA/src/blob.bin" | awk '{print $1}')
printf '#!/bin/sh\ndate +%%s.%%N > "$3.done"\n' > "$DATA/done.sh"; chmod +x "$DATA/done.sh"

# One aria2c run on the shaped LAN; prints "p50 last cpu bound done".
run_aria() {
  local w="$DATA/aria"
  aria_lan_seed "$w" $((TMO + 60)); local ot=$ARIA_OT seed=$ARIA_SEED
  local pids=() k s0 s1 t0
  s0=$(ticks "$seed"); t0=$(now)
  for k in $(seq "$N"); do
    mkdir -p "$w/f$k"
    ( ip netns exec "$P-h$k" /usr/bin/time -f "%U %S" -o "$w/t$k" timeout "$TMO" aria2c $ARIA --seed-time=0 --listen-port=6881 \
        --on-bt-download-complete="$DATA/done.sh" -d "$w/f$k" "$w/x.torrent" > "$w/f$k.out" 2>&1 || true
      now > "$w/e$k" ) &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
  s1=$(ticks "$seed")
  sleep 0.2 # the hooks run detached
  local times=() ok=0 hooked=0
  for k in $(seq "$N"); do
    if [ -f "$w/f$k/blob.bin" ] && [ "$(sha256sum < "$w/f$k/blob.bin" | awk '{print $1}')" = "$want" ]; then
      ok=$((ok + 1))
      if [ -s "$w/f$k/blob.bin.done" ]; then times+=("$(cat "$w/f$k/blob.bin.done")"); hooked=$((hooked + 1)); else times+=("$(cat "$w/e$k")"); fi
    else
      echo "aria2c fetcher $k: incomplete or wrong data: $(tail -2 "$w/f$k.out" | tr '\n' ' ')" >&2
    fi
  done
  [ "$hooked" = "$ok" ] || echo "aria2c: $((ok - hooked)) of $ok completion times are exit times (no hook)" >&2
  kill "$seed" "$ot" 2>/dev/null || true; wait "$seed" "$ot" 2>/dev/null || true
  local cpu; cpu=$(cat "$w"/t* | awk -v s=$((s1 - s0)) -v hz="$HZ" 'NF==2 && $1 ~ /^[0-9.]+$/ {c+=$1+$2} END{printf "%.2f", c + s/hz}')
  python3 - "$t0" "$N" "$BYTES" "$BPS" "$ok" "$cpu" "${times[@]}" <<'PY'
import math, sys
t0, n, size, bps, ok, cpu = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
t = sorted(float(x) - t0 for x in sys.argv[7:])
m = -(-size // (256 * 1024))
bound = (1 + int(math.log2(n)) / m) * size * 8 / bps
p50 = t[max(1, math.ceil(0.5 * len(t))) - 1] if t else float("nan")
last = t[-1] if ok == n else float("nan")
print(f"{p50:.3f} {last:.3f} {cpu:.2f} {bound:.3f} {ok}")
PY
  rm -rf "$w"
}

echo "$("$ST" --version); $(aria2c --version | head -1); $SIZE, 1 seed -> $N hosts, $RATE links both ways (tbf), namespace LAN"
echo "run case         p50 s   last s   CPU s  bound s  done"
: > "$DATA/results"
cases=(st-lan st-tracker aria2)
for i in $(seq "$RUNS"); do
  # Round i starts at case i (rotating), and every run first touches and frees the tmpfs
  # memory it will write (common.sh warm_memory): a run that wrote 4 GiB into cold pages took
  # 67 CPU s and 36 s where the same run warm took 49 CPU s and 26 s.
  for j in "${!cases[@]}"; do
    c=${cases[$(( (j + i - 1) % ${#cases[@]} ))]}
    warm_memory $(( N * BYTES )) "$N"
    case $c in
      st-lan) r=$(run_st lan "$i") ;;
      st-tracker) r=$(run_st tracker "$i") ;;
      aria2) r=$(run_aria) ;;
    esac
    echo "$c $r" >> "$DATA/results"
    read -r p50 last cpu bound ok <<< "$r"
    printf '%3d %-10s %7s %8s %7s %8s %3s/%s\n' "$i" "$c" "$p50" "$last" "$cpu" "$bound" "$ok" "$N"
  done
done
python3 - "$DATA/results" <<'PY'
import sys, statistics, collections, math
r = collections.defaultdict(list)
for line in open(sys.argv[1]):
    case, *v = line.split()
    r[case].append([float(x) for x in v])
def med(c, i):
    v = [x[i] for x in r[c]]
    return float("nan") if any(math.isnan(x) for x in v) else statistics.median(v)
def mratio(c):
    v = [x[1] / x[3] for x in r[c]]
    return float("nan") if any(math.isnan(x) for x in v) else statistics.median(v)
print()
print(f"{'case':12} {'p50 s':>8} {'last s':>8} {'CPU s':>8} {'bound s':>8} {'last/bound':>10}")
for c in ("st-lan", "st-tracker", "aria2"):
    print(f"{c:12} {med(c,0):8.2f} {med(c,1):8.2f} {med(c,2):8.2f} {med(c,3):8.2f} {mratio(c):10.3f}")
for c in ("st-lan", "st-tracker"):
    print(f"{c}: last / bound {mratio(c):.3f} (target <= 1.15); last / aria2 last {med(c,1)/med('aria2',1):.3f} (target <= 0.8)")
PY
