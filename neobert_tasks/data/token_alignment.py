"""Word-to-token alignment: pre-split rows tokenized into overlapping windows with per-token labels.

Words are tokenized with the fast tokenizer (`is_split_into_words=True`) and the tags are aligned through
`word_ids()`: the first sub-token of a word carries its tag, later sub-tokens -100 (or, with
`label_all_tokens`, the tag with `B-X` turned into `I-X`).

A row longer than `max_length` tokens becomes several overlapping windows (features), each carrying the
row's `example_index`. Training may see a word in several windows; for evaluation and prediction every
word is scored exactly once, on the first sub-token of the word in the window that gives it the most
context, marked by the per-token `word_ids` column (the word's index there, -1 elsewhere).

These are pure functions of their arguments. `encode_word_windows` is the `Dataset.map` function (bound with
`functools.partial`); it must stay module-level so that `datasets` can hash it for the cache and pickle it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from neobert_tasks.data.keys import ATTENTION_MASK, EXAMPLE_INDEX, INPUT_IDS, WORD_IDS
from neobert_tasks.data.tokenizer import check_overflowing_windows

IGNORE_INDEX = -100  # label of tokens that are not trained on (the loss ignores it)
NO_WORD = -1  # `word_ids` value of tokens that score no word


def continuation_labels(label_names: Sequence[str]) -> tuple[int, ...]:
    """Per label id, the label of a word's later sub-tokens: `I-X` for `B-X` where `I-X` exists, else itself.

    Labelling every piece of a `B-X` word `B-X` would read as several entities; `I-X` continues the one.
    """
    index = {name: position for position, name in enumerate(label_names)}
    return tuple(
        index.get(f"I-{name[2:]}", position) if name.startswith("B-") else position
        for position, name in enumerate(label_names)
    )


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

    check_overflowing_windows()
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
        context = {
            number: min(first - start if start > 0 else total, end - 1 - last if end < total else total)
            for number, (start, end) in bounds.items()
            if start <= first < end
        }
        chosen[word] = max(context, key=context.__getitem__)  # of equal maxima, the first (earliest window)
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
    result: dict[str, list] = {INPUT_IDS: [], ATTENTION_MASK: [], WORD_IDS: [], EXAMPLE_INDEX: []}
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
            result[INPUT_IDS].append(encoded[INPUT_IDS][feature])
            result[ATTENTION_MASK].append(encoded[ATTENTION_MASK][feature])
            result[WORD_IDS].append(scored)
            result[EXAMPLE_INDEX].append(indices[row])
            if tags_column is not None:
                result["labels"].append(labels)
    return result
