"""Class weights, label smoothing and pos_weight: the values scikit-learn and PyTorch define."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight

from neobert_tasks.errors import ConfigError
from neobert_tasks.tasks.class_weights import (
    check_loss_options,
    label_counts,
    resolve_weights,
    weighted_loss,
)


def test_balanced_weights_equal_scikit_learn():
    labels = [0, 0, 0, 0, 0, 1, 1, 2, -100, -1]  # -100 (no label) and -1 (hidden) are not counted
    counts = label_counts(labels, 3, multi_label=False)
    weights = resolve_weights("balanced", "model.init_args.class_weights", 3, None, counts)
    counted = np.array([0, 0, 0, 0, 0, 1, 1, 2])
    expected = compute_class_weight("balanced", classes=np.arange(3), y=counted)
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-6)


def test_token_labels_count_labelled_tokens():
    counts, total = label_counts([[0, -100, 1], [1, 1, -100]], 2, multi_label=False)
    assert counts.tolist() == [1, 3] and total == 4


def test_balanced_pos_weight_is_negatives_over_positives():
    labels = [[1, 0], [1, 1], [0, 0], [1, 0]]
    counts = label_counts(labels, 2, multi_label=True)
    weights = resolve_weights("balanced", "model.init_args.pos_weight", 2, None, counts, multi_label=True)
    assert weights.tolist() == pytest.approx([1 / 3, 3 / 1])


def test_weighted_loss_equals_torch():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, -100, 1])
    weights = torch.tensor([0.5, 2.0, 1.0])
    expected = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=0.1)(logits, labels)
    actual = weighted_loss(logits, labels, "single_label_classification", weights, 0.1)
    torch.testing.assert_close(actual, expected)
    multi, targets = torch.randn(4, 2), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    pos_weight = torch.tensor([3.0, 0.5])
    expected = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)(multi, targets)
    actual = weighted_loss(multi, targets, "multi_label_classification", pos_weight=pos_weight)
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize(
    ("option", "counts", "message"),
    [
        ([1.0, 2.0], None, "must hold 3 non-negative numbers, one per class (neg, neu, pos), got [1.0, 2.0]"),
        ([1.0, -1.0, 1.0], None, "non-negative numbers"),
        ("even", None, "must be a list of 3 numbers or 'balanced', got 'even'"),
        ("balanced", None, "computed from the training split, which this run has not"),
        ("balanced", (torch.tensor([3, 0, 2]), 5), "'neu' is never"),
    ],
)
def test_wrong_weights_are_refused_naming_the_key(option, counts, message):
    with pytest.raises(ConfigError) as error:
        resolve_weights(option, "model.init_args.class_weights", 3, ["neg", "neu", "pos"], counts)
    assert str(error.value).startswith("model.init_args.class_weights")
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("problem_type", "options", "message"),
    [
        ("regression", {"class_weights": [1.0]}, "class_weights applies to single-label classification"),
        ("multi_label_classification", {"label_smoothing": 0.1}, "label_smoothing applies to single-label"),
        ("single_label_classification", {"label_smoothing": 1.0}, "label_smoothing must be in [0, 1)"),
        ("single_label_classification", {"pos_weight": [1.0]}, "pos_weight applies to multi-label"),
    ],
)
def test_options_that_do_not_apply_are_refused(problem_type, options, message):
    arguments = {"class_weights": None, "label_smoothing": 0.0, "pos_weight": None, **options}
    with pytest.raises(ConfigError) as error:
        check_loss_options(problem_type, **arguments)
    assert message in str(error.value)
