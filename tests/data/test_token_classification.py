"""Tests of TokenClassificationDataModule: tag alignment, windows, CoNLL files, raw-text prediction, errors.

Most tests use a tiny WordPiece tokenizer with sub-word pieces built in a temporary directory; the
CoNLL-2003 tests use the shared parquet copy and the bert-base-uncased tokenizer, and skip without them.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from neobert_tasks.data import DataError, MissingDataError, TokenClassificationDataModule
from neobert_tasks.data.conll import load_word_splits
from neobert_tasks.data.token_alignment import continuation_labels
from tests.conftest import shared_path

pytestmark = pytest.mark.filterwarnings("ignore:No validation split")

CONLL_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
# Words of one piece each in the tiny tokenizer; "johnson" and "unbelievable" are split into pieces.
SINGLE_PIECE_WORDS = [
    "lives",
    "in",
    "new",
    "york",
    "and",
    "peter",
    "met",
    "mary",
    "at",
    "the",
    "park",
    "city",
]
PIECES = ["john", "##son", "un", "##believ", "##able", "."]


@pytest.fixture(scope="module")
def piece_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, wordpiece_tokenizer) -> str:
    """A lowercase WordPiece tokenizer whose vocabulary splits some words into several pieces."""
    return wordpiece_tokenizer([*SINGLE_PIECE_WORDS, *PIECES], tmp_path_factory.mktemp("piece_tokenizer"))


def make_module(data_dir, tokenizer: str, cache_dir: str, **overrides) -> TokenClassificationDataModule:
    settings = dict(data_dir=str(data_dir), batch_size=4, cache_dir=cache_dir)
    settings.update(overrides)
    return TokenClassificationDataModule(tokenizer=tokenizer, **settings)


def scored_words(features) -> dict[int, list[tuple[int, int, int]]]:
    """Per example index, (word, input id, label) at every token that scores a word, over all windows."""
    words = defaultdict(list)
    for feature in features:
        labels = feature.get("labels", [-100] * len(feature["input_ids"]))
        for word, token, label in zip(feature["word_ids"], feature["input_ids"], labels, strict=True):
            if word >= 0:
                words[feature["example_index"]].append((word, token, label))
    return words


# --------------------------------------------------------------------------------------------------------
# Alignment of tags with sub-word tokens.

ALIGNMENT_WORDS = ["Johnson", "Peter", "lives", "in", "New", "York", "unbelievable", "."]
ALIGNMENT_TAGS = ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O", "O"]


@pytest.mark.parametrize("label_all_tokens", [False, True])
def test_tags_align_with_first_sub_tokens(label_all_tokens, write_split, piece_tokenizer_dir, datasets_cache):
    path = write_split("train", ".jsonl", tokens=[ALIGNMENT_WORDS], ner_tags=[ALIGNMENT_TAGS])
    write_split("validation", ".jsonl", tokens=[ALIGNMENT_WORDS], ner_tags=[ALIGNMENT_TAGS])
    datamodule = make_module(
        path.parent, piece_tokenizer_dir, datasets_cache, label_all_tokens=label_all_tokens
    )
    # String tags: sorted, with "O" first.
    assert datamodule.label_names == ["O", "B-LOC", "B-PER", "I-LOC", "I-PER"]
    assert (datamodule.num_labels, datamodule.main_metric) == (5, "f1")
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))
    tokens = datamodule.tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    assert tokens[:13] == [
        "[CLS]", "john", "##son", "peter", "lives", "in", "new", "york", "un", "##believ", "##able", ".",
        "[SEP]",
    ]  # fmt: skip
    assert batch["input_ids"].shape == (1, 16)  # padded to a multiple of 8
    later_pieces = [4, 0, 0] if label_all_tokens else [-100, -100, -100]  # B-PER's piece becomes I-PER
    expected_labels = [-100, 2, later_pieces[0], 4, 0, 0, 1, 3, 0, *later_pieces[1:], 0, -100] + [-100] * 3
    assert batch["labels"][0].tolist() == expected_labels
    # Each word is scored once, on its first sub-token, whether or not later pieces are labelled.
    assert batch["word_ids"][0].tolist() == [-1, 0, -1, 1, 2, 3, 4, 5, 6, -1, -1, 7, -1] + [-1] * 3
    assert batch["attention_mask"][0].tolist() == [1] * 13 + [0] * 3
    assert batch["example_index"].tolist() == [0]


def test_continuation_of_b_tags_is_the_matching_i_tag():
    # B-MISC has no I-MISC here, so its later pieces keep B-MISC rather than borrowing another type.
    assert continuation_labels(["O", "B-PER", "I-PER", "B-MISC"]) == (0, 2, 2, 3)


# --------------------------------------------------------------------------------------------------------
# Long rows in windows.


def window_rows() -> tuple[list[list[str]], list[list[str]]]:
    """A 30-word row of one-piece words, a row mixing multi-piece words, and one with an erased word."""
    plain = [SINGLE_PIECE_WORDS[position % len(SINGLE_PIECE_WORDS)] for position in range(30)]
    mixed = [["Johnson", "met", "unbelievable", "Mary", "."][position % 5] for position in range(23)]
    erased = ["peter", "\u200b", "met", "mary"]  # the normalizer removes the zero-width space entirely
    rows = [plain, mixed, erased]
    tags = [
        ["B-PER" if word.lower() in ("peter", "mary", "johnson") else "O" for word in row] for row in rows
    ]
    return rows, tags


def test_long_rows_are_windowed_and_each_word_scored_once(write_split, piece_tokenizer_dir, datasets_cache):
    rows, tags = window_rows()
    path = write_split("train", ".jsonl", tokens=rows, ner_tags=tags)
    write_split("validation", ".jsonl", tokens=rows, ner_tags=tags)
    datamodule = make_module(path.parent, piece_tokenizer_dir, datasets_cache, max_length=16, stride=4)
    datamodule.setup("fit")
    tokenizer = datamodule.tokenizer
    label_ids = {name: index for index, name in enumerate(datamodule.label_names)}
    for split in ("train", "validation"):
        features = list(datamodule.datasets[split])
        assert all(len(feature["input_ids"]) <= 16 for feature in features)
        by_example = scored_words(features)
        for example, row in enumerate(rows):
            scored = sorted(by_example[example])
            assert [word for word, _, _ in scored] == list(range(len(row)))  # every word, exactly once
            for word, token, label in scored:
                first_piece = tokenizer(row[word], add_special_tokens=False)["input_ids"][:1] or [
                    tokenizer.unk_token_id
                ]
                assert (token, label) == (first_piece[0], label_ids[tags[example][word]])
    # 30 one-piece words, 14 per window, windows 10 tokens apart: [0, 14), [10, 24), [20, 30). A word in
    # an overlap is scored where it has more context: 10-11 in the first window, 20-21 in the second.
    plain = [feature for feature in datamodule.datasets["validation"] if feature["example_index"] == 0]
    assert [sorted(w for w in feature["word_ids"] if w >= 0) for feature in plain] == [
        list(range(0, 12)), list(range(12, 22)), list(range(22, 30)),
    ]  # fmt: skip
    # Training windows label a word's first token in every window that holds it (the overlaps too).
    train_plain = [feature for feature in datamodule.datasets["train"] if feature["example_index"] == 0]
    assert [sum(label != -100 for label in feature["labels"]) for feature in train_plain] == [14, 14, 10]


# --------------------------------------------------------------------------------------------------------
# CoNLL column files.

CONLL_TEXT = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER


-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
"""


