# shellcheck shell=bash
# Sourced by scripts/test.sh, scripts/run.sh, bench/http_ingest, tests/test_prometheus.sh and
# tests/test_binance_clients.sh.

# The Release configuration shared by the test and run scripts, so that they reuse one build.
# shellcheck disable=SC2034 # used by the scripts that source this file
release_args=(-DCMAKE_BUILD_TYPE=Release -DTRADEAGG_SANITIZE=)

# cmake_configure DIR [ARGS...]: configures a CMake build dir with Ninja. A dir configured for
# another source tree or with another generator cannot be reused by CMake, so it is wiped first.
cmake_configure() {
    local dir=$1
    shift
    local cache=$dir/CMakeCache.txt
    if [ -f "$cache" ] && ! {
        grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$(pwd)" "$cache" &&
            grep -qxF "CMAKE_GENERATOR:INTERNAL=Ninja" "$cache"
    }; then
        echo "$dir was configured for another tree or generator; wiping it"
        rm -rf "$dir"
    fi
    cmake -S . -B "$dir" -G Ninja "$@"
}

# stop_at_exit DIR: when the script exits, stops every process whose pid it added to the array
# `pids` (SIGTERM, then waits for it) and removes DIR, its scratch directory.
stop_at_exit() {
    scratch_dir=$1
    pids=()
    trap stop_pids_and_scratch EXIT
}
stop_pids_and_scratch() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$scratch_dir"
}

# free_port: prints a TCP port free on loopback now, drawn from 20000-32767: below Linux's
# ephemeral range, whose ports the kernel also gives to outgoing connections (the tests'
# tests/redis_server.hpp chooses the same way).
free_port() {
    python3 -c '
import random, socket
for _ in range(200):
    p = random.randint(20000, 32767)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
else:
    raise SystemExit("free_port: no free port in 20000-32767")'
}

# start_server BINARY NAME [ENV-ARG...]: starts the server under `env ENV-ARG...` (assignments,
# or -u VAR) on a free loopback port, its log in the scratch directory as NAME.log; sets
# server_pid (added to `pids`) and server_url. Exits with the log if /health does not answer.
start_server() {
    local binary=$1 name=$2 port
    shift 2
    port=$(free_port)
    env "$@" HTTP_ADDR="127.0.0.1:$port" "$binary" >"$scratch_dir/$name.log" 2>&1 &
    server_pid=$!
    pids+=("$server_pid")
    server_url=http://127.0.0.1:$port
    wait_http "$server_url/health" "$server_pid" || {
        cat "$scratch_dir/$name.log" >&2
        echo "$(basename "$0"): the server ($name) did not start" >&2
        exit 1
    }
}

# start_local_redis DIR: starts a throwaway redis-server on a free loopback port (no
# persistence, its log in DIR/redis.log) and waits for it to answer; sets redis_port and
# redis_pid.
start_local_redis() {
    redis_port=$(free_port)
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$1" --logfile "$1/redis.log" --daemonize no &
    redis_pid=$!
    for _ in $(seq 100); do
        redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break
        sleep 0.05
    done
}

# wait_http URL PID: waits up to 10 s for URL to answer 2xx; fails at once if PID exits.
wait_http() {
    for _ in $(seq 200); do
        curl -fsS "$1" >/dev/null 2>&1 && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}
