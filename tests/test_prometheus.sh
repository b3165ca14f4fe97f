#!/usr/bin/env bash
# The server's /metrics as Prometheus sees it, with Debian's prometheus and promtool:
#  1. examples/prometheus/ (alert rules and scrape config) pass `promtool check`, and the rules'
#     unit tests (tests/prometheus/alerts_test.yml) pass `promtool test rules`;
#  2. `promtool check metrics` finds nothing in the exposition but the seed's own names, with
#     Redis and with REDIS_ADDR=off (where the process_* series are still there);
#  3. a real Prometheus on loopback scrapes the server every second while the load generator
#     sends trades at a fixed rate, loads the alert rules, and its HTTP API answers: up == 1,
#     a histogram_quantile of the apply latency and of the /trades request duration, and
#     rate() of the accepted-trades counter agreeing with the server's own count.
#   tests/test_prometheus.sh SERVER_BINARY LOADGEN_BINARY   (needs prometheus, promtool,
#                                                            redis-server, curl, python3)
set -euo pipefail
server_binary=$1
loadgen_binary=$2
root=$(cd "$(dirname "$0")/.." && pwd)
for tool in prometheus promtool redis-server redis-cli curl python3; do
    command -v "$tool" >/dev/null || {
        echo "test_prometheus.sh: $tool is missing (scripts/setup.sh installs it)" >&2
        exit 1
    }
done
# The interpreter itself, not a wrapper that would outlive a kill (pyenv shims fork).
python=$(python3 -c "import sys; print(sys.executable)")

