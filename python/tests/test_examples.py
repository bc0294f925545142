"""The Python examples run and agree with their NumPy references."""

import os
import runpy

import numpy as np

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "python")


def test_attention_block_matches_numpy():
    ns = runpy.run_path(os.path.join(EXAMPLES, "attention_block.py"))
    assert ns["main"](seq=37, heads=2) < 2e-2  # 37 tokens: partial tiles in every kernel
    # The comparison can fail: a block whose forward skips the attention does not match.
    block = ns["AttentionBlock"](128, 2)
    x = np.random.default_rng(5).standard_normal((16, 128)).astype(np.float32)
    assert np.linalg.norm(block.forward(x) - block.reference(x)) / np.linalg.norm(block.reference(x)) < 2e-2
    assert np.linalg.norm(x - block.reference(x)) / np.linalg.norm(block.reference(x)) > 2e-2