def test_token_budget_batches_pad_labels_too(write_split, piece_tokenizer_dir, datasets_cache):
    rows, tags = window_rows()
    path = write_split("train", ".jsonl", tokens=rows, ner_tags=tags)
    datamodule = make_module(path.parent, piece_tokenizer_dir, datasets_cache, max_length=16, stride=4,
                             max_tokens=32)  # fmt: skip
    datamodule.setup("fit")
    batches = list(datamodule.train_dataloader())
    assert sum(batch["input_ids"].shape[0] for batch in batches) == len(datamodule.datasets["train"])
    for batch in batches:
        assert batch["input_ids"].numel() <= 32
        assert batch["labels"].shape == batch["input_ids"].shape


def test_conll_files_are_read_and_tag_names_inferred(tmp_path, piece_tokenizer_dir, datasets_cache):
    data_dir = tmp_path / "conll"
    data_dir.mkdir()
    (data_dir / "train.conll").write_text(CONLL_TEXT)
    (data_dir / "validation.txt").write_text(CONLL_TEXT)
    datamodule = make_module(data_dir, piece_tokenizer_dir, datasets_cache)
    assert datamodule.label_names == ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER"]
    assert datamodule.validation_split_names == ["validation"] and datamodule.test_split_names == []
    raw, _ = datamodule.load_raw_splits(["train", "validation"])
    assert raw["validation"]["tokens"] == [
        ["EU", "rejects", "German", "call"], ["Peter", "Blackburn"], ["BRUSSELS"],
    ]  # fmt: skip
    assert raw["train"]["ner_tags"][1] == ["B-PER", "I-PER"]
    datamodule.setup("fit")
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["example_index"].tolist() == [0, 1, 2]
    # The tag column is chosen by index: column 1 holds part-of-speech tags (no "O" among them).
    by_part_of_speech = make_module(data_dir, piece_tokenizer_dir, datasets_cache, conll_tag_column=1)
    assert by_part_of_speech.label_names == ["JJ", "NN", "NNP", "VBZ"]


