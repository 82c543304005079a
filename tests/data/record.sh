#!/usr/bin/env bash
# Records the real logs under tests/data/ that the tools' golden tests read.
# Each scenario starts three `ra` processes with the card's commands plus
# `--log-format json` and a shared `--cs-file`, types at them through fifos as a
# person would at three terminals, and leaves. Run from the repository root
# after `cargo build --release`:
#
#   tests/data/record.sh readme      tests/data/readme          # ports 7000-7002
#   tests/data/record.sh sample      tests/data/trace           # ports 17000-17002
#   tests/data/record.sh contention  tests/data/trace/contention  # ports 17100-17102
#   tests/data/record.sh paused      tests/data/check/paused    # ports 17200-17202
#   tests/data/record.sh killed      tests/data/check/killed    # ports 17300-17302
#   tests/data/record.sh locks       tests/data/trace/locks     # ports 17400-17402
#
# then review the diff (times and ticket orders differ from run to run) and
# regenerate the golden outputs (RA_BLESS=1 cargo test --release --test tools).
set -euo pipefail

RA=${RA:-target/release/ra}
scenario=${1:?scenario: readme, sample, contention, paused or killed}
out=${2:?output directory}
mkdir -p "$out"
tmp=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

declare -A fd
# start PORT HOLD_MS [SEED_PORT]
start() {
    local port=$1 hold=$2 seed=${3:-}
    local join=()
    [[ -n $seed ]] && join=(--join ":$seed")
    mkfifo "$tmp/in-$port"
    "$RA" --bind ":$port" "${join[@]}" --log-format json --hold-ms "$hold" \
        --cs-file "$out/cs.jsonl" <"$tmp/in-$port" >"$tmp/out-$port" 2>"$out/node-$port.jsonl" &
    pids+=($!)
    eval "pid_$port=$!"
    exec {f}>"$tmp/in-$port"
    fd[$port]=$f
}
type_at() { echo "$2" >&"${fd[$1]}"; }
leave_all() {
    for port in "$@"; do type_at "$port" leave 2>/dev/null || true; done
    sleep 4
}

rm -f "$out/cs.jsonl" "$out"/node-*.jsonl
case $scenario in
readme | sample | contention)
    case $scenario in
    readme) p=7000 presses=1 hold=1000 ;;
    sample) p=17000 presses=1 hold=300 ;;
    contention) p=17100 presses=4 hold=50 ;;
    esac
    start $p "$hold"
    start $((p + 1)) "$hold" $p
    start $((p + 2)) "$hold" $((p + 1))
    sleep 6 # the founder founds after 4 s
    for ((i = 0; i < presses; i++)); do
        type_at $p ""
        type_at $((p + 1)) ""
        type_at $((p + 2)) ""
    done
    sleep $((3 * presses * hold / 1000 + 2))
    leave_all $p $((p + 1)) $((p + 2))
    ;;
paused | killed)
    # The founder holds for long; while it holds it is stopped (or killed), the
    # others declare it failed, decide a set without it, and one of them enters.
    p=$([[ $scenario == paused ]] && echo 17200 || echo 17300)
    start $p 5000
    start $((p + 1)) 100 $p
    start $((p + 2)) 100 $((p + 1))
    sleep 6
    type_at $p ""
    sleep 0.5
    pid_var=pid_$p
    if [[ $scenario == paused ]]; then
        kill -STOP "${!pid_var}"
    else
        kill -KILL "${!pid_var}"
    fi
    type_at $((p + 1)) ""
    sleep 6
    if [[ $scenario == paused ]]; then
        kill -CONT "${!pid_var}"
        sleep 3
        leave_all $p $((p + 1)) $((p + 2))
    else
        leave_all $((p + 1)) $((p + 2))
    fi
    ;;
locks)
    # Two locks, `jobs` and `backup`, taken with `ra lock` twice each from every
    # node at once: entries on the two locks proceed in parallel.
    p=17400
    start $p 100
    start $((p + 1)) 100 $p
    start $((p + 2)) 100 $((p + 1))
    sleep 6
    for node in $p $((p + 1)) $((p + 2)); do
        for name in jobs backup; do
            ("$RA" lock --node ":$node" "$name" -- sleep 0.1 && "$RA" lock --node ":$node" "$name" -- sleep 0.1) >/dev/null 2>&1 &
        done
    done
    sleep 4
    leave_all $p $((p + 1)) $((p + 2))
    ;;
*)
    echo "unknown scenario $scenario" >&2
    exit 2
    ;;
esac
echo "recorded $scenario in $out:"
wc -l "$out"/*.jsonl
