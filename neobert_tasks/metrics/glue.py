"""Evaluation metrics for GLUE and for arbitrary classification/regression datasets.

Every metric is a torchmetrics class, so its state is synchronised across processes under DDP and the
values are those of the whole evaluation set, not an average of per-batch or per-rank values.

The official GLUE metric of each task, and the one used to rank runs (``GLUE_MAIN_METRIC``):

======  ==============================================  =========================
task    metrics (keys)                                  main metric
======  ==============================================  =========================
cola    matthews_correlation (binary MCC)               matthews_correlation
sst2    accuracy                                        accuracy
mrpc    f1 (binary, positive class 1), accuracy         f1
qqp     f1 (binary, positive class 1), accuracy         f1
stsb    pearson, spearman (regression)                  pearson
mnli    accuracy (3 classes, micro)                     accuracy
qnli    accuracy                                        accuracy
rte     accuracy                                        accuracy
wnli    accuracy                                        accuracy
======  ==============================================  =========================

``mnli_matched`` and ``mnli_mismatched`` (the names of the two MNLI validation sets in the Hugging Face
``glue`` dataset) are accepted as MNLI. CoLA's Matthews correlation is 0 when the predictions or the labels
are all one class, as in GLUE's reference implementation (see :class:`GlueMatthewsCorrCoef`).

The metrics take the output of :func:`predictions_from_logits`: class ids for classification, 0/1 per
label for multi-label, float scores for regression; targets are class ids, 0/1 per label, or float
scores (the same float dtype as the predictions, which ``predictions_from_logits`` makes float32).
"""

from __future__ import annotations

import torch
from torchmetrics import MeanSquaredError, MetricCollection, PearsonCorrCoef, SpearmanCorrCoef
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryF1Score,
    BinaryMatthewsCorrCoef,
    MulticlassAccuracy,
    MulticlassF1Score,
    MultilabelExactMatch,
    MultilabelF1Score,
)
from torchmetrics.utilities import dim_zero_cat

from neobert_tasks.metrics.similarity import average_ranks

GLUE_MAIN_METRIC: dict[str, str] = {
    "cola": "matthews_correlation",
    "sst2": "accuracy",
    "mrpc": "f1",
    "qqp": "f1",
    "stsb": "pearson",
    "mnli": "accuracy",
    "mnli_matched": "accuracy",
    "mnli_mismatched": "accuracy",
    "qnli": "accuracy",
    "rte": "accuracy",
    "wnli": "accuracy",
}
"""Metric key by which each GLUE task is ranked (the one the GLUE leaderboard reports first)."""

# Hugging Face's names (``PretrainedConfig.problem_type``) are accepted as well as the short ones, so a
# model config's value can be passed straight through.
_PROBLEM_TYPES: dict[str, str] = {
    "single_label": "single_label",
    "single_label_classification": "single_label",
    "multi_label": "multi_label",
    "multi_label_classification": "multi_label",
    "regression": "regression",
}


class GlueMatthewsCorrCoef(BinaryMatthewsCorrCoef):
    """Binary Matthews correlation that is 0 when the predictions or the labels are all one class.

    torchmetrics fills that undefined case with a limit (Chicco et al., 2020) that is not 0: a CoLA model
    that predicts "acceptable" for every sentence, common early in fine-tuning, would score about +0.28.
    GLUE's reference implementation (scikit-learn's ``matthews_corrcoef``) reports 0, so that is kept;
    every other case is torchmetrics' own value.
    """

    def compute(self) -> torch.Tensor:
        """Return the Matthews correlation of the accumulated (and, under DDP, synchronised) counts, in
        the metric's dtype (`set_dtype(torch.float64)` gives scikit-learn's value to the last digit)."""
        # confmat[target, prediction]: an empty row or column means a constant label or prediction,
        # where the correlation's denominator is 0.
        counts = self.confmat.to(self.dtype)
        if (counts.sum(dim=0) == 0).any() or (counts.sum(dim=1) == 0).any():
            return torch.zeros((), dtype=self.dtype, device=counts.device)
        (tn, fp), (fn, tp) = counts
        return (tp * tn - fp * fn) / torch.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))


class GlueSpearmanCorrCoef(SpearmanCorrCoef):
    """Spearman correlation computed in the metric's dtype: torchmetrics ranks in float32 whatever the
    inputs, 2e-8 off SciPy at STS-B's size; with `set_dtype(torch.float64)` it is SciPy's value."""

    def compute(self) -> torch.Tensor:
        x, y = (average_ranks(dim_zero_cat(state).to(self.dtype)) for state in (self.preds, self.target))
        x, y = x - x.mean(), y - y.mean()
        return (x * y).sum() / torch.sqrt((x * x).sum() * (y * y).sum())


def _problem_type(problem_type: str) -> str:
    """The short name of a problem type given in either spelling (a key of ``_PROBLEM_TYPES``)."""
    try:
        return _PROBLEM_TYPES[problem_type]
    except KeyError:
        valid = ", ".join(sorted(_PROBLEM_TYPES))
        raise ValueError(f"Unknown problem_type {problem_type!r}; valid values are: {valid}.") from None


