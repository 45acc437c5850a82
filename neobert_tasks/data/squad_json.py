"""The official SQuAD JSON format (``{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}``)
read into the hub's flat columns (``id, title, context, question, answers``).

The rows go through ``datasets.Dataset.from_generator`` so that they land in the datasets cache and carry a
fingerprint like any other split: later tokenization is cached as for parquet files. The files' sizes and
modification times are part of the generator's arguments, so an edited file is read again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets

from neobert_tasks.data.sources import DataError

ANSWERS_COLUMN = "answers"
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
    with path.open(encoding="utf-8", errors="replace") as handle:
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
                answers = [] if question.get("is_impossible", False) else question["answers"]
                yield {
                    "id": str(question["id"]),
                    "title": article.get("title", ""),
                    "context": paragraph["context"],
                    "question": question["question"],
                    ANSWERS_COLUMN: {
                        "text": [answer["text"] for answer in answers],
                        "answer_start": [answer["answer_start"] for answer in answers],
                    },
                }
    except (KeyError, TypeError) as error:
        raise DataError(
            f"The official SQuAD JSON in {where} lacks key {error} (articles need 'paragraphs' with"
            " 'context' and 'qas', questions 'id', 'question' and 'answers')."
        ) from error


def read_official_squad(paths: list[str], file_stamps: list[list[int]]) -> Iterator[dict[str, Any]]:
    """Yield the flat rows of official SQuAD JSON files. `file_stamps` (size and modification time of each
    file) is unused here: as a generator argument it enters the datasets cache key, so an edited file is
    converted again instead of being served from the cache."""
    del file_stamps
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            articles = json.load(handle)["data"]
        if not isinstance(articles, list):
            raise DataError(f"The top-level 'data' of '{path}' must be a list of articles.")
        for article_number, article in enumerate(articles):
            yield from official_rows(article, path, article_number)


def load_official_squad(split: str, files: list[Path], cache_dir: str | None) -> datasets.Dataset:
    """Convert official SQuAD JSON files into a memory-mapped dataset in the datasets cache (so that its
    tokenization is cached too), with the hub's columns."""
    try:
        dataset = datasets.Dataset.from_generator(
            read_official_squad,
            features=SQUAD_FEATURES,
            cache_dir=cache_dir,
            split=split,
            gen_kwargs={
                "paths": [str(path) for path in files],
                "file_stamps": [[path.stat().st_size, path.stat().st_mtime_ns] for path in files],
            },
        )
    except datasets.exceptions.DatasetGenerationError as error:
        if isinstance(error.__cause__, DataError):
            raise error.__cause__ from None
        reason = error.__cause__ or error
        raise DataError(f"Could not read split '{split}' from {[str(p) for p in files]}: {reason}") from error
    if len(dataset) == 0:
        raise DataError(f"Split '{split}' file(s) {[str(path) for path in files]} hold no questions.")
    return dataset


# ----------------------------------------------------------------------------------------------------------
# Checks of the raw rows.
