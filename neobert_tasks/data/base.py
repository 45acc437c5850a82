"""Shared LightningDataModule for tasks whose examples are tokenized once and padded per batch.

`TokenizedDataModule` owns what every task has in common: loading the tokenizer, tokenizing splits with
`datasets.Dataset.map` (cached on disk, so other ranks and later runs reuse the result), dynamic padding to
each batch's longest example, length-grouped training batches (or batches sized by a token budget,
`max_tokens`), and eval/predict dataloaders whose batches carry `example_index` so predictions can be written
back in dataset order. Under DDP the eval/predict dataloaders shard each split without padding it, so every
example is scored exactly once and metrics match a single-process run.

A subclass says where the raw splits come from, which splits exist, how to check a split (columns, labels)
and how to encode a batch of rows; see the abstract methods below.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import datasets
import lightning as L
import numpy as np
import pyarrow.compute as pc
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from neobert_tasks.data.checks import empty_text_rows, require_splits
from neobert_tasks.data.collator import ModelInputCollator, padded_length
from neobert_tasks.data.keys import EXAMPLE_BATCH_KEYS, EXAMPLE_INDEX, SOURCE_INDEX_COLUMN
from neobert_tasks.data.sampler import LengthSortedEvalSampler, TrainingSampler
from neobert_tasks.data.sources import DataError, MissingDataError
from neobert_tasks.data.token_budget import ColumnBatchCollator, TokenBudgetSampler

# A hub id is "name" or "owner/name"; anything else that does not exist on disk is a mistyped path.
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

# What `empty_texts` may say about rows with an empty or null text.
EMPTY_TEXT_POLICIES = ("skip", "error")

EncodeFunction = Callable[[dict[str, list]], dict[str, list]]


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a local directory or a hub id, with a one-sentence error when neither works."""
    is_local = Path(name_or_path).expanduser().exists()
    if not is_local and not HUB_ID_PATTERN.match(name_or_path):
        raise MissingDataError(f"Tokenizer directory '{name_or_path}' does not exist.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(Path(name_or_path).expanduser()) if is_local else name_or_path
        )
    except (OSError, ValueError) as error:
        # The hub client's explanation runs over several lines; its first one says what went wrong.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        where = "from its local directory" if is_local else "(no such directory) from the Hugging Face hub"
        raise DataError(f"Could not load tokenizer '{name_or_path}' {where}: {reason}") from error
    if tokenizer.pad_token_id is None:
        raise DataError(f"Tokenizer '{name_or_path}' has no padding token, which dynamic padding needs.")
    return tokenizer


def dataset_lengths(dataset: datasets.Dataset) -> list[int]:
    """Token count of every example of a tokenized dataset, read from Arrow without decoding rows."""
    return pc.list_value_length(dataset.with_format("arrow")["input_ids"]).to_pylist()


def check_max_tokens(max_tokens: int | str | None) -> None:
    """Refuse a token budget that is neither `auto`, None nor a positive token count."""
    if max_tokens is None or max_tokens == "auto":
        return
    if isinstance(max_tokens, str) or max_tokens < 1:
        raise DataError(f"data.max_tokens must be auto, null or a positive token count, got {max_tokens!r}.")


def encode_with_index(
    batch: dict[str, list], indices: list[int], *, encode: EncodeFunction, keep_index: bool
) -> dict[str, list]:
    """Run a task's encode function; for eval splits also keep each row's `EXAMPLE_INDEX`: the one given to
    it when rows were skipped, else the dataset's own index column, else the row number."""
    encoded = encode(batch)
    if keep_index and EXAMPLE_INDEX not in encoded:
        encoded[EXAMPLE_INDEX] = batch.get(EXAMPLE_INDEX, batch.get(SOURCE_INDEX_COLUMN, indices))
    return encoded


