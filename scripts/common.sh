# shellcheck shell=bash
# Sourced by scripts/test.sh and scripts/run.sh, from the repository root.

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
