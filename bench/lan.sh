#!/usr/bin/env bash
# bench/lan.sh — LAN seeding in a namespace LAN: 1 seed -> N hosts, one run, three ways.
#
# Usage: bench/lan.sh [RUNS=1] [SIZE=256M] [HOSTS=8]       (root; iproute2)
#   env CASES (default "st-lan st-tracker aria2") picks the cases and their order.
#   env ST_BUILDS="PATH_A PATH_B ..." runs each st case once per build in every round (in an
#   order that reverses from round to round), reported as CASE@NAME (NAME the file's name):
#   an A/B of st builds on one LAN, for changes smaller than the spread between runs (this
#   VM's speed drifts 10-30 % over minutes: compare builds within one invocation only). E.g.
#   CASES=st-lan ST_BUILDS="/tmp/st-old /tmp/st-new" bench/lan.sh 10
#   st-lan      st with LAN discovery alone: a .st file with no tracker, no flags
#   st-tracker  st with `st udp-tracker` on the seed's host, LAN discovery off (--no-lan)
#   aria2       aria2c with Debian's opentracker (HTTP) on the seed's host; DHT, LPD and PEX
#               off, as in bench/swarm.sh
# Reports, per case: wall time from starting the fetchers to the last completion, and CPU
# seconds (fetchers + seed). Hosts are network namespaces on one bridge (bench/netns.sh,
# 10.78.0.0/24, created and removed here); data lives on /dev/shm. Target (issue #6): st-lan
# within 10 % of st-tracker. As in bench/swarm.sh ("Memory state"), every run first touches
# and frees as much tmpfs memory as it will write (`warm_memory`; WARM=0 skips it), and the
# order of the cases rotates from round to round: use RUNS a multiple of the number of cases.
# Seeds run without `timeout` (`ip netns exec` execs them, so the PID whose CPU is counted is
# the seed's); the exit trap stops them.
set -euo pipefail
RUNS=${1:-1}
SIZE=${2:-256M}
N=${3:-8}
ROOT_DIR=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT_DIR/bench/netns.sh"
P="stb$$"
source "$ROOT_DIR/bench/common.sh"
bench_cleanup_extra() { lan_down "$P" $((N + 1)); }
bench_init lan
SEED_IP=$(lan_ip 0)

lan_up "$P" $((N + 1))
mkdir -p "$DATA/src"
head -c "$SIZE" /dev/urandom > "$DATA/src/blob.bin"
want=$(sha256sum < "$DATA/src/blob.bin" | awk '{print $1}')

# Starts the fetch command "$@" (with %K% replaced by the host number) on hosts 1..N, waits, prints "wall cpu".
fetch_all() { # $1 work dir, $2 seed pid, rest: command template
  local w=$1 seed=$2 pids=() k; shift 2
  warm_memory $(( N * $(stat -c %s "$DATA/src/blob.bin") )) "$N"
  local s0; s0=$(ticks "$seed")
  local t0; t0=$(now)
  for k in $(seq "$N"); do
    mkdir -p "$w/f$k"
    ip netns exec "$P-h$k" /usr/bin/time -f "%U %S" -o "$w/t$k" timeout 600 "${@//%K%/$k}" > "$w/f$k.out" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || true; done
  local t1; t1=$(now)
  local s1; s1=$(ticks "$seed")
  for k in $(seq "$N"); do
    [ "$(sha256sum < "$w/f$k/blob.bin" | awk '{print $1}')" = "$want" ] || { echo "fetcher $k: wrong data" >&2; cat "$w/f$k.out" >&2; exit 1; }
  done
  local cpu; cpu=$(cat "$w"/t* | awk -v s=$(( s1 - s0 )) -v hz="$HZ" '{c+=$1+$2} END{printf "%.2f", c + s/hz}')
  echo "$(python3 -c "print(f'{$t1 - $t0:.2f}')") $cpu"
}

wait_line() { for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "timeout waiting for $2 in $1" >&2; exit 1; }

run_st_lan() {
  local w="$DATA/st-lan"; rm -rf "$w"; mkdir -p "$w"
  "$ST" -q create "$DATA/src/blob.bin" -o "$w/x.st" > /dev/null
  ip netns exec "$P-h0" "$ST" -q seed "$w/x.st" "$DATA/src/blob.bin" > "$w/seed.out" 2>&1 & PIDS+=($!); local seed=$!
  wait_line "$w/seed.out" listening
  local r; r=$(fetch_all "$w" "$seed" "$ST" -q fetch "$w/x.st" -o "$w/f%K%")
  kill "$seed" 2>/dev/null || true; wait "$seed" 2>/dev/null || true
  rm -rf "$w"; echo "$r"
}

