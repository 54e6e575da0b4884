#!/bin/bash
# Private routed test network for DHT interop tests, built from network
# namespaces only (no interface or address of the root namespace is touched).
#
#   netns.sh up   PREFIX N [PER_SUBNET]   build router + N hosts
#   netns.sh down PREFIX                  remove everything named PREFIX* (idempotent)
#   netns.sh exec PREFIX hK CMD...        run CMD inside host K (or "router")
#   netns.sh list PREFIX                  print the namespaces with PREFIX
#
# Layout (PREFIX e.g. "stdht-1234-"; must be unique per test run):
#   ${PREFIX}router   IP forwarding on; in it one bridge "brS" per subnet S,
#                     addressed 10.77.S.1/24 (NET env var overrides "10.77").
#   ${PREFIX}hK       K = 1..N; interface "eth0" (veth, peer "hK" in the router
#                     namespace, enslaved to brS), default route via 10.77.S.1.
# With PER_SUBNET = 1 (default) host K is alone on subnet K: 10.77.K.2/24.
# With PER_SUBNET = P, hosts share /24s: host K is on subnet S = (K-1)/P + 1 with
# address 10.77.S.(2 + (K-1)%P); useful to exercise per-/24 DHT rules.
#
# "up" prints one line per host on stdout:  hK <namespace> <ip>
# and exits non-zero (after tearing down what it built) on any failure.
# Needs root and iproute2. All names inside namespaces are private to them, so
# short fixed names (eth0, hK, brS) never clash with the host's own interfaces.
set -u

NET="${NET:-10.77}"

die() { echo "netns.sh: $*" >&2; exit 1; }

check_prefix() {
    local p="$1"
    [[ -n "$p" ]] || die "empty PREFIX"
    # Be strict: a sloppy prefix ("" or "s") could match foreign namespaces in "down".
    [[ "$p" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{3,40}$ ]] || die "bad PREFIX '$p' (4-41 chars of [A-Za-z0-9_.-])"
}

ours() { ip netns list 2>/dev/null | awk '{print $1}' | grep -F -- "$1" | while read -r n; do
    [[ "$n" == "$1"* ]] && echo "$n"; done; }

cmd_down() {
    local p="$1" ns pid
    check_prefix "$p"
    for ns in $(ours "$p"); do
        # Processes still running in our namespaces were started by the test that
        # owns this prefix; end them by pid so the namespace really goes away.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -TERM "$pid" 2>/dev/null || true; done
    done
    sleep 0.2
    for ns in $(ours "$p"); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    [[ -z "$(ours "$p")" ]] || die "could not remove: $(ours "$p" | tr '\n' ' ')"
}

cmd_up() {
    local p="$1" n="$2" per="${3:-1}"
    check_prefix "$p"
    [[ "$n" =~ ^[0-9]+$ && "$n" -ge 1 && "$n" -le 250 ]] || die "bad N '$n'"
    [[ "$per" =~ ^[0-9]+$ && "$per" -ge 1 && "$per" -le 250 ]] || die "bad PER_SUBNET '$per'"
    [[ -z "$(ours "$p")" ]] || die "namespaces with prefix '$p' already exist"
    trap 'cmd_down "$p" >/dev/null 2>&1' ERR
    set -eE
    local r="${p}router" k s a h
    ip netns add "$r"
    ip -n "$r" link set lo up
    ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1
    local nsub=$(( (n + per - 1) / per ))
    for s in $(seq 1 "$nsub"); do
        ip -n "$r" link add "br$s" type bridge
        ip -n "$r" addr add "$NET.$s.1/24" dev "br$s"
        ip -n "$r" link set "br$s" up
    done
    for k in $(seq 1 "$n"); do
        h="${p}h$k"
        s=$(( (k - 1) / per + 1 ))
        a="$NET.$s.$(( 2 + (k - 1) % per ))"
        ip netns add "$h"
        ip -n "$h" link set lo up
        # created inside the router namespace, peer moved straight into the host:
        # nothing ever appears in the root namespace
        ip -n "$r" link add "h$k" type veth peer name eth0 netns "$h"
        ip -n "$r" link set "h$k" master "br$s"
        ip -n "$r" link set "h$k" up
        ip -n "$h" addr add "$a/24" dev eth0
        ip -n "$h" link set eth0 up
        ip -n "$h" route add default via "$NET.$s.1"
        echo "h$k $h $a"
    done
    set +eE
    trap - ERR
}

cmd_exec() {
    local p="$1" who="$2"; shift 2
    check_prefix "$p"
    if [[ "$who" == router ]]; then exec ip netns exec "${p}router" "$@"; fi
    [[ "$who" =~ ^h[0-9]+$ ]] || die "bad host '$who' (hK or router)"
    exec ip netns exec "${p}${who}" "$@"
}

[[ $(id -u) -eq 0 ]] || die "must run as root"
case "${1:-}" in
    up)   [[ $# -ge 3 ]] || die "usage: up PREFIX N [PER_SUBNET]"; cmd_up "$2" "$3" "${4:-1}" ;;
    down) [[ $# -eq 2 ]] || die "usage: down PREFIX"; cmd_down "$2" ;;
    exec) [[ $# -ge 4 ]] || die "usage: exec PREFIX hK|router CMD..."; shift; p="$1"; w="$2"; shift 2; cmd_exec "$p" "$w" "$@" ;;
    list) [[ $# -eq 2 ]] || die "usage: list PREFIX"; check_prefix "$2"; ours "$2" ;;
    *) die "usage: netns.sh up|down|exec|list ..." ;;
esac
