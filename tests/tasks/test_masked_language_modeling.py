"""Masking statistics and the masked-positions-only loss of the MLM task."""

from __future__ import annotations

import pytest
import torch

from neobert_tasks.tasks.masked_language_modeling import IGNORE_INDEX, MaskedLanguageModelingTask, mask_tokens
from tests.conftest import tiny_config_kwargs

SPECIAL = torch.tensor([0, 100, 101, 102, 103])  # [PAD] [UNK] [CLS] [SEP] [MASK] of bert-base-uncased
MASK_ID, VOCAB = 103, 30522


def random_batch(rows: int = 64, length: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of [CLS] words [SEP] then padding, with random lengths."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1000, VOCAB, (rows, length), generator=generator)
    lengths = torch.randint(length // 2, length + 1, (rows,), generator=generator)
    attention_mask = (torch.arange(length)[None] < lengths[:, None]).long()
    input_ids[:, 0] = 101
    input_ids[torch.arange(rows), lengths - 1] = 102
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    return input_ids, attention_mask


def test_masking_rate_and_never_special_or_padding():
    input_ids, attention_mask = random_batch()
    generator = torch.Generator().manual_seed(1)
    corrupted, labels = mask_tokens(
        input_ids, attention_mask, SPECIAL, MASK_ID, VOCAB, 0.2, generator=generator
    )
    selected = labels != IGNORE_INDEX
    eligible = attention_mask.bool() & ~torch.isin(input_ids, SPECIAL)
    assert not (selected & ~eligible).any()  # never special tokens or padding
    assert selected.sum() / eligible.sum() == pytest.approx(0.2, abs=0.01)
    assert (corrupted[selected] == MASK_ID).all()  # NeoBERT: every selected token becomes [MASK]
    assert torch.equal(corrupted[~selected], input_ids[~selected])
    assert torch.equal(labels[selected], input_ids[selected])


def test_bert_80_10_10_proportions():
    input_ids, attention_mask = random_batch(rows=128)
    generator = torch.Generator().manual_seed(2)
    corrupted, labels = mask_tokens(
        input_ids, attention_mask, SPECIAL, MASK_ID, VOCAB, 0.15, 0.8, 0.1, generator=generator
    )
    selected = labels != IGNORE_INDEX
    masked = (corrupted[selected] == MASK_ID).float().mean()
    kept = (corrupted[selected] == input_ids[selected]).float().mean()
    replaced = 1 - masked - kept  # a random token equal to the original counts as kept (1 in 30522)
    assert masked == pytest.approx(0.8, abs=0.02)
    assert kept == pytest.approx(0.1, abs=0.015)
    assert replaced == pytest.approx(0.1, abs=0.015)


def tiny_task(**overrides) -> MaskedLanguageModelingTask:
    kwargs = dict(
        pretrained=None,
        model_config=tiny_config_kwargs(),
        mask_token_id=MASK_ID,
        special_token_ids=SPECIAL.tolist(),
        vocab_size=VOCAB,
    )
    return MaskedLanguageModelingTask(**{**kwargs, **overrides})


def test_loss_only_on_masked_positions_equals_full_cross_entropy():
    torch.manual_seed(0)
    task = tiny_task().eval()
    input_ids, attention_mask = random_batch(rows=4, length=32)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    generator = torch.Generator().manual_seed(3)
    loss, logits, targets = task.mlm_loss(batch, generator)
    inputs, labels = task.masked_batch(batch, torch.Generator().manual_seed(3))
    full = task.model(**inputs, labels=labels)  # the head's full forward: every position, -100 ignored
    assert logits.shape == (int((labels != IGNORE_INDEX).sum()), VOCAB)
    torch.testing.assert_close(loss, full.loss, rtol=1e-5, atol=1e-6)


def test_validation_masks_are_fixed_and_metrics_are_token_weighted():
    torch.manual_seed(0)
    task = tiny_task().eval()
    input_ids, attention_mask = random_batch(rows=4, length=32)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    inputs, labels = task.evaluation_masked_batch(batch)
    again = task.evaluation_masked_batch(batch)
    assert torch.equal(labels, again[1]) and torch.equal(inputs["input_ids"], again[0]["input_ids"])
    logits, targets = task.masked_logits(inputs, labels)
    loss = torch.nn.functional.cross_entropy(logits, targets)
    task.log = lambda *args, **kwargs: None
    task.validation_step(batch, 0)
    assert task.val_loss.compute() == pytest.approx(float(loss.detach()), rel=1e-5)


def test_an_examples_validation_masks_do_not_depend_on_its_batch():
    """Other batch sizes, padding or DDP shards put a row beside other rows: its masks stay."""
    task = tiny_task().eval()
    input_ids, attention_mask = random_batch(rows=6, length=48)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    _, labels = task.evaluation_masked_batch(batch)
    for row in range(6):
        size = int(attention_mask[row].sum())
        alone = {  # the row alone in its batch, without padding
            "input_ids": input_ids[row : row + 1, :size],
            "attention_mask": attention_mask[row : row + 1, :size],
        }
        _, labels_alone = task.evaluation_masked_batch(alone)
        assert torch.equal(labels_alone[0], labels[row, :size])
        assert (labels[row, size:] == IGNORE_INDEX).all()
    assert (labels != IGNORE_INDEX).any()
    # Another evaluation set masks the same example index elsewhere.
    assert not torch.equal(task.evaluation_masked_batch(batch, dataloader_idx=1)[1], labels)


def test_scratch_model_takes_the_tokenizer_vocabulary():
    config = {key: value for key, value in tiny_config_kwargs().items() if key != "vocab_size"}
    task = tiny_task(model_config=config, vocab_size=500)
    assert task.model.decoder.out_features == 500
