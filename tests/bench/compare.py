#!/usr/bin/env python3
"""Tessera against the anchors, in one run on one GPU: the figures in docs/benchmarks.md.

Runs on the GPU machine (python3 with PyTorch, Triton and torch_geometric; a release build of
`tessera`). Two parts, both printed as tables at the end and written as JSON with --out:

host    compile time of each canonical example (`tessera build`, cold cache, then the cache hit)
        next to Triton's first compile of its tutorial matmul; launch overhead of a tiny kernel
        launched 10^4 times (`tessera bench --launches`) next to a Triton launch of the same
        kernel and torch.add.
kernels the anchors of ../shared/anchors/anchors.py (cuBLAS, the Triton tutorial matmul, SDPA
        flash and cuDNN, FlexAttention, torch.sparse/cuSPARSE, PyG RGCNConv) and `tessera bench`
        on the same shapes and the same inputs. Every time is a median of CUDA-event-timed runs
        after warm-up with L2 flushed (triton.testing.do_bench for the anchors; `tessera bench`
        does the same), on random inputs, never zeros. Tessera's output from the first launch on
        those inputs is checked against the best anchor's output (relative L2 error) before its
        time is reported; a wrong result is marked WRONG. A case whose Tessera kernel does not
        exist yet, or fails, says so in the table.

Usage: python3 tests/bench/compare.py [--tessera target/release/tessera] [--only host,gemm,...]
       [--quick] [--out results.json]
Run from the repository root.
"""
import argparse
import datetime
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AREAS = ["host", "gemm", "attention", "natten", "graph", "memory", "training"]

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--tessera", default=os.path.join(ROOT, "target/release/tessera"))
ap.add_argument("--only", default=",".join(AREAS), help="comma-separated areas: " + ", ".join(AREAS))
ap.add_argument("--quick", action="store_true", help="the first shape of each area only")
ap.add_argument("--tune", action="store_true", help="run `tessera bench --tune` (slow: compiles and times the #[tune] space)")
ap.add_argument("--warp-specialize", action="store_true",
                help="also time each program built with `--warp-specialize true` (a row marked [ws]; the pass leaves kernels it cannot take as they are)")
ap.add_argument("--timeout", type=float, default=240.0, help="seconds for one tessera command")
ap.add_argument("--out", default=None, help="write every result as JSON here")
ap.add_argument("--codegen", default="llvm,ptx", help="the emitters to measure, comma-separated (llvm, ptx): a row each")
ap.add_argument("--llvm-passes", default=None, help="the llvm emitter's pass pipeline (`tessera --llvm-passes`), to compare pipelines")
args = ap.parse_args()
only = set(args.only.split(","))
CODEGENS = [c for c in args.codegen.split(",") if c]

# Triton's cache must be empty for its cold compile: set before triton is imported.
TMP = tempfile.mkdtemp(prefix="tessera-compare-")
os.environ["TRITON_CACHE_DIR"] = os.path.join(TMP, "triton-cache")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.testing import do_bench  # noqa: E402

torch.manual_seed(0)
dev = "cuda"
TESSERA = os.path.abspath(args.tessera)
started = time.time()


def log(*a):
    print(*a, flush=True)


def bench(fn):
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def tessera(cmd, env=None, timeout=None):
    """Runs tessera; returns (exit code, stdout, stderr, wall seconds)."""
    e = dict(os.environ)
    e.update(env or {})
    t = time.perf_counter()
    try:
        p = subprocess.run([TESSERA] + cmd, capture_output=True, text=True, env=e, timeout=timeout or args.timeout, cwd=ROOT)
        return p.returncode, p.stdout, p.stderr, time.perf_counter() - t
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {timeout or args.timeout:.0f} s", time.perf_counter() - t


def first_line(s):
    lines = [l for l in s.strip().splitlines() if l.strip()]
    err = [l for l in lines if l.startswith("error")]
    return (err or lines or ["(no output)"])[0][:160]


version = subprocess.run([TESSERA, "--version"], capture_output=True, text=True).stdout.strip()
info = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "device": torch.cuda.get_device_name(),
    "torch": torch.__version__,
    "triton": triton.__version__,
    "tessera": version,
    "command": "python3 tests/bench/compare.py " + " ".join(sys.argv[1:]),
}
log("info", json.dumps(info))
results = {"info": info, "host": {}, "kernels": []}

# ----------------------------------------------------------------------------------------------
# Host side: compile time, cache, launch overhead.


@triton.jit
def add_kernel(x, y, o, n, B: tl.constexpr):
    i = tl.program_id(0) * B + tl.arange(0, B)
    m = i < n
    tl.store(o + i, tl.load(x + i, mask=m) + tl.load(y + i, mask=m), mask=m)


@triton.jit
def tutorial_mm(a, b, c, M, N, K, sam, sak, sbk, sbn, scm, scn, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pm = tl.program_id(0)
    pn = tl.program_id(1)
    rm = pm * BM + tl.arange(0, BM)
    rn = pn * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BK)):
        av = tl.load(a + rm[:, None] * sam + (k * BK + rk)[None, :] * sak, mask=(rm[:, None] < M) & ((k * BK + rk)[None, :] < K), other=0.0)
        bv = tl.load(b + (k * BK + rk)[:, None] * sbk + rn[None, :] * sbn, mask=((k * BK + rk)[:, None] < K) & (rn[None, :] < N), other=0.0)
        acc = tl.dot(av, bv, acc)
    tl.store(c + rm[:, None] * scm + rn[None, :] * scn, acc.to(tl.bfloat16), mask=(rm[:, None] < M) & (rn[None, :] < N))


