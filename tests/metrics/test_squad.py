"""SQuAD scores follow the official v1.1 and v2.0 rules, checked on cases worked out by hand."""

from __future__ import annotations

import pytest

from neobert_tasks.metrics import exact_match, normalize_answer, squad_scores, token_f1


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("  Denver\tBroncos\n", "denver broncos"),
        ("Santa Clara, California.", "santa clara california"),
        ("An apple a day", "apple day"),
        # Articles go only as whole words; punctuation goes first, so "The-end" is one word "theend".
        ("Anne theater Athena", "anne theater athena"),
        ("The-end", "theend"),
        ("the (a) an", ""),
        ("1,000 $", "1000"),
        ("", ""),
    ],
)
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_match_is_the_best_over_gold_answers():
    assert exact_match("the Eiffel Tower.", ["Paris", "Eiffel tower"]) == 1.0
    assert exact_match("Eiffel", ["Paris", "Eiffel tower"]) == 0.0
    # No gold answer reads as [""]: only an empty (or token-less) prediction matches.
    assert exact_match("", []) == 1.0
    assert exact_match("the", [""]) == 1.0
    assert exact_match("Paris", []) == 0.0


def test_token_f1_partial_overlap():
    # [big, red, dog] vs [red, dog, barked]: 2 shared tokens, precision = recall = 2/3.
    assert token_f1("the big red dog", ["a red dog barked"]) == pytest.approx(2 / 3)
    # Repeated tokens count as often as both sides have them: [red, red, dog] vs [red, dog] share 2,
    # precision 2/3, recall 1, F1 = 2 * (2/3) / (5/3) = 0.8.
    assert token_f1("red red dog", ["red dog"]) == pytest.approx(0.8)
    assert token_f1("cat", ["dog"]) == 0.0


def test_token_f1_is_the_best_over_gold_answers():
    assert token_f1("the big red dog", ["cat", "a red dog barked", "big"]) == pytest.approx(2 / 3)
    # [big] vs [big, red, dog]: precision 1, recall 1/3, F1 = 2 * (1/3) / (4/3) = 0.5; vs [cat]: 0.
    assert token_f1("big", ["big red dog", "cat"]) == pytest.approx(0.5)


def test_token_f1_without_tokens():
    assert token_f1("", [""]) == 1.0
    assert token_f1("The.", []) == 1.0
    assert token_f1("", ["Paris"]) == 0.0
    assert token_f1("Paris", [""]) == 0.0


def test_squad_v1_means_count_missing_predictions_as_zero():
    references = {
        "q1": ["Denver Broncos", "Broncos"],
        "q2": ["Santa Clara, California"],
        "q3": ["gold"],
    }
    # q1 exact; q2 [santa, clara] vs [santa, clara, california]: precision 1, recall 2/3, F1 0.8;
    # q3 has no prediction (0); q4 is not a reference question and is ignored.
    predictions = {"q1": "the Broncos", "q2": "Santa Clara", "q4": "ignored"}
    scores = squad_scores(predictions, references)
    assert scores == pytest.approx({"exact_match": 100 / 3, "f1": 60.0})


def test_versions_differ_on_token_less_gold_answers():
    # "a" and "the" both normalise to "": v1.1 calls that an exact match with F1 0 (no shared token);
    # v2.0 drops the token-less gold answer, leaving [""], which the empty prediction matches fully.
    assert squad_scores({"q": "a"}, {"q": ["the"]}) == {"exact_match": 100.0, "f1": 0.0}
    scores = squad_scores({"q": "a"}, {"q": ["the"]}, version_2=True)
    assert (scores["exact_match"], scores["f1"]) == (100.0, 100.0)
    # v2.0 also drops token-less answers beside real ones: "the" no longer matches the prediction "a".
    scores = squad_scores({"q": "a"}, {"q": ["the", "Paris"]}, version_2=True)
    assert (scores["exact_match"], scores["f1"]) == (0.0, 0.0)


