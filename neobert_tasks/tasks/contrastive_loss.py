"""InfoNCE over in-batch and hard negatives, gathered across devices, optionally over Matryoshka prefixes.

For anchors ``a_i`` and candidates ``c_j`` (every positive of the global batch, then every hard
negative), all L2-normalised:

    loss = mean_i  -log softmax_j( a_i · c_j / temperature )[positive of i]

The global batch is the concatenation of every rank's batch: a rank scores its own anchors against all
ranks' candidates, which it receives through an all-gather that carries gradients back to the rank that
encoded them. Each rank's loss is the mean over its own anchors, so the mean of the ranks' losses (what
data-parallel training averages the gradients of) equals the loss of one process holding the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F


def world() -> tuple[int, int]:
    """(rank, number of ranks) of the default process group; (0, 1) outside distributed training."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_across_ranks(embeddings: torch.Tensor, ranks: int) -> torch.Tensor:
    """Every rank's ``(batch, dim)`` rows, rank 0 first: ``(ranks × batch, dim)``; the backward pass sums the
    gradients that every rank's loss sends to a row and hands them to the rank that encoded it.

    Ranks must hold batches of the same size (`PairDataModule`'s sampler pads the last global batch so).
    """
    if ranks == 1:
        return embeddings
    return GatherWithGradient.apply(embeddings.contiguous(), ranks)


class GatherWithGradient(torch.autograd.Function):
    """A differentiable all-gather over public collectives. torch's own (``torch.distributed.nn``) is
    deprecated in favour of a private module; gloo (CPU) and NCCL both run these two."""

    @staticmethod
    def forward(ctx, embeddings: torch.Tensor, ranks: int) -> torch.Tensor:
        gathered = embeddings.new_empty((ranks * embeddings.shape[0], *embeddings.shape[1:]))
        dist.all_gather_into_tensor(gathered, embeddings)
        ctx.rows, ctx.rank = embeddings.shape[0], dist.get_rank()
        return gathered

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> tuple[torch.Tensor, None]:
        # Each rank's loss sends gradients to every rank's rows: summed over ranks, each keeps its own rows.
        summed = gradient.contiguous().clone()
        dist.all_reduce(summed)
        start = ctx.rank * ctx.rows
        return summed[start : start + ctx.rows], None


def info_nce(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    *,
    temperature: float = 0.07,
    symmetric: bool = False,
    gather: bool = True,
) -> torch.Tensor:
    """Contrastive loss of this rank's ``anchors`` (batch, dim) against all positives and hard negatives.

    Args:
        anchors: This rank's anchor embeddings, L2-normalised.
        positives: Their positives (row ``i`` belongs to anchor ``i``), L2-normalised.
        negatives: Hard negatives ``(batch × k, dim)`` (k per anchor, any order), or None for in-batch
            negatives only. They are negatives of every anchor, like the other rows' positives.
        temperature: Divides the cosine similarities; lower is sharper.
        symmetric: Also score each positive against all anchors (the anchor → positive and positive →
            anchor losses are averaged), as CLIP does.
        gather: Take the candidates of every rank (all-gather with gradients) under distributed training.
    """
    rank, ranks = world() if gather else (0, 1)
    candidates = [gather_across_ranks(positives, ranks)]
    if negatives is not None:
        candidates.append(gather_across_ranks(negatives, ranks))
    # This rank's anchor i is global row rank × batch + i, and so is its positive among the candidates.
    targets = torch.arange(anchors.shape[0], device=anchors.device) + rank * anchors.shape[0]
    # Float32 logits: a bf16 similarity of 1/0.07-scaled cosines keeps about 2 significant digits.
    logits = anchors.float() @ torch.cat(candidates).float().T / temperature  # (batch, candidates)
    loss = F.cross_entropy(logits, targets)
    if not symmetric:
        return loss
    # Each positive against every rank's anchors: (batch, ranks × batch).
    reverse = positives.float() @ gather_across_ranks(anchors, ranks).float().T / temperature
    return (loss + F.cross_entropy(reverse, targets)) / 2


def prefix(embeddings: torch.Tensor, dim: int) -> torch.Tensor:
    """The first ``dim`` coordinates of each row, L2-normalised again (a Matryoshka embedding)."""
    return F.normalize(embeddings[..., :dim], dim=-1)


def contrastive_loss(
    anchors: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor | None = None,
    *,
    matryoshka_dims: Sequence[int] | None = None,
    **info_nce_options,
) -> torch.Tensor:
    """`info_nce` of the full embeddings, or its sum over the Matryoshka prefixes ``matryoshka_dims``
    (each weighted 1, so that every prefix is trained to embed on its own)."""
    if not matryoshka_dims:
        return info_nce(anchors, positives, negatives, **info_nce_options)
    return sum(
        info_nce(
            prefix(anchors, dim),
            prefix(positives, dim),
            None if negatives is None else prefix(negatives, dim),
            **info_nce_options,
        )
        for dim in matryoshka_dims
    )
