#!/usr/bin/env bash
# Installs what tradeagg's build, tests, bench and examples need on Debian 12 (bookworm).
# Idempotent: when every package is already installed it changes nothing and needs no root.
# Runs as root (CI) or as a user with sudo.
set -euo pipefail

packages=(
    g++
    cmake
    meson
    ninja-build
    pkg-config
    python3
    clang-format
    clang
    libclang-rt-14-dev
    libboost1.81-dev
    libboost-json1.81-dev
    libhiredis-dev
    doctest-dev
    libbenchmark-dev
    redis-server
    curl
    git
    # promtool checks the example alert rules and the /metrics exposition; a real Prometheus
    # scrapes the server in tests/test_prometheus.sh. Installing it starts no daemon here.
    prometheus
)

is_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
for package in "${packages[@]}"; do
    is_installed "$package" || missing+=("$package")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "setup.sh: all ${#packages[@]} packages are installed"
    exit 0
fi
echo "setup.sh: installing ${missing[*]}"

if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup.sh: apt-get not found; install by hand: ${missing[*]}" >&2
    exit 1
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "setup.sh: not root and sudo is missing; as root run: apt-get install ${missing[*]}" >&2
        exit 1
    fi
    as_root=(sudo)
fi
# sudo resets the environment, so the variable is passed on the command line.
apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)

# The package lists are refreshed only when apt does not know a candidate for some missing
# package (a fresh image ships with empty lists).
lists_current() {
    local package candidate
    for package in "${missing[@]}"; do
        candidate=$(apt-cache policy "$package" 2>/dev/null | awk '/Candidate:/ {print $2}')
        if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
            return 1
        fi
    done
}

if ! lists_current; then
    "${apt[@]}" update
fi
# A stale list can name package versions the mirror no longer has: refresh once and retry.
if ! "${apt[@]}" install -y --no-install-recommends "${missing[@]}"; then
    echo "setup.sh: install failed; refreshing the package lists and retrying" >&2
    "${apt[@]}" update
    "${apt[@]}" install -y --no-install-recommends "${missing[@]}"
fi

for package in "${missing[@]}"; do
    if ! is_installed "$package"; then
        echo "setup.sh: $package is still not installed" >&2
        exit 1
    fi
done
echo "setup.sh: done"