V2_REFERENCES = {"a1": ["Paris"], "a2": ["blue sky"], "n1": [], "n2": [""]}
# a1 right; a2 [sky] vs [blue, sky]: precision 1, recall 1/2, F1 2/3; n1 right (""); n2 wrong.
V2_PREDICTIONS = {"a1": "Paris", "a2": "sky", "n1": "", "n2": "London"}


def test_squad_v2_answerable_and_unanswerable_subsets():
    scores = squad_scores(V2_PREDICTIONS, V2_REFERENCES, version_2=True)
    assert scores == pytest.approx(
        {
            "exact_match": 50.0,
            "f1": 100 * (1 + 2 / 3 + 1 + 0) / 4,
            "has_ans_total": 2.0,
            "has_ans_exact_match": 50.0,
            "has_ans_f1": 100 * (1 + 2 / 3) / 2,
            "no_ans_total": 2.0,
            "no_ans_exact_match": 50.0,
            "no_ans_f1": 50.0,
        }
    )


def test_squad_v2_leaves_out_empty_subsets_and_scores_missing_predictions_zero():
    scores = squad_scores({"a1": "Paris"}, {"a1": ["Paris"], "n1": []}, version_2=True)
    # n1 has no prediction: 0, not the 1 that predicting "" would give.
    assert scores["no_ans_exact_match"] == 0.0 and scores["exact_match"] == 50.0
    scores = squad_scores({"a1": "Paris"}, {"a1": ["Paris"]}, version_2=True)
    assert scores["no_ans_total"] == 0.0
    assert "no_ans_exact_match" not in scores and "no_ans_f1" not in scores


def test_best_threshold_sweep():
    null_odds = {"a1": -3.0, "a2": -1.0, "n1": 2.0, "n2": 0.5}
    scores = squad_scores(V2_PREDICTIONS, V2_REFERENCES, version_2=True, null_odds=null_odds)
    # Sweep in order a1, a2, n2, n1 from 2 (answer "" everywhere: n1 and n2 right).
    # Exact: a1 +1 -> 3 (best, threshold -3); a2 +0 -> 3 (not better); n2 "London" -1 -> 2; n1 "" +0.
    assert scores["best_exact_match"] == pytest.approx(75.0)
    assert scores["best_exact_match_thresh"] == -3.0
    # F1: a1 +1 -> 3; a2 +2/3 -> 3 2/3 (best, threshold -1); n2 -1; n1 +0.
    assert scores["best_f1"] == pytest.approx(100 * (3 + 2 / 3) / 4)
    assert scores["best_f1_thresh"] == -1.0
    # The main scores are those of the predictions as given.
    assert scores["exact_match"] == 50.0


def test_best_threshold_may_be_answering_nothing():
    # Answering anything only loses: the best stays the starting point, "" everywhere, threshold 0.0.
    scores = squad_scores(
        {"a": "wrong", "n": "also wrong"},
        {"a": ["right"], "n": []},
        version_2=True,
        null_odds={"a": 5, "n": 6},
    )
    assert scores["best_exact_match"] == 50.0 and scores["best_exact_match_thresh"] == 0.0
    assert scores["best_f1"] == 50.0 and scores["best_f1_thresh"] == 0.0


def test_best_threshold_ignores_odds_of_unknown_questions():
    scores = squad_scores(
        {"a": "right"}, {"a": ["right"], "n": []}, version_2=True, null_odds={"a": -2.0, "other": -9.0}
    )
    # Start 0 (n has no prediction, so it scores 0 even when answering ""); a +1 at threshold -2.
    assert scores["best_exact_match"] == 50.0 and scores["best_exact_match_thresh"] == -2.0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (({}, {}), "at least one reference"),
        (({"q": "x"}, {"q": ["x"]}, False, {"q": 0.0}), "version_2=True"),
        (({"q": "x"}, {"q": []}), "no gold answer"),
        (({"q": "x", "r": ""}, {"q": ["x"], "r": []}, True, {"q": 0.0}), "null_odds has no value"),
    ],
)
def test_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        squad_scores(*arguments)
