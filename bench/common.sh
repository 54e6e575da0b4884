# bench/common.sh — sourced by the swarm benchmarks (swarm.sh, lan.sh, rss.sh).
#
#   bench_init NAME   sets DATA (a fresh /dev/shm/st-bench-NAME.XXXXXX, removed at exit),
#                     PIDS (background processes to stop at exit: append with PIDS+=($!)),
#                     ST (the release st, built here), HZ, ARIA (aria2c's options: DHT, LPD and
#                     PEX off, as in ../shared/anchors/c_bt_clients.sh), and installs aria2c,
#                     mktorrent, opentracker and curl with apt-get when missing. At exit it
#                     stops PIDS, calls bench_cleanup_extra if the script defines it, and
#                     removes DATA.
#   ticks PID         user + system CPU ticks of a process (0 once it is gone).
#   now               wall clock, seconds with nanoseconds.
#   warm_memory BYTES FETCHERS
#                     touches and frees in tmpfs as much memory as a run will write (BYTES of
#                     data, plus 64 MiB per process), so that no tool's CPU pays for the VM's
#                     first touch of cold pages (see "Memory state" in swarm.sh). WARM=cold
#                     waits 5 s instead, WARM=0 does neither.
# Expects ROOT_DIR (the repository) to be set.

bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if declare -F bench_cleanup_extra >/dev/null; then bench_cleanup_extra; fi
  rm -rf "$DATA"
}

need() { command -v "$1" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"; }; }

bench_init() {
  DATA=$(mktemp -d "/dev/shm/st-bench-$1.XXXXXX")
  PIDS=()
  trap bench_cleanup EXIT
  need aria2c aria2; need mktorrent mktorrent; need opentracker opentracker; need curl curl
  # ST_BIN runs another build of st (a profiling build, an older commit's) instead.
  if [ -n "${ST_BIN:-}" ]; then ST=$ST_BIN; else
    (cd "$ROOT_DIR" && cargo build --release -q -p st-cli)
    ST="$ROOT_DIR/target/release/st"
  fi
  HZ=$(getconf CLK_TCK)
  ARIA="--enable-dht=false --enable-dht6=false --bt-enable-lpd=false --enable-peer-exchange=false
 --disable-ipv6=true --file-allocation=none --summary-interval=0 --console-log-level=warn
 --max-overall-upload-limit=0 --max-overall-download-limit=0"
}

ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
now() { date +%s.%N; }
warm_memory() {
  case "${WARM:-1}" in
    0) return ;;
    cold) sleep 5; return ;;
  esac
  head -c $(( $1 + ($2 + 4) * (64 << 20) )) /dev/zero > "$DATA/warm"
  rm -f "$DATA/warm"
}
