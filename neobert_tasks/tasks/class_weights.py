"""Class weights, label smoothing and multi-label ``pos_weight`` for the classification losses.

Weights are given per class, or as ``balanced``: computed from the training labels as scikit-learn's
``compute_class_weight("balanced")`` does, ``n_examples / (n_classes * count of the class)``, so every
class contributes as much to the loss as it would in balanced data. A multi-label ``pos_weight`` of
``balanced`` is ``negatives / positives`` per label, the value PyTorch's documentation suggests.

They change the training loss only. Validation and test losses stay the plain cross-entropy (or BCE), so
that runs with and without weights log comparable numbers; the metrics decide which model is best.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from neobert_tasks.data.keys import EXAMPLE_INDEX, LABELS
from neobert_tasks.errors import ConfigError

BALANCED = "balanced"


def label_counts(labels: Sequence, num_labels: int, multi_label: bool) -> tuple[torch.Tensor, int]:
    """Per class, how many training labels name it (multi-label: how many examples have it on), and the
    number of labels counted; -100 (tokens that carry no label) and -1 (hidden labels) are skipped."""
    if multi_label:
        values = torch.as_tensor(labels).reshape(-1, num_labels)
        values = values[(values >= 0).all(dim=1)]  # unlabelled rows are all -1
        return (values > 0.5).sum(0), values.shape[0]
    if labels and isinstance(labels[0], list):  # a tag per token, rows of different lengths
        labels = list(itertools.chain.from_iterable(labels))
    values = torch.as_tensor(labels).long()
    values = values[values >= 0]
    return torch.bincount(values, minlength=num_labels)[:num_labels], values.numel()


def resolve_weights(
    option: list[float] | str | None,
    key: str,
    num_labels: int,
    label_names: list[str] | None,
    counts: tuple[torch.Tensor, int] | None,
    multi_label: bool = False,
) -> torch.Tensor | None:
    """The weight tensor ``option`` asks for: None, one number per class, or ``balanced`` from ``counts``
    (`label_counts` of the training split). ``key`` names the option in errors."""
    if option is None:
        return None
    names = label_names or [str(index) for index in range(num_labels)]
    if isinstance(option, str):
        if option != BALANCED:
            raise ConfigError(
                f"{key} must be a list of {num_labels} numbers or '{BALANCED}', got {option!r}."
            )
        if counts is None:
            raise ConfigError(
                f"{key}: '{BALANCED}' is computed from the training split, which this run has not."
            )
        per_class, total = counts
        missing = [names[index] for index in range(num_labels) if per_class[index] == 0]
        if missing or (multi_label and (per_class == total).any()):
            absent = (missing or names)[0]
            raise ConfigError(
                f"{key}: '{BALANCED}' needs every class among the training labels, and '{absent}' is never"
                " (or, multi-label, always) there; give the weights as a list instead."
            )
        per_class = per_class.double()
        weights = (total - per_class) / per_class if multi_label else total / (num_labels * per_class)
        return weights.float()
    if len(option) != num_labels or any(not value >= 0 for value in option):
        raise ConfigError(
            f"{key} must hold {num_labels} non-negative numbers, one per class ({', '.join(names)}),"
            f" got {option}."
        )
    return torch.tensor(option, dtype=torch.float32)


def weighted_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    problem_type: str,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    pos_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy with class weights and label smoothing (labels -100 ignored, as in the heads), or
    BCE-with-logits with ``pos_weight`` for multi-label; regression is plain MSE. In float32."""
    logits = logits.float()
    if problem_type == "regression":
        return nn.functional.mse_loss(logits.squeeze(-1), labels.float().view(-1))
    if problem_type == "multi_label_classification":
        return nn.functional.binary_cross_entropy_with_logits(logits, labels.float(), pos_weight=pos_weight)
    return nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        weight=class_weights,
        label_smoothing=label_smoothing,
    )


def training_label_counts(datamodule, num_labels: int, multi_label: bool) -> tuple[torch.Tensor, int] | None:
    """`label_counts` of the datamodule's tokenized training split; None when it has none. Rows that are
    windows of one example (long documents) count once per example."""
    datasets = getattr(datamodule, "datasets", None) or {}
    dataset = datasets.get(getattr(datamodule, "train_split_name", "train"))
    if dataset is None or LABELS not in dataset.column_names:
        return None
    labels = dataset[LABELS]
    per_token = bool(labels) and isinstance(labels[0], list) and not multi_label
    if EXAMPLE_INDEX in dataset.column_names and not per_token:  # an example's windows count once
        labels = list(dict(zip(dataset[EXAMPLE_INDEX], labels, strict=True)).values())
    return label_counts(labels, num_labels, multi_label)


def check_loss_options(
    problem_type: str,
    class_weights: list[float] | str | None,
    label_smoothing: float,
    pos_weight: list[float] | str | None = None,
) -> None:
    """Refuse loss options that do not apply to ``problem_type`` or are out of range, naming the key."""
    single = problem_type in ("single_label_classification", "token_classification")
    for name, given in (("class_weights", class_weights is not None), ("label_smoothing", label_smoothing)):
        if given and not single:
            raise ConfigError(
                f"model.init_args.{name} applies to single-label classification, not {problem_type}."
            )
    if not 0 <= label_smoothing < 1:
        raise ConfigError(f"model.init_args.label_smoothing must be in [0, 1), got {label_smoothing}.")
    if pos_weight is not None and problem_type != "multi_label_classification":
        raise ConfigError(
            f"model.init_args.pos_weight applies to multi-label classification, not {problem_type}."
        )


def log_weights(weights: dict[str, torch.Tensor | None], label_names: list[str] | None) -> None:
    """Say in the log which weight each class gets (``balanced`` ones are computed, so worth seeing)."""
    for key, values in weights.items():
        if values is not None:
            names = label_names or [str(index) for index in range(len(values))]
            listed = ", ".join(
                f"{name} {value:.4g}" for name, value in zip(names, values.tolist(), strict=True)
            )
            rank_zero_info(f"Training loss {key}: {listed}.")
