"""Turn the start/end logits of extractive question answering into answer texts (SQuAD v1.1 and v2.0).

A question and its context are encoded as one or more features (overlapping windows of the context, each
with the question); the model gives every token of a feature a start logit and an end logit. For each
example, :func:`postprocess_predictions` gathers the candidate spans of all its features and ranks them:

* in each feature, the ``n_best_size`` positions with the highest start logits and the ``n_best_size``
  with the highest end logits are the candidate starts and ends (positions past the feature's offsets,
  i.e. padding, never count);
* a (start, end) pair is a candidate span when both tokens lie in the context (their offset is neither
  ``None`` nor ``(-1, -1)``: question and special tokens are marked so), ``end >= start``, and it is at
  most ``max_answer_length`` tokens long; its score is start logit + end logit and its text is
  ``context[offsets[start][0]:offsets[end][1]]``;
* the example's candidates are ranked by score; the same character span found in two windows is kept
  once, with its best score; the ``n_best_size`` best form the n-best list, whose ``probability`` is a
  softmax over the scores of that list.

SQuAD v1.1 answers the best span, or ``""`` when an example has no candidate span at all. SQuAD v2.0 may
also answer "no answer": a feature's null score is ``start_logit[0] + end_logit[0]`` (the ``[CLS]``
token), an example's null score is the smallest over its features, and its null odds are that null score
minus the best span score. The answer is ``""`` when the null odds exceed ``null_score_diff_threshold``
or when there is no candidate span (null odds ``inf``). The null odds are what
:func:`neobert_tasks.metrics.squad.squad_scores` takes to search the best threshold.

Features may come in any order, those of one example need not be adjacent (as after gathering DDP ranks),
and a feature seen twice changes nothing. The work is done on all features at once with numpy; only the
handful of candidate positions per feature and the final n-best entries are touched in Python.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np


@dataclass
class QAPredictions:
    """Answers of a set of examples, in the order of the ``contexts`` given to postprocess_predictions.

    Attributes:
        answers: the predicted answer text of each example, ``""`` for "no answer".
        nbest: per example, its best candidate spans, best first: dicts with ``text``, ``start`` and
            ``end`` (character offsets into the context, ``end`` exclusive), ``score`` (start logit + end
            logit), ``start_logit``, ``end_logit`` and ``probability`` (softmax over the list's scores).
            The null answer of v2.0 is not listed; an example without candidate spans has an empty list.
        null_odds: per example, null score minus best span score for v2.0 (``inf`` without a candidate
            span); 0.0 for v1.1.
    """

    answers: list[str]
    nbest: list[list[dict]]
    null_odds: list[float]


@dataclass
class _Spans:
    """Candidate spans as parallel arrays, one entry per span."""

    example: np.ndarray
    score: np.ndarray
    start_logit: np.ndarray
    end_logit: np.ndarray
    char_start: np.ndarray
    char_end: np.ndarray

    def take(self, selection: np.ndarray) -> _Spans:
        """The spans picked by an index array or a boolean mask, in that order."""
        return _Spans(*(getattr(self, field.name)[selection] for field in fields(self)))


def _check_inputs(
    contexts: list[str], per_feature: tuple[Sequence, ...], n_best_size: int, max_answer_length: int
) -> np.ndarray:
    """Validate the arguments of postprocess_predictions (``per_feature``: its four per-feature sequences,
    in order); return the example index of each feature."""
    lengths = [len(values) for values in per_feature]
    if len(set(lengths)) != 1:
        raise ValueError(
            "feature_example_indices, feature_offsets, start_logits and end_logits need one entry per "
            f"feature each, got {lengths[0]}, {lengths[1]}, {lengths[2]} and {lengths[3]}."
        )
    if n_best_size < 1 or max_answer_length < 1:
        raise ValueError(
            f"n_best_size and max_answer_length must be >= 1, got {n_best_size}, {max_answer_length}."
        )
    feature_examples = np.asarray(per_feature[0], dtype=np.int64).reshape(-1)
    if feature_examples.size and (feature_examples.min() < 0 or feature_examples.max() >= len(contexts)):
        raise ValueError(f"feature_example_indices must lie in [0, {len(contexts)}), the range of contexts.")
    if any(len(offsets) == 0 for offsets in per_feature[1]):
        raise ValueError("Every feature needs at least one token offset.")
    return feature_examples


def _logit_matrix(logits: Sequence[np.ndarray], lengths: list[int], name: str) -> np.ndarray:
    """Stack per-feature logits into a (features, longest feature) float64 matrix, -inf past each length.

    The -inf fill keeps padding positions out of every top-k and makes ragged inputs one array.
    """
    matrix = np.full((len(lengths), max(lengths, default=1)), -np.inf)
    for row, (values, length) in enumerate(zip(logits, lengths, strict=True)):
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 1 or values.shape[0] < length:
            raise ValueError(
                f"{name}[{row}] must be a 1-D array of at least {length} values (the feature's offsets), "
                f"got shape {values.shape}."
            )
        matrix[row, :length] = values[:length]
    return matrix


def _top_positions(matrix: np.ndarray, count: int) -> np.ndarray:
    """Column indices of the ``count`` largest values of each row (unordered), shape (rows, count)."""
    if count >= matrix.shape[1]:
        return np.broadcast_to(np.arange(matrix.shape[1]), matrix.shape).copy()
    return np.argpartition(-matrix, count - 1, axis=1)[:, :count]


def _candidate_offsets(
    feature_offsets: Sequence[Sequence[tuple[int, int] | None]], positions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Character start, character end and "in the context" of each token position, shaped like positions.

    Only these few positions per feature are looked up, which is what keeps the Python work small.
    """
    outside = (-1, -1)
    looked_up = [
        offsets[position] if position < length else outside
        for offsets, length, row in zip(
            feature_offsets, map(len, feature_offsets), positions.tolist(), strict=True
        )
        for position in row
    ]
    # fromiter over the flattened pairs is several times faster than np.array on a list of tuples.
    pairs = itertools.chain.from_iterable(outside if offset is None else offset for offset in looked_up)
    characters = np.fromiter(pairs, dtype=np.int64, count=2 * len(looked_up)).reshape(*positions.shape, 2)
    char_starts, char_ends = characters[..., 0], characters[..., 1]
    return char_starts, char_ends, (char_starts != -1) | (char_ends != -1)


def _has_repeated_offsets(char_offsets: np.ndarray, in_context: np.ndarray) -> np.ndarray:
    """Per feature (row), whether two of its candidate context tokens share a character offset."""
    # Tokens outside the context get distinct negative stand-ins so that they never match.
    stand_ins = -2 - np.arange(char_offsets.shape[1])
    ordered = np.sort(np.where(in_context, char_offsets, stand_ins), axis=1)
    return (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)


def _span_candidates(
    start_matrix: np.ndarray,
    end_matrix: np.ndarray,
    feature_offsets: Sequence[Sequence[tuple[int, int] | None]],
    feature_examples: np.ndarray,
    n_best_size: int,
    max_answer_length: int,
) -> _Spans:
    """The valid (start, end) pairs of every feature that can still reach their example's n-best list."""
    count = min(n_best_size, start_matrix.shape[1])
    top_starts = _top_positions(start_matrix, count)
    top_ends = _top_positions(end_matrix, count)
    char_starts, char_ends, in_context = _candidate_offsets(
        feature_offsets, np.concatenate([top_starts, top_ends], axis=1)
    )
    char_starts, char_ends = char_starts[:, :count], char_ends[:, count:]
    start_logits = np.take_along_axis(start_matrix, top_starts, axis=1)
    end_logits = np.take_along_axis(end_matrix, top_ends, axis=1)
    # Score of each (start slot, end slot) pair per feature, -inf where the pair is no valid span.
    span_lengths = top_ends[:, None, :] - top_starts[:, :, None] + 1  # (features, slots, slots)
    valid = in_context[:, :count, None] & in_context[:, None, count:]
    valid &= (span_lengths >= 1) & (span_lengths <= max_answer_length)
    scores = np.where(valid, start_logits[:, :, None] + end_logits[:, None, :], -np.inf)
    scores = scores.reshape(top_starts.shape[0], count * count)
    keep = np.isfinite(scores)
    if scores.shape[1] > n_best_size:
        # A pair that scores below the n-th best pair of its own feature is outranked by n other spans of
        # that example, so it cannot make the n-best list; ties are kept. That holds only when the pairs
        # of a feature are n distinct character spans, so features whose tokens share offsets keep all.
        threshold = np.partition(scores, scores.shape[1] - n_best_size, axis=1)[:, -n_best_size]
        repeated = _has_repeated_offsets(char_starts, in_context[:, :count])
        repeated |= _has_repeated_offsets(char_ends, in_context[:, count:])
        keep &= repeated[:, None] | (scores >= threshold[:, None])
    features, pairs = np.nonzero(keep)
    start_slots, end_slots = np.divmod(pairs, count)
    return _Spans(
        example=feature_examples[features],
        score=scores[features, pairs],
        start_logit=start_logits[features, start_slots],
        end_logit=end_logits[features, end_slots],
        char_start=char_starts[features, start_slots],
        char_end=char_ends[features, end_slots],
    )


def _best_spans(spans: _Spans, n_best_size: int) -> tuple[_Spans, np.ndarray]:
    """The n-best spans of each example, grouped by example and best first, and their probabilities."""
    if spans.example.size == 0:
        return spans, np.zeros(0)
    # One entry per character span of an example (overlapping windows find the same span twice): sorted
    # so that its best-scoring occurrence comes first, which np.unique keeps (its first occurrence).
    order = np.lexsort((-spans.start_logit, -spans.score, spans.char_end, spans.char_start, spans.example))
    spans = spans.take(order)
    keys = np.stack([spans.example, spans.char_start, spans.char_end], axis=1)
    spans = spans.take(np.unique(keys, axis=0, return_index=True)[1])
    # Ties in score are broken by position, never by feature order, so shuffled features agree.
    spans = spans.take(np.lexsort((spans.char_end, spans.char_start, -spans.score, spans.example)))
    # Spans are sorted by example: where each example's spans start, and how many it has.
    starts, group_sizes = np.unique(spans.example, return_index=True, return_counts=True)[1:]
    rank = np.arange(spans.example.size) - np.repeat(starts, group_sizes)
    spans = spans.take(rank < n_best_size)
    starts, group_sizes = np.unique(spans.example, return_index=True, return_counts=True)[1:]
    # Each group is sorted best first, so its first score is its maximum (the stable softmax shift).
    exponentials = np.exp(spans.score - np.repeat(spans.score[starts], group_sizes))
    probabilities = exponentials / np.repeat(np.add.reduceat(exponentials, starts), group_sizes)
    return spans, probabilities


def _nbest_lists(spans: _Spans, probabilities: np.ndarray, contexts: list[str]) -> list[list[dict]]:
    """The n-best dicts of every example (see QAPredictions), from spans grouped by example, best first."""
    nbest = [[] for _ in contexts]
    names = ("start", "end", "score", "start_logit", "end_logit", "probability")
    columns = spans.char_start, spans.char_end, spans.score, spans.start_logit, spans.end_logit, probabilities
    rows = zip(*(column.tolist() for column in columns), strict=True)
    for example, values in zip(spans.example.tolist(), rows, strict=True):
        entry = dict(zip(names, values, strict=True))
        nbest[example].append({"text": contexts[example][entry["start"] : entry["end"]], **entry})
    return nbest


def _null_odds(
    start_matrix: np.ndarray, end_matrix: np.ndarray, feature_examples: np.ndarray, nbest: list[list[dict]]
) -> np.ndarray:
    """Per example: smallest null score over its features minus its best span score (inf without span)."""
    null_scores = np.full(len(nbest), np.inf)
    np.minimum.at(null_scores, feature_examples, start_matrix[:, 0] + end_matrix[:, 0])
    best_scores = np.array([entries[0]["score"] if entries else -np.inf for entries in nbest])
    return null_scores - best_scores


def postprocess_predictions(
    contexts: list[str],
    feature_example_indices: Sequence[int],
    feature_offsets: Sequence[Sequence[tuple[int, int] | None]],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version_2: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> QAPredictions:
    """Answer every example from the logits of its features (rules in the module docstring).

    Args:
        contexts: the context text of each example.
        feature_example_indices: per feature, the index in ``contexts`` of its example.
        feature_offsets: per feature, per token, its ``(start, end)`` character offsets in the context
            (``end`` exclusive), or ``None`` / ``(-1, -1)`` for a token outside the context.
        start_logits: per feature, a 1-D array of start logits, at least as long as its offsets (values
            past them, e.g. batch padding, are ignored); anything ``np.asarray`` reads, such as a CPU
            float32 tensor (bfloat16 tensors need ``.float()`` first).
        end_logits: per feature, the end logits, like ``start_logits``.
        n_best_size: candidate start and end positions per feature, and length of each n-best list.
        max_answer_length: longest answer, in tokens.
        version_2: SQuAD v2.0: answer ``""`` when the null score wins (see the module docstring).
        null_score_diff_threshold: v2.0: answer ``""`` when null odds exceed this.

    Returns:
        The answers, n-best lists and null odds of every example, in the order of ``contexts``.

    Raises:
        ValueError: for inputs of mismatched lengths, example indices out of range, a feature without
            offsets, logits shorter than their offsets, or a size below 1.
    """
    per_feature = (feature_example_indices, feature_offsets, start_logits, end_logits)
    feature_examples = _check_inputs(contexts, per_feature, n_best_size, max_answer_length)
    lengths = [len(offsets) for offsets in feature_offsets]
    start_matrix = _logit_matrix(start_logits, lengths, "start_logits")
    end_matrix = _logit_matrix(end_logits, lengths, "end_logits")
    spans = _span_candidates(
        start_matrix, end_matrix, feature_offsets, feature_examples, n_best_size, max_answer_length
    )
    nbest = _nbest_lists(*_best_spans(spans, n_best_size), contexts)
    answers = [entries[0]["text"] if entries else "" for entries in nbest]
    if not version_2:
        return QAPredictions(answers=answers, nbest=nbest, null_odds=[0.0] * len(contexts))
    null_odds = _null_odds(start_matrix, end_matrix, feature_examples, nbest).tolist()
    answers = [
        "" if odds > null_score_diff_threshold else answer
        for answer, odds in zip(answers, null_odds, strict=True)
    ]
    return QAPredictions(answers=answers, nbest=nbest, null_odds=null_odds)
