"""Tests of the length-grouped sampler and the padding measure."""

from __future__ import annotations

import random

import pyarrow.parquet as pq
import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from transformers import AutoTokenizer

from bench.common import batches_of, padding_fraction
from neobert_tasks.data import LengthGroupedSampler, TrainingSampler
from neobert_tasks.data.sampler import LengthSortedEvalSampler


def random_lengths(count: int, seed: int = 0) -> list[int]:
    generator = random.Random(seed)
    return [generator.randint(3, 300) for _ in range(count)]


def random_order(count: int, seed: int = 0) -> list[int]:
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()


def test_every_index_exactly_once_per_epoch():
    lengths = random_lengths(1003)  # not a multiple of the batch or mega-batch size
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=3, mega_batch_multiplier=5)
    assert len(sampler) == 1003
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert sorted(sampler) == list(range(1003))


def test_epochs_differ_and_seed_is_deterministic():
    lengths = random_lengths(500)
    first = LengthGroupedSampler(lengths, batch_size=4, seed=7, mega_batch_multiplier=4)
    second = LengthGroupedSampler(lengths, batch_size=4, seed=7, mega_batch_multiplier=4)
    epoch_zero = list(first)
    assert epoch_zero == list(second)
    first.set_epoch(1)
    assert list(first) != epoch_zero
    second.set_epoch(1)
    assert list(first) == list(second)
    # Epoch e uses seed + e, so seed 8 at epoch 0 repeats seed 7 at epoch 1.
    assert list(LengthGroupedSampler(lengths, batch_size=4, seed=8, mega_batch_multiplier=4)) == list(first)
    assert list(LengthGroupedSampler(lengths, batch_size=4, seed=9, mega_batch_multiplier=4)) != epoch_zero


def test_longest_example_first_and_mega_batches_sorted():
    lengths = random_lengths(640, seed=1)
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=0, mega_batch_multiplier=10)
    order = list(sampler)
    assert lengths[order[0]] == max(lengths)
    for start in range(0, len(order), sampler.mega_batch_size):
        mega_batch_lengths = [lengths[index] for index in order[start : start + sampler.mega_batch_size]]
        assert mega_batch_lengths == sorted(mega_batch_lengths, reverse=True)


def test_invalid_arguments_and_empty_dataset():
    with pytest.raises(ValueError, match="batch_size"):
        LengthGroupedSampler([1, 2], batch_size=0)
    assert list(LengthGroupedSampler([], batch_size=4)) == []


def test_padding_fraction_by_hand():
    lengths = [2, 4, 8, 8]
    # Batch [0, 1] pads to 4 -> 2 pad of 8 slots; batch [2, 3] pads to 8 -> 0 pad of 16 slots.
    assert padding_fraction(lengths, [[0, 1], [2, 3]]) == pytest.approx(2 / 24)
    # Rounded up to a multiple of 8: [0, 1] pads to 8 -> 10 pad of 16; [2, 3] -> 0 pad of 16.
    assert padding_fraction(lengths, [[0, 1], [2, 3]], pad_to_multiple_of=8) == pytest.approx(10 / 32)
    assert padding_fraction(lengths, []) == 0.0
    assert list(batches_of(range(5), 2)) == [[0, 1], [2, 3], [4]]


def test_grouping_reduces_padding_on_random_lengths():
    lengths = random_lengths(5000, seed=2)
    grouped = padding_fraction(lengths, batches_of(LengthGroupedSampler(lengths, 16, seed=0), 16), 8)
    shuffled = padding_fraction(lengths, batches_of(random_order(len(lengths)), 16), 8)
    assert grouped < 0.05 < 0.3 < shuffled


