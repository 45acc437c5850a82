"""Training batches sized by a token budget instead of a sentence count.

With a fixed sentence count, a batch of long examples holds many times the tokens of a batch of short
ones: the step time swings with it, and on some CPUs bf16 matmuls slow down per token past about a
thousand tokens (`python -m bench.matmul_shapes` measures this machine). A token budget gives every batch
about the same number of padded tokens: many short examples or a few long ones. Whether that pays depends
on the machine: `python -m bench.token_budget` measures it, and bench/README.md has past figures.

How an epoch's batches are made (`TokenBudgetSampler`):
1. Sort the examples longest first, breaking ties between examples of equal length at random (seed +
   epoch). The sorted *lengths* are the same every epoch, so cutting them greedily into batches of at
   most `max_tokens` padded tokens gives the same batch sizes, and the same number of batches, every
   epoch: the learning-rate schedule, which Lightning sizes from the first epoch's length, stays right.
   Which examples share a batch still changes every epoch among examples of equal length (SST-2 and
   MNLI have hundreds to thousands per length).
2. Shuffle the order of the batches, except that the `num_replicas` longest go first, one per rank, so
   a configuration that runs out of memory fails at the first step.
3. Under DDP, repeat batches from the start until their count divides by the number of ranks (as
   `DistributedSampler` repeats examples), then deal them out round-robin: every rank runs as many
   steps, each step of about the same size on every rank.

The sampler yields whole batches (lists of indices), so the DataLoader is built with ``batch_size=None``;
it indexes the `datasets.Dataset` with each list, which returns columns, and `ColumnBatchCollator` hands
them to the task's collator as rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from neobert_tasks.data.collator import padded_length
from neobert_tasks.data.sampler import MidEpochResume, rank_shard


def token_budget_batch_sizes(
    descending_lengths: Sequence[int], max_tokens: int, pad_to_multiple_of: int | None = None
) -> list[int]:
    """Examples per batch when lengths sorted longest first are cut greedily into batches of at most
    ``max_tokens`` padded tokens (examples × the first, longest, one's padded length).

    An example longer than ``max_tokens`` on its own still gets a batch, alone.
    """
    padded = padded_length(np.asarray(descending_lengths, dtype=np.int64), pad_to_multiple_of)
    return budget_batch_sizes(padded, max_tokens, num_replicas=1)


def budget_batch_sizes(descending_costs: np.ndarray, max_tokens: int, num_replicas: int) -> list[int]:
    """Global batch sizes of costs sorted longest first, cut greedily into batches of n rows per rank with
    n × the first row's cost within `max_tokens` (a row costing more gets one row per rank); the last
    size is rounded up to a multiple of the ranks, for the caller to fill with repeated rows."""
    sizes, start = [], 0
    while start < len(descending_costs):
        per_rank = max(1, max_tokens // max(int(descending_costs[start]), 1))
        per_rank = min(per_rank, math.ceil((len(descending_costs) - start) / num_replicas))
        sizes.append(per_rank * num_replicas)
        start += per_rank * num_replicas
    return sizes


class TokenBudgetSampler(MidEpochResume, DistributedSampler):
    """Batches of at most ``max_tokens`` padded tokens, the same count every epoch, sharded over ranks.

    It *is* a ``DistributedSampler`` so that Lightning neither wraps it nor replaces it under DDP, and its
    ``set_epoch`` (called by Lightning every epoch) selects the epoch's order; ``len`` is the number of
    batches of this rank. Like `TrainingSampler`, it can resume in the middle of an epoch.

    Args:
        lengths: number of tokens of each example, indexed like the dataset.
        max_tokens: most padded tokens (examples × longest example's padded length) in one batch.
        seed: base seed; epoch ``e`` breaks length ties and orders batches with ``seed + e``.
        pad_to_multiple_of: the collator's padding multiple, so the budget counts the tokens it makes.
        num_replicas: number of processes the batches are dealt to.
        rank: this process's index among them.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        seed: int = 0,
        pad_to_multiple_of: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}.")
        super().__init__(range(len(lengths)), num_replicas=num_replicas, rank=rank, shuffle=False, seed=seed)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_sizes = token_budget_batch_sizes(
            np.sort(self.lengths)[::-1], max_tokens, pad_to_multiple_of
        )

    def __len__(self) -> int:
        return math.ceil(len(self.batch_sizes) / self.num_replicas)

    def global_batches(self) -> list[list[int]]:
        """The batches of the current epoch over all ranks, in order, before dealing them out."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        tie_break = torch.randperm(len(self.lengths), generator=generator).numpy()
        # Longest first; among equal lengths, the random tie-break order (lexsort: last key is primary).
        order = np.lexsort((tie_break, -self.lengths))
        boundaries = np.cumsum(self.batch_sizes)[:-1]
        batches = [batch.tolist() for batch in np.split(order, boundaries)] if len(order) else []
        head = min(self.num_replicas, len(batches))
        rest = torch.randperm(len(batches) - head, generator=generator).tolist()
        return batches[:head] + [batches[head + position] for position in rest]

    def __iter__(self) -> Iterator[list[int]]:
        # A generator, so the epoch's batches are made at the first `next`, not when the DataLoader's
        # iterator is built: with ``batch_size=None`` the DataLoader calls `iter` on this sampler itself,
        # and Lightning builds the iterator of a resumed epoch before it calls `set_epoch`.
        shard = rank_shard(self.global_batches(), len(self) * self.num_replicas, self.rank, self.num_replicas)
        yield from shard[self.batches_to_skip() :]


class ColumnBatchCollator:
    """Collates a batch that `datasets` returned as columns (a list of indices gets a dict of columns, see
    the module's description) by handing it to a row collator (the tasks' take a list of rows) as rows."""

    def __init__(self, collator: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]) -> None:
        self.collator = collator

    def __call__(self, columns: dict[str, list]) -> dict[str, torch.Tensor]:
        rows = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        return self.collator(rows)
