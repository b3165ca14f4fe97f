#!/usr/bin/env bash
# Installs what tradeagg's build, tests, bench and examples need on Debian 12 (bookworm), and
# the npm packages of tests/binance (the real Binance clients the server's API is tested with).
# Idempotent: when every package is already installed and tests/binance/node_modules is as
# recent as its package-lock.json, it changes nothing and needs no root.
# Runs as root (CI) or as a user with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

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
    # Node runs the ccxt client against the server's Binance API (tests/test_binance_clients.sh).
    # Debian's npm is a package of its own, installed below only where nodejs brings none (a
    # nodejs from NodeSource bundles npm and conflicts with Debian's).
    nodejs
)

is_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

# apt_install PACKAGE...: installs the packages with apt-get, as root or through sudo.
apt_install() {
    local missing=("$@") package
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup.sh: apt-get not found; install by hand: ${missing[*]}" >&2
        exit 1
    fi
    local as_root=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "setup.sh: not root and sudo is missing; as root run:" \
                "apt-get install ${missing[*]}" >&2
            exit 1
        fi
        as_root=(sudo)
    fi
    # sudo resets the environment, so the variable is passed on the command line.
    local apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)

    # The package lists are refreshed only when apt does not know a candidate for some missing
    # package (a fresh image ships with empty lists).
    local candidate lists_current=true
    for package in "${missing[@]}"; do
        candidate=$(apt-cache policy "$package" 2>/dev/null | awk '/Candidate:/ {print $2}')
        if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
            lists_current=false
        fi
    done
    if [ "$lists_current" = false ]; then
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
}

missing=()
for package in "${packages[@]}"; do
    is_installed "$package" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "setup.sh: all ${#packages[@]} packages are installed"
else
    echo "setup.sh: installing ${missing[*]}"
    apt_install "${missing[@]}"
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "setup.sh: nodejs brought no npm; installing Debian's npm"
    apt_install npm
fi

# The npm packages of tests/binance, exactly as package-lock.json pins them: installed when
# node_modules is missing or older than the lock file (npm rewrites node_modules/.package-lock.json
# on every install).
binance=tests/binance
if [ ! -f "$binance/node_modules/.package-lock.json" ] ||
    [ "$binance/package-lock.json" -nt "$binance/node_modules/.package-lock.json" ]; then
    echo "setup.sh: npm ci in $binance"
    (cd "$binance" && npm ci --no-audit --no-fund)
else
    echo "setup.sh: $binance/node_modules is up to date"
fi
echo "setup.sh: done"
