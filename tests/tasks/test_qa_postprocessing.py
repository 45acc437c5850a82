"""QA post-processing picks spans by the SQuAD rules, on hand-made logits and against a plain reference."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from neobert_tasks.tasks.qa_postprocessing import QAPredictions, postprocess_predictions
from neobert_tasks.tasks.question_answering import NO_CANDIDATE_ODDS, answer_rows, finite_odds

CONTEXT = "Paris is the capital of France"
WORDS = [(0, 5), (6, 8), (9, 12), (13, 20), (21, 23), (24, 30)]  # Paris is the capital of France
QUESTION_TOKENS = 2
LOW = -10.0


def feature(words: list[tuple[int, int]], starts: dict[int, float], ends: dict[int, float], padding: int = 0):
    """Offsets and logits of ``[CLS] q q [SEP] words... [SEP]`` (+ padding logits).

    ``starts``/``ends`` map a token position to its logit; every other position gets ``LOW``.
    """
    offsets = [None] * (QUESTION_TOKENS + 2) + list(words) + [None]
    start_logits = np.full(len(offsets) + padding, LOW, dtype=np.float32)
    end_logits = np.full(len(offsets) + padding, LOW, dtype=np.float32)
    for position, logit in starts.items():
        start_logits[position] = logit
    for position, logit in ends.items():
        end_logits[position] = logit
    return offsets, start_logits, end_logits


def run(contexts, example_indices, features, **options):
    """postprocess_predictions on (offsets, start logits, end logits) triples."""
    offsets, start_logits, end_logits = zip(*features, strict=True) if features else ((), (), ())
    return postprocess_predictions(
        contexts, example_indices, list(offsets), list(start_logits), list(end_logits), **options
    )


# Token positions of the words in a feature holding all of WORDS: "Paris" is 4, "France" is 9.
PARIS, IS, THE, CAPITAL, OF, FRANCE = range(4, 10)


def test_best_span_and_its_nbest_entry():
    result = run([CONTEXT], [0], [feature(WORDS, {CAPITAL: 3.0, PARIS: 1.0}, {CAPITAL: 2.0, FRANCE: 1.5})])
    assert result.answers == ["capital"]
    best = result.nbest[0][0]
    assert best == pytest.approx(
        {
            "text": "capital",
            "start": 13,
            "end": 20,
            "score": 5.0,
            "start_logit": 3.0,
            "end_logit": 2.0,
            "probability": best["probability"],
        }
    )
    assert [entry["text"] for entry in result.nbest[0][:3]] == [
        "capital",
        "capital of France",
        "Paris is the capital",
    ]
    scores = [entry["score"] for entry in result.nbest[0]]
    assert scores == sorted(scores, reverse=True)
    assert sum(entry["probability"] for entry in result.nbest[0]) == pytest.approx(1.0)
    assert result.null_odds == [0.0]


def test_probability_is_a_softmax_over_the_nbest_scores():
    result = run([CONTEXT], [0], [feature(WORDS, {PARIS: 2.0}, {PARIS: 1.0, IS: 0.0})], n_best_size=2)
    # Top-2 starts: PARIS (2.0) and a LOW one; ends PARIS (1.0), IS (0.0). Spans: Paris 3.0, Paris is 2.0.
    assert [entry["text"] for entry in result.nbest[0]] == ["Paris", "Paris is"]
    expected = [math.exp(1.0) / (math.exp(1.0) + 1.0), 1.0 / (math.exp(1.0) + 1.0)]
    assert [entry["probability"] for entry in result.nbest[0]] == pytest.approx(expected)


def test_better_window_wins_and_a_span_seen_twice_is_listed_once():
    # Window A holds "Paris is the capital", window B "the capital of France"; both see "the capital".
    window_a = feature(WORDS[:4], {QUESTION_TOKENS + 2 + 2: 4.0}, {QUESTION_TOKENS + 2 + 3: 4.0})
    window_b = feature(WORDS[2:], {4: 1.0, 7: 5.0}, {5: 1.0, 7: 5.0})
    result = run([CONTEXT], [0, 0], [window_a, window_b])
    assert result.answers == ["France"]
    spans = [(entry["start"], entry["end"]) for entry in result.nbest[0]]
    assert len(spans) == len(set(spans))
    the_capital = next(entry for entry in result.nbest[0] if entry["text"] == "the capital")
    assert the_capital["score"] == 8.0  # window A's 4 + 4, not window B's 1 + 1


def test_span_starting_in_the_question_or_ending_on_a_special_token_is_rejected():
    # The best start is a question token and the best end the final [SEP]: neither may be used.
    starts = {1: 9.0, PARIS: 1.0}
    ends = {FRANCE + 1: 9.0, 2: 8.0, IS: 0.5}
    result = run([CONTEXT], [0], [feature(WORDS, starts, ends)])
    assert result.answers == ["Paris is"]
    assert all(entry["start"] >= 0 for entry in result.nbest[0])


def test_end_before_start_is_rejected():
    result = run([CONTEXT], [0], [feature(WORDS, {FRANCE: 5.0, THE: 1.0}, {CAPITAL: 5.0})])
    # FRANCE..CAPITAL would score 10 but ends before it starts; THE..CAPITAL scores 6.
    assert result.answers == ["the capital"]


def test_length_limit_in_tokens():
    logits = feature(WORDS, {PARIS: 5.0, OF: 1.0}, {FRANCE: 5.0})
    assert run([CONTEXT], [0], [logits], max_answer_length=6).answers == [CONTEXT]
    # Six tokens is one too many at 5: the best is now "of France" (two tokens).
    assert run([CONTEXT], [0], [logits], max_answer_length=5).answers == ["of France"]
    # A one-token limit keeps only spans with start == end.
    single = run([CONTEXT], [0], [logits], max_answer_length=1)
    assert all(entry["text"] in CONTEXT.split() for entry in single.nbest[0])


def test_padded_logits_are_ignored():
    offsets, start_logits, end_logits = feature(WORDS, {CAPITAL: 1.0}, {CAPITAL: 1.0}, padding=5)
    start_logits[-3:] = end_logits[-3:] = 100.0
    result = run([CONTEXT], [0], [(offsets, start_logits, end_logits)])
    assert result.answers == ["capital"]


def test_minus_one_offsets_are_outside_the_context():
    offsets, start_logits, end_logits = feature(WORDS, {PARIS: 5.0, FRANCE: 1.0}, {PARIS: 5.0, FRANCE: 1.0})
    offsets[PARIS] = (-1, -1)
    assert run([CONTEXT], [0], [(offsets, start_logits, end_logits)]).answers == ["France"]


def test_no_valid_span():
    only_question = feature(WORDS, {1: 5.0}, {2: 5.0})
    # n_best 1: the single start and end candidates are question tokens.
    result = run([CONTEXT], [0], [only_question], n_best_size=1)
    assert (result.answers, result.nbest, result.null_odds) == ([""], [[]], [0.0])
    result = run([CONTEXT], [0], [only_question], n_best_size=1, version_2=True)
    assert (result.answers, result.nbest, result.null_odds) == ([""], [[]], [math.inf])


def test_example_without_features_and_no_features_at_all():
    result = run([CONTEXT, "other"], [0], [feature(WORDS, {PARIS: 1.0}, {PARIS: 1.0})], version_2=True)
    assert result.answers == ["Paris", ""] and result.nbest[1] == [] and result.null_odds[1] == math.inf
    assert run([], [], []).answers == []


@pytest.mark.parametrize(("threshold", "answer"), [(1.9, ""), (2.1, "capital")])
def test_v2_null_answer_against_the_threshold(threshold, answer):
    # Null score 3 + 3 = 6, best span 2 + 2 = 4: null odds 2.
    logits = feature(WORDS, {0: 3.0, CAPITAL: 2.0}, {0: 3.0, CAPITAL: 2.0})
    result = run([CONTEXT], [0], [logits], version_2=True, null_score_diff_threshold=threshold)
    assert result.answers == [answer]
    assert result.null_odds == pytest.approx([2.0])
    # The n-best list holds the spans whatever the decision.
    assert result.nbest[0][0]["text"] == "capital"


def test_v2_null_score_is_the_minimum_over_windows():
    # Null 6 in window A but 1 in window B: the example's null score is 1; best span 4 -> odds -3.
    window_a = feature(WORDS[:4], {0: 3.0, PARIS: 2.0}, {0: 3.0, PARIS: 2.0})
    window_b = feature(WORDS[2:], {0: 0.5}, {0: 0.5})
    for windows in ([window_a, window_b], [window_b, window_a]):
        result = run([CONTEXT], [0, 0], windows, version_2=True)
        assert result.answers == ["Paris"]
        assert result.null_odds == pytest.approx([-3.0])


def test_v1_never_answers_nothing_when_a_span_exists():
    logits = feature(WORDS, {0: 30.0, CAPITAL: 1.0}, {0: 30.0, CAPITAL: 1.0})
    assert run([CONTEXT], [0], [logits]).answers == ["capital"]


def random_case(seed: int, example_count: int = 6, repeated_offsets: bool = False):
    """Random contexts split in 1-3 windows of random lengths, with random logits padded at random."""
    generator = np.random.default_rng(seed)
    contexts, example_indices, features = [], [], []
    for example in range(example_count):
        word_lengths = generator.integers(1, 7, size=int(generator.integers(3, 40)))
        starts = np.concatenate([[0], np.cumsum(word_lengths + 1)[:-1]])
        words = [
            (int(start), int(start + length)) for start, length in zip(starts, word_lengths, strict=True)
        ]
        if repeated_offsets:
            # Sub-word pieces that share their word's offsets, as some tokenizers give them.
            words = [word for word in words for _ in range(int(generator.integers(1, 3)))]
        contexts.append(" ".join("w" * int(length) for length in word_lengths))
        for _ in range(int(generator.integers(1, 4))):
            first = int(generator.integers(0, len(words)))
            window = words[first : first + int(generator.integers(1, 25))]
            offsets = [None] * (QUESTION_TOKENS + 2) + window + [None]
            length = len(offsets) + int(generator.integers(0, 4))
            features.append((offsets, generator.standard_normal(length), generator.standard_normal(length)))
            example_indices.append(example)
    return contexts, example_indices, features


def reference_postprocessing(contexts, example_indices, features, n_best_size, max_answer_length):
    """A plain loop over every example, feature and (start, end) pair; returns (nbest, null score)."""
    candidates = [{} for _ in contexts]
    null_scores = [math.inf] * len(contexts)
    for example, (offsets, start_logits, end_logits) in zip(example_indices, features, strict=True):
        start_logits, end_logits = start_logits[: len(offsets)], end_logits[: len(offsets)]
        null_scores[example] = min(null_scores[example], start_logits[0] + end_logits[0])
        for start in np.argsort(-start_logits)[:n_best_size]:
            for end in np.argsort(-end_logits)[:n_best_size]:
                if offsets[start] is None or offsets[end] is None:
                    continue
                if end < start or end - start + 1 > max_answer_length:
                    continue
                span = (offsets[start][0], offsets[end][1])
                entry = (start_logits[start] + end_logits[end], start_logits[start], end_logits[end])
                candidates[example][span] = max(entry, candidates[example].get(span, entry))
    nbest = []
    for example_candidates in candidates:
        ranked = sorted(example_candidates.items(), key=lambda item: (-item[1][0], item[0]))[:n_best_size]
        nbest.append([(span, scores) for span, scores in ranked])
    return nbest, null_scores


@pytest.mark.parametrize("repeated_offsets", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_a_plain_loop(seed, repeated_offsets):
    contexts, example_indices, features = random_case(seed, repeated_offsets=repeated_offsets)
    for n_best_size, max_answer_length in ((3, 4), (5, 30), (20, 10)):
        result = run(
            contexts,
            example_indices,
            features,
            n_best_size=n_best_size,
            max_answer_length=max_answer_length,
            version_2=True,
            null_score_diff_threshold=-math.inf,
        )
        nbest, null_scores = reference_postprocessing(
            contexts, example_indices, features, n_best_size, max_answer_length
        )
        for example, expected in enumerate(nbest):
            got = [((entry["start"], entry["end"]), entry["score"]) for entry in result.nbest[example]]
            assert [span for span, _ in got] == [span for span, _ in expected]
            assert [score for _, score in got] == pytest.approx([scores[0] for _, scores in expected])
            best = expected[0][1][0] if expected else -math.inf
            assert result.null_odds[example] == pytest.approx(null_scores[example] - best)


def test_shuffled_and_repeated_features_give_the_same_result():
    contexts, example_indices, features = random_case(seed=7, example_count=8)
    expected = run(contexts, example_indices, features, version_2=True)
    # Shuffled, as after gathering DDP ranks, with some features twice (padding of the last batch).
    order = list(range(len(features))) + [0, len(features) - 1]
    random.Random(0).shuffle(order)
    shuffled = run(
        contexts, [example_indices[i] for i in order], [features[i] for i in order], version_2=True
    )
    assert shuffled == expected


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (([CONTEXT], [0, 0], [[(0, 5)]], [np.zeros(1)], [np.zeros(1)]), "one entry per feature"),
        (([CONTEXT], [1], [[(0, 5)]], [np.zeros(1)], [np.zeros(1)]), "must lie in"),
        (([CONTEXT], [0], [[(0, 5), (6, 8)]], [np.zeros(1)], [np.zeros(2)]), "at least 2 values"),
        (([CONTEXT], [0], [[]], [np.zeros(1)], [np.zeros(1)]), "at least one token offset"),
        (([CONTEXT], [0], [[(0, 5)]], [np.zeros(1)], [np.zeros(1)], 0), "must be >= 1"),
    ],
)
def test_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        postprocess_predictions(*arguments)


def test_null_odds_files_hold_numbers_that_strict_json_reads():
    written = json.dumps(finite_odds([math.inf, -1.5, 0.0]), allow_nan=False)  # raises on inf or nan
    assert json.loads(written) == [NO_CANDIDATE_ODDS, -1.5, 0.0]


def test_answer_rows_give_each_questions_span_and_probability():
    """predict.jsonl's rows: the answer's start and probability come from its n-best entry; no answer (v2.0)
    has neither, and its null odds stay finite JSON."""
    predictions = QAPredictions(
        answers=["the mat", ""],
        nbest=[
            [{"text": "the mat", "start": 15, "end": 22, "probability": 0.75}, {"text": "mat", "start": 19}],
            [{"text": "cat", "start": 4, "end": 7, "probability": 0.6}],
        ],
        null_odds=[-2.5, math.inf],
    )
    rows = answer_rows(["a", "b"], ["where ?", "who ?"], predictions, version_2=True)
    assert rows == [
        {"id": "a", "question": "where ?", "answer": "the mat", "start": 15, "probability": 0.75,
         "null_odds": -2.5},
        {"id": "b", "question": "who ?", "answer": "", "start": None, "probability": None,
         "null_odds": NO_CANDIDATE_ODDS},
    ]  # fmt: skip
    version_1 = QAPredictions(answers=["the mat"], nbest=predictions.nbest[:1], null_odds=[0.0])
    assert "null_odds" not in answer_rows(["a"], ["where ?"], version_1, version_2=False)[0]
