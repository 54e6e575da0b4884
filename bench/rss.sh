#!/usr/bin/env bash
# bench/rss.sh — peak RSS of `st seed` and `st fetch` for one big file, side by side with
# aria2c (seeding and fetching the same file) in one run, on loopback.
#
# Usage: bench/rss.sh [SIZE=4G]
# The data lives on tmpfs (/dev/shm): page cache there is not charged to a process's RSS
# (st uses pread/pwrite, never mmap), so the figures are each process's own memory. Peak RSS
# is the kernel's high-water mark: VmHWM from /proc/PID/status for the seeds (read just
# before they are stopped), ru_maxrss (/usr/bin/time %M, which covers `timeout` and the
# fetcher it runs) for the fetchers. aria2c runs as in
# bench/swarm.sh (opentracker over HTTP; DHT, LPD and PEX off; --file-allocation=none).
# Every process is bounded by `timeout` and stopped by PID; the data is removed at the end.
set -euo pipefail
SIZE=${1:-4G}
ROOT_DIR=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT_DIR/bench/common.sh"
bench_init rss
# Peak RSS (KiB) of the process that `timeout` (PID $1) runs.
hwm() { awk '/^VmHWM/{print $2}' "/proc/$(awk '{print $1}' "/proc/$1/task/$1/children")/status"; }
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }

mkdir -p "$DATA/src"
head -c "$SIZE" /dev/urandom > "$DATA/src/big.bin"
want=$(sha256sum < "$DATA/src/big.bin" | awk '{print $1}')
BYTES=$(stat -c %s "$DATA/src/big.bin")

# ---------- st ----------
w="$DATA/st"; mkdir -p "$w"
"$ST" udp-tracker --port 0 --bind 127.0.0.1 > "$w/trk.out" 2>/dev/null & PIDS+=($!); trk=$!
for _ in $(seq 100); do grep -q listening "$w/trk.out" && break; sleep 0.05; done
tp=$(sed -n 's/.*127.0.0.1://p' "$w/trk.out")
"$ST" -q create "$DATA/src/big.bin" -t "udp://127.0.0.1:$tp" -o "$w/x.st" > /dev/null
timeout 900 "$ST" -q seed "$w/x.st" "$DATA/src/big.bin" --bind 127.0.0.1 > "$w/seed.out" 2>&1 & PIDS+=($!); seed=$!
for _ in $(seq 1200); do grep -q listening "$w/seed.out" && break; sleep 0.05; done
/usr/bin/time -f "%M" -o "$w/fetch.rss" timeout 900 "$ST" -q fetch "$w/x.st" -o "$w/out" --bind 127.0.0.1 > "$w/fetch.out" 2>&1 \
  || { echo "st fetch failed:" >&2; cat "$w/fetch.out" >&2; exit 1; }
st_seed=$(hwm $seed); st_fetch=$(cat "$w/fetch.rss")
kill $seed $trk 2>/dev/null || true; wait $seed $trk 2>/dev/null || true
[ "$(sha256sum < "$w/out/big.bin" | awk '{print $1}')" = "$want" ] || { echo "st: wrong data" >&2; exit 1; }
rm -rf "$w"

# ---------- aria2c ----------
w="$DATA/aria"; mkdir -p "$w/ot" "$w/seed" "$w/out"
ln "$DATA/src/big.bin" "$w/seed/big.bin"
mktorrent -a http://127.0.0.1:6969/announce -l 18 -o "$w/x.torrent" "$w/seed/big.bin" > /dev/null
aria2c -S "$w/x.torrent" | awk '/^Info Hash:/{print $3}' > "$w/ot/whitelist.txt"
opentracker -i 127.0.0.1 -p 6969 -P 6969 -d "$w/ot" -w whitelist.txt > "$w/ot.log" 2>&1 & PIDS+=($!); ot=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:6969/scrape" && break; sleep 0.1; done
timeout 1200 aria2c $ARIA --stop=1200 -V --seed-ratio=0.0 --listen-port=6881 --log="$w/seed.log" --log-level=notice \
  -d "$w/seed" "$w/x.torrent" > "$w/seed.out" 2>&1 & PIDS+=($!); aseed=$!
for _ in $(seq 2400); do grep -q 'Verification finished\|seeding' "$w/seed.log" 2>/dev/null && break; sleep 0.05; done
sleep 0.5
/usr/bin/time -f "%M" -o "$w/fetch.rss" timeout 900 aria2c $ARIA --seed-time=0 --listen-port=6891 \
  -d "$w/out" "$w/x.torrent" > "$w/fetch.out" 2>&1 || { echo "aria2c fetch failed:" >&2; cat "$w/fetch.out" >&2; exit 1; }
a_seed=$(hwm $aseed); a_fetch=$(cat "$w/fetch.rss")
kill $aseed $ot 2>/dev/null || true; wait $aseed $ot 2>/dev/null || true
[ "$(sha256sum < "$w/out/big.bin" | awk '{print $1}')" = "$want" ] || { echo "aria2c: wrong data" >&2; exit 1; }

echo "$("$ST" --version); $(aria2c --version | head -1); file $BYTES bytes on tmpfs"
printf '%-8s %14s %15s\n' tool "seed peak MiB" "fetch peak MiB"
printf '%-8s %14s %15s\n' st "$(mib "$st_seed")" "$(mib "$st_fetch")"
printf '%-8s %14s %15s\n' aria2c "$(mib "$a_seed")" "$(mib "$a_fetch")"
