"""Token classification (named entities, part-of-speech, chunks) on words, with long inputs cut into windows.

Rows hold a list of words and one tag per word, from a hub dataset (default `eriktks/conll2003`), local
split files with the same columns, or CoNLL column files. Words are tokenized with the fast tokenizer
(`is_split_into_words=True`) and the tags are aligned through `word_ids()`: the first sub-token of a word
carries its tag, later sub-tokens -100 (or, with `label_all_tokens`, the tag with `B-X` turned into `I-X`).

A row longer than `max_length` tokens becomes several overlapping windows (features), each carrying the
row's `example_index`. Training may see a word in several windows; for evaluation and prediction every
word is scored exactly once, on the first sub-token of the word in the window that gives it the most
context, marked by the per-token `word_ids` column (the word's index there, -1 elsewhere). Collecting the
predictions at `word_ids >= 0` per `example_index` therefore yields one prediction per word, in order.

For prediction on raw text (`predict_file`), words come from the tokenizer's pre-tokenizer together with
their character offsets, so that word predictions can be written back as character spans of the text
(`TokenClassificationDataModule.predict_examples`).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import torch
from transformers import PreTrainedTokenizerBase

from neobert_tasks.data.base import TokenizedDataModule
from neobert_tasks.data.sources import (
    DataError,
    MissingDataError,
    find_split_files,
    load_hub_splits,
    load_local_splits,
    require_columns,
)
from neobert_tasks.data.text_classification import label_kind

IGNORE_INDEX = -100  # label of tokens that are not trained on (the loss ignores it)
NO_WORD = -1  # `word_ids` value of tokens that score no word
CONLL_SUFFIXES = (".conll", ".txt")
DOCUMENT_START = "-DOCSTART-"
PREDICT_SPLIT = "predict"  # split name of `predict_file`
WORDS_COLUMN = "words"  # words of `predict_file` rows, found by the pre-tokenizer
PREDICT_FILE_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}

# ----------------------------------------------------------------------------------------------------------
# CoNLL column files.


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


# ----------------------------------------------------------------------------------------------------------
# Tag names and checks.


def sorted_tag_names(tags: Sequence[str]) -> list[str]:
    """Tag names in sorted order with the outside tag "O" first, as id 0 (the common convention)."""
    names = sorted(set(tags))
    return ["O", *(name for name in names if name != "O")] if "O" in names else names


def tag_names_from_split(dataset: datasets.Dataset, column: str, origin: str) -> list[str]:
    """Tag names of a training split: the `ClassLabel` names, else the sorted string tags seen."""
    feature = dataset.features[column]
    kind = label_kind(feature)
    if kind == "list_class_label":
        return list(feature.feature.names)
    if kind == "list_str":
        values = pc.unique(pc.drop_null(pc.list_flatten(dataset.with_format("arrow")[column])))
        return sorted_tag_names(values.to_pylist())
    if kind == "list_int":
        raise DataError(
            f"Tag column '{column}' of {origin} holds integer ids without names; set label_names to the"
            " tag names in id order."
        )
    raise DataError(f"Tag column '{column}' of {origin} must hold lists of tags, not {feature}.")


def continuation_labels(label_names: Sequence[str]) -> tuple[int, ...]:
    """Per label id, the label of a word's later sub-tokens: `I-X` for `B-X` where `I-X` exists, else itself.

    Labelling every piece of a `B-X` word `B-X` would read as several entities; `I-X` continues the one.
    """
    index = {name: position for position, name in enumerate(label_names)}
    return tuple(
        index.get(f"I-{name[2:]}", position) if name.startswith("B-") else position
        for position, name in enumerate(label_names)
    )


def first_row(mask: pa.ChunkedArray | pa.Array) -> int:
    """Index of the first true value of a boolean array, -1 when there is none."""
    return pc.index(pc.fill_null(mask, False), True).as_py()


def check_words(dataset: datasets.Dataset, column: str, origin: str) -> None:
    """The words column must hold lists of strings without missing rows or words."""
    if label_kind(dataset.features[column]) != "list_str":
        raise DataError(
            f"Column '{column}' of {origin} must hold lists of words (strings),"
            f" not {dataset.features[column]}."
        )
    words = dataset.with_format("arrow")[column]
    missing_row = first_row(pc.is_null(words))
    if missing_row >= 0:
        raise DataError(f"Row {missing_row} of {origin} has no words (null) in column '{column}'.")
    if pc.list_flatten(words).null_count:
        raise DataError(f"Column '{column}' of {origin} has null words inside its word lists.")


def check_tags(
    dataset: datasets.Dataset, tokens_column: str, tags_column: str, label_names: Sequence[str], origin: str
) -> None:
    """Each row needs one tag per word, each a valid id or known name; `DataError` names the first bad one."""
    kind = label_kind(dataset.features[tags_column])
    if kind not in ("list_class_label", "list_int", "list_str"):
        raise DataError(
            f"Column '{tags_column}' of {origin} must hold lists of tag ids or names,"
            f" not {dataset.features[tags_column]}."
        )
    table = dataset.with_format("arrow")
    tags = table[tags_column].combine_chunks()
    tag_counts = pc.list_value_length(tags)
    word_counts = pc.list_value_length(table[tokens_column].combine_chunks())
    # Kleene "or": a row without tags (null) is bad even though its length comparison is null.
    bad_row = first_row(pc.or_kleene(pc.is_null(tags), pc.not_equal(word_counts, tag_counts)))
    if bad_row >= 0:
        raise DataError(
            f"Row {bad_row} of {origin} has {tag_counts[bad_row].as_py() or 0} tags in column"
            f" '{tags_column}' for {word_counts[bad_row].as_py()} words in column '{tokens_column}'."
        )
    values = pc.list_flatten(tags)
    if kind == "list_str":
        invalid = pc.invert(pc.is_in(values, value_set=pa.array(list(label_names), type=values.type)))
    else:
        invalid = pc.or_(pc.less(values, 0), pc.greater_equal(values, len(label_names)))
    bad_value = first_row(invalid)
    if bad_value >= 0:
        row = pc.list_parent_indices(tags)[bad_value].as_py()
        raise DataError(
            f"Tag {values[bad_value].as_py()!r} in row {row} of {origin} (column '{tags_column}') is not"
            f" one of the {len(label_names)} label names {list(label_names)}"
            f"{' (ids 0 to ' + str(len(label_names) - 1) + ')' if kind != 'list_str' else ''}."
        )


# ----------------------------------------------------------------------------------------------------------
# Tokenizing words into windows and aligning the tags.


def tokenize_in_windows(
    tokenizer: PreTrainedTokenizerBase, words: list[list[str]], max_length: int, stride: int
) -> Any:
    """Tokenize pre-split rows into overlapping windows of at most `max_length` tokens.

    A word that the normalizer erases completely (zero-width or control characters only) gets no token, so
    it could be neither trained on nor predicted; such words are tokenized as the unknown token instead.
    """

    def encode(rows: list[list[str]]) -> Any:
        return tokenizer(
            rows,
            is_split_into_words=True,
            truncation=True,
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=True,
            return_token_type_ids=False,  # NeoBERT has no segment embeddings
        )

    encoded = encode(words)
    seen: list[set[int]] = [set() for _ in words]
    for feature, row in enumerate(encoded["overflow_to_sample_mapping"]):
        seen[row].update(word for word in encoded.word_ids(feature) if word is not None)
    if tokenizer.unk_token is None or all(len(seen[row]) == len(words[row]) for row in range(len(words))):
        return encoded
    replaced = [
        [word if position in seen[row] else tokenizer.unk_token for position, word in enumerate(row_words)]
        for row, row_words in enumerate(words)
    ]
    return encode(replaced)


def token_positions(
    window_word_ids: list[list[int | None]], window_size: int, stride: int
) -> list[list[int | None]]:
    """Position of every token in the row's whole token sequence (None for special tokens).

    The fast tokenizer cuts a row's tokens into windows of `window_size` tokens (without special tokens)
    that start `window_size - stride` tokens apart, so the k-th word token of window j sits at
    j * (window_size - stride) + k. A window of another size (except the last) means that layout changed.
    """
    positions = []
    for number, word_ids in enumerate(window_word_ids):
        word_token_count = sum(word is not None for word in word_ids)
        if number < len(window_word_ids) - 1 and word_token_count != window_size:
            raise RuntimeError(
                f"The tokenizer returned an overflowing window of {word_token_count} tokens where"
                f" {window_size} were expected; word positions across windows cannot be recovered."
            )
        counter = itertools.count(number * (window_size - stride))
        positions.append([None if word is None else next(counter) for word in word_ids])
    return positions


def word_spans(
    window_word_ids: list[list[int | None]], positions: list[list[int | None]]
) -> dict[int, tuple[int, int]]:
    """First and last token position of every word of a row."""
    spans: dict[int, tuple[int, int]] = {}
    for word_ids, window_positions in zip(window_word_ids, positions, strict=True):
        for word, position in zip(word_ids, window_positions, strict=True):
            if word is not None:
                first, last = spans.get(word, (position, position))
                spans[word] = (min(first, position), max(last, position))
    return spans


def scoring_windows(positions: list[list[int | None]], spans: dict[int, tuple[int, int]]) -> dict[int, int]:
    """For each word, the window that scores it: among those holding its first token, the one with the most
    context on both sides (the smaller of the tokens before the word and after its last token; a window that
    reaches the start or end of the row has all the context there is on that side). Ties go to the earliest.
    """
    word_positions = [[position for position in window if position is not None] for window in positions]
    # Window number -> (first, last + 1) token position; a row without words has a window without tokens.
    bounds = {number: (window[0], window[-1] + 1) for number, window in enumerate(word_positions) if window}
    total = max((end for _, end in bounds.values()), default=0)
    chosen = {}
    for word, (first, last) in spans.items():
        best = None
        for number, (start, end) in bounds.items():
            if start <= first < end:
                left = first - start if start > 0 else total
                right = end - 1 - last if end < total else total
                if best is None or min(left, right) > best[0]:
                    best = (min(left, right), number)
        chosen[word] = best[1]
    return chosen


def align_row(
    window_word_ids: list[list[int | None]],
    tags: list[int] | None,
    continuation: Sequence[int],
    window_size: int,
    stride: int,
    label_all_tokens: bool,
) -> list[tuple[list[int], list[int]]]:
    """Labels and scoring word ids of each window of one row (labels empty when the row has no tags).

    A word's first token is labelled in every window that holds it (training sees it there), but it scores
    the word only in the word's scoring window. Tokens after the first are -100, or with `label_all_tokens`
    the word's continuation label.
    """
    positions = token_positions(window_word_ids, window_size, stride)
    spans = word_spans(window_word_ids, positions)
    chosen = scoring_windows(positions, spans)
    aligned = []
    for number, (word_ids, window_positions) in enumerate(zip(window_word_ids, positions, strict=True)):
        labels, scored = [], []
        for word, position in zip(word_ids, window_positions, strict=True):
            is_first = word is not None and position == spans[word][0]
            scored.append(word if is_first and chosen[word] == number else NO_WORD)
            if word is None or tags is None or not (is_first or label_all_tokens):
                labels.append(IGNORE_INDEX)
            else:
                labels.append(tags[word] if is_first else continuation[tags[word]])
        aligned.append((labels if tags is not None else [], scored))
    return aligned


def encode_word_windows(
    batch: dict[str, list],
    indices: list[int],
    *,
    tokenizer: PreTrainedTokenizerBase,
    tokens_column: str,
    tags_column: str | None,
    tag_to_index: dict[str, int] | None,
    continuation: Sequence[int],
    max_length: int,
    stride: int,
    label_all_tokens: bool,
) -> dict[str, list]:
    """Tokenize a batch of rows into windows with `input_ids`, `attention_mask`, `word_ids`,
    `example_index` (the row's index in the split) and, when `tags_column` is given, `labels`."""
    words = [list(row) for row in batch[tokens_column]]
    encoded = tokenize_in_windows(tokenizer, words, max_length, stride)
    window_size = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    features_of_row: dict[int, list[int]] = {}
    for feature, row in enumerate(encoded["overflow_to_sample_mapping"]):
        features_of_row.setdefault(row, []).append(feature)
    result: dict[str, list] = {"input_ids": [], "attention_mask": [], "word_ids": [], "example_index": []}
    if tags_column is not None:
        result["labels"] = []
    for row, features in features_of_row.items():
        tags = None
        if tags_column is not None:
            row_tags = batch[tags_column][row]
            tags = [tag_to_index[tag] for tag in row_tags] if tag_to_index is not None else list(row_tags)
        window_word_ids = [encoded.word_ids(feature) for feature in features]
        aligned = align_row(window_word_ids, tags, continuation, window_size, stride, label_all_tokens)
        for feature, (labels, scored) in zip(features, aligned, strict=True):
            result["input_ids"].append(encoded["input_ids"][feature])
            result["attention_mask"].append(encoded["attention_mask"][feature])
            result["word_ids"].append(scored)
            result["example_index"].append(indices[row])
            if tags_column is not None:
                result["labels"].append(labels)
    return result


# ----------------------------------------------------------------------------------------------------------
# Words and character offsets of examples, for writing predictions back onto text.


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


def load_text_file(path: str, cache_dir: str | None) -> datasets.Dataset:
    """Raw texts to predict: a .txt file (one text per line) or a .jsonl/.json/.parquet file with `text`."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise MissingDataError(f"Predict file '{path}' does not exist.")
    if file.suffix not in PREDICT_FILE_BUILDERS:
        raise DataError(f"Predict file '{path}' must end in one of {', '.join(PREDICT_FILE_BUILDERS)}.")
    if file.stat().st_size == 0:
        raise DataError(f"Predict file '{path}' is empty (0 bytes).")
    try:
        dataset = datasets.load_dataset(
            PREDICT_FILE_BUILDERS[file.suffix],
            data_files={PREDICT_SPLIT: str(file)},
            split=PREDICT_SPLIT,
            cache_dir=cache_dir,
        )
    except (ValueError, OSError, datasets.exceptions.DatasetGenerationError) as error:
        raise DataError(f"Could not read predict file '{path}': {error.__cause__ or error}") from error
    origin = f"predict file '{path}'"
    require_columns(dataset, ["text"], origin)
    if label_kind(dataset.features["text"]) != "str":
        raise DataError(f"Column 'text' of {origin} must hold text, not {dataset.features['text']}.")
    missing_row = first_row(pc.is_null(dataset.with_format("arrow")["text"]))
    if missing_row >= 0:
        raise DataError(f"Row {missing_row} of {origin} has no text (null).")
    return dataset


# ----------------------------------------------------------------------------------------------------------
# Padding.


class TokenClassificationCollator:
    """Pads windows to the longest of the batch, rounded up to a multiple of `pad_to_multiple_of`.

    `input_ids` are padded with the pad token, `attention_mask` with 0, `labels` with -100 and `word_ids`
    with -1, so padding is neither trained on nor scored; `example_index` is one number per window.
    """

    def __init__(
        self, pad_token_id: int, pad_to_multiple_of: int | None, padding_side: str = "right"
    ) -> None:
        self.pad_values = {
            "input_ids": pad_token_id,
            "attention_mask": 0,
            "labels": IGNORE_INDEX,
            "word_ids": NO_WORD,
        }
        self.pad_to_multiple_of = pad_to_multiple_of or 1
        self.padding_side = padding_side

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(feature["input_ids"]) for feature in features)
        length = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {}
        for key, pad_value in self.pad_values.items():
            if key not in features[0]:
                continue  # unlabelled splits have no labels
            padded = torch.full((len(features), length), pad_value, dtype=torch.long)
            for row, feature in enumerate(features):
                values = torch.as_tensor(feature[key], dtype=torch.long)
                if self.padding_side == "left":
                    padded[row, length - len(values) :] = values
                else:
                    padded[row, : len(values)] = values
            batch[key] = padded
        batch["example_index"] = torch.tensor([feature["example_index"] for feature in features])
        return batch


# ----------------------------------------------------------------------------------------------------------
# The datamodule.


class TokenClassificationDataModule(TokenizedDataModule):
    """Tag every word of a sentence or document (NER by default: CoNLL-2003), in overlapping windows.

    Args:
        tokenizer: fast tokenizer directory or hub id, loaded with `transformers.AutoTokenizer`.
        dataset: hub dataset id loaded with `datasets.load_dataset`; used when `data_dir` is None.
        dataset_config: configuration (subset) name of the hub dataset, if it has several.
        data_dir: local directory with `<split>.parquet|json|jsonl` files (same columns as the hub data) or
            CoNLL column files `<split>.conll|txt` (one word per line, whitespace-separated columns, a blank
            line between sentences, `-DOCSTART-` lines skipped); splits are train, validation and test.
        tokens_column: column holding each row's list of words.
        tags_column: column holding each row's list of tags (ids or names), one per word.
        conll_tag_column: which column of a CoNLL file holds the tag (negative counts from the end).
        label_names: tag names in id order; None reads them from the training split (the `ClassLabel` names,
            or for CoNLL files and string tags the sorted tags seen, with "O" first). Give them to predict
            without the training data.
        label_all_tokens: label every sub-token of a word (a `B-X` word's later pieces get `I-X`) instead of
            only its first sub-token; each word is still scored once, on its first sub-token.
        max_length: longest window in tokens (with [CLS] and [SEP]); longer rows are split into windows.
        stride: tokens of overlap between consecutive windows of a long row.
        predict_file: raw texts to predict: a .txt file with one sentence or document per line, or a
            .jsonl/.json/.parquet file with a `text` column; None predicts the test split (else validation).
        batch_size: training windows per batch and device.
        eval_batch_size: validation/test/predict windows per batch; defaults to `batch_size`.
        num_workers: DataLoader worker processes (0 loads in the main process).
        group_by_length: train on length-grouped batches (less padding) instead of a plain shuffle.
        pad_to_multiple_of: round each batch's padded length up to a multiple of this (8 suits tensor cores).
        seed: seed of the training order (shuffle and length grouping); epoch e uses seed + e.
        limit_train_samples: keep only the first N training rows (quick runs); None keeps all.
        limit_eval_samples: keep only the first N rows of each validation/test/predict split; None keeps all.
        cache_dir: datasets cache directory for loaded and tokenized splits; None uses HF_DATASETS_CACHE.

    Batches hold `input_ids`, `attention_mask`, `labels` (-100 where not trained on; absent without
    tags), `word_ids` (the word a token scores, -1 elsewhere) and `example_index` (the row of each window).
    """

    train_split_name = "train"
    model_input_keys = ("input_ids", "attention_mask", "labels", "word_ids", "example_index")

    def __init__(
        self,
        tokenizer: str,
        dataset: str | None = "eriktks/conll2003",
        dataset_config: str | None = None,
        data_dir: str | None = None,
        tokens_column: str = "tokens",
        tags_column: str = "ner_tags",
        conll_tag_column: int = -1,
        label_names: list[str] | None = None,
        label_all_tokens: bool = False,
        max_length: int = 512,
        stride: int = 128,
        predict_file: str | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        group_by_length: bool = True,
        pad_to_multiple_of: int = 8,
        seed: int = 42,
        limit_train_samples: int | None = None,
        limit_eval_samples: int | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(
            tokenizer, max_length, batch_size, eval_batch_size, num_workers, group_by_length,
            pad_to_multiple_of, seed, limit_train_samples, limit_eval_samples, cache_dir,
        )  # fmt: skip
        if dataset is None and data_dir is None:
            raise DataError("Give a hub dataset id (dataset) or a local data_dir; both are None.")
        if not 0 <= stride < max_length:
            raise DataError(f"stride ({stride}) must be at least 0 and below max_length ({max_length}).")
        if tokens_column == tags_column:
            raise DataError(f"tokens_column and tags_column are both '{tokens_column}'.")
        if conll_tag_column == 0:
            raise DataError("conll_tag_column 0 is the word column of a CoNLL file; tags are in another one.")
        self.dataset_id = dataset
        self.dataset_config = dataset_config
        self.data_dir = data_dir
        self.tokens_column = tokens_column
        self.tags_column = tags_column
        self.conll_tag_column = conll_tag_column
        self.label_all_tokens = label_all_tokens
        self.stride = stride
        self.predict_file = predict_file
        # Limited raw rows of the evaluation splits, kept for `predict_examples`.
        self._examples: dict[str, datasets.Dataset] = {}
        self._label_names = self._resolve_label_names(label_names)
        self.save_hyperparameters()
        # Record the resolved names over the given (often None) value: the CLI links them into the model's
        # hparams, and Lightning refuses to log a key that holds different values in the two.
        self.save_hyperparameters({**self.hparams, "label_names": list(self._label_names)})

    # ------------------------------------------------------------------------------------------------------
    # Label information, available right after __init__ for LightningCLI argument linking.

    @property
    def label_names(self) -> list[str]:
        """Tag names in id order."""
        return list(self._label_names)

    @property
    def num_labels(self) -> int:
        """Number of tags the model predicts per token."""
        return len(self._label_names)

    @property
    def main_metric(self) -> str:
        """Metric used to pick the best checkpoint: entity-level F1."""
        return "f1"

    def _resolve_label_names(self, label_names: list[str] | None) -> list[str]:
        """The explicit names, else the hub's `ClassLabel` names, else those found in the training split."""
        if label_names is not None:
            if not label_names or len(set(label_names)) != len(label_names):
                raise DataError(f"label_names must be distinct names, got {label_names}.")
            return list(label_names)
        if self.data_dir is None:
            names = self._hub_tag_names()
            if names is not None:
                return names
        raw, origins = self.load_raw_splits([self.train_split_name])
        if self.train_split_name not in raw:
            raise DataError(
                f"No '{self.train_split_name}' split in {self.data_source} to read the tag names from;"
                " set label_names."
            )
        origin = origins[self.train_split_name]
        require_columns(raw[self.train_split_name], [self.tags_column], origin)
        return tag_names_from_split(raw[self.train_split_name], self.tags_column, origin)

    def _hub_tag_names(self) -> list[str] | None:
        """`ClassLabel` names from the hub dataset's metadata, without downloading data; None if not there."""
        try:
            builder = datasets.load_dataset_builder(
                self.dataset_id, self.dataset_config, cache_dir=self.cache_dir
            )
        except Exception:  # noqa: BLE001 - loading the data next reports the problem in one sentence
            return None
        feature = (builder.info.features or {}).get(self.tags_column)
        return list(feature.feature.names) if label_kind(feature) == "list_class_label" else None

    # ------------------------------------------------------------------------------------------------------
    # TokenizedDataModule hooks.

    @property
    def data_source(self) -> str:
        if self.data_dir is not None:
            return f"directory '{self.data_dir}'"
        config_text = f" (config '{self.dataset_config}')" if self.dataset_config else ""
        return f"hub dataset '{self.dataset_id}'{config_text}"

    @property
    def configured_validation_splits(self) -> list[str]:
        return ["validation"]

    @property
    def configured_test_splits(self) -> list[str]:
        return ["test"]

    @property
    def predict_split_names(self) -> list[str]:
        """The predict file's split when `predict_file` is set, else the test (or validation) split."""
        return [PREDICT_SPLIT] if self.predict_file is not None else super().predict_split_names

    def local_split_names(self) -> set[str] | None:
        if self.data_dir is None or not Path(self.data_dir).is_dir():
            return None
        return set(find_word_split_files(self.data_dir))

    def load_raw_splits(self, split_names: Sequence[str]) -> tuple[datasets.DatasetDict, dict[str, str]]:
        if self.data_dir is None:
            loaded, origins = load_hub_splits(self.dataset_id, self.dataset_config, self.cache_dir)
            wanted = [name for name in split_names if name in loaded]
            return datasets.DatasetDict({name: loaded[name] for name in wanted}), origins
        split_files = find_word_split_files(self.data_dir)
        wanted = [name for name in split_names if name in split_files]
        if not wanted:
            raise MissingDataError(
                f"Data directory '{self.data_dir}' has no files for splits {list(split_names)}"
                f" (splits found: {', '.join(sorted(split_files)) or 'none'}; files are named"
                " <split>.parquet|json|jsonl|conll|txt)."
            )
        loaded, origins = datasets.DatasetDict(), {}
        for name in wanted:
            files = split_files[name]
            suffixes = {path.suffix for path in files}
            if len(suffixes) > 1:
                raise DataError(
                    f"Split '{name}' mixes file formats {sorted(suffixes)}: {[str(p) for p in files]}."
                )
            if files[0].suffix in CONLL_SUFFIXES:
                loaded[name] = load_conll_split(
                    name, files, self.tokens_column, self.tags_column, self.conll_tag_column, self.cache_dir
                )
                origins[name] = ", ".join(str(path) for path in files)
            else:
                tabular, tabular_origins = load_local_splits(self.data_dir, [name], self.cache_dir)
                loaded[name], origins[name] = tabular[name], tabular_origins[name]
        return loaded, origins

    def check_split(self, split_name: str, dataset: datasets.Dataset, origin: str) -> None:
        if split_name == PREDICT_SPLIT and self.predict_file is not None:
            return  # words and offsets were made from the text by `split_text_into_words`
        # Test splits may come without tags (prediction only); the others are evaluated, so they need them.
        labelled = split_name not in self.configured_test_splits or self.tags_column in dataset.column_names
        require_columns(dataset, [self.tokens_column, self.tags_column if labelled else None], origin)
        check_words(dataset, self.tokens_column, origin)
        if labelled:
            check_tags(dataset, self.tokens_column, self.tags_column, self._label_names, origin)

    def encode_function(self, split_name: str, dataset: datasets.Dataset) -> Callable[..., dict[str, list]]:
        tokenizer = self.tokenizer
        if not tokenizer.is_fast:
            raise DataError(
                f"Tokenizer '{self.tokenizer_name_or_path}' is not a fast tokenizer (no word_ids)."
            )
        if tokenizer.truncation_side != "right":
            # Windows cut from the end would break the left-to-right positions `token_positions` assumes.
            raise DataError(
                f"Tokenizer '{self.tokenizer_name_or_path}' truncates on the {tokenizer.truncation_side};"
                " windows need truncation_side 'right'."
            )
        special_tokens = tokenizer.num_special_tokens_to_add(pair=False)
        if self.stride >= self.max_length - special_tokens:
            raise DataError(
                f"stride ({self.stride}) must be below max_length ({self.max_length}) minus the"
                f" {special_tokens} special tokens of each window."
            )
        from_text = split_name == PREDICT_SPLIT and self.predict_file is not None
        labelled = not from_text and self.tags_column in dataset.column_names
        string_tags = labelled and label_kind(dataset.features[self.tags_column]) == "list_str"
        return functools.partial(
            encode_word_windows,
            tokenizer=tokenizer,
            tokens_column=WORDS_COLUMN if from_text else self.tokens_column,
            tags_column=self.tags_column if labelled else None,
            tag_to_index={name: index for index, name in enumerate(self._label_names)}
            if string_tags
            else None,
            continuation=continuation_labels(self._label_names),
            max_length=self.max_length,
            stride=self.stride,
            label_all_tokens=self.label_all_tokens,
        )

    def _process_split(self, name: str, dataset: datasets.Dataset, origin: str) -> datasets.Dataset:
        """Limit, check and tokenize one split, as the base class does, except that the encoder receives the
        row numbers: a row can become several windows, so `example_index` is set per window here instead of
        the base's one `idx` per row."""
        limit = self.limit_train_samples if name == self.train_split_name else self.limit_eval_samples
        if limit is not None and limit < len(dataset):
            dataset = dataset.select(range(limit))
        self.check_split(name, dataset, origin)
        if name != self.train_split_name:
            self._examples[name] = dataset
        return dataset.map(
            self.encode_function(name, dataset),
            batched=True,
            with_indices=True,
            remove_columns=dataset.column_names,
            desc=f"Tokenizing {name}",
        )

    # ------------------------------------------------------------------------------------------------------
    # Collator, stages and prediction on raw text.

    @property
    def collator(self) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
        """Pads labels and word ids too, which the base's `ModelInputCollator` leaves unpadded."""
        if self._collator is None:
            tokenizer = self.tokenizer
            self._collator = TokenClassificationCollator(
                tokenizer.pad_token_id, self.pad_to_multiple_of, tokenizer.padding_side
            )
        return self._collator

    def _predicting_from_file(self, stage: str | None) -> bool:
        return self.predict_file is not None and stage == "predict"

    def prepare_data(self) -> None:
        """Tokenize the splits into the cache; to predict a `predict_file`, just that file (needs no data)."""
        stage = self.trainer.state.fn if self.trainer is not None else None
        if self._predicting_from_file(stage):
            self._process_split(
                PREDICT_SPLIT, self._predict_file_words(), f"predict file '{self.predict_file}'"
            )
            return
        super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        """As the base class; `predict` with a `predict_file` loads and tokenizes that file instead."""
        if self._predicting_from_file(stage):
            origin = f"predict file '{self.predict_file}'"
            self.datasets[PREDICT_SPLIT] = self._process_split(
                PREDICT_SPLIT, self._predict_file_words(), origin
            )
            return
        super().setup(stage)

    def predict_dataloader(self) -> Any:
        """Batches of the predict file's windows, else those of the test (or validation) split."""
        if self.predict_file is None:
            return super().predict_dataloader()
        return self._eval_loaders([PREDICT_SPLIT])

    def _predict_file_words(self) -> datasets.Dataset:
        """The predict file's texts with their words and character offsets (a cached `map`)."""
        texts = load_text_file(self.predict_file, self.cache_dir)
        return texts.map(
            functools.partial(split_text_into_words, tokenizer=self.tokenizer),
            batched=True,
            desc="Splitting texts into words",
        )

    def predict_examples(self, split_name: str | None = None) -> dict[int, dict[str, Any]]:
        """Per example index (the `example_index` of its windows): the example's `text`, its `words` and their
        `word_offsets` ([start, end] character offsets, so `text[start:end]` is the word), to turn word
        predictions into entities with character spans.

        `split_name` defaults to the (first) predicted split, which must have been set up. For a dataset split
        the words are its tokens and the text is those tokens joined by single spaces.
        """
        name = split_name or self.predict_split_names[0]
        if name not in self._examples:
            raise DataError(
                f"Split '{name}' is not loaded; call setup('predict') (or another stage using it) first."
            )
        examples = self._examples[name]
        if name == PREDICT_SPLIT and self.predict_file is not None:
            examples = examples.select_columns(["text", WORDS_COLUMN, "word_offsets"])
        else:
            examples = examples.map(
                functools.partial(join_words, tokens_column=self.tokens_column),
                batched=True,
                remove_columns=examples.column_names,
                desc=f"Joining the words of {name}",
            )
        return dict(enumerate(examples.to_list()))
