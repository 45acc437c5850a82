"""Data that loads but means something else: CSV/TSV rows that do not match the header, non-finite labels.

pandas reads a row with one field too many as an index column and fills short rows with nulls, and a NaN or
infinite regression score slips through every check to a nan loss or correlation. Both are refused when the
split is loaded, with one sentence naming the file (or split), the line or row, and the value.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neobert_tasks.data import DataError, GLUEDataModule, TextClassificationDataModule
from neobert_tasks.data.sources import load_local_splits

pytestmark = pytest.mark.filterwarnings("ignore:No validation split")

NAN, INF = float("nan"), float("inf")


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_table(path: Path, **columns: list) -> Path:
    """A parquet file written by pyarrow, which keeps NaN as NaN (pandas' `to_parquet` turns it into null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table({name: pa.array(values, from_pandas=False) for name, values in columns.items()}), path
    )
    return path


def stsb_split(directory: Path, split: str, scores: list[float | None], sentences) -> Path:
    texts = sentences(len(scores))
    return write_table(
        directory / f"{split}.parquet",
        sentence1=texts,
        sentence2=texts[::-1],
        label=scores,
        idx=list(range(len(scores))),
    )


# ------------------------------------------------------------------------------------------------------
# CSV/TSV rows whose field count differs from the header's.


@pytest.mark.parametrize(
    ("name", "text", "line", "fields", "hint"),
    [
        # The case pandas turned into an index column: the first row has one field too many.
        (
            "train.csv",
            "sentence,label\ngreat, really great,1\nbad,0\nfun,1\n",
            2,
            "3 fields",
            "unquoted comma",
        ),
        (
            "train.csv",
            "sentence,label\nbad,0\nfun,1\ngreat, really great,1\n",
            4,
            "3 fields",
            "unquoted comma",
        ),
        # Blank lines and a quoted line break count as lines of the file.
        ("train.csv", 'sentence,label\nbad,0\n\n"two\nlines",1\na, b,1\n', 6, "3 fields", "unquoted comma"),
        ("train.csv", "sentence,label\nbad,0\ngreat\nfun,1\n", 3, "1 field", "a missing field"),
        ("train.tsv", "sentence\tlabel\ngreat\treally great\t1\nbad\t0\n", 2, "3 fields", "unquoted tab"),
    ],
)
def test_row_that_does_not_match_the_header_names_file_and_line(
    tmp_path, datasets_cache, name, text, line, fields, hint
):
    path = write_text(tmp_path / "data" / name, text)
    with pytest.raises(DataError) as error:
        load_local_splits(path.parent, ["train"], datasets_cache)
    message = str(error.value)
    assert message.startswith(f"Data file '{path}' line {line} has {fields} where the header has 2 (")
    assert hint in message and message.endswith("quote the field or fix the row.")


def test_every_mismatched_row_is_counted(tmp_path, datasets_cache):
    path = write_text(tmp_path / "data" / "train.csv", "sentence,label\na,b,1\nc,0\nd,e,1\nf\n")
    with pytest.raises(DataError, match=r"line 2 has 3 fields .*, and 2 more such rows\.$"):
        load_local_splits(path.parent, ["train"], datasets_cache)


def test_the_datasets_cache_does_not_hide_a_bad_row(tmp_path, datasets_cache):
    path = write_text(tmp_path / "data" / "train.csv", "sentence,label\ngreat,1\nbad,0\n")
    assert load_local_splits(path.parent, ["train"], datasets_cache)[0]["train"]["sentence"] == [
        "great",
        "bad",
    ]
    write_text(path, "sentence,label\ngreat, really,1\nbad,0\n")
    with pytest.raises(DataError, match="line 2 has 3 fields"):
        load_local_splits(path.parent, ["train"], datasets_cache)
    write_text(path, 'sentence,label\n"great, really",1\nbad,0\n')
    loaded = load_local_splits(path.parent, ["train"], datasets_cache)[0]["train"]
    assert loaded.column_names == ["sentence", "label"] and loaded["sentence"] == ["great, really", "bad"]


