#!/usr/bin/env bash
# Builds the quickstart example (Release, build/release) and runs it; arguments are passed on.
# Set-up and build logs go to stderr, so stdout is the example's own output.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/common.sh
source scripts/common.sh

{
    ./scripts/setup.sh
    cmake_configure build/release "${release_args[@]}"
    cmake --build build/release -j "${TRADEAGG_JOBS:-2}" --target tradeagg_quickstart
} >&2

exec build/release/examples/tradeagg_quickstart "$@"
