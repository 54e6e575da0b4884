#!/usr/bin/env bash
# bench/swarm-sim.sh — benchmark (c) of issue #5: the swarm in the deterministic simulator.
#
# Usage: bench/swarm-sim.sh [SIZE=1G] [PEERS=32] [extra swarm_sim arguments...]
# 1 seed + PEERS fetchers, each node with 100 Mbit/s up AND down (its access link, shared by
# all its connections), 10 ms one way, no loss, synthetic data (no bytes kept in memory).
# Prints the virtual time of the last completion against the lower bound
# (1 + log2(N)/M) · F/u, their ratio (target: <= 1.3), and the wall time of the simulation.
# The reference here is the bound, not another tool: no real network is involved.
set -euo pipefail
SIZE=${1:-1G}
PEERS=${2:-32}
shift $(( $# > 2 ? 2 : $# ))
ROOT_DIR=$(cd "$(dirname "$0")/.." && pwd)
(cd "$ROOT_DIR" && cargo build --release -q -p st-engine --example swarm_sim)
"$ROOT_DIR/target/release/examples/swarm_sim" --size "$SIZE" --peers "$PEERS" "$@"
