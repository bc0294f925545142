"""Tessera from Python: compile `.tile` kernels and call them.

    import numpy as np, tessera
    mod = tessera.compile("examples/vector_add.tile")
    x = np.arange(1000, dtype=np.float32); z = np.empty_like(x)
    mod.vector_add(x, x, z)          # NumPy arrays run on the reference interpreter (CPU)

    q = torch.randn(4, 32, 4096, 128, device="cuda", dtype=torch.bfloat16)  # ... k, v, o alike
    mod = tessera.compile("examples/attention.tile")
    mod.attention(q, k, v, o, scale=0.088)   # torch CUDA tensors run on the GPU

A kernel is called with one argument per parameter, positionally or by name: arrays for tensor
parameters (any strides and views; writable parameters are written in place), Python numbers for
scalars. NumPy arrays (and DLPack arrays in host memory) run on the reference interpreter; torch
CUDA tensors and arrays with `__cuda_array_interface__` (CuPy) run on the GPU that holds them,
launched without waiting on the current stream of their library (`torch.cuda.current_stream()`,
CuPy's current stream; other such arrays: the legacy default stream), so they are ordered with
the library's own work and captured into CUDA graphs. Every
shape, dtype, rank and `#[require]` check happens before the kernel runs and fails with
`LaunchError`; a source that does not compile raises `CompileError` carrying the rendered
diagnostic (file, line, caret).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ._tessera import CompileError, LaunchError, TesseraError
from . import _tessera

__all__ = ["compile", "load_aot", "gpu_available", "Module", "Kernel", "TesseraError", "CompileError", "LaunchError"]

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
            raise LaunchError(f"`{name}` is a DLPack array on a device (type {kind}); GPU arrays are taken as torch "
                              "CUDA tensors or through `__cuda_array_interface__` (docs/python.md)")
        try:
            return np.from_dlpack(v)
        except (TypeError, BufferError, RuntimeError) as e:
            raise LaunchError(f"`{name}`: its DLPack array cannot be seen from NumPy: {e}") from None
    raise LaunchError(f"`{name}` must be a NumPy or DLPack array ({dtype}, rank {rank}), not {type(v).__name__}")


# torch dtype name (`str(torch.bfloat16)` without the prefix) → Tessera dtype.
_TORCH_DTYPES = {
    "bool": "bool", "int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64", "uint8": "u8",
    "uint32": "u32", "uint64": "u64", "float16": "f16", "bfloat16": "bf16", "float32": "f32", "float64": "f64",
}

# `__cuda_array_interface__` type strings → Tessera dtype.
_CAI_DTYPES = {
    "|b1": "bool", "|i1": "i8", "<i2": "i16", "<i4": "i32", "<i8": "i64", "|u1": "u8", "<u4": "u32",
    "<u8": "u64", "<f2": "f16", "<f4": "f32", "<f8": "f64",
}


def gpu_available() -> bool:
    """Whether a GPU can run kernels in this process (a CUDA driver and a device)."""
    return _tessera.gpu_status()[0]


# Tessera dtype name → its code in the native launch (`_tessera.dtype_codes`).
_CODES: Dict[str, int] = dict(_tessera.dtype_codes())
# torch.dtype → Tessera dtype code, filled on first use (torch is imported only by its users).
_TORCH_BY_DTYPE: Dict[Any, int] = {}


def _torch_code(name: str, v: Any) -> int:
    """The dtype code of a torch tensor (cached per torch dtype)."""
    dtype = _TORCH_DTYPES.get(str(v.dtype).rsplit(".", 1)[-1])
    if dtype is None:
        raise LaunchError(f"`{name}`: torch tensors of dtype {v.dtype} have no Tessera dtype")
    _TORCH_BY_DTYPE[v.dtype] = _CODES[dtype]
    return _CODES[dtype]


def _torch_tensor(name: str, v: Any) -> Tuple[int, int, Any, Any]:
    """`(address, dtype code, shape, element strides)` of a torch CUDA tensor."""
    code = _TORCH_BY_DTYPE.get(v.dtype)
    return v.data_ptr(), _torch_code(name, v) if code is None else code, v.shape, v.stride()


# A tensor in GPU memory: `(address, dtype code, shape, element strides)`, its library and its
# GPU's ordinal (`None`: not known yet).
_DeviceTensor = Tuple[Tuple[int, int, Any, Any], str, Optional[int]]


def _device_tensor(name: str, v: Any, writable: bool) -> Optional[_DeviceTensor]:
    """For a tensor in GPU memory, `((address, dtype code, shape, element strides), library,
    device)`, where library is `"torch"`, `"cupy"` (whose current stream the launch goes on),
    `"cai"` (another `__cuda_array_interface__` array) or `"dlpack"` (a DLPack array on CUDA, e.g.
    JAX's), these two on the legacy default stream; `None` for anything else."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(v, torch.Tensor):
        return (_torch_tensor(name, v), "torch", v.get_device()) if v.is_cuda else None
    cai = getattr(v, "__cuda_array_interface__", None)
    if cai is None:
        return _dlpack_tensor(name, v)
    dtype = _CAI_DTYPES.get(cai["typestr"])
    if dtype is None:
        raise LaunchError(f"`{name}`: arrays of type {cai['typestr']} have no Tessera dtype")
    ptr, readonly = cai["data"]
    if readonly and writable:
        raise LaunchError(f"`{name}` is written by the kernel but its array is read-only")
    shape = list(cai["shape"])
    size = int(cai["typestr"][2:])
    if cai.get("strides") is None:
        strides, acc = [], 1
        for n in reversed(shape):
            strides.append(acc)
            acc *= n
        strides.reverse()
    else:
        if any(b % size for b in cai["strides"]):
            raise LaunchError(f"`{name}`: strides {cai['strides']} are not whole elements")
        strides = [b // size for b in cai["strides"]]
    if type(v).__module__.startswith("cupy"):
        library, dev = "cupy", v.device.id
    else:
        # The interface does not name the device: the driver knows it from the address
        # (asked in `_device_args`, after the checks that need no driver).
        library, dev = "cai", None
    return (ptr, _CODES[dtype], tuple(shape), tuple(strides)), library, dev


# DLPack's device type of CUDA memory (dlpack.h: kDLCUDA).
_DLPACK_CUDA = 2


def _dlpack_tensor(name: str, v: Any) -> Optional[_DeviceTensor]:
    """`_device_tensor` for an array seen through DLPack only (JAX): its capsule is read, not
    consumed. The producer is asked to order its work before the legacy default stream, which
    the launch goes on."""
    device = getattr(v, "__dlpack_device__", None)
    if device is None or not hasattr(v, "__dlpack__"):
        return None
    kind, dev = device()[:2]
    if kind != _DLPACK_CUDA:
        return None
    try:
        capsule = v.__dlpack__(stream=1)  # 1: CUDA's legacy default stream, in the protocol
    except TypeError:  # a producer from before the `stream` argument
        capsule = v.__dlpack__()
    except (BufferError, ValueError, RuntimeError) as e:
        raise LaunchError(f"`{name}`: its DLPack producer cannot order its work before the legacy default "
                          f"stream: {e}") from None
    ptr, _device, code, shape, strides = _tessera.dlpack_tensor(capsule)
    return (ptr, code, tuple(shape), tuple(strides)), "dlpack", dev


# torch's current-stream getter, set (with the native fast path's view of torch: `set_torch`)
# by the first launch on torch tensors.
_torch_stream = None


def _current_stream(library: str, device: int) -> int:
    """The handle of the library's current stream on GPU `device`."""
    global _torch_stream
    if library == "torch":
        if _torch_stream is None:
            torch = sys.modules["torch"]
            raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
            _torch_stream = raw if raw is not None else lambda d: torch.cuda.current_stream(d).cuda_stream
            dtypes = [(getattr(torch, n), _CODES[t]) for n, t in _TORCH_DTYPES.items() if hasattr(torch, n)]
            _tessera.set_torch(torch.Tensor, _torch_stream, dtypes, getattr(torch._C, "_to_dlpack", None))
        return _torch_stream(device)
    if library == "cupy":
        cupy = sys.modules["cupy"]
        with cupy.cuda.Device(device):
            return cupy.cuda.get_current_stream().ptr
    # Another library's array: the legacy default stream, ordered after the work of every
    # blocking stream (where `__cuda_array_interface__` producers leave their data).
    return 0


class Kernel(_tessera.Launcher):
    """A compiled kernel; call it like a function (see the module documentation).

    Calling it is native code (`_tessera.Launcher.__call__`) when every tensor argument is a
    plain torch CUDA tensor (all on one GPU) and every scalar a Python number, so the launch
    overhead is
    PyTorch's attribute reads and the driver's; any other call runs `_call` below."""

    def __init__(self, native: Any) -> None:
        self._k = native
        self.name: str = native.name
        # Set on a kernel returned by `tune`.
        self.tune_table: Optional[str] = None
        self.tuned_from_cache: Optional[bool] = None
        # (name, "tensor" | "scalar", dtype, rank, writable) per parameter.
        self.params: Sequence[Tuple[str, str, str, int, bool]] = native.params()
        self._tensors = [(i, p[0], p[4]) for i, p in enumerate(self.params) if p[1] == "tensor"]
        self._n = len(self.params)

    @property
    def ptx(self) -> str:
        """The kernel's PTX."""
        return self._k.ptx

    def save_aot(self, directory: Union[str, "os.PathLike[str]"]) -> None:
        """Writes the kernel's ahead-of-time pair `NAME.ptx` and `NAME.json` into `directory`
        (which must exist), for `load_aot` or any loader of the format (docs/cli.md)."""
        self._k.save_aot(os.fspath(directory))

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

    def _call(self, *args: Any, **kwargs: Any) -> None:
        """A call the native `__call__` did not take: arguments by name, host arrays for the
        interpreter, CuPy and DLPack arrays, anything needing an explanation."""
        values = args if not kwargs and len(args) == self._n else self._bind(args, kwargs)
        if self._launch_gpu(values):
            return
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

    def _launch_gpu(self, values: Sequence[Any]) -> bool:
        """Launches on the GPU when the tensor arguments are in GPU memory; False when they are
        host arrays (for the interpreter)."""
        native, library, device = self._device_args(values)
        if library is None:
            return False
        self._k.launch_gpu(native, _current_stream(library, device), device)
        return True

    def tune(self, *args: Any, retune: bool = False, progress: bool = True, **kwargs: Any) -> "Kernel":
        """Autotunes the kernel over its `#[tune]` space on these GPU arguments (torch CUDA tensors
        or CUDA arrays, as for a call; every configuration tried writes the outputs) and returns
        the winner as a kernel to call. The winner is cached per shape bucket (each dimension
        rounded up to a power of two) and device, in the compile cache the CLI uses: a later
        `tune` on similar shapes returns at once (`retune=True` tunes again). With `progress`, a
        progress line goes to `sys.stderr`. The returned kernel's `tune_table` is the table of
        configurations tried."""
        values = self._bind(args, kwargs)
        native, library, device = self._device_args(values)
        if library is None:
            raise LaunchError(f"kernel `{self.name}`: tuning runs on the GPU; pass torch CUDA tensors or CUDA arrays")
        # The tuner launches on its own stream: the inputs must be ready.
        if library == "torch":
            sys.modules["torch"].cuda.synchronize(device)
        elif library == "cupy":
            cupy = sys.modules["cupy"]
            with cupy.cuda.Device(device):
                cupy.cuda.get_current_stream().synchronize()

        def line(compiled: int, timed: int, total: int, best: Optional[Tuple[float, str]]) -> None:
            tail = f", best {best[0]:.4f} ms ({best[1]})" if best else ""
            sys.stderr.write(f"\rtuning {self.name}: compiled {compiled}/{total}, timed {timed}/{total}{tail}\x1b[K")
            sys.stderr.flush()

        native_k, table, cached = self._k.tune(native, retune, line if progress else None, device)
        if progress and not cached:
            sys.stderr.write("\n")
        tuned = Kernel(native_k)
        tuned.tune_table = table
        tuned.tuned_from_cache = cached
        return tuned

    def _device_args(self, values: Sequence[Any]) -> Tuple[list, Optional[str], int]:
        """The native arguments of a GPU launch, the library whose stream it goes on and the GPU
        it runs on; `None` as the library when the tensors are host arrays."""
        native = [v.item() if isinstance(v, np.generic) else v for v in values]
        found = []
        host = []
        for i, name, writable in self._tensors:
            d = _device_tensor(name, values[i], writable)
            if d is None:
                host.append(name)
                continue
            native[i] = d[0]
            found.append((name, d))
        if not found:
            return native, None, 0
        if host:
            raise LaunchError(f"kernel `{self.name}`: {', '.join(f'`{n}`' for n in host)} in host memory, other "
                              "tensors on the GPU; pass all tensors on one side")
        first, device = "", None
        for name, (t, _library, dev) in found:
            if dev is None and t[0]:
                dev = _tessera.device_of(t[0])
            if dev is None:  # an empty array without an address
                continue
            if device is None:
                first, device = name, dev
            elif dev != device:
                raise LaunchError(f"kernel `{self.name}`: `{first}` is on GPU {device}, `{name}` on GPU {dev}; "
                                  "pass all tensors on one GPU")
        return native, found[0][1][1], device or 0


class Module:
    """The kernels of one compiled source: `mod.NAME` or `mod["NAME"]`."""

    def __init__(self, native: Any) -> None:
        self._m = native
        # Where the build came from: the compile cache's "miss", "memory" or "disk".
        self.cache: str = native.cache
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


def load_aot(directory: Union[str, "os.PathLike[str]"]) -> Module:
    """Loads the ahead-of-time kernels of a folder: each `KERNEL.json` with its `KERNEL.ptx`, as
    `tessera build FILE --emit ptx,meta -o DIR` writes them (checked: the metadata describes the
    PTX, and this version of Tessera wrote it). They are called like compiled kernels, on GPU
    tensors only (there is no source for the interpreter or the tuner)."""
    return Module(_tessera.load_aot(os.fspath(directory)))


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
