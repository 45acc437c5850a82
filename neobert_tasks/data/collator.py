"""Dynamic padding of tokenized rows into the tensors a task's model takes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase


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
        self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None, keys: Sequence[str]
    ) -> None:
        self.keys = tuple(keys)
        self.pad_values = {"input_ids": tokenizer.pad_token_id, "attention_mask": 0}
        self.pad_on_left = tokenizer.padding_side == "left"
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {}
        for key in self.keys:
            if key not in features[0]:
                continue
            values = [row[key] for row in features]
            if key in self.pad_values:
                batch[key] = self.pad(values, self.pad_values[key])
            else:
                batch[key] = torch.tensor(values)
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
