"""Classification of documents longer than one model input (news articles, reports, legal texts).

Each dataset row stays one document: its `input_ids` column holds a list of windows (token id lists), so
the DataLoader batches documents, never windows, and all windows of a document land in the same batch.
`DocumentWindowCollator` flattens a batch of B documents into N >= B padded windows and records, per
window, the batch position of its document (`example_position`); the task pools the windows' logits per
document. What becomes of a document longer than `max_length` tokens is the `overflow` setting:

- `truncate`: the first `max_length` tokens (one window),
- `head_tail`: the first `head_tokens` and the last `max_length - 2 - head_tokens` tokens (one window), the
  best truncation in Sun et al. 2019, "How to Fine-Tune BERT for Text Classification?",
- `chunk`: every token, in windows of `max_length` tokens that overlap by `stride` tokens.

The windowing helpers are pure functions; `encode_documents` is the module-level `Dataset.map` function so
that `datasets` can hash it for its cache.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc
import torch
from transformers import PreTrainedTokenizerBase

from neobert_tasks.data.base import EncodeFunction
from neobert_tasks.data.collator import ModelInputCollator, padded_length
from neobert_tasks.data.keys import EXAMPLE_INDEX, EXAMPLE_POSITION
from neobert_tasks.data.labels import encode_labels
from neobert_tasks.data.sources import DataError
from neobert_tasks.data.text_classification import TextClassificationDataModule

OVERFLOW_MODES = ("truncate", "head_tail", "chunk")


def window_starts(num_tokens: int, body_length: int, stride: int) -> list[int]:
    """Start of each window of `body_length` tokens overlapping by `stride`; the last one reaches the end."""
    step = body_length - stride
    return list(range(0, max(num_tokens - body_length, 0) + step, step))


def head_tail_tokens(token_ids: list[int], body_length: int, head_tokens: int) -> list[int]:
    """The first `head_tokens` and the last `body_length - head_tokens` tokens of a longer sequence."""
    if len(token_ids) <= body_length:
        return list(token_ids)
    tail_start = len(token_ids) - (body_length - head_tokens)  # the end when there is no tail
    return list(token_ids[:head_tokens]) + list(token_ids[tail_start:])


def document_windows(
    token_ids: list[int], overflow: str, body_length: int, stride: int, head_tokens: int
) -> list[list[int]]:
    """Token windows (without special tokens) of one document under the `overflow` mode."""
    if overflow == "truncate":
        return [list(token_ids[:body_length])]
    if overflow == "head_tail":
        return [head_tail_tokens(token_ids, body_length, head_tokens)]
    starts = window_starts(len(token_ids), body_length, stride)
    return [list(token_ids[start : start + body_length]) for start in starts]


def special_token_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single text ([CLS] and [SEP] for BERT-style ones)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain) :])
    raise DataError("Cannot tell the tokenizer's special tokens apart from the text it encodes.")


def encode_documents(
    batch: dict[str, list],
    *,
    tokenizer: PreTrainedTokenizerBase,
    prefix: list[int],
    suffix: list[int],
    text_column: str,
    title_column: str | None,
    overflow: str,
    body_length: int,
    stride: int,
    head_tokens: int,
    **label_options: Any,
) -> dict[str, list]:
    """Tokenize whole documents (title first when given), cut them into windows and encode their labels
    (`label_options`: the arguments of `encode_labels`)."""
    texts = batch[text_column]
    if title_column is not None:
        # A missing or empty title leaves the text alone, a missing text the title (BERT's tokenizer reads
        # "\n\n" as nothing anyway); a row with neither was skipped or refused before.
        texts = [
            f"{title}\n\n{text or ''}" if title else text
            for title, text in zip(batch[title_column], texts, strict=True)
        ]
    # No truncation here: the windows below decide what is kept. verbose=False silences the tokenizer's
    # warning about sequences longer than its own model_max_length, which is expected for documents.
    encoded = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)
    windows = [
        document_windows(ids, overflow, body_length, stride, head_tokens) for ids in encoded["input_ids"]
    ]
    input_ids = [[prefix + window + suffix for window in document] for document in windows]
    return {"input_ids": input_ids, **encode_labels(batch, **label_options)}


class DocumentWindowCollator:
    """Flattens the windows of a batch of documents into padded `input_ids` and `attention_mask` rows.

    Adds `example_position` (batch position of each window's document), one `labels` entry per document
    and, for evaluation splits, one `example_index` per document.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        # Pads on the right whatever the tokenizer's side; the pad id is all it reads of a tokenizer.
        padding = SimpleNamespace(pad_token_id=pad_token_id, padding_side="right")
        self.padder = ModelInputCollator(padding, pad_to_multiple_of, ())

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        windows = [window for feature in features for window in feature["input_ids"]]
        input_ids = self.padder.pad(windows, self.pad_token_id)
        attention_mask = self.padder.pad([[1] * len(window) for window in windows], 0)
        example_position = [
            position for position, feature in enumerate(features) for _ in feature["input_ids"]
        ]
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            EXAMPLE_POSITION: torch.tensor(example_position, dtype=torch.long),
        }
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([feature["labels"] for feature in features])
        if EXAMPLE_INDEX in features[0]:
            batch[EXAMPLE_INDEX] = torch.tensor(
                [feature[EXAMPLE_INDEX] for feature in features], dtype=torch.long
            )
        return batch


