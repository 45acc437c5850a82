"""SQuAD's rows: the official JSON format read into the hub's flat columns, and the checks of those columns.

An official file (``{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}``) becomes rows of
``id, title, context, question, answers``; rows of any source (these files, other split files, a hub
dataset) are checked before they are tokenized.

Official files are converted by `load_generated_split`, into the datasets cache like any other split, so
that their tokenization is cached as for parquet files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from neobert_tasks.data.sources import DataError, load_generated_split

ANSWERS_COLUMN = "answers"
QUESTION_COLUMNS = ("id", "context", "question")
STRING = datasets.Value("string")
SQUAD_FEATURES = datasets.Features(
    {"id": STRING, "title": STRING, "context": STRING, "question": STRING,
     ANSWERS_COLUMN: {"text": datasets.List(STRING), "answer_start": datasets.List(datasets.Value("int32"))}}
)  # fmt: skip

# ----------------------------------------------------------------------------------------------------------
# The official SQuAD JSON format.


def is_official_squad_json(path: Path) -> bool:
    """Whether a `.json` file is one official SQuAD document (`{"version": ..., "data": [articles]}`).

    JSON lines and arrays of flat rows are not; they are read by the `json` builder instead.
    """
    if path.suffix != ".json":
        return False
    with path.open(encoding="utf-8-sig", errors="replace") as handle:  # -sig: after any byte-order mark
        if handle.read(4096).lstrip()[:1] != "{":
            return False
        handle.seek(0)
        try:
            document = json.load(handle)
        except json.JSONDecodeError:  # JSON lines: several objects, one per line
            return False
    return isinstance(document, dict) and "data" in document


def official_rows(article: dict, path: str, article_number: int) -> Iterator[dict[str, Any]]:
    """Flat rows of one article of an official SQuAD file; `DataError` names a missing key and where."""
    where = f"article {article_number} of '{path}'"
    try:
        for paragraph in article["paragraphs"]:
            for question in paragraph["qas"]:
                # A predict file or an unlabelled test split may leave answers out: null, not "no answer".
                answers = [] if question.get("is_impossible", False) else question.get("answers")
                yield {
                    "id": str(question["id"]),
                    "title": article.get("title", ""),
                    "context": paragraph["context"],
                    "question": question["question"],
                    ANSWERS_COLUMN: None if answers is None else {
                        "text": [answer["text"] for answer in answers],
                        "answer_start": [answer["answer_start"] for answer in answers],
                    },
                }  # fmt: skip
    except (KeyError, TypeError) as error:
        raise DataError(
            f"The official SQuAD JSON in {where} lacks key {error} (articles need 'paragraphs' with"
            " 'context' and 'qas', questions 'id' and 'question')."
        ) from error


def read_official_squad(paths: list[str], file_stamps: list[list[int]]) -> Iterator[dict[str, Any]]:
    """Yield the flat rows of official SQuAD JSON files. `file_stamps` is not used here: it only enters the
    datasets cache key (see `load_generated_split`)."""
    del file_stamps
    for path in paths:
        with open(path, encoding="utf-8-sig") as handle:
            articles = json.load(handle)["data"]
        if not isinstance(articles, list):
            raise DataError(f"The top-level 'data' of '{path}' must be a list of articles.")
        for article_number, article in enumerate(articles):
            yield from official_rows(article, path, article_number)


def load_official_squad(split: str, files: list[Path], cache_dir: str | None) -> datasets.Dataset:
    """Official SQuAD JSON files as a memory-mapped dataset in the datasets cache, with the hub's columns;
    without ``answers`` where no question has that key (questions to predict, an unlabelled test split)."""
    dataset = load_generated_split(split, files, read_official_squad, SQUAD_FEATURES, cache_dir, "questions")
    unlabelled = dataset.with_format("arrow")[ANSWERS_COLUMN].null_count == len(dataset)
    return dataset.remove_columns(ANSWERS_COLUMN) if unlabelled else dataset


# ----------------------------------------------------------------------------------------------------------
# Checks of the raw rows.


def is_text(arrow_type: pa.DataType) -> bool:
    """Whether an Arrow column type holds strings."""
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def check_answers_type(dataset: datasets.Dataset, origin: str) -> None:
    """`answers` must be a struct of two lists, `text` (strings) and `answer_start` (integers)."""
    answer_type = dataset.data.schema.field(ANSWERS_COLUMN).type
    fields = {field.name: field.type for field in answer_type} if pa.types.is_struct(answer_type) else {}
    items = {n: t.value_type for n, t in fields.items() if pa.types.is_list(t) or pa.types.is_large_list(t)}
    text, start = items.get("text"), items.get("answer_start")  # list item types; None: no such list
    # Lists that are all empty (every question unanswerable) are read with the item type null.
    if not (text is not None and start is not None and (is_text(text) or pa.types.is_null(text))
            and (pa.types.is_integer(start) or pa.types.is_null(start))):  # fmt: skip
        raise DataError(
            f"Column '{ANSWERS_COLUMN}' of {origin} must hold {{'text': [strings], 'answer_start':"
            f" [integers]}} per row, not {dataset.features[ANSWERS_COLUMN]}."
        )


def check_answers(dataset: datasets.Dataset, origin: str, version_2: bool) -> None:
    """Every answer must be the context's text at its `answer_start`, and without `version_2` every question
    needs one; `DataError` names the question id (and, for misplaced answers, how many there are)."""
    check_answers_type(dataset, origin)
    table = dataset.with_format("arrow")
    ids, contexts = table["id"].to_pylist(), table["context"].to_pylist()
    misplaced: list[str] = []
    for question_id, context, answers in zip(ids, contexts, table[ANSWERS_COLUMN].to_pylist(), strict=True):
        if answers is None:  # an official file's question without the key, beside questions with it
            raise DataError(
                f"Question '{question_id}' of {origin} has no 'answers' (an unanswerable SQuAD v2.0 question"
                " has an empty list, or is_impossible: true)."
            )
        texts, starts = answers.get("text") or [], answers.get("answer_start") or []
        if len(texts) != len(starts):
            raise DataError(
                f"Question '{question_id}' of {origin} has {len(texts)} answer texts but {len(starts)}"
                " answer_start values."
            )
        if not texts and not version_2:
            raise DataError(
                f"Question '{question_id}' of {origin} has no answer (unanswerable), which SQuAD v1.1 does"
                " not allow; set version_2: true for SQuAD v2.0-style data."
            )
        for text, start in zip(texts, starts, strict=True):
            if start is None or text is None or start < 0 or context[start : start + len(text)] != text:
                misplaced.append(f"'{question_id}' (answer_start {start}, text {text!r})")
    if misplaced:
        raise DataError(
            f"{len(misplaced)} answer(s) of {origin} are not the context's text at their answer_start,"
            f" e.g. question {misplaced[0]}."
        )


def check_question_columns(dataset: datasets.Dataset, origin: str) -> None:
    """Ids, contexts and questions must be strings without missing values."""
    table = dataset.with_format("arrow")
    for column in QUESTION_COLUMNS:
        if column != "id" and not is_text(table[column].type):
            raise DataError(f"Column '{column}' of {origin} must hold text, not {dataset.features[column]}.")
        missing = pc.index(pc.is_null(table[column]), True).as_py()
        if missing >= 0:
            # Ids are optional as a column (rows are numbered without one), not row by row.
            either = "; give every row an id, or drop the column to number the rows" if column == "id" else ""
            raise DataError(f"Row {missing} of {origin} has no value (null) in column '{column}'{either}.")


def check_unique_ids(dataset: datasets.Dataset, origin: str) -> None:
    """Question ids must be unique where they key predictions and scores (evaluation and predict splits):
    SQuAD's post-processing keeps one answer per id, so a repeated id drops a question without a word."""
    if "id" not in dataset.column_names:
        return
    first_row: dict[Any, int] = {}
    for row, question_id in enumerate(dataset.with_format("arrow")["id"].to_pylist()):
        if question_id in first_row:
            raise DataError(
                f"Question id {question_id!r} of {origin} is in rows {first_row[question_id]} and {row}; each"
                " question needs an id of its own, which keys its prediction and score."
            )
        first_row[question_id] = row