def host_part():
    h = results["host"]
    # Tessera: every canonical example, cold cache, then the same build again (a cache hit).
    examples = sorted(f for f in os.listdir(os.path.join(ROOT, "examples")) if f.endswith(".tile"))
    rows = []
    for f, codegen in [(f, c) for f in examples for c in CODEGENS]:
        # Three cold builds, each with an empty cache folder: the median one is reported (the
        # host's speed drifts from one build to the next).
        cold = []
        for i in range(3):
            cache = os.path.join(TMP, f"tessera-cache-{i}-{codegen}-" + f)
            env = {"TESSERA_CACHE_DIR": cache}
            out = os.path.join(TMP, "aot-" + f)
            cmd = ["build", "examples/" + f, "--emit", "ptx,meta", "-o", out, "--time", "--codegen", codegen]
            code, _, err, cold_wall = tessera(cmd, env)
            m = re.search(r"(\d+) kernels? in ([\d.]+) ms \(cache (\w+)\)", err) if code == 0 else None
            cold.append((float(m.group(2)) if m else float("inf"), code, err, cold_wall, env))
        cold.sort(key=lambda c: c[0])
        _, code, err, cold_wall, env = cold[1]
        row = {"file": f, "codegen": codegen}
        if code != 0:
            row["error"] = first_line(err)
            rows.append(row)
            continue
        row["cold_ms_all"] = [c[0] for c in cold]
        m = re.search(r"(\d+) kernels? in ([\d.]+) ms \(cache (\w+)\)", err)
        code2, _, err2, warm_wall = tessera(cmd, env)
        m2 = re.search(r"in ([\d.]+) ms \(cache (\w+)\)", err2)
        row.update(kernels=int(m.group(1)), cold_ms=float(m.group(2)), cold_wall_ms=cold_wall * 1e3, cold_state=m.group(3))
        st = re.search(r"\(cache \w+\): (.*)", err)
        if st:
            row["stages"] = st.group(1).strip()
        if code2 == 0 and m2:
            row.update(warm_ms=float(m2.group(1)), warm_wall_ms=warm_wall * 1e3, warm_state=m2.group(2))
        rows.append(row)
        log("compile", json.dumps(row))
    h["tessera_build"] = rows

    # Triton: first compile of a small kernel (its JIT's own start), then the tutorial matmul
    # configurations cold, as ../shared/anchors/host_anchors.py measured them.
    x = torch.randn(1, device=dev)
    y = torch.randn(1, device=dev)
    o = torch.empty_like(x)
    torch.cuda.synchronize()
    t = time.perf_counter()
    add_kernel[(1,)](x, y, o, 1, B=128)
    torch.cuda.synchronize()
    h["triton_add_cold_compile_ms"] = (time.perf_counter() - t) * 1e3
    a = torch.randn(4096, 4096, device=dev, dtype=torch.bfloat16)
    b = torch.randn_like(a)
    c = torch.empty_like(a)
    tri = {}
    for cfg in [(128, 128, 64), (128, 256, 64), (64, 128, 32)]:
        t = time.perf_counter()
        tutorial_mm[(4096 // cfg[0], 4096 // cfg[1])](a, b, c, 4096, 4096, 4096, a.stride(0), a.stride(1), b.stride(0), b.stride(1),
                                                     c.stride(0), c.stride(1), BM=cfg[0], BN=cfg[1], BK=cfg[2])
        torch.cuda.synchronize()
        tri["BM=%d BN=%d BK=%d" % cfg] = (time.perf_counter() - t) * 1e3
    h["triton_mm_cold_compile_ms"] = tri
    log("triton compile", json.dumps(tri))
    del a, b, c

    # Launch overhead: the same tiny kernel (one block adding one element) 10^4 times.
    n = 10000
    for _ in range(100):
        add_kernel[(1,)](x, y, o, 1, B=128)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        add_kernel[(1,)](x, y, o, 1, B=128)
    torch.cuda.synchronize()
    h["triton_launch_us"] = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    for _ in range(n):
        torch.add(x, y, out=o)
    torch.cuda.synchronize()
    h["torch_add_launch_us"] = (time.perf_counter() - t) / n * 1e6
    code, out, err, _ = tessera(["bench", "examples/vector_add.tile", "--dims", "N=1", "--launches", str(n), "--reps", "10", "--json"],
                                {"TESSERA_CACHE_DIR": os.path.join(TMP, "bench-cache")})
    if code == 0:
        r = json.loads(out.strip().splitlines()[-1])
        h["tessera_launch_us"] = r["launch_overhead"]["per_launch_us"]
        h["tessera_launch_submit_us"] = r["launch_overhead"]["submit_us"]
        h["driver_launch_us"] = r["launch_overhead"]["driver_us"]
    else:
        h["tessera_launch_error"] = first_line(err)
    log("launch", json.dumps({k: v for k, v in h.items() if "launch" in k}))


# ----------------------------------------------------------------------------------------------
# Kernels: anchors and tessera bench on the same shapes and inputs.

rows = []


def rec(area, case, impl, ms, flops=None, nbytes=None, note="", anchor=True):
    r = {"area": area, "case": case, "impl": impl, "ms": ms, "anchor": anchor, "note": note}
    if ms and flops:
        r["tflops"] = flops / ms / 1e9
    if ms and nbytes:
        r["gbps"] = nbytes / ms / 1e6
    rows.append(r)
    results["kernels"].append(r)
    log("row", json.dumps(r))


def relerr(got, ref):
    got = got.float()
    ref = ref.float()
    if torch.isnan(got).any():
        return float("nan")
    return ((got - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def save(t, name):
    path = os.path.join(TMP, name + ".npy")
    # numpy has no bf16: saved as f32 and rounded back by the loader; f16 is saved as `<f2`.
    np.save(path, t.detach().float().cpu().numpy() if t.dtype == torch.bfloat16 else t.detach().cpu().numpy())
    return path


def run_tessera(area, case, file, kernel, inputs, scalars, out_name, out_shape, ref, flops=None, nbytes=None, consts=None, tol=2e-2,
                extra="", dims=None, path=None, impl=None):
    """`tessera bench` on the same inputs; checks its first launch's output against `ref`.
    `file` is an example; `path` (with `impl`) a program elsewhere."""
    impl = impl or "tessera " + file.replace(".tile", "")
    path = path or os.path.join(ROOT, "examples", file)
    if not os.path.exists(path):
        rec(area, case, impl, None, note=f"no Tessera kernel yet (examples/{file})", anchor=False)
        return
    cmd = ["bench", path, "--kernel", kernel, "--json"]
    for name, t in inputs.items():
        cmd += ["--arg", f"{name}={save(t, case_id(case) + '-' + name)}"]
    for name, v in scalars.items():
        cmd += ["--arg", f"{name}={v}"]
    for name, v in (consts or {}).items():
        cmd += ["--const", f"{name}={v}"]
    if dims:
        cmd += ["--dims", ",".join(f"{k}={v}" for k, v in dims.items())]
    out_path = os.path.join(TMP, case_id(case) + "-result.npy")
    cmd += ["--out", f"{out_name}={out_path}"]
    # The program at its defaults, then (with --tune) the autotuner's pick: one row each.
    tunable = "#[tune(" in open(path).read()
    for codegen in CODEGENS:
        name = impl + (f" [{codegen}]" if len(CODEGENS) > 1 else "")
        for tune in [False] + ([True] if args.tune and tunable else []):
            for ws in [False] + ([True] if args.warp_specialize else []):
                passes = ["--llvm-passes", args.llvm_passes] if args.llvm_passes and codegen == "llvm" else []
                label = name + (" [ws]" if ws else "") + (" (autotuned)" if tune else "")
                flags = passes + (["--tune"] if tune else []) + (["--warp-specialize", "true"] if ws else [])
                run_one(area, case, label, cmd + ["--codegen", codegen] + flags, out_path, out_shape, ref, flops, nbytes, tol, extra)
    for f in inputs:
        try:
            os.remove(os.path.join(TMP, case_id(case) + "-" + f + ".npy"))
        except OSError:
            pass


def run_one(area, case, impl, cmd, out_path, out_shape, ref, flops, nbytes, tol, extra):
    code, out, err, wall = tessera(cmd, {"TESSERA_CACHE_DIR": os.path.join(TMP, "bench-cache")})
    if code != 0:
        rec(area, case, impl, None, note="tessera bench failed: " + first_line(err), anchor=False)
        return
    r = json.loads(out.strip().splitlines()[-1])
    got = torch.from_numpy(np.load(out_path)).to(dev).reshape(out_shape)
    os.remove(out_path)
    e = relerr(got, ref)
    ok = e == e and e < tol
    note = f"relerr {e:.1e}" + ("" if ok else f" WRONG (tolerance {tol:.0e})")
    if r.get("unwritten"):
        note += f"; unwritten {r['unwritten']}"
    if r.get("config"):
        note += f"; tuned {r['config']}"
    note += f"; {r['registers']} regs, {r['shared_bytes']} B smem" + (f"; {extra}" if extra else "")
    rec(area, case, impl, r["timing"]["median_ms"], flops, nbytes, note, anchor=False)


def case_id(case):
    return re.sub(r"[^A-Za-z0-9]+", "_", case)[:60]


def gemm_part():
    @triton.autotune(configs=[
        triton.Config({"BM": 128, "BN": 256, "BK": 64, "G": 8}, num_stages=3, num_warps=8),
        triton.Config({"BM": 128, "BN": 128, "BK": 64, "G": 8}, num_stages=4, num_warps=4),
        triton.Config({"BM": 128, "BN": 128, "BK": 64, "G": 8}, num_stages=3, num_warps=8),
        triton.Config({"BM": 64, "BN": 256, "BK": 64, "G": 8}, num_stages=4, num_warps=4),
    ], key=["M", "N", "K"])
    @triton.jit
    def mm_kernel(a, b, c, M, N, K, sam, sak, sbk, sbn, scm, scn, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, G: tl.constexpr):
        pid = tl.program_id(0)
        npm = tl.cdiv(M, BM)
        npn = tl.cdiv(N, BN)
        gid = pid // (G * npn)
        fm = gid * G
        gs = min(npm - fm, G)
        pm = fm + ((pid % (G * npn)) % gs)
        pn = (pid % (G * npn)) // gs
        rm = (pm * BM + tl.arange(0, BM)) % M
        rn = (pn * BN + tl.arange(0, BN)) % N
        rk = tl.arange(0, BK)
        ap = a + rm[:, None] * sam + rk[None, :] * sak
        bp = b + rk[:, None] * sbk + rn[None, :] * sbn
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k in range(0, tl.cdiv(K, BK)):
            av = tl.load(ap, mask=rk[None, :] < K - k * BK, other=0.0)
            bv = tl.load(bp, mask=rk[:, None] < K - k * BK, other=0.0)
            acc = tl.dot(av, bv, acc)
            ap += BK * sak
            bp += BK * sbk
        cm = pm * BM + tl.arange(0, BM)
        cn = pn * BN + tl.arange(0, BN)
        tl.store(c + cm[:, None] * scm + cn[None, :] * scn, acc.to(tl.bfloat16), mask=(cm[:, None] < M) & (cn[None, :] < N))

    def triton_mm(a, b):
        M, K = a.shape
        _, N = b.shape
        c = torch.empty((M, N), device=dev, dtype=a.dtype)
        mm_kernel[lambda META: (triton.cdiv(M, META["BM"]) * triton.cdiv(N, META["BN"]),)](
            a, b, c, M, N, K, a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1))
        return c

    for n in (4096,) if args.quick else (4096, 8192):
        case = f"bf16 {n}^3"
        a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
        fl = 2 * n**3
        ref = a @ b
        rec("gemm", case, "cublas (torch.matmul)", bench(lambda: a @ b), flops=fl)
        out = triton_mm(a, b)
        rec("gemm", case, "triton tutorial (autotuned)", bench(lambda: triton_mm(a, b)), flops=fl, note=f"relerr {relerr(out, ref):.1e}")
        run_tessera("gemm", case, "matmul.tile", "matmul", {"a": a, "b": b}, {}, "c", (n, n), ref, flops=fl)
        del ref, out
        if n == 4096:
            import torch.nn.functional as F
            bias = torch.randn(n, device=dev)
            lcase = f"linear+gelu bf16 {n}^3"
            lref = F.gelu(a.float() @ b.float() + bias)
            rec("gemm", lcase, "torch eager (addmm + gelu)", bench(lambda: F.gelu(torch.addmm(bias.to(torch.bfloat16), a, b))), flops=fl)
            run_tessera("gemm", lcase, "linear.tile", "linear", {"x": a, "w": b, "bias": bias}, {}, "y", (n, n), lref, flops=fl)
            del lref
        del a, b
        if n == 4096:
            # f16: the same program with its dtype replaced (the language has no dtype generics).
            f16_path = os.path.join(TMP, "matmul_f16.tile")
            with open(os.path.join(ROOT, "examples", "matmul.tile")) as f:
                text = f.read()
            with open(f16_path, "w") as f:
                f.write(text.replace("bf16", "f16"))
            case = f"f16 {n}^3"
            a = torch.randn(n, n, device=dev, dtype=torch.float16)
            b = torch.randn(n, n, device=dev, dtype=torch.float16)
            ref = a @ b
            rec("gemm", case, "cublas (torch.matmul)", bench(lambda: a @ b), flops=fl)
            run_tessera("gemm", case, "matmul.tile", "matmul", {"a": a, "b": b}, {}, "c", (n, n), ref, flops=fl, path=f16_path,
                        impl="tessera matmul (bf16 -> f16)")
            del a, b, ref


def attention_part():
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    shapes = [(4, 32, 4096, 128, False), (4, 32, 4096, 128, True), (8, 16, 4096, 64, False)]
    for (B, H, S, D, causal) in shapes[:1] if args.quick else shapes:
        case = f"B{B} H{H} S{S} D{D} causal={causal}"
        q, k, v = (torch.randn(B, H, S, D, device=dev, dtype=torch.bfloat16) for _ in range(3))
        fl = 4 * B * H * S * S * D * (0.5 if causal else 1.0)
        ref = None
        for name, be in [("flash (sdpa)", SDPBackend.FLASH_ATTENTION), ("cudnn (sdpa)", SDPBackend.CUDNN_ATTENTION)]:
            try:
                with sdpa_kernel(be):
                    o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                    ref = o if ref is None else ref
                    rec("attention", case, name, bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)), flops=fl)
            except Exception as e:  # noqa: BLE001 - an unavailable backend is a note, not a failure
                rec("attention", case, name, None, note="unavailable: " + repr(e)[:100])
        run_tessera("attention", case, "attention.tile", "attention", {"q": q, "k": k, "v": v}, {"scale": 1.0 / math.sqrt(D)}, "o",
                    (B, H, S, D), ref, flops=fl, consts={"D": D, "CAUSAL": "true" if causal else "false"})
        del q, k, v, ref


