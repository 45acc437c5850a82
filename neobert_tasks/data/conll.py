"""Reading CoNLL column files (one word per line, whitespace-separated columns) into word/tag rows.

Column 0 holds the word and another column (by default the last) its tag; a blank line ends a sentence and
`-DOCSTART-` lines mark documents, not words. A data directory may mix these files with the tabular split
files of `find_split_files`: `find_word_split_files` finds both.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import datasets

from neobert_tasks.data.sources import DataError, find_split_files

CONLL_SUFFIXES = (".conll", ".txt")
DOCUMENT_START = "-DOCSTART-"


def conll_tag(columns: list[str], tag_column: int, path: str, line_number: int) -> str:
    """The tag of one CoNLL line, or `DataError` naming the line when it has no such column."""
    position = tag_column if tag_column >= 0 else len(columns) + tag_column
    if len(columns) < 2 or not 0 < position < len(columns):
        raise DataError(
            f"Line {line_number} of '{path}' has {len(columns)} column(s), so there is no tag in column"
            f" {tag_column} (conll_tag_column) besides the word in column 0."
        )
    return columns[position]


def read_conll_sentences(
    paths: list[str], tokens_column: str, tags_column: str, tag_column: int, file_stamps: list[list[int]]
) -> Iterator[dict[str, list[str]]]:
    """Yield one row per sentence of CoNLL files: the word is column 0, the tag column `tag_column`.

    Sentences end at blank lines; `-DOCSTART-` lines are document markers, not words. `file_stamps` (size and
    modification time of each file) is not used here: as a generator argument it is part of the datasets
    cache key, so an edited file is read again instead of being served from the cache.
    """
    del file_stamps
    for path in paths:
        words: list[str] = []
        tags: list[str] = []
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                columns = line.split()
                if columns and columns[0] != DOCUMENT_START:
                    words.append(columns[0])
                    tags.append(conll_tag(columns, tag_column, path, line_number))
                elif words:
                    yield {tokens_column: words, tags_column: tags}
                    words, tags = [], []
        if words:
            yield {tokens_column: words, tags_column: tags}


def load_conll_split(
    split: str,
    files: list[Path],
    tokens_column: str,
    tags_column: str,
    tag_column: int,
    cache_dir: str | None,
) -> datasets.Dataset:
    """Read CoNLL files into a memory-mapped dataset in the datasets cache, so its tokenization is cached."""
    string_list = datasets.List(datasets.Value("string"))
    try:
        dataset = datasets.Dataset.from_generator(
            read_conll_sentences,
            features=datasets.Features({tokens_column: string_list, tags_column: string_list}),
            cache_dir=cache_dir,
            split=split,
            gen_kwargs={
                "paths": [str(path) for path in files],
                "tokens_column": tokens_column,
                "tags_column": tags_column,
                "tag_column": tag_column,
                "file_stamps": [[path.stat().st_size, path.stat().st_mtime_ns] for path in files],
            },
        )
    except datasets.exceptions.DatasetGenerationError as error:
        if isinstance(error.__cause__, DataError):
            raise error.__cause__ from None
        reason = error.__cause__ or error
        raise DataError(f"Could not read split '{split}' from {[str(p) for p in files]}: {reason}") from error
    if len(dataset) == 0:
        raise DataError(f"Split '{split}' file(s) {[str(path) for path in files]} hold no sentences.")
    return dataset


def find_word_split_files(directory: str | Path) -> dict[str, list[Path]]:
    """`find_split_files` plus CoNLL column files `<split>.conll|.txt` (or shards `<split>-*.conll`)."""
    split_files = find_split_files(directory)  # MissingDataError when the directory does not exist
    for path in sorted(Path(directory).iterdir()):
        if path.is_file() and path.suffix in CONLL_SUFFIXES:
            split_files.setdefault(path.stem.split("-", 1)[0], []).append(path)
    return split_files
