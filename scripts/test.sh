#!/usr/bin/env bash
# The test command of tradeagg: every build and test that CI runs, in order, failing fast.
#
#   scripts/test.sh              all steps
#   scripts/test.sh asan meson   only the named steps (names as in the summary)
#
# Build directories under build/ are reused, so a second run is incremental. TRADEAGG_JOBS sets
# the build and ctest parallelism (default 2: the CI machine has two cores).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${TRADEAGG_JOBS:-2}
# shellcheck source=scripts/common.sh
source scripts/common.sh

cmake_build_and_test() {
    local dir=$1
    shift
    cmake_configure "$dir" "$@"
    cmake --build "$dir" -j "$jobs"
    ctest --test-dir "$dir" --output-on-failure --no-tests=error -j "$jobs"
}

meson_configure() {
    local dir=$1
    shift
    if [ -f "$dir/meson-private/coredata.dat" ]; then
        # `meson configure` rather than `meson setup --reconfigure`: Meson 1.0 drops a changed
        # cpp_args given to --reconfigure. The build regenerates itself on the next compile.
        meson configure "$dir" "$@" || {
            echo "test.sh: $dir could not be reconfigured; wiping it"
            meson setup --wipe "$dir" "$@"
        }
    else
        rm -rf "$dir"
        meson setup "$dir" "$@"
    fi
}

meson_build_and_test() {
    local dir=$1
    shift
    meson_configure "$dir" "$@"
    meson compile -C "$dir" -j "$jobs"
    meson test -C "$dir" --print-errorlogs --num-processes "$jobs"
}

step_release() {
    cmake_build_and_test build/release "${release_args[@]}"
}

# The sanitizer builds skip what the release build already proves and what is not about memory
# or threads: the header checks, the packaging tests and the bench. They build at -O1, as the
# sanitizers' documentation advises: with ASan+UBSan, -O2 took twice as long to compile (278 s
# against 146 s for tests/test_server.cpp alone) and the build was most of the step.
sanitizer_args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g -DNDEBUG"
    -DTRADEAGG_BUILD_BENCH=OFF -DTRADEAGG_CHECK_HEADERS=OFF -DTRADEAGG_TEST_PACKAGING=OFF)

step_asan() {
    cmake_build_and_test build/asan "${sanitizer_args[@]}" -DTRADEAGG_SANITIZE=address
}

step_tsan() {
    cmake_build_and_test build/tsan "${sanitizer_args[@]}" -DTRADEAGG_SANITIZE=thread
}

step_meson() {
    meson_build_and_test build/meson -Dtests=true -Dbench=true -Dexamples=true
    # A Meson user's project with tradeagg as a subproject (a link to this tree).
    local consumer=build/meson-consumer-src
    rm -rf "$consumer"
    mkdir -p "$consumer/subprojects"
    cp tests/consumer/main.cpp tests/consumer/meson.build "$consumer/"
    ln -s "$(pwd)" "$consumer/subprojects/tradeagg"
    rm -rf build/meson-consumer
    meson_build_and_test build/meson-consumer "$consumer"
}

# debugoptimized keeps assert() on: the only build that runs the headers' assertions.
# -fno-sanitize-recover=all makes UBSan findings fatal at the call (as TRADEAGG_SANITIZE does)
# and halves compile time, since the recovery paths are not generated. The Redis tests are left
# to the CMake ASan step: the Redis headers hold no assertion, and they are the slowest to build
# and run.
step_meson_asan() {
    meson_build_and_test build/meson-asan -Dbuildtype=debugoptimized -Dtests=true \
        -Dredis_tests=false \
        -Dbench=false -Dexamples=false -Db_sanitize=address,undefined -Db_lundef=false \
        -Dwerror=true -Dcpp_args=-fno-sanitize-recover=all
}

