#!/usr/bin/env bash
# The main job: the aggregator server fed with trades, showing what it achieves.
#
#   ./scripts/run.sh                 installs what is missing, builds (Release, build/release),
#                                    uses the Redis at REDIS_ADDR (default 127.0.0.1:6379) if one
#                                    answers or starts its own on loopback, starts the server,
#                                    drives it with the load generator (live progress line), runs
#                                    scripts/performance_test.sh, reads candles back from Redis,
#                                    prints a summary and stops everything it started.
#   ./scripts/run.sh quickstart ...  the library alone: the quickstart example (arguments passed on)
#
# Settings (environment): RUN_SECONDS (default 20) of load; LOADGEN_* for the load generator
# (see `tradeagg_loadgen --help`; e.g. LOADGEN_RATE=200000, LOADGEN_TOKENS=50000); every server
# variable of the README (AGGREGATOR_POLICY, GC_TARGET_PERCENTAGE, ...) is passed to the server.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh

if [ "${1:-}" = "quickstart" ]; then
    shift
    {
        ./scripts/setup.sh
        cmake_configure build/release "${release_args[@]}"
        cmake --build build/release -j "${TRADEAGG_JOBS:-2}" --target tradeagg_quickstart
    } >&2
    exec build/release/examples/tradeagg_quickstart "$@"
