"""The Python package on the CPU: NumPy arrays through the reference interpreter."""

import os

import numpy as np
import pytest

import tessera

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
EXAMPLES = os.path.join(ROOT, "examples")


def example(name, **consts):
    return tessera.compile(os.path.join(EXAMPLES, name), consts=consts)


def test_vector_add_writes_its_output():
    mod = example("vector_add.tile")
    x = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    y = np.random.default_rng(2).standard_normal(1000).astype(np.float32)
    z = np.full_like(x, np.nan)
    mod.vector_add(x, y, z)
    np.testing.assert_array_equal(z, x + y)


def test_keywords_and_kernel_lookup():
    mod = example("vector_add.tile")
    x = np.ones(37, np.float32)
    z = np.zeros(37, np.float32)
    mod["vector_add"](x=x, y=x, z=z)
    np.testing.assert_array_equal(z, 2 * x)
    assert "vector_add" in repr(mod) and "&mut f32" in repr(mod.vector_add)
    with pytest.raises(AttributeError, match="no kernel `nope`"):
        mod.nope


def test_a_source_string_matmul_matches_numpy():
    src = """
use std::math::cdiv;
#[grid(cdiv(M, 16), cdiv(N, 16))]
kernel mm(a: &f32[M, K], b: &f32[K, N], c: &mut f32[M, N]) {
    let (m0, n0) = (program_id(0) * 16, program_id(1) * 16);
    let mut acc: f32[16, 16] = 0.0;
    for k0 in (0..K).step_by(16) {
        acc = dot(a.load([m0, k0], [16, 16]), b.load([k0, n0], [16, 16]), acc);
    }
    c.store([m0, n0], acc);
}
"""
    mod = tessera.compile(src)
    rng = np.random.default_rng(3)
    a = rng.standard_normal((33, 20)).astype(np.float32)
    b = rng.standard_normal((20, 17)).astype(np.float32)
    c = np.zeros((33, 17), np.float32)
    mod.mm(a, b, c)
    np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-5)


def test_non_contiguous_views_in_and_out():
    mod = example("vector_add.tile")
    base = np.arange(200, dtype=np.float32)
    x = base[::2]  # strided input
    out = np.zeros((100, 2), np.float32)
    z = out[:, 1]  # strided output: written back in place
    mod.vector_add(x, x, z)
    np.testing.assert_array_equal(out[:, 1], 2 * x)
    np.testing.assert_array_equal(out[:, 0], 0)


def test_compile_error_carries_the_rendered_diagnostic():
    with pytest.raises(tessera.CompileError) as e:
        tessera.compile("kernel k(x: &f32[N]) {\n    let y = x.load([0], [4]) + undefined_name;\n}\n")
    msg = str(e.value)
    assert "undefined_name" in msg and "<string>:2:" in msg and "^" in msg


def test_wrong_arguments_are_launch_errors():
    mod = example("vector_add.tile")
    x = np.ones(8, np.float32)
    with pytest.raises(tessera.LaunchError, match="missing"):
        mod.vector_add(x, x)
    with pytest.raises(tessera.LaunchError):
        mod.vector_add(x, x.astype(np.float64), np.zeros(8, np.float32))
    with pytest.raises(tessera.LaunchError):
        mod.vector_add(x, np.ones(9, np.float32), np.zeros(8, np.float32))
    with pytest.raises(tessera.LaunchError, match="NumPy or DLPack array"):
        mod.vector_add([1.0] * 8, x, np.zeros(8, np.float32))
    assert issubclass(tessera.LaunchError, tessera.TesseraError)


def test_consts_and_missing_files():
    mod = example("matmul.tile", BM=64, BN=128, BK=32)
    assert mod.matmul.params[0][:2] == ("a", "tensor")
    with pytest.raises(tessera.CompileError, match="cannot read `.*does_not_exist.tile`: no such file"):
        tessera.compile(os.path.join(EXAMPLES, "does_not_exist.tile"))
    # One line of source is read as a path: the error says how source text is told apart.
    with pytest.raises(tessera.CompileError, match="only when it has a newline"):
        tessera.compile("kernel k() {}")
    with pytest.raises(tessera.CompileError, match="must be an int or a bool"):
        example("matmul.tile", BM=[1])
    with pytest.raises(tessera.CompileError, match="does not fit 64 bits"):
        example("matmul.tile", BM=10**20)


def test_bf16_arrays_from_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = ml_dtypes.bfloat16
    mod = example("matmul.tile", BM=64, BN=128, BK=32)
    rng = np.random.default_rng(4)
    a = rng.standard_normal((70, 45)).astype(bf16)
    b = rng.standard_normal((45, 130)).astype(bf16)
    c = np.zeros((70, 130), bf16)
    mod.matmul(a, b, c)
    want = a.astype(np.float32) @ b.astype(np.float32)
    np.testing.assert_allclose(c.astype(np.float32), want, rtol=2e-2, atol=2e-2)
    with pytest.raises(tessera.LaunchError):
        mod.matmul(a.astype(np.float32), b, c)


def test_print_goes_to_stdout(capsys):
    mod = tessera.compile("kernel p(x: &i32[N]) {\n    print(\"first {}\", x.load([0], [1]));\n}\n")
    mod.p(np.array([42], np.int32))
    assert "42" in capsys.readouterr().out


def test_scalars_and_require():
    src = """
#[grid(1)]
#[require(N >= 4)]
kernel s(x: &f32[N], y: &mut f32[N], a: f32) {
    y.store([0], x.load([0], [4]) * a);
}
"""
    mod = tessera.compile(src)
    x = np.arange(4, dtype=np.float32)
    y = np.zeros(4, np.float32)
    mod.s(x, y, np.float32(2.5))
    np.testing.assert_array_equal(y, 2.5 * x)
    with pytest.raises(tessera.LaunchError, match="N >= 4|require"):
        mod.s(np.zeros(2, np.float32), np.zeros(2, np.float32), 1.0)
    with pytest.raises(tessera.LaunchError, match="number"):
        mod.s(x, y, "2.5")


