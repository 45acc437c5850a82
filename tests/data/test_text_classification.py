"""Tests of TextClassificationDataModule: label-schema inference, label encodings, file formats, errors."""

from __future__ import annotations

import os
import warnings
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from neobert_tasks.data import DataError, MissingDataError, TextClassificationDataModule
from neobert_tasks.data.loaders import uses_cuda

pytestmark = pytest.mark.filterwarnings("ignore:No validation split")


def make_module(data_dir, tokenizer: str, cache_dir: str, **overrides) -> TextClassificationDataModule:
    settings = dict(data_dir=str(data_dir), batch_size=4, cache_dir=cache_dir)
    settings.update(overrides)
    return TextClassificationDataModule(tokenizer=tokenizer, **settings)


def all_batches(loader) -> list[dict[str, torch.Tensor]]:
    return list(loader)


def test_string_labels_map_to_sorted_names(write_split, sentences, tiny_tokenizer_dir, datasets_cache):
    labels = ["pos", "neg", "neutral", "pos", "neg", "pos"]
    path = write_split("train", ".csv", text=sentences(6), label=labels)
    write_split("validation", ".csv", text=sentences(6, offset=3), label=labels)
    datamodule = make_module(path.parent, tiny_tokenizer_dir, datasets_cache)
    assert datamodule.problem_type == "single_label_classification"
    assert datamodule.label_names == ["neg", "neutral", "pos"]
    assert datamodule.num_labels == 3
    assert datamodule.validation_split_names == ["validation"] and datamodule.test_split_names == []
    datamodule.setup("validate")
    batches = list(datamodule.val_dataloader())
    # idx: row numbers when the data has no idx column (batches run longest first, so out of row order).
    indices = torch.cat([batch["example_index"] for batch in batches]).tolist()
    by_row = dict(zip(indices, torch.cat([batch["labels"] for batch in batches]).tolist(), strict=True))
    assert by_row == dict(enumerate([2, 0, 1, 2, 0, 2]))


def test_float_labels_mean_regression(write_split, sentences, tiny_tokenizer_dir, datasets_cache):
    path = write_split("train", score=[0.5, 1.25, 3.0, 4.5], text=sentences(4), other=sentences(4, 1))
    datamodule = make_module(
        path.parent, tiny_tokenizer_dir, datasets_cache, label_column="score", text_pair_column="other"
    )
    assert (datamodule.problem_type, datamodule.num_labels) == ("regression", 1)
    assert datamodule.main_metric == "pearson"
    datamodule.setup("fit")
    labels = torch.cat([batch["labels"] for batch in all_batches(datamodule.train_dataloader())])
    assert labels.dtype == torch.float32
    assert sorted(labels.tolist()) == [0.5, 1.25, 3.0, 4.5]


def test_list_labels_become_multi_hot(write_split, sentences, tiny_tokenizer_dir, datasets_cache):
    tags = [["funny"], ["sad", "long"], [], ["long"]]
    path = write_split("train", ".jsonl", text=sentences(4), label=tags)
    datamodule = make_module(path.parent, tiny_tokenizer_dir, datasets_cache, group_by_length=False)
    assert datamodule.problem_type == "multi_label_classification"
    assert datamodule.label_names == ["funny", "long", "sad"]
    datamodule.setup("fit")
    rows = [datamodule.collator([row])["labels"][0].tolist() for row in datamodule.datasets["train"]]
    assert rows == [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]


def test_integer_labels_and_explicit_num_labels(write_split, sentences, tiny_tokenizer_dir, datasets_cache):
    path = write_split("train", ".tsv", text=sentences(4), label=[0, 2, 1, 2])
    inferred = make_module(path.parent, tiny_tokenizer_dir, datasets_cache)
    assert inferred.num_labels == 3 and inferred.label_names == ["0", "1", "2"]
    # The training split may lack the highest class ids.
    assert make_module(path.parent, tiny_tokenizer_dir, datasets_cache, num_labels=5).num_labels == 5
    with pytest.raises(DataError, match="num_labels is 2"):
        make_module(path.parent, tiny_tokenizer_dir, datasets_cache, num_labels=2)
    named = make_module(path.parent, tiny_tokenizer_dir, datasets_cache, label_names=["a", "b", "c"])
    assert named.label_names == ["a", "b", "c"]