fi
if [ $# -gt 0 ]; then
    echo "run.sh: unknown argument '$1' (run.sh, or run.sh quickstart [args])" >&2
    exit 2
fi

say() { printf '\n==> %s\n' "$*"; }

say "set-up and build (logs: build/run-build.log)"
mkdir -p build
{
    ./scripts/setup.sh
    cmake_configure build/release "${release_args[@]}"
    cmake --build build/release -j "${TRADEAGG_JOBS:-2}" \
        --target tradeagg_aggregator_server tradeagg_loadgen
} >build/run-build.log 2>&1 || {
    tail -40 build/run-build.log >&2
    echo "run.sh: the build failed; the whole log is build/run-build.log" >&2
    exit 1
}
server_bin=build/release/examples/aggregator_server/tradeagg_aggregator_server
loadgen_bin=build/release/examples/loadgen/tradeagg_loadgen

work=$(mktemp -d /tmp/tradeagg-run-XXXXXX)
redis_pid=""
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null; then
        kill -TERM "$redis_pid" 2>/dev/null || true
        wait "$redis_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Redis: the one at REDIS_ADDR if it answers, otherwise our own on loopback.
redis_addr=${REDIS_ADDR:-127.0.0.1:6379}
redis_host=${redis_addr%:*}
redis_port=${redis_addr##*:}
if redis-cli -h "$redis_host" -p "$redis_port" ${REDIS_PASSWORD:+-a "$REDIS_PASSWORD"} \
    --no-auth-warning ping 2>/dev/null | grep -q PONG; then
    say "using the Redis at $redis_addr"
else
    start_local_redis "$work"
    redis_host=127.0.0.1
    redis_addr=$redis_host:$redis_port
    say "no Redis answers at ${REDIS_ADDR:-127.0.0.1:6379}: started redis-server on $redis_addr"
fi
export REDIS_ADDR=$redis_addr

# The server, on HTTP_ADDR (default 127.0.0.1:8080, or a free port if that one is taken).
http_addr=${HTTP_ADDR:-127.0.0.1:8080}
if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(0 if s.connect_ex(('${http_addr%:*}', ${http_addr##*:}))==0 else 1)" 2>/dev/null; then
    http_addr=127.0.0.1:$(free_port)
fi
export HTTP_ADDR=$http_addr
export ADMIN_TOKEN=${ADMIN_TOKEN:-run-$RANDOM$RANDOM}
say "starting the server on http://$http_addr (log: $work/server.log is printed at the end)"
"$server_bin" >"$work/server.log" 2>&1 &
server_pid=$!
if ! wait_http "http://$http_addr/health" "$server_pid"; then
    cat "$work/server.log" >&2
    echo "run.sh: the server did not start" >&2
    exit 1
fi
grep -E 'config: (AGGREGATOR_POLICY|MAX_WORKERS|GC_TARGET|MEMORY_LIMIT|REDIS_ADDR)|listening' \
    "$work/server.log" | sed 's/^/    /'

# Load, with a live progress line from the server's own figures.
seconds=${RUN_SECONDS:-20}
say "load: ${seconds} s of trades over keep-alive HTTP (NDJSON batches)"
"$loadgen_bin" --url "$http_addr" --duration "$seconds" --probe /performance --json \
    >"$work/loadgen.json" \
    2>"$work/loadgen.err" &
loadgen_pid=$!
cat >"$work/progress.py" <<'PY'
import json, sys
prev, prev_w = float(sys.argv[1]), float(sys.argv[2])
p = json.load(sys.stdin)
pl, r = p["pipeline"], p.get("redis", {})
applied, written = pl["applied"], r.get("updates_written", 0)
print(f"{applied} {written} "
      f"trades/s {applied - prev:>10,.0f} | apply p99 {pl['apply_latency']['p99_ms']:6.2f} ms"
      f" | Redis writes/s {written - prev_w:>8,.0f} | active tokens {p['active_tokens']:>7,}"
      f" | heap in use {p['heap_inuse_mb']:6.1f} MB | resident {p['runtime']['resident_mb']:6.1f} MB")
PY
progress() {
    curl -fsS "http://$http_addr/performance" 2>/dev/null | python3 "$work/progress.py" "$1" "$2"
}
# On a terminal the line is rewritten in place; in a log, each update is a line of its own.
if [ -t 1 ]; then
    update_format='\r    %s'
else
    update_format='    %s\n'
fi
applied=0
written=0
while kill -0 "$loadgen_pid" 2>/dev/null; do
    sleep 1
    if line=$(progress "$applied" "$written"); then
        read -r applied written rest <<<"$line"
        # shellcheck disable=SC2059 # the format is one of the two above
        printf "$update_format" "$rest"
    fi
done
if [ -t 1 ]; then
    echo
fi
wait "$loadgen_pid" || {
    cat "$work/loadgen.err" >&2
    echo "run.sh: the load generator failed" >&2
    exit 1
}

# The server's own figures for the load, before anything else reaches it.
curl -fsS "http://$http_addr/performance" >"$work/performance.json" 2>/dev/null || echo '{}' >"$work/performance.json"

say "scripts/performance_test.sh (the seed's five steps)"
./scripts/performance_test.sh | sed 's/^/    /'

say "candles read back from Redis ($redis_addr)"
redis_cli=(redis-cli -h "$redis_host" -p "$redis_port")
if [ -n "${REDIS_PASSWORD:-}" ]; then
    redis_cli+=(-a "$REDIS_PASSWORD" --no-auth-warning)
fi
hot=$("${redis_cli[@]}" --scan --pattern "${REDIS_KEY_PREFIX:-tradeagg}:{*}:candle:1m:*" 2>/dev/null |
    head -1 || true)
if [ -n "$hot" ]; then
    token=${hot#*\{}
    token=${token%%\}*}
    for key in $("${redis_cli[@]}" --scan --pattern "${REDIS_KEY_PREFIX:-tradeagg}:{$token}:candle:1m:*" |
        sort | tail -2 || true); do
        echo "    $key"
        "${redis_cli[@]}" hgetall "$key" | paste - - | awk -F'\t' '{printf "        %-24s %s\n", $1, $2}'
    done
    echo "    GET /tokens/$token (from the server's memory):"
    cat >"$work/token.py" <<'PY'
import json, sys
t = json.load(sys.stdin)
for name, c in t["candles"].items():
    print(f"        {name:>4}  open {c['open']:<12g} high {c['high']:<12g} low {c['low']:<12g}"
          f" close {c['close']:<12g} trades {c['trades']}")
PY
    curl -fsS "http://$http_addr/tokens/$token" | python3 "$work/token.py"
else
    echo "    no candle keys found"
fi

say "stopping the server (SIGTERM)"
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=""
tail -1 "$work/server.log" | sed 's/^/    /'

say "summary"
python3 - "$work/loadgen.json" "$status" "$("${redis_cli[@]}" dbsize)" "$work/performance.json" <<'PY'
import json, sys
lg = json.load(open(sys.argv[1]))
perf = json.load(open(sys.argv[4]))
def g(*names):
    for n in names:
        if n in lg:
            return lg[n]
    return None
print(f"    trades accepted        {g('trades_accepted'):,} in {g('duration_s'):.1f} s"
      f" = {g('accepted_per_s'):,.0f} trades/s over HTTP")
lat = g('latency_ms') or {}
if lat:
    print(f"    response latency       p50 {lat.get('p50', 0):.2f} ms, p99 {lat.get('p99', 0):.2f} ms")
probe = g('probe')
if probe:
    pl = probe['latency_ms']
    print(f"    GET /performance       p50 {pl['p50']:.2f} ms, p99 {pl['p99']:.2f} ms under that load"
          f" ({probe['requests']} requests, {probe['non_2xx']} not 2xx)")
apply = (perf.get("pipeline") or {}).get("apply_latency")
if apply:
    print(f"    apply latency          p50 {apply['p50_ms']:.2f} ms, p99 {apply['p99_ms']:.2f} ms"
          " (accepted to aggregated, in the server)")
print(f"    Redis keys             {sys.argv[3]}")
print(f"    server exit status     {sys.argv[2]} ({'clean, everything written' if sys.argv[2] == '0' else 'see the log above'})")
PY
exit "$status"
