#!/usr/bin/env bash
# make example-http: loads the HTTPCounter cluster from loopback with ab (bounded:
# a fixed number of requests, and a time limit), once per variant and round, checks
# that the counter equals the number of successful responses (for the variants that
# lock), then runs mutex at concurrency 400, and prints req/s per variant (the
# median of ROUNDS rounds; the rounds interleave the variants, so a drift of the
# machine's speed touches them all alike), then issue 27's ratios with met / missed
# and the load (uptime): 4-worker mutex >= 0.8x no lock, >= the blocking withLock,
# >= one worker with mutex. Each server first serves WARMUP requests that are not
# timed (connections, page faults, the allocator's first growth); the counter check
# counts them. Every process it starts is stopped (the server's parent stops its
# workers).
set -u
BIN=${1:?usage: load.sh PATH-TO-HTTPCounter}
WORKERS=${WORKERS:-4}
REQUESTS=${REQUESTS:-40000}
WARMUP=${WARMUP:-2000}
ROUNDS=${ROUNDS:-3}
CONCURRENCY=${CONCURRENCY:-32}
PORT=${PORT:-18089}
KEY=${KEY:-0x48545443}
status=0
server=""
cleanup() { if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then kill -TERM "$server"; wait "$server"; fi; }
trap cleanup EXIT

declare -A RPS    # VARIANT/WORKERS/CONCURRENCY → the rounds' req/s, space-separated
ab_field() { awk -v f="$1" -v n="$2" '$0 ~ "^" f ":" {print $n}' "$3"; }
run() {  # run VARIANT CONCURRENCY [WORKERS] → one result line; req/s appended to RPS[VARIANT/WORKERS/CONCURRENCY]
    local variant=$1 concurrency=$2 workers=${3:-$WORKERS} log out warm
    log=$(mktemp); out=$(mktemp); warm=$(mktemp)
    "$BIN" serve --variant "$variant" --workers "$workers" --port "$PORT" --key "$KEY" >"$log" 2>&1 &
    server=$!
    for _ in $(seq 1 600); do grep -q '^ready' "$log" && break; kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
    if ! grep -q '^ready' "$log"; then echo "example-http: the $variant server did not start:"; cat "$log"; status=1; return; fi
    timeout 120 ab -k -q -n "$WARMUP" -c "$concurrency" -s 30 "http://127.0.0.1:$PORT/" >"$warm" 2>&1
    timeout 300 ab -k -q -n "$REQUESTS" -c "$concurrency" -s 30 "http://127.0.0.1:$PORT/" >"$out" 2>&1
    kill -TERM "$server"; wait "$server"; server=""
    local complete failed non2xx rps counter ok wcomplete wfailed wnon2xx
    complete=$(ab_field "Complete requests" 3 "$out")
    failed=$(ab_field "Failed requests" 3 "$out")
    non2xx=$(ab_field "Non-2xx responses" 3 "$out")
    rps=$(ab_field "Requests per second" 4 "$out")
    wcomplete=$(ab_field "Complete requests" 3 "$warm")
    wfailed=$(ab_field "Failed requests" 3 "$warm")
    wnon2xx=$(ab_field "Non-2xx responses" 3 "$warm")
    counter=$(sed -n 's/^counter=//p' "$log")
    : "${complete:=0}" "${failed:=0}" "${non2xx:=0}" "${rps:=0}" "${counter:=-1}"
    : "${wcomplete:=0}" "${wfailed:=0}" "${wnon2xx:=0}"
    failed=$((failed + wfailed)); non2xx=$((non2xx + wnon2xx))
    ok=$((complete + wcomplete - failed - non2xx))
    local check="counter == successes"
    if [ "$variant" = none ]; then
        check="no lock: $((ok - counter)) updates lost"
    elif [ "$counter" != "$ok" ]; then
        check="MISMATCH: counter $counter, successes $ok"; status=1
    fi
    if [ "$failed" != 0 ] || [ "$non2xx" != 0 ]; then status=1; fi
    RPS["$variant/$workers/$concurrency"]+="$rps "
    printf '%-9s w=%-2s c=%-4s %9s req/s  complete=%s+%s failed=%s non2xx=%s counter=%s  %s\n' \
        "$variant" "$workers" "$concurrency" "$rps" "$wcomplete" "$complete" "$failed" "$non2xx" "$counter" "$check"
    rm -f "$log" "$out" "$warm"
}
median() { tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{v[NR] = $1} END {print (NR == 0) ? 0 : (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo "HTTPCounter: $WORKERS workers on 127.0.0.1:$PORT, ab -k -n $REQUESTS after $WARMUP untimed, $ROUNDS rounds; load before (uptime):$(uptime | sed 's/.*load average://')"
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round:"
    for variant in none mutex withLock update; do run "$variant" "$CONCURRENCY"; done
    run mutex "$CONCURRENCY" 1
done
run mutex 400
echo "median req/s of $ROUNDS rounds:"
for config in none/$WORKERS mutex/$WORKERS withLock/$WORKERS update/$WORKERS mutex/1; do
    RPS["$config/$CONCURRENCY"]=$(median "${RPS["$config/$CONCURRENCY"]:-}")
    printf '  %-12s c=%-4s %9.0f req/s\n' "$config" "$CONCURRENCY" "${RPS["$config/$CONCURRENCY"]}"
done

# Issue 27's targets, as ratios of this run (withLock is the blocking withBlockingLock).
target() {  # target TEXT A B LIMIT → "[met|missed] TEXT: A / B = ratio (target >= LIMIT)"
    awk -v text="$1" -v a="$2" -v b="$3" -v limit="$4" 'BEGIN {
        ratio = (b > 0) ? a / b : 0
        printf "[%s] %s: %.0f / %.0f req/s = %.2fx (target >= %sx)\n", (b > 0 && ratio >= limit) ? "met" : "missed", text, a, b, ratio, limit }'
}
mutex=${RPS["mutex/$WORKERS/$CONCURRENCY"]:-0}
echo "Issue 27 targets ($WORKERS workers, c=$CONCURRENCY):"
target "mutex vs no lock" "$mutex" "${RPS["none/$WORKERS/$CONCURRENCY"]:-0}" 0.8
target "mutex vs blocking withLock" "$mutex" "${RPS["withLock/$WORKERS/$CONCURRENCY"]:-0}" 1
target "mutex, $WORKERS workers vs 1 worker" "$mutex" "${RPS["mutex/1/$CONCURRENCY"]:-0}" 1
echo "load after (uptime):$(uptime | sed 's/.*load average://'); the counter checks and 0 errors at c=400 are above (exit status)"
exit $status
