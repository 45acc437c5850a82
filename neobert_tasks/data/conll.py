"""Reading CoNLL column files (one word per line, columns separated by tabs or spaces) into word/tag rows.

Column 0 holds the word and another column (by default the last) its tag; a blank line ends a sentence and
`-DOCSTART-` lines mark documents, not words. A data directory may mix these files with the tabular split
files of `find_split_files`: `find_word_split_files` finds both, and `load_word_splits` reads both.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import datasets

from neobert_tasks.data.sources import (
    FILE_FORMATS,
    DataError,
    find_split_files,
    load_generated_split,
    load_local_splits,
)

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

    Sentences end at blank lines; `-DOCSTART-` lines are document markers, not words. `file_stamps` is not
    used here: it only enters the datasets cache key (see `load_generated_split`).
    """
    del file_stamps
    for path in paths:
        words, tags, first = [], [], None  # first: (line number, column count) of the file's first word
        with open(path, encoding="utf-8-sig") as handle:  # -sig: a byte-order mark is not the first word
            for line_number, line in enumerate(handle, start=1):
                columns = conll_columns_of(line)
                if columns and columns[0] != DOCUMENT_START:
                    tags.append(conll_tag(columns, tag_column, path, line_number))
                    first = first or (line_number, len(columns))
                    if len(columns) != first[1]:  # else a word split at a space loses its second part
                        raise DataError(
                            f"Line {line_number} of '{path}' has {len(columns)} columns where line {first[0]}"
                            f" has {first[1]}: {column_hint(line)}."
                        )
                    words.append(columns[0])
                elif words:
                    yield {tokens_column: words, tags_column: tags}
                    words, tags = [], []
        if words:
            yield {tokens_column: words, tags_column: tags}


def column_hint(line: str) -> str:
    """What to do about a line with another column count than the file's first word line."""
    if "\t" in line:
        return "every word line needs the same columns"
    return "a word with a space inside? Separate the columns with tabs"


def conll_columns_of(line: str) -> list[str]:
    """A CoNLL line's columns: split at tabs where it has any (a word may then hold a space), else at runs
    of ASCII spaces. Not at every Unicode space, as ``str.split()`` does: "10\u00a0000" is one word."""
    line = line.strip(ASCII_SPACES)
    if not line:
        return []
    if "\t" in line:  # runs of tabs line columns up: one separator
        return [column.strip(ASCII_SPACES) for column in re.split("\t+", line)]
    return re.split(f"[{ASCII_SPACES}]+", line)


ASCII_SPACES = " \t\r\n\f\v"


def find_word_split_files(directory: str | Path) -> dict[str, list[Path]]:
    """`find_split_files` plus CoNLL column files `<split>.conll|.txt` (or shards `<split>-*.conll`)."""
    return find_split_files(directory, (*FILE_FORMATS, *CONLL_SUFFIXES))


def load_word_splits(
    directory: str | Path,
    split_names: Sequence[str],
    tokens_column: str,
    tags_column: str,
    tag_column: int,
    cache_dir: str | None,
) -> tuple[datasets.DatasetDict, dict[str, str]]:
    """The splits among `split_names` with files in `directory`, CoNLL files or tabular ones (one format per
    split), with a readable origin per split; `MissingDataError` when none of them has files."""
    string_list = datasets.List(datasets.Value("string"))
    features = datasets.Features({tokens_column: string_list, tags_column: string_list})
    columns = {"tokens_column": tokens_column, "tags_column": tags_column, "tag_column": tag_column}

    def read_conll(split: str, files: list[Path]) -> datasets.Dataset | None:
        """CoNLL files read into a memory-mapped dataset in the datasets cache, so that their tokenization
        is cached; None for tabular files."""
        if files[0].suffix not in CONLL_SUFFIXES:
            return None
        return load_generated_split(
            split, files, read_conll_sentences, features, cache_dir, "sentences", **columns
        )

    split_files, file_names = find_word_split_files(directory), "<split>.parquet|json|jsonl|conll|txt"
    return load_local_splits(directory, split_names, cache_dir, split_files, file_names, read_conll)