def test_the_native_module_checks_what_it_is_given():
    from tessera import _tessera

    mod = _tessera.compile_file(os.path.join(EXAMPLES, "vector_add.tile"), [], None)
    k = mod.kernel("vector_add")
    good = ("f32", [4], bytes(16))
    with pytest.raises(tessera.LaunchError, match="not a f32"):
        k.run_interp([("f32", [4], b"abc"), good, good])
    with pytest.raises(tessera.LaunchError, match="not a f32"):
        k.run_interp([("f32", [2**62, 2**62], bytes(16)), good, good])
    with pytest.raises(tessera.LaunchError, match="no dtype"):
        k.run_interp([("f128", [4], bytes(16)), good, good])
    with pytest.raises(tessera.LaunchError, match="neither"):
        k.run_interp([object(), good, good])
    with pytest.raises(tessera.LaunchError, match="no kernel"):
        mod.kernel("nope")
    with pytest.raises(tessera.CompileError, match="unknown target"):
        _tessera.compile("<s>", "kernel k() {}\n", None, [], "sm_70")


class _DLPackOnly:
    """An array seen only through the DLPack protocol (as a CuPy or JAX array is)."""

    def __init__(self, a, device=(1, 0)):
        self._a, self._device = a, device

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._device


def test_cpu_dlpack_arrays_in_and_out():
    mod = example("vector_add.tile")
    x = np.arange(10, dtype=np.float32)
    z = np.zeros(10, np.float32)
    mod.vector_add(_DLPackOnly(x), x, _DLPackOnly(z))
    np.testing.assert_array_equal(z, 2 * x)  # written through the DLPack view
    # On a CUDA device it takes the GPU path (test_device_args.py); on another device it is refused.
    with pytest.raises(tessera.LaunchError, match="order its work"):
        mod.vector_add(_DLPackOnly(x, device=(2, 0)), x, z)
    with pytest.raises(tessera.LaunchError, match="device"):
        mod.vector_add(_DLPackOnly(x, device=(10, 0)), x, z)


def test_a_read_only_output_is_an_error():
    mod = example("vector_add.tile")
    x = np.ones(8, np.float32)
    z = np.zeros(8, np.float32)
    z.flags.writeable = False
    with pytest.raises(tessera.LaunchError, match="read-only"):
        mod.vector_add(x, x, z)


def test_builds_go_through_the_compile_cache():
    src = "#[grid(1)]\nkernel fill_one(z: &mut f32[N]) { z.store([0], 1.0 + 0.0 * arange(8) as f32); }\n"
    first = tessera.compile(src)
    again = tessera.compile(src)
    assert first.cache in ("miss", "disk") and again.cache == "memory"
    # A build from the cache has no tile IR yet: the interpreter makes it from the source.
    z = np.zeros(8, np.float32)
    again.fill_one(z)
    np.testing.assert_array_equal(z, np.ones(8, np.float32))


def test_ahead_of_time_pairs_round_trip(tmp_path):
    add = example("vector_add.tile").vector_add
    add.save_aot(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vector_add.json", "vector_add.ptx"]
    loaded = tessera.load_aot(tmp_path)
    assert loaded.cache == "aot"
    assert loaded.vector_add.params == add.params and loaded.vector_add.ptx == add.ptx
    # No source: the interpreter cannot run it, and says why.
    x = np.ones(4, np.float32)
    with pytest.raises(tessera.LaunchError, match="loaded ahead of time"):
        loaded.vector_add(x, x, x)
    # A tampered pair is refused when loaded.
    (tmp_path / "vector_add.ptx").write_text(add.ptx.replace(".entry vector_add", ".entry other"))
    with pytest.raises(tessera.LaunchError):
        tessera.load_aot(tmp_path)
    with pytest.raises(tessera.LaunchError, match="holds no kernel"):
        tessera.load_aot(tmp_path / "..")


def philox(c0, k0, k1):
    """Philox 4x32-10 of the counter (c0, 0, 0, 0), the first word (Random123's definition)."""
    m = 0xFFFFFFFF
    c = [c0, 0, 0, 0]
    for _ in range(10):
        p0, p1 = c[0] * 0xD2511F53, c[2] * 0xCD9E8D57
        c = [((p1 >> 32) ^ c[1] ^ k0) & m, p1 & m, ((p0 >> 32) ^ c[3] ^ k1) & m, p0 & m]
        k0, k1 = (k0 + 0x9E3779B9) & m, (k1 + 0xBB67AE85) & m
    return c[0]


def test_dropout_mask_is_philox_from_the_seed():
    """`dropout.tile` keeps element i exactly where Triton's `tl.rand(seed, i) > p` would."""
    mod = example("dropout.tile")
    n, p = 3000, 0.25
    x = np.random.default_rng(3).standard_normal(n).astype(np.float32)
    for seed in [7, -3, 2**40 + 5]:
        y = np.full(n, np.nan, np.float32)
        mod.dropout(x, y, p, seed)
        s = seed % 2**64
        bits = np.array([philox(i, s & 0xFFFFFFFF, s >> 32) for i in range(n)], dtype=np.uint32)
        signed = bits.view(np.int32).astype(np.int64)
        uniform = np.where(signed < 0, -signed - 1, signed).astype(np.float32) * np.float32(4.6566127342e-10)
        keep = uniform > np.float32(p)
        assert np.array_equal(y, np.where(keep, x / np.float32(1 - p), np.float32(0)))
        assert abs((~keep).mean() - p) < 0.05
