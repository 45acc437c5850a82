"""An independent, deliberately plain NeoBERT forward pass written from CHECKPOINT.md's math.

It reads the official state dict directly (no module of neobert_tasks), runs one sequence at a time
with no padding, and so serves as the "reference numbers" the model classes must reproduce.
"""

from __future__ import annotations

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope_complex(x: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Rotate adjacent pairs of ``x`` (length, heads, head_dim) as complex numbers."""
    length, _, head_dim = x.shape
    frequencies = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), frequencies)  # (length, head_dim/2)
    rotation = torch.polar(torch.ones_like(angles), angles)[:, None, :]
    pairs = torch.view_as_complex(x.double().reshape(length, x.shape[1], -1, 2).contiguous())
    return torch.view_as_real(pairs * rotation).reshape(x.shape).to(x.dtype)


def reference_last_hidden_state(
    state: dict[str, torch.Tensor], input_ids: torch.Tensor, heads: int, eps: float = 1e-5
) -> torch.Tensor:
    """``(length,)`` token ids of one unpadded sequence → ``(length, hidden)``."""
    x = state["model.encoder.weight"][input_ids]
    layers = len({key.split(".")[2] for key in state if key.startswith("model.transformer_encoder.")})
    for index in range(layers):
        prefix = f"model.transformer_encoder.{index}."
        p = lambda name, prefix=prefix: state[prefix + name]  # noqa: E731
        h = rms_norm(x, p("attention_norm.weight"), eps)
        qkv = (h @ p("qkv.weight").T).reshape(len(input_ids), heads, -1)
        q, k, v = qkv.chunk(3, dim=-1)
        q, k = rope_complex(q), rope_complex(k)
        scores = torch.einsum("qhd,khd->hqk", q, k) / q.shape[-1] ** 0.5
        attended = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(len(input_ids), -1)
        x = x + attended @ p("wo.weight").T
        h = rms_norm(x, p("ffn_norm.weight"), eps)
        gate, up = (h @ p("ffn.w12.weight").T).chunk(2, dim=-1)
        x = x + (torch.nn.functional.silu(gate) * up) @ p("ffn.w3.weight").T
    return rms_norm(x, state["model.layer_norm.weight"], eps)
