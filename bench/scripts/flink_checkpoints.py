#!/usr/bin/env python3
"""Flink's side of the checkpoint-size comparison: runs bench/scripts/flink_dedup.sql in a local
PyFlink mini-cluster (../shared/peers/flink) with RocksDB and a checkpoint every INTERVAL, polls
its REST API, and prints every checkpoint's full state size, the size it uploaded (incremental),
and its end-to-end duration, as Flink's own statistics give them.

    python3 bench/scripts/flink_checkpoints.py PEER_DIR EVENTS [--full] [--interval 2s] [--every 10]

PEER_DIR holds run_sql.py and .venv-flink; --full turns incremental checkpoints off.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

peer, events = sys.argv[1], int(sys.argv[2])
full = "--full" in sys.argv
interval = sys.argv[sys.argv.index("--interval") + 1] if "--interval" in sys.argv else "2s"
every = int(sys.argv[sys.argv.index("--every") + 1]) if "--every" in sys.argv else 1
port = 18081
script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flink_dedup.sql")
checkpoints = tempfile.mkdtemp(prefix="flink-checkpoints-")
command = [
    os.path.join(peer, ".venv-flink/bin/python"), os.path.join(peer, "run_sql.py"), script,
    "--var", f"EVENTS={events}", "--var", "RATE=1000000000",
    "--set", "state.backend.type=rocksdb",
    "--set", f"execution.checkpointing.incremental={'false' if full else 'true'}",
    "--set", f"execution.checkpointing.interval={interval}",
    "--set", f"execution.checkpointing.dir=file://{checkpoints}",
    "--set", f"rest.port={port}",
    "--set", "web.checkpoints.history=10000",
]
# Its output goes to a file: a pipe read only at the end could fill and stall the job.
output = tempfile.TemporaryFile(mode="w+")
job = subprocess.Popen(command, stdout=output, stderr=subprocess.DEVNULL, text=True)


def get(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
        return json.load(response)


history = {}
while job.poll() is None:
    try:
        for running in get("/jobs")["jobs"]:
            for entry in get(f"/jobs/{running['id']}/checkpoints").get("history", []):
                if entry.get("status") == "COMPLETED":
                    history[entry["id"]] = entry
    except OSError:
        pass
    time.sleep(0.5)
output.seek(0)
print(output.read().strip())
print("(checkpoints completed in the last half second before the job ended may be missing)")
print(f"{'checkpoint':>10} {'state MiB':>10} {'uploaded MiB':>13} {'duration ms':>12}")
for id in sorted(history):
    if id % every and id != max(history):
        continue
    entry = history[id]
    print(f"{id:>10} {entry['state_size'] / 2**20:>10.1f} {entry['checkpointed_size'] / 2**20:>13.1f} "
          f"{entry['end_to_end_duration']:>12}")
subprocess.run(["rm", "-rf", checkpoints])
