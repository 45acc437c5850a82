"""Semantic textual similarity (STS): how well the cosine of two sentence embeddings follows gold scores.

:func:`similarity_scores` returns the Spearman and Pearson correlations between the cosine similarity of
each pair of embeddings and the pair's gold score (0-5 for STS-B, 1-5 for SICK-R), the numbers that
sentence-transformers' ``EmbeddingSimilarityEvaluator`` reports as ``spearman_cosine`` and
``pearson_cosine``, and that the STS literature (SBERT, SimCSE, MTEB) reports as the STS score (Spearman,
the main metric).

Precision. The cosines are computed the way sentence-transformers computes them: both sides L2-normalised,
in the embeddings' own precision (float32 for a model's output; half precision is raised to float32). The
correlations are then computed in float64. Computing the cosines in float64 instead would be no more
meaningful, but it would reorder pairs whose float32 cosines are nearly equal: on random embeddings the size
of STS-B's test set, 4 trials in 50 moved Spearman by more than 1e-6 (up to 5.3e-6) from the evaluator's.
Ties (STS gold scores repeat a lot) take the average of the ranks they span, as ``scipy.stats.spearmanr``
does, which the evaluator calls.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchmetrics.functional import pearson_corrcoef


def cosine_precision(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype cosines of these embeddings are computed in: their common float type, at least float32.

    sentence-transformers raises half precision (and integer) embeddings to float32 and keeps float32 and
    float64 as they are; doing the same keeps cosines, and so rankings, identical to its evaluators'.
    """
    dtype = functools.reduce(torch.promote_types, [tensor.dtype for tensor in tensors])
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def paired_cosine(embeddings1: torch.Tensor, embeddings2: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each row of ``embeddings1`` with the same row of ``embeddings2``: ``(rows,)``.

    An all-zero row has cosine 0 with anything (normalisation divides by at least 1e-12), not NaN.
    """
    if embeddings1.ndim != 2 or embeddings1.shape != embeddings2.shape:
        raise ValueError(
            "Paired embeddings must be two 2-D tensors of the same shape, got "
            f"{tuple(embeddings1.shape)} and {tuple(embeddings2.shape)}."
        )
    dtype = cosine_precision(embeddings1, embeddings2)
    normalized1 = F.normalize(embeddings1.detach().to(dtype), p=2, dim=-1)
    normalized2 = F.normalize(embeddings2.detach().to(dtype), p=2, dim=-1)
    return (normalized1 * normalized2).sum(dim=-1)


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of a 1-D float tensor, in its dtype, equal values sharing the mean of the ranks they span
    (SciPy's ``rankdata``).

    torchmetrics' Spearman is not used: it divides its integer rank sums into float32 ranks and correlates
    those in float32 with 1e-6 added to the denominator, which came out 1e-8 to 7e-8 away from scipy's
    float64 value on STS-sized data, and it returns 0 rather than NaN for a constant input.
    """
    unique, inverse, counts = torch.unique(values, sorted=True, return_inverse=True, return_counts=True)
    # Equal values occupy the consecutive ranks start+1 .. start+count, whose mean is start + (count+1)/2.
    ends = torch.cumsum(counts, dim=0)
    mean_ranks = (ends - counts).to(values.dtype) + (counts.to(values.dtype) + 1) / 2
    return mean_ranks[inverse]


def similarity_scores(
    embeddings1: torch.Tensor, embeddings2: torch.Tensor, gold: Sequence[float]
) -> dict[str, float]:
    """Spearman and Pearson correlation of the pairs' cosine similarities with their gold scores.

    Args:
        embeddings1: ``(pairs, dim)``, the first sentence of each pair.
        embeddings2: ``(pairs, dim)``, the second sentence of each pair, same order.
        gold: one gold similarity per pair (any scale: only the order and linearity matter).

    Returns:
        ``{"spearman": ..., "pearson": ...}`` as Python floats; NaN when the cosines or the gold scores are
        all equal (the correlation is undefined), as scipy and sentence-transformers report it.
    """
    cosines = paired_cosine(embeddings1, embeddings2).cpu().to(torch.float64)
    target = torch.as_tensor(gold, dtype=torch.float64).flatten()
    if target.numel() != cosines.numel():
        raise ValueError(f"Got {cosines.numel()} embedding pairs but {target.numel()} gold scores.")
    if target.numel() < 2:
        raise ValueError(f"A correlation needs at least 2 pairs, got {target.numel()}.")
    return {
        "spearman": _pearson(average_ranks(cosines), average_ranks(target)),
        "pearson": _pearson(cosines, target),
    }


def _pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson correlation of two float64 vectors; NaN when either is constant.

    torchmetrics' Pearson is exact in float64 (within 1e-16 of scipy's); only its warning and its
    handling of a constant input are replaced, so that an undefined correlation is NaN as in scipy.
    """
    if bool((x == x[0]).all()) or bool((y == y[0]).all()):
        return float("nan")
    return float(pearson_corrcoef(x, y))