# shellcheck source=tests/check.sh
source "$root/tests/check.sh"
# shellcheck source=scripts/common.sh
source "$root/scripts/common.sh" # free_port, start_server, stop_at_exit
work=$(mktemp -d)
stop_at_exit "$work"
wait_for() { # wait_for URL PID: until the URL answers 2xx, or the process is gone
    local _
    for _ in $(seq 300); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# ---- 1. the example configuration and the rules' unit tests --------------------------------
check "promtool check rules examples/prometheus/alerts.yml" \
    promtool check rules "$root/examples/prometheus/alerts.yml"
check "promtool check config examples/prometheus/prometheus.yml" \
    promtool check config "$root/examples/prometheus/prometheus.yml"
check "promtool test rules tests/prometheus/alerts_test.yml" \
    promtool test rules "$root/tests/prometheus/alerts_test.yml"

# ---- 2. the exposition, linted ---------------------------------------------------------------
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    --logfile "$work/redis.log" --daemonize no &
pids+=($!)
for _ in $(seq 100); do
    redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break
    sleep 0.05
done

seed_names='heap_alloc_mb|heap_inuse_mb|gc_cpu_fraction|num_goroutines|active_tokens|worker_count|redis_latency_avg_ms|redis_success_rate'

lint() { # lint FILE: promtool's complaints, less those about the seed's names, are none
    local complaints
    complaints=$(promtool check metrics <"$1" 2>&1 | grep -Ev "^($seed_names) " || true)
    if [ -n "$complaints" ]; then
        echo "$complaints" | sed 's/^/      /'
        return 1
    fi
}
has_series() { grep -Eq "^$2( |\\{)" "$1"; }
lacks_series() { ! grep -Eq "^$2( |\\{)" "$1"; }

start_server "$server_binary" server-off REDIS_ADDR=off ADMIN_TOKEN=secret
curl -fsS -X POST -H "Content-Type: application/x-ndjson" --data-binary \
    '{"token":"SOL","price":1.5,"quantity":2,"side":"buy","ts":'"$(date +%s)"'000,"id":1}' \
    "$server_url/trades" >/dev/null
curl -fsS "$server_url/metrics" >"$work/metrics-off.txt"
check "REDIS_ADDR=off: promtool check metrics finds only the seed's names" lint "$work/metrics-off.txt"
for name in process_cpu_seconds_total process_resident_memory_bytes process_open_fds \
    process_start_time_seconds tradeagg_apply_latency_seconds_bucket \
    tradeagg_handover_duration_seconds_bucket tradeagg_http_responses_total; do
    check "REDIS_ADDR=off: $name is there" has_series "$work/metrics-off.txt" "$name"
done
check "REDIS_ADDR=off: no tradeagg_redis_* series" \
    lacks_series "$work/metrics-off.txt" 'tradeagg_redis_[a-z_]*'
kill -TERM "$server_pid"
wait "$server_pid"

start_server "$server_binary" server-redis REDIS_ADDR="127.0.0.1:$redis_port" ADMIN_TOKEN=secret

# ---- 3. a real Prometheus scraping it under load ---------------------------------------------
prom_port=$(free_port)
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $root/examples/prometheus/alerts.yml
scrape_configs:
  - job_name: tradeagg
    static_configs:
      - targets: ["${server_url#http://}"]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
prom_pid=$!
pids+=("$prom_pid")
prom_url=http://127.0.0.1:$prom_port
wait_for "$prom_url/-/ready" "$prom_pid" || {
    tail -20 "$work/prometheus.log" >&2
    echo "test_prometheus.sh: prometheus did not start" >&2
    exit 1
}

# Prometheus applies a new set of targets a few seconds after it starts: the load begins once
# the server has been scraped.
scraped() {
    curl -fsS "$prom_url/api/v1/query?query=up%7Bjob%3D%22tradeagg%22%7D" 2>/dev/null |
        grep -q '"value":\[[0-9.]*,"1"\]'
}
for _ in $(seq 200); do
    scraped && break
    sleep 0.1
done
check "Prometheus scrapes the server" scraped

rate=40000
seconds=10
load_start=$(date +%s.%N)
"$loadgen_binary" --url "${server_url#http://}" --rate "$rate" --duration "$seconds" \
    --connections 2 --batch 500 --json >"$work/loadgen.json" 2>"$work/loadgen.err"
load_end=$(date +%s.%N)
# Three more scrapes, of a counter that no longer moves.
sleep 3.5
curl -fsS "$server_url/metrics" >"$work/metrics-redis.txt"
check "with Redis: promtool check metrics finds only the seed's names" lint "$work/metrics-redis.txt"
for name in tradeagg_redis_write_lag_seconds_bucket tradeagg_redis_commands_total; do
    check "with Redis: $name is there" has_series "$work/metrics-redis.txt" "$name"
done
curl -fsS "$server_url/performance" >"$work/performance.json"

"$python" - "$prom_url" "$work/loadgen.json" "$work/performance.json" "$load_start" \
    "$load_end" "$rate" <<'PY' || failures=$((failures + 1))
import json, math, sys, urllib.parse, urllib.request

prom, loadgen, perf, start, end, rate = sys.argv[1:7]
start, end, rate = float(start), float(end), float(rate)
lg = json.load(open(loadgen))
server = json.load(open(perf))
failed = 0


def query(expr, at=None):
    args = {"query": expr}
    if at is not None:
        args["time"] = f"{at:.3f}"
    url = f"{prom}/api/v1/query?{urllib.parse.urlencode(args)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        doc = json.load(r)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def check(name, ok, detail):
    global failed
    print(f"{'ok   ' if ok else 'FAIL '} {name}: {detail}")
    failed += 0 if ok else 1


def scalar(expr, at=None):
    result = query(expr, at)
    return float(result[0]["value"][1]) if len(result) == 1 else math.nan


up = query('up{job="tradeagg"}')
check("Prometheus: up == 1", len(up) == 1 and up[0]["value"][1] == "1", up)

rules = json.load(urllib.request.urlopen(f"{prom}/api/v1/rules", timeout=10))
loaded = [r for g in rules["data"]["groups"] for r in g["rules"]
          if r["type"] == "alerting" and r["health"] == "ok"]
check("Prometheus: the four alert rules are loaded and healthy", len(loaded) == 4,
      sorted(r["name"] for r in loaded))
firing = query("ALERTS")
check("Prometheus: no alert pending or firing", firing == [], firing)

mid = start + 0.7 * (end - start)  # well inside the load: a full window of it
p99 = scalar("histogram_quantile(0.99, sum by (le) "
             "(rate(tradeagg_apply_latency_seconds_bucket[5s])))", mid)
check("Prometheus: histogram_quantile(0.99) of the apply latency", 0 < p99 <= 10,
      f"{p99 * 1e3:.3f} ms")
p50 = scalar("histogram_quantile(0.5, sum by (le) "
             "(rate(tradeagg_http_request_duration_seconds_bucket{route=\"/trades\"}[5s])))", mid)
check("Prometheus: histogram_quantile(0.5) of POST /trades", 0 < p50 <= 10, f"{p50 * 1e3:.3f} ms")
codes = query('sum by (code) (tradeagg_http_responses_total{route="/trades"})')
ok_responses = sum(float(c["value"][1]) for c in codes if c["metric"]["code"].startswith("2"))
check("Prometheus: /trades responses by code", ok_responses == lg["requests"],
      f"{[(c['metric']['code'], c['value'][1]) for c in codes]} vs {lg['requests']} requests sent")

accepted = server["pipeline"]["accepted"]
check("the load generator's count is the server's", lg["trades_accepted"] == accepted,
      f"{lg['trades_accepted']} vs {accepted}")
last = scalar("tradeagg_trades_accepted_total")
check("Prometheus: the counter's last sample is the server's count", last == accepted,
      f"{last:.0f} vs {accepted}")

# rate() over most of the load against the server's own figures: what it accepted over the
# load's duration. The offered rate is fixed, so the two agree within the scrape jitter and
# the stalls of a busy machine (a long window keeps those small).
window = max(4, int(end - start) - 2)
measured = scalar(f"rate(tradeagg_trades_accepted_total[{window}s])", end - 0.5)
own = accepted / lg["duration_s"]
check("Prometheus: rate(tradeagg_trades_accepted_total) agrees with the server's count",
      abs(measured - own) <= 0.15 * own,
      f"{measured:,.0f}/s over {window} s vs {own:,.0f}/s (offered {rate:,.0f}/s)")
# And increase() over the whole run, which Prometheus extrapolates at the edges.
span = int(end - start) + 6
total = scalar(f"increase(tradeagg_trades_accepted_total[{span}s])")
check("Prometheus: increase() over the run agrees with the server's count",
      abs(total - accepted) <= 0.15 * accepted, f"{total:,.0f} vs {accepted:,}")
sys.exit(1 if failed else 0)
PY

# Stopping is checked once Redis has taken what the load left (on a busy machine that can take
# longer than the shutdown deadline), so that a clean exit means everything was written.
redis_caught_up() {
    curl -fsS "$server_url/health" 2>/dev/null |
        "$python" -c 'import json, sys; sys.exit(0 if json.load(sys.stdin)["redis"]["pending"] == 0 else 1)'
}
for _ in $(seq 600); do
    redis_caught_up && break
    sleep 0.1
done
check "Redis has taken every update" redis_caught_up
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
check "the server exits 0 on SIGTERM" test "$status" -eq 0

if [ "$failures" -ne 0 ]; then
    echo "test_prometheus.sh: $failures check(s) failed; the server's log:" >&2
    tail -20 "$work/server-redis.log" >&2 || true
    tail -20 "$work/prometheus.log" >&2 || true
    exit 1
fi
echo "test_prometheus.sh: every check passed"
