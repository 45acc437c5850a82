"""DataLoaders of a tokenized split: training order, token budgets, evaluation order, DDP sharding, resume.

Free functions over a `datasets.Dataset` and the trainer, so that a datamodule only says which split and
which collator: every task batches the same way.

- Training: length-grouped (or shuffled) batches of `batch_size` examples (`TrainingSampler`), or batches
  of at most `max_tokens` padded tokens (`TokenBudgetSampler`); both shard over DDP ranks and can start
  part-way through an epoch, after the batches a resumed checkpoint already trained on.
- Evaluation: every example exactly once over all ranks, never padded with repeats, so metrics equal a
  single-process run; optionally longest first (`LengthSortedEvalSampler`).
- Resume: Lightning restores its loop counters but not a sampler's position (it would restart the epoch's
  data from the top), so the position is saved in the datamodule's state (`training_position`), with the
  options that decide which examples the batches already trained hold (`BATCHING_OPTIONS`, and the training
  data itself): a resume that changes them is warned that part of the epoch repeats and part is skipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Literal

import datasets
import lightning as L
import numpy as np
import pyarrow.compute as pc
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from neobert_tasks.data.collator import padded_length
from neobert_tasks.data.keys import INPUT_IDS
from neobert_tasks.data.sampler import LengthSortedEvalSampler, TrainingSampler, UnrepeatedDistributedSampler
from neobert_tasks.data.sources import DataError
from neobert_tasks.data.token_budget import ColumnBatchCollator, TokenBudgetSampler
from neobert_tasks.lightning_private import ignore_unresumable_loader_warning

Collator = Callable[[list[dict[str, Any]]], Any]
MaxTokens = int | Literal["auto"] | None
# The datamodule options that, with the number of processes, decide which examples each training batch of
# an epoch holds: skipping the batches a checkpoint trained skips the same examples only if they are equal.
BATCHING_OPTIONS = ("batch_size", "max_tokens", "group_by_length", "seed")


def dataset_lengths(dataset: datasets.Dataset) -> list[int]:
    """Token count of every example of a tokenized dataset, read from Arrow without decoding rows."""
    return pc.list_value_length(dataset.with_format("arrow")[INPUT_IDS]).to_pylist()


def check_max_tokens(max_tokens: MaxTokens) -> None:
    """Refuse a token budget that is neither `auto`, None nor a positive token count."""
    if max_tokens not in (None, "auto") and (isinstance(max_tokens, str) or max_tokens < 1):
        raise DataError(
            f"data.init_args.max_tokens must be auto, null or a positive token count, got {max_tokens!r}."
        )


def resolved_max_tokens(
    max_tokens: int | Literal["auto"], lengths: Sequence[int], batch_size: int, pad_to_multiple_of: int
) -> int:
    """`max_tokens` as a count: `auto` is `batch_size` × the mean padded length of `lengths`, and at least
    the longest padded example, so that every example fits in a batch."""
    if max_tokens != "auto":
        return int(max_tokens)
    padded = [padded_length(length, pad_to_multiple_of) for length in lengths]
    return max(round(batch_size * float(np.mean(padded))), max(padded))


def distributed_kwargs(trainer: L.Trainer | None) -> dict[str, int] | None:
    """`num_replicas` and `rank` when the trainer runs several processes (DDP), else None."""
    distributed = trainer.distributed_sampler_kwargs if trainer is not None else None
    return distributed if distributed and distributed.get("num_replicas", 1) > 1 else None


def uses_cuda(trainer: L.Trainer | None) -> bool:
    """Whether the trainer runs on CUDA: batches are then page-locked, so that Lightning copies them to the
    GPU without blocking the host (it passes ``non_blocking=True`` for CUDA)."""
    device = getattr(getattr(trainer, "strategy", None), "root_device", None)
    return device is not None and device.type == "cuda"


def make_loader(
    dataset: Any, batch_size: int | None, collate_fn: Collator, trainer: L.Trainer | None, num_workers: int,
    **kwargs: Any,
) -> DataLoader:  # fmt: skip
    """A DataLoader with the project's worker and pinning settings."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=collate_fn,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=uses_cuda(trainer),
        **kwargs,
    )


def training_position(trainer: L.Trainer | None) -> dict[str, int]:
    """Where training stands in its epoch, for the datamodule's checkpoint state ({} outside training).

    The count comes from the loop because the dataloader iterator runs a batch ahead of training.
    """
    if trainer is None or not trainer.training:
        return {}
    batches_done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    return {
        "train_epoch": trainer.current_epoch,
        "train_batches_done": batches_done,
        "train_batches_in_epoch": trainer.num_training_batches,
    }


