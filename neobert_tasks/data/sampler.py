"""Length-grouped sampling, which cuts padding when batches are padded dynamically.

Examples are shuffled, then cut into mega-batches of many batches; each mega-batch is sorted by length so
that consecutive batches hold examples of similar length. The mega-batch holding the longest example goes
first, so a configuration that runs out of memory fails at the first step rather than hours in.

`TrainingSampler` is what the datamodules train with: it shards the grouped (or plainly shuffled) order
over DDP ranks itself, without shuffling again (that would undo the grouping), and can restart an epoch
in the middle, after the batches a resumed checkpoint already trained on. `LengthSortedEvalSampler`
orders evaluation and prediction by length for the tasks whose outputs are keyed by example index.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DistributedSampler, Sampler

from neobert_tasks.lightning_private import UnrepeatedDistributedSampler


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
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0
        self.mega_batch_multiplier, self.num_replicas = mega_batch_multiplier, num_replicas

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
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
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


def rank_shard(order: list, total: int, rank: int, num_replicas: int) -> list:
    """This rank's share of ``order`` as ``DistributedSampler(shuffle=False)`` deals it: ``order`` is
    lengthened to ``total`` items by repeating its start, then every ``num_replicas``-th item from
    ``rank`` is taken (so that every rank gets ``total / num_replicas``)."""
    if order and total > len(order):
        order = order + (order * math.ceil(total / len(order)))[: total - len(order)]
    return order[rank:total:num_replicas]


class MidEpochResume:
    """Lets a sampler restart its epoch after the batches a resumed checkpoint already trained on.

    Lightning restores its loop counters but not a sampler's position; the datamodule passes the position
    to `resume_at`, and the next iteration over that epoch skips `batches_to_skip()` batches.
    """

    epoch: int
    # (epoch, batches already trained in it on this rank), applied once by the next iteration.
    resume_position: tuple[int, int] | None = None

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Make the next iteration over ``epoch`` start after its first ``batches_done`` batches."""
        self.resume_position = (epoch, batches_done)

    def batches_to_skip(self) -> int:
        """Batches of the current epoch to skip in this iteration (once), from `resume_at`."""
        position, self.resume_position = self.resume_position, None
        return position[1] if position is not None and position[0] == self.epoch else 0


class TrainingSampler(MidEpochResume, DistributedSampler):
    """The training order of one process: shuffled or length-grouped, sharded over ranks, resumable.

    The order of epoch ``e`` depends only on ``seed + e``, so a resumed run can rebuild it and skip the
    batches it already trained on (`resume_at`). It shards like ``DistributedSampler(shuffle=False)``
    (the order is padded to a multiple of ``num_replicas`` by repeating its start, then strided), and it
    *is* a ``DistributedSampler``, so Lightning neither wraps it again nor re-shuffles the grouped order;
    ``set_epoch``, which Lightning calls every epoch, reaches the order as well.

    Args:
        lengths: number of tokens of each example, indexed like the dataset.
        batch_size: examples per batch on one device.
        seed: base seed; epoch ``e`` uses ``seed + e``.
        group_by_length: order by length inside mega-batches (`LengthGroupedSampler`) or shuffle plainly.
        mega_batch_multiplier: batches per length-sorted mega-batch.
        num_replicas: number of processes the order is sharded over.
        rank: this process's index among them.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        group_by_length: bool = True,
        mega_batch_multiplier: int = 50,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(range(len(lengths)), num_replicas=num_replicas, rank=rank, shuffle=False, seed=seed)
        self.batch_size = batch_size
        self.grouped = (
            LengthGroupedSampler(lengths, batch_size, seed, mega_batch_multiplier, num_replicas)
            if group_by_length
            else None
        )

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if self.grouped is not None:
            self.grouped.set_epoch(epoch)

    def global_order(self) -> list[int]:
        """The order of the current epoch over all ranks, before sharding."""
        if self.grouped is not None:
            return list(self.grouped)
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(len(self.dataset), generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        shard = rank_shard(self.global_order(), self.total_size, self.rank, self.num_replicas)
        return iter(shard[self.batches_to_skip() * self.batch_size :])


class LengthSortedEvalSampler(UnrepeatedDistributedSampler):
    """Evaluation order longest first, so each batch pads to examples of about its own length.

    In dataset order a batch pads every example to its longest one; sorted, batches carry little padding,
    and prediction is faster (`python -m bench.predict` measures both; bench/README.md has past figures).
    The longest batch comes first, so memory runs out at once if it is going to.
    Only for tasks whose outputs carry their example's index (metrics do not depend on order, predictions
    are written back by index). Under DDP rank `r` takes every `num_replicas`-th example of the sorted
    order from position `r`: ranks get similar lengths and the split is scored exactly once, unpadded.
    """

    def __init__(self, lengths: Sequence[int], num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(range(len(lengths)), num_replicas=num_replicas, rank=rank, shuffle=False)
        # Stable sort: examples of equal length keep their dataset order.
        self.order = sorted(range(len(lengths)), key=lambda index: -lengths[index])

    def __iter__(self) -> Iterator[int]:
        return iter(self.order[self.rank :: self.num_replicas])