class TokenizedDataModule(L.LightningDataModule, ABC):
    """Base datamodule: tokenizes splits once (cached), pads per batch, groups training batches by length.

    Args:
        tokenizer: tokenizer directory or hub id, loaded with `transformers.AutoTokenizer`.
        max_length: longest tokenized sequence; longer inputs are truncated.
        batch_size: training examples per batch and device.
        eval_batch_size: validation/test/predict examples per batch; defaults to `batch_size`.
        num_workers: DataLoader worker processes (0 loads in the main process).
        group_by_length: train on length-grouped batches (less padding) instead of a plain shuffle.
        pad_to_multiple_of: round each batch's padded length up to a multiple of this (8 suits tensor cores).
        seed: seed of the training order (shuffle and length grouping); epoch e uses seed + e.
        limit_train_samples: keep only the first N training examples (quick runs); None keeps all.
        limit_eval_samples: keep only the first N examples of each validation/test split; None keeps all.
        cache_dir: datasets cache directory for loaded and tokenized splits; None uses HF_DATASETS_CACHE.
        empty_texts: rows with an empty or null text: skip (drop them, with a warning) or error.
        max_tokens: size training batches by padded tokens instead of `batch_size` examples (see
            `TokenBudgetSampler`); auto sets `batch_size` × the mean padded training length; None is off.

    Subclasses implement the abstract members below, list every argument explicitly in their own
    `__init__` and docstring (LightningCLI builds the YAML keys and help from them), and call
    `self.save_hyperparameters()` at the end of `__init__`.
    """

    train_split_name = "train"
    # Keys a batch carries; anything else a tokenizer or dataset adds (token_type_ids, offsets, raw text)
    # is dropped by the collator because tensors cannot be built from it or the model does not use it.
    model_input_keys: tuple[str, ...] = EXAMPLE_BATCH_KEYS
    # Evaluate and predict longest examples first (see `LengthSortedEvalSampler`): only for subclasses
    # whose task keys every output by the example's index and whose examples are one row each.
    sort_eval_by_length = False

    def __init__(
        self,
        tokenizer: str,
        max_length: int,
        batch_size: int,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        group_by_length: bool = True,
        pad_to_multiple_of: int = 8,
        seed: int = 42,
        limit_train_samples: int | None = None,
        limit_eval_samples: int | None = None,
        cache_dir: str | None = None,
        empty_texts: Literal["skip", "error"] = "skip",
        max_tokens: int | Literal["auto"] | None = None,
    ) -> None:
        super().__init__()
        for name, value in [("max_length", max_length), ("batch_size", batch_size)]:
            if value < 1:
                raise DataError(f"{name} must be a positive integer, got {value}.")
        check_max_tokens(max_tokens)
        self.max_tokens = max_tokens
        if empty_texts not in EMPTY_TEXT_POLICIES:
            raise DataError(
                f"empty_texts must be one of {', '.join(EMPTY_TEXT_POLICIES)}, got {empty_texts!r}."
            )
        self.empty_texts = empty_texts
        self.tokenizer_name_or_path = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.group_by_length = group_by_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.seed = seed
        self._resume_position: tuple[int, int] | None = None
        self.limit_train_samples = limit_train_samples
        self.limit_eval_samples = limit_eval_samples
        self.cache_dir = cache_dir
        self.datasets: dict[str, datasets.Dataset] = {}
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._collator: ModelInputCollator | None = None
        # Splits that were asked for but found missing when data was loaded; split name lists drop them.
        self._missing_splits: set[str] = set()

    # ----------------------------------------------------------------------------------------------------
    # Pieces a task provides.

    @property
    @abstractmethod
    def data_source(self) -> str:
        """Where the raw data comes from, for error messages (a directory or a hub id)."""

    @property
    @abstractmethod
    def configured_validation_splits(self) -> list[str]:
        """Validation splits the task defines, in dataloader order, whether or not the data has them."""

    @property
    @abstractmethod
    def configured_test_splits(self) -> list[str]:
        """Test splits the task defines (may be empty), in dataloader order."""

    @abstractmethod
    def load_raw_splits(self, split_names: Sequence[str]) -> tuple[datasets.DatasetDict, dict[str, str]]:
        """Load those of `split_names` that exist; return them with a readable origin per split."""

    @abstractmethod
    def check_split(self, split_name: str, dataset: datasets.Dataset, origin: str) -> None:
        """Raise `DataError` when a raw split lacks a column or has invalid labels."""

    def empty_text_columns(self) -> Sequence[str]:
        """Columns whose empty or null values `empty_texts` skips or refuses; none unless a task says."""
        return ()

    @abstractmethod
    def encode_function(self, split_name: str, dataset: datasets.Dataset) -> EncodeFunction:
        """A picklable function (e.g. a `functools.partial` of a module-level function) turning a batch of raw
        rows into `input_ids`, `attention_mask` and, when labelled, `labels`. It is hashed by `datasets` to
        find cached results, so it must not capture the datamodule itself (its state is not stable)."""

    # ----------------------------------------------------------------------------------------------------
    # Tokenizer, collator and split bookkeeping.

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer, loaded on first use so that building the datamodule stays cheap."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_name_or_path)
        return self._tokenizer

    @property
    def collator(self) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
        """Pads a list of tokenized rows into a batch of tensors."""
        if self._collator is None:
            self._collator = ModelInputCollator(
                self.tokenizer, self.pad_to_multiple_of, self.model_input_keys
            )
        return self._collator

    @property
    def validation_split_names(self) -> list[str]:
        """Validation splits that exist, in dataloader order; known right after `__init__` for local data."""
        return self.present_splits(self.configured_validation_splits)

    @property
    def test_split_names(self) -> list[str]:
        """Test splits that exist, in dataloader order."""
        return self.present_splits(self.configured_test_splits)

    @property
    def predict_split_names(self) -> list[str]:
        """Splits predicted by `predict_dataloader`: the test splits if there are any, else validation."""
        return self.test_split_names or self.validation_split_names

    def split_names_for(self, stage: str) -> list[str]:
        """Split name of each dataloader index of `stage` (validate, test or predict), to name metrics."""
        by_stage = {
            "fit": self.validation_split_names,
            "validate": self.validation_split_names,
            "validation": self.validation_split_names,
            "test": self.test_split_names,
            "predict": self.predict_split_names,
        }
        if stage not in by_stage:
            raise ValueError(f"Unknown stage '{stage}'; expected one of {', '.join(by_stage)}.")
        return list(by_stage[stage])

    def local_split_names(self) -> set[str] | None:
        """Splits that have files, when that is cheap to know before loading (local directory), else None."""
        return None

    def present_splits(self, split_names: Sequence[str]) -> list[str]:
        """`split_names` minus those known to be absent: no local file, or not found when data was loaded."""
        local = self.local_split_names()
        return [
            name
            for name in split_names
            if name not in self._missing_splits and (local is None or name in local)
        ]

    def _load(self, split_names: Sequence[str]) -> tuple[datasets.DatasetDict, dict[str, str]]:
        """Load raw splits through the subclass and remember which of the requested ones do not exist."""
        raw, origins = self.load_raw_splits(split_names)
        self._missing_splits.update(name for name in split_names if name not in raw)
        return raw, origins

    def _all_split_names(self) -> list[str]:
        names = [self.train_split_name, *self.configured_validation_splits, *self.configured_test_splits]
        return list(dict.fromkeys(names))

    # ----------------------------------------------------------------------------------------------------
    # Loading and tokenizing.

    def prepare_data(self) -> None:
        """Tokenize every available split once (rank 0 only), filling the datasets cache for `setup`."""
        raw, origins = self._load(self._all_split_names())
        for name in raw:
            self._process_split(name, raw[name], origins[name])

    def setup(self, stage: str | None = None) -> None:
        """Load the splits `stage` needs; tokenization hits the cache written by `prepare_data`."""
        wanted, required, any_of = self._stage_requirements(stage)
        raw, origins = self._load(wanted)
        require_splits(list(raw), required, self.data_source, any_of=any_of)
        if stage == "fit" and not any(name in raw for name in self.validation_split_names):
            rank_zero_warn(f"No validation split in {self.data_source}; training runs without validation.")
        # Predict needs the test splits only, or the validation splits when there are no test splits.
        used = [name for name in raw if stage != "predict" or name in self.predict_split_names]
        for name in used:
            self.datasets[name] = self._process_split(name, raw[name], origins[name])

    def _stage_requirements(self, stage: str | None) -> tuple[list[str], list[str], bool]:
        """Splits to load for `stage`, the ones that must exist, and whether one of them is enough."""
        validation, test = self.configured_validation_splits, self.configured_test_splits
        if stage == "fit":
            return [self.train_split_name, *validation], [self.train_split_name], False
        if stage == "validate":
            return validation, validation, True
        if stage == "test":
            return test, test, True
        if stage == "predict":
            candidates = list(dict.fromkeys([*test, *validation]))
            return candidates, candidates, True
        return self._all_split_names(), [], False

    def _process_split(self, name: str, dataset: datasets.Dataset, origin: str) -> datasets.Dataset:
        """Limit, check and tokenize one raw split (the `map` result is cached under the datasets cache)."""
        is_train = name == self.train_split_name
        limit = self.limit_train_samples if is_train else self.limit_eval_samples
        if limit is not None and limit < len(dataset):
            # The first N rows keep eval order stable; `select` gets a deterministic fingerprint.
            dataset = dataset.select(range(limit))
        dataset = self.handle_empty_texts(name, dataset, origin, keep_row_numbers=not is_train)
        self.check_split(name, dataset, origin)
        return dataset.map(
            encode_with_index,
            batched=True,
            with_indices=True,
            remove_columns=dataset.column_names,
            fn_kwargs={"encode": self.encode_function(name, dataset), "keep_index": not is_train},
            desc=f"Tokenizing {name}",
        )

    def handle_empty_texts(
        self, name: str, dataset: datasets.Dataset, origin: str, keep_row_numbers: bool = False
    ) -> datasets.Dataset:
        """Drop the rows with an empty or null text (`empty_texts: skip`, with a warning giving their count)
        or raise `DataError` naming the first one (`error`); a split without any comes back unchanged.

        With `keep_row_numbers`, the rows kept get an `example_index` column (unless the data has its own
        index column) holding their row number in the file, so predictions written by index match its rows.
        """
        empty = empty_text_rows(dataset, self.empty_text_columns())
        if not empty:
            return dataset
        if self.empty_texts == "error":
            column, rows = min(empty.items(), key=lambda item: item[1][0])
            raise DataError(
                f"Row {rows[0]} of split '{name}' ({origin}) has an empty or null text in column '{column}';"
                " fix the data, or set data.init_args.empty_texts to skip to drop such rows."
            )
        bad = np.unique(np.concatenate(list(empty.values())))
        if len(bad) == len(dataset):
            raise DataError(f"Every row of split '{name}' ({origin}) has an empty or null text.")
        rank_zero_warn(
            f"Skipped {len(bad)} of {len(dataset)} rows of split '{name}' with an empty or null text in"
            f" column(s) {', '.join(sorted(empty))} ({origin}); set data.init_args.empty_texts to error to"
            " refuse them."
        )
        if keep_row_numbers and SOURCE_INDEX_COLUMN not in dataset.column_names:
            dataset = dataset.add_column(EXAMPLE_INDEX, np.arange(len(dataset)))
        # `select` with the kept row numbers gets a deterministic fingerprint, so tokenization stays cached.
        return dataset.select(np.setdiff1d(np.arange(len(dataset)), bad))

    def _dataset(self, name: str) -> datasets.Dataset:
        if name not in self.datasets:
            raise DataError(f"Split '{name}' is not loaded; call setup() for a stage that uses it first.")
        return self.datasets[name]

    # ----------------------------------------------------------------------------------------------------
    # Dataloaders.

    def sequence_lengths(self, name: str) -> list[int]:
        """Token count of every example of a tokenized split, read from Arrow without decoding rows."""
        return dataset_lengths(self._dataset(name))

    def token_budget_lengths(self, name: str) -> list[int]:
        """What each example of a split costs against `max_tokens`: its token count. Sorted longest
        first, a batch of n examples then pads to at most n × the first one's cost."""
        return self.sequence_lengths(name)

    @property
    def pin_memory(self) -> bool:
        """Page-locked batches when the trainer runs on CUDA: Lightning then copies them to the GPU without
        blocking the host (it passes ``non_blocking=True`` for CUDA)."""
        device = getattr(getattr(self.trainer, "strategy", None), "root_device", None)
        return device is not None and device.type == "cuda"

    def _loader(self, dataset: datasets.Dataset, batch_size: int | None, **kwargs: Any) -> DataLoader:
        kwargs.setdefault("collate_fn", self.collator)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """Length-grouped (or shuffled) training batches, sharded over DDP ranks, resumable mid-epoch; or
        batches sized by a token budget when `max_tokens` is set."""
        dataset = self._dataset(self.train_split_name)
        if self.max_tokens is not None:
            # The sampler yields whole batches: the loader must not batch again (batch_size=None).
            sampler = self._resumed(self.token_budget_sampler())
            return self._loader(dataset, None, sampler=sampler, collate_fn=ColumnBatchCollator(self.collator))
        return self._loader(dataset, self.batch_size, sampler=self.training_sampler(dataset))

    def training_sampler(self, dataset: datasets.Dataset) -> TrainingSampler:
        """The training order of this rank, positioned after the batches a resumed checkpoint trained on."""
        distributed = self._distributed_sampler_kwargs() or {"num_replicas": 1, "rank": 0}
        lengths = self.sequence_lengths(self.train_split_name) if self.group_by_length else [0] * len(dataset)
        sampler = TrainingSampler(
            lengths, self.batch_size, self.seed, group_by_length=self.group_by_length, **distributed
        )
        return self._resumed(sampler)

    def token_budget_sampler(self) -> TokenBudgetSampler:
        """This rank's batches of at most `max_tokens` padded tokens (`auto`: `batch_size` examples on
        average), the same number every epoch."""
        distributed = self._distributed_sampler_kwargs() or {"num_replicas": 1, "rank": 0}
        lengths = self.token_budget_lengths(self.train_split_name)
        max_tokens = self.resolved_max_tokens(lengths)
        too_long = sum(padded_length(length, self.pad_to_multiple_of) > max_tokens for length in lengths)
        if too_long:
            rank_zero_warn(
                f"{too_long} training examples have more tokens than data.max_tokens ({max_tokens});"
                " each is trained in a batch of its own."
            )
        return TokenBudgetSampler(lengths, max_tokens, self.seed, self.pad_to_multiple_of, **distributed)

    def resolved_max_tokens(self, lengths: Sequence[int]) -> int:
        """`max_tokens` as a count: `auto` is `batch_size` × the mean padded length of `lengths`, and at
        least the longest padded example, so that every example fits in a batch."""
        if self.max_tokens != "auto":
            return int(self.max_tokens)
        padded = [padded_length(length, self.pad_to_multiple_of) for length in lengths]
        return max(round(self.batch_size * float(np.mean(padded))), max(padded))

    def _resumed(self, sampler: TrainingSampler | TokenBudgetSampler) -> TrainingSampler | TokenBudgetSampler:
        """`sampler` positioned after the batches a resumed checkpoint already trained on, if any."""
        if self._resume_position is not None:
            sampler.resume_at(*self._resume_position)
            self._resume_position = None
        return sampler

    def state_dict(self) -> dict[str, Any]:
        """Where training stands in its epoch, saved in every checkpoint so a resumed run skips what it did.

        Lightning restores its loop counters but not a sampler's position (it would restart the epoch's
        data from the top); the count comes from the loop because the dataloader iterator runs a batch
        ahead of training.
        """
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return {}
        batches_done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"train_epoch": trainer.current_epoch, "train_batches_done": batches_done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "train_epoch" in state_dict:
            self._resume_position = (state_dict["train_epoch"], state_dict["train_batches_done"])

    def _distributed_sampler_kwargs(self) -> dict[str, int] | None:
        """`num_replicas` and `rank` when the trainer runs several processes (DDP), else None."""
        distributed = self.trainer.distributed_sampler_kwargs if self.trainer is not None else None
        return distributed if distributed and distributed.get("num_replicas", 1) > 1 else None

    def _eval_loader(self, dataset: datasets.Dataset) -> DataLoader:
        distributed = self._distributed_sampler_kwargs()
        if self.sort_eval_by_length:
            sampler = LengthSortedEvalSampler(dataset_lengths(dataset), **(distributed or {}))
            return self._loader(dataset, self.eval_batch_size, sampler=sampler)
        if distributed is None:
            return self._loader(dataset, self.eval_batch_size)
        # Lightning's default DistributedSampler pads the split with repeated examples so that every rank
        # gets as many; those would be scored twice. The unrepeated sampler strides the split without
        # padding (ranks may differ by one example), and the torchmetrics states and the sample-weighted
        # loss are then synced over exactly the split's examples. Lightning keeps a DistributedSampler.
        sampler = UnrepeatedDistributedSampler(dataset, shuffle=False, **distributed)
        return self._loader(dataset, self.eval_batch_size, sampler=sampler)

    def _eval_loaders(self, split_names: list[str]) -> DataLoader | list[DataLoader]:
        """One loader per split, in order; a bare loader when there is one so metric names stay unsuffixed."""
        if split_names and not self.datasets:
            raise DataError("No split is loaded; call setup() before asking for dataloaders.")
        present = [name for name in split_names if name in self.datasets]
        loaders = [self._eval_loader(self.datasets[name]) for name in present]
        return loaders[0] if len(loaders) == 1 else loaders

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """One loader per validation split (a list when there are several, e.g. MNLI matched/mismatched)."""
        return self._eval_loaders(self.validation_split_names)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """One loader per test split."""
        return self._eval_loaders(self.test_split_names)

    def predict_dataloader(self) -> DataLoader | list[DataLoader]:
        """One loader per predicted split: the test splits when present, else the validation splits."""
        present_tests = [name for name in self.test_split_names if name in self.datasets]
        return self._eval_loaders(present_tests or self.validation_split_names)
