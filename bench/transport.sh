#!/usr/bin/env bash
# Transport bulk-transfer benchmark on loopback, side by side with iperf3 in the same run.
#
#  - ours: engine/examples/transport_bench.rs, one process per side (receiver pinned to CPU 0,
#    sender to CPU 1), BYTES (default 1 GiB) through the mio reactor; once with the default
#    MTU (path MTU probing, which on lo takes the data packets to ~58 KB; the mtu= the
#    receiver's RESULT line shows is that of its own, ACK-only direction, which stays at 1472)
#    and once per extra value in MTUS (e.g. --mtu 16000, legitimate on lo whose MTU is 65536).
#    So this is not a 1 500-byte-datagram benchmark: bench/lan.sh is. Reports goodput (receiver side) and CPU seconds per
#    GiB on each side (getrusage of the process).
#  - iperf3 TCP, one stream, 10 s; iperf3 UDP `-u -b 0 -l 1472`, 10 s (received Gbit/s
#    computed from datagrams that arrived), same pinning. Their CPU s/GiB come from iperf3's
#    own CPU utilisation figures (host = sender, remote = receiver) over the bytes received.
#
# Usage:  flock /tmp/st-cpu.lock bash bench/transport.sh
# Env:    BYTES=1G RUNS=3 MTUS="16000" PORT=17400
# Installs iperf3 and jq with apt-get when missing. Prints one table at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BYTES=${BYTES:-1G}
RUNS=${RUNS:-3}
MTUS=${MTUS:-16000}
PORT=${PORT:-17400}
WORK=${WORK:-${TMPDIR:-/tmp}/st-bench-transport}
mkdir -p "$WORK"

if ! command -v iperf3 >/dev/null || ! command -v jq >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 jq >/dev/null
fi
cargo build --release -q -p st-engine --example transport_bench
BIN=$PWD/target/release/examples/transport_bench

median() { sort -g | awk '{a[NR]=$1} END{ if(NR==0) print "n/a"; else if(NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }
field() { tr ' ' '\n' | awk -F= -v k="$1" '$1==k{print $2}'; }

: > "$WORK/results.txt"
ours() { # $1 tag, rest: extra args for both sides
  local tag=$1; shift
  taskset -c 0 "$BIN" --listen 127.0.0.1:$PORT "$@" > "$WORK/srv-$tag.log" 2>&1 & local spid=$!
  sleep 0.5
  taskset -c 1 timeout 300 "$BIN" --connect 127.0.0.1:$PORT --bytes "$BYTES" "$@" > "$WORK/cli-$tag.log" 2>&1 || true
  wait "$spid" || true
  local r s
  r=$(grep '^RESULT' "$WORK/srv-$tag.log" || echo "")
  s=$(grep '^RESULT' "$WORK/cli-$tag.log" || echo "")
  echo "$tag gbps=$(echo "$r" | field gbps) rx_cpu_per_gib=$(echo "$r" | field cpu_s_per_gib) tx_cpu_per_gib=$(echo "$s" | field cpu_s_per_gib) bytes=$(echo "$r" | field bytes) mtu=$(echo "$r" | field mtu)" | tee -a "$WORK/results.txt"
}

iperf_run() { # $1 tag, rest: client args
  local tag=$1; shift
  taskset -c 0 iperf3 -s -B 127.0.0.1 -p $((PORT + 1)) -1 > "$WORK/iperf-srv-$tag.log" 2>&1 & local spid=$!
  sleep 1
  taskset -c 1 timeout 30 iperf3 -c 127.0.0.1 -p $((PORT + 1)) -t 10 -J "$@" > "$WORK/iperf-$tag.json" || true
  sleep 1; kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true
}

echo "iperf3: $(iperf3 --version | head -1); kernel $(uname -r); $(nproc) CPUs"
for i in $(seq 1 "$RUNS"); do
  ours "st-default-$i"
  for m in $MTUS; do ours "st-mtu$m-$i" --mtu "$m"; done
  iperf_run "tcp-$i"
  read -r g rx tx < <(jq -r '[.end.sum_received.bits_per_second/1e9,
      (.end.cpu_utilization_percent.remote_total/100*.end.sum_received.seconds)/(.end.sum_received.bytes/1073741824),
      (.end.cpu_utilization_percent.host_total/100*.end.sum_received.seconds)/(.end.sum_received.bytes/1073741824)] | @tsv' "$WORK/iperf-tcp-$i.json")
  echo "iperf-tcp-$i gbps=$g rx_cpu_per_gib=$rx tx_cpu_per_gib=$tx" | tee -a "$WORK/results.txt"
  iperf_run "udp-$i" -u -b 0 -l 1472
  read -r g rx tx < <(jq -r '((.end.sum.packets-.end.sum.lost_packets)*1472) as $b |
      [($b*8/.end.sum.seconds/1e9),
       (.end.cpu_utilization_percent.remote_total/100*.end.sum.seconds)/($b/1073741824),
       (.end.cpu_utilization_percent.host_total/100*.end.sum.seconds)/($b/1073741824)] | @tsv' "$WORK/iperf-udp-$i.json")
  echo "iperf-udp1472-$i gbps=$g rx_cpu_per_gib=$rx tx_cpu_per_gib=$tx" | tee -a "$WORK/results.txt"
done

echo
echo "| test | median goodput Gbit/s | receiver CPU s/GiB | sender CPU s/GiB |"
echo "|---|---|---|---|"
tags="st-default $(for m in $MTUS; do echo -n "st-mtu$m "; done) iperf-tcp iperf-udp1472"
for t in $tags; do
  sel() { grep "^$t-[0-9]* " "$WORK/results.txt" | field "$1" | grep -v '^$' | median; }
  echo "| $t | $(sel gbps) | $(sel rx_cpu_per_gib) | $(sel tx_cpu_per_gib) |"
done
udp=$(grep '^iperf-udp1472-' "$WORK/results.txt" | field gbps | median)
for t in st-default $(for m in $MTUS; do echo -n "st-mtu$m "; done); do
  g=$(grep "^$t-[0-9]* " "$WORK/results.txt" | field gbps | median)
  echo "$t / iperf3 UDP 1472: $(echo "$g / $udp" | bc -l | xargs printf '%.2f')x"
done
