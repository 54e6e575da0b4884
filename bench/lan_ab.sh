#!/usr/bin/env bash
# bench/lan_ab.sh — A/B of st builds on bench/lan.sh's st-lan case (1 seed -> 8 hosts, 256 MiB,
# LAN discovery alone), for changes smaller than the run-to-run spread of bench/lan.sh.
#
# Usage: bench/lan_ab.sh ROUNDS ST_A ST_B [ST_C ...]        (root; iproute2)
# The namespace LAN (bench/netns.sh) and the data are set up once; each round runs every
# build once, in an order that reverses from round to round, each run preceded by the same
# tmpfs touch as bench/lan.sh's warm_memory. Prints a line per run (build, wall s, CPU s of
# fetchers + seed) and, per build, the median and mean CPU and the median wall. This VM's
# speed drifts by 10-30 % over minutes, so compare builds within a set, never across sets.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: bench/lan_ab.sh ROUNDS ST_A ST_B [ST_C ...]" >&2; exit 2; }
ROUNDS=$1; shift
ROOT_DIR=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT_DIR/bench/netns.sh"
N=8; P="stab$$"
DATA=$(mktemp -d /dev/shm/st-bench-lan-ab.XXXXXX)
cleanup() { pkill -f "$DATA" 2>/dev/null || true; lan_down "$P" $((N + 1)) 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
lan_up "$P" $((N + 1))
head -c 256M /dev/urandom > "$DATA/blob.bin"
ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
: > "$DATA/results"
for i in $(seq "$ROUNDS"); do
  if (( i % 2 )); then order=("$@"); else order=(); for b in "$@"; do order=("$b" "${order[@]}"); done; fi
  for st in "${order[@]}"; do
    w=$DATA/w; rm -rf "$w"; mkdir -p "$w"
    "$st" -q create "$DATA/blob.bin" -o "$w/x.st" > /dev/null
    head -c $(( (256 << 20) * (N + 1) )) /dev/zero > "$DATA/warm"; rm -f "$DATA/warm"
    ip netns exec "$P-h0" "$st" -q seed "$w/x.st" "$DATA/blob.bin" > "$w/seed.out" 2>&1 & seed=$!
    for _ in $(seq 600); do grep -q listening "$w/seed.out" && break; sleep 0.05; done
    s0=$(ticks $seed); t0=$(date +%s.%N); pids=()
    for k in $(seq $N); do
      ip netns exec "$P-h$k" /usr/bin/time -f "%U %S" -o "$w/t$k" timeout 120 "$st" -q fetch "$w/x.st" -o "$w/f$k" > "$w/f$k.out" 2>&1 & pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || true; done
    t1=$(date +%s.%N); s1=$(ticks $seed)
    kill $seed; wait $seed 2>/dev/null || true
    for k in $(seq $N); do cmp -s "$w/f$k/blob.bin" "$DATA/blob.bin" || { echo "$st: fetcher $k: wrong data" >&2; exit 1; }; done
    cpu=$(cat "$w"/t* | awk -v s=$((s1 - s0)) '{c+=$1+$2} END{printf "%.2f", c + s/100}')
    echo "$st $(python3 -c "print(f'{$t1-$t0:.2f}')") $cpu" | tee -a "$DATA/results"
  done
done
python3 - "$DATA/results" <<'PY'
import collections, statistics, sys
r = collections.defaultdict(list)
for line in open(sys.argv[1]):
    b, wall, cpu = line.split()
    r[b].append((float(wall), float(cpu)))
for b, v in r.items():
    c = [x[1] for x in v]
    print(f"{b}: CPU median {statistics.median(c):.2f} s, mean {statistics.mean(c):.2f} s; wall median {statistics.median(x[0] for x in v):.2f} s; {len(v)} runs")
PY