class LongDocumentDataModule(TextClassificationDataModule):
    """Classify long documents: whole documents per batch, each cut into one or more token windows.

    Args:
        title_column: column holding a title put before the text; None for none.
        max_length: tokens per window, special tokens included (at most the model's `max_length`).
        overflow: what becomes of a longer document: truncate (head), head_tail or chunk (every token).
        stride: tokens shared by consecutive windows in chunk mode.
        head_tokens: tokens kept from the start in head_tail mode; the rest of the window is the end.
        batch_size: training documents per batch and device (a batch has one row per window).
        kwargs: the options of `TextClassificationDataModule` and those every datamodule shares
            (`TokenizedDataModule`).
    """

    sort_eval_by_length = False  # a batch pools each document's windows, which must stay together

    def __init__(
        self,
        title_column: str | None = None,
        max_length: int = 4096,
        overflow: str = "chunk",
        stride: int = 256,
        head_tokens: int = 128,
        batch_size: int = 2,
        **kwargs: Any,
    ) -> None:
        if overflow not in OVERFLOW_MODES:
            raise DataError(f"Unknown overflow '{overflow}'; expected one of {', '.join(OVERFLOW_MODES)}.")
        super().__init__(text_pair_column=None, max_length=max_length, batch_size=batch_size, **kwargs)
        self.text_column, self.title_column = self.text_columns[0], title_column
        # The title is checked like the text (strings, no missing values).
        self.text_columns = (self.text_column,) if title_column is None else (self.text_column, title_column)
        self.overflow, self.stride, self.head_tokens = overflow, stride, head_tokens

    @property
    def optional_text_columns(self) -> tuple[str, ...]:
        """With titles, the title and the text: a document is the one without the other (a headline alone)
        but not neither (`empty_text_columns`)."""
        return (self.title_column, self.text_column) if self.title_column is not None else ()

    def empty_text_columns(self) -> Sequence[str | tuple[str, ...]]:
        """The document's text, or with titles the title and text together: empty when both are."""
        return (
            ((self.text_column, self.title_column),) if self.title_column is not None else (self.text_column,)
        )

    def check_split(self, split_name: str, dataset: datasets.Dataset, origin: str) -> None:
        if self.title_column is not None and self.title_column not in dataset.column_names:
            # The config's default names a 'title' column that many document collections lack.
            raise DataError(
                f"Column '{self.title_column}' (data.init_args.title_column) is missing from {origin}; set"
                " data.init_args.title_column to null for documents without titles."
            )
        super().check_split(split_name, dataset, origin)

    @property
    def body_length(self) -> int:
        """Tokens per window without the special tokens ([CLS] and [SEP] for BERT-style tokenizers)."""
        prefix, suffix = special_token_ids(self.tokenizer)
        body = self.max_length - len(prefix) - len(suffix)
        if body < 1:
            raise DataError(f"max_length {self.max_length} leaves no room for text after the special tokens.")
        if self.overflow == "chunk" and not 0 <= self.stride < body:
            raise DataError(
                f"stride must be in [0, {body}) for windows of {body} text tokens, got {self.stride}."
            )
        if self.overflow == "head_tail" and not 0 <= self.head_tokens <= body:
            raise DataError(f"head_tokens must be in [0, {body}], got {self.head_tokens}.")
        return body

    def make_collator(self) -> DocumentWindowCollator:
        return DocumentWindowCollator(self.tokenizer.pad_token_id, self.pad_to_multiple_of)

    def encode_function(self, split_name: str, dataset: datasets.Dataset) -> EncodeFunction:
        prefix, suffix = special_token_ids(self.tokenizer)
        return functools.partial(
            encode_documents,
            tokenizer=self.tokenizer,
            prefix=prefix,
            suffix=suffix,
            text_column=self.text_column,
            title_column=self.title_column,
            overflow=self.overflow,
            body_length=self.body_length,
            stride=self.stride,
            head_tokens=self.head_tokens,
            **self.label_options(dataset, split_name),
        )

    def window_lengths(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Each document's total tokens and number of windows, read from Arrow without decoding rows."""
        column = self._dataset(name).with_format("arrow")["input_ids"]
        counts = pc.list_value_length(column).to_numpy()
        window_lengths = pc.list_value_length(pc.list_flatten(column)).to_numpy()  # all windows, in order
        # Every document has at least one window, so each reduceat segment (its windows) is non-empty.
        totals = np.add.reduceat(window_lengths, np.cumsum(counts) - counts) if counts.size else counts
        return totals, counts

    def sequence_lengths(self, name: str) -> list[int]:
        """Token count of every document (all its windows), so length grouping balances batch sizes."""
        return self.window_lengths(name)[0].tolist()

    def token_budget_lengths(self, name: str) -> list[int]:
        """A document's padded cost: its windows × its longest window, padded. A document of several
        windows has a full one (`max_length`), so sorted by this cost, a batch of n documents pads to at
        most n × the first one's cost, which the token budget relies on."""
        totals, counts = self.window_lengths(name)
        longest_window = np.where(counts > 1, self.max_length, totals)
        return (counts * padded_length(longest_window, self.pad_to_multiple_of)).tolist()
