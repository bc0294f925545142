"""Tessera from Python: compile `.tile` kernels and call them.

    import numpy as np, tessera
    mod = tessera.compile("examples/vector_add.tile")
    x = np.arange(1000, dtype=np.float32); z = np.empty_like(x)
    mod.vector_add(x, x, z)          # NumPy arrays run on the reference interpreter (CPU)

A kernel is called with one argument per parameter, positionally or by name: arrays for tensor
parameters (any strides and views; writable parameters are written back into the array you
passed), Python numbers for scalars. Every shape, dtype, rank and `#[require]` check happens
before the kernel runs and fails with `LaunchError`; a source that does not compile raises
`CompileError` carrying the rendered diagnostic (file, line, caret).

This first version runs NumPy arrays on the interpreter; GPU tensors (torch, DLPack) are next
(docs/python.md).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ._tessera import CompileError, LaunchError, TesseraError
from . import _tessera

__all__ = ["compile", "Module", "Kernel", "TesseraError", "CompileError", "LaunchError"]

# NumPy dtype → Tessera dtype. bf16 is ml_dtypes' `bfloat16` (what NumPy users save bf16 as).
_DTYPES = {
    np.dtype(np.bool_): "bool",
    np.dtype(np.int8): "i8",
    np.dtype(np.int16): "i16",
    np.dtype(np.int32): "i32",
    np.dtype(np.int64): "i64",
    np.dtype(np.uint8): "u8",
    np.dtype(np.uint32): "u32",
    np.dtype(np.uint64): "u64",
    np.dtype(np.float16): "f16",
    np.dtype(np.float32): "f32",
    np.dtype(np.float64): "f64",
}


def _tessera_dtype(a: np.ndarray) -> str:
    d = _DTYPES.get(a.dtype)
    if d is not None:
        return d
    if a.dtype.name == "bfloat16" and a.dtype.itemsize == 2:
        return "bf16"
    raise LaunchError(f"arrays of dtype {a.dtype} have no Tessera dtype")


# DLPack device types (dlpack.h): arrays on these share host memory with NumPy.
_DLPACK_CPU = (1, 3)  # kDLCPU, kDLCUDAHost


def _as_array(name: str, v: Any, dtype: str, rank: int) -> np.ndarray:
    """The NumPy array for a tensor argument: the array itself, or a view of a CPU DLPack array's
    memory (so that results are written into it)."""
    if isinstance(v, np.ndarray):
        return v
    device = getattr(v, "__dlpack_device__", None)
    if device is not None and hasattr(v, "__dlpack__"):
        kind = device()[0]
        if kind not in _DLPACK_CPU:
            raise LaunchError(f"`{name}` is on a device (DLPack device type {kind}); this version runs host arrays "
                              "on the interpreter only (docs/python.md)")
        try:
            return np.from_dlpack(v)
        except (TypeError, BufferError, RuntimeError) as e:
            raise LaunchError(f"`{name}`: its DLPack array cannot be seen from NumPy: {e}") from None
    raise LaunchError(f"`{name}` must be a NumPy or DLPack array ({dtype}, rank {rank}), not {type(v).__name__}")


class Kernel:
    """A compiled kernel; call it like a function (see the module documentation)."""

    def __init__(self, native: Any) -> None:
        self._k = native
        self.name: str = native.name
        # (name, "tensor" | "scalar", dtype, rank, writable) per parameter.
        self.params: Sequence[Tuple[str, str, str, int, bool]] = native.params()

    @property
    def ptx(self) -> str:
        """The kernel's PTX."""
        return self._k.ptx

    def __repr__(self) -> str:
        ps = ", ".join(f"{n}: {'&mut ' if w else '&' if k == 'tensor' else ''}{d}{'[' + ', '.join('_' * r) + ']' if k == 'tensor' else ''}"
                       for n, k, d, r, w in self.params)
        return f"<tessera kernel {self.name}({ps})>"

    def _bind(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list:
        names = [p[0] for p in self.params]
        if len(args) > len(names):
            raise LaunchError(f"kernel `{self.name}` takes {len(names)} arguments, {len(args)} given")
        bound: Dict[str, Any] = dict(zip(names, args))
        for k, v in kwargs.items():
            if k not in names:
                raise LaunchError(f"kernel `{self.name}` has no parameter `{k}` (parameters: {', '.join(names)})")
            if k in bound:
                raise LaunchError(f"parameter `{k}` of kernel `{self.name}` given twice")
            bound[k] = v
        missing = [n for n in names if n not in bound]
        if missing:
            raise LaunchError(f"kernel `{self.name}`: missing argument(s) {', '.join(missing)}")
        return [bound[n] for n in names]

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        values = self._bind(args, kwargs)
        native_args = []
        arrays: Dict[str, np.ndarray] = {}
        for (name, kind, dtype, rank, _w), v in zip(self.params, values):
            if kind == "tensor":
                arrays[name] = a = _as_array(name, v, dtype, rank)
                c = np.ascontiguousarray(a)
                native_args.append((_tessera_dtype(c), list(c.shape), c.tobytes()))
            else:
                if isinstance(v, np.generic):
                    v = v.item()
                if not isinstance(v, (bool, int, float)):
                    raise LaunchError(f"`{name}` must be a number ({dtype}), not {type(v).__name__}")
                native_args.append(v)
        outs, printed = self._k.run_interp(native_args)
        if printed:
            print(printed, end="")
        for (name, _kind, _d, _r, writable), out in zip(self.params, outs):
            if writable and out is not None:
                # Written back into the caller's array (or the NumPy view of a DLPack array's
                # memory), whatever its strides.
                a = arrays[name]
                try:
                    a[...] = np.frombuffer(out, dtype=a.dtype).reshape(a.shape)
                except ValueError as e:  # a read-only array (or DLPack view)
                    raise LaunchError(f"`{name}` is written by the kernel but its array is read-only: {e}") from None


class Module:
    """The kernels of one compiled source: `mod.NAME` or `mod["NAME"]`."""

    def __init__(self, native: Any) -> None:
        self._m = native
        self.kernels: Dict[str, Kernel] = {n: Kernel(native.kernel(n)) for n in native.names()}

    def __getattr__(self, name: str) -> Kernel:
        kernels = self.__dict__.get("kernels", {})
        if name in kernels:
            return kernels[name]
        raise AttributeError(f"no kernel `{name}` (kernels: {', '.join(kernels)})")

    def __getitem__(self, name: str) -> Kernel:
        try:
            return self.kernels[name]
        except KeyError:
            raise KeyError(f"no kernel `{name}` (kernels: {', '.join(self.kernels)})") from None

    def __repr__(self) -> str:
        return f"<tessera module: {', '.join(self.kernels)}>"


def compile(source: Union[str, "os.PathLike[str]"], consts: Optional[Mapping[str, Union[int, bool]]] = None,
            target: Optional[str] = None) -> Module:
    """Compiles a `.tile` file (a path) or source text (a string with a newline in it).

    `consts` overrides `const` parameters (`{"BM": 64}`); `target` is `"sm_90a"` (default) or
    `"sm_80"`. Raises `CompileError` with the rendered diagnostic.
    """
    items = list((consts or {}).items())
    text = os.fspath(source)
    if isinstance(source, str) and "\n" in source:
        return Module(_tessera.compile("<string>", text, None, items, target))
    return Module(_tessera.compile_file(text, items, target))
