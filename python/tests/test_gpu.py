"""The Python package on the GPU: torch CUDA tensors (and CuPy and DLPack arrays) launched on the GPU that holds them.

Marked `gpu`; skipped where torch has no CUDA device or Tessera finds no driver (CI's CPU
machines). Run on a GPU machine: `python3 -m pytest -q -m gpu python/tests`.
"""

import os

import numpy as np
import pytest

import tessera

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (torch.cuda.is_available() and tessera.gpu_available()), reason="no CUDA GPU"),
]

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


def example(name, **consts):
    return tessera.compile(os.path.join(EXAMPLES, name), consts=consts)


def rel_err(got, want):
    return float((got.float() - want.float()).norm() / want.float().norm())


def test_vector_add_on_torch_tensors():
    mod = example("vector_add.tile")
    x = torch.randn(100_003, device="cuda")
    y = torch.randn(100_003, device="cuda")
    z = torch.full_like(x, float("nan"))
    mod.vector_add(x, y, z)
    torch.cuda.synchronize()
    assert torch.equal(z, x + y)


def test_matmul_on_strided_views():
    mod = example("matmul.tile")
    g = torch.Generator(device="cuda").manual_seed(1)
    a = torch.randn(300, 200, device="cuda", generator=g).bfloat16()
    # `b` is a transposed view and `c` a column slice of a wider buffer: any strides launch.
    bt = torch.randn(136, 200, device="cuda", generator=g).bfloat16()
    wide = torch.full((300, 200), float("nan"), device="cuda", dtype=torch.bfloat16)
    c = wide[:, 10:146]
    mod.matmul(a, bt.t(), c)
    torch.cuda.synchronize()
    want = a.float() @ bt.t().float()
    assert rel_err(c, want) < 1e-2
    assert torch.isnan(wide[:, :10].float()).all() and torch.isnan(wide[:, 146:].float()).all(), "wrote outside the view"


def test_attention_against_sdpa():
    mod = example("attention.tile")
    g = torch.Generator(device="cuda").manual_seed(2)
    q, k, v = (torch.randn(2, 4, 77, 128, device="cuda", generator=g).bfloat16() for _ in range(3))
    o = torch.empty_like(q)
    mod.attention(q, k, v, o, scale=128 ** -0.5)
    torch.cuda.synchronize()
    want = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert rel_err(o, want) < 1e-2


def test_launches_on_the_current_stream():
    mod = example("vector_add.tile")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        # Made and read on `s`: only a launch on `s` is ordered between them.
        x = torch.randn(1 << 22, device="cuda")
        z = torch.empty_like(x)
        for _ in range(3):
            mod.vector_add(x, x, z)
        total = (z - 2 * x).abs().max()
    s.synchronize()
    assert total.item() == 0


def test_cuda_graph_replay():
    mod = example("vector_add.tile")
    x = torch.randn(4096, device="cuda")
    y = torch.randn(4096, device="cuda")
    z = torch.zeros_like(x)
    mod.vector_add(x, y, z)  # loaded before the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        mod.vector_add(x, y, z)
    x.copy_(torch.arange(4096, device="cuda", dtype=torch.float32))
    y.fill_(1)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(z, torch.arange(4096, device="cuda", dtype=torch.float32) + 1)


def test_checks_come_before_the_launch():
    mod = example("vector_add.tile")
    x = torch.randn(10, device="cuda")
    with pytest.raises(tessera.LaunchError, match="N"):
        mod.vector_add(x, torch.randn(11, device="cuda"), torch.empty_like(x))
    with pytest.raises(tessera.LaunchError, match="f32"):
        mod.vector_add(x, x.double(), torch.empty_like(x))
    with pytest.raises(tessera.LaunchError, match="host memory"):
        mod.vector_add(x, np.zeros(10, np.float32), torch.empty_like(x))


def test_cupy_arrays():
    cupy = pytest.importorskip("cupy")
    mod = example("vector_add.tile")
    x = cupy.arange(1000, dtype=cupy.float32)
    z = cupy.zeros_like(x)
    mod.vector_add(x, x[::-1].copy(), z)
    cupy.cuda.get_current_stream().synchronize()
    assert bool((z == 999).all())


