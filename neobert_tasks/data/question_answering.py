"""Extractive question answering (SQuAD v1.1 and v2.0): questions over contexts cut into overlapping windows.

Rows hold `id`, `context`, `question` and `answers` (`{"text": [...], "answer_start": [...]}`, empty for an
unanswerable question in SQuAD v2.0), from a hub dataset (default `rajpurkar/squad`), local split files with
the same columns, or the official SQuAD JSON format (`<split>.json` with a top-level `data` list of articles).

Each row becomes one or more windows (features) of the pair (question, context) overlapping by `doc_stride`
tokens, with the answer's token span for training, and for evaluation `example_index` and `offset_mapping`
(`squad_windows`). Evaluation features also get `window_index` (their own row), all stored in the cached
dataset so that a cached run evaluates exactly as a fresh one. Batches carry only `window_index` of these:
post-processing looks the offsets up by it, which is cheaper than padding and moving them with every batch.
The raw rows stay available through `examples`; reading and checking them is `squad_json`'s. A `predict_file`
holds questions of one's own (`question`, `context`, optionally `id`) to answer with `predict`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from neobert_tasks.data.base import TokenizedDataModule
from neobert_tasks.data.checks import require_columns
from neobert_tasks.data.hub_or_local import HubOrLocalSource
from neobert_tasks.data.keys import (
    ATTENTION_MASK,
    END_POSITIONS,
    EXAMPLE_INDEX,
    INPUT_IDS,
    START_POSITIONS,
    WINDOW_INDEX,
)
from neobert_tasks.data.predict_text import load_text_file
from neobert_tasks.data.sources import DataError, load_local_splits
from neobert_tasks.data.splits import PREDICT_SPLIT
from neobert_tasks.data.squad_json import (
    ANSWERS_COLUMN,
    QUESTION_COLUMNS,
    check_answers,
    check_question_columns,
    check_unique_ids,
    is_official_squad_json,
    is_text,
    load_official_squad,
)
from neobert_tasks.data.squad_windows import encode_question_windows, offsets_as_arrays


class QuestionAnsweringDataModule(HubOrLocalSource, TokenizedDataModule):
    """Extractive question answering over windows of long contexts (SQuAD v1.1 by default, v2.0 with
    `version_2`).

    Args:
        dataset: hub dataset id loaded with `datasets.load_dataset`; used when `data_dir` is None.
        dataset_config: configuration (subset) name of the hub dataset, if it has several.
        data_dir: local directory with `<split>.parquet|json|jsonl` files with SQuAD's columns (`id`,
            `context`, `question`, `answers`) or official SQuAD JSON files (`<split>.json` with a top-level
            `data` list of articles); splits are train, validation and (optional, answers optional) test.
        version_2: allow unanswerable questions (SQuAD v2.0): their target is the [CLS] token and the model
            may predict no answer; otherwise every question must have an answer.
        max_length: longest window in tokens, question and special tokens included; NeoBERT takes up to
            4096, so longer windows mean fewer windows per context.
        doc_stride: tokens of context shared by consecutive windows of a long context.
        batch_size: training windows per batch and device.
        predict_file: questions for `predict` instead of a split: a .csv/.tsv/.jsonl/.json/.parquet file with
            `question` and `context` columns (`id` optional: the row number otherwise), or an official
            SQuAD JSON file.

    Batches hold `input_ids`, `attention_mask`, `start_positions` and `end_positions` (when the split has
    answers) and, for evaluation, `window_index` (the window's row in `features(split)`).
        kwargs: the options every datamodule shares, declared in `TokenizedDataModule`.
    """

    model_input_keys = (INPUT_IDS, ATTENTION_MASK, START_POSITIONS, END_POSITIONS, WINDOW_INDEX)

    def __init__(
        self,
        dataset: str | None = "rajpurkar/squad",
        dataset_config: str | None = None,
        data_dir: str | None = None,
        version_2: bool = False,
        max_length: int = 384,
        doc_stride: int = 128,
        batch_size: int = 16,
        predict_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_length=max_length, batch_size=batch_size, **kwargs)
        self.predict_file = predict_file
        self.set_data_source(dataset, dataset_config, data_dir)
        if not 0 <= doc_stride < max_length:
            raise DataError(
                f"doc_stride ({doc_stride}) must be at least 0 and below max_length ({max_length})."
            )
        self.version_2, self.doc_stride = version_2, doc_stride

    @property
    def main_metric(self) -> str:
        """Metric used to pick the best checkpoint: the official token-overlap F1."""
        return "f1"

    # ------------------------------------------------------------------------------------------------------
    # TokenizedDataModule hooks.

    def load_local_split_files(
        self, split_names: Sequence[str]
    ) -> tuple[datasets.DatasetDict, dict[str, str]]:
        """Split files with SQuAD's columns, or official SQuAD JSON files."""

        def read_official(split: str, files: list[Path]) -> datasets.Dataset | None:
            if not all(map(is_official_squad_json, files)):
                return None  # JSON lines, or a JSON array of rows
            return load_official_squad(split, files, self.cache_dir)

        return load_local_splits(self.data_dir, split_names, self.cache_dir, read_own_format=read_official)

    def load_predict_file(self) -> datasets.Dataset:
        """The predict file's questions, each with an `id` (its row number where the file has none); answers
        in the file are left out: `predict` does not score."""
        path = Path(self.predict_file).expanduser()
        if path.suffix == ".json" and path.is_file() and is_official_squad_json(path):
            questions = load_official_squad(PREDICT_SPLIT, [path], self.cache_dir)
        else:
            questions = load_text_file(self.predict_file, self.cache_dir, ("question", "context"))
        if ANSWERS_COLUMN in questions.column_names:
            questions = questions.remove_columns(ANSWERS_COLUMN)
        if "id" not in questions.column_names:
            return questions.add_column("id", [str(row) for row in range(len(questions))])
        if is_text(questions.with_format("arrow")["id"].type):
            return questions
        # Each id as str() writes it, as the splits' ids are: a cast to string kept a mixed column's JSON
        # encoding (ids 1 and "b" read as a JSON column came out as '1' and '"b"').
        features = questions.features.copy()
        features["id"] = datasets.Value("string")
        return questions.map(ids_as_text, batched=True, features=features, desc="Reading question ids")

    def empty_text_columns(self) -> Sequence[str]:
        return ("question", "context")

    def check_split(self, split_name: str, dataset: datasets.Dataset, origin: str) -> None:
        # A test split may come without answers (prediction only), a predict file has none; the others are
        # trained on or scored.
        unlabelled = (*self.configured_test_splits, PREDICT_SPLIT)
        labelled = split_name not in unlabelled or ANSWERS_COLUMN in dataset.column_names
        require_columns(dataset, [*QUESTION_COLUMNS, ANSWERS_COLUMN if labelled else None], origin)
        check_question_columns(dataset, origin)
        if split_name != self.train_split_name:  # training keys nothing by id
            check_unique_ids(dataset, origin)
        if labelled:
            check_answers(dataset, origin, self.version_2)

    def encode_function(self, split_name: str, dataset: datasets.Dataset) -> Callable[..., dict[str, list]]:
        tokenizer = self.window_tokenizer("no character offsets", "doc_stride", self.doc_stride, pair=True)
        for side in ("padding_side", "truncation_side"):
            # Answer positions and offsets count tokens from the left of each window.
            if getattr(tokenizer, side) != "right":
                raise DataError(
                    f"Tokenizer '{self.tokenizer_name_or_path}' has {side} '{getattr(tokenizer, side)}';"
                    " question answering windows need 'right'."
                )
        return functools.partial(
            encode_question_windows,
            tokenizer=tokenizer,
            max_length=self.max_length,
            doc_stride=self.doc_stride,
            labelled=ANSWERS_COLUMN in dataset.column_names,
            evaluation=split_name != self.train_split_name,
        )

    def example_indexing(self, split_name: str) -> str:
        """A question's context can become several windows: the encoder sets each one's `example_index`."""
        return "encoder"

    def after_tokenize(self, split_name: str, tokenized: datasets.Dataset) -> datasets.Dataset:
        """Evaluation windows also get their own row number (`window_index`), by which post-processing
        finds their offsets: it is known only after `map`, and `add_column` derives its fingerprint from
        the cached `map` result, so nothing here depends on state outside the datasets."""
        if split_name == self.train_split_name:
            return tokenized
        return tokenized.add_column(WINDOW_INDEX, np.arange(len(tokenized), dtype=np.int64))

    def _eval_loader(self, dataset: datasets.Dataset, name: str) -> Any:
        """The base's evaluation loader over the model input columns only: the offsets stay on disk."""
        present = [column for column in self.model_input_keys if column in dataset.column_names]
        return super()._eval_loader(dataset.select_columns(present), name)

    # ------------------------------------------------------------------------------------------------------
    # What post-processing needs.

    def features(self, split_name: str) -> datasets.Dataset:
        """The tokenized windows of an evaluated split (`example_index`, `offset_mapping`, …) by row."""
        return self._dataset(split_name)

    def has_answers(self, split_name: str) -> bool:
        """Whether a loaded split has gold answers (windows with answer positions, and a loss)."""
        return "start_positions" in self.features(split_name).column_names

    def feature_lookup(self, split_name: str, feature_indices: Sequence[int]) -> tuple[list[int], list]:
        """`example_index` and offsets (an int array of shape (tokens, 2), -1 outside the context) of the
        windows at `feature_indices`, in that order."""
        features = self.features(split_name)
        if list(feature_indices) != list(range(len(features))):
            features = features.select(feature_indices)
        table = features.with_format("arrow")
        return table[EXAMPLE_INDEX].to_pylist(), offsets_as_arrays(table["offset_mapping"])


def ids_as_text(batch: dict[str, list]) -> dict[str, list]:
    """A batch's question ids as text, nulls kept (refused by name later)."""
    return {"id": [None if value is None else str(value) for value in batch["id"]]}
