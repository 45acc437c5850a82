"""Training batches in which no text occurs twice, for contrastive losses with in-batch negatives.

With in-batch negatives, every other row's positive (and hard negative) is a negative of each anchor. A text
that occurs in two rows of a batch (one premise with two entailments, one paragraph answering two questions,
a hard negative that is another row's positive) turns a true match into a negative: a *false negative*.
`UniqueTextBatchSampler` makes each epoch's batches so that no text occurs in two rows of one *global*
batch. Texts are compared across roles, by a hash of their token ids. Under DDP the global batch is all
ranks' batches of one step, because the loss gathers every rank's candidates.

A rank's batch pads each role to its own longest text, so its padded tokens are rows × the sum over roles
of the longest padded text of that role: what `max_tokens` bounds. A row's *cost* bounds what it adds:
roles × its longest padded text.

How an epoch's global batches are made (every rank makes the same plan from seed + epoch):
1. Cut a proposed order into global batches whose sizes are the same every epoch, because Lightning sizes
   the learning-rate schedule from the first epoch's length.
   - By count: `TrainingSampler`'s order (length-grouped by the longest text, or shuffled), cut into runs
     of `batch_size` × ranks rows.
   - By token budget: rows sorted by cost, longest first, ties broken at random (as `TokenBudgetSampler`
     does), cut greedily into batches of n rows per rank with n × the first row's cost within `max_tokens`.
   - Under DDP, the last, partial batch is filled up to a multiple of the ranks with repeated rows (from the
     order's start, or under a budget the shortest other rows that fit), so every rank's batch of a step has
     as many rows: the loss's all-gather needs that.
2. Walk the batches in order. A row that repeats a text of an earlier row of its batch is *deferred*: it
   trades places with a row of the nearest later batch, so it is trained later in the epoch. The row it
   trades with must share no text with either batch, and both batches must stay within `max_tokens`.
   Only when no later batch has one (at the epoch's end) does it trade with an earlier batch. The search
   goes at most `SEARCH_BATCHES` batches either way, so rows keep company of about their own length.
3. A row that can trade with no batch is left out of this epoch, with a warning. This happens when its text
   occurs in more rows than the epoch has batches, or when no trade fits the budget. Under DDP a repeat of
   a row that fits takes its place; under one process the batch just shrinks. Every epoch is planned anew,
   so the row is trained in other epochs.
4. Under a token budget, the longest batch goes first (memory runs out at the first step if at all) and
   the others follow in random order. Rank r takes every R-th row of each global batch, from position r.

The plan depends only on seed + epoch, so the sampler resumes mid-epoch like `TrainingSampler`
(`MidEpochResume`). Making it costs a pass over the epoch's rows in Python, per rank and epoch.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DistributedSampler

from neobert_tasks.data.collator import padded_length
from neobert_tasks.data.sampler import MidEpochResume, TrainingSampler
from neobert_tasks.data.sources import DataError
from neobert_tasks.data.token_budget import budget_batch_sizes

# How many batches away (either way) a deferred row may trade places: a length-grouped mega-batch.
SEARCH_BATCHES = 50


def row_costs(role_lengths: np.ndarray, pad_to_multiple_of: int | None) -> np.ndarray:
    """Per row, roles × its longest padded text: a bound on the padded tokens it adds to a rank's batch."""
    role_lengths = np.asarray(role_lengths, dtype=np.int64)
    return role_lengths.shape[1] * padded_length(role_lengths.max(axis=1), pad_to_multiple_of)


