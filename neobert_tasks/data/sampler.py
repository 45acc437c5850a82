"""Length-grouped sampling, which cuts padding when batches are padded dynamically.

Examples are shuffled, then cut into mega-batches of many batches; each mega-batch is sorted by length so
that consecutive batches hold examples of similar length. The mega-batch holding the longest example goes
first, so a configuration that runs out of memory fails at the first step rather than hours in.

The sampler yields single indices, not batches, so a `DistributedSampler` can shard it. Sharding must not
shuffle again (that would undo the grouping): wrap it with `shuffle=False`, as `TokenizedDataModule` does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch.utils.data import Sampler


class LengthGroupedSampler(Sampler[int]):
    """Shuffle indices, then order them by length inside mega-batches so batches need little padding.

    Args:
        lengths: number of tokens of each example, indexed like the dataset.
        batch_size: examples per batch on one device.
        seed: base seed; epoch `e` shuffles with `seed + e`, so every epoch differs and runs are reproducible.
        mega_batch_multiplier: batches per mega-batch; larger groups lengths better but shuffles less.
        num_replicas: number of devices the indices are strided over (DDP); mega-batches are scaled by it
            so that each global batch (one batch per device) stays inside one length-sorted mega-batch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        mega_batch_multiplier: int = 50,
        num_replicas: int = 1,
    ) -> None:
        if batch_size < 1 or mega_batch_multiplier < 1 or num_replicas < 1:
            raise ValueError(
                "batch_size, mega_batch_multiplier and num_replicas must be positive, got"
                f" {batch_size}, {mega_batch_multiplier} and {num_replicas}."
            )
        self.lengths = [int(length) for length in lengths]
        self.batch_size = batch_size
        self.seed = seed
        self.mega_batch_multiplier = mega_batch_multiplier
        self.num_replicas = num_replicas
        self.epoch = 0

    @property
    def mega_batch_size(self) -> int:
        """Number of indices sorted together."""
        return self.mega_batch_multiplier * self.batch_size * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of `epoch`; Lightning calls this at the start of every training epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        size = self.mega_batch_size
        mega_batches = [
            sorted(order[start : start + size], key=self.lengths.__getitem__, reverse=True)
            for start in range(0, len(order), size)
        ]
        if not mega_batches:
            return iter(())
        # Each mega-batch is sorted descending, so its first element is its longest example.
        longest = max(range(len(mega_batches)), key=lambda position: self.lengths[mega_batches[position][0]])
        mega_batches[0], mega_batches[longest] = mega_batches[longest], mega_batches[0]
        return (index for mega_batch in mega_batches for index in mega_batch)


def batches_of(indices: Iterable[int], batch_size: int) -> Iterator[list[int]]:
    """Cut an index stream into consecutive batches, the last one possibly shorter (as a DataLoader does)."""
    batch: list[int] = []
    for index in indices:
        batch.append(index)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def padding_fraction(
    lengths: Sequence[int],
    batch_indices_iterable: Iterable[Sequence[int]],
    pad_to_multiple_of: int | None = None,
) -> float:
    """Fraction of the token slots that are padding when each batch is padded to its longest example.

    Args:
        lengths: number of tokens of each example.
        batch_indices_iterable: the batches, each a sequence of example indices.
        pad_to_multiple_of: padded length is rounded up to a multiple of this (as the collator does).
    """
    multiple = pad_to_multiple_of or 1
    padded_slots = 0
    real_tokens = 0
    for batch in batch_indices_iterable:
        batch_lengths = [lengths[index] for index in batch]
        if not batch_lengths:
            continue
        padded_length = math.ceil(max(batch_lengths) / multiple) * multiple
        padded_slots += padded_length * len(batch_lengths)
        real_tokens += sum(batch_lengths)
    return (padded_slots - real_tokens) / padded_slots if padded_slots else 0.0
