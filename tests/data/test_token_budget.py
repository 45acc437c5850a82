"""Token-budget batching: `TokenBudgetSampler` on its own, and `max_tokens` through a datamodule."""

from __future__ import annotations

import random
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from neobert_tasks.data import DataError, GLUEDataModule, TokenBudgetSampler
from neobert_tasks.data.collator import padded_length
from neobert_tasks.data.loaders import resolved_max_tokens
from neobert_tasks.data.token_budget import ColumnBatchCollator, token_budget_batch_sizes


def random_lengths(count: int, seed: int = 0, low: int = 3, high: int = 60) -> list[int]:
    generator = random.Random(seed)
    return [generator.randint(low, high) for _ in range(count)]


def padded_tokens(batch: list[int], lengths: list[int], multiple: int | None) -> int:
    return len(batch) * max(padded_length(lengths[index], multiple) for index in batch)


# --------------------------------------------------------------------------------------------------------
# The sampler alone.


def test_batch_sizes_fill_the_budget_greedily():
    assert token_budget_batch_sizes([10, 10, 9, 5, 5, 5, 2], 20) == [2, 2, 3]
    # Padded to multiples of 8: 10 → 16, so one example per 20 tokens; 5 → 8, two per batch.
    assert token_budget_batch_sizes([10, 10, 5, 5, 5], 20, pad_to_multiple_of=8) == [1, 1, 2, 1]
    assert token_budget_batch_sizes([50, 4, 4], 20) == [1, 2]  # too long for the budget: a batch alone
    assert token_budget_batch_sizes([], 20) == []


@pytest.mark.parametrize("multiple", [None, 8])
def test_every_example_once_and_every_batch_within_budget(multiple):
    lengths = random_lengths(500)
    sampler = TokenBudgetSampler(lengths, max_tokens=256, seed=1, pad_to_multiple_of=multiple)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(index for batch in batches for index in batch) == list(range(500))
    assert all(padded_tokens(batch, lengths, multiple) <= 256 for batch in batches)
    # Sorted packing leaves little padding: the budget is mostly real tokens.
    padding = sum(padded_tokens(batch, lengths, 1) - sum(lengths[i] for i in batch) for batch in batches)
    assert padding / sum(padded_tokens(batch, lengths, 1) for batch in batches) < 0.05


def test_same_batch_count_every_epoch_but_new_batches():
    lengths = random_lengths(400, low=5, high=25)  # about 20 examples per length: ties to break
    sampler = TokenBudgetSampler(lengths, max_tokens=200, seed=3)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        epochs.append(list(sampler))
    assert len({len(batches) for batches in epochs}) == 1
    assert epochs[0] != epochs[1] != epochs[2]
    # Not only the order: which examples share a batch changes too.
    assert {tuple(sorted(batch)) for batch in epochs[0]} != {tuple(sorted(batch)) for batch in epochs[1]}
    sampler.set_epoch(1)
    assert list(sampler) == epochs[1]  # seed + epoch alone decides
    assert list(TokenBudgetSampler(lengths, 200, seed=4)) != epochs[0]


def test_the_batch_of_the_longest_examples_comes_first():
    lengths = random_lengths(300, seed=5)
    for epoch in range(3):
        sampler = TokenBudgetSampler(lengths, max_tokens=300, seed=0)
        sampler.set_epoch(epoch)
        first = next(iter(sampler))
        assert max(lengths[index] for index in first) == max(lengths)


