#!/bin/sh
# Durable publishing, side by side: our server with --data-dir under each
# --fsync mode, memory only, on Redis with AOF `appendfsync always`, and
# durable-streams-server (WAL and --durability memory), each loaded by wrk
# with 1, 8 and 64 keep-alive connections POSTing 100-byte bodies.
# Then start-up time with 100,000 retained events, and disk bytes per event.
#
#   cargo build --release -p sse-server
#   cargo install durable-streams          # durable-streams-server
#   apt-get install wrk redis-server
#   deploy/bench-durable.sh [DURATION] [RUNS]     # default 10s 3
#
# Prints one line per target and concurrency: the median publishes/s of
# RUNS runs, then every run's figure. Uses ports 3201-3202 and 6398 on
# 127.0.0.1, and a data directory under $TMPDIR (the same disk for all).
set -eu

DURATION=${1:-10s}
RUNS=${2:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
DS=${DS:-$(command -v durable-streams-server || echo "$HOME/.cargo/bin/durable-streams-server")}
WORK=$(mktemp -d)
PID=""
BODY=$(head -c 100 /dev/zero | tr '\0' 'x')

cleanup() {
    [ -z "$PID" ] || { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

wait_http() {
    i=0
    until curl -s -o /dev/null "$1" 2>/dev/null; do
        i=$((i + 1))
        [ "$i" -lt 300 ] || { echo "no answer from $1" >&2; exit 1; }
        sleep 0.05
    done
}

stop() {
    [ -z "$PID" ] || { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
    PID=""
}

cat >"$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.body = "$BODY"
wrk.headers["Content-Type"] = "text/plain"
EOF

# Median publishes/s of RUNS wrk runs: LABEL URL
measure() {
    label=$1
    url=$2
    for conns in 1 8 64; do
        threads=$([ "$conns" -eq 1 ] && echo 1 || echo 2)
        rates=""
        run=0
        while [ "$run" -lt "$RUNS" ]; do
            out=$(wrk -t "$threads" -c "$conns" -d "$DURATION" -s "$WORK/post.lua" "$url")
            rate=$(echo "$out" | awk '/Requests\/sec/ {printf "%d", $2}')
            bad=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
            [ -z "$bad" ] || rate="$rate(${bad}-non-2xx)"
            rates="$rates $rate"
            run=$((run + 1))
        done
        median=$(echo "$rates" | tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
        printf '%-28s %3s publishers  median %7s/s  runs:%s\n' "$label" "$conns" "$median" "$rates"
    done
}

ours() { # LABEL ARGS...
    label=$1
    shift
    rm -rf "$WORK/data"
    "$BIN/sse-server" --addr 127.0.0.1:3201 --tick 0 "$@" 2>>"$WORK/server.log" &
    PID=$!
    wait_http http://127.0.0.1:3201/healthz
    measure "$label" "http://127.0.0.1:3201/publish?topic=bench"
    stop
}

ours "ours --fsync always" --data-dir "$WORK/data" --fsync always
ours "ours --fsync everysec" --data-dir "$WORK/data" --fsync everysec
ours "ours --fsync no" --data-dir "$WORK/data" --fsync no
ours "ours memory only"

if command -v redis-server >/dev/null; then
    mkdir -p "$WORK/redis"
    redis-server --port 6398 --bind 127.0.0.1 --dir "$WORK/redis" --appendonly yes \
        --appendfsync always --save "" --daemonize no --logfile redis.log &
    REDIS=$!
    sleep 0.5
    ours "ours on Redis AOF always" --broker redis://127.0.0.1:6398
    kill "$REDIS"
    wait "$REDIS" 2>/dev/null || true
fi

if [ -x "$DS" ]; then
    for mode in wal memory; do
        rm -rf "$WORK/ds"
        "$DS" --port 3202 --data-dir "$WORK/ds" --durability "$mode" 2>>"$WORK/ds.log" >&2 &
        PID=$!
        wait_http http://127.0.0.1:3202/bench
        curl -fsS -X PUT -H 'Content-Type: text/plain' http://127.0.0.1:3202/bench >/dev/null
        measure "durable-streams $mode" http://127.0.0.1:3202/bench
        stop
    done
fi

# Disk bytes per event, then start-up with 100,000 retained events.
rm -rf "$WORK/data"
"$BIN/sse-server" --addr 127.0.0.1:3201 --tick 0 --history 1000000 --data-dir "$WORK/data" \
    --fsync no 2>>"$WORK/server.log" &
PID=$!
wait_http http://127.0.0.1:3201/healthz
published() {
    curl -s http://127.0.0.1:3201/metrics | awk '/^sse_events_published_total/ {print $2}'
}
wrk -t 2 -c 64 -d 120s -s "$WORK/post.lua" "http://127.0.0.1:3201/publish?topic=bench" >/dev/null &
WRK=$!
until [ "$(published)" -ge 110000 ] 2>/dev/null; do sleep 0.5; done
kill "$WRK"
wait "$WRK" 2>/dev/null || true
events=$(published)
stop
bytes=$(cat "$WORK"/data/*.log | wc -c)
printf 'disk: %s bytes in %s segments for %s events with 100-byte data on topic "bench": %s bytes per event\n' \
    "$bytes" "$(ls "$WORK"/data/*.log | wc -l)" "$events" "$((bytes / events))"
for run in 1 2 3; do
    start=$(date +%s%N)
    "$BIN/sse-server" --addr 127.0.0.1:3201 --tick 0 --history 100000 --data-dir "$WORK/data" \
        2>>"$WORK/server.log" &
    PID=$!
    wait_http http://127.0.0.1:3201/healthz
    end=$(date +%s%N)
    printf 'start-up, %s events on disk, 100,000 retained, run %s: %s ms to the first answer\n' \
        "$events" "$run" "$(((end - start) / 1000000))"
    stop
done