def test_custom_op_in_torch_compile_without_graph_breaks():
    import tessera.torch as tt

    add = tt.custom_op(example("vector_add.tile").vector_add, name="vector_add_test")
    assert tt.custom_op(tt._registered["vector_add_test"][0], name="vector_add_test") is add
    assert tt.schema(tt._registered["vector_add_test"][0]) == "(Tensor x, Tensor y, Tensor(a!) z) -> ()"

    @torch.compile(fullgraph=True)
    def f(x, y):
        z = torch.empty_like(x)
        add(x, y, z)
        return z * 2

    x, y = torch.randn(5000, device="cuda"), torch.randn(5000, device="cuda")
    assert torch.equal(f(x, y), (x + y) * 2)
    with pytest.raises(tessera.LaunchError, match="registered already"):
        tt.custom_op(example("vector_add.tile", BLOCK=256).vector_add, name="vector_add_test")


def test_torch_attention_block_matches_eager():
    import runpy

    ns = runpy.run_path(os.path.join(EXAMPLES, "python", "attention_block_torch.py"))
    assert ns["main"](batch=2, seq=77, heads=2, timing=False) < 2e-2  # 77 tokens: partial tiles


def test_tune_picks_and_caches_a_winner():
    src = ("use std::math::cdiv;\n#[grid(cdiv(N, BLOCK))]\n#[tune(BLOCK = [128, 1024])]\n"
           "kernel scale_add<const BLOCK: i32 = 256>(x: &f32[N], z: &mut f32[N], a: f32) {\n"
           "    let i0 = program_id(0) * BLOCK;\n    z.store([i0], x.load([i0], [BLOCK]) * a + 1.0);\n}\n")
    k = tessera.compile(src).scale_add
    x = torch.randn(1 << 20, device="cuda")
    z = torch.empty_like(x)
    tuned = k.tune(x, z, 2.0, retune=True, progress=False)
    assert "BLOCK=128" in tuned.tune_table and "BLOCK=1024" in tuned.tune_table
    assert tuned.tuned_from_cache is False
    tuned(x, z, 3.0)
    torch.cuda.synchronize()
    assert torch.allclose(z, x * 3 + 1)
    again = k.tune(x, z, 2.0, progress=False)
    assert again.tuned_from_cache is True


def test_ahead_of_time_kernels_run_on_torch_tensors(tmp_path):
    example("vector_add.tile").vector_add.save_aot(tmp_path)
    add = tessera.load_aot(tmp_path).vector_add
    x = torch.randn(3000, device="cuda")
    z = torch.empty_like(x)
    add(x, x, z)
    torch.cuda.synchronize()
    assert torch.equal(z, 2 * x)


class DLPackOnly:
    """A CUDA array seen only through DLPack (as a JAX array is)."""

    def __init__(self, t):
        self._t = t

    def __dlpack__(self, stream=None):
        return self._t.__dlpack__(stream=stream)

    def __dlpack_device__(self):
        return self._t.__dlpack_device__()


def test_dlpack_arrays_on_the_gpu():
    mod = example("vector_add.tile")
    x = torch.randn(5000, device="cuda")
    z = torch.zeros_like(x)
    y = x.flip(0)
    mod.vector_add(DLPackOnly(x), DLPackOnly(y), DLPackOnly(z))
    torch.cuda.synchronize()
    assert torch.equal(z, x + y)


MUL = """
use std::math::cdiv;

/// z = x * y, elementwise.
#[grid(cdiv(N, 256))]
kernel mul(x: &f32[N], y: &f32[N], z: &mut f32[N]) {
    let i = program_id(0) * 256;
    z.store([i], x.load([i], [256]) * y.load([i], [256]));
}

/// The gradients of `mul`: dx = dz * y, dy = dz * x.
#[grid(cdiv(N, 256))]
kernel mul_bwd(x: &f32[N], y: &f32[N], dz: &f32[N], dx: &mut f32[N], dy: &mut f32[N]) {
    let i = program_id(0) * 256;
    let g = dz.load([i], [256]);
    dx.store([i], g * y.load([i], [256]));
    dy.store([i], g * x.load([i], [256]));
}
"""


