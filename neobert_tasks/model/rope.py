"""Rotary position embeddings in NeoBERT's convention: adjacent pairs, computed in fp32.

NeoBERT rotates each adjacent pair of head dimensions ``(2i, 2i+1)`` of q and k by the angle
``position * theta ** (-2i / head_dim)`` (LLaMA's "complex" convention). A rotate-half kernel gives
different numbers on these weights, so it must not be swapped in.

cos/sin are computed from the positions at every forward instead of being cached in a buffer:
transformers 5.x re-creates non-persistent buffers uninitialised when it loads a model on the meta
device, which silently broke the reference implementation. The cost is one small outer product per
forward, negligible next to the attention itself.
"""

from __future__ import annotations

import torch


def rotary_cos_sin(
    position_ids: torch.Tensor, head_dim: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles for each position and pair of dimensions, in fp32.

    Args:
        position_ids: Integer positions, any shape ``(...)``.
        head_dim: Width of one attention head (even).
        theta: Base of the angles.

    Returns:
        Two tensors of shape ``(..., head_dim // 2)``.
    """
    exponents = torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim
    inverse_frequencies = 1.0 / (theta**exponents)  # (head_dim/2,)
    angles = position_ids.to(torch.float32).unsqueeze(-1) * inverse_frequencies  # (..., head_dim/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of the last dimension of ``x``; the arithmetic runs in fp32.

    Args:
        x: Queries or keys, ``(..., heads, head_dim)``.
        cos: ``(..., head_dim // 2)``, broadcast over the heads dimension.
        sin: Same shape as ``cos``.
    """
    pairs = x.float().unflatten(-1, (-1, 2))  # (..., heads, head_dim/2, 2)
    even, odd = pairs.unbind(-1)
    cos = cos.unsqueeze(-2)  # (..., 1, head_dim/2): same angle for every head
    sin = sin.unsqueeze(-2)
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)  # (..., heads, head_dim)