def test_an_unknown_conll_tag_is_named_by_its_sentence(tmp_path, piece_tokenizer_dir, datasets_cache):
    """A CoNLL file has sentences, not rows, and no 'ner_tags' column: the message said both."""
    data_dir = tmp_path / "conll"
    data_dir.mkdir()
    (data_dir / "train.conll").write_text("peter B-PER\nlives O\n\n")
    (data_dir / "validation.conll").write_text("mary B-PER\n\njohn B-EVENT\nmet O\n\n")
    with pytest.raises(DataError) as refusal:
        make_module(data_dir, piece_tokenizer_dir, datasets_cache).setup("fit")
    assert str(refusal.value).startswith(
        f"Tag 'B-EVENT' in sentence 1 (counting from 0) of {data_dir / 'validation.conll'} is not one of"
    )


def test_conll_line_without_tag_is_named(tmp_path, piece_tokenizer_dir, datasets_cache):
    data_dir = tmp_path / "conll"
    data_dir.mkdir()
    (data_dir / "train.conll").write_text("EU B-ORG\nrejects\n")
    with pytest.raises(DataError, match=r"Line 2 of '.*train\.conll' has 1 column\(s\)"):
        make_module(data_dir, piece_tokenizer_dir, datasets_cache)


def test_a_conll_word_with_a_space_inside_is_kept_whole_or_refused(
    tmp_path, piece_tokenizer_dir, datasets_cache
):
    """Split at every space, "New York B-LOC" trained the word "New" alone; "10\u00a0000" lost "000"."""
    data_dir = tmp_path / "conll"
    data_dir.mkdir()
    (data_dir / "train.conll").write_text(
        "John\tB-PER\nNew York\tB-LOC\n10\u00a0000\tO\n\n", encoding="utf-8"
    )
    raw, _ = make_module(data_dir, piece_tokenizer_dir, datasets_cache).load_raw_splits(["train"])
    assert raw["train"]["tokens"] == [["John", "New York", "10\u00a0000"]]
    (data_dir / "train.conll").write_text("John B-PER\nNew York B-LOC\n\n")
    with pytest.raises(
        DataError, match=r"Line 2 of '.*train\.conll' has 3 columns where line 1 has 2: a word"
    ):
        make_module(data_dir, piece_tokenizer_dir, datasets_cache)
    # Runs of tabs that line the columns up are one separator.
    (data_dir / "train.conll").write_text("EU\t\tB-ORG\nrejects\tO\n\n")
    raw, _ = make_module(data_dir, piece_tokenizer_dir, datasets_cache).load_raw_splits(["train"])
    assert raw["train"]["tokens"] == [["EU", "rejects"]] and raw["train"]["ner_tags"] == [["B-ORG", "O"]]


# --------------------------------------------------------------------------------------------------------
# Errors.


