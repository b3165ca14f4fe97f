#!/usr/bin/env bash
# Exercises the aggregator server's performance endpoints, in the five steps of the performance
# guide:
#   1. Check service health                    GET  /health
#   2. Get current performance statistics      GET  /performance
#   3. Test performance optimization endpoints POST /performance/optimize/throughput, .../latency
#   4. Demonstrate GC optimization             POST /performance/gc
#   5. Show before/after metrics               GET  /performance, beside the one of step 2
#
# Environment: HTTP_ADDR, the server's address (host:port, :port or http://host:port; default
# 127.0.0.1:8080); ADMIN_TOKEN, sent as `Authorization: Bearer` when set (the server requires it
# on the POST endpoints when it has one). The token is handed to curl on its standard input, so
# it never appears in a process listing.
#
# Exit status: 0 when every step succeeded; 1 when the server cannot be reached or an endpoint
# answers other than 2xx (the message names the endpoint and shows the body); 2 for a bad
# argument. JSON is pretty-printed with python3 when it is installed, shown raw otherwise.
set -euo pipefail

usage() {
    sed -n '2,17s/^# \{0,1\}//p' "$0"
}

case "${1:-}" in
'') ;;
-h | --help)
    usage
    exit 0
    ;;
*)
    echo "performance_test.sh: unexpected argument '$1' (the server is given by HTTP_ADDR)" >&2
    exit 2
    ;;
esac

command -v curl >/dev/null || {
    echo "performance_test.sh: curl is required" >&2
    exit 1
}
have_python=false
if command -v python3 >/dev/null && python3 -c '' 2>/dev/null; then
    have_python=true
fi

# host:port from HTTP_ADDR: without a scheme or a path; an empty host (":8080", the form of a
# listen address) is the local host.
addr=${HTTP_ADDR:-127.0.0.1:8080}
addr=${addr#http://}
addr=${addr%%/*}
case "$addr" in
:*) addr=127.0.0.1$addr ;;
0.0.0.0:*) addr=127.0.0.1:${addr#0.0.0.0:} ;;
esac
base_url=http://$addr

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() {
    echo "performance_test.sh: $*" >&2
    exit 1
}

# request METHOD PATH OUTFILE: the body goes to OUTFILE; fails the script, with a message, when
# the server cannot be reached or answers other than 2xx.
request() {
    local method=$1 path=$2 out=$3 status curl_rc=0
    local config="$work/curl.conf"
    : >"$config"
    if [ -n "${ADMIN_TOKEN:-}" ]; then
        local token=${ADMIN_TOKEN//\\/\\\\}
        token=${token//\"/\\\"}
        printf 'header = "Authorization: Bearer %s"\n' "$token" >"$config"
    fi
    status=$(curl --silent --show-error --config - --request "$method" \
        --connect-timeout 5 --max-time 30 --output "$out" --write-out '%{http_code}' \
        "$base_url$path" <"$config" 2>"$work/curl.err") || curl_rc=$?
    if [ "$curl_rc" -ne 0 ]; then
        fail "cannot reach the server at $base_url ($method $path): $(cat "$work/curl.err")" \
            "(is it running? set HTTP_ADDR to its address)"
    fi
    case "$status" in
    2??) ;;
    *)
        local hint=
        if { [ "$status" = 401 ] || [ "$status" = 403 ]; } && [ -z "${ADMIN_TOKEN:-}" ]; then
            hint=" (the server wants a token: set ADMIN_TOKEN)"
        fi
        fail "$method $path failed: HTTP $status$hint: $(head -c 2000 "$out")"
        ;;
    esac
}

# show FILE: the JSON in FILE, pretty-printed when python3 can, raw otherwise.
show() {
    if $have_python && python3 -m json.tool "$1" 2>/dev/null; then
        return
    fi
    cat "$1"
    echo
}

heading() {
    echo
    echo "=== $1 ==="
}

metrics=(heap_alloc_mb heap_inuse_mb gc_cpu_fraction num_goroutines active_tokens worker_count
    redis_latency_avg_ms redis_success_rate)

# compare BEFORE AFTER: one line per key metric, before and after side by side, found at any
# depth of the two JSON documents.
compare() {
    if $have_python; then
        python3 - "$1" "$2" "${metrics[@]}" <<'PY'
import json
import sys


def find(doc, key):
    """The first value named `key`, depth first; None when there is none."""
    if isinstance(doc, dict):
        if key in doc:
            return doc[key]
        children = doc.values()
    elif isinstance(doc, list):
        children = doc
    else:
        return None
    for child in children:
        found = find(child, key)
        if found is not None:
            return found
    return None


def text(v):
    if v is None:
        return "n/a"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return json.dumps(v)
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError:
        return None


before, after = load(sys.argv[1]), load(sys.argv[2])
print(f"{'metric':<22} {'before':>14} {'after':>14} {'change':>14}")
for key in sys.argv[3:]:
    b, a = find(before, key), find(after, key)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    change = f"{a - b:+.6g}" if numbers else ""
    print(f"{key:<22} {text(b):>14} {text(a):>14} {change:>14}")
PY
    else
        printf '%-22s %14s %14s\n' metric before after
        local key b a
        for key in "${metrics[@]}"; do
            b=$(grep -o "\"$key\"[[:space:]]*:[[:space:]]*[^,}]*" "$1" | head -n 1 |
                sed 's/^[^:]*:[[:space:]]*//') || true
            a=$(grep -o "\"$key\"[[:space:]]*:[[:space:]]*[^,}]*" "$2" | head -n 1 |
                sed 's/^[^:]*:[[:space:]]*//') || true
            printf '%-22s %14s %14s\n' "$key" "${b:-n/a}" "${a:-n/a}"
        done
    fi
}

echo "Aggregator server at $base_url${ADMIN_TOKEN:+ (with ADMIN_TOKEN)}"

heading "1. Check service health"
request GET /health "$work/health.json"
show "$work/health.json"

heading "2. Get current performance statistics"
request GET /performance "$work/before.json"
show "$work/before.json"

heading "3. Test performance optimization endpoints"
echo "POST /performance/optimize/throughput"
request POST /performance/optimize/throughput "$work/throughput.json"
show "$work/throughput.json"
echo "POST /performance/optimize/latency"
request POST /performance/optimize/latency "$work/latency.json"
show "$work/latency.json"

heading "4. Demonstrate GC optimization"
echo "POST /performance/gc"
request POST /performance/gc "$work/gc.json"
show "$work/gc.json"

heading "5. Show before/after metrics"
request GET /performance "$work/after.json"
echo "Key metrics, before (step 2) and after (steps 3 and 4):"
compare "$work/before.json" "$work/after.json"

echo
echo "All five steps passed."
