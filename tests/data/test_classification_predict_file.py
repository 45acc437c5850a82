"""Classification `predict_file`: raw texts or pairs to predict, with no split of the training data needed."""

from __future__ import annotations

import json

import pytest

from neobert_tasks.data import DataError, GLUEDataModule, TextClassificationDataModule


def predict_rows(datamodule) -> dict[int, list[int]]:
    """Example index -> its token ids, from the predict dataloader of a set-up datamodule."""
    datamodule.setup("predict")
    rows = {}
    for batch in datamodule.predict_dataloader():
        for index, ids, mask in zip(
            batch["example_index"], batch["input_ids"], batch["attention_mask"], strict=True
        ):
            rows[int(index)] = ids[mask.bool()].tolist()
    return rows


def test_a_text_file_is_predicted_without_any_split(tmp_path, tiny_tokenizer_dir, sentences):
    texts = sentences(5)
    (tmp_path / "new.txt").write_text("\n".join(texts) + "\n")
    datamodule = TextClassificationDataModule(
        tokenizer=tiny_tokenizer_dir,
        predict_file=str(tmp_path / "new.txt"),
        problem_type="single_label_classification",
        label_names=["negative", "positive"],
        text_column="sentence",
        cache_dir=str(tmp_path / "cache"),
    )
    assert datamodule.predict_split_names == ["predict"]
    rows = predict_rows(datamodule)
    expected = datamodule.tokenizer(texts)["input_ids"]
    assert rows == dict(enumerate(expected))
    assert datamodule.predict_texts("predict") == {index: [text] for index, text in enumerate(texts)}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_one_column_file_stands_for_the_text_column(tmp_path, tiny_tokenizer_dir, sentences, suffix):
    texts = sentences(4)
    path = tmp_path / f"new{suffix}"
    if suffix == ".csv":
        path.write_text("review\n" + "\n".join(texts) + "\n")
    else:
        path.write_text("".join(json.dumps({"review": text}) + "\n" for text in texts))
    datamodule = TextClassificationDataModule(
        tokenizer=tiny_tokenizer_dir, predict_file=str(path), problem_type="regression",
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    datamodule.setup("predict")
    assert [texts for [texts] in datamodule.predict_texts("predict").values()] == texts


def test_a_pair_task_reads_both_columns_and_refuses_a_text_file(
    tmp_path, tiny_tokenizer_dir, sentences, glue_dir
):
    first, second = sentences(3), sentences(3, offset=7)
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(
        "sentence1\tsentence2\n" + "".join(f"{a}\t{b}\n" for a, b in zip(first, second, strict=True))
    )
    datamodule = GLUEDataModule(
        task_name="mrpc", data_dir=str(glue_dir), predict_file=str(pairs), tokenizer=tiny_tokenizer_dir,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    rows = predict_rows(datamodule)
    assert rows == dict(enumerate(datamodule.tokenizer(first, second)["input_ids"]))
    assert datamodule.predict_texts("predict")[2] == [first[2], second[2]]

    (tmp_path / "lines.txt").write_text("one text\n")
    datamodule.predict_file = str(tmp_path / "lines.txt")
    with pytest.raises(
        DataError, match=r"one text per line, but this task reads pairs.*sentence1, sentence2"
    ):
        datamodule.setup("predict")


def test_a_missing_text_column_is_named(tmp_path, tiny_tokenizer_dir, glue_dir):
    path = tmp_path / "pairs.csv"
    path.write_text("sentence1,other\na,b\n")
    datamodule = GLUEDataModule(
        task_name="rte", data_dir=str(glue_dir), predict_file=str(path), tokenizer=tiny_tokenizer_dir,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    with pytest.raises(DataError, match=r"'sentence2' is missing from predict file .*pairs\.csv"):
        datamodule.setup("predict")


def test_a_predict_file_with_a_header_alone_is_named(tmp_path):
    """datasets' own words were "Instruction "predict" corresponds to no data!"."""
    from neobert_tasks.data.predict_text import load_text_file  # noqa: PLC0415

    header_only = tmp_path / "texts.csv"
    header_only.write_text("review\n")
    with pytest.raises(DataError) as refusal:
        load_text_file(str(header_only), str(tmp_path / "cache"))
    assert str(refusal.value) == f"Predict file '{header_only}' has no rows (a header alone?)."


def test_a_one_column_csv_without_a_header_warns_that_its_first_text_is_the_header(tmp_path):
    """A header-less list of sentences lost its first sentence to the header, without a word."""
    from neobert_tasks.data.predict_text import load_text_file  # noqa: PLC0415

    texts = tmp_path / "texts.csv"
    texts.write_text("great movie\nterrible boring movie\nfine\n")
    with pytest.warns(UserWarning, match=r"one column, headed 'great movie': that first line is read as"):
        loaded = load_text_file(str(texts), str(tmp_path / "cache"), ("sentence",))
    assert loaded["sentence"] == ["terrible boring movie", "fine"]
    (tmp_path / "named.csv").write_text("review\ngreat movie\n")  # a header of one word: read as one
    named = load_text_file(str(tmp_path / "named.csv"), str(tmp_path / "cache"), ("sentence",))
    assert named["sentence"] == ["great movie"]
