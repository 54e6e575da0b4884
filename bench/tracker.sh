#!/usr/bin/env bash
# bench/tracker.sh — `st udp-tracker` against opentracker and aquatic_udp (1 worker), all three
# driven by aquatic_udp_load_test with one identical load config, in one run.
#
# Usage: bench/tracker.sh [DURATION_S=30] [RUNS=1]
# Env:   WORK (scratch, default ${TMPDIR:-/tmp}/st-bench/tracker), TOOLS (cargo install root,
#        default ${TMPDIR:-/tmp}/st-bench/tools), VARIANTS (default "st ot aq1").
#
# Each tracker is pinned to CPU 0 and the load generator to CPU 1 (taskset). Only 127.0.0.1 is
# used. Tools are installed into the scratch folders, never into the repository:
# opentracker from Debian (apt-get), aquatic_udp and aquatic_udp_load_test from crates.io.
# Debian's opentracker is whitelist-only, so the script whitelists exactly the info hashes
# the load test generates (a small generator replays the load test's RNG and seed).
# Prints, per variant: responses/s (total and by kind) and peak RSS (VmHWM), then the ratios
# that the tracker issue's targets are stated in.
set -euo pipefail
DUR=${1:-30}
RUNS=${2:-1}
ROOT_DIR=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-${TMPDIR:-/tmp}/st-bench/tracker}
TOOLS=${TOOLS:-${TMPDIR:-/tmp}/st-bench/tools}
VARIANTS=${VARIANTS:-"st ot aq1"}
export PATH="$TOOLS/bin:$PATH"
mkdir -p "$WORK"

# ---------- install ----------
if ! command -v opentracker >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opentracker
fi
if ! command -v aquatic_udp >/dev/null || ! command -v aquatic_udp_load_test >/dev/null; then
  CARGO_TARGET_DIR="$TOOLS/target" cargo install --root "$TOOLS" aquatic_udp aquatic_udp_load_test
fi
(cd "$ROOT_DIR" && cargo build --release -q -p st-cli)
ST_BIN="$ROOT_DIR/target/release/st"
cd "$WORK"

# ---------- whitelist for opentracker: the load test's info hashes ----------
if [ ! -s whitelist.txt ]; then
  mkdir -p gen-whitelist/src
  cat > gen-whitelist/Cargo.toml <<'TOML'
[package]
name = "gen-whitelist"
version = "0.1.0"
edition = "2021"
[dependencies]
rand = { version = "0.8", features = ["small_rng"] }
TOML
  cat > gen-whitelist/src/main.rs <<'RS'
// aquatic_udp_load_test 0.9 draws its info hashes from SmallRng seeded 0xc3aa8be617b3acce,
// 20 x gen::<u8>() each; replay it to whitelist exactly those.
use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::io::Write;
fn main() {
    let n: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(1_000_000);
    let mut rng = SmallRng::seed_from_u64(0xc3aa8be617b3acce);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for _ in 0..n {
        let mut b = [0u8; 20];
        for x in b.iter_mut() { *x = rng.gen(); }
        for x in b.iter() { write!(out, "{:02x}", x).unwrap(); }
        writeln!(out).unwrap();
    }
}
RS
  (cd gen-whitelist && CARGO_TARGET_DIR="$WORK/gen-whitelist/target" cargo build --release -q)
  ./gen-whitelist/target/release/gen-whitelist 1000000 > whitelist.txt
fi

# ---------- configs: one load config for all ----------
mk_lt() { # $1 = port
cat > "lt-$1.toml" <<TOML
server_address = "127.0.0.1:$1"
log_level = "error"
workers = 1
duration = $DUR
summarize_last = $((DUR - 5))
extra_statistics = false
[network]
multiple_client_ipv4s = false
sockets_per_worker = 4
recv_buffer = 8000000
[requests]
number_of_torrents = 1000000
number_of_peers = 2000000
scrape_max_torrents = 10
announce_peers_wanted = 30
weight_connect = 50
weight_announce = 50
weight_scrape = 1
peer_seeder_probability = 0.75
TOML
}
mk_lt 6971; mk_lt 6969; mk_lt 3000
aquatic_udp -p > aquatic_udp.default.toml
sed -e 's/^address = .*/address = "127.0.0.1:3000"/' -e 's/^socket_workers = .*/socket_workers = 1/' \
  aquatic_udp.default.toml > aq1.toml