def test_data_errors_name_file_column_and_value(write_split, tmp_path, piece_tokenizer_dir, datasets_cache):
    words = [["peter", "met"], ["mary", "at", "the"]]
    path = write_split("train", ".jsonl", words=words, ner_tags=[["B-PER", "O"], ["B-PER", "O", "O"]])
    with pytest.raises(DataError, match=r"'tokens' is missing from .*train\.jsonl.*present: words, ner_tags"):
        make_module(path.parent, piece_tokenizer_dir, datasets_cache).setup("fit")
    with pytest.raises(DataError, match=r"'labels' is missing from .*present: words, ner_tags"):
        make_module(path.parent, piece_tokenizer_dir, datasets_cache, tags_column="labels")
    write_split("train", ".jsonl", tokens=words, ner_tags=[["B-PER", "O"], ["B-PER", "O"]])
    with pytest.raises(DataError, match=r"Row 1 of .* has 2 tags in column 'ner_tags' for 3 words"):
        make_module(path.parent, piece_tokenizer_dir, datasets_cache).setup("fit")
    write_split("train", ".jsonl", tokens=words, ner_tags=[["B-PER", "O"], ["B-PER", "O", "O"]])
    write_split("validation", ".jsonl", tokens=words, ner_tags=[["O", "O"], ["O", "B-FOO", "O"]])
    with pytest.raises(DataError, match=r"Tag 'B-FOO' in row 1 of .*validation\.jsonl .* \['O', 'B-PER'\]"):
        make_module(path.parent, piece_tokenizer_dir, datasets_cache).setup("fit")
    # Ids in validation against names sorted from train's text tags: the order is a guess (was taken).
    write_split("validation", ".jsonl", tokens=words, ner_tags=[[1, 0], [1, 0, 0]])
    with pytest.raises(DataError, match=r"validation\.jsonl holds integer ids, but the tag names come from"):
        make_module(path.parent, piece_tokenizer_dir, datasets_cache).setup("fit")
    given = make_module(path.parent, piece_tokenizer_dir, datasets_cache, label_names=["O", "B-PER"])
    given.setup("fit")  # label_names says which id is which tag
    ids_dir = tmp_path / "ids"
    write_split("train", tokens=words, ner_tags=[[1, 0], [1, 0, 5]], directory=ids_dir)
    with pytest.raises(DataError, match="integer ids without names; set label_names"):
        make_module(ids_dir, piece_tokenizer_dir, datasets_cache)
    named = make_module(ids_dir, piece_tokenizer_dir, datasets_cache, label_names=["O", "B-PER", "I-PER"])
    with pytest.raises(DataError, match=r"Tag 5 in row 1 of .*train\.parquet.*\(ids 0 to 2\)"):
        named.setup("fit")
    with pytest.raises(MissingDataError, match=r"no files for splits \['validation'\].*found: train"):
        named.setup("validate")


def test_configuration_errors(tmp_path, piece_tokenizer_dir, datasets_cache):
    with pytest.raises(MissingDataError, match=r"'.*absent' \(data.init_args.data_dir\) does not exist"):
        make_module(tmp_path / "absent", piece_tokenizer_dir, datasets_cache)
    with pytest.raises(DataError, match=r"stride \(8\) must be at least 0 and below max_length \(8\)"):
        make_module(tmp_path, piece_tokenizer_dir, datasets_cache, max_length=8, stride=8, label_names=["O"])
    with pytest.raises(DataError, match="Give a hub dataset id"):
        TokenClassificationDataModule(tokenizer=piece_tokenizer_dir, dataset=None)
    with pytest.raises(DataError, match="Could not load hub dataset 'someone/no-such-dataset'"):
        TokenClassificationDataModule(tokenizer=piece_tokenizer_dir, dataset="someone/no-such-dataset")


def test_stride_must_leave_room_for_special_tokens(write_split, piece_tokenizer_dir, datasets_cache):
    path = write_split("train", ".jsonl", tokens=[["peter"]], ner_tags=[["B-PER"]])
    datamodule = make_module(path.parent, piece_tokenizer_dir, datasets_cache, max_length=8, stride=6)
    with pytest.raises(DataError, match=r"stride \(6\) must be below max_length \(8\) minus the 2 special"):
        datamodule.setup("fit")


# --------------------------------------------------------------------------------------------------------
# Prediction on raw text.

