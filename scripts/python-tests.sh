#!/usr/bin/env bash
# Builds the Python package from this checkout (`pip install ./python`: maturin, the native
# module without LLVM) and runs its CPU tests (pytest, NumPy arrays on the interpreter).
# Needs python3 ≥ 3.9 with pip and network access to PyPI for maturin, numpy and pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pip_args=()
# As in scripts/setup.sh: past Debian's externally-managed marker, into the user's site when
# not root and not in a virtual environment.
if python3 -m pip install --help 2>/dev/null | grep -q -- --break-system-packages; then
    pip_args+=(--break-system-packages)
fi
if [ "$(id -u)" -ne 0 ] && [ -z "${VIRTUAL_ENV:-}" ]; then
    pip_args+=(--user)
fi
python3 -m pip install --quiet "${pip_args[@]}" "numpy>=1.21" pytest ml_dtypes
python3 -m pip install --quiet "${pip_args[@]}" ./python
python3 -m pytest -q python/tests
