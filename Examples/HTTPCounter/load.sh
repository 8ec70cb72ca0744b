#!/usr/bin/env bash
# make example-http: loads the HTTPCounter cluster from loopback with ab (bounded:
# a fixed number of requests, and a time limit), once per variant, checks that the
# counter equals the number of successful responses (for the variants that lock),
# then runs mutex at concurrency 400, and prints req/s per variant. Every process
# it starts is stopped (the server's parent stops its workers).
set -u
BIN=${1:?usage: load.sh PATH-TO-HTTPCounter}
WORKERS=${WORKERS:-4}
REQUESTS=${REQUESTS:-20000}
CONCURRENCY=${CONCURRENCY:-32}
PORT=${PORT:-18089}
KEY=${KEY:-0x48545443}
status=0
server=""
cleanup() { if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then kill -TERM "$server"; wait "$server"; fi; }
trap cleanup EXIT

run() {  # run VARIANT CONCURRENCY → one result line
    local variant=$1 concurrency=$2 log out
    log=$(mktemp); out=$(mktemp)
    "$BIN" serve --variant "$variant" --workers "$WORKERS" --port "$PORT" --key "$KEY" >"$log" 2>&1 &
    server=$!
    for _ in $(seq 1 600); do grep -q '^ready' "$log" && break; kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
    if ! grep -q '^ready' "$log"; then echo "example-http: the $variant server did not start:"; cat "$log"; status=1; return; fi
    timeout 300 ab -k -q -n "$REQUESTS" -c "$concurrency" -s 30 "http://127.0.0.1:$PORT/" >"$out" 2>&1
    kill -TERM "$server"; wait "$server"; server=""
    local complete failed non2xx rps counter ok
    complete=$(awk '/^Complete requests:/ {print $3}' "$out")
    failed=$(awk '/^Failed requests:/ {print $3}' "$out")
    non2xx=$(awk '/^Non-2xx responses:/ {print $3}' "$out")
    rps=$(awk '/^Requests per second:/ {print $4}' "$out")
    counter=$(sed -n 's/^counter=//p' "$log")
    : "${complete:=0}" "${failed:=0}" "${non2xx:=0}" "${rps:=0}" "${counter:=-1}"
    ok=$((complete - failed - non2xx))
    local check="counter == successes"
    if [ "$variant" = none ]; then
        check="no lock: $((ok - counter)) updates lost"
    elif [ "$counter" != "$ok" ]; then
        check="MISMATCH: counter $counter, successes $ok"; status=1
    fi
    if [ "$failed" != 0 ] || [ "$non2xx" != 0 ]; then status=1; fi
    printf '%-9s c=%-4s %9s req/s  complete=%s failed=%s non2xx=%s counter=%s  %s\n' \
        "$variant" "$concurrency" "$rps" "$complete" "$failed" "$non2xx" "$counter" "$check"
    rm -f "$log" "$out"
}

echo "HTTPCounter: $WORKERS workers on 127.0.0.1:$PORT, ab -k -n $REQUESTS"
for variant in none mutex withLock update; do run "$variant" "$CONCURRENCY"; done
run mutex 400
exit $status
