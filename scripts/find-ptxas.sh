#!/usr/bin/env bash
# Prints the path of a usable `ptxas`: the one on PATH first, then the one that the pip package
# nvidia-cuda-nvcc-cu12 puts under python's site-packages (nvidia/cuda_nvcc/bin/ptxas).
# Exits 1, printing nothing on stdout, when there is none.
set -u

if p=$(command -v ptxas 2>/dev/null) && [ -x "$p" ]; then
    echo "$p"
    exit 0
fi

for py in python3 python; do
    command -v "$py" >/dev/null 2>&1 || continue
    # Every site-packages directory python knows (system, user, virtualenv).
    dirs=$("$py" - 2>/dev/null <<'PY'
import site, sys, sysconfig
seen = []
paths = []
try:
    paths += site.getsitepackages()
except Exception:
    pass
try:
    paths.append(site.getusersitepackages())
except Exception:
    pass
for key in ("purelib", "platlib"):
    try:
        paths.append(sysconfig.get_paths()[key])
    except Exception:
        pass
paths += [p for p in sys.path if p]
for p in paths:
    if p not in seen:
        seen.append(p)
        print(p)
PY
) || continue
    while IFS= read -r d; do
        cand="$d/nvidia/cuda_nvcc/bin/ptxas"
        if [ -x "$cand" ]; then
            echo "$cand"
            exit 0
        fi
    done <<<"$dirs"
done

echo "find-ptxas: no ptxas on PATH or under python's site-packages (nvidia/cuda_nvcc/bin/ptxas);" \
     "run scripts/setup.sh or: python3 -m pip install nvidia-cuda-nvcc-cu12==12.9.86" >&2
exit 1