def bench_steps(path, codegen, steps, arg_file, out, prefix, timed=lambda kernel: True):
    """`tessera bench` of several kernels of one file in order: each step is `(kernel, inputs,
    outputs, extra arguments)`, an input `NAME` or `NAME=SOURCE` read from `arg_file(SOURCE or
    NAME)`, each output saved after the first launch to `out(NAME)` for the steps after it.
    Returns `(total ms of the timed kernels, a note per kernel, None)`, or `(None, notes, why)`
    when a step failed."""
    total, notes = 0.0, []
    for kernel, ins, outs, extra in steps:
        cmd = ["bench", path, "--kernel", kernel, "--json", "--codegen", codegen] + extra
        for a in ins:
            name, _, src = a.partition("=")
            cmd += ["--arg", f"{name}={arg_file(src or name)}"]
        cmd += [x for n in outs for x in ("--out", f"{n}={out(n)}")]
        code, so, err, _ = tessera(cmd, {"TESSERA_CACHE_DIR": os.path.join(TMP, "bench-cache")})
        if code != 0:
            return None, notes, f"{kernel}: " + first_line(err)
        r = json.loads(so.strip().splitlines()[-1])
        ms = r["timing"]["median_ms"]
        notes.append(f"{kernel.removeprefix(prefix)} {ms:.3f} ms {r['registers']} regs")
        if timed(kernel):
            total += ms
    return total, notes, None


def grads_note(names, refs, out, tol):
    """The relative L2 error of each saved output `out(name)` against its torch reference, as a
    note (`relerr dq 1.4e-03, …`), marked WRONG when one is not below `tol`."""
    errs = [(n, relerr(torch.from_numpy(np.load(out(n))).to(dev).reshape(ref.shape).to(ref.dtype), ref)) for n, ref in zip(names, refs)]
    wrong = any(not (e < tol) for _, e in errs)
    return "relerr " + ", ".join(f"{n} {e:.1e}" for n, e in errs) + (f" WRONG (tolerance {tol:.0e})" if wrong else "")


