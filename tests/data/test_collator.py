"""`ModelInputCollator` builds the same tensors as `transformers.DataCollatorWithPadding`, only faster."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, DataCollatorWithPadding

from neobert_tasks.data import ModelInputCollator

KEYS = ("input_ids", "attention_mask", "labels", "example_index")
TEXTS = ["the movie was good", "bad", "the plot was boring but the actors were really fun", "i liked it"]


def rows(tokenizer, labels: list) -> list[dict]:
    encoded = tokenizer(TEXTS, truncation=True, max_length=16)
    columns = zip(encoded["input_ids"], encoded["attention_mask"], labels, strict=True)
    return [
        {
            "input_ids": ids,
            "attention_mask": mask,
            "token_type_ids": [0] * len(ids),
            "labels": y,
            "example_index": i,
        }
        for i, (ids, mask, y) in enumerate(columns)
    ]


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("pad_to_multiple_of", [None, 1, 8])
@pytest.mark.parametrize("labels", [[1, 0, 0, 1], [0.5, 4.25, 1.0, 3.0]], ids=["class", "regression"])
def test_matches_data_collator_with_padding(tiny_tokenizer_dir, padding_side, pad_to_multiple_of, labels):
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir, padding_side=padding_side)
    features = rows(tokenizer, labels)
    ours = ModelInputCollator(tokenizer, pad_to_multiple_of, KEYS)(features)
    reference = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")
    expected = reference([{key: row[key] for key in KEYS} for row in features])
    assert set(ours) == set(expected)
    for key in KEYS:
        assert ours[key].dtype == expected[key].dtype, key
        assert torch.equal(ours[key], expected[key]), key


def test_drops_keys_the_model_does_not_take(tiny_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    collator = ModelInputCollator(tokenizer, None, ("input_ids", "attention_mask"))
    batch = collator(rows(tokenizer, [0, 1, 0, 1]))
    assert set(batch) == {"input_ids", "attention_mask"}
    assert batch["input_ids"].shape == (4, max(len(ids) for ids in tokenizer(TEXTS)["input_ids"]))
