"""Launch overhead from Python on torch tensors: a one-block kernel called 10^4 times, then one
synchronise, per call; Tessera (`vector_add.tile`, 1024 elements: one block) against a Triton
kernel of the same work and `torch.add(out=)`, in one process on one GPU. Each is warmed up, then
timed in nine rounds that take the three in turn; the median round of each is printed.

Run on a GPU machine with torch and Triton and the package installed (`pip install ./python`):
`python3 tests/bench/python_launch.py`. With `--parts`, also the time of each torch call the
native fast path makes per tensor argument (`get_device()`, `dtype`, `data_ptr()`, `shape`,
`stride()`) and of torch's current-stream getter, to see where a launch's time goes.
"""

import os
import sys
import time

import torch
import triton
import triton.language as tl

import tessera

N = 1024
CALLS = 10_000


@triton.jit
def add_kernel(x, y, z, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    tl.store(z + i, tl.load(x + i, mask=m) + tl.load(y + i, mask=m), mask=m)


def per_call_us(fns, rounds: int = 9) -> list:
    """Per call (µs) of each of `fns`: `rounds` rounds, each timing every function in turn (so
    that a slow spell of the host falls on all of them alike); the median round of each."""
    for fn in fns:
        fn()
    torch.cuda.synchronize()
    runs = [[] for _ in fns]
    for _ in range(rounds):
        for fn, r in zip(fns, runs):
            start = time.perf_counter()
            for _ in range(CALLS):
                fn()
            torch.cuda.synchronize()
            r.append((time.perf_counter() - start) / CALLS * 1e6)
    return [sorted(r)[rounds // 2] for r in runs]


def main() -> None:
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    add = tessera.compile(os.path.join(root, "examples", "vector_add.tile")).vector_add
    x, y = torch.randn(N, device="cuda"), torch.randn(N, device="cuda")
    z = torch.empty_like(x)
    add(x, y, z)
    torch.cuda.synchronize()
    assert torch.equal(z, x + y)
    t, tr, ta = per_call_us([lambda: add(x, y, z), lambda: add_kernel[(1,)](x, y, z, N, BLOCK=N),
                             lambda: torch.add(x, y, out=z)])
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    print(f"per call, {CALLS} calls then one synchronise (median of 9 interleaved rounds): tessera {t:.2f} us, "
          f"triton {tr:.2f} us, torch.add {ta:.2f} us; tessera / triton = {t / tr:.2f}")
    if "--parts" in sys.argv:
        stream = torch._C._cuda_getCurrentRawStream
        parts = [
            ("an empty call", lambda: None),
            ("get_device() x3", lambda: (x.get_device(), y.get_device(), z.get_device())),
            ("dtype x3", lambda: (x.dtype, y.dtype, z.dtype)),
            ("data_ptr() x3", lambda: (x.data_ptr(), y.data_ptr(), z.data_ptr())),
            ("shape x3", lambda: (x.shape, y.shape, z.shape)),
            ("stride() x3", lambda: (x.stride(), y.stride(), z.stride())),
            ("current stream", lambda: stream(0)),
        ]
        for (name, _), us in zip(parts, per_call_us([f for _, f in parts], rounds=5)):
            print(f"  {name:20s} {us * 1000:8.1f} ns")


if __name__ == "__main__":
    main()