def training_part():
    """Attention backward (`attention_bwd.tile`: delta, dK/dV and dQ kernels, from the log-sum-exp
    its training forward saves) against cuDNN's SDPA backward; the time is the sum of the three
    kernels' medians, each output checked against torch's gradients."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    shapes = [(4, 32, 4096, 128, False), (4, 32, 4096, 128, True), (8, 16, 4096, 64, False)]
    path = os.path.join(ROOT, "examples", "attention_bwd.tile")
    linear_training(4096)
    for (B, H, S, D, causal) in shapes[:1] if args.quick else shapes:
        case = f"backward B{B} H{H} S{S} D{D} causal={causal}"
        # dQ, dK, dV: five S×S×D products against the forward's two.
        fl = 2.5 * 4 * B * H * S * S * D * (0.5 if causal else 1.0)
        q, k, v = (torch.randn(B, H, S, D, device=dev, dtype=torch.bfloat16).requires_grad_(True) for _ in range(3))
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        dout = torch.randn_like(o)
        dq_ref, dk_ref, dv_ref = torch.autograd.grad(o, (q, k, v), dout, retain_graph=True)
        rec("training", case, "cudnn (sdpa) backward", bench(lambda: torch.autograd.grad(o, (q, k, v), dout, retain_graph=True)), flops=fl)
        files = {n: save(t, case_id(case) + "-" + n) for n, t in [("q", q), ("k", k), ("v", v), ("dout", dout)]}
        consts = ["--const", f"D={D}", "--const", f"CAUSAL={'true' if causal else 'false'}"]
        scale = ["--arg", f"scale={1.0 / math.sqrt(D)}"]
        out = lambda n: os.path.join(TMP, case_id(case) + "-" + n + ".npy")  # noqa: E731
        for codegen in CODEGENS:
            impl = "tessera attention_bwd" + (f" [{codegen}]" if len(CODEGENS) > 1 else "")
            steps = [
                ("attention_fwd", ["q", "k", "v"], ["o", "lse"], consts + scale),
                ("attention_bwd_delta", ["o", "dout"], ["delta"], ["--const", f"D={D}"]),
                ("attention_bwd_dkdv", ["q", "k", "v", "dout", "lse", "delta"], ["dk", "dv"], consts + scale),
                ("attention_bwd_dq", ["q", "k", "v", "dout", "lse", "delta"], ["dq"], consts + scale),
            ]
            total, notes, failed = bench_steps(path, codegen, steps, lambda n: files.get(n) or out(n), out, "attention_",
                                               timed=lambda kernel: kernel != "attention_fwd")
            if failed:
                rec("training", case, impl, None, note="tessera bench failed: " + failed, anchor=False)
                continue
            note = grads_note(["dq", "dk", "dv"], [dq_ref, dk_ref, dv_ref], out, 3e-2) + "; " + "; ".join(notes)
            rec("training", case, impl, total, fl, None, note, anchor=False)
            # The one-pass backward: dK, dV and dQ's shares (window reductions into a zeroed f32
            # buffer), then dQ converted; the time adds delta, the zeroing and the conversion.
            zeros = torch.zeros(B, H, S, D, device=dev)
            files["dq_acc0"] = save(zeros, case_id(case) + "-dq_acc0")
            zero_ms = bench(lambda: zeros.zero_())
            steps = [
                ("attention_bwd_delta", ["o", "dout"], ["delta"], ["--const", f"D={D}"]),
                ("attention_bwd_fused", ["q", "k", "v", "dout", "lse", "delta", "dq_acc=dq_acc0"], ["dk", "dv", "dq_acc"], consts + scale),
                ("attention_bwd_dq_convert", ["dq_acc"], ["dq"], ["--const", f"D={D}"] + scale),
            ]
            total, notes, failed = bench_steps(path, codegen, steps, lambda n: files.get(n) or out(n), out, "attention_")
            impl = "tessera attention_bwd fused" + (f" [{codegen}]" if len(CODEGENS) > 1 else "")
            if failed:
                rec("training", case, impl, None, note="tessera bench failed: " + failed, anchor=False)
                continue
            note = grads_note(["dq", "dk", "dv"], [dq_ref, dk_ref, dv_ref], out, 3e-2) + f"; zeroing {zero_ms:.3f} ms; " + "; ".join(notes)
            rec("training", case, impl, total + zero_ms, fl, None, note, anchor=False)
            del zeros
        del q, k, v, o, dout, dq_ref, dk_ref, dv_ref


def linear_training(n):
    """Linear + GELU backward (`linear_bwd.tile`: dx and dw/dbias kernels from the `z` its training
    forward saves) against torch eager's autograd of `gelu(addmm(bias, x, w))`."""
    import torch.nn.functional as F
    case = f"linear+gelu backward bf16 {n}^3"
    fl = 2 * 2 * n * n * n
    x, w = (torch.randn(n, n, device=dev, dtype=torch.bfloat16).requires_grad_(True) for _ in range(2))
    bias = torch.randn(n, device=dev).to(torch.bfloat16).requires_grad_(True)
    z = torch.addmm(bias, x, w)
    y = F.gelu(z)
    dy = torch.randn_like(y)
    dx_ref, dw_ref, _ = torch.autograd.grad(y, (x, w, bias), dy, retain_graph=True)
    rec("training", case, "torch eager (addmm + gelu) backward", bench(lambda: torch.autograd.grad(y, (x, w, bias), dy, retain_graph=True)), flops=fl)
    path = os.path.join(ROOT, "examples", "linear_bwd.tile")
    files = {nm: save(t, case_id(case) + "-" + nm) for nm, t in [("x", x), ("w", w), ("z", z), ("dy", dy), ("dbias", torch.zeros(n, device=dev))]}
    out = lambda nm: os.path.join(TMP, case_id(case) + "-" + nm + ".npy")  # noqa: E731
    for codegen in CODEGENS:
        impl = "tessera linear_bwd" + (f" [{codegen}]" if len(CODEGENS) > 1 else "")
        steps = [("linear_bwd_dz", ["z", "dy", "dbias"], ["dz"], []), ("linear_bwd_dx", ["w", "dz"], ["dx"], []),
                 ("linear_bwd_dw", ["x", "dz"], ["dw"], [])]
        total, notes, failed = bench_steps(path, codegen, steps, lambda nm: files.get(nm) or out(nm), out, "linear_")
        if failed:
            rec("training", case, impl, None, note="tessera bench failed: " + failed, anchor=False)
            continue
        rec("training", case, impl, total, fl, None, grads_note(["dx", "dw"], [dx_ref, dw_ref], out, 2e-2) + "; " + "; ".join(notes), anchor=False)
    del x, w, bias, z, y, dy


