"""Shared LightningDataModule: split bookkeeping and the one tokenize pipeline every task goes through.

`TokenizedDataModule` declares the options all datamodules share (once, with their docstrings; subclasses
take them through `**kwargs`, LightningCLI lists them under the subclass), knows which splits a stage
needs, and tokenizes each raw split once, cached by `datasets` for other ranks and later runs:

    limit rows -> skip (or refuse) empty texts -> check columns and labels -> tokenize (`Dataset.map`)

A subclass says where the raw splits come from, how to check one and how to encode a batch of rows (the
abstract members), and may use the declared hooks: `example_indexing` (how a tokenized row knows its
example: tasks that cut an example into windows set it in their encoder), `map_kwargs`, `after_tokenize`,
`make_collator` and, to predict a raw text file, `load_predict_file`. Batching, sampling, token budgets,
DDP sharding and mid-epoch resume are free functions in `loaders.py`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Literal

import datasets
import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from transformers import PreTrainedTokenizerBase

from neobert_tasks.data.checks import require_splits, skip_empty_texts, without_unusable_index
from neobert_tasks.data.collator import ModelInputCollator
from neobert_tasks.data.keys import EXAMPLE_BATCH_KEYS, EXAMPLE_INDEX, SOURCE_INDEX_COLUMN
from neobert_tasks.data.loaders import MaxTokens, SplitLoaders, check_max_tokens
from neobert_tasks.data.sources import DataError
from neobert_tasks.data.splits import PREDICT_SPLIT, SplitBookkeeping
from neobert_tasks.data.tokenizer import load_tokenizer

# What `empty_texts` may say about rows with an empty or null text.
EMPTY_TEXT_POLICIES = ("skip", "error")

EncodeFunction = Callable[..., dict[str, list]]
ExampleIndexing = Literal["row", "encoder", "none"]


def encode_with_index(
    batch: dict[str, list], indices: list[int], *, encode: EncodeFunction, keep_index: bool
) -> dict[str, list]:
    """Run a task's encode function; for eval splits also keep each row's `EXAMPLE_INDEX`: the one given to
    it when rows were skipped, else the dataset's own index column, else the row number."""
    encoded = encode(batch)
    if keep_index and EXAMPLE_INDEX not in encoded:
        encoded[EXAMPLE_INDEX] = batch.get(EXAMPLE_INDEX, batch.get(SOURCE_INDEX_COLUMN, indices))
    return encoded


