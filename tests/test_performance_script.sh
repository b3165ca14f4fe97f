#!/usr/bin/env bash
# Checks scripts/performance_test.sh against a stand-in server (python3's http.server) that
# answers the five endpoints with the shape of the aggregator server: the five steps pass; a
# missing token, a failing endpoint and an unreachable server each end the script with status
# 1 and a message that names the cause; without python3 the JSON is shown raw. Given the
# aggregator server's binary, runs the script against it too (Redis off, an admin token set,
# some trades accepted): every one of the seed's eight metrics is found, with and without python3.
#   tests/test_performance_script.sh [SERVER_BINARY]   (from anywhere; needs bash, curl, python3)
set -euo pipefail
server_binary=${1:-}
root=$(cd "$(dirname "$0")/.." && pwd)
script=$root/scripts/performance_test.sh
# The interpreter itself, not a wrapper that would outlive a kill (pyenv shims fork).
python=$(python3 -c "import sys; print(sys.executable)")
work=$(mktemp -d)
server_pid=
real_pid=
cleanup() {
    for pid in $server_pid $real_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/server.py" <<'PY'
import http.server, json, os, sys

TOKEN = os.environ.get("FAKE_ADMIN_TOKEN", "")
FAIL = os.environ.get("FAKE_FAIL_PATH", "")
state = {"heap": 40.0, "gc_runs": 0}


def stats():
    return {"memory": {"heap_alloc_mb": state["heap"], "heap_inuse_mb": state["heap"] + 8,
                       "gc_cpu_fraction": 0.001},
            "runtime": {"num_goroutines": 6, "worker_count": 2},
            "aggregator": {"active_tokens": 1234},
            "redis": {"redis_latency_avg_ms": 0.4, "redis_success_rate": 1.0}}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, doc):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == FAIL:
            self.answer(500, {"error": "stand-in failure"})
        elif self.path == "/health":
            self.answer(200, {"status": "ok"})
        elif self.path == "/performance":
            self.answer(200, stats())
        else:
            self.answer(404, {"error": "not found"})

    def do_POST(self):
        if TOKEN and self.headers.get("Authorization") != "Bearer " + TOKEN:
            self.answer(401, {"error": "unauthorized"})
        elif self.path == FAIL:
            self.answer(500, {"error": "stand-in failure"})
        elif self.path == "/performance/gc":
            before = stats()
            state["heap"] = 12.5
            self.answer(200, {"before": before, "after": stats()})
        elif self.path.startswith("/performance/optimize/"):
            self.answer(200, {"mode": self.path.rsplit("/", 1)[1], "status": "applied"})
        else:
            self.answer(404, {"error": "not found"})


server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
PY

# shellcheck source=tests/check.sh
source "$root/tests/check.sh"

start_server() { # start_server [ENV=VALUE...]: sets port and server_pid
    env "$@" "$python" "$work/server.py" >"$work/port" &
    server_pid=$!
    for _ in $(seq 100); do
        [ -s "$work/port" ] && break
        sleep 0.05
    done
    port=$(cat "$work/port")
}

stop_server() {
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    : >"$work/port"
}

run() { # run [ENV=VALUE...]: runs the script, sets rc; output in $work/out and $work/err
    rc=0
    env "$@" "$script" >"$work/out" 2>"$work/err" || rc=$?
}

# The five steps against a server without a token.
start_server
run HTTP_ADDR="127.0.0.1:$port"
check "passes against a healthy server" [ "$rc" -eq 0 ]
check "prints the five numbered steps" \
    [ "$(grep -c '^=== [1-5]\. ' "$work/out")" -eq 5 ]
check "shows heap_alloc_mb before and after the GC" \
    grep -Eq '^heap_alloc_mb +40 +12\.5 +-27\.5' "$work/out"
check "finds nested metrics" grep -Eq '^redis_success_rate +1 +1 ' "$work/out"
run HTTP_ADDR=":$port"
check "accepts a listen address (:port)" [ "$rc" -eq 0 ]
stop_server

# A server with a token.
start_server FAKE_ADMIN_TOKEN='s3cr"t'
run HTTP_ADDR="127.0.0.1:$port"
check "fails without the token" [ "$rc" -eq 1 ]
check "names the endpoint, the status and the fix" \
    grep -q 'POST /performance/optimize/throughput failed: HTTP 401 (.*ADMIN_TOKEN)' "$work/err"