def natten3d(flex, create_block_mask):
    """NA-3D forward (`na3d.tile`) against compiled FlexAttention with the same window mask."""
    B, Hh, Zs, X, Y, D, (kz, kx, ky) = 2, 8, 16, 32, 32, 64, (3, 7, 7)
    N = Zs * X * Y
    case = f"3D B{B} heads{Hh} {Zs}x{X}x{Y} D{D} k{kz}x{kx}x{ky}"
    q, k, v = (torch.randn(B, Hh, N, D, device=dev, dtype=torch.bfloat16) for _ in range(3))

    def mask_mod(b, h, qi, ki):
        ok = None
        for (n, ks, stride, qc, kc) in [(Zs, kz, X * Y, qi // (X * Y), ki // (X * Y)), (X, kx, Y, qi // Y % X, ki // Y % X), (Y, ky, 1, qi % Y, ki % Y)]:
            r = ks // 2
            c = torch.clamp(qc, r, n - 1 - r)
            m = (kc - c).abs() <= r
            ok = m if ok is None else ok & m
        return ok

    bm = create_block_mask(mask_mod, B=None, H=None, Q_LEN=N, KV_LEN=N)
    ref = flex(q, k, v, block_mask=bm)
    fl = 4 * B * Hh * N * kz * kx * ky * D
    rec("natten", case, "flex_attention (compiled)", bench(lambda: flex(q, k, v, block_mask=bm)), flops=fl)
    shape6 = (B, Hh, Zs, X, Y, D)
    run_tessera("natten", case, "na3d.tile", "na3d", {"q": q.reshape(shape6), "k": k.reshape(shape6), "v": v.reshape(shape6)},
                {"scale": 1.0 / math.sqrt(D)}, "o", (B, Hh, N, D), ref, flops=fl, consts={"KZ": kz, "KX": kx, "KY": ky, "D": D})
    del q, k, v, ref
    natten3d_backward(flex, bm, B, Hh, (Zs, X, Y), D, (kz, kx, ky))


def natten3d_backward(flex, bm, B, Hh, dims, D, ks):
    """NA-3D backward (`na3d_bwd.tile`: delta, dQ over each query patch's keys, dK/dV over each
    key patch's queries, from the log-sum-exp its training forward saves; the forward is run, not
    timed) against compiled
    FlexAttention's backward with the same block mask; the time is the sum of the three kernels'."""
    Zs, X, Y = dims
    N = Zs * X * Y
    case = f"3D backward B{B} heads{Hh} {Zs}x{X}x{Y} D{D} k{ks[0]}x{ks[1]}x{ks[2]}"
    fl = 2.5 * 4 * B * Hh * N * ks[0] * ks[1] * ks[2] * D
    files, out, refs = flex_backward_anchor(flex, bm, case, B, Hh, N, D, (B, Hh, Zs, X, Y, D), fl)
    cfg = ["--arg", f"scale={1.0 / math.sqrt(D)}", "--const", f"KZ={ks[0]}", "--const", f"KX={ks[1]}", "--const", f"KY={ks[2]}",
           "--const", f"D={D}"]
    na_training_rows(case, "na3d", cfg, cfg, D, files, out, refs, fl)
    del refs


def flex_backward_anchor(flex, bm, case, B, Hh, N, D, shape, fl):
    """The FlexAttention backward anchor row of an NA training case (`q, k, v` random, `[B, Hh, N,
    D]`, under the block mask `bm`), and its inputs saved in `shape` for `tessera bench`. Returns
    `(files, out, refs)`: the saved inputs by name, the path of a Tessera output by name, and
    torch's gradients of q, k, v."""
    # The compiled backward is timed over one graph, kept between runs (`retain_graph`), which
    # donated buffers forbid.
    import torch._functorch.config
    torch._functorch.config.donated_buffer = False
    q, k, v = (torch.randn(B, Hh, N, D, device=dev, dtype=torch.bfloat16).requires_grad_(True) for _ in range(3))
    o = flex(q, k, v, block_mask=bm)
    dout = torch.randn_like(o)
    refs = torch.autograd.grad(o, (q, k, v), dout, retain_graph=True)
    rec("natten", case, "flex_attention (compiled) backward", bench(lambda: torch.autograd.grad(o, (q, k, v), dout, retain_graph=True)), flops=fl)
    files = {n: save(t.detach().reshape(shape), case_id(case) + "-" + n) for n, t in [("q", q), ("k", k), ("v", v), ("dout", dout)]}
    return files, (lambda n: os.path.join(TMP, case_id(case) + "-" + n + ".npy")), refs


def na_training_rows(case, name, band, cfg, D, files, out, refs, fl):
    """The rows of `{name}_bwd.tile` (`{name}_fwd` saving `lse`, `{name}_bwd_delta`, `_dq` with
    the arguments `band`, `_dkdv` with `cfg`) for each emitter: the time of delta + dQ + dK/dV
    (the forward is run, not timed), each gradient checked against torch's `refs`."""
    path = os.path.join(ROOT, "examples", f"{name}_bwd.tile")
    qkv = ["q", "k", "v"]
    steps = [(f"{name}_fwd", qkv, ["o", "lse"], band),
             (f"{name}_bwd_delta", ["o", "dout"], ["delta"], ["--const", f"D={D}"]),
             (f"{name}_bwd_dq", qkv + ["dout", "lse", "delta"], ["dq"], band),
             (f"{name}_bwd_dkdv", qkv + ["dout", "lse", "delta"], ["dk", "dv"], cfg)]
    for codegen in CODEGENS:
        impl = f"tessera {name}_bwd" + (f" [{codegen}]" if len(CODEGENS) > 1 else "")
        total, notes, failed = bench_steps(path, codegen, steps, lambda n: files.get(n) or out(n), out, f"{name}_",
                                           timed=lambda kn: kn != f"{name}_fwd")
        if failed:
            rec("natten", case, impl, None, note="tessera bench failed: " + failed, anchor=False)
            continue
        rec("natten", case, impl, total, fl, None, grads_note(["dq", "dk", "dv"], refs, out, 3e-2) + "; " + "; ".join(notes), anchor=False)


def natten1d(flex, create_block_mask):
    """NA-1D forward (`na1d.tile`) and training (`na1d_bwd.tile`: delta, dQ, dK/dV over each key
    block's queries from the saved log-sum-exp; the forward is run, not timed) against compiled
    FlexAttention with the same window mask, forward and backward."""
    B, Hh, L, D, ks = 4, 8, 16384, 64, 13
    r = ks // 2
    case = f"1D B{B} heads{Hh} L{L} D{D} k{ks}"

    def mask_mod(b, h, qi, ki):
        return (ki - torch.clamp(qi, r, L - 1 - r)).abs() <= r

    bm = create_block_mask(mask_mod, B=None, H=None, Q_LEN=L, KV_LEN=L)
    q, k, v = (torch.randn(B, Hh, L, D, device=dev, dtype=torch.bfloat16) for _ in range(3))
    ref = flex(q, k, v, block_mask=bm)
    fl = 4 * B * Hh * L * ks * D
    rec("natten", case, "flex_attention (compiled)", bench(lambda: flex(q, k, v, block_mask=bm)), flops=fl)
    run_tessera("natten", case, "na1d.tile", "na1d", {"q": q, "k": k, "v": v}, {"scale": 1.0 / math.sqrt(D)}, "o", (B, Hh, L, D), ref,
                flops=fl, consts={"KS": ks, "D": D})
    del q, k, v, ref
    bcase = f"1D backward B{B} heads{Hh} L{L} D{D} k{ks}"
    files, out, refs = flex_backward_anchor(flex, bm, bcase, B, Hh, L, D, (B, Hh, L, D), 2.5 * fl)
    cfg = ["--arg", f"scale={1.0 / math.sqrt(D)}", "--const", f"KS={ks}", "--const", f"D={D}"]
    na_training_rows(bcase, "na1d", cfg, cfg, D, files, out, refs, 2.5 * fl)
    del refs


def natten_part():
    import torch.nn.functional as F
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    flex = torch.compile(flex_attention)
    natten1d(flex, create_block_mask)
    natten3d(flex, create_block_mask)
    shapes = [(4, 8, 64, 64, 64, 7), (2, 8, 128, 128, 64, 13)]
    for (B, Hh, X, Y, D, ks) in shapes[:1] if args.quick else shapes:
        N = X * Y
        r = ks // 2
        case = f"2D B{B} heads{Hh} {X}x{Y} D{D} k{ks}"
        q, k, v = (torch.randn(B, Hh, N, D, device=dev, dtype=torch.bfloat16) for _ in range(3))

        def mask_mod(b, h, qi, ki):
            qx, qy = qi // Y, qi % Y
            kx, ky = ki // Y, ki % Y
            cx = torch.clamp(qx, r, X - 1 - r)
            cy = torch.clamp(qy, r, Y - 1 - r)
            return ((kx - cx).abs() <= r) & ((ky - cy).abs() <= r)

        bm = create_block_mask(mask_mod, B=None, H=None, Q_LEN=N, KV_LEN=N)
        ref = flex(q, k, v, block_mask=bm)
        fl = 4 * B * Hh * N * ks * ks * D
        rec("natten", case, "flex_attention (compiled)", bench(lambda: flex(q, k, v, block_mask=bm)), flops=fl)
        idx = torch.arange(N, device=dev)
        dense = mask_mod(None, None, idx[:, None], idx[None, :])
        rec("natten", case, "sdpa dense bool mask", bench(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=dense)), flops=fl)
        shape5 = (B, Hh, X, Y, D)
        # The key patch must cover TX + KS - 1 positions per axis (a power of two): 8x8 queries
        # with a 16x16 patch for k7, 4x4 queries with a 16x16 patch for k13 (8x8 would need 32x32,
        # whose f32[64, 1024] score tile is over the shared-memory limit).
        t = 8 if ks <= 9 else 4
        w = 1 << (t + ks - 2).bit_length()
        run_tessera("natten", case, "na2d.tile", "na2d", {"q": q.reshape(shape5), "k": k.reshape(shape5), "v": v.reshape(shape5)},
                    {"scale": 1.0 / math.sqrt(D)}, "o", (B, Hh, N, D), ref, flops=fl,
                    consts={"KS": ks, "D": D, "TX": t, "TY": t, "WX": w, "WY": w})
        # The streaming kernel: 4x16 queries, the key patch (4 + KS - 1 rows, 16 + KS - 1 columns
        # rounded up to a power of two) in bands of 4 rows with the online softmax.
        run_tessera("natten", case, "na2d_stream.tile", "na2d_stream", {"q": q.reshape(shape5), "k": k.reshape(shape5), "v": v.reshape(shape5)},
                    {"scale": 1.0 / math.sqrt(D)}, "o", (B, Hh, N, D), ref, flops=fl,
                    consts={"KS": ks, "D": D, "WX": 4 + ks - 1, "WY": 1 << (16 + ks - 2).bit_length()})
        del q, k, v, ref, dense
        natten2d_backward(flex, bm, B, Hh, X, Y, D, ks)


def natten2d_backward(flex, bm, B, Hh, X, Y, D, ks):
    """NA-2D backward (`na2d_bwd.tile`: delta, dQ over each query patch's keys, dK/dV over each
    key patch's queries, from the log-sum-exp its training forward saves; the forward is run, not
    timed) against compiled FlexAttention's backward with the same block mask; the time is the
    sum of the three kernels'."""
    case = f"2D backward B{B} heads{Hh} {X}x{Y} D{D} k{ks}"
    N = X * Y
    # dQ, dK, dV: four products over the window against the forward's two.
    fl = 2.5 * 4 * B * Hh * N * ks * ks * D
    files, out, refs = flex_backward_anchor(flex, bm, case, B, Hh, N, D, (B, Hh, X, Y, D), fl)
    # 4x16 query (and key) patches; the key band of the forward and dQ: 4 + KS - 1 rows.
    cfg = ["--arg", f"scale={1.0 / math.sqrt(D)}", "--const", f"KS={ks}", "--const", f"D={D}"]
    na_training_rows(case, "na2d", cfg + ["--const", f"WX={4 + ks - 1}"], cfg, D, files, out, refs, fl)
    del refs


def graph_part():
    N, E, Fd, R = 169343, 1166243, 128, 8
    g = torch.Generator(device="cpu").manual_seed(1)
    deg_w = torch.arange(1, N + 1, dtype=torch.float64) ** -0.8
    src = torch.multinomial(deg_w.float(), E, replacement=True, generator=g).to(dev)
    dst = torch.randint(0, N, (E,), generator=g).to(dev)
    val = torch.rand(E, device=dev)
    A = torch.sparse_coo_tensor(torch.stack([dst, src]), val, (N, N)).coalesce().to_sparse_csr()
    X = torch.randn(N, Fd, device=dev)
    nnz = A.values().numel()
    case = f"spmm N{N} E{nnz} F{Fd} fp32"
    byt = nnz * (4 + 4) + N * Fd * 4 * 2
    rec("graph", case, "cusparse (torch.sparse.mm csr)", bench(lambda: torch.sparse.mm(A, X)), flops=2 * nnz * Fd, nbytes=byt)

    def scatter_agg():
        out = torch.zeros_like(X)
        out.index_add_(0, dst, X[src] * val[:, None])
        return out

    rec("graph", case, "gather+index_add (PyG-style)", bench(scatter_agg), flops=2 * E * Fd, nbytes=byt)
    ref = torch.sparse.mm(A, X)
    crow, col = A.crow_indices().to(torch.int32), A.col_indices().to(torch.int32)
    run_tessera("graph", case, "spmm_csr.tile", "spmm_csr", {"row_ptr": crow, "col_idx": col, "vals": A.values(), "x": X}, {}, "y", (N, Fd),
                ref, flops=2 * nnz * Fd, nbytes=byt, tol=1e-4, dims={"R": N})
    rcase = f"rgcn layer N{N} E{E} R{R} F{Fd} fp32"
    try:
        from torch_geometric.nn import RGCNConv
    except Exception as e:  # noqa: BLE001
        rec("graph", rcase, "pyg RGCNConv", None, note="unavailable: " + repr(e)[:120])
        return
    et = torch.randint(0, R, (E,), device=dev)
    ei = torch.stack([src, dst])
    conv = RGCNConv(Fd, Fd, R, aggr="add").to(dev)
    with torch.no_grad():
        rec("graph", rcase, "pyg RGCNConv", bench(lambda: conv(X, ei, et)), flops=2 * E * Fd * Fd)
        rref = conv(X, ei, et)
        # Tessera's rgcn kernel adds the messages into `out`, which starts as the self-loop term
        # (x · root + bias, computed here and not timed); edges sorted by relation, in tiles of
        # at most BE = 64 edges of one relation.
        init = X @ conv.root + conv.bias
    order = torch.argsort(et, stable=True)
    counts = torch.bincount(et, minlength=R).tolist()
    rels, starts, ends, pos = [], [], [], 0
    for r, c in enumerate(counts):
        for t0 in range(pos, pos + c, 64):
            rels.append(r)
            starts.append(t0)
            ends.append(min(t0 + 64, pos + c))
        pos += c
    i32 = lambda v: torch.tensor(v, dtype=torch.int32, device=dev)  # noqa: E731
    run_tessera("graph", rcase, "rgcn.tile", "rgcn", {
        "x": X, "w": conv.weight.detach(), "src": src[order].to(torch.int32), "dst": dst[order].to(torch.int32),
        "norm": torch.ones(E, device=dev), "tile_rel": i32(rels), "tile_start": i32(starts), "tile_end": i32(ends), "out": init,
    }, {}, "out", (N, Fd), rref, flops=2 * E * Fd * Fd, tol=1e-3, extra="self-loop term precomputed, not timed")
    gat_layer(N, E, Fd, src, dst, X)
    rgat_layer(N, Fd, src, dst, X, R)
    hgt_layer(N, Fd, src, dst, X)


def rgat_layer(N, Fd, src, dst, X, R):
    """A relational GAT layer (8 relations, 8 heads of 16) against PyG's RGATConv: Tessera's
    `rgat.tile` fuses the edge scores, the softmax across relations and the aggregation; the
    typed projections `x · W_r` and the per-node logits come from torch first (timed separately,
    in the note). RGATConv gathers a 128×128 weight per edge, so the graph keeps 2^17 of the
    edges (all of them would need 76 GB)."""
    from torch_geometric.nn import RGATConv
    H, F = 8, Fd // 8
    keep = torch.randperm(src.numel(), device=dev)[: 1 << 17]
    src, dst = src[keep], dst[keep]
    E = src.numel()
    et = torch.randint(0, R, (E,), device=dev)
    case = f"rgat layer N{N} E{E} R{R} heads{H}x{F} fp32"
    conv = RGATConv(Fd, F, R, heads=H).to(dev)
    ei = torch.stack([src, dst])
    # Per edge: two 128×128 products (x_i W_r, x_j W_r) and the weighted message.
    fl = 2 * 2 * E * Fd * Fd
    with torch.no_grad():
        try:
            rec("graph", case, "pyg RGATConv", bench(lambda: conv(X, ei, et)), flops=fl)
            ref = (conv(X, ei, et) - conv.bias).reshape(N, H, F)
        except Exception as e:  # noqa: BLE001
            rec("graph", case, "pyg RGATConv", None, note="failed: " + repr(e)[:120])
            return
        w = conv.weight.detach()

        def project():
            feat = torch.einsum("nc,rco->rno", X, w)
            qd = torch.einsum("nc,rch->nrh", X, torch.einsum("rco,oh->rch", w, conv.q))
            ks = torch.einsum("nc,rch->nrh", X, torch.einsum("rco,oh->rch", w, conv.k))
            return feat, qd, ks

        proj_ms = bench(project)
        feat, qd, ks = project()
    order = torch.argsort(dst, stable=True)
    row_ptr = torch.zeros(N + 1, dtype=torch.int64, device=dev)
    row_ptr[1:] = torch.cumsum(torch.bincount(dst, minlength=N), 0)
    run_tessera("graph", case, "rgat.tile", "rgat", {
        "row_ptr": row_ptr.to(torch.int32), "col_idx": src[order].to(torch.int32), "etype": et[order].to(torch.int32),
        "feat": feat.reshape(R, N, H, F).contiguous(), "qd": qd.contiguous(), "ks": ks.contiguous(),
    }, {"slope": conv.negative_slope}, "out", (N, H, F), ref, flops=fl, tol=1e-3,
        extra=f"typed projections x·W_r, x·W_r·q, x·W_r·k by torch first: {proj_ms:.3f} ms, not in this time")
    rgat_training(N, E, R, H, F, src, dst, et, X, conv, feat.reshape(R, N, H, F).contiguous(), qd.contiguous(), ks.contiguous(),
                  order, row_ptr)
    del feat, qd, ks


def rgat_training(N, E, R, H, F, src, dst, et, X, conv, feat, qd, ks, order, row_ptr):
    """An RGAT training step (forward and backward) against PyG's RGATConv under autograd:
    Tessera's `rgat.tile` then `rgat_bwd.tile` (the gradients of feat, qd, ks; the typed
    projections' forward and backward, GEMMs, are not in its time), checked against torch's
    gradients of the same attention."""
    import torch.nn.functional as Fn
    from torch_geometric.utils import softmax as seg_softmax
    case = f"rgat training step N{N} E{E} R{R} heads{H}x{F} fp32"
    ei = torch.stack([src, dst])
    x = X.detach().requires_grad_(True)
    params = [p for p in conv.parameters() if p.requires_grad]
    dout = torch.randn(N, H * F, device=dev)
    fl = 3 * 2 * 2 * E * X.shape[1] * X.shape[1]
    try:
        rec("graph", case, "pyg RGATConv forward + backward", bench(lambda: torch.autograd.grad(conv(x, ei, et), [x] + params, dout, allow_unused=True)), flops=fl)
    except Exception as e:  # noqa: BLE001
        rec("graph", case, "pyg RGATConv forward + backward", None, note="failed: " + repr(e)[:120])
    ft, qt, kt = (t.detach().requires_grad_(True) for t in (feat, qd, ks))
    a = seg_softmax(Fn.leaky_relu(qt[dst, et] + kt[src, et], conv.negative_slope), dst, num_nodes=N)
    out = torch.zeros(N, H, F, device=dev).index_add(0, dst, a[:, :, None] * ft[et, src])
    refs = torch.autograd.grad(out, (ft, qt, kt), dout.reshape(N, H, F))
    files = {nm: save(t.detach(), case_id(case) + "-" + nm) for nm, t in [
        ("row_ptr", row_ptr.to(torch.int32)), ("col_idx", src[order].to(torch.int32)), ("etype", et[order].to(torch.int32)),
        ("feat", feat), ("qd", qd), ("ks", ks), ("dout", dout.reshape(N, H, F)),
        ("zf", torch.zeros(R, N, H, F, device=dev)), ("zq", torch.zeros(N, R, H, device=dev))]}
    outp = lambda nm: os.path.join(TMP, case_id(case) + "-" + nm + ".npy")  # noqa: E731
    path_f, path_b = os.path.join(ROOT, "examples", "rgat.tile"), os.path.join(ROOT, "examples", "rgat_bwd.tile")
    slope = ["--arg", f"slope={conv.negative_slope}"]
    graph = ["row_ptr", "col_idx", "etype", "feat", "qd", "ks"]
    for codegen in CODEGENS:
        impl = "tessera rgat + rgat_bwd" + (f" [{codegen}]" if len(CODEGENS) > 1 else "")
        arg = lambda nm: files.get(nm) or outp(nm)  # noqa: E731
        t1, n1, failed = bench_steps(path_f, codegen, [("rgat", graph, ["out"], slope)], arg, outp, "")
        t2, n2, failed2 = (None, [], failed) if failed else bench_steps(
            path_b, codegen, [("rgat_bwd", graph + ["out", "dout", "dfeat=zf", "dqd=zq", "dks=zq"], ["dfeat", "dqd", "dks"], slope)],
            arg, outp, "")
        if failed2:
            rec("graph", case, impl, None, note="tessera bench failed: " + failed2, anchor=False)
            continue
        rec("graph", case, impl, t1 + t2, fl, None, grads_note(["dfeat", "dqd", "dks"], refs, outp, 1e-3) + "; "
            + "; ".join(n1 + n2) + "; the typed projections' forward and backward not timed", anchor=False)


def hgt_layer(N, Fd, src, dst, X):
    """An HGT layer (2 node types, the graph's halves; 4 edge types, one per pair; 8 heads)
    against PyG's HGTConv: Tessera's `hgt.tile` fuses the edge scores, the softmax across edge
    types and the aggregation, on the queries and the per-edge-type keys and values that the
    layer's own projections make (torch, timed separately, in the note); its output is checked
    against the layer's aggregation (`propagate`), before the output projection."""
    from torch_geometric.nn import HGTConv
    H = 8
    half = N // 2
    types = ["a", "b"]
    node_t = lambda idx: (idx >= half).long()  # noqa: E731
    local = lambda idx: idx - node_t(idx) * half  # noqa: E731
    meta = (types, [(types[i], f"r{2 * i + j}", types[j]) for i in range(2) for j in range(2)])
    ei_dict = {}
    for (st, rel, dt) in meta[1]:
        sel = (node_t(src) == types.index(st)) & (node_t(dst) == types.index(dt))
        ei_dict[(st, rel, dt)] = torch.stack([local(src[sel]), local(dst[sel])])
    x_dict = {"a": X[:half], "b": X[half:]}
    E = src.numel()
    case = f"hgt layer N{N} E{E} types2/4 heads{H}x{Fd // H} fp32"
    conv = HGTConv(Fd, Fd, meta, heads=H).to(dev)
    fl = 4 * E * Fd
    with torch.no_grad():
        try:
            rec("graph", case, "pyg HGTConv", bench(lambda: conv(x_dict, ei_dict)), flops=fl)
            from torch_geometric.utils.hetero import construct_bipartite_edge_index

            def project():
                k_dict, q_dict, v_dict = {}, {}, {}
                for key, val in conv.kqv_lin(x_dict).items():
                    kk, qq, vv = torch.tensor_split(val, 3, dim=1)
                    k_dict[key], q_dict[key], v_dict[key] = (t.reshape(-1, H, Fd // H) for t in (kk, qq, vv))
                q, dst_off = conv._cat(q_dict)
                k, v, src_off = conv._construct_src_node_feat(k_dict, v_dict, ei_dict)
                ei, prior = construct_bipartite_edge_index(ei_dict, src_off, dst_off, edge_attr_dict=conv.p_rel)
                return q, k, v, ei, prior

            proj_ms = bench(project)
            q, k, v, ei, prior = project()
            ref = conv.propagate(ei, k=k, q=q, v=v, edge_attr=prior, size=None).reshape(q.shape)
        except Exception as e:  # noqa: BLE001
            rec("graph", case, "tessera hgt", None, note="the layer's internals differ here: " + repr(e)[:120], anchor=False)
            return
    order = torch.argsort(ei[1], stable=True)
    row_ptr = torch.zeros(q.shape[0] + 1, dtype=torch.int64, device=dev)
    row_ptr[1:] = torch.cumsum(torch.bincount(ei[1], minlength=q.shape[0]), 0)
    run_tessera("graph", case, "hgt.tile", "hgt", {
        "row_ptr": row_ptr.to(torch.int32), "col_idx": ei[0][order].to(torch.int32),
        "prior": prior.reshape(-1, H)[order].contiguous(), "q": q.contiguous(), "k": k.contiguous(), "v": v.contiguous(),
    }, {"scale": 1.0 / math.sqrt(Fd // H)}, "out", tuple(q.shape), ref, flops=fl, tol=1e-3,
        extra=f"projections (kqv, per-edge-type k and v) by torch first: {proj_ms:.3f} ms, not in this time; the output projection neither")
    del q, k, v, prior


def gat_layer(N, E, Fd, src, dst, X):
    """A GAT layer (8 heads of 16) against PyG's GATConv on the same graph: Tessera's `gat.tile`
    fuses the edge scores, the edge softmax and the aggregation; the projection `x · W` and the
    per-node logits come from torch first (not timed, noted)."""
    from torch_geometric.nn import GATConv
    H, F = 8, Fd // 8
    case = f"gat layer N{N} E{E} heads{H}x{F} fp32"
    conv = GATConv(Fd, F, heads=H, add_self_loops=False).to(dev)
    ei = torch.stack([src, dst])
    with torch.no_grad():
        rec("graph", case, "pyg GATConv", bench(lambda: conv(X, ei)), flops=2 * E * H * F)
        ref = (conv(X, ei) - conv.bias).reshape(N, H, F)
        lin = getattr(conv, "lin", None) or conv.lin_src
        feat = lin(X).reshape(N, H, F)
        el = (feat * conv.att_src.reshape(1, H, F)).sum(-1)
        er = (feat * conv.att_dst.reshape(1, H, F)).sum(-1)
    order = torch.argsort(dst, stable=True)
    row_ptr = torch.zeros(N + 1, dtype=torch.int64, device=dev)
    row_ptr[1:] = torch.cumsum(torch.bincount(dst, minlength=N), 0)
    run_tessera("graph", case, "gat.tile", "gat", {
        "row_ptr": row_ptr.to(torch.int32), "col_idx": src[order].to(torch.int32), "feat": feat.contiguous(), "el": el.contiguous(),
        "er": er.contiguous(),
    }, {"slope": conv.negative_slope}, "out", (N, H, F), ref, flops=2 * E * H * F, tol=1e-4,
        extra="projection x·W and the logits el, er by torch first, not timed")
    gat_training(N, E, H, F, src, dst, X, conv, feat, el, er, order, row_ptr)


def gat_training(N, E, H, F, src, dst, X, conv, feat, el, er, order, row_ptr):
    """A GAT training step (forward and backward) against PyG's GATConv under autograd: Tessera's
    `gat.tile` then `gat_bwd.tile` (the gradients of feat, el, er; the projection's forward and
    backward, GEMMs, are not in its time), checked against torch's gradients of the same layer."""
    import torch.nn.functional as Fn
    from torch_geometric.utils import softmax as seg_softmax
    case = f"gat training step N{N} E{E} heads{H}x{F} fp32"
    ei = torch.stack([src, dst])
    x = X.detach().requires_grad_(True)
    params = [p for p in conv.parameters() if p.requires_grad]
    dout = torch.randn(N, H * F, device=dev)
    rec("graph", case, "pyg GATConv forward + backward",
        bench(lambda: torch.autograd.grad(conv(x, ei), [x] + params, dout)), flops=3 * 2 * E * H * F)
    ft, lt, rt = (t.detach().requires_grad_(True) for t in (feat, el, er))
    a = seg_softmax(Fn.leaky_relu(lt[src] + rt[dst], conv.negative_slope), dst, num_nodes=N)
    out = torch.zeros(N, H, F, device=dev).index_add(0, dst, a[:, :, None] * ft[src])
    refs = torch.autograd.grad(out, (ft, lt, rt), dout.reshape(N, H, F))
    files = {nm: save(t.detach(), case_id(case) + "-" + nm) for nm, t in [
        ("row_ptr", row_ptr.to(torch.int32)), ("col_idx", src[order].to(torch.int32)), ("feat", feat), ("el", el), ("er", er),
        ("dout", dout.reshape(N, H, F)), ("zf", torch.zeros(N, H, F, device=dev)), ("zl", torch.zeros(N, H, device=dev))]}
    outp = lambda nm: os.path.join(TMP, case_id(case) + "-" + nm + ".npy")  # noqa: E731
    path_f, path_b = os.path.join(ROOT, "examples", "gat.tile"), os.path.join(ROOT, "examples", "gat_bwd.tile")
    slope = ["--arg", f"slope={conv.negative_slope}"]
    for codegen in CODEGENS:
        impl = "tessera gat + gat_bwd" + (f" [{codegen}]" if len(CODEGENS) > 1 else "")
        arg = lambda nm: files.get(nm) or outp(nm)  # noqa: E731
        t1, n1, failed = bench_steps(path_f, codegen, [("gat", ["row_ptr", "col_idx", "feat", "el", "er"], ["out"], slope)], arg, outp, "")
        t2, n2, failed2 = (None, [], failed) if failed else bench_steps(
            path_b, codegen, [("gat_bwd", ["row_ptr", "col_idx", "feat", "el", "er", "out", "dout", "dfeat=zf", "del=zl"], ["dfeat", "del", "der"], slope)],
            arg, outp, "")
        if failed2:
            rec("graph", case, impl, None, note="tessera bench failed: " + failed2, anchor=False)
            continue
        rec("graph", case, impl, t1 + t2, 3 * 2 * E * H * F, None, grads_note(["dfeat", "del", "der"], refs, outp, 1e-3) + "; "
            + "; ".join(n1 + n2) + "; the projection's forward and backward not timed", anchor=False)


def memory_part():
    """Bandwidth-bound kernels Tessera already has: vector add, row softmax, layer norm."""
    import torch.nn.functional as F
    n = 1 << 26
    x, y = torch.randn(n, device=dev), torch.randn(n, device=dev)
    case = f"vector add f32 N=2^26"
    nb = 3 * n * 4
    rec("memory", case, "torch.add", bench(lambda: torch.add(x, y)), nbytes=nb)
    run_tessera("memory", case, "vector_add.tile", "vector_add", {"x": x, "y": y}, {}, "z", (n,), x + y, nbytes=nb, tol=1e-6)
    del x, y
    R, C = 65536, 1024
    x = torch.randn(R, C, device=dev)
    case = f"softmax f32 {R}x{C}"
    nb = 2 * R * C * 4
    rec("memory", case, "torch.softmax", bench(lambda: torch.softmax(x, dim=1)), nbytes=nb)
    run_tessera("memory", case, "softmax.tile", "softmax", {"x": x}, {}, "y", (R, C), torch.softmax(x, dim=1), nbytes=nb, tol=1e-5)
    w, b = torch.randn(C, device=dev), torch.randn(C, device=dev)
    case = f"layernorm f32 {R}x{C}"
    rec("memory", case, "F.layer_norm", bench(lambda: F.layer_norm(x, (C,), w, b, 1e-5)), nbytes=nb)
    run_tessera("memory", case, "layernorm.tile", "layernorm", {"x": x, "w": w, "b": b}, {"eps": 1e-5}, "y", (R, C),
                F.layer_norm(x, (C,), w, b, 1e-5), nbytes=nb, tol=1e-4)
    # The backward pass: dx (checked), dw and db; x and dy read, dx written.
    dy = torch.randn(R, C, device=dev)
    case = f"layernorm backward f32 {R}x{C}"
    xr, wr, br = (t.clone().requires_grad_(True) for t in (x, w, b))
    yr = F.layer_norm(xr, (C,), wr, br, 1e-5)
    nbb = 3 * R * C * 4
    rec("memory", case, "torch autograd (layer_norm backward)",
        bench(lambda: torch.autograd.grad(yr, (xr, wr, br), dy, retain_graph=True)), nbytes=nbb)
    dx_ref = torch.autograd.grad(yr, xr, dy, retain_graph=True)[0]
    zeros_c = torch.zeros(C, device=dev)
    run_tessera("memory", case, "layernorm_bwd.tile", "layernorm_bwd", {"x": x, "w": w, "dy": dy, "dw": zeros_c, "db": zeros_c},
                {"eps": 1e-5}, "dx", (R, C), dx_ref, nbytes=nbb, tol=1e-4)


# Cheapest and most important first: a run cut short by a time limit keeps what it measured.
parts = [("host", host_part), ("memory", memory_part), ("gemm", gemm_part), ("attention", attention_part), ("graph", graph_part),
         ("natten", natten_part), ("training", training_part)]
for name, fn in parts:
    if name not in only:
        continue
    t = time.time()
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - one broken area must not lose the others' figures
        log(f"area {name} failed: {e!r}")
        results.setdefault("errors", []).append(f"{name}: {e!r}")
    torch.cuda.empty_cache()
    log(f"area {name} took {time.time() - t:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)

# ----------------------------------------------------------------------------------------------
# Tables.


def fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) and v == v else "-"


out = []
h = results["host"]
if h:
    out.append(f"\nHOST  {info['device']}  {info['date']}  torch {info['torch']}  triton {info['triton']}  {info['tessera']}")
    tri = h.get("triton_mm_cold_compile_ms", {})
    tri_first = tri.get("BM=128 BN=128 BK=64")
    out.append(f"{'tessera build (cold, median of 3)':34} {'kernels':>7} {'cold ms':>9} {'cold wall':>10} {'hit ms':>8} {'hit wall':>9} "
               f"{'Triton mm cold / this':>22}  stages (cold)")
    for r in h.get("tessera_build", []):
        if "error" in r:
            out.append(f"  {r['file'] + ' [' + r.get('codegen', '?') + ']':32} {'-':>7}  error: {r['error']}")
            continue
        ratio = tri_first / r["cold_ms"] if tri_first else float("nan")
        out.append(f"  {r['file'] + ' [' + r.get('codegen', '?') + ']':32} {r['kernels']:>7} {r['cold_ms']:>9.1f} {r['cold_wall_ms']:>10.1f} {fmt(r.get('warm_ms'), '>8.2f')} "
                   f"{fmt(r.get('warm_wall_ms'), '>9.1f')} {ratio:>21.1f}x  {r.get('stages', '')}")
    for k, v in tri.items():
        out.append(f"  triton tutorial mm {k:18} cold compile + first launch {v:9.1f} ms")
    if "triton_add_cold_compile_ms" in h:
        out.append(f"  triton add kernel (first JIT compile of the run) {h['triton_add_cold_compile_ms']:9.1f} ms")
    out.append(f"launch overhead, 10^4 launches of a one-block add: tessera {fmt(h.get('tessera_launch_us'), '.2f')} µs "
               f"(submit {fmt(h.get('tessera_launch_submit_us'), '.2f')} µs; bare cuLaunchKernel {fmt(h.get('driver_launch_us'), '.2f')} µs), "
               f"triton {fmt(h.get('triton_launch_us'), '.2f')} µs, "
               f"torch.add {fmt(h.get('torch_add_launch_us'), '.2f')} µs" + (f"  [tessera: {h['tessera_launch_error']}]" if "tessera_launch_error" in h else ""))

if rows:
    out.append(f"\nKERNELS  {info['device']}  {info['date']}  (median of CUDA-event timings; ratio = best anchor time / this time)")
    out.append(f"{'area':9} {'case':40} {'impl':30} {'ms':>10} {'TFLOP/s':>8} {'GB/s':>8} {'vs best':>8}  note")
    cases = []
    for r in rows:
        if (r["area"], r["case"]) not in cases:
            cases.append((r["area"], r["case"]))
    for key in cases:
        group = [r for r in rows if (r["area"], r["case"]) == key]
        anchors = [r["ms"] for r in group if r["anchor"] and r["ms"]]
        best = min(anchors) if anchors else None
        for r in group:
            ratio = best / r["ms"] if best and r["ms"] else None
            out.append(f"{r['area']:9} {r['case'][:40]:40} {r['impl'][:30]:30} {fmt(r['ms'], '>10.4f')} {fmt(r.get('tflops'), '>8.1f')} "
                       f"{fmt(r.get('gbps'), '>8.1f')} {(format(ratio, '.3f') + 'x') if ratio else '-':>8}  {r['note']}")
print("\n".join(out), flush=True)
print(f"\ntotal {time.time() - started:.0f} s", flush=True)
if args.out:
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
shutil.rmtree(TMP, ignore_errors=True)
