# bench/netns.sh — sourced by the LAN benchmarks: a private LAN of network namespaces.
#
#   lan_up PREFIX N      makes namespaces PREFIX-sw (a bridge, multicast snooping off) and
#                        PREFIX-h0 … PREFIX-h(N-1), each with lo and eth0 = 10.78.0.(k+1)/24
#                        on a veth to the bridge. Nothing touches the root namespace.
#   lan_down PREFIX N    deletes them (their veths go with them).
#   lan_ip K             the address of host K.
#   in_host PREFIX K CMD runs CMD in host K's namespace.
# Needs root and iproute2. The 10.78.0.0/24 subnet exists only inside these namespaces.

lan_ip() { echo "10.78.0.$(($1 + 1))"; }

lan_up() {
  local p=$1 n=$2 k
  ip netns add "$p-sw"
  ip -n "$p-sw" link add br0 type bridge mcast_snooping 0
  ip -n "$p-sw" link set br0 up
  for k in $(seq 0 $((n - 1))); do
    ip netns add "$p-h$k"
    ip -n "$p-h$k" link add eth0 type veth peer name "v$k" netns "$p-sw"
    ip -n "$p-sw" link set "v$k" master br0 up
    ip -n "$p-h$k" addr add "$(lan_ip "$k")/24" dev eth0
    ip -n "$p-h$k" link set eth0 up
    ip -n "$p-h$k" link set lo up
  done
}

lan_down() {
  local p=$1 n=$2 k
  for k in $(seq 0 $((n - 1))); do ip netns del "$p-h$k" 2>/dev/null || true; done
  ip netns del "$p-sw" 2>/dev/null || true
}

in_host() { local p=$1 k=$2; shift 2; ip netns exec "$p-h$k" "$@"; }

# IPv6-only variant: the same bridge and hosts, but eth0 holds no IPv4 address, only
# fd00:5354:NET::(k+1)/64 from a ULA /64 (NET: one group of 1-4 hex digits, the caller's pick),
# added with nodad so it is usable at once (the link-local one does DAD as usual). lo is up and
# keeps 127.0.0.1 and ::1; no other IPv4 address exists. The kernel adds the ff00::/8
# multicast route on eth0 itself, so LAN discovery needs no extra route.
#
#   lan6_up PREFIX N NET  makes PREFIX-sw and PREFIX-h0 … PREFIX-h(N-1) like lan_up.
#   lan6_down PREFIX N    deletes them (as lan_down).
#   lan6_ip NET K         the address of host K.

lan6_ip() { echo "fd00:5354:$1::$(printf '%x' $(($2 + 1)))"; }

lan6_up() {
  local p=$1 n=$2 net=$3 k
  ip netns add "$p-sw"
  ip -n "$p-sw" link add br0 type bridge mcast_snooping 0
  ip -n "$p-sw" link set br0 up
  for k in $(seq 0 $((n - 1))); do
    ip netns add "$p-h$k"
    ip -n "$p-h$k" link add eth0 type veth peer name "v$k" netns "$p-sw"
    ip -n "$p-sw" link set "v$k" master br0 up
    ip -n "$p-h$k" addr add "$(lan6_ip "$net" "$k")/64" dev eth0 nodad
    ip -n "$p-h$k" link set eth0 up
    ip -n "$p-h$k" link set lo up
  done
}

lan6_down() { lan_down "$@"; }

# Link shaping, as `st lab` does it (cli/src/lab/net.rs `tbf`): a token bucket on the egress
# of each host's eth0 (its upload) and of the switch-side veth v<k> (its download), at RATE
# bits/s, the bucket 4 ms of the rate (at least 16 KiB) and the queue 50 ms.
#
#   rate_bps RATE           RATE (100mbit, 1Gbit, 800kbit, 5000000: bits/s, SI prefixes, any
#                           case) in bits per second.
#   lan_shape PREFIX N RATE shapes hosts 0 … N-1 of lan_up's LAN to RATE both ways.

rate_bps() {
  local r=${1,,}
  case $r in *bit | *bits | *bit/s | *bps | *[0-9]) ;; *) echo "rate_bps: $1: not a bit rate (e.g. 100mbit)" >&2; return 1 ;; esac
  r=${r%bit/s}; r=${r%bits}; r=${r%bit}; r=${r%bps}
  case $r in
    *[0-9]k) echo $((${r%k} * 1000)) ;;
    *[0-9]m) echo $((${r%m} * 1000000)) ;;
    *[0-9]g) echo $((${r%g} * 1000000000)) ;;
    *[0-9]) [[ $r =~ ^[0-9]+$ ]] && echo "$r" || { echo "rate_bps: bad rate $1" >&2; return 1; } ;;
    *) echo "rate_bps: bad rate $1" >&2; return 1 ;;
  esac
}

lan_shape() {
  local p=$1 n=$2 bps k burst
  bps=$(rate_bps "$3") || return 1
  burst=$((bps / 8 / 250)); [ "$burst" -ge 16384 ] || burst=16384
  for k in $(seq 0 $((n - 1))); do
    tc -n "$p-h$k" qdisc replace dev eth0 root tbf rate "${bps}bit" burst "$burst" latency 50ms
    tc -n "$p-sw" qdisc replace dev "v$k" root tbf rate "${bps}bit" burst "$burst" latency 50ms
  done
}

# The aria2c side of the LAN benchmarks (lan.sh, shaped.sh), on lan_up's LAN with prefix $P:
#
#   aria_lan_seed DIR STOP_S  makes DIR/x.torrent of $DATA/src/blob.bin (256 KiB pieces,
#                             mktorrent) announcing to $SEED_IP:6969, runs Debian's
#                             opentracker (whitelisting that torrent) and an aria2c seed
#                             (stopping after STOP_S s) on host 0, and returns once the seed
#                             has checked its data. Sets ARIA_OT and ARIA_SEED to their PIDs
#                             (also added to PIDS). Needs ARIA (common.sh) and the caller's
#                             wait_line FILE PATTERN.
aria_lan_seed() {
  local w=$1 stop=$2
  rm -rf "$w"; mkdir -p "$w/ot" "$w/seed"
  ln "$DATA/src/blob.bin" "$w/seed/blob.bin"
  mktorrent -a "http://$SEED_IP:6969/announce" -l 18 -o "$w/x.torrent" "$w/seed/blob.bin" > /dev/null
  aria2c -S "$w/x.torrent" | awk '/^Info Hash:/{print $3}' > "$w/ot/whitelist.txt"
  ip netns exec "$P-h0" opentracker -i "$SEED_IP" -p 6969 -P 6969 -d "$w/ot" -w whitelist.txt > "$w/ot.log" 2>&1 &
  ARIA_OT=$!; PIDS+=("$ARIA_OT")
  for _ in $(seq 50); do in_host "$P" 0 curl -s -o /dev/null "http://$SEED_IP:6969/scrape" && break; sleep 0.1; done
  # shellcheck disable=SC2086 # ARIA is a list of options
  ip netns exec "$P-h0" aria2c $ARIA --stop="$stop" -V --seed-ratio=0.0 --listen-port=6881 --log="$w/seed.log" --log-level=notice \
    -d "$w/seed" "$w/x.torrent" > "$w/seed.out" 2>&1 &
  ARIA_SEED=$!; PIDS+=("$ARIA_SEED")
  wait_line "$w/seed.log" 'Verification finished\|seeding'
  sleep 0.5
}
