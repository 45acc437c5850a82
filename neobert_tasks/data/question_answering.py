"""Extractive question answering (SQuAD v1.1 and v2.0): questions over contexts cut into overlapping windows.

Rows hold `id`, `context`, `question` and `answers` (`{"text": [...], "answer_start": [...]}`, empty for an
unanswerable question in SQuAD v2.0), from a hub dataset (default `rajpurkar/squad`), local split files with
the same columns, or the official SQuAD JSON format (`<split>.json` with a top-level `data` list of articles).

Each row is tokenized as the pair (question, context) with `truncation="only_second"`: a context longer than
`max_length` becomes several windows (features) that overlap by `doc_stride` tokens, each starting with the
whole question. Training features carry the answer's first and last token (`start_positions`,
`end_positions`), or 0 ([CLS]) when the answer is not fully inside the window or the question has none.
Evaluation features also keep `example_index` (the row of the split they come from), `offset_mapping`
(each token's character span in the context, (-1, -1) for question, special and padding tokens) and
`window_index` (their own row), all stored in the cached dataset so that a cached run evaluates exactly as a
fresh one. Batches carry only `window_index` of these: post-processing looks the offsets up by it, which is
cheaper than padding and moving them with every batch. The raw rows stay available through `examples`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from transformers import PreTrainedTokenizerBase

from neobert_tasks.data.base import TokenizedDataModule
from neobert_tasks.data.checks import require_columns
from neobert_tasks.data.keys import (
    ATTENTION_MASK,
    END_POSITIONS,
    EXAMPLE_INDEX,
    INPUT_IDS,
    START_POSITIONS,
    WINDOW_INDEX,
)
from neobert_tasks.data.sources import DataError, find_split_files, load_hub_splits, load_local_splits
from neobert_tasks.data.squad_json import ANSWERS_COLUMN, is_official_squad_json, load_official_squad

QUESTION_COLUMNS = ("id", "context", "question")

NO_OFFSET = (-1, -1)  # offset of a token outside the context (question, special tokens)
CONTEXT_SEQUENCE = 1  # the context is the second sequence of the (question, context) pair


def is_text(arrow_type: pa.DataType) -> bool:
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def check_answers_type(dataset: datasets.Dataset, origin: str) -> None:
    """`answers` must be a struct of two lists, `text` (strings) and `answer_start` (integers)."""
    answer_type = dataset.data.schema.field(ANSWERS_COLUMN).type
    fields = {field.name: field.type for field in answer_type} if pa.types.is_struct(answer_type) else {}
    text, start = fields.get("text"), fields.get("answer_start")
    is_list = pa.types.is_list
    text_ok = (
        text is not None and (is_list(text) or pa.types.is_large_list(text)) and is_text(text.value_type)
    )
    start_ok = start is not None and (is_list(start) or pa.types.is_large_list(start))
    if not (text_ok and start_ok and pa.types.is_integer(start.value_type)):
        raise DataError(
            f"Column '{ANSWERS_COLUMN}' of {origin} must hold {{'text': [strings], 'answer_start':"
            f" [integers]}} per row, not {dataset.features[ANSWERS_COLUMN]}."
        )


def check_answers(dataset: datasets.Dataset, origin: str, version_2: bool) -> None:
    """Every answer must be the context's text at its `answer_start`, and without `version_2` every question
    needs one; `DataError` names the question id (and, for misplaced answers, how many there are)."""
    check_answers_type(dataset, origin)
    table = dataset.with_format("arrow")
    ids, contexts = table["id"].to_pylist(), table["context"].to_pylist()
    misplaced: list[str] = []
    for question_id, context, answers in zip(ids, contexts, table[ANSWERS_COLUMN].to_pylist(), strict=True):
        texts, starts = (answers or {}).get("text") or [], (answers or {}).get("answer_start") or []
        if len(texts) != len(starts):
            raise DataError(
                f"Question '{question_id}' of {origin} has {len(texts)} answer texts but {len(starts)}"
                " answer_start values."
            )
        if not texts and not version_2:
            raise DataError(
                f"Question '{question_id}' of {origin} has no answer (unanswerable), which SQuAD v1.1 does"
                " not allow; set version_2: true for SQuAD v2.0-style data."
            )
        for text, start in zip(texts, starts, strict=True):
            if start is None or text is None or start < 0 or context[start : start + len(text)] != text:
                misplaced.append(f"'{question_id}' (answer_start {start}, text {text!r})")
    if misplaced:
        raise DataError(
            f"{len(misplaced)} answer(s) of {origin} are not the context's text at their answer_start,"
            f" e.g. question {misplaced[0]}."
        )


def check_text_columns(dataset: datasets.Dataset, origin: str) -> None:
    """Ids, contexts and questions must be strings without missing values."""
    table = dataset.with_format("arrow")
    for column in QUESTION_COLUMNS:
        if column != "id" and not is_text(table[column].type):
            raise DataError(f"Column '{column}' of {origin} must hold text, not {dataset.features[column]}.")
        missing = pc.index(pc.is_null(table[column]), True).as_py()
        if missing >= 0:
            raise DataError(f"Row {missing} of {origin} has no value (null) in column '{column}'.")


# ----------------------------------------------------------------------------------------------------------
# Tokenizing (question, context) pairs into windows.


def check_question_lengths(
    tokenizer: PreTrainedTokenizerBase, questions: list[str], ids: list, max_length: int, doc_stride: int
) -> None:
    """Raise `DataError` for a question that leaves no more than `doc_stride` tokens of context per window.

    The fast tokenizer would abort the whole process (a Rust panic, not an exception) on such a question.
    """
    lengths = [len(tokens) for tokens in tokenizer(questions, add_special_tokens=False)["input_ids"]]
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    longest = int(np.argmax(lengths)) if lengths else 0
    if lengths and room - lengths[longest] <= doc_stride:
        raise DataError(
            f"Question '{ids[longest]}' has {lengths[longest]} tokens, which leaves {room - lengths[longest]}"
            f" of max_length {max_length} for the context, not more than doc_stride {doc_stride}; raise"
            " max_length or lower doc_stride."
        )


def answer_token_span(
    offsets: Sequence[Sequence[int]], sequence_ids: Sequence[int | None], answers: dict[str, list]
) -> tuple[int, int]:
    """First and last token of the (first) answer inside one window, or (0, 0) — the [CLS] token — when the
    question has no answer or the answer is not entirely inside the window's context tokens."""
    context = [position for position, sequence in enumerate(sequence_ids) if sequence == CONTEXT_SEQUENCE]
    if not answers["text"] or not context:
        return 0, 0
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    first, last = context[0], context[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return 0, 0
    start = first
    while start <= last and offsets[start][0] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


def context_offsets(
    offsets: Sequence[Sequence[int]], sequence_ids: Sequence[int | None]
) -> list[tuple[int, int]]:
    """Each token's character span in the context; (-1, -1) for question and special tokens."""
    return [
        tuple(offset) if sequence == CONTEXT_SEQUENCE else NO_OFFSET
        for offset, sequence in zip(offsets, sequence_ids, strict=True)
    ]


def encode_question_windows(
    batch: dict[str, list],
    indices: list[int],
    *,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    doc_stride: int,
    labelled: bool,
    evaluation: bool,
) -> dict[str, list]:
    """Tokenize a batch of rows into windows with `input_ids`, `attention_mask`, when `labelled` the answer's
    `start_positions` and `end_positions`, and for `evaluation` `example_index` and `offset_mapping`."""
    # Leading spaces of some SQuAD questions only waste window room.
    questions = [question.lstrip() for question in batch["question"]]
    check_question_lengths(tokenizer, questions, batch["id"], max_length, doc_stride)
    encoded = tokenizer(
        questions,
        batch["context"],
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=False,  # NeoBERT has no segment embeddings
    )
    rows = encoded["overflow_to_sample_mapping"]
    result: dict[str, list] = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    if labelled:
        spans = [
            answer_token_span(encoded["offset_mapping"][feature], encoded.sequence_ids(feature),
                              batch[ANSWERS_COLUMN][row])
            for feature, row in enumerate(rows)
        ]  # fmt: skip
        result["start_positions"] = [start for start, _ in spans]
        result["end_positions"] = [end for _, end in spans]
    if evaluation:
        result[EXAMPLE_INDEX] = [indices[row] for row in rows]
        result["offset_mapping"] = [
            context_offsets(encoded["offset_mapping"][feature], encoded.sequence_ids(feature))
            for feature in range(len(rows))
        ]
    return result


def offsets_as_arrays(offset_column: pa.ChunkedArray | pa.Array) -> list[np.ndarray]:
    """Per feature, its offsets as an int64 array of shape (tokens, 2), read from Arrow without building a
    Python object per token (SQuAD's validation split has about four million offsets)."""
    column = offset_column.combine_chunks() if isinstance(offset_column, pa.ChunkedArray) else offset_column
    flat = pc.list_flatten(pc.list_flatten(column)).to_numpy(zero_copy_only=False).reshape(-1, 2)
    bounds = np.cumsum(pc.list_value_length(column).to_numpy(zero_copy_only=False))
    return np.split(flat, bounds[:-1])


# ----------------------------------------------------------------------------------------------------------
# The datamodule.


class QuestionAnsweringDataModule(TokenizedDataModule):
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

    Batches hold `input_ids`, `attention_mask`, `start_positions` and `end_positions` (when the split has
    answers) and, for evaluation, `window_index` (the window's row in `features(split)`).
        kwargs: the options every datamodule shares, declared in `TokenizedDataModule`.
    """

    train_split_name = "train"
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
        **kwargs: Any,
    ) -> None:
        super().__init__(max_length=max_length, batch_size=batch_size, **kwargs)
        if dataset is None and data_dir is None:
            raise DataError("Give a hub dataset id (dataset) or a local data_dir; both are None.")
        if not 0 <= doc_stride < max_length:
            raise DataError(
                f"doc_stride ({doc_stride}) must be at least 0 and below max_length ({max_length})."
            )
        self.dataset_id = dataset
        self.dataset_config = dataset_config
        self.data_dir = data_dir
        self.version_2 = version_2
        self.doc_stride = doc_stride
        self.save_hyperparameters()

    @property
    def main_metric(self) -> str:
        """Metric used to pick the best checkpoint: the official token-overlap F1."""
        return "f1"

    # ------------------------------------------------------------------------------------------------------
    # TokenizedDataModule hooks.

    @property
    def data_source(self) -> str:
        if self.data_dir is not None:
            return f"directory '{self.data_dir}'"
        config_text = f" (config '{self.dataset_config}')" if self.dataset_config else ""
        return f"hub dataset '{self.dataset_id}'{config_text}"

    @property
    def configured_validation_splits(self) -> list[str]:
        return ["validation"]

    @property
    def configured_test_splits(self) -> list[str]:
        return ["test"]

    def local_split_names(self) -> set[str] | None:
        if self.data_dir is None or not Path(self.data_dir).is_dir():
            return None
        return set(find_split_files(self.data_dir))

    def load_raw_splits(self, split_names: Sequence[str]) -> tuple[datasets.DatasetDict, dict[str, str]]:
        if self.data_dir is None:
            loaded, origins = load_hub_splits(self.dataset_id, self.dataset_config, self.cache_dir)
            wanted = [name for name in split_names if name in loaded]
            return datasets.DatasetDict({name: loaded[name] for name in wanted}), origins
        split_files = find_split_files(self.data_dir)  # MissingDataError when the directory is absent
        present = [name for name in split_names if name in split_files]
        official = [name for name in present if all(map(is_official_squad_json, split_files[name]))]
        tabular = [name for name in present if name not in official]
        loaded, origins = datasets.DatasetDict(), {}
        if tabular or not present:  # with no split file at all, a MissingDataError lists the splits found
            loaded, origins = load_local_splits(self.data_dir, tabular or split_names, self.cache_dir)
        for name in official:
            loaded[name] = load_official_squad(name, split_files[name], self.cache_dir)
            origins[name] = ", ".join(str(path) for path in split_files[name])
        return loaded, origins

    def empty_text_columns(self) -> Sequence[str]:
        return ("question", "context")

    def check_split(self, split_name: str, dataset: datasets.Dataset, origin: str) -> None:
        # A test split may come without answers (prediction only); the others are trained on or scored.
        labelled = split_name not in self.configured_test_splits or ANSWERS_COLUMN in dataset.column_names
        require_columns(dataset, [*QUESTION_COLUMNS, ANSWERS_COLUMN if labelled else None], origin)
        check_text_columns(dataset, origin)
        if labelled:
            check_answers(dataset, origin, self.version_2)

    def encode_function(self, split_name: str, dataset: datasets.Dataset) -> Callable[..., dict[str, list]]:
        tokenizer = self.tokenizer
        if not tokenizer.is_fast:
            raise DataError(
                f"Tokenizer '{self.tokenizer_name_or_path}' is not a fast tokenizer (no character offsets)."
            )
        for side in ("padding_side", "truncation_side"):
            # Answer positions and offsets count tokens from the left of each window.
            if getattr(tokenizer, side) != "right":
                raise DataError(
                    f"Tokenizer '{self.tokenizer_name_or_path}' has {side} '{getattr(tokenizer, side)}';"
                    " question answering windows need 'right'."
                )
        special_tokens = tokenizer.num_special_tokens_to_add(pair=True)
        if self.doc_stride >= self.max_length - special_tokens:
            raise DataError(
                f"doc_stride ({self.doc_stride}) must be below max_length ({self.max_length}) minus the"
                f" {special_tokens} special tokens of each window."
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

    def _eval_loader(self, dataset: datasets.Dataset) -> Any:
        """The base's evaluation loader over the model input columns only: the offsets stay on disk."""
        present = [name for name in self.model_input_keys if name in dataset.column_names]
        return super()._eval_loader(dataset.select_columns(present))

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