run HTTP_ADDR="http://127.0.0.1:$port/" ADMIN_TOKEN='s3cr"t'
check "passes with the token (quote included)" [ "$rc" -eq 0 ]
stop_server

# A failing endpoint.
start_server FAKE_FAIL_PATH=/performance/gc
run HTTP_ADDR="127.0.0.1:$port"
check "fails when an endpoint answers 500" [ "$rc" -eq 1 ]
check "says which endpoint failed" grep -q 'POST /performance/gc failed: HTTP 500' "$work/err"
check "stops before step 5" bash -c "! grep -q '=== 5' '$work/out'"
stop_server

# Without python3: raw JSON and the grep-based table.
mkdir "$work/bin"
for tool in bash env curl mktemp rm cat head grep sed; do
    ln -s "$(command -v "$tool")" "$work/bin/$tool"
done
start_server
run PATH="$work/bin" HTTP_ADDR="127.0.0.1:$port"
check "passes without python3" [ "$rc" -eq 0 ]
check "shows raw metrics without python3" grep -Eq '^heap_alloc_mb +40\.0 +12\.5' "$work/out"
stop_server

# No server: the port the stand-in had is closed now.
run HTTP_ADDR="127.0.0.1:$port"
check "fails when nothing listens" [ "$rc" -eq 1 ]
check "says the server cannot be reached" grep -q 'cannot reach the server at' "$work/err"
check "prints no step past the first" bash -c "! grep -q '=== 2' '$work/out'"

rc=0
"$script" extra >"$work/out" 2>"$work/err" || rc=$?
check "rejects an argument with status 2" [ "$rc" -eq 2 ]

# The real server.
metrics_found() { # metrics_found FILE: every seed metric has a number in both columns
    local key
    for key in heap_alloc_mb heap_inuse_mb gc_cpu_fraction num_goroutines active_tokens \
        worker_count redis_latency_avg_ms redis_success_rate; do
        grep -Eq "^$key +-?[0-9][0-9.e+-]* +-?[0-9][0-9.e+-]*( |$)" "$1" || {
            echo "  $key: $(grep "^$key " "$1" || echo missing)"
            return 1
        }
    done
}
if [ -n "$server_binary" ]; then
    REDIS_ADDR=off HTTP_ADDR=127.0.0.1:0 ADMIN_TOKEN=t0ken "$server_binary" 2>"$work/server.log" &
    real_pid=$!
    real_port=
    for _ in $(seq 200); do
        real_port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\).*|\1|p' \
            "$work/server.log")
        [ -n "$real_port" ] && break
        sleep 0.05
    done
    check "the server starts" [ -n "$real_port" ]
    printf '{"token":"SOL","price":123.45,"quantity":2.5,"side":"buy","ts":1732867200123,"id":1}\n' |
        curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/x-ndjson' \
            --data-binary @- "http://127.0.0.1:$real_port/trades" >"$work/status" || true
    check "the server accepts a trade" [ "$(cat "$work/status")" = 202 ]
    run HTTP_ADDR="127.0.0.1:$real_port"
    check "real server: fails without its token" [ "$rc" -eq 1 ]
    check "real server: says to set ADMIN_TOKEN" grep -q 'HTTP 401 (.*ADMIN_TOKEN)' "$work/err"
    run HTTP_ADDR="127.0.0.1:$real_port" ADMIN_TOKEN=t0ken
    check "real server: passes with its token" [ "$rc" -eq 0 ]
    check "real server: the five steps" [ "$(grep -c '^=== [1-5]\. ' "$work/out")" -eq 5 ]
    check "real server: the eight metrics, before and after" metrics_found "$work/out"
    check "real server: one active token" grep -Eq '^active_tokens +1 +1 ' "$work/out"
    run PATH="$work/bin" HTTP_ADDR="127.0.0.1:$real_port" ADMIN_TOKEN=t0ken
    check "real server: passes without python3" [ "$rc" -eq 0 ]
    check "real server: the eight metrics without python3" metrics_found "$work/out"
    kill -TERM "$real_pid"
    real_rc=0
    wait "$real_pid" || real_rc=$?
    real_pid=
    check "real server: exits 0 on SIGTERM" [ "$real_rc" -eq 0 ]
fi

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all checks passed"