@pytest.mark.parametrize("num_replicas", [2, 3])
def test_ranks_get_equal_batch_counts_and_cover_the_epoch(num_replicas):
    lengths = random_lengths(301, seed=2)
    shards = [
        list(TokenBudgetSampler(lengths, 128, seed=7, num_replicas=num_replicas, rank=rank))
        for rank in range(num_replicas)
    ]
    counts = {len(shard) for shard in shards}
    single = TokenBudgetSampler(lengths, 128, seed=7)
    assert counts == {len(TokenBudgetSampler(lengths, 128, num_replicas=num_replicas))}
    assert counts == {-(-len(single) // num_replicas)}
    seen = Counter(index for shard in shards for batch in shard for index in batch)
    assert set(seen) == set(range(301))
    # Only the batches repeated to even out the ranks' counts are seen twice (as DistributedSampler does).
    repeated = num_replicas * counts.pop() - len(single)
    assert sum(seen.values()) - 301 == sum(len(batch) for batch in list(single)[:repeated])
    # Each rank's first batch is one of the longest batches, so memory runs out at the first step if at all.
    longest_first = [max(lengths[index] for index in shard[0]) for shard in shards]
    assert max(longest_first) == max(lengths) and min(longest_first) >= sorted(lengths)[-30]


def test_resume_skips_the_batches_already_trained():
    lengths = random_lengths(200)
    sampler = TokenBudgetSampler(lengths, 150, seed=1, num_replicas=2, rank=1)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.resume_at(epoch=2, batches_done=4)
    assert list(sampler) == full[4:]
    assert list(sampler) == full  # applied once
    sampler.resume_at(epoch=1, batches_done=4)  # another epoch's position does not apply
    assert list(sampler) == full


def test_batches_are_made_at_the_first_next_not_at_iter():
    # A DataLoader with batch_size=None calls iter() on the sampler itself, and Lightning builds a resumed
    # epoch's iterator before calling set_epoch: the epoch must be read when the first batch is drawn.
    lengths = random_lengths(200, low=5, high=25)
    sampler = TokenBudgetSampler(lengths, 150, seed=1)
    sampler.set_epoch(1)
    expected = list(sampler)
    sampler.set_epoch(0)
    iterator = iter(sampler)
    sampler.set_epoch(1)
    sampler.resume_at(epoch=1, batches_done=2)
    assert list(iterator) == expected[2:]


def test_invalid_budget():
    with pytest.raises(ValueError, match="max_tokens must be positive"):
        TokenBudgetSampler([3, 4], 0)


def test_column_batch_collator_hands_rows_to_the_row_collator():
    rows = ColumnBatchCollator(lambda rows: rows)({"input_ids": [[1, 2], [3]], "labels": [0, 1]})
    assert rows == [{"input_ids": [1, 2], "labels": 0}, {"input_ids": [3], "labels": 1}]


# --------------------------------------------------------------------------------------------------------
# Through a datamodule (tiny tokenizer and data: nothing outside the repository).


@pytest.fixture
def cola_dir(write_split, sentences):
    """A tiny CoLA copy: 120 training sentences of 2 to 18 words, 12 validation ones."""
    write_split("validation", sentence=sentences(12), label=[row % 2 for row in range(12)])
    path = write_split("train", sentence=sentences(120), label=[row % 2 for row in range(120)])
    return path.parent


def cola(cola_dir, tokenizer: str, cache: str, **overrides) -> GLUEDataModule:
    datamodule = GLUEDataModule(
        "cola", tokenizer=tokenizer, data_dir=str(cola_dir), cache_dir=cache, **overrides
    )
    datamodule.setup("fit")
    return datamodule


def test_datamodule_batches_by_token_budget(cola_dir, tiny_tokenizer_dir, datasets_cache):
    datamodule = cola(cola_dir, tiny_tokenizer_dir, datasets_cache, max_tokens=96, batch_size=4)
    loader = datamodule.train_dataloader()
    assert isinstance(loader.sampler, TokenBudgetSampler) and loader.batch_size is None
    batches = list(loader)
    assert len(batches) == len(loader) == len(loader.sampler)
    assert all(batch["input_ids"].numel() <= 96 for batch in batches)
    assert all(batch["input_ids"].shape[1] % 8 == 0 for batch in batches)
    assert sum(batch["labels"].numel() for batch in batches) == 120
    # Short sentences share a batch with more than batch_size others: batch_size does not cap the budget.
    assert max(batch["input_ids"].shape[0] for batch in batches) > 4
    for batch in batches:
        assert batch["attention_mask"].sum().item() == (batch["input_ids"] != 0).sum().item()


def test_auto_budget_holds_batch_size_examples_on_average(cola_dir, tiny_tokenizer_dir, datasets_cache):
    datamodule = cola(cola_dir, tiny_tokenizer_dir, datasets_cache, max_tokens="auto", batch_size=8)
    lengths = datamodule.sequence_lengths("train")
    padded = [padded_length(length, 8) for length in lengths]
    assert resolved_max_tokens("auto", lengths, 8, 8) == max(
        round(8 * sum(padded) / len(padded)), max(padded)
    )
    batches = len(datamodule.train_dataloader())
    assert 120 / 8 <= batches <= 1.5 * 120 / 8


def test_distributed_ranks_share_the_epoch(cola_dir, tiny_tokenizer_dir, datasets_cache):
    datamodule = cola(cola_dir, tiny_tokenizer_dir, datasets_cache, max_tokens=64)
    counts, labels = set(), 0
    for rank in range(2):
        datamodule.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": rank})
        loader = datamodule.train_dataloader()
        # A DistributedSampler, so Lightning neither wraps it again nor replaces it.
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
        assert (loader.sampler.num_replicas, loader.sampler.rank) == (2, rank)
        counts.add(len(loader))
        labels += sum(batch["labels"].numel() for batch in loader)
    assert len(counts) == 1 and labels >= 120


def test_datamodule_resumes_mid_epoch(cola_dir, tiny_tokenizer_dir, datasets_cache):
    datamodule = cola(cola_dir, tiny_tokenizer_dir, datasets_cache, max_tokens=64)
    full = [batch["input_ids"] for batch in datamodule.train_dataloader()]
    datamodule.load_state_dict({"train_epoch": 0, "train_batches_done": 3})
    resumed = [batch["input_ids"] for batch in datamodule.train_dataloader()]
    assert len(resumed) == len(full) - 3
    assert all(torch.equal(left, right) for left, right in zip(resumed, full[3:], strict=True))


def test_examples_longer_than_the_budget_are_trained_alone(cola_dir, tiny_tokenizer_dir, datasets_cache):
    datamodule = cola(cola_dir, tiny_tokenizer_dir, datasets_cache, max_tokens=16)
    too_long = r"training examples have more tokens than data.init_args.max_tokens \(16\)"
    with pytest.warns(UserWarning, match=too_long):
        batches = list(datamodule.train_dataloader())
    assert sum(batch["labels"].numel() for batch in batches) == 120
    assert all(batch["input_ids"].shape[0] == 1 for batch in batches if batch["input_ids"].shape[1] > 16)


@pytest.mark.parametrize("value", [0, -5, "many"])
def test_invalid_max_tokens_is_named(value):
    with pytest.raises(DataError, match=r"data.init_args.max_tokens must be auto, null or a positive token"):
        GLUEDataModule("cola", tokenizer="tokenizer-not-loaded", max_tokens=value)


def test_a_resume_that_sets_an_option_left_unset_is_warned_of(recwarn):
    """Options saved as None (max_tokens, seed) were passed over once the training-data fingerprint, which
    may be None, was compared."""
    from neobert_tasks.data.loaders import warn_if_batching_changed  # noqa: PLC0415

    before = {"batch_size": 8, "max_tokens": None, "group_by_length": True, "seed": None, "processes": 1}
    saved = {"train_epoch": 0, "train_batches_done": 3, "batching": {**before, "training_data": None}}
    warn_if_batching_changed(saved, {**before, "max_tokens": 4096, "training_data": "12:ab"})
    messages = [str(warning.message) for warning in recwarn]
    assert len(messages) == 1 and "data.init_args.max_tokens 4096 instead of None" in messages[0]
    assert "training data" not in messages[0]  # unknown before: not said to differ