def training_loader(
    dataset: datasets.Dataset, lengths: Sequence[int], collate_fn: Collator, trainer: L.Trainer | None,
    resume_at: tuple[int, int] | None, *, batch_size: int, max_tokens: MaxTokens, group_by_length: bool,
    seed: int, pad_to_multiple_of: int, num_workers: int,
) -> DataLoader:  # fmt: skip
    """This rank's training batches, positioned after `resume_at` (epoch, batches done) when resuming.

    `lengths` is what each example costs: its token count (summed windows for long documents); it orders
    length-grouped batches and fills token budgets.
    """
    distributed = distributed_kwargs(trainer) or {"num_replicas": 1, "rank": 0}
    if max_tokens is None:
        sampler = TrainingSampler(lengths, batch_size, seed, group_by_length=group_by_length, **distributed)
        if resume_at is not None:
            sampler.resume_at(*resume_at)
        return make_loader(dataset, batch_size, collate_fn, trainer, num_workers, sampler=sampler)
    budget = resolved_max_tokens(max_tokens, lengths, batch_size, pad_to_multiple_of)
    too_long = sum(padded_length(length, pad_to_multiple_of) > budget for length in lengths)
    if too_long:
        rank_zero_warn(
            f"{too_long} training examples have more tokens than data.init_args.max_tokens ({budget}); each"
            " is trained in a batch of its own."
        )
    budget_sampler = TokenBudgetSampler(lengths, budget, seed, pad_to_multiple_of, **distributed)
    return batch_sampler_loader(dataset, budget_sampler, collate_fn, trainer, num_workers, resume_at)


def batch_sampler_loader(
    dataset: datasets.Dataset, sampler: Any, collate_fn: Collator, trainer: L.Trainer | None,
    num_workers: int, resume_at: tuple[int, int] | None,
) -> DataLoader:  # fmt: skip
    """A loader over a sampler of whole batches (a `MidEpochResume`), positioned after `resume_at`."""
    if resume_at is not None:
        sampler.resume_at(*resume_at)
    # The sampler yields whole batches: the loader must not batch again (batch_size=None).
    return make_loader(dataset, None, ColumnBatchCollator(collate_fn), trainer, num_workers, sampler=sampler)


def evaluation_loader(
    dataset: datasets.Dataset,
    batch_size: int,
    collate_fn: Collator,
    trainer: L.Trainer | None,
    num_workers: int,
    longest_first: bool,
    name: str,
) -> DataLoader:
    """Every example of `dataset` once over all ranks, in dataset order or (`longest_first`) by length;
    `name` says which split or set it is in an error."""
    distributed = distributed_kwargs(trainer)
    if distributed is not None and 0 < len(dataset) < distributed["num_replicas"]:
        # A process without a batch would wait forever for the others' metric sync: every rank refuses.
        raise DataError(
            f"{name} has {len(dataset)} row{'s' * (len(dataset) > 1)}, fewer than the"
            f" {distributed['num_replicas']} processes that evaluate it, each of which needs at least one;"
            " add examples, or evaluate with fewer devices."
        )
    sampler = None
    if longest_first:
        sampler = LengthSortedEvalSampler(dataset_lengths(dataset), **(distributed or {}))
    elif distributed is not None:
        # Lightning's default DistributedSampler pads the split with repeated examples so that every rank
        # gets as many; those would be scored twice. The unrepeated sampler strides the split without padding
        # (ranks may differ by one example), and the torchmetrics states and the sample-weighted loss are then
        # synced over exactly the split's examples. Lightning keeps a DistributedSampler it is given.
        sampler = UnrepeatedDistributedSampler(dataset, shuffle=False, **distributed)
    return make_loader(dataset, batch_size, collate_fn, trainer, num_workers, sampler=sampler)


