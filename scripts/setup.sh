#!/usr/bin/env bash
# Prepares .venv/ for `make run` (extras: llm) or `make test` (extras: llm,test).
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
    if [ "$profile" = test ]; then
        command -v systemd-analyze >/dev/null || true  # Needed from the systemd issue on.
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

install_python_packages() {
    local extras="llm"
    [ "$profile" = test ] && extras="llm,test"
    # llama-cpp-python compiles llama.cpp on first install (minutes); pip caches the built wheel.
    export CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF}"
    export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
    say "installing kioskd[$extras] into $venv (the first build of llama-cpp-python takes several minutes)"
    "$venv/bin/python" -m pip install -q -e "$root[$extras]"
}

require_python
install_system_packages
create_venv
install_python_packages
say "ready: $venv"