def test_well_formed_csv_loads_unchanged(tmp_path, datasets_cache):
    # Quoted commas, quotes and line breaks, a byte-order mark, CRLF line ends, blank and space-only lines.
    text = '\ufeffsentence,label\r\n"a, b",1\r\n\r\n   \r\n"say ""hi"", ok",0\r\n"two\r\nlines",1\r\n'
    path = write_text(tmp_path / "data" / "train.csv", text)
    loaded = load_local_splits(path.parent, ["train"], datasets_cache)[0]["train"]
    assert loaded.column_names == ["sentence", "label"]
    assert loaded["sentence"] == ["a, b", 'say "hi", ok', "two\r\nlines"] and loaded["label"] == [1, 0, 1]


def test_the_repository_sample_data_still_loads(datasets_cache):
    sample = Path(__file__).resolve().parents[2] / "data" / "quickstart"
    loaded = load_local_splits(sample, ["train", "validation"], datasets_cache)[0]
    assert {name: (split.num_rows, split.column_names) for name, split in loaded.items()} == {
        "train": (2500, ["sentence", "label"]),
        "validation": (400, ["sentence", "label"]),
    }


# ------------------------------------------------------------------------------------------------------
# Non-finite labels.


@pytest.mark.parametrize(
    ("split", "stage", "value"),
    [("train", "fit", NAN), ("validation", "validate", INF), ("test", "predict", -INF)],
)
def test_non_finite_stsb_score_names_split_row_column_and_value(
    tmp_path, sentences, tiny_tokenizer_dir, datasets_cache, split, stage, value
):
    directory = tmp_path / "stsb"
    splits = {"train": [0.5, 1.0, 2.0, 3.0], "validation": [4.0, 2.5, 1.0], "test": [None, None, None]}
    splits[split] = [1.0, 2.0, value, 3.0, value]
    for name, scores in splits.items():
        stsb_split(directory, name, scores, sentences)
    datamodule = GLUEDataModule(
        "stsb", tokenizer=tiny_tokenizer_dir, data_dir=str(directory), cache_dir=datasets_cache
    )
    with pytest.raises(DataError) as error:
        datamodule.setup(stage)
    assert str(error.value) == (
        f"Row 2 (counting from 0) of split '{split}' ({directory / split}.parquet) holds {value} in column"
        " 'label', which must hold finite numbers (and 1 more such row); fix or remove the row."
    )


def test_unlabelled_rows_of_a_test_split_still_load(tmp_path, sentences, tiny_tokenizer_dir, datasets_cache):
    directory = tmp_path / "stsb"
    stsb_split(directory, "train", [0.5, 1.0, 2.0], sentences)
    stsb_split(directory, "test", [None, 1.5, None], sentences)
    datamodule = GLUEDataModule(
        "stsb", tokenizer=tiny_tokenizer_dir, data_dir=str(directory), cache_dir=datasets_cache
    )
    datamodule.setup("predict")
    assert len(datamodule.datasets["test"]) == 3


def test_non_finite_score_in_csv_and_jsonl(tmp_path, tiny_tokenizer_dir, datasets_cache):
    directory = tmp_path / "data"
    write_text(directory / "train.csv", "text,label\ngood,0.5\nbad,inf\nfun,2\n")
    with pytest.raises(
        DataError, match=r"^Row 1 \(counting from 0\) of split 'train' \(.*train\.csv\) holds inf"
    ):
        TextClassificationDataModule(
            tokenizer=tiny_tokenizer_dir, data_dir=str(directory), cache_dir=datasets_cache
        )
    write_text(directory / "train.csv", "text,label\ngood,0.5\nbad,1\nfun,2\n")
    write_text(
        directory / "validation.jsonl", '{"text": "good", "label": 1.0}\n{"text": "bad", "label": NaN}\n'
    )
    datamodule = TextClassificationDataModule(
        tokenizer=tiny_tokenizer_dir, data_dir=str(directory), cache_dir=datasets_cache
    )
    with pytest.raises(DataError, match=r"^Row 1 .* split 'validation' \(.*validation\.jsonl\) holds nan"):
        datamodule.setup("fit")