class SplitLoaders:
    """The dataloader hooks of `TokenizedDataModule`, over the functions above: which split, which collator
    and which lengths; `TokenizedDataModule` provides `datasets`, `collator` and the batching options."""

    trainer: L.Trainer | None
    _resume_position: tuple[int, int] | None

    def sequence_lengths(self, name: str) -> list[int]:
        """Token count of every example of a tokenized split: what length-grouped batches sort by."""
        return dataset_lengths(self._dataset(name))

    def token_budget_lengths(self, name: str) -> list[int]:
        """What each example of a split costs against `max_tokens`: its token count. Sorted longest
        first, a batch of n examples then pads to at most n × the first one's cost."""
        return self.sequence_lengths(name)

    def _loader(self, dataset: Any, batch_size: int | None, **kwargs: Any) -> DataLoader:
        collate_fn = kwargs.pop("collate_fn", self.collator)
        return make_loader(dataset, batch_size, collate_fn, self.trainer, self.num_workers, **kwargs)

    def train_dataloader(self) -> DataLoader:
        """Length-grouped (or shuffled) training batches, or batches sized by a token budget when
        `max_tokens` is set; sharded over DDP ranks and resumable mid-epoch."""
        name = self.train_split_name
        dataset = self._dataset(name)
        by_budget = self.max_tokens is not None
        if by_budget or self.group_by_length:
            lengths = self.token_budget_lengths(name) if by_budget else self.sequence_lengths(name)
        else:
            lengths = [0] * len(dataset)
        return training_loader(dataset, lengths, self.collator, self.trainer, **self.training_options())

    def training_options(self) -> dict[str, Any]:
        """The batching options of a training loader, and the resume position, which it takes once."""
        resume_at, self._resume_position = self._resume_position, None
        return dict(
            resume_at=resume_at, batch_size=self.batch_size, max_tokens=self.max_tokens,
            group_by_length=self.group_by_length, seed=self.seed, pad_to_multiple_of=self.pad_to_multiple_of,
            num_workers=self.num_workers,
        )  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """Where training stands in its epoch, saved in every checkpoint: a resumed run skips what it did."""
        position = training_position(self.trainer)
        return position and {**position, "batching": self.batching()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "train_epoch" in state_dict:
            self._resume_position = (state_dict["train_epoch"], state_dict["train_batches_done"])
            done = state_dict["train_batches_done"]
            # Only a fit trains the rest of the epoch; one that had ended resumes at the next epoch's start.
            inside = 0 < done < state_dict.get("train_batches_in_epoch", float("inf"))
            if inside and self.trainer is not None and self.trainer.state.fn == "fit":
                warn_if_batching_changed(state_dict, self.batching())
            ignore_unresumable_loader_warning()  # the position is restored: Lightning cannot see it

    def batching(self) -> dict[str, Any]:
        """The `BATCHING_OPTIONS`, the number of processes and the training data, as they are now."""
        processes = self.trainer.world_size if self.trainer is not None else 1
        options = {name: getattr(self, name) for name in BATCHING_OPTIONS}
        return {**options, "processes": processes, "training_data": self.training_data_fingerprint()}

    def training_data_fingerprint(self) -> str | None:
        """The training split's rows and their token counts in order, hashed (once per tokenized split): other
        rows, or the same in another order, batch differently. None where unknown (a stream)."""
        try:
            dataset = self._dataset(self.train_split_name)
            if self._fingerprinted[0] is not dataset:
                lengths = np.asarray(self.sequence_lengths(self.train_split_name), dtype=np.int64)
                self._fingerprinted = (
                    dataset,
                    f"{len(lengths)}:{hashlib.sha1(lengths.tobytes()).hexdigest()}",
                )
        except (DataError, TypeError, AttributeError):  # not loaded, or an IterableDataset
            return None
        return self._fingerprinted[1]

    _fingerprinted: tuple[Any, str | None] = (None, None)  # (the tokenized training split, its fingerprint)

    def _eval_loader(self, dataset: datasets.Dataset, name: str) -> DataLoader:
        return evaluation_loader(
            dataset, self.eval_batch_size, self.collator, self.trainer, self.num_workers,
            longest_first=self.sort_eval_by_length, name=f"Split '{name}'",
        )  # fmt: skip

    def _eval_loaders(self, split_names: list[str]) -> DataLoader | list[DataLoader]:
        """One loader per split, in order; a bare loader when there is one so metric names stay unsuffixed."""
        if split_names and not self.datasets:
            raise DataError("No split is loaded; call setup() before asking for dataloaders.")
        loaders = [
            self._eval_loader(self.datasets[name], name) for name in split_names if name in self.datasets
        ]
        return loaders[0] if len(loaders) == 1 else loaders

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """One loader per validation split (a list when there are several, e.g. MNLI matched/mismatched)."""
        return self._eval_loaders(self.validation_split_names)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """One loader per test split."""
        return self._eval_loaders(self.test_split_names)

    def predict_dataloader(self) -> DataLoader | list[DataLoader]:
        """One loader per predicted split: the predict file's, else the test splits, else validation."""
        if self.predict_file is not None or self.predict_split is not None:
            return self._eval_loaders(self.predict_split_names)
        present_tests = [name for name in self.test_split_names if name in self.datasets]
        return self._eval_loaders(present_tests or self.validation_split_names)


def warn_if_batching_changed(saved: dict[str, Any], batching: dict[str, Any]) -> None:
    """Warn that a mid-epoch resume skips other examples than the checkpoint trained when the batching
    options differ from those it saved (a checkpoint of an earlier version saved none: no warning)."""
    before = saved.get("batching", batching)
    unknown = (name == "training_data" and None in (before.get(name), batching[name]) for name in batching)
    changed = [
        name for name, no_fingerprint in zip(batching, unknown, strict=True)
        if name in before and before[name] != batching[name] and not no_fingerprint
    ]  # fmt: skip
    if len(changed) > 1 and "training_data" in changed:
        changed.remove("training_data")  # other batching takes other rows (limit_train_batches): said already
    if not changed:
        return
    labels = {name: f"data.init_args.{name}" for name in BATCHING_OPTIONS} | {"processes": "processes"}
    what = ", ".join(
        "other training data (other rows, or the same in another order)"
        if name == "training_data"
        else f"{labels[name]} {batching[name]} instead of {before[name]}"
        for name in changed
    )
    rank_zero_warn(
        f"Resuming in the middle of epoch {saved['train_epoch']} with {what}: the rest of the epoch skips the"
        f" first {saved['train_batches_done']} batches of the new batching, not the examples the checkpoint"
        " trained, so some are trained twice in this epoch and others not at all; resume with the"
        " checkpoint's settings to go on exactly."
    )
