"""Extractive question-answering scores of the official SQuAD v1.1 and v2.0 evaluation scripts.

An answer is compared with the gold answers after :func:`normalize_answer` (lower case, no punctuation,
no articles, single spaces). Per question, *exact match* is 1 when the normalised prediction equals some
normalised gold answer, and *F1* is the best bag-of-tokens F1 against any gold answer; both are averaged
over the questions and reported on the 0-100 scale, as the official scripts print them.

The two versions differ in three places, all reproduced by :func:`squad_scores`:

* v2.0 drops gold answers that normalise to nothing, and a question left with no gold answer (an
  unanswerable one, whose answer list is empty or ``[""]``) has the gold answer ``""``: predicting ``""``
  scores 1 on it, anything else 0. v1.1 compares with every gold answer as given.
* F1 between two strings of which one has no token is 1 when both have none, else 0 in v2.0; v1.1 gives
  0 whenever no token is shared, so 0 for two token-less strings too (:func:`token_f1` follows v2.0).
* v2.0 also reports the answerable and unanswerable subsets and, given each question's "null odds" (a
  score that grows with the model's belief that there is no answer), the best scores any threshold on
  those odds could reach, found as the official ``find_best_thresh`` finds them (see
  :func:`squad_scores`).

A question without a prediction scores 0, as in v1.1 ("Unanswered question will receive score 0"); the
v2.0 script instead leaves it out of every mean, so the numbers agree whenever every question has a
prediction. The v2.0 script, given null odds, also turns every prediction whose odds exceed 1.0 into
``""`` before computing ``exact``/``f1``; here the main scores are those of the predictions as given,
which is the same for predictions of :func:`neobert_tasks.tasks.qa_postprocessing.postprocess_predictions`
made with ``null_score_diff_threshold <= 1.0`` (those already answer ``""`` above their threshold).
"""

from __future__ import annotations

import re
import string
from collections import Counter