step_bench() {
    # A no-op after the release step; lets `scripts/test.sh bench` run on its own.
    cmake_configure build/release "${release_args[@]}"
    cmake --build build/release -j "$jobs" --target tradeagg_bench
    build/release/bench/tradeagg_bench --benchmark_min_time=0.01 --benchmark_format=json >/dev/null
    echo "tradeagg_bench ran every benchmark"
    # Latency at fixed offered rates: a short run of each, to prove they run and check nothing.
    cmake --build build/release -j "$jobs" --target tradeagg_latency_bench
    TRADEAGG_LATENCY_BENCH_SECONDS=0.05 build/release/bench/tradeagg_latency_bench \
        --benchmark_format=json >/dev/null
    echo "tradeagg_latency_bench ran every benchmark"
    # The server's trade parser on the load generator's bodies; it exits non-zero if either of
    # its two paths refuses a body or they read one differently.
    cmake --build build/release -j "$jobs" --target tradeagg_parser_bench
    build/release/bench/tradeagg_parser_bench --benchmark_min_time=0.01 \
        --benchmark_format=json >/dev/null
    echo "tradeagg_parser_bench ran every benchmark"
    # The Redis benchmark starts its own redis-server and Redis Cluster (never one at REDIS_ADDR:
    # it empties the database it writes to); it exits non-zero if a run fails its check of Redis.
    cmake --build build/release -j "$jobs" --target tradeagg_redis_bench
    env -u REDIS_ADDR -u REDIS_PASSWORD -u REDIS_DB TRADEAGG_REDIS_BENCH_SECONDS=0.2 \
        TRADEAGG_STREAM_BENCH_TRADES=20000 \
        build/release/bench/tradeagg_redis_bench --benchmark_format=json >/dev/null
    echo "tradeagg_redis_bench ran every benchmark"
}

# What a newcomer does first: `./scripts/run.sh` in a fresh clone of the committed HEAD (so that
# an untracked or ignored file here cannot hide a missing step), with no terminal and a short
# load. It builds its own Release tree in the clone; the step fails on a non-zero exit or when
# the summary is missing. Uncommitted changes are not part of what it tries.
step_fresh_clone() {
    local dir
    dir=$(mktemp -d /tmp/tradeagg-clone-XXXXXX)
    # shellcheck disable=SC2064 # the directory is known now
    trap "rm -rf '$dir'" EXIT
    git clone --quiet --no-hardlinks "$(pwd)" "$dir/tradeagg"
    echo "fresh clone of $(git -C "$dir/tradeagg" rev-parse --short HEAD) in $dir/tradeagg"
    local status=0
    (
        cd "$dir/tradeagg"
        env -u HTTP_ADDR -u REDIS_ADDR RUN_SECONDS=5 TRADEAGG_JOBS="$jobs" ./scripts/run.sh \
            </dev/null 2>&1 | cat
    ) >"$dir/run.log" || status=$?
    sed 's/^/    /' "$dir/run.log"
    if [ "$status" -ne 0 ]; then
        echo "fresh_clone: run.sh exited with status $status" >&2
        return 1
    fi
    local line
    for line in '==> summary' 'trades accepted' 'server exit status     0'; do
        if ! grep -qF -- "$line" "$dir/run.log"; then
            echo "fresh_clone: run.sh printed no '$line'" >&2
            return 1
        fi
    done
    if grep -q $'\r' "$dir/run.log"; then
        echo "fresh_clone: run.sh wrote carriage returns with no terminal" >&2
        return 1
    fi
    echo "fresh_clone: run.sh works on a fresh clone with no terminal"
}

# libFuzzer targets (Clang; ASan+UBSan), each run for TRADEAGG_FUZZ_SECONDS (default 20) over a
# copy of its seed corpus in build/fuzz: libFuzzer adds the inputs it finds to the directory it
# is given, so the seeds in fuzz/corpus stay as committed while build/fuzz keeps what earlier
# runs found. A crash fails the step and leaves its input in build/fuzz/artifacts.
step_fuzz() {
    local seconds=${TRADEAGG_FUZZ_SECONDS:-20}
    # CXX is read only when a build dir is first configured: one made with another compiler is
    # wiped, since libFuzzer needs Clang.
    if [ -f build/fuzz/CMakeCache.txt ] &&
        ! grep -q '^CMAKE_CXX_COMPILER:[A-Z]*=.*clang++' build/fuzz/CMakeCache.txt; then
        echo "build/fuzz was configured with another compiler; wiping it"
        rm -rf build/fuzz
    fi
    CC=clang CXX=clang++ cmake_configure build/fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DTRADEAGG_BUILD_FUZZERS=ON -DTRADEAGG_BUILD_BENCH=OFF -DTRADEAGG_CHECK_HEADERS=OFF \
        -DTRADEAGG_TEST_PACKAGING=OFF -DTRADEAGG_BUILD_TESTS=OFF
    cmake --build build/fuzz -j "$jobs" --target tradeagg_fuzzers
    mkdir -p build/fuzz/artifacts
    local source name corpus log
    for source in fuzz/fuzz_*.cpp; do
        name=$(basename "$source" .cpp)
        name=${name#fuzz_}
        corpus=build/fuzz/corpus/$name
        log=build/fuzz/$name.log
        mkdir -p "$corpus"
        if [ -d "fuzz/corpus/$name" ]; then
            cp -R "fuzz/corpus/$name/." "$corpus/"
        fi
        local options=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1
            -artifact_prefix="build/fuzz/artifacts/$name-")
        if [ -f "fuzz/$name.dict" ]; then
            options+=(-dict="fuzz/$name.dict")
        fi
        echo "fuzz: tradeagg_fuzz_$name for ${seconds}s (log: $log)"
        if ! "build/fuzz/fuzz/tradeagg_fuzz_$name" "${options[@]}" "$corpus" >"$log" 2>&1; then
            tail -n 60 "$log"
            echo "fuzz: tradeagg_fuzz_$name failed; the input is in build/fuzz/artifacts/" \
                "(rerun: build/fuzz/fuzz/tradeagg_fuzz_$name <input>)" >&2
            return 1
        fi
        grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" || true
    done
}