TEXTS = [
    "Peter met Mary at the park.",
    "  Johnson  lives in New York,unbelievable!",
    "",
    " ".join(["mary", "met", "johnson"] * 8),  # longer than one 16-token window
]


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_raw_text_predict_examples_slice_back_to_words(suffix, tmp_path, piece_tokenizer_dir, datasets_cache):
    predict_file = tmp_path / f"texts{suffix}"
    if suffix == ".txt":
        predict_file.write_text("\n".join(TEXTS) + "\n")
    else:
        pd.DataFrame({"text": TEXTS}).to_json(predict_file, orient="records", lines=True)
    datamodule = make_module(
        tmp_path / "no-training-data", piece_tokenizer_dir, datasets_cache, predict_file=str(predict_file),
        label_names=["O", "B-PER", "I-PER"], max_length=16, stride=4, eval_batch_size=16,
    )  # fmt: skip
    assert datamodule.split_names_for("predict") == ["predict"]
    # Lightning calls prepare_data with the trainer's stage set; predicting a file needs no dataset.
    datamodule.trainer = SimpleNamespace(state=SimpleNamespace(fn="predict"), distributed_sampler_kwargs=None)
    datamodule.prepare_data()
    datamodule.setup("predict")
    examples = datamodule.predict_examples()
    assert sorted(examples) == [0, 1, 2, 3]
    assert examples[0]["words"] == ["Peter", "met", "Mary", "at", "the", "park", "."]
    assert examples[1]["words"] == ["Johnson", "lives", "in", "New", "York", ",", "unbelievable", "!"]
    assert examples[2]["words"] == []
    for index, text in enumerate(TEXTS):
        assert examples[index]["text"] == text
        assert [text[start:end] for start, end in examples[index]["word_offsets"]] == examples[index]["words"]
    batch = next(iter(datamodule.predict_dataloader()))
    assert "labels" not in batch
    scored = scored_words(datamodule.datasets["predict"])
    for index in (0, 1, 3):
        assert sorted(word for word, _, _ in scored[index]) == list(range(len(examples[index]["words"])))
    assert 2 not in scored and batch["example_index"].tolist().count(3) > 1


def test_dataset_predict_examples_join_tokens(write_split, piece_tokenizer_dir, datasets_cache):
    path = write_split("train", tokens=[["peter", "met"]], ner_tags=[["B-PER", "O"]])
    write_split("test", tokens=[["Johnson", "lives", "in", "New", "York", "."]])  # unlabelled
    datamodule = make_module(path.parent, piece_tokenizer_dir, datasets_cache)
    assert datamodule.split_names_for("predict") == ["test"]
    datamodule.setup("predict")
    example = datamodule.predict_examples()[0]
    assert example["text"] == "Johnson lives in New York ."
    assert [example["text"][start:end] for start, end in example["word_offsets"]] == example["words"]
    assert "labels" not in next(iter(datamodule.predict_dataloader()))


# --------------------------------------------------------------------------------------------------------
# Caching.