# str.translate with a deletion table is the fast way to drop every punctuation character.
_PUNCTUATION_TABLE = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Normalise an answer as the official SQuAD scripts do before comparing it.

    Lower case, remove every character of ``string.punctuation``, replace the whole words ``a``, ``an``
    and ``the`` by a space, then collapse runs of white space into single spaces and strip the ends.
    The order matters: ``"The-end"`` loses its hyphen first and becomes ``"theend"``, which keeps its
    letters because ``the`` is no longer a whole word.
    """
    text = text.lower().translate(_PUNCTUATION_TABLE)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _f1_of_tokens(prediction_tokens: list[str], gold_tokens: list[str], version_2: bool = True) -> float:
    """Bag-of-tokens F1 of two token lists; see the module docstring for the token-less cases."""
    if version_2 and (not prediction_tokens or not gold_tokens):
        return float(prediction_tokens == gold_tokens)
    shared = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if shared == 0:
        return 0.0
    precision = shared / len(prediction_tokens)
    recall = shared / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold_answers: list[str]) -> float:
    """1.0 when the normalised prediction equals some normalised gold answer, else 0.0.

    Args:
        prediction: the predicted answer text (``""`` for "no answer").
        gold_answers: the accepted answers; an empty list is read as ``[""]`` (an unanswerable question,
            as the v2.0 script reads it).
    """
    normalized = normalize_answer(prediction)
    return float(any(normalized == normalize_answer(gold) for gold in gold_answers or [""]))


def token_f1(prediction: str, gold_answers: list[str]) -> float:
    """Best bag-of-tokens F1 of the normalised prediction against any gold answer (v2.0 rules).

    The tokens are the white-space separated words of :func:`normalize_answer`'s output. When the
    prediction or a gold answer has no token the F1 is 1.0 if both have none, else 0.0.

    Args:
        prediction: the predicted answer text (``""`` for "no answer").
        gold_answers: the accepted answers; an empty list is read as ``[""]``.
    """
    prediction_tokens = normalize_answer(prediction).split()
    return max(
        _f1_of_tokens(prediction_tokens, normalize_answer(gold).split()) for gold in gold_answers or [""]
    )


def _question_scores(prediction: str, gold_answers: list[str], version_2: bool) -> tuple[float, float]:
    """(exact match, F1) of one question under the rules of its SQuAD version."""
    normalized_prediction = normalize_answer(prediction)
    normalized_golds = [normalize_answer(gold) for gold in gold_answers]
    if version_2:
        normalized_golds = [gold for gold in normalized_golds if gold] or [""]
    prediction_tokens = normalized_prediction.split()
    f1 = max(_f1_of_tokens(prediction_tokens, gold.split(), version_2) for gold in normalized_golds)
    return float(normalized_prediction in normalized_golds), f1


def _percent(scores: dict[str, float], question_ids: list[str]) -> float:
    """Mean score over ``question_ids`` on the 0-100 scale, 0 for a question without a score."""
    return 100.0 * sum(scores.get(question_id, 0.0) for question_id in question_ids) / len(question_ids)


def _best_threshold(
    scores: dict[str, float],
    predictions: dict[str, str],
    has_answer: dict[str, bool],
    null_odds: dict[str, float],
    total: int,
) -> tuple[float, float]:
    """Best score (0-100) over thresholds on the null odds, and the threshold that reaches it.

    A threshold ``t`` means answering ``""`` to every question whose null odds exceed ``t`` and keeping
    the prediction elsewhere. The sweep starts from answering ``""`` everywhere (every unanswerable
    question right, every answerable one wrong) and lowers the odds one question at a time: an answerable
    question then gains its score, an unanswerable one loses 1 if its prediction is not empty. The best
    running total is kept, with the odds of the question that reached it; ties keep the lower threshold.
    """
    missing = [question_id for question_id in scores if question_id not in null_odds]
    if missing:
        raise ValueError(
            f"null_odds has no value for {len(missing)} predicted question(s), e.g. {missing[0]!r}."
        )
    current = sum(1.0 for question_id in scores if not has_answer[question_id])
    best, best_threshold = current, 0.0
    # Iterating null_odds (a stable sort of its keys) orders questions of equal odds as the official
    # script does when null_odds is its na-prob file.
    swept = [question_id for question_id in null_odds if question_id in scores]
    for question_id in sorted(swept, key=null_odds.__getitem__):
        if has_answer[question_id]:
            current += scores[question_id]
        elif predictions[question_id]:
            # The raw prediction string, not its normalisation, as in the official script.
            current -= 1.0
        if current > best:
            best, best_threshold = current, float(null_odds[question_id])
    return 100.0 * best / total, best_threshold


def squad_scores(
    predictions: dict[str, str],
    references: dict[str, list[str]],
    version_2: bool = False,
    null_odds: dict[str, float] | None = None,
) -> dict[str, float]:
    """Official SQuAD scores of a set of predictions, on the 0-100 scale.

    Args:
        predictions: predicted answer text per question id (``""`` for "no answer"). Ids absent from
            ``references`` are ignored; a reference id absent from here scores 0.
        references: gold answer texts per question id. For v2.0 an unanswerable question has ``[]`` or
            ``[""]``.
        version_2: score with the v2.0 rules (see the module docstring) and add its subset scores.
        null_odds: v2.0 only: per question id, how strongly the model favours "no answer" (e.g. the
            ``null_odds`` of ``postprocess_predictions``); every predicted question needs a value.

    Returns:
        ``exact_match`` and ``f1`` (means over all reference ids). v2.0 adds ``has_ans_total`` and
        ``no_ans_total`` (question counts), ``has_ans_exact_match``/``has_ans_f1`` and
        ``no_ans_exact_match``/``no_ans_f1`` (means over the answerable / unanswerable questions, absent
        when there are none) and, with ``null_odds``, ``best_exact_match``, ``best_exact_match_thresh``,
        ``best_f1`` and ``best_f1_thresh``: the best means that answering ``""`` whenever the null odds
        exceed a threshold could reach, and that threshold (the official ``find_best_thresh``).

    Raises:
        ValueError: if ``references`` is empty, if ``null_odds`` is given without ``version_2`` or lacks a
            predicted question, or if a v1.1 question has no gold answer.
    """
    if not references:
        raise ValueError("squad_scores needs at least one reference question.")
    if null_odds is not None and not version_2:
        raise ValueError("null_odds only applies to SQuAD v2.0: pass version_2=True.")
    # Exact match and F1 of every reference question that has a prediction, keyed by question id.
    exact_scores, f1_scores = {}, {}
    for question_id, gold_answers in references.items():
        if not version_2 and not gold_answers:
            raise ValueError(
                f"Question {question_id!r} has no gold answer, which SQuAD v1.1 does not allow; "
                "pass version_2=True to score unanswerable questions."
            )
        if question_id in predictions:
            exact_scores[question_id], f1_scores[question_id] = _question_scores(
                predictions[question_id], gold_answers, version_2
            )
    question_ids = list(references)
    results = {"exact_match": _percent(exact_scores, question_ids), "f1": _percent(f1_scores, question_ids)}
    if not version_2:
        return results
    # Answerable means a non-empty gold answer exists, as the official script's bool(qa["answers"]),
    # with [""] read as unanswerable too.
    has_answer = {question_id: any(gold_answers) for question_id, gold_answers in references.items()}
    for prefix, wanted in (("has_ans", True), ("no_ans", False)):
        subset = [question_id for question_id in question_ids if has_answer[question_id] == wanted]
        results[f"{prefix}_total"] = float(len(subset))
        if subset:
            results[f"{prefix}_exact_match"] = _percent(exact_scores, subset)
            results[f"{prefix}_f1"] = _percent(f1_scores, subset)
    if null_odds is not None:
        for name, scores in (("exact_match", exact_scores), ("f1", f1_scores)):
            results[f"best_{name}"], results[f"best_{name}_thresh"] = _best_threshold(
                scores, predictions, has_answer, null_odds, len(question_ids)
            )
    return results
