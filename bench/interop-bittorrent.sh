#!/usr/bin/env bash
# bench/interop-bittorrent.sh — real BitTorrent clients complete a download whose only tracker
# is `st udp-tracker` (a udp:// announce URL, BEP 15).
#
# Usage: bench/interop-bittorrent.sh [SIZE_MIB=64]      (root: it creates network namespaces)
#
# Four hosts in network namespaces this script creates and removes, on a private bridge
# (10.77.0.0/24; nothing is routed anywhere else):
#   10.77.0.1  st udp-tracker
#   10.77.0.2  aria2c seeding the file (created by mktorrent, announce udp://10.77.0.1:6969)
#   10.77.0.3  aria2c leecher
#   10.77.0.4  transmission-cli leecher
# Why namespaces: aria2 only uses UDP trackers when its DHT is enabled, and with DHT on it must
# not reach any real network; Transmission 3.00 ignores tracker-supplied peers on 127.x.
# DHT finds nobody here, LPD and PEX are off: the tracker is the only way the peers meet.
# Success = both leechers exit on completion and their files hash like the original.
set -euo pipefail
SIZE_MIB=${1:-64}
ROOT_DIR=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/st-interop.XXXXXX")
NS=(stx-sw stx-trk stx-seed stx-aria stx-tr)
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"; }; }
need aria2c aria2; need transmission-cli transmission-cli; need mktorrent mktorrent; need ip iproute2
(cd "$ROOT_DIR" && cargo build --release -q -p st-cli)
ST="$ROOT_DIR/target/release/st"

# ---------- the LAN ----------
for n in "${NS[@]}"; do ip netns del "$n" 2>/dev/null || true; ip netns add "$n"; done
ip -n stx-sw link add br0 type bridge
ip -n stx-sw link set br0 up
i=1
for h in trk seed aria tr; do
  ip link add "v-$h" type veth peer name eth0 netns "stx-$h"
  ip link set "v-$h" netns stx-sw
  ip -n stx-sw link set "v-$h" master br0 up
  ip -n "stx-$h" addr add "10.77.0.$i/24" dev eth0
  ip -n "stx-$h" link set eth0 up
  ip -n "stx-$h" link set lo up
  i=$((i + 1))
done

# ---------- payload and torrent ----------
mkdir -p "$WORK/seed" "$WORK/aria" "$WORK/tr" "$WORK/tr-cfg"
head -c "$((SIZE_MIB << 20))" /dev/urandom > "$WORK/seed/payload.bin"
mktorrent -a udp://10.77.0.1:6969 -l 18 -o "$WORK/payload.torrent" "$WORK/seed/payload.bin" > /dev/null
want=$(sha256sum < "$WORK/seed/payload.bin" | awk '{print $1}')

# ---------- tracker ----------
ip netns exec stx-trk "$ST" udp-tracker --port 6969 --bind 10.77.0.1 > "$WORK/tracker.out" 2> "$WORK/tracker.log" &
PIDS+=($!)
for _ in $(seq 100); do grep -q "listening on" "$WORK/tracker.out" && break; sleep 0.1; done
grep -q "listening on" "$WORK/tracker.out" || { echo "tracker did not start" >&2; cat "$WORK/tracker.log" >&2; exit 1; }

ARIA="--enable-dht=true --enable-dht6=false --bt-enable-lpd=false --enable-peer-exchange=false
 --disable-ipv6=true --file-allocation=none --summary-interval=0 --console-log-level=warn
 --bt-tracker-connect-timeout=5 --bt-tracker-timeout=10"

# ---------- seeder ----------
ip netns exec stx-seed timeout 300 aria2c $ARIA --listen-port=6881 --dht-listen-port=6881 \
  --seed-ratio=0.0 -V -d "$WORK/seed" "$WORK/payload.torrent" > "$WORK/seed.log" 2>&1 &
PIDS+=($!)

# ---------- leechers ----------
cat > "$WORK/tr-cfg/settings.json" <<'JSON'
{ "dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "utp-enabled": false,
  "port-forwarding-enabled": false, "blocklist-enabled": false, "encryption": 0,
  "ratio-limit": 0, "ratio-limit-enabled": true, "idle-seeding-limit-enabled": false,
  "speed-limit-down-enabled": false, "speed-limit-up-enabled": false, "alt-speed-enabled": false,
  "peer-port": 51413, "peer-port-random-on-start": false, "message-level": 2,
  "preallocation": 0, "rename-partial-files": false }
JSON
t0=$(date +%s.%N)
ip netns exec stx-aria timeout 180 aria2c $ARIA --listen-port=6882 --dht-listen-port=6882 \
  --seed-time=0 -d "$WORK/aria" "$WORK/payload.torrent" > "$WORK/aria.log" 2>&1 &
aria_pid=$!
ip netns exec stx-tr timeout 180 transmission-cli -g "$WORK/tr-cfg" -p 51413 -w "$WORK/tr" \
  "$WORK/payload.torrent" > "$WORK/tr.log" 2>&1 &
tr_pid=$!
PIDS+=("$aria_pid" "$tr_pid")

status=0
check() { # $1 name, $2 pid, $3 file
  local rc=0
  wait "$2" || rc=$?
  local got; got=$(sha256sum < "$3" 2>/dev/null | awk '{print $1}')
  local secs; secs=$(python3 -c "print(f'{$(date +%s.%N) - $t0:.1f}')")
  if [ "$got" = "$want" ]; then
    echo "OK   $1: downloaded ${SIZE_MIB} MiB, sha256 matches (exit $rc, done by ${secs} s)"
  else
    echo "FAIL $1: exit $rc, sha256 ${got:-<no file>} != $want"; status=1
    tail -n 20 "$WORK/$1.log" | sed "s/^/  $1: /"
  fi
}
check aria "$aria_pid" "$WORK/aria/payload.bin"
check tr "$tr_pid" "$WORK/tr/payload.bin"

# The tracker's own account: stop it and read its final counters from the log.
kill -INT "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true
echo "tracker log:"; sed 's/^/  /' "$WORK/tracker.log"
[ $status = 0 ] && echo "interop: aria2c and transmission-cli completed with st udp-tracker as the only tracker"
exit $status
