"""Rotary position embeddings in NeoBERT's convention: adjacent pairs, computed in fp32.

NeoBERT rotates each adjacent pair of head dimensions ``(2i, 2i+1)`` of q and k by the angle
``position * theta ** (-2i / head_dim)`` (LLaMA's "complex" convention). A rotate-half kernel gives
different numbers on these weights, so it must not be swapped in.

cos/sin are computed from the positions at every forward instead of being cached in a buffer:
transformers 5.x re-creates non-persistent buffers uninitialised when it loads a model on the meta
device, which silently broke the reference implementation. The cost is one small outer product per
forward, negligible next to the attention itself.

The backbone rotates with :func:`apply_rotation`: each pair viewed as one complex number times the
complex rotation ``cos + i sin``, one kernel each way instead of the six of the explicit real formula
(a third of the time on CPU, forward and backward, with the same fp32 arithmetic and results). Under
``torch.compile`` it uses the real formula, which inductor fuses (it has no complex code generation).
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
    return apply_rotation(x, rotation_pairs(cos, sin).unsqueeze(-3))  # same angle for every head


def rotation_pairs(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``(cos, sin)`` stacked on a last dimension of 2: a complex rotation stored in reals (fp32)."""
    return torch.stack((cos, sin), dim=-1)


def apply_rotation(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs ``(2i, 2i+1)`` of the last dimension of ``x``.

    Args:
        x: ``(..., head_dim)``, any float dtype; the product runs in fp32.
        rotation: :func:`rotation_pairs` of the angles, broadcastable to ``(..., head_dim // 2, 2)``.
    """
    pairs = x.float().unflatten(-1, (-1, 2))  # (..., head_dim/2, 2)
    if torch.compiler.is_compiling():
        # Inductor generates no code for complex numbers; written out in reals, it fuses into one kernel.
        (even, odd), (cos, sin) = pairs.unbind(-1), rotation.unbind(-1)
        return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2).type_as(x)
    rotated = torch.view_as_complex(pairs) * torch.view_as_complex(rotation)
    return torch.view_as_real(rotated).flatten(-2).type_as(x)
