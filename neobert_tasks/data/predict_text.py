"""Raw texts to predict on, and the words of examples with their character offsets.

To predict on raw text (`predict_file`), words come from the tokenizer's pre-tokenizer together with their
character offsets, so that word predictions can be written back as character spans of the text. Rows of a
dataset split are already split into words; their text is the words joined by single spaces.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import datasets
import pyarrow.compute as pc
from lightning.pytorch.utilities import rank_zero_warn
from transformers import PreTrainedTokenizerBase

from neobert_tasks.data.checks import require_columns
from neobert_tasks.data.labels import label_kind
from neobert_tasks.data.sources import DataError, MissingDataError, read_files
from neobert_tasks.data.splits import PREDICT_SPLIT
from neobert_tasks.data.word_tags import first_row

WORDS_COLUMN = "words"  # words of `predict_file` rows, found by the pre-tokenizer
# Builder of `datasets.load_dataset` and its options, per predict file suffix.
PREDICT_FILE_BUILDERS = {
    ".txt": ("text", {}),
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    ".parquet": ("parquet", {}),
}


def split_text_into_words(batch: dict[str, list], *, tokenizer: PreTrainedTokenizerBase) -> dict[str, list]:
    """Words of raw texts as the tokenizer's pre-tokenizer finds them, with their (start, end) offsets."""
    pre_tokenizer = tokenizer.backend_tokenizer.pre_tokenizer
    words, offsets = [], []
    for text in batch["text"]:
        if pre_tokenizer is not None:
            spans = [span for _, span in pre_tokenizer.pre_tokenize_str(text)]
        else:
            spans = [match.span() for match in re.finditer(r"\S+", text)]
        # Words are slices of the text: byte-level or metaspace pre-tokenizers rewrite their word strings.
        spans = [(start, end) for start, end in spans if text[start:end].strip()]
        words.append([text[start:end] for start, end in spans])
        offsets.append([[start, end] for start, end in spans])
    return {WORDS_COLUMN: words, "word_offsets": offsets}


def join_words(batch: dict[str, list], *, tokens_column: str) -> dict[str, list]:
    """Text of pre-split rows as their words joined by single spaces, with each word's character offsets."""
    texts, words, offsets = [], [], []
    for row_words in batch[tokens_column]:
        starts = list(itertools.accumulate((len(word) + 1 for word in row_words[:-1]), initial=0))
        texts.append(" ".join(row_words))
        words.append(list(row_words))
        offsets.append([[start, start + len(word)] for start, word in zip(starts, row_words, strict=True)])
    return {"text": texts, WORDS_COLUMN: words, "word_offsets": offsets}


def load_text_file(
    path: str,
    cache_dir: str | None,
    text_columns: tuple[str, ...] = ("text",),
    optional: tuple[str, ...] = (),
) -> datasets.Dataset:
    """Raw texts to predict: a .txt file (one text per line), or a .csv/.tsv/.jsonl/.json/.parquet file with
    the `text_columns`. A file of one column stands for a single text column whatever its name. A cell of an
    `optional` column (a document's title) may be empty or null, as in the splits."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise MissingDataError(f"Predict file '{path}' does not exist.")
    if file.suffix not in PREDICT_FILE_BUILDERS:
        raise DataError(f"Predict file '{path}' must end in one of {', '.join(PREDICT_FILE_BUILDERS)}.")
    if file.stat().st_size == 0:
        raise DataError(f"Predict file '{path}' is empty (0 bytes).")
    if file.suffix == ".txt" and len(text_columns) > 1:
        raise DataError(
            f"Predict file '{path}' holds one text per line, but this task reads pairs: give a .csv, .tsv or"
            f" .jsonl file with columns {', '.join(text_columns)}."
        )
    builder, options = PREDICT_FILE_BUILDERS[file.suffix]
    try:
        dataset = read_files(builder, PREDICT_SPLIT, [file], cache_dir, **options)
    except DataError:
        raise
    except (ValueError, OSError, datasets.exceptions.DatasetGenerationError) as error:
        if "corresponds to no data" in str(error):  # datasets' words for a split without rows
            raise DataError(f"Predict file '{path}' has no rows (a header alone?).") from error
        raise DataError(f"Could not read predict file '{path}': {error.__cause__ or error}") from error
    [only_column] = dataset.column_names if len(dataset.column_names) == 1 else [None]
    if len(text_columns) == 1 and only_column not in (None, text_columns[0]):
        if file.suffix in (".csv", ".tsv") and " " in only_column.strip():
            # A header of words is most likely the first text of a file without a header: it would be lost.
            rank_zero_warn(
                f"Predict file '{path}' has one column, headed {only_column!r}: that first line is read as"
                f" the header, not predicted; give the file a header line ({text_columns[0]}) if it is text."
            )
        dataset = dataset.rename_column(only_column, text_columns[0])
    origin = f"predict file '{path}'"
    require_columns(dataset, list(text_columns), origin)
    for column in text_columns:
        if label_kind(dataset.features[column]) != "str":
            raise DataError(f"Column '{column}' of {origin} must hold text, not {dataset.features[column]}.")
        if column in optional:
            continue
        if (missing_row := first_row(pc.is_null(dataset.with_format("arrow")[column]))) >= 0:
            raise DataError(f"Row {missing_row} of {origin} has no text (null) in column '{column}'.")
    return dataset
