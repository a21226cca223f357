#!/usr/bin/env bash
# Weir SQL against Flink 2.3 (PyFlink), side by side, over the same CSV files of Nexmark bids
# (and auctions, for q4 and q9).
#
#   bench/sql/compare.sh [EVENTS] [QUERY ...]       (default: 4000000 events; every query here)
#
# Needs a release build (`cargo build --release -p weir-cluster --bin weir`) and a PyFlink venv
# (FLINK_PYTHON, default /tmp/venv-flink/bin/python; `pip install apache-flink==2.3.0`) with
# ../shared/peers/flink/run_sql.py (FLINK_RUN_SQL). Weir writes the bids with its Nexmark
# generator (one slot, so the file is in time order); each query then runs three times on Weir
# (wall time, parallelism 1) and twice on Flink (net runtime, parallelism 1), into blackhole.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
weir="$here/../../target/release/weir"
python="${FLINK_PYTHON:-/tmp/venv-flink/bin/python}"
run_sql="${FLINK_RUN_SQL:-$here/../../../shared/peers/flink/run_sql.py}"
events="${1:-4000000}"
shift || true
queries=("$@")
[ ${#queries[@]} -eq 0 ] && queries=(q0 q1 q2 tumble q5hop q7 q11 q4 q9 q15 q17 q18 q19)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
sed "s#\${OUT}#$work#; s#\${EVENTS}#$events#" "$here/export_bids.sql" > "$work/export.sql"
"$weir" sql -f "$work/export.sql" --parallelism 1 > "$work/export.log" 2>&1 || { cat "$work/export.log"; exit 1; }
cat $(ls -d "$work"/bids/part-* | sort) > "$work/bids.csv"
cat $(ls -d "$work"/bids_full/part-* | sort) > "$work/bids_full.csv"
cat $(ls -d "$work"/auctions/part-* | sort) > "$work/auctions.csv"
echo "input: $(wc -l < "$work/bids.csv") bids, $(wc -l < "$work/auctions.csv") auctions"
for q in "${queries[@]}"; do
    # A first line `-- over: FILE` puts FILE's tables first (the tables several queries share).
    over="$(sed -n '1s/^-- over: //p' "$here/$q.sql")"
    cat ${over:+"$here/$over"} "$here/$q.sql" \
        | sed "s#\${BIDS}#$work/bids.csv#; s#\${BIDS_FULL}#$work/bids_full.csv#; s#\${AUCTIONS}#$work/auctions.csv#" \
        > "$work/$q.sql"
    for _ in 1 2 3; do
        rm -rf "$work/checkpoints"
        "$weir" sql -f "$work/$q.sql" --parallelism 1 --checkpoint-dir "$work/checkpoints" 2>&1 \
            | awk -v q="$q" '/wall time/ {print "weir  " q " " $3 " s"}'
    done
    for _ in 1 2; do
        "$python" "$run_sql" "$work/$q.sql" 2>/dev/null | tail -1 \
            | "$python" -c "import json, sys; print('flink $q', json.loads(sys.stdin.read())['net_runtime_s'], 's')"
    done
done