# st: limits raised to hold the whole load (1 M swarms, 2 M peers), as the others do.
"$ST_BIN" udp-tracker --print-config \
  | sed -e 's/^max_swarms = .*/max_swarms = 2000000/' -e 's/^max_peers = .*/max_peers = 4000000/' > st.conf

# ---------- one run ----------
run_one() { # $1 variant, $2 run index
  local v=$1 i=$2 pid port
  case $v in
    st)  port=6971; taskset -c 0 "$ST_BIN" -q udp-tracker --port $port --bind 127.0.0.1 --config st.conf > "srv-$v-$i.log" 2>&1 & pid=$! ;;
    ot)  port=6969; taskset -c 0 opentracker -i 127.0.0.1 -P $port -p $port -d "$WORK" -w whitelist.txt > "srv-$v-$i.log" 2>&1 & pid=$! ;;
    aq1) port=3000; taskset -c 0 aquatic_udp -c aq1.toml > "srv-$v-$i.log" 2>&1 & pid=$! ;;
  esac
  sleep 3   # opentracker loads its 1 M-line whitelist
  taskset -c 1 timeout $((DUR + 60)) aquatic_udp_load_test -c "lt-$port.toml" > "lt-$v-$i.log" 2>&1 || true
  local hwm; hwm=$(awk '/VmHWM/{print $2}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  report() { sed -n '/# aquatic load test report/,$p' "lt-$v-$i.log" | awk -v k="$1" '$0 ~ k {print $4; exit}'; }
  local tot; tot=$(awk '/^Average responses per second/{print $5}' "lt-$v-$i.log")
  echo "$v $i total=$tot connect=$(report 'Connect responses') announce=$(report 'Announce responses') scrape=$(report 'Scrape responses') hwm_kB=$hwm" | tee -a results.txt
}

: > results.txt
echo "opentracker $(dpkg-query -W -f='${Version}' opentracker), $(aquatic_udp -v 2>&1 | head -1), $(aquatic_udp_load_test -v 2>&1 | head -1), $("$ST_BIN" --version)"
for i in $(seq 1 "$RUNS"); do
  for v in $VARIANTS; do run_one "$v" "$i"; sleep 2; done
done

# ---------- summary ----------
python3 - <<'PY'
import statistics, collections
rows = collections.defaultdict(list)
for line in open("results.txt"):
    parts = line.split()
    kv = dict(p.split("=", 1) for p in parts[2:])
    rows[parts[0]].append(kv)
def med(v, k):
    xs = [float(r[k].replace(",", "")) for r in rows[v] if r.get(k) not in (None, "")]
    return statistics.median(xs) if xs else float("nan")
print()
print(f"{'variant':8} {'resp/s':>10} {'connect':>10} {'announce':>10} {'scrape':>8} {'peak RSS MB':>12}")
for v in rows:
    print(f"{v:8} {med(v,'total'):10.0f} {med(v,'connect'):10.0f} {med(v,'announce'):10.0f} {med(v,'scrape'):8.0f} {med(v,'hwm_kB')/1024:12.1f}")
if "st" in rows and "aq1" in rows:
    print(f"\nst / aquatic_udp (1 worker) responses/s: {med('st','total')/med('aq1','total'):.2f}x (target >= 1.0)")
if "st" in rows and "ot" in rows:
    print(f"st / opentracker peak RSS: {med('st','hwm_kB')/med('ot','hwm_kB'):.2f}x (target <= 1.0)")
PY