def test_second_setup_reuses_the_tokenized_cache(tmp_path, piece_tokenizer_dir, tokenizer_calls):
    data_dir = tmp_path / "conll"
    data_dir.mkdir()
    (data_dir / "train.conll").write_text(CONLL_TEXT)
    (data_dir / "validation.conll").write_text(CONLL_TEXT)
    cache_dir = str(tmp_path / "cache")
    first = make_module(data_dir, piece_tokenizer_dir, cache_dir)
    calls = tokenizer_calls(first.tokenizer)
    first.prepare_data()
    assert calls, "the first run must tokenize"
    calls.clear()
    first.setup("fit")
    second = make_module(data_dir, piece_tokenizer_dir, cache_dir)  # another rank or a later run
    second.setup("fit")
    assert calls == []
    for split in ("train", "validation"):
        files = second.datasets[split].cache_files
        assert files and files == first.datasets[split].cache_files
    # Another stride is another tokenization; an edited file is read and tokenized again.
    make_module(data_dir, piece_tokenizer_dir, cache_dir, max_length=8, stride=2).setup("fit")
    assert calls
    calls.clear()
    (data_dir / "train.conll").write_text(CONLL_TEXT.replace("rejects", "accepts"))
    third = make_module(data_dir, piece_tokenizer_dir, cache_dir)
    third.setup("fit")
    assert calls and third.predict_examples("validation")[0]["words"][1] == "rejects"
    # Also when the edit keeps the size and sets the modification time back (`cp -p`, `rsync -a`).
    validation = data_dir / "validation.conll"
    stamp = validation.stat()
    validation.write_text(CONLL_TEXT.replace("rejects", "accepts"))
    os.utime(validation, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert validation.stat().st_size == stamp.st_size
    fourth = make_module(data_dir, piece_tokenizer_dir, cache_dir)
    fourth.setup("fit")
    assert fourth.predict_examples("validation")[0]["words"][1] == "accepts"


# --------------------------------------------------------------------------------------------------------
# The shared CoNLL-2003 copy.


def test_conll2003_parquet_loads_with_class_label_names(bert_tokenizer_dir, datasets_cache):
    data_dir = shared_path("data", "conll2003")
    datamodule = make_module(
        data_dir, bert_tokenizer_dir, datasets_cache, limit_train_samples=64, limit_eval_samples=8,
        batch_size=8,
    )  # fmt: skip
    assert datamodule.label_names == CONLL_LABELS and datamodule.num_labels == 9
    assert datamodule.split_names_for("test") == ["test"]
    datamodule.setup("fit")
    train_batch = next(iter(datamodule.train_dataloader()))
    assert set(train_batch) == {"input_ids", "attention_mask", "labels", "word_ids", "example_index"}
    assert train_batch["input_ids"].shape[1] % 8 == 0 and train_batch["example_index"].shape == (8,)
    batch = next(iter(datamodule.val_dataloader()))
    expected = pd.read_parquet(Path(data_dir) / "validation.parquet").head(8)
    assert batch["example_index"].tolist() == list(range(8))  # one window per sentence at 512 tokens
    assert (batch["labels"][:, 0] == -100).all() and (
        batch["labels"][batch["attention_mask"] == 0] == -100
    ).all()
    for row, tags in enumerate(expected["ner_tags"]):
        scored = batch["word_ids"][row] >= 0
        assert batch["word_ids"][row][scored].tolist() == list(range(len(tags)))
        assert batch["labels"][row][scored].tolist() == list(tags)


def test_conll2003_in_small_windows_scores_every_word_once(bert_tokenizer_dir, datasets_cache):
    data_dir = shared_path("data", "conll2003")
    datamodule = make_module(
        data_dir, bert_tokenizer_dir, datasets_cache, limit_eval_samples=64, max_length=16, stride=4,
    )  # fmt: skip
    datamodule.setup("validate")
    features = list(datamodule.datasets["validation"])
    assert len(features) > 64  # many sentences need several windows
    expected = pd.read_parquet(Path(data_dir) / "validation.parquet").head(64)
    by_example = scored_words(features)
    for example, tags in enumerate(expected["ner_tags"]):
        scored = sorted(by_example[example])
        assert [word for word, _, _ in scored] == list(range(len(tags)))
        assert [label for _, _, label in scored] == list(tags)


@pytest.mark.parametrize("content", ["", "\n\n   \n"])
def test_a_conll_split_without_sentences_is_named(tmp_path, content):
    """datasets refused to build the empty split with 'Instruction "validation" corresponds to no data!'."""
    (tmp_path / "train.conll").write_text("John B-PER\nlives O\n")
    (tmp_path / "validation.conll").write_text(content)
    with pytest.raises(DataError) as refusal:
        load_word_splits(tmp_path, ["train", "validation"], "tokens", "ner_tags", -1, str(tmp_path / "cache"))
    assert str(refusal.value) == (
        f"Split 'validation' file(s) ['{tmp_path / 'validation.conll'}'] hold no sentences."
    )


# --------------------------------------------------------------------------------------------------------
# Tag ids with ClassLabel names against label_names given in another order.

CLASS_LABEL_NAMES = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
REORDERED_NAMES = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def write_class_label_split(directory: Path, split: str, names: list[str]) -> None:
    """A parquet split whose tag column is a `Sequence(ClassLabel)`, as the hub's CoNLL-2003 is."""
    import datasets

    features = datasets.Features(
        {"tokens": datasets.Sequence(datasets.Value("string")),
         "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))}
    )  # fmt: skip
    rows = {"tokens": [["peter", "lives", "in", "new", "york"]], "ner_tags": [[1, 0, 0, 3, 4]]}
    directory.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(directory / f"{split}.parquet"))


def test_class_label_ids_are_read_by_name_not_position(tmp_path, piece_tokenizer_dir, datasets_cache):
    """Ids were taken by position: with label_names in another order, every PER trained as LOC."""
    for split in ("train", "validation"):
        write_class_label_split(tmp_path, split, CLASS_LABEL_NAMES)
    datamodule = make_module(tmp_path, piece_tokenizer_dir, datasets_cache, label_names=REORDERED_NAMES)
    datamodule.setup("validate")
    words = scored_words(datamodule.datasets["validation"])[0]
    assert [REORDERED_NAMES[label] for _, _, label in sorted(words)] == ["B-PER", "O", "O", "B-LOC", "I-LOC"]
    assert datamodule.gold_tags("validation") == {0: ["B-PER", "O", "O", "B-LOC", "I-LOC"]}


def test_class_label_name_missing_from_label_names_is_refused(tmp_path, piece_tokenizer_dir, datasets_cache):
    for split in ("train", "validation"):
        write_class_label_split(tmp_path, split, CLASS_LABEL_NAMES)
    datamodule = make_module(
        tmp_path, piece_tokenizer_dir, datasets_cache, label_names=["O", "B-PER", "I-PER", "B-GPE", "I-GPE"]
    )
    with pytest.raises(DataError, match=r"names its tag ids .* and 'B-LOC' is not one of label_names"):
        datamodule.setup("validate")


@pytest.mark.parametrize("blank", ["", "  "])
def test_an_empty_or_all_space_word_is_named_by_row_and_position(
    blank, write_split, piece_tokenizer_dir, datasets_cache
):
    """The tokenizer makes no token of it: its tag could never be predicted, and the written .conll
    would lose a column."""
    words = [["peter", "met"], ["mary", blank, "the"]]
    path = write_split("train", ".jsonl", tokens=words, ner_tags=[["B-PER", "O"], ["B-PER", "O", "O"]])
    expected = rf"^Word 1 of row 1 of .*train\.jsonl \(column 'tokens'\) is '{blank}': a word needs text"
    with pytest.raises(DataError, match=expected):
        make_module(path.parent, piece_tokenizer_dir, datasets_cache).setup("fit")


def test_a_word_with_spaces_inside_keeps_one_conll_column():
    from neobert_tasks.tasks.token_classification import conll_columns  # noqa: PLC0415

    examples = {0: {"words": ["San Francisco", "is"]}}
    text = conll_columns(examples, {0: {0: (1, 0.9), 1: (0, 0.8)}}, ["O", "B-LOC"], {0: ["B-LOC", "O"]})
    assert "".join(text) == "San_Francisco B-LOC B-LOC\nis O O\n"


def test_inputs_predict_never_reached_are_left_out_of_the_files_not_tagged_o():
    """With trainer.limit_predict_batches, the inputs past the limit were written with every word "O"."""
    from types import SimpleNamespace

    from neobert_tasks.tasks.token_classification import TokenClassificationTask  # noqa: PLC0415

    def example(text):
        words = text.split()
        starts = [text.index(word) for word in words]
        return {
            "text": text,
            "words": words,
            "word_offsets": [[s, s + len(w)] for s, w in zip(starts, words, strict=True)],
        }

    examples = {0: example("Peter lives"), 1: example("Mary met John"), 2: example("")}
    datamodule = SimpleNamespace(predict_examples=lambda split: examples)
    task = SimpleNamespace(label_names=["O", "B-PER"], metric_mode="conlleval")
    outputs = [{"example": [0, 0], "word": [0, 1], "prediction": [1, 0], "score": [0.9, 0.8]}]  # input 0 only
    files = TokenClassificationTask.prediction_files(task, outputs, ["predict"], datamodule)
    lines = [json.loads(line) for line in files["predict.jsonl"]]
    assert [line["index"] for line in lines] == [0, 2]  # 1 was never predicted; 2 has no words at all
    assert "".join(files["predict.conll"]) == "Peter B-PER\nlives O\n\n"