class TokenizedDataModule(SplitBookkeeping, SplitLoaders, L.LightningDataModule, ABC):
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
        predict_split: the split ``predict`` runs on (e.g. validation); None takes the test splits, else the
            validation splits. A `predict_file`, where a task has one, comes first.

    Subclasses take these through `**kwargs` (declaring again only an option whose default differs); the
    `save_hyperparameters()` call here records their own options too.
    """

    # Keys a batch carries; anything else a tokenizer or dataset adds (token_type_ids, offsets, raw text)
    # is dropped by the collator because tensors cannot be built from it or the model does not use it.
    model_input_keys: tuple[str, ...] = EXAMPLE_BATCH_KEYS
    # Evaluate and predict longest examples first (see `LengthSortedEvalSampler`): only for subclasses
    # whose task keys every output by the example's index and whose examples are one row each.
    sort_eval_by_length = False
    # Every training row goes into some batch of an epoch (a sampler that leaves rows out says false): what
    # lets an integer `trainer.limit_train_batches` tokenize only the rows its batches can reach.
    batches_take_every_row = True

    def __str__(self) -> str:
        # LightningDataModule's own calls every *_dataloader method to show their sizes, and jsonargparse
        # formats the datamodule into a debug message while it links arguments: that loaded data, and
        # trained an MLM tokenizer, before the trainer existed.
        return type(self).__name__

    def __init__(
        self,
        tokenizer: str,
        max_length: int = 512,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        group_by_length: bool = True,
        pad_to_multiple_of: int = 8,
        seed: int = 42,
        limit_train_samples: int | None = None,
        limit_eval_samples: int | None = None,
        cache_dir: str | None = None,
        empty_texts: Literal["skip", "error"] = "skip",
        max_tokens: MaxTokens = None,
        predict_split: str | None = None,
    ) -> None:
        super().__init__()
        sizes = {"max_length": max_length, "batch_size": batch_size, "eval_batch_size": eval_batch_size}
        sizes |= {"limit_train_samples": limit_train_samples, "limit_eval_samples": limit_eval_samples}
        for name, value in sizes.items():
            if value is not None and value < 1:  # None: the option's default (all rows, batch_size)
                raise DataError(f"data.init_args.{name} must be a positive integer, got {value}.")
        check_max_tokens(max_tokens)
        if empty_texts not in EMPTY_TEXT_POLICIES:
            raise DataError(
                f"empty_texts must be one of {', '.join(EMPTY_TEXT_POLICIES)}, got {empty_texts!r}."
            )
        self.tokenizer_name_or_path = tokenizer
        self.max_length, self.max_tokens, self.empty_texts = max_length, max_tokens, empty_texts
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers, self.group_by_length = num_workers, group_by_length
        self.pad_to_multiple_of, self.seed = pad_to_multiple_of, seed
        self.limit_train_samples, self.limit_eval_samples = limit_train_samples, limit_eval_samples
        self.cache_dir, self.predict_split = cache_dir, predict_split
        self.datasets: dict[str, datasets.Dataset] = {}  # tokenized splits, by name
        self._skip_warnings: set[str] = set()  # each skipped-rows warning is said once (prepare_data, setup)
        self.raw_examples: dict[str, datasets.Dataset] = {}  # their raw rows (eval splits), as tokenized
        # Evaluated splits that limit_eval_samples cut: name -> (rows kept, rows the split has).
        self.evaluation_cuts: dict[str, tuple[int, int]] = {}
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._collator: Callable | None = None
        self._resume_position: tuple[int, int] | None = None  # (epoch, batches done) of a resumed run
        # Splits that were asked for but found missing when data was loaded; split name lists drop them.
        self._missing_splits: set[str] = set()
        # Every option with its value, defaults included, the subclasses' too: Lightning collects the
        # arguments of each `__init__` on the stack (their `**kwargs` too), so subclasses need not call it.
        self.save_hyperparameters()

    # ----------------------------------------------------------------------------------------------------
    # Pieces a task provides.

    @abstractmethod
    def check_split(self, split_name: str, dataset: datasets.Dataset, origin: str) -> None:
        """Raise `DataError` when a raw split lacks a column or has invalid labels."""

    @abstractmethod
    def encode_function(self, split_name: str, dataset: datasets.Dataset) -> EncodeFunction:
        """A picklable function (e.g. a `functools.partial` of a module-level function) turning a batch of raw
        rows into `input_ids`, `attention_mask` and, when labelled, `labels`; with `example_indexing`
        "encoder" it also takes the rows' numbers (`with_indices`). It is hashed by `datasets` to find
        cached results, so it must not capture the datamodule itself (its state is not stable)."""

    # ----------------------------------------------------------------------------------------------------
    # Hooks of the tokenize pipeline, with the defaults of one tokenized row per example.

    def empty_text_columns(self) -> Sequence[str]:
        """Columns whose empty or null values `empty_texts` skips or refuses; none unless a task says."""
        return ()

    def example_indexing(self, split_name: str) -> ExampleIndexing:
        """How a tokenized row of `split_name` knows its example (`EXAMPLE_INDEX`): "row" (one row per
        example; the pipeline adds the index to evaluation rows), "encoder" (the encode function takes the
        row numbers and sets it on each window it cuts), or "none" (rows are not examples: packed text)."""
        return "row"

    def map_kwargs(self, split_name: str) -> dict[str, Any]:
        """Extra `Dataset.map` arguments for tokenizing `split_name` (e.g. a batch size)."""
        return {}

    def after_tokenize(self, split_name: str, tokenized: datasets.Dataset) -> datasets.Dataset:
        """The tokenized split as kept; a task may add columns computed from the whole split here."""
        return tokenized

    def load_predict_file(self) -> datasets.Dataset:
        """The rows of `predict_file`, ready for the pipeline (for subclasses that offer `predict_file`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot predict a raw text file.")

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
        """Pads a list of tokenized rows into a batch of tensors (`make_collator`'s, made on first use)."""
        if self._collator is None:
            self._collator = self.make_collator()
        return self._collator

    def make_collator(self) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
        """The collator of `model_input_keys`; a task whose batches hold more than that pads them its way."""
        return ModelInputCollator(self.tokenizer, self.pad_to_multiple_of, self.model_input_keys)

    def window_tokenizer(
        self, missing: str, stride_name: str, stride: int, pair: bool
    ) -> PreTrainedTokenizerBase:
        """The tokenizer of a task that cuts inputs into windows overlapping by `stride` tokens: a fast one
        (a slow one lacks what `missing` names), leaving more than `stride` tokens of each window besides
        the special tokens (of one text, or of a `pair`)."""
        tokenizer = self.tokenizer
        if not tokenizer.is_fast:
            raise DataError(f"Tokenizer '{self.tokenizer_name_or_path}' is not a fast tokenizer ({missing}).")
        special_tokens = tokenizer.num_special_tokens_to_add(pair=pair)
        if stride >= self.max_length - special_tokens:
            raise DataError(
                f"{stride_name} ({stride}) must be below max_length ({self.max_length}) minus the"
                f" {special_tokens} special tokens of each window."
            )
        return tokenizer

    # ----------------------------------------------------------------------------------------------------
    # Loading and tokenizing.

    def _predicting_from_file(self, stage: str | None) -> bool:
        return self.predict_file is not None and stage == "predict"

    def prepare_data(self) -> None:
        """Tokenize the splits of the stage once (rank 0 only), filling the datasets cache for `setup`; to
        predict a `predict_file`, just that file (no split is needed)."""
        stage = self.trainer.state.fn if self.trainer is not None else None
        if self._predicting_from_file(stage):
            self._process_predict_file()
            return
        wanted = self.present_splits(self._stage_requirements(stage)[0])  # those `stage` uses (setup checks)
        raw, origins = self._load(wanted) if wanted else ({}, {})
        for name in raw:
            self._process_split(name, raw[name], origins[name])

    def setup(self, stage: str | None = None) -> None:
        """Load the splits `stage` needs; tokenization hits the cache written by `prepare_data`."""
        if self._predicting_from_file(stage):
            self.datasets[PREDICT_SPLIT] = self._process_predict_file()
            return
        wanted, required, any_of = self._stage_requirements(stage)
        raw, origins = self._load(wanted)
        require_splits(list(raw), required, self.data_source, any_of=any_of)
        if stage == "fit" and not self.split_names_for("fit"):  # none configured, or none exists
            rank_zero_warn(f"No validation split in {self.data_source}; training runs without validation.")
        elif stage == "fit" and (missing := [n for n in self.configured_validation_splits if n not in raw]):
            # Others validate (evaluation sets, MNLI's other split): a misspelt name would pass unnoticed.
            rank_zero_warn(
                f"No validation split '{missing[0]}' in {self.data_source}; validation runs on"
                f" {', '.join(self.split_names_for('fit'))} only."
            )
        used = [name for name in raw if stage != "predict" or name in self.predict_split_names]
        for name in used:
            self.datasets[name] = self._process_split(name, raw[name], origins[name])

    def _process_predict_file(self) -> datasets.Dataset:
        origin = f"predict file '{self.predict_file}'"
        return self._process_split(PREDICT_SPLIT, self.load_predict_file(), origin)

    def _process_split(self, name: str, dataset: datasets.Dataset, origin: str) -> datasets.Dataset:
        """Limit, check and tokenize one raw split (the `map` result is cached under the datasets cache)."""
        # Predicted (data.predict_split), the training split is an evaluated one: every row, with its index.
        is_train = name == self.train_split_name and getattr(self.trainer, "predicting", False) is False
        indexing = self.example_indexing(name)
        # A predict file is predicted whole: it is what the user asked for, not a split to sample.
        limit = self.limit_train_samples if is_train else self.limit_eval_samples
        if is_train and limit is None:
            limit = self.rows_for_batch_limit(indexing)
        rows = None if isinstance(dataset, datasets.IterableDataset) else len(dataset)
        dataset = self._limited(dataset, None if name == PREDICT_SPLIT else limit)
        if not is_train and rows is not None and len(dataset) < rows:
            self.evaluation_cuts[name] = (len(dataset), rows)
        keep_row_numbers = not is_train and indexing == "row"
        if keep_row_numbers and not isinstance(dataset, datasets.IterableDataset):
            dataset = without_unusable_index(dataset, origin, self._skip_warnings)
        columns = self.empty_text_columns()
        dataset = skip_empty_texts(
            dataset, columns, self.empty_texts, name, origin, keep_row_numbers, warned=self._skip_warnings
        )
        self.check_split(name, dataset, origin)
        if not is_train:
            self.raw_examples[name] = dataset
        encode = self.encode_function(name, dataset)
        options: dict[str, Any] = {"function": encode, "with_indices": indexing == "encoder"}
        if indexing == "row":
            fn_kwargs = {"encode": encode, "keep_index": not is_train}
            options = {"function": encode_with_index, "with_indices": True, "fn_kwargs": fn_kwargs}
        if not isinstance(dataset, datasets.IterableDataset):
            options["desc"] = f"Tokenizing {name}"
        # A stream's columns are known once its first row is read.
        columns = dataset.column_names or list(next(iter(dataset)).keys())
        tokenized = dataset.map(batched=True, remove_columns=columns, **options, **self.map_kwargs(name))
        return self.after_tokenize(name, tokenized)

    def rows_for_batch_limit(self, indexing: ExampleIndexing) -> int | None:
        """With an integer ``trainer.limit_train_batches`` N, the first N × batch_size × devices training
        rows, the most an epoch takes; None where rows and batches do not match: packed text, token budgets,
        or a task that may leave rows out of its batches (`batches_take_every_row` false)."""
        limit = getattr(self.trainer, "limit_train_batches", None)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            return None  # a fraction (1.0: everything) or no trainer
        if indexing == "none" or self.max_tokens is not None or not self.batches_take_every_row:
            return None
        rows = limit * self.batch_size * self.trainer.world_size
        rank_zero_info(f"trainer.limit_train_batches is {limit}: the first {rows} training rows are used.")
        return rows

    @staticmethod
    def _limited(dataset: datasets.Dataset, limit: int | None) -> datasets.Dataset:
        """The first `limit` rows (all when None): eval order stays stable, and `select` gets a deterministic
        fingerprint, so tokenization stays cached."""
        if limit is None:
            return dataset
        if isinstance(dataset, datasets.IterableDataset):
            return dataset.take(limit)
        return dataset.select(range(limit)) if limit < len(dataset) else dataset
