#!/usr/bin/env bash
# bench/create.sh — `st create` against `openssl dgst -sha256` on the same 1 GiB file.
#
# Usage: bench/create.sh [RUNS=3] [SIZE_MIB=1024]
# Makes a random file in a scratch folder ($TMPDIR, never the repo), warms the page cache, then
# alternates the two commands RUNS times and prints the median wall time of each and the ratio
# (openssl time / st time: above 1 means st is faster). openssl uses SHA-NI on one core; st
# hashes on every core, two fragments at a time per core (proto::sha256). ST_HASH_THREADS=1
# compares one core with openssl's one stream: what hashing two fragments side by side gives.
# Requires: cargo, openssl, python3.
set -euo pipefail
runs=${1:-3}
size_mib=${2:-1024}
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d "${TMPDIR:-/tmp}/st-bench-create.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 2; }
(cd "$root" && cargo build --release -q -p st-cli)
st="$root/target/release/st"

echo "making ${size_mib} MiB of random data in $scratch"
head -c "$((size_mib << 20))" /dev/urandom > "$scratch/data.bin"
cat "$scratch/data.bin" > /dev/null   # warm the page cache

now() { date +%s.%N; }
st_times=(); ossl_times=()
for i in $(seq "$runs"); do
  t0=$(now); "$st" create "$scratch/data.bin" -o "$scratch/data.st" --force -q > /dev/null; t1=$(now)
  openssl dgst -sha256 "$scratch/data.bin" > /dev/null; t2=$(now)
  st_times+=("$(python3 -c "print($t1 - $t0)")")
  ossl_times+=("$(python3 -c "print($t2 - $t1)")")
  printf 'run %d: st create %.3f s, openssl %.3f s\n' "$i" "${st_times[-1]}" "${ossl_times[-1]}"
done
python3 - "$size_mib" "${st_times[*]}" "${ossl_times[*]}" <<'PY'
import statistics, sys
size = int(sys.argv[1]) * 2**20
st = statistics.median(map(float, sys.argv[2].split()))
os_ = statistics.median(map(float, sys.argv[3].split()))
print(f"median st create: {st:.3f} s ({size / st / 1e9:.2f} GB/s)")
print(f"median openssl  : {os_:.3f} s ({size / os_ / 1e9:.2f} GB/s)")
print(f"ratio (openssl / st): {os_ / st:.2f}x  (target: >= 1.6x)")
PY
