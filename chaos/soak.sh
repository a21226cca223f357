#!/usr/bin/env bash
# Soak against a real multi-process cluster on loopback: a coordinator and three workers as
# processes, the main job running long, workers and the coordinator SIGKILLed again and again
# (a replacement started after each kill), then the committed output checked against the
# sequential reference. CI runs the short form (4 kills) as part of `cargo test --workspace`.
#
#   chaos/soak.sh                 # 30 kills over ~40 M events (release build)
#   chaos/soak.sh 100 150000000   # kills, events
set -euo pipefail
cd "$(dirname "$0")/.."
export WEIR_SOAK_KILLS="${1:-30}"
export WEIR_SOAK_EVENTS="${2:-40000000}"
exec cargo test --release -p weir-cluster --test cluster soak_repeated_sigkills -- --nocapture