def test_multi_hot_vectors_with_nan_or_null(tmp_path, tiny_tokenizer_dir, datasets_cache):
    directory = tmp_path / "data"
    path = write_table(
        directory / "train.parquet", text=["good", "bad", "fun"], label=[[1.0, 0.0], [0.0, 1.0], [1.0, NAN]]
    )
    with pytest.raises(DataError, match=r"^Row 2 .* holds nan in column 'label'"):
        TextClassificationDataModule(
            tokenizer=tiny_tokenizer_dir, data_dir=str(directory), cache_dir=datasets_cache
        )
    # pandas writes a NaN inside a list as null, which has no multi-hot target either.
    write_table(path, text=["good", "bad", "fun"], label=[[1.0, 0.0], [0.0, None], [1.0, 1.0]])
    datamodule = TextClassificationDataModule(
        tokenizer=tiny_tokenizer_dir, data_dir=str(directory), cache_dir=datasets_cache
    )
    with pytest.raises(
        DataError, match=r"Split 'train' \(.*\) has 1 null items in the label lists of column 'label'"
    ):
        datamodule.setup("fit")


def test_missing_class_id_in_csv_is_explained(tmp_path, tiny_tokenizer_dir, datasets_cache):
    directory = tmp_path / "data"
    write_text(directory / "train.csv", "text,label\ngood,1\nbad,\nfun,0\n")
    datamodule = TextClassificationDataModule(
        tokenizer=tiny_tokenizer_dir, data_dir=str(directory), cache_dir=datasets_cache,
        problem_type="single_label_classification", num_labels=2,
    )  # fmt: skip
    with pytest.raises(
        DataError, match=r"does not fit .* \(one empty label makes a CSV column of class ids float\)"
    ):
        datamodule.setup("fit")


@pytest.mark.parametrize("given", [False, True])
def test_a_label_training_lacks_is_named_with_where_the_names_come_from(
    given, tmp_path, tiny_tokenizer_dir, datasets_cache
):
    directory = tmp_path / "data"
    write_table(directory / "train.parquet", text=["good", "bad"], label=["pos", "neg"])
    write_table(
        directory / "validation.parquet", text=["good", "meh", "bad"], label=["pos", "neutral", "neg"]
    )
    names = {"label_names": ["neg", "pos"]} if given else {}
    datamodule = TextClassificationDataModule(
        tokenizer=tiny_tokenizer_dir, data_dir=str(directory), cache_dir=datasets_cache, **names
    )
    source = "data.init_args.label_names" if given else "the training split's labels"
    with pytest.raises(DataError) as refusal:
        datamodule.setup("fit")
    assert str(refusal.value) == (
        f"Label 'neutral' in row 1 of split 'validation' ({directory / 'validation.parquet'}) is not one of"
        f" the label names ['neg', 'pos']; the label names come from {source}."
    )


def test_a_text_column_read_as_labels_gets_a_short_message(tmp_path, tiny_tokenizer_dir, datasets_cache):
    """label_column pointing at the text printed every training sentence as a label name: 130 KB."""
    directory = tmp_path / "data"
    sentences = [f"sentence number {index} of a long review" for index in range(40)]
    write_table(directory / "train.parquet", text=sentences, label=["pos", "neg"] * 20)
    write_table(directory / "validation.parquet", text=["another review"], label=["pos"])
    datamodule = TextClassificationDataModule(
        tokenizer=tiny_tokenizer_dir, data_dir=str(directory), cache_dir=datasets_cache, label_column="text"
    )
    with pytest.raises(DataError) as refusal:
        datamodule.setup("fit")
    message = str(refusal.value)
    assert "(40 names: does column 'text' hold labels?)" in message and len(message) < 600


# ------------------------------------------------------------------------------------------------------
# Files that are not UTF-8 (a spreadsheet's latin-1 export): the readers' errors gave a byte offset inside a
# chunk, and the JSON reader let the bytes through to fail later as a bare Arrow traceback.

LATIN1_LINES = {
    "train.csv": ["sentence,label", "good,1", "caf\xe9 au lait,0"],
    "train.tsv": ["sentence\tlabel", "good\t1", "caf\xe9 au lait\t0"],
    "train.jsonl": ['{"sentence": "good", "label": 1}', '{"sentence": "caf\xe9", "label": 0}'],
    "train.txt": ["good", "caf\xe9 au lait"],
    "train.conll": ["EU B-ORG", "", "caf\xe9 O", ""],
}


