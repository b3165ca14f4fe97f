#!/usr/bin/env bash
# The server's Binance-compatible REST API (/api/v3/...) as the real ccxt client sees it:
#  1. tests/binance/ccxt_test.mjs posts deterministic trades to a server writing to its own
#     redis-server, then checks ccxt's loadMarkets, fetchOHLCV, the raw klines, fetchTicker(s),
#     fetchLastPrices and the errors of a bad interval and an unknown symbol against the candles
#     it computes itself (quote asset: the default, USD);
#  2. a second server, on an emptied Redis, with QUOTE_ASSET=USDT: ccxt's markets have that quote.
#   tests/test_binance_clients.sh SERVER_BINARY   (needs node and tests/binance/node_modules,
#                                                  which scripts/setup.sh installs, redis-server,
#                                                  redis-cli, curl and python3)
set -euo pipefail
server_binary=$1
root=$(cd "$(dirname "$0")/.." && pwd)
for tool in node redis-server redis-cli curl python3; do
    command -v "$tool" >/dev/null || {
        echo "test_binance_clients.sh: $tool is missing (scripts/setup.sh installs it)" >&2
        exit 1
    }
done
if [ ! -f "$root/tests/binance/node_modules/ccxt/package.json" ]; then
    echo "test_binance_clients.sh: tests/binance/node_modules/ccxt is missing: run" \
        "scripts/setup.sh (it runs npm ci in tests/binance)" >&2
    exit 1
fi

# shellcheck source=scripts/common.sh
source "$root/scripts/common.sh" # free_port, start_local_redis, start_server
work=$(mktemp -d)
stop_at_exit "$work"

start_local_redis "$work"
pids+=("$redis_pid")
redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG || {
    cat "$work/redis.log" >&2
    echo "test_binance_clients.sh: redis-server did not start" >&2
    exit 1
}


failed=0
run_node() { # run_node NAME [ARGS...]: the ccxt test against server NAME; on failure its log
    local name=$1 status=0
    shift
    node "$root/tests/binance/ccxt_test.mjs" "$server_url" "$@" || status=$?
    if [ "$status" -ne 0 ]; then
        echo "test_binance_clients.sh: the ccxt test failed (status $status); the server's log:" >&2
        tail -30 "$work/$name.log" >&2
        failed=$((failed + 1))
    fi
}

# ---- 1. the default quote asset, every check -------------------------------------------------
start_server "$server_binary" server-usd -u QUOTE_ASSET REDIS_ADDR="127.0.0.1:$redis_port"
QUOTE_ASSET=USD run_node server-usd
kill -TERM "$server_pid"
wait "$server_pid" || true

# ---- 2. QUOTE_ASSET=USDT, the markets ------------------------------------------------------
redis-cli -p "$redis_port" flushall >/dev/null
start_server "$server_binary" server-usdt -u QUOTE_ASSET REDIS_ADDR="127.0.0.1:$redis_port" \
    QUOTE_ASSET=USDT
QUOTE_ASSET=USDT run_node server-usdt --markets-only

if [ "$failed" -ne 0 ]; then
    echo "test_binance_clients.sh: $failed of the 2 runs failed" >&2
    exit 1
fi
echo "test_binance_clients.sh: every check passed"
