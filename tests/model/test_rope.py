"""RoPE equals the direct complex-number formula on adjacent pairs."""

from __future__ import annotations

import torch

from neobert_tasks.model.rope import apply_rotary, rotary_cos_sin
from tests.model.reference import rope_complex


def test_rotary_equals_the_direct_formula():
    length, heads, head_dim = 37, 3, 16
    x = torch.randn(length, heads, head_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    cos, sin = rotary_cos_sin(torch.arange(length), head_dim)
    # cos and sin are fp32 (as in the reference code): an angle of 36 rad is off by ~2e-6, so a value of
    # magnitude 3 by ~1e-5 against the float64 formula; more than that would be a wrong rotation.
    torch.testing.assert_close(apply_rotary(x, cos, sin).double(), rope_complex(x), atol=2e-5, rtol=1e-6)


def test_rotary_pair_by_pair_against_explicit_angles():
    head_dim, position = 8, 5
    x = torch.randn(1, 1, head_dim)
    cos, sin = rotary_cos_sin(torch.tensor([position]), head_dim)
    rotated = apply_rotary(x, cos, sin)[0, 0]
    for pair in range(head_dim // 2):
        angle = torch.tensor(position * 10000.0 ** (-2 * pair / head_dim))
        a, b = x[0, 0, 2 * pair], x[0, 0, 2 * pair + 1]
        assert torch.allclose(rotated[2 * pair], a * angle.cos() - b * angle.sin(), atol=1e-6)
        assert torch.allclose(rotated[2 * pair + 1], a * angle.sin() + b * angle.cos(), atol=1e-6)


def test_rotary_keeps_bf16_input_dtype_and_relative_positions():
    x = torch.randn(10, 2, 8)
    cos, sin = rotary_cos_sin(torch.arange(10), 8)
    assert apply_rotary(x.bfloat16(), cos, sin).dtype == torch.bfloat16
    # q·k depends only on the distance between positions.
    q, k = torch.randn(8), torch.randn(8)
    cos, sin = rotary_cos_sin(torch.arange(20), 8)
    rq = apply_rotary(q.expand(20, 1, 8), cos, sin)[:, 0]
    rk = apply_rotary(k.expand(20, 1, 8), cos, sin)[:, 0]
    assert torch.allclose(rq[3] @ rk[1], rq[15] @ rk[13], atol=1e-5)
