#!/bin/sh
# Measures the Redis broker with sse-bench: one instance on the memory
# broker, one instance on Redis, and three instances on Redis behind nginx
# (deploy/nginx/sse.conf with the ports replaced), at the same load.
#
#   cargo build --release -p sse-server -p sse-bench
#   deploy/measure-redis.sh [CLIENTS] [RATE] [DURATION]     # default 100 1000 10s
#
# Needs redis-server and nginx on PATH (Debian: /usr/sbin for nginx). Uses
# ports 3101-3103 (instances), 3100 (nginx), 6399 (Redis), all on 127.0.0.1.
# Prints one line of sse-bench --json per scenario to stdout.
set -eu

CLIENTS=${1:-100}
RATE=${2:-1000}
DURATION=${3:-10s}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
WORK=$(mktemp -d)
PIDS=""
REDIS=""

cleanup() {
    for pid in $PIDS $REDIS; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

wait_http() {
    i=0
    until curl -fsS -o /dev/null "$1" 2>/dev/null; do
        i=$((i + 1))
        [ "$i" -lt 100 ] || { echo "no answer from $1" >&2; exit 1; }
        sleep 0.1
    done
}

server() { # ADDR [ARGS...]
    addr=$1; shift
    "$BIN/sse-server" --addr "$addr" --tick 0 "$@" 2>>"$WORK/servers.log" &
    PIDS="$PIDS $!"
    wait_http "http://$addr/healthz"
}

stop_servers() {
    for pid in $PIDS; do kill "$pid" 2>/dev/null || true; done
    for pid in $PIDS; do wait "$pid" 2>/dev/null || true; done
    PIDS=""
}

bench() { # LABEL URL
    printf '%s ' "$1"
    "$BIN/sse-bench" --clients "$CLIENTS" --rate "$RATE" --duration "$DURATION" \
        --url "$2" --json 2>/dev/null || true
}

# 1. Memory broker, one instance.
server 127.0.0.1:3101
bench memory-1 http://127.0.0.1:3101
stop_servers

# 2. Redis broker, one instance.
redis-server --port 6399 --bind 127.0.0.1 --dir "$WORK" --save "" \
    --appendonly no --daemonize no --logfile "$WORK/redis.log" &
REDIS=$!
i=0
until redis-cli -p 6399 ping >/dev/null 2>&1 || [ "$i" -gt 50 ]; do i=$((i + 1)); sleep 0.1; done
server 127.0.0.1:3101 --broker redis://127.0.0.1:6399
bench redis-1 http://127.0.0.1:3101
stop_servers

# 3. Redis broker, three instances behind nginx with the sample config.
for port in 3101 3102 3103; do
    server 127.0.0.1:$port --broker redis://127.0.0.1:6399
done
sed -e 's/127.0.0.1:3001/127.0.0.1:3101/; s/127.0.0.1:3002/127.0.0.1:3102/' \
    -e 's/127.0.0.1:3003/127.0.0.1:3103/; s/listen 8080;/listen 127.0.0.1:3100;/' \
    "$ROOT/deploy/nginx/sse.conf" >"$WORK/sse.conf"
cat >"$WORK/nginx.conf" <<EOF
daemon off;
master_process off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/client_body;
    proxy_temp_path $WORK/proxy;
    fastcgi_temp_path $WORK/fastcgi;
    uwsgi_temp_path $WORK/uwsgi;
    scgi_temp_path $WORK/scgi;
    include $WORK/sse.conf;
}
EOF
"$NGINX" -p "$WORK" -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf" &
PIDS="$PIDS $!"
wait_http http://127.0.0.1:3100/healthz
bench redis-3-nginx http://127.0.0.1:3100
stop_servers
