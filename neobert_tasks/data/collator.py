"""Dynamic padding of tokenized rows into the tensors a task's model takes: model inputs, and word windows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from neobert_tasks.data.keys import ATTENTION_MASK, EXAMPLE_INDEX, INPUT_IDS, LABELS, WORD_IDS
from neobert_tasks.data.token_alignment import IGNORE_INDEX, NO_WORD


def padded_length(length: int, multiple: int | None) -> int:
    """``length`` rounded up to a multiple of ``multiple`` (a collator's ``pad_to_multiple_of``;
    None pads to ``length`` itself); works on numpy arrays of lengths too."""
    multiple = multiple or 1
    return -(-length // multiple) * multiple


class ModelInputCollator:
    """Pads a batch's `input_ids` and `attention_mask` to its longest row and stacks the other model keys.

    Written here rather than `transformers.DataCollatorWithPadding` because the rows are already tokenized
    and checked: `tokenizer.pad` re-validates every row in Python, about 1 ms per batch of 32, a few
    percent of a small model's training step, for the same tensors.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        pad_to_multiple_of: int | None,
        keys: Sequence[str],
        pad_values: Mapping[str, int] | None = None,
    ) -> None:
        self.keys = tuple(keys)
        # Keys padded per row, with their padding value (`pad_values` adds a task's per-token keys); the
        # other keys hold one value per row and are stacked.
        self.pad_values = {"input_ids": tokenizer.pad_token_id, "attention_mask": 0, **(pad_values or {})}
        self.pad_on_left = tokenizer.padding_side == "left"
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {}
        for key in self.keys:
            if key in features[0]:
                values = [row[key] for row in features]
                padded = key in self.pad_values
                batch[key] = self.pad(values, self.pad_values[key]) if padded else torch.tensor(values)
        return batch

    def pad(self, rows: list[Sequence[int]], value: int) -> torch.Tensor:
        """``(batch, longest)`` int64 tensor of ``rows`` padded with ``value`` on the tokenizer's side."""
        longest = padded_length(max(len(row) for row in rows), self.pad_to_multiple_of)
        padded = np.full((len(rows), longest), value, dtype=np.int64)
        for position, row in enumerate(rows):
            if self.pad_on_left:
                padded[position, longest - len(row) :] = row
            else:
                padded[position, : len(row)] = row
        return torch.from_numpy(padded)


# Keys of a batch of windows (`model_input_keys`), in this order.
WINDOW_KEYS = (INPUT_IDS, ATTENTION_MASK, LABELS, WORD_IDS, EXAMPLE_INDEX)


class TokenClassificationCollator(ModelInputCollator):
    """Pads windows to the longest of the batch, rounded up to a multiple of `pad_to_multiple_of`.

    `input_ids` are padded with the pad token, `attention_mask` with 0, `labels` with -100 and `word_ids`
    with -1, so padding is neither trained on nor scored; `example_index` is one number per window.
    """

    def __init__(
        self, pad_token_id: int, pad_to_multiple_of: int | None, padding_side: str = "right"
    ) -> None:
        # All that `ModelInputCollator` reads of a tokenizer.
        padding = SimpleNamespace(pad_token_id=pad_token_id, padding_side=padding_side)
        super().__init__(padding, pad_to_multiple_of, WINDOW_KEYS, {LABELS: IGNORE_INDEX, WORD_IDS: NO_WORD})
