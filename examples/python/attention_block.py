"""A transformer attention block whose forward runs Tessera kernels, checked against NumPy.

    y = x + proj(attention(split_heads(qkv(layernorm(x)))))

`layernorm.tile` (f32), `linear.tile` (bf16 in, f32 accumulate, bf16 out, no activation) for the
QKV and output projections, and `attention.tile` (D = 64 per head) do the work; NumPy only
reshapes between them. Called with NumPy arrays, the kernels run on Tessera's reference
interpreter (CPU), so the sizes are small. Run: `python3 examples/python/attention_block.py`.
"""

import os
import sys

import ml_dtypes
import numpy as np

import tessera

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..")
BF16 = ml_dtypes.bfloat16


class AttentionBlock:
    """Pre-norm self-attention with `heads` heads of 64 features (weights random, seeded)."""

    def __init__(self, features: int, heads: int, seed: int = 0):
        assert features == 64 * heads, "attention.tile is compiled for 64 features per head"
        rng = np.random.default_rng(seed)
        self.features, self.heads = features, heads
        self.norm_w = (1 + 0.1 * rng.standard_normal(features)).astype(np.float32)
        self.norm_b = (0.1 * rng.standard_normal(features)).astype(np.float32)
        scale = 1 / np.sqrt(features)
        self.w_qkv = (scale * rng.standard_normal((features, 3 * features))).astype(BF16)
        self.b_qkv = (0.1 * rng.standard_normal(3 * features)).astype(np.float32)
        self.w_out = (scale * rng.standard_normal((features, features))).astype(BF16)
        self.b_out = (0.1 * rng.standard_normal(features)).astype(np.float32)
        self.layernorm = tessera.compile(os.path.join(EXAMPLES, "layernorm.tile")).layernorm
        # Small tiles: the interpreter runs every program of the grid.
        self.linear = tessera.compile(os.path.join(EXAMPLES, "linear.tile"), consts={"ACT": 0, "BM": 32, "BN": 64, "BK": 32}).linear
        self.attention = tessera.compile(os.path.join(EXAMPLES, "attention.tile"), consts={"D": 64, "BQ": 32, "BK": 32}).attention

    def _linear(self, x, w, b):
        y = np.empty((x.shape[0], w.shape[1]), BF16)
        self.linear(x, w, b, y)
        return y

    def forward(self, x: np.ndarray) -> np.ndarray:
        """`x`: `[S, features]` f32; returns the block's output, f32."""
        s, e, h = x.shape[0], self.features, self.heads
        xn = np.empty_like(x)
        self.layernorm(x, self.norm_w, self.norm_b, xn, eps=1e-5)
        qkv = self._linear(xn.astype(BF16), self.w_qkv, self.b_qkv)  # [S, 3E]
        # [S, 3, H, 64] → three [1, H, S, 64] tensors.
        q, k, v = (np.ascontiguousarray(t.transpose(1, 0, 2)[None]) for t in qkv.reshape(s, 3, h, 64).transpose(1, 0, 2, 3))
        o = np.empty_like(q)
        self.attention(q, k, v, o, scale=1 / np.sqrt(64))
        heads = np.ascontiguousarray(o[0].transpose(1, 0, 2).reshape(s, e))
        return x + self._linear(heads, self.w_out, self.b_out).astype(np.float32)

    def reference(self, x: np.ndarray) -> np.ndarray:
        """The same block in NumPy (f32 math on the bf16-rounded operands the kernels see)."""
        s, e, h = x.shape[0], self.features, self.heads
        mean, var = x.mean(1, keepdims=True), x.var(1, keepdims=True)
        xn = ((x - mean) / np.sqrt(var + 1e-5) * self.norm_w + self.norm_b).astype(BF16).astype(np.float32)
        qkv = (xn @ self.w_qkv.astype(np.float32) + self.b_qkv).astype(BF16).astype(np.float32)
        q, k, v = (t.transpose(1, 0, 2) for t in qkv.reshape(s, 3, h, 64).transpose(1, 0, 2, 3))
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(64)
        p = np.exp(scores - scores.max(-1, keepdims=True))
        o = (p / p.sum(-1, keepdims=True)) @ v
        heads = o.transpose(1, 0, 2).reshape(s, e).astype(BF16).astype(np.float32)
        return x + (heads @ self.w_out.astype(np.float32) + self.b_out).astype(BF16).astype(np.float32)


def main(seq: int = 48, heads: int = 2) -> float:
    block = AttentionBlock(64 * heads, heads)
    x = np.random.default_rng(1).standard_normal((seq, 64 * heads)).astype(np.float32)
    got, want = block.forward(x), block.reference(x)
    err = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    print(f"attention block, {seq} tokens, {heads} heads: relative L2 error against NumPy {err:.2e}")
    return err


if __name__ == "__main__":
    sys.exit(0 if main() < 2e-2 else 1)
