#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` from the llama.cpp vendored in the pinned llama-cpp-python sdist (the same
# llama.cpp kioskd's local engine runs), for the tests and the benchmark against a real upstream on loopback.
# Built once per machine into .cache/llama-server-<hash of the pin and the flags>/llama-server; prints its path.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"

say() { printf 'build_llama_server: %s\n' "$*" >&2; }

# The same ISA as scripts/setup.sh's llama-cpp-python build: a native build turns on ggml's AMX kernels, which
# segfault under some hypervisors. No web UI (the sdist has no pre-built one and fetching it needs the network),
# no HTTPS and no curl (loopback only), static libraries so the binary stands alone.
server_cmake_args() {
    local args="-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF"
    args="$args -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
    args="$args -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON"
    if [ "$(uname -m)" = x86_64 ]; then
        args="$args -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
    fi
    printf '%s' "$args"
}

pin="$(grep -o 'llama-cpp-python==[0-9.]*' "$root/pyproject.toml" | head -1)"
flags="$(server_cmake_args)"
key="$(printf '%s %s' "$pin" "$flags" | sha256sum | cut -c1-12)"
dir="$root/.cache/llama-server-$key"
if [ -x "$dir/llama-server" ]; then
    printf '%s\n' "$dir/llama-server"
    exit 0
fi

# One build at a time (two test runs, or the tests and the benchmark, may ask at once); the second waits and
# then finds the binary.
mkdir -p "$root/.cache"
exec 9>"$dir.lock"
flock 9
if [ -x "$dir/llama-server" ]; then
    printf '%s\n' "$dir/llama-server"
    exit 0
fi

command -v cmake >/dev/null || { say "cmake is missing: apt-get install cmake (scripts/setup.sh test does)"; exit 1; }
work="$dir.tmp"
rm -rf "$work" && mkdir -p "$work"
say "building llama-server from $pin with: $flags (several minutes)"
started=$(date +%s)
"$venv/bin/python" -m pip download -q --no-binary :all: --no-deps -d "$work" "$pin" >&2
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
source_dir="$(find "$work" -maxdepth 4 -type d -path '*/vendor/llama.cpp' | head -1)"
# shellcheck disable=SC2086 # the flags are words on purpose
cmake -S "$source_dir" -B "$work/build" $flags >&2
cmake --build "$work/build" --target llama-server -j "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" >&2
mkdir -p "$dir"
cp "$work/build/bin/llama-server" "$dir/llama-server.part"
mv "$dir/llama-server.part" "$dir/llama-server"
printf '%s %s\n' "$pin" "$flags" > "$dir/build-flags.txt"
rm -rf "$work"
say "built in $(( $(date +%s) - started )) s: $dir/llama-server"
printf '%s\n' "$dir/llama-server"
