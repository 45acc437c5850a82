"""Tests of GLUEDataModule: the task table, loading the shared GLUE copy, batches, errors and caching."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from neobert_tasks.data import (
    GLUE_TASKS,
    DataError,
    GLUEDataModule,
    LengthGroupedSampler,
    MissingDataError,
    TrainingSampler,
)

# Several tests train on data without a validation split on purpose (qqp has none in the shared copy).
pytestmark = pytest.mark.filterwarnings("ignore:No validation split")

# task -> (text columns, num_labels, problem type, main metric)
EXPECTED_TASKS = {
    "cola": (("sentence",), 2, "single_label_classification", "matthews_correlation"),
    "sst2": (("sentence",), 2, "single_label_classification", "accuracy"),
    "mrpc": (("sentence1", "sentence2"), 2, "single_label_classification", "f1"),
    "stsb": (("sentence1", "sentence2"), 1, "regression", "pearson"),
    "qqp": (("question1", "question2"), 2, "single_label_classification", "f1"),
    "mnli": (("premise", "hypothesis"), 3, "single_label_classification", "accuracy"),
    "qnli": (("question", "sentence"), 2, "single_label_classification", "accuracy"),
    "rte": (("sentence1", "sentence2"), 2, "single_label_classification", "accuracy"),
    "wnli": (("sentence1", "sentence2"), 2, "single_label_classification", "accuracy"),
}


def make_glue(task: str, tokenizer: str, data_dir, cache_dir: str, **overrides) -> GLUEDataModule:
    settings = dict(limit_train_samples=64, limit_eval_samples=48, batch_size=16, cache_dir=cache_dir)
    settings.update(overrides)
    return GLUEDataModule(
        task, tokenizer=tokenizer, data_dir=None if data_dir is None else str(data_dir), **settings
    )


def first_batch(loader) -> dict[str, torch.Tensor]:
    return next(iter(loader))


# --------------------------------------------------------------------------------------------------------
# Task table: needs no data at all.


@pytest.mark.parametrize("task", sorted(EXPECTED_TASKS))
def test_properties_available_right_after_init_without_data(task):
    text_columns, num_labels, problem_type, main_metric = EXPECTED_TASKS[task]
    datamodule = GLUEDataModule(task, tokenizer="tokenizer-not-loaded-yet")
    assert datamodule.num_labels == num_labels
    assert datamodule.problem_type == problem_type
    assert datamodule.main_metric == main_metric
    assert GLUE_TASKS[task].text_columns == text_columns
    assert len(datamodule.label_names) == num_labels
    # Nothing was loaded: neither the tokenizer nor any split.
    assert datamodule._tokenizer is None and datamodule.datasets == {}
    assert datamodule.max_length == 1024 and datamodule.batch_size == 32


def test_hub_split_names_from_table():
    mnli = GLUEDataModule("mnli", tokenizer="unused")
    assert mnli.validation_split_names == ["validation_matched", "validation_mismatched"]
    assert mnli.test_split_names == ["test_matched", "test_mismatched"]
    assert mnli.split_names_for("predict") == ["test_matched", "test_mismatched"]
    assert GLUEDataModule("wnli", tokenizer="unused").label_names == ["not_entailment", "entailment"]


def test_unknown_task_lists_valid_names():
    with pytest.raises(DataError, match="'sst3'.*cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli"):
        GLUEDataModule("sst3", tokenizer="unused")


def test_a_folder_of_neither_glue_layout_is_named_first(tmp_path):
    """A folder without sst2/ or split files warned that there was no validation split, then said only that
    it had no files for the splits."""
    (tmp_path / "README.md").write_text("other data\n")
    with pytest.raises(DataError) as refusal:
        GLUEDataModule("sst2", tokenizer="unused", data_dir=str(tmp_path))
    assert str(refusal.value) == (
        f"Data directory '{tmp_path}' holds neither a GLUE root's 'sst2/' folder nor sst2's own split files"
        " (train.parquet, validation.parquet, …)."
    )


def test_missing_tokenizer_directory_is_named(tmp_path):
    missing = str(tmp_path / "no_tokenizer_here")
    with pytest.raises(MissingDataError, match="no_tokenizer_here"):
        _ = GLUEDataModule("sst2", tokenizer=missing).tokenizer


# --------------------------------------------------------------------------------------------------------
# Tiny self-made data: errors name what is wrong.


def write_cola(write_split, sentences, split: str = "train", **overrides):
    columns = {"sentence": sentences(12), "label": [row % 2 for row in range(12)], "idx": list(range(12))}
    columns.update(overrides)
    return write_split(split, **columns)


def test_tiny_cola_end_to_end(write_split, sentences, tiny_tokenizer_dir, datasets_cache):
    path = write_cola(write_split, sentences)
    write_cola(write_split, sentences, split="validation")
    datamodule = make_glue("cola", tiny_tokenizer_dir, path.parent, datasets_cache, batch_size=4)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = first_batch(datamodule.train_dataloader())
    assert batch["input_ids"].shape[1] % 8 == 0 and batch["labels"].tolist() != []
    seen = [index for batch in datamodule.val_dataloader() for index in batch["example_index"].tolist()]
    assert sorted(seen) == list(range(12))  # row numbers (no idx column), in length order


def test_missing_column_is_named(write_split, sentences, tiny_tokenizer_dir, datasets_cache):
    path = write_split("train", text=sentences(4), label=[0, 1, 0, 1])
    datamodule = make_glue("cola", tiny_tokenizer_dir, path.parent, datasets_cache)
    with pytest.raises(DataError, match=r"'sentence' is missing from .*train\.parquet.*present: text, label"):
        datamodule.setup("fit")


def test_empty_split_file_is_named(write_split, tiny_tokenizer_dir, datasets_cache):
    path = write_split("train", sentence=pd.Series([], dtype=str), label=pd.Series([], dtype="int64"))
    with pytest.raises(DataError, match=r"train\.parquet.*no rows"):
        make_glue("cola", tiny_tokenizer_dir, path.parent, datasets_cache).setup("fit")
    zero_bytes = path.parent / "train.csv"
    path.unlink()
    zero_bytes.touch()
    with pytest.raises(DataError, match=r"train\.csv.*empty"):
        make_glue("cola", tiny_tokenizer_dir, path.parent, datasets_cache).setup("fit")
    zero_bytes.write_text("sentence,label\n")  # a header but no rows
    with pytest.raises(DataError, match=r"train\.csv.*no rows"):
        make_glue("cola", tiny_tokenizer_dir, path.parent, datasets_cache).setup("fit")


def test_label_out_of_range_names_split_value_and_range(
    write_split, sentences, tiny_tokenizer_dir, datasets_cache
):
    path = write_cola(write_split, sentences, label=[0, 1, 5, 0] * 3)
    datamodule = make_glue("cola", tiny_tokenizer_dir, path.parent, datasets_cache)
    with pytest.raises(DataError, match=r"Label 5 in row \d+ of split 'train' .*\[0, 2\)"):
        datamodule.setup("fit")


def test_negative_label_only_allowed_in_test_splits(
    write_split, sentences, tiny_tokenizer_dir, datasets_cache
):
    path = write_cola(write_split, sentences, split="test", label=[-1] * 12)
    write_cola(write_split, sentences, split="validation", label=[-1] * 12)
    datamodule = make_glue("cola", tiny_tokenizer_dir, path.parent, datasets_cache)
    datamodule.setup("predict")  # test labels of -1 are placeholders
    assert datamodule.split_names_for("predict") == ["test"]
    assert first_batch(datamodule.predict_dataloader())["labels"].tolist() == [-1] * 12
    with pytest.raises(DataError, match=r"Label -1 in row 0 of split 'validation'"):
        datamodule.setup("validate")


def test_wrong_label_type_is_reported(write_split, sentences, tiny_tokenizer_dir, datasets_cache):
    path = write_cola(write_split, sentences, label=[0.5] * 12)
    with pytest.raises(DataError, match=r"'label' of .*train\.parquet has type .*float"):
        make_glue("cola", tiny_tokenizer_dir, path.parent, datasets_cache).setup("fit")
    path = write_split("train", sentence1=sentences(3), sentence2=sentences(3), label=["a", "b", "c"])
    with pytest.raises(DataError, match="does not fit regression"):
        make_glue("stsb", tiny_tokenizer_dir, path.parent, datasets_cache).setup("fit")


def test_missing_train_split_lists_splits_found(write_split, sentences, tiny_tokenizer_dir, datasets_cache):
    path = write_cola(write_split, sentences, split="validation")
    datamodule = make_glue("cola", tiny_tokenizer_dir, path.parent, datasets_cache)
    with pytest.raises(MissingDataError, match=r"'train' in directory .*splits found: validation"):
        datamodule.setup("fit")


def test_second_setup_reuses_the_tokenized_cache(
    write_split, sentences, tiny_tokenizer_dir, tmp_path, tokenizer_calls
):
    path = write_cola(write_split, sentences)
    write_cola(write_split, sentences, split="validation")
    cache_dir = str(tmp_path / "cache")
    first = make_glue("cola", tiny_tokenizer_dir, path.parent, cache_dir)
    calls = tokenizer_calls(first.tokenizer)
    first.prepare_data()
    assert calls, "the first run must tokenize"
    calls.clear()
    first.setup("fit")
    # A fresh datamodule stands for another rank or a later run.
    second = make_glue("cola", tiny_tokenizer_dir, path.parent, cache_dir)
    second.setup("fit")
    assert calls == []
    for split in ("train", "validation"):
        files = second.datasets[split].cache_files
        assert files and files == first.datasets[split].cache_files
        assert "cache-" in files[0]["filename"]
    # A different max_length is a different tokenization: it must not be served from the cache.
    make_glue("cola", tiny_tokenizer_dir, path.parent, cache_dir, max_length=4).setup("fit")
    assert calls


# --------------------------------------------------------------------------------------------------------
# The shared GLUE copy.


@pytest.mark.parametrize("task", sorted(EXPECTED_TASKS))
def test_each_task_loads_from_shared_copy(task, glue_dir, bert_tokenizer_dir, datasets_cache):
    datamodule = make_glue(task, bert_tokenizer_dir, glue_dir, datasets_cache)
    datamodule.prepare_data()
    datamodule.setup("fit")
    train = datamodule.datasets["train"]
    assert len(train) == 64
    assert set(train.column_names) == {"input_ids", "attention_mask", "labels"}
    batch = first_batch(datamodule.train_dataloader())
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    if datamodule.problem_type == "regression":
        assert batch["labels"].dtype == torch.float32
    else:
        assert batch["labels"].dtype == torch.int64
        assert int(batch["labels"].min()) >= 0 and int(batch["labels"].max()) < datamodule.num_labels
    for name in datamodule.validation_split_names:
        columns = set(datamodule.datasets[name].column_names)
        assert columns == {"input_ids", "attention_mask", "labels", "example_index"}


def test_mnli_uses_the_validation_splits_present(tmp_path, glue_dir, bert_tokenizer_dir, datasets_cache):
    mnli = tmp_path / "mnli"  # a copy holding the matched validation split only
    mnli.mkdir()
    for split in ("train", "validation_matched"):
        (mnli / f"{split}.parquet").symlink_to(glue_dir / "mnli" / f"{split}.parquet")
    datamodule = make_glue("mnli", bert_tokenizer_dir, mnli, datasets_cache)
    # Known from the files before any loading (the model is built before setup).
    assert datamodule.validation_split_names == ["validation_matched"]
    assert datamodule.test_split_names == []
    datamodule.setup("fit")
    assert isinstance(datamodule.val_dataloader(), DataLoader)  # one split: a bare loader, unsuffixed metrics
    assert datamodule.split_names_for("validate") == ["validation_matched"]
    assert datamodule.split_names_for("predict") == ["validation_matched"]
    datamodule.setup("predict")
    assert isinstance(datamodule.predict_dataloader(), DataLoader)


def test_several_validation_splits_give_a_list(tmp_path, glue_dir, bert_tokenizer_dir, datasets_cache):
    mnli = tmp_path / "mnli"
    mnli.mkdir()
    frame = pd.read_parquet(glue_dir / "mnli" / "validation_matched.parquet").head(40)
    for split in ("train", "validation_matched", "validation_mismatched"):
        frame.to_parquet(mnli / f"{split}.parquet", index=False)
    datamodule = make_glue("mnli", bert_tokenizer_dir, mnli, datasets_cache)
    assert datamodule.validation_split_names == ["validation_matched", "validation_mismatched"]
    datamodule.setup("validate")
    loaders = datamodule.val_dataloader()
    assert isinstance(loaders, list) and len(loaders) == 2


def test_qqp_without_validation(glue_dir, bert_tokenizer_dir, datasets_cache):
    datamodule = make_glue("qqp", bert_tokenizer_dir, glue_dir, datasets_cache)
    assert datamodule.validation_split_names == []
    with pytest.warns(UserWarning, match="without validation"):
        datamodule.setup("fit")
    assert datamodule.val_dataloader() == []
    with pytest.raises(MissingDataError, match=r"qqp.*validation.*splits found: train"):
        datamodule.setup("validate")


def test_batches_padded_to_multiple_of_eight(glue_dir, bert_tokenizer_dir, datasets_cache):
    datamodule = make_glue("mrpc", bert_tokenizer_dir, glue_dir, datasets_cache)
    datamodule.setup("fit")
    lengths = datamodule.sequence_lengths("train")
    for batch in datamodule.train_dataloader():
        width = batch["input_ids"].shape[1]
        assert width % 8 == 0
        assert width - int(batch["attention_mask"].sum(dim=1).max()) < 8
        # Padding uses the tokenizer's pad id, where the attention mask is zero.
        assert torch.all(batch["input_ids"][batch["attention_mask"] == 0] == 0)
    # Longest training example in the first batch: an out-of-memory shows at step 1.
    assert first_batch(datamodule.train_dataloader())["attention_mask"].sum(dim=1).max() == max(lengths)


def test_eval_batches_run_longest_first_and_carry_idx(glue_dir, bert_tokenizer_dir, datasets_cache):
    datamodule = make_glue("mrpc", bert_tokenizer_dir, glue_dir, datasets_cache, eval_batch_size=20)
    datamodule.setup("validate")
    expected = pd.read_parquet(glue_dir / "mrpc" / "validation.parquet")["idx"].head(48).tolist()
    batches = list(datamodule.val_dataloader())
    seen = [index for batch in batches for index in batch["example_index"].tolist()]
    assert sorted(seen) == sorted(expected) and expected[0] == 9  # MRPC validation idx are not contiguous
    lengths = [length for batch in batches for length in batch["attention_mask"].sum(dim=1).tolist()]
    assert lengths == sorted(lengths, reverse=True)
    # Each batch pads to its own longest example (rounded up to 8): less than half the padding of the
    # same batches in dataset order.
    padding = sum(batch["attention_mask"].numel() for batch in batches) - sum(lengths)
    unsorted = datamodule.sequence_lengths("validation")  # dataset order
    in_order = sum(
        -(-max(unsorted[i : i + 20]) // 8) * 8 * len(unsorted[i : i + 20]) for i in range(0, 48, 20)
    )
    assert padding < 0.5 * (in_order - sum(unsorted))
    assert "token_type_ids" not in batches[0]


def test_stsb_labels_are_float_scores(glue_dir, bert_tokenizer_dir, datasets_cache):
    datamodule = make_glue("stsb", bert_tokenizer_dir, glue_dir, datasets_cache)
    datamodule.setup("validate")
    labels = first_batch(datamodule.val_dataloader())["labels"]
    assert labels.dtype == torch.float32 and float(labels.min()) >= 0.0 and float(labels.max()) <= 5.0


def test_train_loader_without_grouping_shuffles(glue_dir, bert_tokenizer_dir, datasets_cache):
    datamodule = make_glue("rte", bert_tokenizer_dir, glue_dir, datasets_cache, group_by_length=False)
    datamodule.setup("fit")
    sampler = datamodule.train_dataloader().sampler
    assert isinstance(sampler, TrainingSampler) and sampler.grouped is None
    assert sorted(sampler) == list(range(len(sampler))) and list(sampler) != sorted(sampler)


def test_distributed_training_shards_without_reshuffling(glue_dir, bert_tokenizer_dir, datasets_cache):
    datamodule = make_glue("rte", bert_tokenizer_dir, glue_dir, datasets_cache)
    datamodule.setup("fit")
    datamodule.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": 1})
    sampler = datamodule.train_dataloader().sampler
    # A DistributedSampler, so Lightning neither wraps it again nor re-shuffles the grouped order.
    assert isinstance(sampler, torch.utils.data.DistributedSampler) and not sampler.shuffle
    assert sampler.rank == 1 and len(sampler) == 32
    assert isinstance(sampler.grouped, LengthGroupedSampler)


def test_distributed_eval_sees_every_example_once(glue_dir, bert_tokenizer_dir, datasets_cache):
    # 45 examples over 2 ranks: Lightning's default sampler would pad rank 1 with a repeat of example 0.
    datamodule = make_glue("mrpc", bert_tokenizer_dir, glue_dir, datasets_cache, limit_eval_samples=45)
    datamodule.setup("validate")
    expected = [index for batch in datamodule.val_dataloader() for index in batch["example_index"].tolist()]
    seen = []
    for rank in range(2):
        datamodule.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": rank})
        loader = datamodule.val_dataloader()
        assert isinstance(loader.sampler, UnrepeatedDistributedSampler) and not loader.sampler.shuffle
        seen += [index for batch in loader for index in batch["example_index"].tolist()]
    assert len(expected) == 45 and sorted(seen) == sorted(expected) and len(seen) == 45


def test_a_split_smaller_than_the_process_count_is_refused_on_every_rank(
    glue_dir, bert_tokenizer_dir, datasets_cache
):
    # One example over 4 ranks: Lightning's sampler asserted on ranks 1-3, and rank 0 then died waiting.
    datamodule = make_glue("mrpc", bert_tokenizer_dir, glue_dir, datasets_cache, limit_eval_samples=3)
    datamodule.setup("validate")
    for rank in range(4):
        datamodule.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 4, "rank": rank})
        with pytest.raises(DataError, match=r"^Split 'validation' has 3 rows, fewer than the 4 processes"):
            datamodule.val_dataloader()
    datamodule.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 3, "rank": 2})
    assert len(datamodule.val_dataloader().sampler) == 1


def test_missing_directory_is_named(tmp_path, tiny_tokenizer_dir, datasets_cache):
    datamodule = make_glue("sst2", tiny_tokenizer_dir, tmp_path / "nowhere", datasets_cache)
    with pytest.raises(MissingDataError, match="nowhere"):
        datamodule.prepare_data()
