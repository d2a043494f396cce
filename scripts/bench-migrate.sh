#!/bin/sh
# The migration benchmark (docs/benchmarks.md, "Migration"): a Synthea CSV
# export of PATIENTS patients (about 1,000 source rows each) through every
# stage of `hearth migrate` into the embedded store, timing each step with
# its peak resident memory.
#
#   cargo build --release -p hearth
#   scripts/bench-migrate.sh [PATIENTS [WORK_DIR]]     # default 1000, a temporary folder
#   BATCH=10000 scripts/bench-migrate.sh ...            # source records per transaction (default 50000)
#
# The steps are cumulative (each `migrate run` extracts again): the time of
# a stage is its step minus the step before (convert = convert - extract...).
set -eu
PATIENTS=${1:-1000}
WORK=${2:-$(mktemp -d)}
HEARTH=${HEARTH:-target/release/hearth}
rm -rf "$WORK/proj" "$WORK/data"
mkdir -p "$WORK"
"$HEARTH" migrate init "$WORK/proj" --preset synthea-csv > /dev/null

step() {
    name=$1
    shift
    /usr/bin/time -f "%e %M" -o "$WORK/time.$name" "$@" > "$WORK/out.$name"
    read -r seconds rss < "$WORK/time.$name"
    printf '%-10s %8s s  peak RSS %6d MiB\n' "$name" "$seconds" $((rss / 1024))
}

step sample "$HEARTH" migrate sample --layout synthea-csv --out "$WORK/proj/csv" --patients "$PATIENTS" --seed 1 --quiet
step extract "$HEARTH" migrate check "$WORK/proj"
step convert "$HEARTH" migrate run "$WORK/proj" --dry-run --until convert
step validate "$HEARTH" migrate run "$WORK/proj" --dry-run
# A first load into a store nothing else writes to: large transactions
# (crates/migrate/src/load.rs, DEFAULT_BATCH_RECORDS).
BATCH=${BATCH:-50000}
# Each full run's stage times, from its report (a rerun overwrites it).
stages() {
    cp "$WORK/proj/reports/reconciliation.json" "$WORK/reconciliation.$1.json"
    printf '  stages of the %s run:' "$1"
    tr -d ' \n' < "$WORK/reconciliation.$1.json" | grep -o '"stage":"[a-z-]*","seconds":[0-9.e-]*' |
        sed 's/"stage":"\([a-z-]*\)","seconds":/\1 /' | awk '{ printf " %s %.1f s,", $1, $2 }'
    echo
}
step load "$HEARTH" migrate run "$WORK/proj" --data-dir "$WORK/data" --quiet --batch "$BATCH"
stages load
step rerun "$HEARTH" migrate run "$WORK/proj" --data-dir "$WORK/data" --quiet --batch "$BATCH"
stages rerun
head -n 1 "$WORK/out.sample"
tail -n 1 "$WORK/out.validate"
tail -n 1 "$WORK/out.load"
tail -n 1 "$WORK/out.rerun"
echo "work folder: $WORK"
