#!/usr/bin/env python3
"""Per-checkpoint size and duration from a run's debug log, for incremental (RocksDB) against
full (memory backend) checkpoints at growing state sizes.

    WEIR_LOG=weir_cluster=debug weir-example run dedup ... 2> run.log
    python3 bench/scripts/checkpoint_sizes.py run.log [--every 10]

For each checkpoint: the state it covers (all slots' state files plus every shared file they
name), what was uploaded for it, and the time from trigger to completion (`_metadata` written).
"""
import re
import sys
from datetime import datetime

ANSI = re.compile(r"\x1b\[[0-9;]*m")
TIME = re.compile(r"^(\S+Z)")


def stamp(line):
    return datetime.fromisoformat(TIME.match(line).group(1).replace("Z", "+00:00"))


def main():
    path = sys.argv[1]
    every = int(sys.argv[sys.argv.index("--every") + 1]) if "--every" in sys.argv else 1
    triggered, completed, state, uploaded = {}, {}, {}, {}
    for raw in open(path, errors="replace"):
        line = ANSI.sub("", raw)
        if not TIME.match(line):
            continue
        checkpoint = re.search(r"checkpoint=(\d+)", line)
        if not checkpoint:
            continue
        checkpoint = int(checkpoint.group(1))
        if "triggering checkpoint" in line:
            triggered[checkpoint] = stamp(line)
        elif "checkpoint complete" in line:
            completed[checkpoint] = stamp(line)
        elif "slot snapshot uploaded" in line:
            file = int(re.search(r" bytes=(\d+)", line).group(1))
            shared = re.search(r"shared_bytes=(\d+)", line)
            state[checkpoint] = state.get(checkpoint, 0) + file + (int(shared.group(1)) if shared else 0)
            # The state file always goes up; of the shared files, only the new ones.
            new = int(re.search(r"uploaded=(\d+)", line).group(1))
            uploaded[checkpoint] = uploaded.get(checkpoint, 0) + file + new
    done = sorted(c for c in completed if c in triggered and c in state)
    print("| checkpoint | state (MB) | uploaded (MB) | uploaded / state | trigger to complete (ms) |")
    print("|---|---|---|---|---|")
    for checkpoint in done:
        if checkpoint % every and checkpoint != done[-1]:
            continue
        ms = (completed[checkpoint] - triggered[checkpoint]).total_seconds() * 1000
        total, new = state[checkpoint], uploaded[checkpoint]
        print(f"| {checkpoint} | {total / 1e6:.1f} | {new / 1e6:.1f} | {new / max(total, 1):.0%} | {ms:.0f} |")


if __name__ == "__main__":
    main()
