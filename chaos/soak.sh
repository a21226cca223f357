#!/usr/bin/env bash
# Soak against a real multi-process cluster: a coordinator and three workers as processes, the
# main job running long, faults injected again and again, then the committed output checked
# against the sequential reference. CI runs the short forms of both soaks as part of
# `cargo test --workspace`.
#
# Loopback (any machine): workers and the coordinator are SIGKILLed in turn, a replacement
# started after each kill.
#   chaos/soak.sh                         # 30 kills over ~40 M events (release build)
#   chaos/soak.sh 100 150000000           # kills, events
#
# Network namespaces (root and iproute2): each process in its own namespace joined by a bridge;
# workers are partitioned both ways or made deaf (one way), the coordinator is cut off, a
# worker's connections are reset (`ss -K`), and workers and the coordinator are SIGKILLed, in
# turn.
#   chaos/soak.sh --netns                 # 40 faults over ~150 M events
#   chaos/soak.sh --netns 100 400000000   # faults, events
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--netns" ]]; then
    export WEIR_SOAK_FAULTS="${2:-40}"
    export WEIR_SOAK_EVENTS="${3:-150000000}"
    exec cargo test --release -p weir-cluster --test cluster soak_partitions_and_sigkills -- --nocapture
fi
export WEIR_SOAK_KILLS="${1:-30}"
export WEIR_SOAK_EVENTS="${2:-40000000}"
exec cargo test --release -p weir-cluster --test cluster soak_repeated_sigkills -- --nocapture