def glue_metrics(task_name: str) -> MetricCollection:
    """Build the official GLUE metrics of one task.

    Args:
        task_name: a GLUE task, lower case, as in the Hugging Face ``glue`` dataset (``cola``, ``sst2``,
            ``mrpc``, ``qqp``, ``stsb``, ``mnli``, ``mnli_matched``, ``mnli_mismatched``, ``qnli``, ``rte``,
            ``wnli``).

    Returns:
        A ``MetricCollection`` whose keys are the metric names listed in the module docstring.

    Raises:
        ValueError: if ``task_name`` is not a GLUE task.
    """
    if task_name not in GLUE_MAIN_METRIC:
        valid = ", ".join(sorted(GLUE_MAIN_METRIC))
        raise ValueError(f"Unknown GLUE task {task_name!r}; valid task names are: {valid}.")
    if task_name == "cola":
        metrics = {"matthews_correlation": GlueMatthewsCorrCoef()}
    elif task_name in ("mrpc", "qqp"):
        metrics = {"f1": BinaryF1Score(), "accuracy": BinaryAccuracy()}
    elif task_name == "stsb":
        metrics = {"pearson": PearsonCorrCoef(), "spearman": GlueSpearmanCorrCoef()}
    elif task_name.startswith("mnli"):
        metrics = {"accuracy": MulticlassAccuracy(num_classes=3, average="micro")}
    else:
        metrics = {"accuracy": BinaryAccuracy()}
    return MetricCollection(metrics)


def classification_metrics(problem_type: str, num_labels: int) -> MetricCollection:
    """Build generic metrics for a dataset that is not part of GLUE.

    Keys by problem type: single-label ``accuracy`` (micro) and ``f1_macro``, plus ``f1`` (positive
    class 1) when ``num_labels == 2``; multi-label ``f1_micro`` and ``subset_accuracy`` (every label of
    an example right); regression ``pearson``, ``spearman`` and ``mse``.

    Args:
        problem_type: ``single_label``, ``multi_label`` or ``regression`` (the Hugging Face spellings
            ``single_label_classification`` and ``multi_label_classification`` are accepted too).
        num_labels: number of classes (single-label), of labels (multi-label) or of regression outputs.

    Returns:
        A ``MetricCollection`` with the keys above.

    Raises:
        ValueError: for an unknown problem type or a number of labels the problem type cannot have.
    """
    kind = _problem_type(problem_type)
    if kind == "regression":
        if num_labels < 1:
            raise ValueError(f"Regression needs num_labels >= 1, got {num_labels}.")
        # One output is ranked in the metric's dtype (see GlueSpearmanCorrCoef); several by torchmetrics.
        spearman = GlueSpearmanCorrCoef() if num_labels == 1 else SpearmanCorrCoef(num_outputs=num_labels)
        metrics = {
            "pearson": PearsonCorrCoef(num_outputs=num_labels),
            "spearman": spearman,
            "mse": MeanSquaredError(num_outputs=num_labels),
        }
    elif kind == "multi_label":
        if num_labels < 1:
            raise ValueError(f"Multi-label classification needs num_labels >= 1, got {num_labels}.")
        metrics = {
            "f1_micro": MultilabelF1Score(num_labels=num_labels, average="micro"),
            "subset_accuracy": MultilabelExactMatch(num_labels=num_labels),
        }
    else:
        if num_labels < 2:
            raise ValueError(f"Single-label classification needs num_labels >= 2, got {num_labels}.")
        metrics = {
            "accuracy": MulticlassAccuracy(num_classes=num_labels, average="micro"),
            "f1_macro": MulticlassF1Score(num_classes=num_labels, average="macro"),
        }
        if num_labels == 2:
            metrics["f1"] = BinaryF1Score()
    return MetricCollection(metrics)


def predictions_from_logits(logits: torch.Tensor, problem_type: str) -> torch.Tensor:
    """Turn model outputs into what the metrics of this module take as predictions.

    Args:
        logits: model outputs, ``(batch, num_labels)`` (or ``(batch, 1)`` / ``(batch,)`` for regression).
        problem_type: ``single_label``, ``multi_label`` or ``regression`` (Hugging Face spellings accepted).

    Returns:
        Class ids ``(batch,)`` (argmax) for single-label; 0/1 ``(batch, num_labels)`` long tensor
        (sigmoid > 0.5) for multi-label; float32 scores for regression, with a trailing size-1 axis
        removed (``(batch, 1)`` becomes ``(batch,)``).
    """
    kind = _problem_type(problem_type)
    logits = logits.detach()
    if kind == "single_label":
        return logits.argmax(dim=-1)
    if kind == "multi_label":
        return (torch.sigmoid(logits) > 0.5).long()
    # Only a size-1 output axis is dropped: squeezing already-flat scores of a one-example batch would
    # leave a 0-d tensor, which the metrics reject.
    if logits.ndim > 1 and logits.shape[-1] == 1:
        logits = logits.squeeze(-1)
    # Under bf16/fp16 autocast the logits are half precision; correlations accumulated in half precision
    # lose several digits, so regression scores are upcast.
    return logits.float()