run_st_tracker() {
  local w="$DATA/st-trk"; rm -rf "$w"; mkdir -p "$w"
  ip netns exec "$P-h0" timeout 900 "$ST" udp-tracker --port 6969 --bind "$SEED_IP" > "$w/trk.out" 2>&1 & PIDS+=($!); local trk=$!
  wait_line "$w/trk.out" listening
  "$ST" -q create "$DATA/src/blob.bin" -t "udp://$SEED_IP:6969" -o "$w/x.st" > /dev/null
  ip netns exec "$P-h0" "$ST" -q seed "$w/x.st" "$DATA/src/blob.bin" --no-lan > "$w/seed.out" 2>&1 & PIDS+=($!); local seed=$!
  wait_line "$w/seed.out" listening
  local r; r=$(fetch_all "$w" "$seed" "$ST" -q fetch "$w/x.st" -o "$w/f%K%" --no-lan)
  kill "$seed" "$trk" 2>/dev/null || true; wait "$seed" "$trk" 2>/dev/null || true
  rm -rf "$w"; echo "$r"
}

run_aria() {
  local w="$DATA/aria"
  aria_lan_seed "$w" 900; local ot=$ARIA_OT seed=$ARIA_SEED
  local r; r=$(fetch_all "$w" "$seed" aria2c $ARIA --seed-time=0 --listen-port=6881 -d "$w/f%K%" "$w/x.torrent")
  kill "$seed" "$ot" 2>/dev/null || true; wait "$seed" "$ot" 2>/dev/null || true
  rm -rf "$w"; echo "$r"
}

echo "$("$ST" --version); $(aria2c --version | head -1); $SIZE, 1 seed -> $N hosts, namespace LAN"
: > "$DATA/results"
CASES=${CASES:-"st-lan st-tracker aria2"}
read -ra cases <<< "$CASES"
read -ra st_builds <<< "${ST_BUILDS:-$ST}"
for i in $(seq "$RUNS"); do
  # Round i starts at case i (rotating): what a run leaves behind weighs on each case alike.
  for j in "${!cases[@]}"; do
    c=${cases[$(( (j + i - 1) % ${#cases[@]} ))]}
    if [ "$c" = aria2 ]; then builds=("$ST"); elif (( i % 2 )); then builds=("${st_builds[@]}");
    else builds=(); for b in "${st_builds[@]}"; do builds=("$b" "${builds[@]}"); done; fi
    for ST in "${builds[@]}"; do
      label=$c; [ -z "${ST_BUILDS:-}" ] || [ "$c" = aria2 ] || label="$c@$(basename "$ST")"
      case $c in
        st-lan) echo "$label $(run_st_lan)" ;;
        st-tracker) echo "$label $(run_st_tracker)" ;;
        aria2) echo "aria2 $(run_aria)" ;;
        *) echo "bench/lan.sh: unknown case $c (st-lan, st-tracker, aria2)" >&2; exit 2 ;;
      esac | tee -a "$DATA/results"
    done
  done
done
python3 - "$DATA/results" <<'PY'
import sys, statistics, collections
r = collections.defaultdict(list)
for line in open(sys.argv[1]):
    case, wall, cpu = line.split()
    r[case].append((float(wall), float(cpu)))
med = lambda k, i: statistics.median(x[i] for x in r[k])
print()
w = max([12] + [len(c) for c in r])
print(f"{'case':{w}} {'wall s':>8} {'CPU s':>8} {'mean CPU':>8}  runs")
for c in r:
    mean = statistics.mean(x[1] for x in r[c])
    print(f"{c:{w}} {med(c, 0):8.2f} {med(c, 1):8.2f} {mean:8.2f}  {len(r[c])}")
if "st-lan" in r and "st-tracker" in r:
    print(f"st-lan / st-tracker wall: {med('st-lan',0)/med('st-tracker',0):.3f} (target <= 1.10)")
if "st-lan" in r and "aria2" in r:
    print(f"aria2 / st-lan wall: {med('aria2',0)/med('st-lan',0):.2f}x; st-lan / aria2 CPU: {med('st-lan',1)/med('aria2',1):.2f}")
PY
