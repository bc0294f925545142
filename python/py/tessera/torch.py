"""Tessera kernels as PyTorch operators, for `torch.compile` and CUDA graphs.

    import tessera, tessera.torch
    attention = tessera.torch.custom_op(tessera.compile("examples/attention.tile").attention)
    attention(q, k, v, o, 0.088)          # torch.ops.tessera.attention: writes `o` in place

    @torch.compile(fullgraph=True)
    def f(q, k, v):
        o = torch.empty_like(q)
        attention(q, k, v, o, 0.088)
        return o

`custom_op` registers the kernel with `torch.library` under the `tessera` namespace: its schema
comes from the kernel's signature (a `Tensor` per tensor parameter, marked as written when the
parameter is `&mut`; `float`, `int` or `bool` per scalar), its CUDA implementation launches the
kernel on the current stream, and its fake (meta) implementation does nothing, since the op
returns nothing and only writes its `&mut` tensors, whose shapes the caller chose. So the op
traces into `torch.compile` graphs without a graph break and is captured into CUDA graphs.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from . import Kernel, LaunchError

_SCALARS = {"f16": "float", "bf16": "float", "f32": "float", "f64": "float", "bool": "bool"}
_registered: Dict[str, Any] = {}


def schema(kernel: Kernel) -> str:
    """The `torch.library` schema of `kernel` (without its name): `(Tensor q, …, Tensor(a!) o,
    float scale) -> ()`."""
    args = []
    alias = iter("abcdefghijklmnopqrstuvwxyz")
    for name, kind, dtype, _rank, writable in kernel.params:
        if kind == "tensor":
            args.append(f"Tensor({next(alias)}!) {name}" if writable else f"Tensor {name}")
        else:
            args.append(f"{_SCALARS.get(dtype, 'int')} {name}")
    return f"({', '.join(args)}) -> ()"


def custom_op(kernel: Kernel, name: Optional[str] = None) -> Any:
    """Registers `kernel` as the operator `torch.ops.tessera.<name>` (default: the kernel's name)
    and returns it. Registering a second kernel under a taken name is an error: pass `name`."""
    name = name or kernel.name
    if not name.isidentifier():
        raise LaunchError(f"`{name}` is not a valid operator name")
    if name in _registered:
        if _registered[name][0] is kernel:
            return _registered[name][1]
        raise LaunchError(f"an operator tessera::{name} is registered already; pass another `name`")
    qualname = f"tessera::{name}"
    lib = torch.library.Library("tessera", "FRAGMENT")
    lib.define(name + schema(kernel))

    def run(*args: Any) -> None:
        kernel(*args)

    def fake(*args: Any) -> None:
        return None

    lib.impl(name, run, "CUDA")
    torch.library.register_fake(qualname, fake, lib=lib)
    op = getattr(torch.ops.tessera, name)
    # The library object owns the registrations: kept for the life of the process.
    _registered[name] = (kernel, op, lib)
    return op