def test_class_ids_that_never_occur_are_warned_about(
    write_split, sentences, tiny_tokenizer_dir, datasets_cache
):
    # Labels numbered from 1 (a spreadsheet's 1-3): id 0 becomes a class of its own that no example has.
    path = write_split("train", ".csv", text=sentences(4), label=[1, 3, 2, 3])
    with pytest.warns(UserWarning, match=r"Class ids \[0\] never occur in column 'label' of .*ids 1-3\)"):
        datamodule = make_module(path.parent, tiny_tokenizer_dir, datasets_cache)
    assert datamodule.label_names == ["0", "1", "2", "3"]
    # Named classes or a class count given: the ids are what the user meant, nothing to warn of.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_module(path.parent, tiny_tokenizer_dir, datasets_cache, label_names=["none", "a", "b", "c"])
        make_module(path.parent, tiny_tokenizer_dir, datasets_cache, num_labels=4)


def test_boolean_labels_are_two_classes(write_split, sentences, tiny_tokenizer_dir, datasets_cache):
    path = write_split("train", text=sentences(4), label=[True, False, False, True])
    datamodule = make_module(path.parent, tiny_tokenizer_dir, datasets_cache, group_by_length=False)
    # Named as the data writes them (exports and predictions show "True", not "1").
    assert datamodule.problem_type == "single_label_classification"
    assert datamodule.label_names == ["False", "True"]
    datamodule.setup("fit")
    assert sorted(row["labels"] for row in datamodule.datasets["train"]) == [0, 0, 1, 1]
    # A list of booleans is a multi-hot vector, not the class ids 0 and 1.
    path = write_split(
        "train",
        directory=path.parent / "lists",
        text=sentences(3),
        label=[[True, False, True], [False] * 3, [True] * 3],
    )
    multi_hot = make_module(path.parent, tiny_tokenizer_dir, datasets_cache, group_by_length=False)
    assert (multi_hot.problem_type, multi_hot.num_labels) == ("multi_label_classification", 3)
    multi_hot.setup("fit")
    rows = [multi_hot.collator([row])["labels"][0].tolist() for row in multi_hot.datasets["train"]]
    assert rows == [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_integer_labels_of_another_split_are_the_names_training_wrote_as_text(
    suffix, write_split, sentences, tiny_tokenizer_dir, datasets_cache
):
    # Train wrote its classes as text "1", "2", "3"; validation as numbers: 1 is the class "1", not the
    # second name, which class ids would index (scored against the wrong classes, silently).
    path = write_split("train", suffix, text=sentences(6), label=["1", "2", "3"] * 2)
    write_split("validation", suffix, text=sentences(4, offset=1), label=[1, 2, 3, 1])
    datamodule = make_module(path.parent, tiny_tokenizer_dir, datasets_cache)
    assert datamodule.label_names == ["1", "2", "3"]
    datamodule.setup("validate")
    labels = {row["example_index"]: row["labels"] for row in datamodule.datasets["validation"]}
    assert labels == {0: 0, 1: 1, 2: 2, 3: 0}
    # The names alone decide, so an evaluation given the checkpoint's names reads the numbers alike.
    named = make_module(path.parent, tiny_tokenizer_dir, datasets_cache, label_names=["1", "2", "3"])
    named.setup("validate")
    assert {row["example_index"]: row["labels"] for row in named.datasets["validation"]} == labels
    # A test split's -1 is an unlabelled row, not a class named "-1".
    write_split("test", suffix, text=sentences(2), label=[-1, 3])
    tested = make_module(path.parent, tiny_tokenizer_dir, datasets_cache)
    tested.setup("test")
    assert sorted(row["labels"] for row in tested.datasets["test"]) == [-1, 2]
    # A number that names no class is refused as such, not as an id out of range.
    write_split("validation", suffix, text=sentences(2), label=[1, 4])
    with pytest.raises(DataError, match=r"Label '4' in row 1 of split 'validation' .* not one of the label"):
        make_module(path.parent, tiny_tokenizer_dir, datasets_cache).setup("validate")


def test_a_class_named_minus_one_is_a_class_not_an_unlabelled_row(
    write_split, sentences, tiny_tokenizer_dir, datasets_cache
):
    path = write_split("train", ".jsonl", text=sentences(3), label=["-1", "0", "1"])
    write_split("validation", ".csv", text=sentences(3, offset=1), label=[-1, 0, 1])
    datamodule = make_module(path.parent, tiny_tokenizer_dir, datasets_cache)
    datamodule.setup("validate")
    assert {row["example_index"]: row["labels"] for row in datamodule.datasets["validation"]} == {
        0: 0,
        1: 1,
        2: 2,
    }
    # Inside a multi-label list, -1 names a class or nothing: refused in words (was a KeyError).
    tags = write_split(
        "train", ".jsonl", directory=path.parent / "tags", text=sentences(2), label=[["1"], ["2"]]
    )
    write_split("test", ".jsonl", directory=tags.parent, text=sentences(2), label=[[1], [-1]])
    with pytest.raises(DataError, match=r"Label '-1' in split 'test' .* is not one of the label names"):
        make_module(tags.parent, tiny_tokenizer_dir, datasets_cache).setup("test")
    # Names that only look like numbers ("²") are names.
    from neobert_tasks.data.labels import numbers_other_than_ids  # noqa: PLC0415

    assert not numbers_other_than_ids(["1", "²"]) and not numbers_other_than_ids(["--1", "2"])
    assert numbers_other_than_ids(["-1", "0", "1"]) and not numbers_other_than_ids(["0", "1"])


def test_a_training_split_without_any_label_is_refused(
    write_split, sentences, tiny_tokenizer_dir, datasets_cache
):
    path = write_split("train", text=sentences(2), label=pd.Series([None, None], dtype="string"))
    with pytest.raises(DataError, match="The training split has no labels"):
        make_module(path.parent, tiny_tokenizer_dir, datasets_cache)


def test_integer_labels_against_names_sorted_from_text_labels_are_refused(
    write_split, sentences, tiny_tokenizer_dir, datasets_cache
):
    """Which integer is which class would be a guess (the sorted order): rows scored against another class."""
    path = write_split("train", text=sentences(4), label=["pos", "neg"] * 2)
    write_split("validation", ".csv", text=sentences(2), label=[1, 0])
    with pytest.raises(
        DataError, match=r"Labels of .*validation\.csv.* are integers, but the class names come"
    ):
        make_module(path.parent, tiny_tokenizer_dir, datasets_cache).setup("validate")
    # label_names says which integer is which: ids.
    named = make_module(path.parent, tiny_tokenizer_dir, datasets_cache, label_names=["pos", "neg"])
    named.setup("validate")
    assert sorted(row["labels"] for row in named.datasets["validation"]) == [0, 1]


def test_label_names_that_cannot_name_the_classes_are_refused(
    write_split, sentences, tiny_tokenizer_dir, datasets_cache
):
    path = write_split("train", text=sentences(4), label=["neg", "pos"] * 2)
    with pytest.raises(DataError, match="label_names lists 'neg' twice: each class needs a name of its own"):
        make_module(path.parent, tiny_tokenizer_dir, datasets_cache, label_names=["neg", "pos", "neg"])
    with pytest.raises(
        DataError, match=r"Single-label classification needs at least 2 classes, .* 'neg': list"
    ):
        make_module(path.parent, tiny_tokenizer_dir, datasets_cache, label_names=["neg"])
    # One name is right for one regression score or one multi-label tag.
    scores = write_split("train", directory=path.parent / "scores", text=sentences(2), label=[0.5, 1.5])
    assert (
        make_module(scores.parent, tiny_tokenizer_dir, datasets_cache, label_names=["score"]).num_labels == 1
    )
    tags = write_split(
        "train", ".jsonl", directory=path.parent / "tags", text=sentences(2), label=[["a"], []]
    )
    tagged = make_module(tags.parent, tiny_tokenizer_dir, datasets_cache, label_names=["a"])
    assert (tagged.problem_type, tagged.label_names) == ("multi_label_classification", ["a"])


def test_an_index_column_that_cannot_index_predictions_gives_way_to_row_numbers(
    write_split, sentences, tiny_tokenizer_dir, datasets_cache
):
    path = write_split("train", text=sentences(4), label=[0, 1] * 2)
    texts = sentences(4, offset=2)
    for idx in (["id-0", "id-1", "id-2", "id-3"], [5, 5, 4, 4]):  # strings crashed the collator; repeats
        write_split("test", text=texts, idx=idx)  # put one row's text beside another's prediction
        datamodule = make_module(path.parent, tiny_tokenizer_dir, datasets_cache)
        with pytest.warns(UserWarning, match=r"Column 'idx' of .*test\.parquet.* does not hold a distinct"):
            datamodule.setup("predict")
        batches = list(datamodule.predict_dataloader())
        assert sorted(torch.cat([batch["example_index"] for batch in batches]).tolist()) == [0, 1, 2, 3]
        assert datamodule.predict_texts("test") == {row: [text] for row, text in enumerate(texts)}


def test_a_predict_files_label_column_is_not_read(write_split, sentences, tiny_tokenizer_dir, datasets_cache):
    path = write_split("train", text=sentences(4), label=["neg", "pos"] * 2)
    predict_file = write_split("new", ".csv", text=sentences(2), label=["bogus", "bogus"])
    datamodule = make_module(path.parent, tiny_tokenizer_dir, datasets_cache, predict_file=str(predict_file))
    datamodule.setup("predict")
    assert "labels" not in next(iter(datamodule.predict_dataloader()))


def test_explicit_schema_reads_no_data(tmp_path, tiny_tokenizer_dir, datasets_cache):
    # The directory does not even exist: nothing is read until setup.
    datamodule = make_module(
        tmp_path / "later", tiny_tokenizer_dir, datasets_cache, problem_type="single_label_classification",
        num_labels=4,
    )  # fmt: skip
    assert datamodule.num_labels == 4 and datamodule.label_names == ["0", "1", "2", "3"]
    with pytest.raises(MissingDataError, match="later"):
        datamodule.setup("fit")


def test_unlabelled_test_split_for_prediction(write_split, sentences, tiny_tokenizer_dir, datasets_cache):
    path = write_split("train", text=sentences(6), label=[0, 1] * 3)
    write_split("test", text=sentences(5, offset=2), idx=[10, 11, 12, 13, 14])
    datamodule = make_module(path.parent, tiny_tokenizer_dir, datasets_cache, eval_batch_size=5)
    assert datamodule.split_names_for("predict") == ["test"]
    datamodule.setup("predict")
    batch = next(iter(datamodule.predict_dataloader()))
    assert "labels" not in batch
    assert sorted(batch["example_index"].tolist()) == [10, 11, 12, 13, 14]


def test_invalid_labels_at_setup(write_split, sentences, tiny_tokenizer_dir, datasets_cache):
    path = write_split("train", text=sentences(4), label=["pos", "neg", "pos", "neg"])
    write_split("validation", text=sentences(2), label=["pos", "maybe"])
    datamodule = make_module(path.parent, tiny_tokenizer_dir, datasets_cache)
    with pytest.raises(
        DataError, match=r"'maybe' in row 1 of split 'validation' .* is not one of .*\['neg', 'pos'\]"
    ):
        datamodule.setup("fit")


def test_configuration_errors(write_split, sentences, tmp_path, tiny_tokenizer_dir, datasets_cache):
    with pytest.raises(DataError, match="dataset id .* or a local data_dir; both are None"):
        TextClassificationDataModule(tokenizer=tiny_tokenizer_dir)
    with pytest.raises(DataError, match="one of dataset .* or data_dir, not both"):
        TextClassificationDataModule(tokenizer=tiny_tokenizer_dir, dataset="x/y", data_dir=str(tmp_path))
    with pytest.raises(DataError, match="without dataset or data_dir needs problem_type and label_names"):
        TextClassificationDataModule(tokenizer=tiny_tokenizer_dir, predict_file="new.txt")
    with pytest.raises(DataError, match="Unknown problem_type 'ranking'"):
        make_module(tmp_path, tiny_tokenizer_dir, datasets_cache, problem_type="ranking", num_labels=2)
    path = write_split("train", text=sentences(3), target=[0, 1, 0])
    with pytest.raises(DataError, match=r"'label' is missing from .*train\.parquet.*present: text, target"):
        make_module(path.parent, tiny_tokenizer_dir, datasets_cache)
    module = make_module(
        path.parent, tiny_tokenizer_dir, datasets_cache, label_column="target", text_column="body"
    )
    with pytest.raises(DataError, match=r"'body' is missing"):
        module.setup("fit")


def test_unreachable_hub_dataset_is_one_clear_error(tiny_tokenizer_dir, datasets_cache):
    with pytest.raises(DataError, match="Could not load hub dataset 'someone/no-such-dataset'"):
        TextClassificationDataModule(
            tokenizer=tiny_tokenizer_dir, dataset="someone/no-such-dataset", cache_dir=datasets_cache
        )


def test_class_label_names_from_shared_rte(glue_dir, bert_tokenizer_dir, datasets_cache):
    datamodule = TextClassificationDataModule(
        tokenizer=bert_tokenizer_dir,
        data_dir=str(glue_dir / "rte"),
        text_column="sentence1",
        text_pair_column="sentence2",
        limit_train_samples=32,
        limit_eval_samples=16,
        cache_dir=datasets_cache,
    )
    assert datamodule.label_names == ["entailment", "not_entailment"]
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = next(iter(datamodule.val_dataloader()))
    expected = pd.read_parquet(glue_dir / "rte" / "validation.parquet").head(16).set_index("idx")["label"]
    assert batch["labels"].tolist() == expected.loc[batch["example_index"].tolist()].tolist()
    assert sorted(batch["example_index"].tolist()) == sorted(expected.index)
    # [CLS] sentence1 [SEP] sentence2 [SEP]: two separators per pair.
    assert int((batch["input_ids"][0] == 102).sum()) == 2


@pytest.mark.parametrize(("device", "pinned"), [("cpu", False), ("cuda", True)])
def test_batches_are_pinned_only_for_a_cuda_trainer(
    write_split, sentences, tiny_tokenizer_dir, datasets_cache, device, pinned
):
    path = write_split("train", ".csv", text=sentences(6), label=[0, 1, 0, 1, 0, 1])
    datamodule = make_module(path.parent, tiny_tokenizer_dir, datasets_cache)
    assert not uses_cuda(datamodule.trainer)  # no trainer yet
    # The datamodule reads the device and the DDP settings from its trainer; a stand-in holds both.
    strategy = SimpleNamespace(root_device=torch.device(device))
    datamodule.trainer = SimpleNamespace(strategy=strategy, distributed_sampler_kwargs=None)
    datamodule.setup("fit")
    assert datamodule.train_dataloader().pin_memory is pinned


@pytest.mark.parametrize(("limit", "rows"), [(3, 12), (0.5, 40), (1.0, 40)])
def test_integer_limit_train_batches_tokenizes_only_the_rows_it_reaches(
    limit, rows, write_split, sentences, tiny_tokenizer_dir, datasets_cache
):
    """3 batches of 4 on one device reach 12 rows; a fraction of an epoch may reach any row."""
    path = write_split("train", text=sentences(40), label=[row % 2 for row in range(40)])
    datamodule = make_module(path.parent, tiny_tokenizer_dir, datasets_cache)
    stage = SimpleNamespace(fn="fit")
    datamodule.trainer = SimpleNamespace(
        limit_train_batches=limit, world_size=1, state=stage, distributed_sampler_kwargs=None
    )
    datamodule.setup("fit")
    assert len(datamodule.datasets["train"]) == rows
    assert len(list(datamodule.train_dataloader())) >= (limit if isinstance(limit, int) else 1)


@pytest.mark.parametrize("same_size", [False, True])
def test_a_file_replaced_with_the_same_modification_time_is_read_again(
    write_split, sentences, tiny_tokenizer_dir, datasets_cache, same_size
):
    """datasets keys a local file by its modification time alone: a file copied over with `cp -p`, or
    edited and its time set back, was served from the cache with its old texts and labels."""
    path = write_split("train", ".csv", text=["a bad film", "a great film"], label=["neg", "pos"])
    before = path.stat()
    assert make_module(path.parent, tiny_tokenizer_dir, datasets_cache).label_names == ["neg", "pos"]
    edited = ["a bad film", "a good movie"] if same_size else ["a really bad film", "a great film"]
    write_split("train", ".csv", text=edited, label=["neg", "top"] if same_size else ["pos", "neg"])
    assert (path.stat().st_size == before.st_size) is same_size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    datamodule = make_module(path.parent, tiny_tokenizer_dir, datasets_cache)
    assert datamodule.label_names == (["neg", "top"] if same_size else ["neg", "pos"])
    datamodule.setup("fit")
    rows = list(datamodule.datasets["train"])
    assert sorted(row["labels"] for row in rows) == [0, 1]
    texts = [datamodule.tokenizer.decode(row["input_ids"], skip_special_tokens=True) for row in rows]
    assert sorted(texts) == sorted(edited)
