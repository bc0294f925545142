"""A PyTorch attention block whose forward runs Tessera kernels on the GPU, checked against the
same block in eager PyTorch and timed against it.

    y = x + proj(attention(split_heads(qkv(layernorm(x)))))

`TesseraBlock.forward` calls `layernorm.tile` (f32), `linear.tile` (bf16 in, f32 accumulate,
bf16 out, no activation) for the QKV and output projections, and `attention.tile` (D = 64 per
head) on torch CUDA tensors, launched on the current stream; torch only reshapes between them.
`EagerBlock` is the same computation in PyTorch (`layer_norm`, `addmm`,
`scaled_dot_product_attention`) with the same weights. Then both blocks again under
`torch.compile(fullgraph=True)` (the Tessera kernels as `torch.library` operators through
`tessera.torch.custom_op`, so the graph has no break). Needs torch with CUDA; run:
`python3 examples/python/attention_block_torch.py`.
"""

import os
import sys

import torch
import torch.nn.functional as F

import tessera
import tessera.torch

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..")


class EagerBlock(torch.nn.Module):
    """Pre-norm self-attention with `heads` heads of 64 features (random weights, seeded)."""

    def __init__(self, features: int, heads: int, seed: int = 0):
        super().__init__()
        assert features == 64 * heads, "attention.tile is compiled for 64 features per head"
        g = torch.Generator().manual_seed(seed)
        self.features, self.heads = features, heads
        scale = features ** -0.5
        self.norm_w = torch.nn.Parameter(1 + 0.1 * torch.randn(features, generator=g))
        self.norm_b = torch.nn.Parameter(0.1 * torch.randn(features, generator=g))
        # Weights as `[in, out]` (what linear.tile multiplies by), bf16; biases f32.
        self.w_qkv = torch.nn.Parameter((scale * torch.randn(features, 3 * features, generator=g)).bfloat16())
        self.b_qkv = torch.nn.Parameter(0.1 * torch.randn(3 * features, generator=g))
        self.w_out = torch.nn.Parameter((scale * torch.randn(features, features, generator=g)).bfloat16())
        self.b_out = torch.nn.Parameter(0.1 * torch.randn(features, generator=g))

    def split(self, t: torch.Tensor, b: int, s: int) -> torch.Tensor:
        """`[B·S, E]` → `[B, H, S, 64]`."""
        return t.view(b, s, self.heads, 64).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x`: `[B, S, features]` f32."""
        b, s, e = x.shape
        xn = F.layer_norm(x, (e,), self.norm_w, self.norm_b, eps=1e-5).bfloat16().view(b * s, e)
        qkv = torch.addmm(self.b_qkv.bfloat16(), xn, self.w_qkv)
        q, k, v = (self.split(t, b, s) for t in qkv.chunk(3, dim=1))
        o = F.scaled_dot_product_attention(q, k, v)
        heads = o.transpose(1, 2).reshape(b * s, e)
        return x + torch.addmm(self.b_out.bfloat16(), heads, self.w_out).float().view(b, s, e)


class TesseraBlock(EagerBlock):
    """`EagerBlock` with its forward on Tessera kernels."""

    def __init__(self, features: int, heads: int, seed: int = 0, ops: bool = False):
        """`ops`: call the kernels as `torch.library` operators (for `torch.compile`)."""
        super().__init__(features, heads, seed)
        self.layernorm = tessera.compile(os.path.join(EXAMPLES, "layernorm.tile"), consts={"BC": features}).layernorm
        self.linear = tessera.compile(os.path.join(EXAMPLES, "linear.tile"), consts={"ACT": 0}).linear
        self.attention = tessera.compile(os.path.join(EXAMPLES, "attention.tile"), consts={"D": 64}).attention
        if ops:
            for name in ("layernorm", "linear", "attention"):
                setattr(self, name, tessera.torch.custom_op(getattr(self, name), f"block_{name}_{features}"))

    def _linear(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        y = torch.empty(x.shape[0], w.shape[1], device=x.device, dtype=torch.bfloat16)
        self.linear(x, w, bias, y)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, e = x.shape
        xn = torch.empty_like(x)
        self.layernorm(x.view(b * s, e), self.norm_w, self.norm_b, xn.view(b * s, e), eps=1e-5)
        qkv = self._linear(xn.view(b * s, e).bfloat16(), self.w_qkv, self.b_qkv)
        # Views with the heads' strides: the kernels take any strides, so no copies.
        q, k, v = (self.split(t, b, s) for t in qkv.chunk(3, dim=1))
        o = torch.empty(b, self.heads, s, 64, device=x.device, dtype=torch.bfloat16)
        self.attention(q, k, v, o, scale=64 ** -0.5)
        heads = o.transpose(1, 2).reshape(b * s, e)
        return x + self._linear(heads, self.w_out, self.b_out).float().view(b, s, e)


def median_ms(fn, reps: int = 50) -> float:
    """Median time of `fn` (CUDA events, after warm-up)."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main(batch: int = 4, seq: int = 2048, heads: int = 16, timing: bool = True, compiled: bool = True) -> float:
    features = 64 * heads
    ours = TesseraBlock(features, heads).cuda()
    eager = EagerBlock(features, heads).cuda()
    eager.load_state_dict(ours.state_dict())
    x = torch.randn(batch, seq, features, device="cuda")
    with torch.no_grad():
        got, want = ours(x), eager(x)
        torch.cuda.synchronize()
        err = float((got - want).norm() / want.norm())
        print(f"attention block B{batch} S{seq} E{features} H{heads}: relative L2 error against eager PyTorch {err:.2e}")
        if timing:
            t_ours, t_eager = median_ms(lambda: ours(x)), median_ms(lambda: eager(x))
            print(f"forward: Tessera kernels {t_ours:.3f} ms, eager PyTorch (cuDNN/flash SDPA, cuBLAS) {t_eager:.3f} ms "
                  f"({t_eager / t_ours:.2f}x) on {torch.cuda.get_device_name()}")
        if compiled:
            # `fullgraph=True`: a graph break would be an error.
            ops = TesseraBlock(features, heads, ops=True).cuda()
            ops.load_state_dict(ours.state_dict())
            ours_c = torch.compile(ops, fullgraph=True)
            eager_c = torch.compile(eager, fullgraph=True)
            got_c = ours_c(x)
            torch.cuda.synchronize()
            err_c = float((got_c - want).norm() / want.norm())
            print(f"under torch.compile(fullgraph=True): relative L2 error against eager PyTorch {err_c:.2e}")
            err = max(err, err_c)
            if timing:
                t_ours, t_eager = median_ms(lambda: ours_c(x)), median_ms(lambda: eager_c(x))
                print(f"compiled forward: Tessera operators {t_ours:.3f} ms, compiled PyTorch {t_eager:.3f} ms "
                      f"({t_eager / t_ours:.2f}x)")
    return err


if __name__ == "__main__":
    sys.exit(0 if main() < 2e-2 else 1)