class UniqueTextBatchSampler(MidEpochResume, DistributedSampler):
    """Global batches without a repeated text, by row count or token budget, dealt out to the ranks.

    It *is* a ``DistributedSampler``, so Lightning neither wraps it nor replaces it under DDP, and calls its
    ``set_epoch`` every epoch. It yields this rank's batches as lists of row indices (the DataLoader is
    built with ``batch_size=None``); ``len`` is the number of steps, the same every epoch.

    Args:
        texts: per dataset row, one text id (hash) per role; equal ids mean equal texts.
        role_lengths: per dataset row, the token count of each role's text.
        batch_size: rows per rank and batch, when `max_tokens` is None.
        seed: base seed; epoch ``e`` uses ``seed + e``.
        group_by_length: without `max_tokens`, order by the longest text inside mega-batches, or shuffle.
        max_tokens: most padded tokens of one rank's batch, all roles together; None sizes by `batch_size`.
        pad_to_multiple_of: the collator's padding multiple, so that the budget counts the tokens it makes.
        mega_batch_multiplier: batches per length-sorted mega-batch (`LengthGroupedSampler`).
        num_replicas: number of processes the global batches are dealt to.
        rank: this process's index among them.
    """

    def __init__(
        self,
        texts: np.ndarray,
        role_lengths: np.ndarray,
        batch_size: int,
        seed: int = 0,
        group_by_length: bool = True,
        max_tokens: int | None = None,
        pad_to_multiple_of: int | None = None,
        mega_batch_multiplier: int = 50,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}.")
        rows = len(texts)
        if rows < num_replicas:
            raise DataError(f"The training split has {rows} rows, fewer than the {num_replicas} ranks.")
        super().__init__(range(rows), num_replicas=num_replicas, rank=rank, shuffle=False, seed=seed)
        # A text repeated inside one row (an anchor equal to its positive) is no duplicate between rows.
        self.texts = [tuple(set(row)) for row in np.asarray(texts).tolist()]
        self.padded = padded_length(np.asarray(role_lengths, dtype=np.int64), pad_to_multiple_of)
        self.costs = row_costs(role_lengths, pad_to_multiple_of)
        self.max_tokens = max_tokens
        self.left_out = 0  # rows that the last plan left out of its epoch
        if max_tokens is None:
            longest = self.padded.max(axis=1).tolist()
            self.proposal = TrainingSampler(
                longest, batch_size, seed, group_by_length, mega_batch_multiplier, num_replicas, rank=0
            )
            global_size = batch_size * num_replicas
            self.sizes = [global_size] * (rows // global_size)
            if rows % global_size:
                self.sizes.append(math.ceil(rows % global_size / num_replicas) * num_replicas)
        else:
            self.sizes = budget_batch_sizes(np.sort(self.costs)[::-1], max_tokens, num_replicas)

    def __len__(self) -> int:
        return len(self.sizes)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if self.max_tokens is None:
            self.proposal.set_epoch(epoch)

    def global_order(self, generator: torch.Generator) -> list[int]:
        """The epoch's proposed order of rows, before it is cut into batches."""
        if self.max_tokens is None:
            return self.proposal.global_order()
        tie_break = torch.randperm(len(self.costs), generator=generator).numpy()
        return np.lexsort((tie_break, -self.costs)).tolist()  # lexsort: the last key is the primary one

    def global_batches(self) -> list[list[int]]:
        """The epoch's global batches, in training order, with no text twice in one batch."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = self.global_order(generator)
        batches = [batch.tolist() for batch in np.split(np.asarray(order), np.cumsum(self.sizes)[:-1])]
        self._fill_last_batch(batches, order)
        self._remove_duplicates(batches, order)
        self.left_out = len(self.costs) - len(set().union(*batches))
        if self.left_out:
            rank_zero_warn(
                f"{self.left_out} training rows repeat a text of every batch they could join in epoch"
                f" {self.epoch} and are left out of it (other epochs train them)."
            )
        if self.max_tokens is not None and len(batches) > 1:
            rest = torch.randperm(len(batches) - 1, generator=generator).tolist()
            batches = batches[:1] + [batches[1 + position] for position in rest]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        # A generator, so that the plan is made at the first `next`: Lightning builds a resumed epoch's
        # iterator before it calls `set_epoch` (as for `TokenBudgetSampler`).
        for batch in self.global_batches()[self.batches_to_skip() :]:
            yield batch[self.rank :: self.num_replicas]

    # ----------------------------------------------------------------------------------------------------
    # Making the plan.

    def _tokens(self, role_maxima: np.ndarray, size: int) -> np.ndarray:
        """Padded tokens of a rank's batch with these per-role longest texts (last axis) in a global batch
        of `size` rows; 0 when each rank has one row, which is allowed whatever its length."""
        per_rank = size // self.num_replicas
        return role_maxima.sum(axis=-1) * per_rank * (per_rank > 1)

    def _fits(self, rows: list[int], size: int, candidates: list[int]) -> np.ndarray:
        """For each of `candidates`, whether adding it to `rows` keeps a global batch of `size` rows within
        budget."""
        if self.max_tokens is None:
            return np.ones(len(candidates), dtype=bool)
        maxima = self.padded[rows].max(axis=0) if rows else np.zeros(self.padded.shape[1], np.int64)
        return self._tokens(np.maximum(self.padded[candidates], maxima), size) <= self.max_tokens

    def _fill_last_batch(self, batches: list[list[int]], order: list[int]) -> None:
        """Repeat rows into the last batch up to its planned size (a multiple of the ranks): from the order's
        start, or under a budget the shortest other rows that keep it within budget."""
        last, size = batches[-1], self.sizes[-1]
        used = set(last)
        candidates = order if self.max_tokens is None else order[len(order) - len(last) - 1 :: -1]
        for row in candidates:
            if len(last) == size:
                break
            if row not in used and self._fits(last, size, [row])[0]:
                last.append(row)
        if len(last) < size:  # too few rows fit its budget; the ranks' batches must stay equal
            self._drop_rows(batches, len(batches) - 1, [])

    def _remove_duplicates(self, batches: list[list[int]], order: list[int]) -> None:
        """Walk the batches in order and move each row that repeats a text of its batch elsewhere (steps 2
        and 3 of the module's description)."""
        for index, batch in enumerate(batches):
            kept: set[int] = set()
            kept_rows, deferred, dropped = [], [], []
            for position, row in enumerate(batch):
                if kept.isdisjoint(self.texts[row]):
                    kept.update(self.texts[row])
                    kept_rows.append(row)
                else:
                    deferred.append(position)
            for position in deferred:
                row = batch[position]
                trade = self._trade(batches, index, row, kept, kept_rows)
                if trade is not None:
                    other, other_position = trade
                    batch[position], batches[other][other_position] = batches[other][other_position], row
                elif (
                    self.num_replicas > 1
                    and (repeat := self._repeat(order, batch, kept, kept_rows)) is not None
                ):
                    batch[position] = repeat
                else:
                    dropped.append(position)
                    continue
                kept.update(self.texts[batch[position]])
                kept_rows.append(batch[position])
            if dropped:
                self._drop_rows(batches, index, dropped)

    def _trade(
        self, batches: list[list[int]], index: int, row: int, kept: set[int], kept_rows: list[int]
    ) -> tuple[int, int] | None:
        """(batch, position) of the nearest row that can trade places with `row` of batch `index`: later
        batches first, then earlier ones; None when no batch within `SEARCH_BATCHES` has one."""
        later = range(index + 1, min(len(batches), index + 1 + SEARCH_BATCHES))
        earlier = range(index - 1, max(-1, index - 1 - SEARCH_BATCHES), -1)
        for other in (*later, *earlier):
            members = batches[other]
            counts = Counter(text for member in members for text in self.texts[member])
            clashes = [text for text in self.texts[row] if counts[text]]
            fits_there = self._fits_in_place_of(row, members)
            fits_here = self._fits(kept_rows, len(batches[index]), members)
            for position, member in enumerate(members):
                # `row` may clash only with the member it replaces, which must fit in batch `index`.
                if (
                    fits_there[position]
                    and fits_here[position]
                    and kept.isdisjoint(self.texts[member])
                    and all(counts[text] == 1 and text in self.texts[member] for text in clashes)
                ):
                    return other, position
        return None

    def _fits_in_place_of(self, row: int, members: list[int]) -> np.ndarray:
        """For each member of a batch, whether the batch stays within budget with `row` in its place."""
        if self.max_tokens is None:
            return np.ones(len(members), dtype=bool)
        lengths = self.padded[members]  # (members, roles)
        top = lengths.max(axis=0)
        second = np.where(lengths < top, lengths, 0).max(axis=0)
        # Without a member, a role's longest text is the second longest if that member alone had the longest.
        alone = (lengths == top) & ((lengths == top).sum(axis=0) == 1)
        without = np.where(alone, second, top)
        return self._tokens(np.maximum(without, self.padded[row]), len(members)) <= self.max_tokens

    def _repeat(self, order: list[int], batch: list[int], kept: set[int], kept_rows: list[int]) -> int | None:
        """A row of the epoch sharing no text with the batch and keeping it within budget, to repeat in it."""
        for row in order:
            if kept.isdisjoint(self.texts[row]) and self._fits(kept_rows, len(batch), [row])[0]:
                return row
        return None

    def _drop_rows(self, batches: list[list[int]], index: int, positions: list[int]) -> None:
        """Remove rows from batch `index`, then (under DDP) trim it to a multiple of the ranks."""
        dropped = set(positions)
        batch = [row for position, row in enumerate(batches[index]) if position not in dropped]
        batch = batch[: len(batch) - len(batch) % self.num_replicas]
        if not batch:
            raise DataError(
                f"The training split has too few distinct texts (or rows within max_tokens) to give each of"
                f" the {self.num_replicas} ranks a row in every step without a text twice in one step."
            )
        batches[index] = batch
