"""SQuAD rows tokenized into windows: (question, context) pairs cut into overlapping features.

Each row is tokenized as the pair (question, context) with `truncation="only_second"`: a context longer than
`max_length` becomes several windows (features) that overlap by `doc_stride` tokens, each starting with the
whole question. Training features carry the answer's first and last token (`start_positions`,
`end_positions`), or 0 ([CLS]) when the answer is not fully inside the window or the question has none.
Evaluation features also keep `example_index` (the row of the split they come from) and `offset_mapping`
(each token's character span in the context, (-1, -1) for question, special and padding tokens), which
`offsets_as_arrays` reads back for post-processing.

Module-level functions, so that `datasets` can hash `encode_question_windows` to find cached `map` results.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from transformers import PreTrainedTokenizerBase

from neobert_tasks.data.keys import EXAMPLE_INDEX
from neobert_tasks.data.sources import DataError
from neobert_tasks.data.squad_json import ANSWERS_COLUMN
from neobert_tasks.data.tokenizer import check_overflowing_windows

NO_OFFSET = (-1, -1)  # offset of a token outside the context (question, special tokens)
CONTEXT_SEQUENCE = 1  # the context is the second sequence of the (question, context) pair


def check_question_lengths(
    tokenizer: PreTrainedTokenizerBase, questions: list[str], ids: list, max_length: int, doc_stride: int
) -> None:
    """Raise `DataError` for a question that leaves no more than `doc_stride` tokens of context per window.

    The fast tokenizer would abort the whole process (a Rust panic, not an exception) on such a question.
    """
    lengths = [len(tokens) for tokens in tokenizer(questions, add_special_tokens=False)["input_ids"]]
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    longest = int(np.argmax(lengths)) if lengths else 0
    if lengths and room - lengths[longest] <= doc_stride:
        raise DataError(
            f"Question '{ids[longest]}' has {lengths[longest]} tokens, which leaves"
            f" {max(room - lengths[longest], 0)} of max_length {max_length} for the context, not more than"
            f" doc_stride {doc_stride}; raise max_length or lower doc_stride."
        )


def answer_token_span(
    offsets: Sequence[Sequence[int]], sequence_ids: Sequence[int | None], answers: dict[str, list]
) -> tuple[int, int]:
    """First and last token of the (first) answer inside one window, or (0, 0) — the [CLS] token — when the
    question has no answer or the answer is not entirely inside the window's context tokens."""
    context = [position for position, sequence in enumerate(sequence_ids) if sequence == CONTEXT_SEQUENCE]
    if not answers["text"] or not context:
        return 0, 0
    start_char, text = answers["answer_start"][0], answers["text"][0]
    if stripped := text.strip():  # spaces around an answer are no token's: the span took the next word's
        start_char, text = start_char + text.index(stripped), stripped
    end_char = start_char + len(text)
    first, last = context[0], context[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return 0, 0
    start = first
    while start <= last and offsets[start][0] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


def context_offsets(
    offsets: Sequence[Sequence[int]], sequence_ids: Sequence[int | None]
) -> list[tuple[int, int]]:
    """Each token's character span in the context; (-1, -1) for question and special tokens."""
    return [
        tuple(offset) if sequence == CONTEXT_SEQUENCE else NO_OFFSET
        for offset, sequence in zip(offsets, sequence_ids, strict=True)
    ]


def encode_question_windows(
    batch: dict[str, list],
    indices: list[int],
    *,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    doc_stride: int,
    labelled: bool,
    evaluation: bool,
) -> dict[str, list]:
    """Tokenize a batch of rows into windows with `input_ids`, `attention_mask`, when `labelled` the answer's
    `start_positions` and `end_positions`, and for `evaluation` `example_index` and `offset_mapping`."""
    # Leading spaces of some SQuAD questions only waste window room.
    questions = [question.lstrip() for question in batch["question"]]
    check_overflowing_windows()
    check_question_lengths(tokenizer, questions, batch["id"], max_length, doc_stride)
    encoded = tokenizer(
        questions,
        batch["context"],
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=False,  # NeoBERT has no segment embeddings
    )
    rows = encoded["overflow_to_sample_mapping"]
    result: dict[str, list] = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    if labelled:
        spans = [
            answer_token_span(encoded["offset_mapping"][feature], encoded.sequence_ids(feature),
                              batch[ANSWERS_COLUMN][row])
            for feature, row in enumerate(rows)
        ]  # fmt: skip
        result["start_positions"] = [start for start, _ in spans]
        result["end_positions"] = [end for _, end in spans]
    if evaluation:
        result[EXAMPLE_INDEX] = [indices[row] for row in rows]
        result["offset_mapping"] = [
            context_offsets(encoded["offset_mapping"][feature], encoded.sequence_ids(feature))
            for feature in range(len(rows))
        ]
    return result


def offsets_as_arrays(offset_column: pa.ChunkedArray | pa.Array) -> list[np.ndarray]:
    """Per feature, its offsets as an int64 array of shape (tokens, 2), read from Arrow without building a
    Python object per token (SQuAD's validation split has about four million offsets)."""
    column = offset_column.combine_chunks() if isinstance(offset_column, pa.ChunkedArray) else offset_column
    flat = pc.list_flatten(pc.list_flatten(column)).to_numpy(zero_copy_only=False).reshape(-1, 2)
    bounds = np.cumsum(pc.list_value_length(column).to_numpy(zero_copy_only=False))
    return np.split(flat, bounds[:-1])
