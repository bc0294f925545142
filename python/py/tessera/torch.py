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

`autograd` pairs a forward and a backward kernel into a differentiable function (below).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch

from . import _TORCH_DTYPES, Kernel, LaunchError

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


# Tessera dtype → torch dtype.
_DTYPES = {tessera: getattr(torch, name) for name, tessera in _TORCH_DTYPES.items()}


def autograd(forward: Kernel, backward: Kernel,
             outputs: Optional[Mapping[str, Callable[..., Sequence[int]]]] = None) -> Callable[..., Any]:
    """Pairs a forward and a backward kernel into a differentiable function (a
    `torch.autograd.Function`).

    The function takes the forward kernel's read-only parameters, tensors and scalars, in order,
    and returns its `&mut` tensors (one tensor, or a tuple in parameter order), allocated on the
    first input's device with the kernel's dtypes and the shapes `outputs[name](**inputs)`
    (default: the first tensor input's shape). Its gradient runs the backward kernel, whose
    parameters are matched by name: a forward input or output's name receives that tensor (saved
    by the forward), `d<out>` for a forward output `out` receives that output's gradient (zeros
    when it has none), and a writable (`&mut`) `d<in>` for a forward input `in` is that input's
    gradient, allocated zeroed like it. Inputs without such a parameter get no gradient. A
    backward parameter that matches nothing is an error here, not at the first backward pass.

        mul = tessera.torch.autograd(mod.mul, mod.mul_bwd)  # mul(x, y, z), mul_bwd(x, y, dz, dx, dy)
        z = mul(x, y)
        z.sum().backward()                                   # x.grad, y.grad from mul_bwd
    """
    shapes = dict(outputs or {})
    ins = [p for p in forward.params if not (p[1] == "tensor" and p[4])]
    outs = [p for p in forward.params if p[1] == "tensor" and p[4]]
    in_names = [p[0] for p in ins]
    out_names = [p[0] for p in outs]
    if not outs:
        raise LaunchError(f"kernel `{forward.name}` writes no tensor: there is nothing to differentiate")
    unknown = [n for n in shapes if n not in out_names]
    if unknown:
        raise LaunchError(f"`outputs` names {', '.join(unknown)}, not written by `{forward.name}` ({', '.join(out_names)})")
    tensor_ins = [p[0] for p in ins if p[1] == "tensor"]
    if not tensor_ins:
        raise LaunchError(f"kernel `{forward.name}` reads no tensor")
    # What each backward parameter is.
    roles: Dict[str, Tuple[str, str]] = {}
    for name, kind, _d, _r, writable in backward.params:
        if name in in_names or name in out_names:
            roles[name] = ("saved", name)
        elif name.startswith("d") and name[1:] in out_names and kind == "tensor":
            roles[name] = ("grad_out", name[1:])
        elif name.startswith("d") and name[1:] in tensor_ins and kind == "tensor" and writable:
            roles[name] = ("grad_in", name[1:])
        else:
            raise LaunchError(f"parameter `{name}` of `{backward.name}` is no input or output of `{forward.name}`, "
                              "nor `d` and the name of one (a writable one for an input's gradient)")
    saved_names = [n for role, n in roles.values() if role == "saved"]
    grads_of = {n for role, n in roles.values() if role == "grad_in"}
    out_dtypes = {p[0]: _DTYPES[p[2]] for p in outs}

    class Function(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, *args: Any) -> Any:
            named = dict(zip(in_names, args))
            first = named[tensor_ins[0]]
            results = {}
            for n in out_names:
                shape = tuple(shapes[n](**named)) if n in shapes else tuple(first.shape)
                results[n] = torch.empty(shape, dtype=out_dtypes[n], device=first.device)
            forward(**named, **results)
            everything = {**named, **results}
            tensors = [n for n in saved_names if isinstance(everything[n], torch.Tensor)]
            ctx.tensor_names = tensors
            ctx.others = {n: everything[n] for n in saved_names if n not in tensors}
            ctx.shapes = {n: (results[n].shape, results[n].dtype) for n in out_names}
            ctx.like = {n: (named[n].shape, named[n].dtype) for n in grads_of}
            ctx.device = first.device
            ctx.save_for_backward(*(everything[n] for n in tensors))
            for n in out_names:
                if results[n].dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
                    ctx.mark_non_differentiable(results[n])
            found = tuple(results[n] for n in out_names)
            return found[0] if len(found) == 1 else found

        @staticmethod
        def backward(ctx: Any, *grads: Any) -> Any:
            values = dict(zip(ctx.tensor_names, ctx.saved_tensors))
            values.update(ctx.others)
            args = {}
            for name, (role, of) in roles.items():
                if role == "saved":
                    args[name] = values[of]
                elif role == "grad_out":
                    g = grads[out_names.index(of)]
                    shape, dtype = ctx.shapes[of]
                    args[name] = torch.zeros(shape, dtype=dtype, device=ctx.device) if g is None else g
                else:
                    shape, dtype = ctx.like[of]
                    args[name] = torch.zeros(shape, dtype=dtype, device=ctx.device)
            backward(**args)
            return tuple(args.get("d" + n) if n in grads_of else None for n in in_names)

    def apply(*args: Any) -> Any:
        if len(args) != len(in_names):
            raise LaunchError(f"`{forward.name}` differentiable takes {len(in_names)} arguments ({', '.join(in_names)}), "
                              f"{len(args)} given")
        return Function.apply(*args)

    apply.__name__ = forward.name
    apply.__doc__ = f"`{forward.name}` with its gradient from `{backward.name}` (tessera.torch.autograd)."
    return apply