all_steps=(release fresh_clone asan tsan meson meson_asan bench fuzz)
declare -A step_titles=(
    [release]="CMake Release build + ctest (unit, header checks, packaging, Prometheus)"
    [fresh_clone]="./scripts/run.sh in a fresh clone of HEAD, no terminal, RUN_SECONDS=5"
    [asan]="CMake ASan+UBSan build + ctest"
    [tsan]="CMake TSan build + ctest"
    [meson]="Meson build + meson test, and a Meson consumer using it as a subproject"
    [meson_asan]="Meson ASan+UBSan -Dwerror=true build + meson test"
    [bench]="Bench smoke runs (tradeagg_bench, and tradeagg_redis_bench against its own redis-server)"
    [fuzz]="libFuzzer targets (Clang, ASan+UBSan), each run for TRADEAGG_FUZZ_SECONDS (default 20)"
)

if [ $# -gt 0 ]; then
    steps=("$@")
    for step in "${steps[@]}"; do
        if [ -z "${step_titles[$step]+set}" ]; then
            echo "test.sh: unknown step '$step'; steps are: ${all_steps[*]}" >&2
            exit 2
        fi
    done
else
    steps=("${all_steps[@]}")
fi

summary=()
print_summary() {
    echo
    echo "==================== test.sh summary ===================="
    local line
    for line in "${summary[@]}"; do
        echo "$line"
    done
}

start_all=$SECONDS
echo "==> setup: scripts/setup.sh"
if ! ./scripts/setup.sh; then
    echo "test.sh: FAILED in setup (scripts/setup.sh could not install the packages)" >&2
    exit 1
fi

# doctest_discover_tests (CMake) splits a test case's name at ';' into names that match no test
# case, and ctest then passes them without running anything: no test case may have one.
if ! python3 - tests examples <<'PY'
import pathlib, re, sys
name = re.compile(r'TEST_CASE(?:_TEMPLATE)?\(\s*((?:"(?:[^"\\]|\\.)*"\s*)+)')
bad = []
for root in sys.argv[1:]:
    for path in sorted(pathlib.Path(root).rglob("*.cpp")):
        for m in name.finditer(path.read_text()):
            if ";" in m.group(1):
                line = path.read_text().count("\n", 0, m.start()) + 1
                bad.append(f"{path}:{line}: {' '.join(m.group(1).split())}")
for b in bad:
    print(f"test.sh: a test case's name holds ';', which CMake splits: {b}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
then
    echo "test.sh: FAILED: rename the test cases above (';' -> ',')" >&2
    exit 1
fi

# The layout rules of docs/architecture.md: no include cycle, the core free of Redis and HTTP,
# no header past 600 lines unless it is listed there as not yet cut.
if ! python3 tests/check_layout.py .; then
    echo "test.sh: FAILED: the header layout (tests/check_layout.py)" >&2
    exit 1
fi

total=${#steps[@]}
index=0
for step in "${steps[@]}"; do
    index=$((index + 1))
    title=${step_titles[$step]}
    echo
    echo "==> [$index/$total] $step: $title"
    started=$SECONDS
    # errexit is ignored inside a function that is called as an `if` condition, so the step runs
    # in a subshell with errexit on, and its status is collected afterwards.
    set +e
    (
        set -euo pipefail
        "step_$step"
    )
    status=$?
    set -e
    elapsed=$((SECONDS - started))
    if [ $status -ne 0 ]; then
        summary+=("$(printf 'FAIL  %-11s %5ss  %s' "$step" "$elapsed" "$title")")
        print_summary
        echo "steps: $((index - 1)) passed, 1 failed"
        echo
        echo "test.sh: FAILED at step $index/$total '$step' ($title), exit status $status," \
            "after ${elapsed}s" >&2
        exit "$status"
    fi
    echo "<== $step passed in ${elapsed}s"
    summary+=("$(printf 'ok    %-11s %5ss  %s' "$step" "$elapsed" "$title")")
done

print_summary
echo "test.sh: all $total steps passed in $((SECONDS - start_all))s"
echo "steps: $total passed, 0 failed"