@pytest.mark.parametrize("num_replicas", [2, 4])
def test_distributed_sharding_keeps_grouping(num_replicas):
    """Strided sharding without re-shuffling keeps batches of similar length on every rank, covers every
    example, and gives each rank what Lightning's DistributedSamplerWrapper(shuffle=False) would."""
    lengths = random_lengths(3000, seed=4)
    grouped = LengthGroupedSampler(lengths, batch_size=16, seed=0, num_replicas=num_replicas)
    seen: list[int] = []
    for rank in range(num_replicas):
        shard = list(TrainingSampler(lengths, 16, seed=0, num_replicas=num_replicas, rank=rank))
        assert shard == list(
            DistributedSamplerWrapper(grouped, num_replicas=num_replicas, rank=rank, shuffle=False)
        )
        seen.extend(shard)
        assert padding_fraction(lengths, batches_of(shard, 16), 8) < 0.05
        if rank == 0:
            assert lengths[shard[0]] == max(lengths)
    assert set(seen) == set(range(len(lengths)))


@pytest.mark.parametrize("group_by_length", [True, False])
def test_training_order_depends_on_seed_and_epoch_only(group_by_length):
    lengths = random_lengths(101)
    first = TrainingSampler(lengths, 4, seed=3, group_by_length=group_by_length, num_replicas=2, rank=1)
    second = TrainingSampler(lengths, 4, seed=3, group_by_length=group_by_length, num_replicas=2, rank=1)
    first.set_epoch(2)
    list(first)  # iterating does not advance anything: the order of an epoch is fixed
    second.set_epoch(2)
    assert list(first) == list(second) and len(first) == 51  # 101 padded to 102, half each
    second.set_epoch(3)
    assert list(second) != list(first)


def test_resume_skips_the_batches_already_trained_once():
    lengths = random_lengths(100)
    sampler = TrainingSampler(lengths, batch_size=8, seed=1, num_replicas=2, rank=0)
    sampler.set_epoch(1)
    full = list(sampler)
    sampler.resume_at(epoch=1, batches_done=3)
    assert list(sampler) == full[24:]
    assert list(sampler) == full  # applied once: the next pass over the epoch is whole again
    sampler.resume_at(epoch=0, batches_done=3)  # a position in another epoch does not apply
    assert list(sampler) == full and len(sampler) == 50


def test_grouping_on_sst2_lengths(glue_dir, bert_tokenizer_dir):
    sentences = pq.read_table(glue_dir / "sst2" / "train.parquet", columns=["sentence"])
    sentences = sentences.column("sentence").to_pylist()[:20000]
    tokenizer = AutoTokenizer.from_pretrained(bert_tokenizer_dir)
    lengths = [len(ids) for ids in tokenizer(sentences, return_token_type_ids=False)["input_ids"]]
    grouped = padding_fraction(lengths, batches_of(LengthGroupedSampler(lengths, 32, seed=42), 32), 8)
    shuffled = padding_fraction(lengths, batches_of(random_order(len(lengths), seed=42), 32), 8)
    # Measured on the full train split: 0.229 grouped vs 0.695 shuffled; most of what is left is the
    # rounding to a multiple of 8 of sentences averaging 13 tokens.
    assert grouped < 0.3
    assert shuffled > 0.6
    assert grouped < shuffled / 2


@pytest.mark.parametrize("num_replicas", [1, 2, 3])
def test_length_sorted_eval_sampler_shards_the_sorted_order_once(num_replicas):
    lengths = random_lengths(101)
    shards = [list(LengthSortedEvalSampler(lengths, num_replicas, rank)) for rank in range(num_replicas)]
    assert sorted(index for shard in shards for index in shard) == list(range(101))  # once, unpadded
    for rank, shard in enumerate(shards):
        assert len(LengthSortedEvalSampler(lengths, num_replicas, rank)) == len(shard)
        assert [lengths[index] for index in shard] == sorted(
            (lengths[index] for index in shard), reverse=True
        )
    # Ranks take turns down the sorted order, so their batches hold similar lengths.
    assert max(lengths[shard[0]] for shard in shards) == max(lengths)
    # A DistributedSampler: Lightning keeps it instead of wrapping it in a padding one.
    assert isinstance(LengthSortedEvalSampler(lengths), torch.utils.data.DistributedSampler)
