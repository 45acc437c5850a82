"""Sentence embeddings from the backbone's token states: the mean of the real tokens, or [CLS].

This is the pooling that an export's sentence-transformers ``Pooling`` module is configured to repeat
(``pooling_mode_mean_tokens`` or ``pooling_mode_cls_token``), so embeddings computed here and by
``SentenceTransformer(export)`` are the same numbers.
"""

from __future__ import annotations

import torch

from neobert_tasks.model.padding import first_token_index

POOLING_MODES = ("mean", "cls")


def pool_hidden_states(
    hidden: torch.Tensor, attention_mask: torch.Tensor | None, mode: str = "mean"
) -> torch.Tensor:
    """One vector per row of ``hidden`` ``(batch, length, hidden)``: ``(batch, hidden)``.

    Args:
        hidden: The backbone's ``last_hidden_state``.
        attention_mask: ``(batch, length)``, 1 for tokens and 0 for padding; None when nothing is padded.
        mode: ``mean`` averages the real tokens (special tokens included, as sentence-transformers does);
            ``cls`` takes each row's first real token (position 0 unless the row is padded on the left).
    """
    if mode == "cls":
        if attention_mask is not None and hidden.shape[1] > 1:
            hidden = hidden[first_token_index(attention_mask.bool())]  # (batch, 1, hidden)
        return hidden[:, 0]
    if mode != "mean":
        raise ValueError(f"Unknown pooling mode {mode!r}; choose one of {', '.join(POOLING_MODES)}.")
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (batch, length, 1)
    # At least one token per row, so that an all-padding row gives zeros instead of 0 / 0.
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
