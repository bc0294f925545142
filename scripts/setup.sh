#!/usr/bin/env bash
# Prepares a fresh Debian 12 machine (with Rust already installed) to build and test Tessera:
#   - LLVM 19 (llvm-19-dev libpolly-19-dev libzstd-dev), linked statically into the compiler for
#     its default `llvm` emitter, when /usr/lib/llvm-19/bin/llvm-config is missing, from
#     Debian's apt repositories (a build with `--no-default-features` needs only Rust);
#   - ptxas (CUDA 12.9, no GPU needed) from the pip package nvidia-cuda-nvcc-cu12 when no ptxas
#     is found on PATH or under python's site-packages.
# Idempotent: what is already there is left alone. Not root and no passwordless sudo: prints
# the commands to run instead and exits 1.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LLVM_CONFIG=/usr/lib/llvm-19/bin/llvm-config
APT_PACKAGES=(llvm-19-dev libpolly-19-dev libzstd-dev)
PIP_PACKAGE=nvidia-cuda-nvcc-cu12==12.9.86

need_llvm=0
need_ptxas=0
[ -x "$LLVM_CONFIG" ] || need_llvm=1
"$here/find-ptxas.sh" >/dev/null 2>&1 || need_ptxas=1

# How to run a command as root: directly, through passwordless sudo, or not at all.
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    as_root=(sudo -n)
else
    as_root=(none)
fi

if [ "$need_llvm" -eq 1 ] && [ "${as_root[0]:-}" = none ]; then
    echo "setup: LLVM 19 is missing ($LLVM_CONFIG) and this user cannot install packages" >&2
    echo "setup: run these commands as root, then run scripts/setup.sh again:" >&2
    echo "    apt-get update"
    echo "    DEBIAN_FRONTEND=noninteractive apt-get install -y ${APT_PACKAGES[*]}"
    if [ "$need_ptxas" -eq 1 ]; then
        echo "    python3 -m pip install $PIP_PACKAGE    # as this user, or add --user"
    fi
    exit 1
fi

if [ "$need_llvm" -eq 1 ]; then
    echo "setup: installing ${APT_PACKAGES[*]}" >&2
    "${as_root[@]}" apt-get update
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${APT_PACKAGES[@]}"
    if [ ! -x "$LLVM_CONFIG" ]; then
        echo "setup: apt-get finished but $LLVM_CONFIG is still missing" >&2
        exit 1
    fi
else
    echo "setup: LLVM 19 found: $LLVM_CONFIG" >&2
fi

if [ "$need_ptxas" -eq 1 ]; then
    if ! command -v python3 >/dev/null 2>&1; then
        echo "setup: python3 is needed to install ptxas; run as root:" >&2
        echo "    apt-get update && apt-get install -y python3 python3-pip"
        echo "    python3 -m pip install $PIP_PACKAGE"
        exit 1
    fi
    if ! python3 -m pip --version >/dev/null 2>&1; then
        if [ "${as_root[0]:-}" = none ]; then
            echo "setup: pip is missing and this user cannot install packages; run as root:" >&2
            echo "    apt-get update && apt-get install -y python3-pip"
            echo "    python3 -m pip install $PIP_PACKAGE"
            exit 1
        fi
        "${as_root[@]}" apt-get update
        "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-pip
    fi
    echo "setup: installing ptxas ($PIP_PACKAGE)" >&2
    pip_args=(install "$PIP_PACKAGE")
    # Debian 12 marks its python as externally managed (PEP 668); the package only drops
    # binaries under site-packages, so installing past the marker is harmless.
    if python3 -m pip install --help 2>/dev/null | grep -q -- --break-system-packages; then
        pip_args+=(--break-system-packages)
    fi
    if [ "$(id -u)" -ne 0 ] && [ -z "${VIRTUAL_ENV:-}" ]; then
        pip_args+=(--user)
    fi
    if ! python3 -m pip "${pip_args[@]}"; then
        echo "setup: pip failed; run instead:" >&2
        echo "    python3 -m pip install $PIP_PACKAGE"
        exit 1
    fi
fi

if ! ptxas=$("$here/find-ptxas.sh"); then
    echo "setup: ptxas is still not found after installing $PIP_PACKAGE" >&2
    exit 1
fi
echo "setup: ptxas: $ptxas ($("$ptxas" --version 2>/dev/null | tail -n 1 || echo 'version unknown'))" >&2
echo "$ptxas"
