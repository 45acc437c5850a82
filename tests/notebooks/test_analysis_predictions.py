"""`neobert_tasks.analysis.predictions`: predictions over a dataloader and NER mistakes by kind."""

from __future__ import annotations

import pytest
import torch

from neobert_tasks.analysis import ERROR_KINDS, collect_predictions, entity_errors, sentence_errors, word_tags

pytestmark = pytest.mark.notebooks  # -m notebooks selects everything about the notebooks


class ThresholdTask(torch.nn.Module):
    """A stand-in task whose ``predict_step`` returns, like a classification task, index and class."""

    def __init__(self):
        super().__init__()
        self.threshold = torch.nn.Parameter(torch.tensor(0.5))

    def predict_step(self, batch, batch_index):
        assert not self.training, "predictions must be made in eval mode"
        return {"index": batch["idx"], "prediction": (batch["score"] > self.threshold).long()}


def test_collect_predictions_flattens_batches_keeps_batch_keys_and_restores_the_mode():
    batches = [
        {"idx": torch.tensor([0, 1]), "score": torch.tensor([0.2, 0.9]), "labels": torch.tensor([0, 1])},
        {"idx": torch.tensor([2]), "score": torch.tensor([0.7]), "labels": torch.tensor([0])},
    ]
    task = ThresholdTask().train()
    outputs = collect_predictions(task, batches, batch_keys=("labels",))
    assert outputs == {"index": [0, 1, 2], "prediction": [0, 1, 1], "labels": [0, 1, 0]}
    assert task.training


def test_word_tags_keeps_the_first_prediction_of_a_word_and_tags_unscored_words_o():
    names = ["O", "B-PER", "I-PER"]
    outputs = {"example": [0, 0, 0, 1], "word": [0, 1, 1, 0], "prediction": [1, 2, 0, 1]}
    assert word_tags(outputs, names, [3, 1]) == [["B-PER", "I-PER", "O"], ["B-PER"]]


@pytest.mark.parametrize(
    ("gold", "predicted", "expected"),
    [
        (["B-PER", "I-PER", "O"], ["B-PER", "I-PER", "O"], []),
        (["B-PER", "I-PER", "O"], ["B-ORG", "I-ORG", "O"], [("type", ("PER", 0, 2), ("ORG", 0, 2))]),
        (["B-PER", "I-PER", "O"], ["O", "B-PER", "O"], [("boundary", ("PER", 0, 2), ("PER", 1, 2))]),
        (
            ["B-PER", "I-PER", "O"],
            ["O", "B-LOC", "I-LOC"],
            [("boundary and type", ("PER", 0, 2), ("LOC", 1, 3))],
        ),
        (["B-PER", "I-PER", "O"], ["O", "O", "O"], [("missed", ("PER", 0, 2), None)]),
        (["O", "O", "O"], ["O", "B-LOC", "O"], [("spurious", None, ("LOC", 1, 2))]),
    ],
)
def test_sentence_errors_sorts_each_mistake_into_its_kind(gold, predicted, expected):
    assert sentence_errors(gold, predicted) == expected


def test_a_prediction_overlapping_a_gold_entity_is_not_also_spurious():
    # One predicted LOC spans two gold entities: two boundary-and-type mistakes, nothing spurious.
    errors = sentence_errors(["B-PER", "B-ORG", "O"], ["B-LOC", "I-LOC", "O"])
    assert [kind for kind, _, _ in errors] == ["boundary and type", "boundary and type"]


def test_a_gold_entity_is_charged_to_the_prediction_of_the_same_span_first():
    # Same span with another type beats an overlapping prediction of the right type.
    gold = ["B-PER", "I-PER", "I-PER"]
    assert sentence_errors(gold, ["B-ORG", "I-ORG", "I-ORG"])[0][0] == "type"
    assert sentence_errors(gold, ["B-PER", "I-PER", "B-ORG"])[0][:2] == ("boundary", ("PER", 0, 3))


def test_entity_errors_lists_every_mistake_of_a_corpus_with_its_words():
    sentences = [["Anna", "Keller", "visited", "Oslo"], ["Helio", "Motors", "won"]]
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "B-MISC"]]
    errors = entity_errors(sentences, gold, predicted)
    assert list(errors.columns) == [
        "sentence", "kind", "gold_type", "gold_text", "predicted_type", "predicted_text",
    ]  # fmt: skip
    rows = errors.to_dict("records")
    assert rows[0] == {
        "sentence": 0, "kind": "type", "gold_type": "LOC", "gold_text": "Oslo",
        "predicted_type": "ORG", "predicted_text": "Oslo",
    }  # fmt: skip
    assert [row["kind"] for row in rows[1:]] == ["boundary", "spurious"]
    assert rows[1]["predicted_text"] == "Helio" and rows[2]["predicted_text"] == "won"
    assert set(errors["kind"]) <= set(ERROR_KINDS)


def test_entity_errors_of_a_perfect_corpus_is_an_empty_table_with_the_columns():
    errors = entity_errors([["Oslo"]], [["B-LOC"]], [["B-LOC"]])
    assert errors.empty and "kind" in errors.columns
