"""Tests of QuestionAnsweringDataModule: windows and answer positions, offsets, the official SQuAD JSON
format, error messages and the tokenization cache.

Window tests use the tiny WordPiece tokenizer of `conftest.py`, where every word is one token, so a context of
N words is N tokens and each window's content can be computed by hand; the SQuAD tests use the shared copy
and the bert-base-uncased tokenizer, and skip without them.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

import neobert_tasks.data.squad_windows as squad_windows
from neobert_tasks.data import DataError, MissingDataError, QuestionAnsweringDataModule
from tests.conftest import shared_path

pytestmark = pytest.mark.filterwarnings("ignore:No validation split")

# Question "question ?" is 2 tokens; with [CLS] and two [SEP] a window of 16 tokens holds 11 context tokens,
# and consecutive windows share 4 of them: context tokens 0-10, 7-17 and 14-19 for a 20-word context.
MAX_LENGTH, DOC_STRIDE = 16, 4
QUESTION = "  question ?"  # leading spaces are stripped
CONTEXT_START = 4  # [CLS] question ? [SEP]
WINDOWS = [(0, 10), (7, 17), (14, 19)]  # first and last context token of each window


def words_context(words: list[str]) -> str:
    return " ".join(words)


def answer_of(words: list[str], first: int, last: int) -> dict[str, list]:
    """The answer made of words `first` to `last` of the context `words`, with its character start."""
    start = sum(len(word) + 1 for word in words[:first])
    return {"text": [" ".join(words[first : last + 1])], "answer_start": [start]}


@pytest.fixture
def context_words() -> list[str]:
    """Twenty distinct words of the tiny vocabulary: a context of 20 tokens."""
    text = "the a movie film was is good bad great awful plot actors story boring fun i liked hated cat dog"
    return text.split(" ")


def make_module(data_dir: Path, tokenizer: str, cache_dir: str, **overrides) -> QuestionAnsweringDataModule:
    settings = dict(data_dir=str(data_dir), batch_size=4, cache_dir=cache_dir)
    settings.update(overrides)
    return QuestionAnsweringDataModule(tokenizer=tokenizer, **settings)


def write_rows(write_split, split: str, rows: list[dict], suffix: str = ".parquet", directory=None) -> Path:
    columns = {
        name: [row[name] for row in rows] for name in ("id", "title", "context", "question", "answers")
    }
    return write_split(split, suffix, directory, **columns)


def row(identifier: str, context: str, answers: dict, question: str = QUESTION) -> dict:
    return {"id": identifier, "title": "t", "context": context, "question": question, "answers": answers}


def windows_of(datamodule: QuestionAnsweringDataModule, split: str, example: int) -> list[dict]:
    return [feature for feature in datamodule.features(split) if feature["example_index"] == example]


def test_answer_positions_at_window_edges_across_and_inside_windows(
    write_split, tiny_tokenizer_dir, datasets_cache, context_words
):
    assert len(context_words) == 20
    context = words_context(context_words)
    # Answer spans (first, last context token) and the expected (start, end) per window; 0 is [CLS].
    cases = {
        "edge": ((10, 10), [(14, 14), (7, 7), (0, 0)]),  # last token of window 0, also inside window 1
        "across": ((5, 12), [(0, 0), (0, 0), (0, 0)]),  # fully inside no window
        "second": ((12, 13), [(0, 0), (9, 10), (0, 0)]),  # only window 1 holds it
        "straddles": ((9, 11), [(0, 0), (6, 8), (0, 0)]),  # cut by window 0's end, whole in window 1
    }
    rows = [row(name, context, answer_of(context_words, *span)) for name, (span, _) in cases.items()]
    path = write_rows(write_split, "validation", rows)
    datamodule = make_module(path.parent, tiny_tokenizer_dir, datasets_cache, max_length=MAX_LENGTH,
                             doc_stride=DOC_STRIDE)  # fmt: skip
    datamodule.setup("validate")
    tokenizer = datamodule.tokenizer
    for example, (name, (_, expected)) in enumerate(cases.items()):
        windows = windows_of(datamodule, "validation", example)
        positions = [(window["start_positions"], window["end_positions"]) for window in windows]
        assert positions == expected, name
        for window, (first, last) in zip(windows, WINDOWS, strict=True):
            tokens = tokenizer.convert_ids_to_tokens(window["input_ids"])
            assert tokens[CONTEXT_START : CONTEXT_START + last - first + 1] == context_words[first : last + 1]
            if window["start_positions"]:
                start, end = window["offset_mapping"][window["start_positions"]][0], window["offset_mapping"][
                    window["end_positions"]][1]  # fmt: skip
                assert context[start:end] == rows[example]["answers"]["text"][0]


def test_offsets_mark_only_context_tokens(write_split, tiny_tokenizer_dir, datasets_cache, context_words):
    context = words_context(context_words)
    path = write_rows(write_split, "validation", [row("q", context, answer_of(context_words, 0, 0))])
    datamodule = make_module(path.parent, tiny_tokenizer_dir, datasets_cache, max_length=MAX_LENGTH,
                             doc_stride=DOC_STRIDE)  # fmt: skip
    datamodule.setup("validate")
    windows = windows_of(datamodule, "validation", 0)
    assert [window["window_index"] for window in windows] == [0, 1, 2]
    for window, (first, last) in zip(windows, WINDOWS, strict=True):
        offsets = window["offset_mapping"]
        assert offsets[:CONTEXT_START] == [[-1, -1]] * CONTEXT_START  # [CLS] question ? [SEP]
        assert offsets[-1] == [-1, -1]  # the final [SEP]
        assert [context[start:end] for start, end in offsets[CONTEXT_START:-1]] == context_words[
            first : last + 1
        ]
    example_indices, arrays = datamodule.feature_lookup("validation", [2, 0])
    assert example_indices == [0, 0]
    assert arrays[0].tolist() == windows[2]["offset_mapping"] and arrays[1].shape == (MAX_LENGTH, 2)


def test_batches_carry_positions_and_feature_index_but_no_offsets(
    write_split, tiny_tokenizer_dir, datasets_cache, context_words
):
    context = words_context(context_words)
    rows = [row(f"q{number}", context, answer_of(context_words, number, number + 1)) for number in range(6)]
    path = write_rows(write_split, "train", rows)
    write_rows(write_split, "validation", rows[:3])
    datamodule = make_module(path.parent, tiny_tokenizer_dir, datasets_cache, max_length=MAX_LENGTH,
                             doc_stride=DOC_STRIDE)  # fmt: skip
    datamodule.setup("fit")
    assert datamodule.main_metric == "f1"
    assert len(datamodule.features("train")) == 18 and "offset_mapping" not in datamodule.features("train")[0]
    train_batch = next(iter(datamodule.train_dataloader()))
    assert set(train_batch) == {"input_ids", "attention_mask", "start_positions", "end_positions"}
    validation_batch = next(iter(datamodule.val_dataloader()))
    assert set(validation_batch) == {"input_ids", "attention_mask", "start_positions", "end_positions",
                                     "window_index"}  # fmt: skip
    assert validation_batch["window_index"].tolist() == [0, 1, 2, 3]
    assert datamodule.examples("validation")["id"] == ["q0", "q1", "q2"]


def test_token_budget_batches_of_windows(write_split, tiny_tokenizer_dir, datasets_cache, context_words):
    context = words_context(context_words)
    rows = [row(f"q{number}", context, answer_of(context_words, number, number + 1)) for number in range(6)]
    path = write_rows(write_split, "train", rows)
    datamodule = make_module(path.parent, tiny_tokenizer_dir, datasets_cache, max_length=MAX_LENGTH,
                             doc_stride=DOC_STRIDE, max_tokens=4 * MAX_LENGTH)  # fmt: skip
    datamodule.setup("fit")
    batches = list(datamodule.train_dataloader())
    assert sum(batch["start_positions"].numel() for batch in batches) == 18
    assert all(batch["input_ids"].numel() <= 4 * MAX_LENGTH for batch in batches)
    assert set(batches[0]) == {"input_ids", "attention_mask", "start_positions", "end_positions"}


def test_a_long_context_fits_one_window_at_neobert_length(write_split, tiny_tokenizer_dir, datasets_cache):
    words = ("the cat sat on a mat and " * 150).split()  # 1050 tokens
    context = words_context(words)
    rows = [row("long", context, answer_of(words, 1000, 1002))]
    path = write_rows(write_split, "validation", rows)
    long_windows = make_module(path.parent, tiny_tokenizer_dir, datasets_cache, max_length=4096)
    long_windows.setup("validate")
    (window,) = long_windows.features("validation")
    assert len(window["input_ids"]) == len(words) + CONTEXT_START + 1
    assert (window["start_positions"], window["end_positions"]) == (1004, 1006)
    short_windows = make_module(path.parent, tiny_tokenizer_dir, datasets_cache, max_length=384)
    short_windows.setup("validate")
    assert len(short_windows.features("validation")) == 4


def test_unanswerable_questions_need_version_2(
    write_split, tiny_tokenizer_dir, datasets_cache, context_words
):
    context = words_context(context_words)
    rows = [row("answerable", context, answer_of(context_words, 2, 3)),
            row("impossible", context, {"text": [], "answer_start": []})]  # fmt: skip
    path = write_rows(write_split, "validation", rows)
    with pytest.raises(DataError, match=r"Question 'impossible' of .*validation.parquet has no answer"):
        make_module(path.parent, tiny_tokenizer_dir, datasets_cache).setup("validate")
    datamodule = make_module(
        path.parent, tiny_tokenizer_dir, datasets_cache, version_2=True, max_length=64, doc_stride=16
    )
    datamodule.setup("validate")
    assert [(f["start_positions"], f["end_positions"]) for f in datamodule.features("validation")] == [
        (CONTEXT_START + 2, CONTEXT_START + 3),
        (0, 0),
    ]
    # A v2.0 split of unanswerable questions only: its empty answer lists are read with no item type.
    for suffix in (".parquet", ".jsonl"):
        impossible = [row(f"impossible-{n}", context, {"text": [], "answer_start": []}) for n in range(2)]
        path = write_rows(write_split, "validation", impossible, suffix, directory=path.parent / suffix[1:])
        none_answered = make_module(
            path.parent, tiny_tokenizer_dir, datasets_cache, version_2=True, max_length=64, doc_stride=16
        )
        none_answered.setup("validate")  # was refused: "must hold {'text': [strings], …}, not … null"
        assert [(f["start_positions"], f["end_positions"]) for f in none_answered.features("validation")] == [
            (0, 0),
            (0, 0),
        ]


def test_official_squad_json_is_read_into_flat_columns(tmp_path, tiny_tokenizer_dir, datasets_cache):
    data_dir = tmp_path / "official"
    data_dir.mkdir()
    context = "the cat sat on the mat"
    paragraphs = [
        {
            "context": context,
            "qas": [
                {"id": "a", "question": "cat ?", "answers": [{"text": "the mat", "answer_start": 15}] * 2},
                {"id": "b", "question": "dog ?", "answers": [], "is_impossible": True,
                 "plausible_answers": [{"text": "cat", "answer_start": 4}]},
            ],
        }
    ]  # fmt: skip
    document = {"version": "v2.0", "data": [{"title": "Cats", "paragraphs": paragraphs}]}
    (data_dir / "validation.json").write_text(json.dumps(document))
    datamodule = make_module(
        data_dir, tiny_tokenizer_dir, datasets_cache, version_2=True, max_length=32, doc_stride=8
    )
    datamodule.setup("validate")
    examples = datamodule.examples("validation").to_list()
    assert examples == [
        {"id": "a", "title": "Cats", "context": context, "question": "cat ?",
         "answers": {"text": ["the mat", "the mat"], "answer_start": [15, 15]}},
        {"id": "b", "title": "Cats", "context": context, "question": "dog ?",
         "answers": {"text": [], "answer_start": []}},
    ]  # fmt: skip
    # Flat JSON lines with the hub's columns are read as such.
    (data_dir / "validation.json").write_text("".join(json.dumps(row) + "\n" for row in examples))
    flat = make_module(
        data_dir, tiny_tokenizer_dir, datasets_cache, version_2=True, max_length=32, doc_stride=8
    )
    flat.setup("validate")
    assert flat.examples("validation").to_list() == examples


def test_malformed_official_json_names_file_and_key(tmp_path, tiny_tokenizer_dir, datasets_cache):
    data_dir = tmp_path / "broken"
    data_dir.mkdir()
    document = {"data": [{"title": "t", "paragraphs": [{"context": "the cat"}]}]}
    (data_dir / "validation.json").write_text(json.dumps(document))
    with pytest.raises(DataError, match=r"article 0 of '.*validation.json' lacks key 'qas'"):
        make_module(data_dir, tiny_tokenizer_dir, datasets_cache).setup("validate")


def test_data_errors_name_file_column_and_question(write_split, tmp_path, tiny_tokenizer_dir, datasets_cache):
    context = "the cat sat on the mat"
    good = row("good", context, {"text": ["cat"], "answer_start": [4]})
    misplaced = [row("moved", context, {"text": ["cat"], "answer_start": [5]}),
                 row("beyond", context, {"text": ["mat"], "answer_start": [40]})]  # fmt: skip
    path = write_rows(write_split, "train", [good, *misplaced])
    expected = r"2 answer\(s\) of .*train.parquet are not the context's text at their answer_start, e.g."
    with pytest.raises(DataError, match=expected + r" question 'moved' \(answer_start 5, text 'cat'\)"):
        make_module(path.parent, tiny_tokenizer_dir, datasets_cache).setup("fit")
    no_answers = write_split(
        "train", directory=tmp_path / "columns", id=["a"], context=[context], question=["q"]
    )
    with pytest.raises(DataError, match=r"Column 'answers' is missing from .*columns/train.parquet"):
        make_module(no_answers.parent, tiny_tokenizer_dir, datasets_cache).setup("fit")
    wordy = [row("wordy", context, good["answers"], "cat " * 12)]
    long_question = write_rows(write_split, "train", wordy, ".jsonl", tmp_path / "wordy")
    with pytest.raises(DataError, match=r"Question 'wordy' has 12 tokens, which leaves 1 of max_length 16"):
        make_module(
            long_question.parent, tiny_tokenizer_dir, datasets_cache, max_length=16, doc_stride=1
        ).setup("fit")
    # A question longer than max_length leaves nothing, not a negative count.
    with pytest.raises(DataError, match=r"Question 'wordy' has 12 tokens, which leaves 0 of max_length 8"):
        make_module(
            long_question.parent, tiny_tokenizer_dir, datasets_cache, max_length=8, doc_stride=1
        ).setup("fit")
    with pytest.raises(DataError, match=r"doc_stride \(16\) must be at least 0 and below max_length \(16\)"):
        make_module(path.parent, tiny_tokenizer_dir, datasets_cache, max_length=16, doc_stride=16)


def test_missing_splits_and_prediction_only_test_split(write_split, tiny_tokenizer_dir, datasets_cache):
    context = "the cat sat on the mat"
    path = write_split(
        "test", id=["t0", "t1"], title=["t", "t"], context=[context] * 2, question=["cat ?"] * 2
    )
    datamodule = make_module(path.parent, tiny_tokenizer_dir, datasets_cache, max_length=32, doc_stride=8)
    with pytest.raises(
        MissingDataError, match=r"has no files for splits \['train', 'validation'\] \(splits found: test;"
    ):
        datamodule.setup("fit")
    write_split("validation", id=["v"], title=["t"], context=[context], question=["cat ?"],
                answers=[{"text": ["cat"], "answer_start": [4]}])  # fmt: skip
    with pytest.raises(
        MissingDataError, match=r"No data for split 'train' in directory '.*' \(splits found: validation\)"
    ):
        datamodule.setup("fit")
    datamodule.setup("predict")  # a test split without answers is predicted, not scored
    assert datamodule.split_names_for("predict") == ["test"] and not datamodule.has_answers("test")
    batch = next(iter(datamodule.predict_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "window_index"}


def test_cached_setup_does_not_tokenize_again(
    write_split, tiny_tokenizer_dir, tmp_path, monkeypatch, context_words
):
    context = words_context(context_words)
    rows = [row(f"q{number}", context, answer_of(context_words, number, number)) for number in range(5)]
    path = write_rows(write_split, "train", rows)
    write_rows(write_split, "validation", rows)
    cache = str(tmp_path / "cache")
    first = make_module(path.parent, tiny_tokenizer_dir, cache, max_length=MAX_LENGTH, doc_stride=DOC_STRIDE)
    first.prepare_data()
    first.setup("fit")
    calls = []
    checker = squad_windows.check_question_lengths
    monkeypatch.setattr(
        squad_windows, "check_question_lengths", lambda *args: calls.append(args) or checker(*args)
    )
    second = make_module(path.parent, tiny_tokenizer_dir, cache, max_length=MAX_LENGTH, doc_stride=DOC_STRIDE)
    second.setup("fit")
    assert calls == []  # every batch that is tokenized goes through the question length check
    for split in ("train", "validation"):
        assert second.features(split).cache_files[0] == first.features(split).cache_files[0]
    assert second.features("validation").to_list() == first.features("validation").to_list()


def test_shared_squad_validation_windows_hold_their_answers(tmp_path):
    data_dir = shared_path("data", "squad")
    tokenizer = str(shared_path("tokenizers", "bert-base-uncased"))
    datamodule = QuestionAnsweringDataModule(
        tokenizer=tokenizer, data_dir=str(data_dir), limit_eval_samples=100, max_length=128, doc_stride=32,
        cache_dir=str(tmp_path),
    )  # fmt: skip
    datamodule.setup("validate")
    examples = datamodule.examples("validation")
    features = datamodule.features("validation")
    assert len(features) > len(examples) == 100  # some contexts need several 128-token windows
    answered = [feature for feature in features if feature["start_positions"]]
    matches = 0
    for feature in answered:
        offsets = feature["offset_mapping"]
        example = examples[feature["example_index"]]
        start, end = offsets[feature["start_positions"]][0], offsets[feature["end_positions"]][1]
        matches += example["context"][start:end] == example["answers"]["text"][0]
    # Token spans reproduce the first gold answer, except where its answer_start points inside a longer
    # token (a handful of SQuAD's crowd-sourced dev answers, e.g. "8" inside "18").
    assert len(answered) >= len(examples) and matches >= 0.9 * len(answered)


def test_predict_file_questions_with_or_without_ids(tmp_path, tiny_tokenizer_dir, datasets_cache):
    """A file of questions over contexts (no data_dir split needed): ids from the file, as text, or row
    numbers; an official SQuAD JSON file keeps its own ids."""
    context = "the cat sat on the mat"
    make = functools.partial(
        make_module, tmp_path / "no_data", tiny_tokenizer_dir, datasets_cache, max_length=32, doc_stride=8
    )
    jsonl = tmp_path / "questions.jsonl"
    jsonl.write_text(
        "".join(json.dumps({"question": q, "context": context}) + "\n" for q in ("cat ?", "mat ?"))
    )
    csv = tmp_path / "questions.csv"
    csv.write_text(f"id,question,context\n7,cat ?,{context}\n8,mat ?,{context}\n")
    official = tmp_path / "questions.json"
    qas = [
        {"id": "q-a", "question": "cat ?", "answers": []},
        {"id": "q-b", "question": "mat ?"},
    ]  # no answers
    official.write_text(
        json.dumps({"data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]})
    )
    mixed = tmp_path / "mixed_ids.jsonl"  # ids 1 and "b": a JSON column, once cast to '1' and '"b"'
    mixed.write_text(
        "".join(json.dumps({"id": i, "question": "cat ?", "context": context}) + "\n" for i in (1, "b"))
    )
    for path, ids in (
        (jsonl, ["0", "1"]),
        (csv, ["7", "8"]),
        (official, ["q-a", "q-b"]),
        (mixed, ["1", "b"]),
    ):
        datamodule = make(predict_file=str(path))
        datamodule.setup("predict")
        assert datamodule.examples("predict")["id"] == ids, path.name
        batch = next(iter(datamodule.predict_dataloader()))
        assert batch["window_index"].tolist() == list(range(len(ids)))
    text = tmp_path / "questions.txt"
    text.write_text("cat ?\n")
    with pytest.raises(
        DataError, match=r"reads pairs: give a .csv, .tsv or .jsonl file with columns question,"
    ):
        make(predict_file=str(text)).setup("predict")
    (tmp_path / "no_context.jsonl").write_text(json.dumps({"question": "cat ?", "text": context}) + "\n")
    with pytest.raises(
        DataError, match=r"Column 'context' is missing from predict file '.*no_context.jsonl'"
    ):
        make(predict_file=str(tmp_path / "no_context.jsonl")).setup("predict")


def test_ids_on_some_rows_only_say_how_to_go_either_way():
    """Ids are optional as a column: a file with some rows unnamed was refused without saying so."""
    import datasets  # noqa: PLC0415

    from neobert_tasks.data.squad_json import check_question_columns  # noqa: PLC0415

    rows = datasets.Dataset.from_dict({"id": ["a", None], "context": ["c", "c"], "question": ["q", "q"]})
    with pytest.raises(DataError) as refusal:
        check_question_columns(rows, "predict file 'questions.jsonl'")
    assert str(refusal.value) == (
        "Row 1 of predict file 'questions.jsonl' has no value (null) in column 'id'; give every row an id, or"
        " drop the column to number the rows."
    )


def test_a_repeated_question_id_of_an_evaluated_split_is_refused(
    write_split, tiny_tokenizer_dir, datasets_cache
):
    """SQuAD's post-processing keys answers by id: the second question was dropped from scores and
    predictions without a word."""
    context = "the cat sat on the mat"
    rows = [row(name, context, {"text": ["cat"], "answer_start": [4]}) for name in ("a", "b", "a")]
    write_rows(write_split, "train", rows)
    path = write_rows(write_split, "validation", rows)
    with pytest.raises(DataError, match=r"^Question id 'a' of .*validation.parquet is in rows 0 and 2; each"):
        make_module(path.parent, tiny_tokenizer_dir, datasets_cache).setup("fit")


@pytest.mark.parametrize(("text", "start"), [("Paris", 14), ("Paris ", 14), (" Paris", 13), (" Paris ", 13)])
def test_spaces_around_an_answer_do_not_take_the_next_word(text, start):
    """Gold 'Paris ' was labelled 'Paris today', ' Paris' 'is Paris' (the text at answer_start is right)."""
    from neobert_tasks.data.squad_windows import answer_token_span  # noqa: PLC0415

    # [CLS] who [SEP] The answer is Paris today [SEP], over the context "The answer is Paris today".
    offsets = [(0, 0), (0, 3), (0, 0), (0, 3), (4, 10), (11, 13), (14, 19), (20, 25), (0, 0)]
    sequence_ids = [None, 0, None, 1, 1, 1, 1, 1, None]
    assert "The answer is Paris today"[start : start + len(text)] == text
    assert answer_token_span(offsets, sequence_ids, {"text": [text], "answer_start": [start]}) == (6, 6)