def test_autograd_pairs_a_forward_and_a_backward_kernel():
    import tessera.torch as tt

    mod = tessera.compile(MUL)
    mul = tt.autograd(mod.mul, mod.mul_bwd)
    x = torch.randn(1000, device="cuda", requires_grad=True)
    y = torch.randn(1000, device="cuda", requires_grad=True)
    w = torch.randn(1000, device="cuda")
    z = mul(x, y)
    (z * w).sum().backward()
    assert torch.allclose(z, x * y)
    assert torch.allclose(x.grad, w * y) and torch.allclose(y.grad, w * x)
    # `sum()`'s gradient is an expanded tensor (stride 0), passed as it is.
    x.grad = y.grad = None
    mul(x, y).sum().backward()
    assert torch.allclose(x.grad, y.detach()) and torch.allclose(y.grad, x.detach())
    # Gradients reach only inputs the backward kernel writes; unknown parameters are refused.
    with pytest.raises(tessera.LaunchError, match="`dw` of `mul_bwd`"):
        tt.autograd(mod.mul, tessera.compile(MUL.replace("dy: &mut", "dw: &mut").replace("dy.store", "dw.store")).mul_bwd)


class CaiOnly:
    """A CUDA array seen only through `__cuda_array_interface__` (as Numba's is): no device field."""

    def __init__(self, t):
        self.__cuda_array_interface__ = t.__cuda_array_interface__


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_tensors_on_another_gpu_run_there():
    mod = example("vector_add.tile")
    x = torch.randn(5000, device="cuda:1")
    z = torch.full_like(x, float("nan"))
    mod.vector_add(x, x, z)  # the native path
    torch.cuda.synchronize(1)
    assert torch.equal(z, 2 * x)
    # The Python path (by name), on a non-default stream of GPU 1.
    s = torch.cuda.Stream(device=1)
    y = x.flip(0)
    with torch.cuda.stream(s):
        mod.vector_add(x=x, y=y, z=z)
    s.synchronize()
    assert torch.equal(z, x + y)
    # Arrays that do not name their device: the driver knows it from the address.
    z.zero_()
    torch.cuda.synchronize(1)
    mod.vector_add(CaiOnly(x), CaiOnly(x), CaiOnly(z))
    torch.cuda.synchronize(1)
    assert torch.equal(z, 2 * x)
    with pytest.raises(tessera.LaunchError, match="on GPU 1, `y` on GPU 0; pass all tensors on one GPU"):
        mod.vector_add(x, x.to("cuda:0"), z)
    # Tuning on GPU 1.
    src = ("use std::math::cdiv;\n#[grid(cdiv(N, BLOCK))]\n#[tune(BLOCK = [128, 1024])]\n"
           "kernel twice<const BLOCK: i32 = 256>(x: &f32[N], z: &mut f32[N]) {\n"
           "    let i0 = program_id(0) * BLOCK;\n    z.store([i0], x.load([i0], [BLOCK]) * 2.0);\n}\n")
    k = tessera.compile(src).twice.tune(x, z, progress=False)
    z.zero_()
    k(x, z)
    torch.cuda.synchronize(1)
    assert torch.equal(z, 2 * x)


RANDOM = """use std::random::{randint, rand, randn};
#[grid((N + 1023) / 1024)]
kernel rng(bits: &mut i32[N], uni: &mut f32[N], nor: &mut f32[N], seed: i64) {
    let i0 = program_id(0) * 1024;
    let i = i0 + arange(1024);
    bits.store([i0], randint(seed, i) as i32);
    uni.store([i0], rand(seed, i));
    nor.store([i0], randn(seed, i));
}
"""


def test_random_matches_triton():
    """`std::random` gives Triton's `tl.randint` and `tl.rand` bit for bit (same seed, same
    offsets; seeds negative and past 32 bits), and its `tl.randn` up to the approximate math."""
    triton = pytest.importorskip("triton")
    tl = pytest.importorskip("triton.language")

    @triton.jit
    def ref(bits, uni, nor, n, seed, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        tl.store(bits + i, tl.randint(seed, i).to(tl.int32, bitcast=True), mask=m)
        tl.store(uni + i, tl.rand(seed, i), mask=m)
        tl.store(nor + i, tl.randn(seed, i), mask=m)

    rng = tessera.compile(RANDOM).rng
    n = 100_003
    for seed in [12345, -1, 4_886_718_345]:
        got = [torch.empty(n, dtype=torch.int32, device="cuda"), torch.empty(n, device="cuda"), torch.empty(n, device="cuda")]
        want = [torch.empty_like(t) for t in got]
        rng(*got, seed)
        ref[(triton.cdiv(n, 1024),)](*want, n, seed, BLOCK=1024)
        torch.cuda.synchronize()
        assert torch.equal(got[0], want[0]), f"randint, seed {seed}"
        assert torch.equal(got[1], want[1]), f"rand, seed {seed}"
        assert float((got[2] - want[2]).abs().max()) < 1e-4, f"randn, seed {seed}"