def write_latin1(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return path


def load_split(path: Path, cache_dir: str):
    """Load the `train` split of `path`'s folder with the reader that a datamodule uses for its format."""
    from neobert_tasks.data.conll import load_word_splits
    from neobert_tasks.data.text_sources import load_text_directory

    if path.suffix == ".txt":
        return load_text_directory(path.parent, ["train"], cache_dir)
    if path.suffix == ".conll":
        return load_word_splits(path.parent, ["train"], "tokens", "ner_tags", -1, cache_dir)
    return load_local_splits(path.parent, ["train"], cache_dir)


@pytest.mark.parametrize("name", sorted(LATIN1_LINES))
def test_a_file_that_is_not_utf8_is_named_with_its_line(tmp_path, datasets_cache, name):
    lines = LATIN1_LINES[name]
    path = write_latin1(tmp_path / "data" / name, lines)
    line = next(number for number, text in enumerate(lines, start=1) if "\xe9" in text)
    byte = lines[line - 1].index("\xe9") + 1  # latin-1: one byte per character
    with pytest.raises(DataError) as error:
        load_split(path, datasets_cache)
    assert str(error.value) == (
        f"Data file '{path}' line {line} is not UTF-8 (byte {byte} of the line is 0xe9); save the file as"
        " UTF-8, for example with `iconv -f latin1 -t utf-8`."
    )


def test_a_predict_file_that_is_not_utf8_is_named_with_its_line(tmp_path, datasets_cache):
    from neobert_tasks.data.predict_text import load_text_file

    path = write_latin1(tmp_path / "texts.jsonl", ['{"text": "good"}', '{"text": "na\xefve"}'])
    with pytest.raises(DataError, match=r"texts\.jsonl' line 2 is not UTF-8 \(byte 13 of the line is 0xef\)"):
        load_text_file(str(path), datasets_cache)


# ------------------------------------------------------------------------------------------------------
# A byte-order mark (what Windows editors put first in a UTF-8 file): pandas and the JSON reader skip it,
# but the CoNLL and SQuAD readers and the text builder read it as the first character, which turned a
# CoNLL file's -DOCSTART- into a one-word sentence and an official SQuAD file into "Column 'id' is missing".

SQUAD_QUESTION = {"id": "q1", "question": "Who wrote it?", "answers": [{"text": "Ada", "answer_start": 0}]}
SQUAD_DOCUMENT = json.dumps(
    {
        "version": "1.1",
        "data": [{"title": "T", "paragraphs": [{"context": "Ada wrote it.", "qas": [SQUAD_QUESTION]}]}],
    }
)
BOM_FILES = {
    "train.csv": ("sentence,label\ngood,1\n", {"sentence": "good", "label": 1}),
    "train.jsonl": ('{"sentence": "good", "label": 1}\n', {"sentence": "good", "label": 1}),
    "train.txt": ("good film\n", {"text": "good film"}),
    "train.conll": ("-DOCSTART- O\n\nEU B-ORG\n\n", {"tokens": ["EU"], "ner_tags": ["B-ORG"]}),
    "train.json": (SQUAD_DOCUMENT, {"id": "q1", "context": "Ada wrote it."}),
}


@pytest.mark.parametrize("name", sorted(BOM_FILES))
def test_a_byte_order_mark_is_not_part_of_the_first_row(tmp_path, datasets_cache, name):
    text, first_row = BOM_FILES[name]
    path = tmp_path / "data" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    if name == "train.json":
        from neobert_tasks.data.squad_json import is_official_squad_json, load_official_squad

        assert is_official_squad_json(path)
        split = load_official_squad("train", [path], datasets_cache)
    else:
        split = load_split(path, datasets_cache)
        split = split[0]["train"] if isinstance(split, tuple) else split["train"]
    assert len(split) == 1
    assert {key: split[0][key] for key in first_row} == first_row


def test_a_file_of_a_byte_order_mark_alone_has_no_rows(tmp_path, datasets_cache):
    """What Notepad saves for an empty file: it passed as a file with rows, then failed inside datasets."""
    path = tmp_path / "data" / "train.txt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xef\xbb\xbf\n")
    with pytest.raises(DataError, match=r"train\.txt' has no rows"):
        load_split(path, datasets_cache)
