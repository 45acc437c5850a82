"""Sequence classification and regression (GLUE and any text-classification dataset).

Metrics are GLUE's own when ``task_name`` is a GLUE task, generic accuracy/F1 (or Pearson/Spearman/MSE
for regression) otherwise. With several validation splits (MNLI matched and mismatched) the first
split's metrics are logged as ``val/<name>`` and the others as ``val/<name>_<split suffix>``.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric

from neobert_tasks.data.keys import EXAMPLE_INDEX, PREDICTION_INDEX_COLUMN
from neobert_tasks.data.sources import DataError
from neobert_tasks.data.splits import PREDICT_SPLIT
from neobert_tasks.errors import ConfigError
from neobert_tasks.metrics import (
    GLUE_MAIN_METRIC,
    classification_metrics,
    glue_metrics,
    predictions_from_logits,
)
from neobert_tasks.model import NeoBERTForSequenceClassification
from neobert_tasks.model.heads import sequence_classification_loss
from neobert_tasks.tasks.base import NeoBERTTask
from neobert_tasks.tasks.class_weights import (
    check_loss_options,
    log_weights,
    resolve_weights,
    training_label_counts,
    weighted_loss,
)

PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


def split_suffix(split_name: str, position: int) -> str:
    """ "" for the first split of a stage, ``_mismatched`` for ``validation_mismatched`` and so on."""
    if position == 0:
        return ""
    for prefix in ("validation_", "test_"):
        if split_name.startswith(prefix):
            return "_" + split_name[len(prefix) :]
    return "_" + split_name


class SequenceClassificationTask(NeoBERTTask):
    """Fine-tune ``NeoBERTForSequenceClassification`` ([CLS] → dense → tanh → classifier).

    Args:
        num_labels: Number of classes (1 for regression); linked from the datamodule.
        problem_type: single_label_classification, multi_label_classification or regression; linked
            from the datamodule.
        label_names: Class names in id order, saved as ``config.id2label``; linked from the datamodule.
        task_name: GLUE task whose official metrics to use; None for generic metrics. Linked from the
            GLUE datamodule.
        classifier_dropout: Dropout around the ``dense`` layer of the head.
        class_weights: Weight of each class in the training loss (single-label), in id order, or
            ``balanced`` (from the training labels' frequencies); None weighs every class 1.
        label_smoothing: Probability mass spread over the other classes in the training loss (single-label).
        pos_weight: Weight of the positive term of each label's training loss (multi-label), or
            ``balanced`` (negatives / positives per label); > 1 trades precision for recall.
        kwargs: The options every task shares, declared in `NeoBERTTask`.
    """

    head_class = NeoBERTForSequenceClassification
    head_modules = ("dense", "classifier")

    def __init__(
        self,
        num_labels: int | None = None,
        problem_type: str = "single_label_classification",
        label_names: list[str] | None = None,
        task_name: str | None = None,
        classifier_dropout: float = 0.1,
        class_weights: list[float] | str | None = None,
        label_smoothing: float = 0.0,
        pos_weight: list[float] | str | None = None,
        **kwargs: Any,
    ):
        if num_labels is None or num_labels < 1:
            raise ConfigError(
                f"model.init_args.num_labels is {num_labels}: it comes from the datamodule"
                " (data.init_args.num_labels) or must be set to a positive number."
            )
        if problem_type not in PROBLEM_TYPES:
            raise ConfigError(
                f"model.init_args.problem_type {problem_type!r} is not one of {', '.join(PROBLEM_TYPES)}."
            )
        if task_name is not None and task_name not in GLUE_MAIN_METRIC:
            raise ConfigError(
                f"model.init_args.task_name {task_name!r} is not a GLUE task ({', '.join(GLUE_MAIN_METRIC)})."
            )
        if label_names is not None and problem_type != "regression" and len(label_names) != num_labels:
            raise ConfigError(
                f"model.init_args.label_names has {len(label_names)} names but num_labels is {num_labels}."
            )
        check_loss_options(problem_type, class_weights, label_smoothing, pos_weight)
        self.num_labels, self.problem_type = num_labels, problem_type
        self.label_names, self.task_name = label_names, task_name
        self.classifier_dropout = classifier_dropout
        super().__init__(**kwargs)
        self.metrics = nn.ModuleDict()  # "<stage>/<split position>" → MetricCollection, filled in setup
        # Same keys → mean loss per example. A torchmetrics mean syncs its (sum, count) states, so under DDP
        # it is the whole split's mean even when ranks hold different numbers of examples; Lightning's own
        # sync_dist mean is not (it averages the integer example counts over ranks, truncating them).
        self.losses = nn.ModuleDict()

    def head_config(self) -> dict[str, Any]:
        config = {
            "num_labels": self.num_labels,
            "problem_type": self.problem_type,
            "classifier_dropout": self.classifier_dropout,
        }
        if self.label_names and self.problem_type != "regression":
            config["id2label"] = dict(enumerate(self.label_names))
            config["label2id"] = {name: index for index, name in enumerate(self.label_names)}
        return config

    def training_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> torch.Tensor:
        if self.loss_weights is None:
            return super().training_step(batch, batch_index)
        inputs = {key: value for key, value in self.model_inputs(batch).items() if key != "labels"}
        loss = self.training_loss(self.model(**inputs).logits, batch["labels"])
        self.log_training_loss(loss, batch["input_ids"].shape[0])
        return loss

    def training_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The head's loss, with the class weights, label smoothing or pos_weight asked for."""
        if self.loss_weights is None:
            return sequence_classification_loss(logits, labels, self.problem_type, self.num_labels)
        weights = {
            key: None if value is None else value.to(logits.device)
            for key, value in self.loss_weights.items()
        }
        return weighted_loss(
            logits, labels, self.problem_type, label_smoothing=self.hparams.label_smoothing, **weights
        )

    loss_weights: dict[str, torch.Tensor | None] | None = None  # set for fit by `setup` when asked for

    def resolve_loss_weights(self, datamodule) -> dict[str, torch.Tensor | None] | None:
        """The class weights and pos_weight tensors of the training loss; None for the head's own loss."""
        hparams = self.hparams
        if not (hparams.class_weights or hparams.pos_weight or hparams.label_smoothing):
            return None
        multi_label = self.problem_type == "multi_label_classification"
        counts = training_label_counts(datamodule, self.num_labels, multi_label)
        weights = {
            key: resolve_weights(
                hparams[key], f"model.init_args.{key}", self.num_labels, self.label_names, counts, multi_label
            )
            for key in ("class_weights", "pos_weight")
        }
        log_weights(weights, self.label_names)
        return weights

    def update_metrics(self, key: str, predictions: torch.Tensor, labels: torch.Tensor) -> None:
        """Update the metrics of ``key`` in float64, so that scores keep every digit of the official
        scorers' (metrics.json); float32 on MPS, which has no float64."""
        metrics = self.metrics[key]
        dtype = torch.float32 if self.device.type == "mps" else torch.float64
        if next(iter(metrics.values())).dtype != dtype:  # `.to(device)` resets torchmetrics' dtype to float32
            metrics.set_dtype(dtype)
        if self.problem_type == "regression":  # float32 batch means would lose digits
            predictions, labels = predictions.to(dtype), labels.to(dtype)
        metrics.update(predictions, labels)

    def new_metrics(self):
        if self.task_name is not None:
            return glue_metrics(self.task_name)
        return classification_metrics(self.problem_type, self.num_labels)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self._trainer, "datamodule", None)
        if stage == "fit":
            self.loss_weights = self.resolve_loss_weights(datamodule)
        self.split_names = {}
        for name in ("validate", "test"):
            splits = datamodule.split_names_for(name) if datamodule is not None else ["validation"]
            self.split_names[name] = splits or ["validation"]
            for position in range(len(self.split_names[name])):
                key = f"{name}/{position}"
                if key not in self.metrics:  # the two are filled together
                    self.metrics[key], self.losses[key] = self.new_metrics(), MeanMetric()

    # ------------------------------------------------------------------------------------------------
    # Evaluation: metrics per split, logged once per epoch from the synced torchmetrics states.

    def evaluation_step(self, stage: str, batch, batch_index: int, dataloader_idx: int) -> None:
        split = self.split_names[stage][dataloader_idx]
        if "labels" not in batch:  # a test split may come without labels, for predict
            raise DataError(
                f"Split '{split}' has no label column, so {stage} has nothing to score; label it by predict."
            )
        labels = batch["labels"]
        if stage == "test" and self.task_name is not None and bool((labels == -1).all()):
            if batch_index == 0:
                rank_zero_warn(
                    f"Split '{split}' hides its labels (-1, as GLUE's test sets do): {stage} has nothing to"
                    " score; predict writes the submission files."
                )
            return
        outputs = self.model(**self.model_inputs(batch))
        self.losses[f"{stage}/{dataloader_idx}"].update(outputs.loss.detach(), weight=labels.shape[0])
        predictions = predictions_from_logits(outputs.logits, self.problem_type)
        self.update_metrics(f"{stage}/{dataloader_idx}", predictions, labels)

    def log_scores(self, stage: str, prefix: str) -> None:
        for position, split_name in enumerate(self.split_names[stage]):
            key = f"{stage}/{position}"
            if self.losses[key].update_count == 0:
                continue  # nothing was scored (hidden test labels): no metric to report
            collection = self.metrics[key]
            suffix = split_suffix(split_name, position)
            main = GLUE_MAIN_METRIC.get(self.task_name or "", None)
            for name, value in collection.compute().items():
                on_bar = position == 0 and main in (None, name)
                self.log(f"{prefix}/{name}{suffix}", value, prog_bar=on_bar, add_dataloader_idx=False)
            collection.reset()
            self.log(f"{prefix}/loss{suffix}", self.losses[key].compute(), add_dataloader_idx=False)
            self.losses[key].reset()

    def predict_step(self, batch, batch_index, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        logits = self.model(**{k: v for k, v in self.model_inputs(batch).items() if k != "labels"}).logits
        return self.prediction_outputs(logits, batch[EXAMPLE_INDEX])

    def prediction_outputs(self, logits: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per example: its ``example_index``, the ``prediction`` the metrics take and, for classification,
        the class ``probabilities`` (softmax, or sigmoid per label for multi-label)."""
        outputs = {EXAMPLE_INDEX: index, "prediction": predictions_from_logits(logits, self.problem_type)}
        if self.problem_type == "single_label_classification":
            outputs["probabilities"] = logits.float().softmax(dim=-1)
        elif self.problem_type == "multi_label_classification":
            outputs["probabilities"] = logits.float().sigmoid()
        return outputs

    def prediction_files(self, outputs: list[dict[str, list]], split_names: list[str], datamodule) -> dict:
        """Per predicted split, in dataset order: a TSV with ``index`` and ``prediction`` columns, and a JSONL
        file with, per example, its ``index``, its text(s) under their column names, its label name, that
        label's ``score`` and every class's ``probabilities`` (a regression's ``score`` is its prediction).

        GLUE tasks get the benchmark's TSV names (``SST-2.tsv``, ``MNLI-m.tsv``, …) and label formats
        (class names for MNLI, QNLI and RTE, ids for the other classification tasks, scores for STS-B);
        other datasets get ``<split>.tsv`` with class names. A ``predict_file`` gives ``predict.tsv``, which
        also holds the texts and the score. The JSONL file is named after the TSV.
        """
        files = {}
        for split_name, split_outputs in zip(split_names, outputs, strict=True):
            indices = split_outputs[EXAMPLE_INDEX]
            order = sorted(range(len(indices)), key=indices.__getitem__)
            texts = datamodule.predict_texts(split_name) if hasattr(datamodule, "predict_texts") else {}
            columns = list(getattr(datamodule, "text_columns", ())) if texts else []
            from_file = split_name == PREDICT_SPLIT
            tsv_name = submission_file_name(None if from_file else self.task_name, split_name)

            # Both files are made row by row as they are written, never whole in memory.
            rows = functools.partial(self.prediction_rows, split_outputs, order, texts, columns)
            scored = from_file and bool(columns) and self.problem_type != "multi_label_classification"
            files[tsv_name] = tsv_lines(rows(), columns if from_file else [], scored)
            files[tsv_name.removesuffix(".tsv") + ".jsonl"] = (json.dumps(r) + "\n" for r, _ in rows())
        return files

    def prediction_rows(
        self, split_outputs: dict[str, list], order: list[int], texts: dict, columns: list[str]
    ) -> Iterator[tuple[dict[str, Any], str]]:
        """Each example's JSONL record, with its texts when known, and its TSV prediction, in ``order``."""
        for row in order:
            record = self.prediction_record(split_outputs, row)
            if texts:
                record.update(zip(columns, texts[record[PREDICTION_INDEX_COLUMN]], strict=True))
            yield record, self.format_prediction(split_outputs["prediction"][row])

    def prediction_record(self, split_outputs: dict[str, list], row: int) -> dict[str, Any]:
        """One example's JSONL record: index, label(s), score and class probabilities."""
        record: dict[str, Any] = {PREDICTION_INDEX_COLUMN: split_outputs[EXAMPLE_INDEX][row]}
        prediction = split_outputs["prediction"][row]
        if self.problem_type == "regression":
            return {**record, "score": prediction}
        names = self.label_names or [str(index) for index in range(self.num_labels)]
        probabilities = dict(zip(names, split_outputs["probabilities"][row], strict=True))
        if self.problem_type == "multi_label_classification":
            labels = [name for name, on in zip(names, prediction, strict=True) if on]
            return {**record, "labels": labels, "probabilities": probabilities}
        label = names[prediction]
        return {**record, "label": label, "score": probabilities[label], "probabilities": probabilities}

    def format_prediction(self, value) -> str:
        """A class name, a class id (GLUE tasks scored on ids), names joined by commas, or a score."""
        if isinstance(value, float):
            return f"{value:.9g}"  # every digit of a float32 score: rounding moves Spearman through ties
        if isinstance(value, list):
            names = self.label_names or [str(index) for index in range(len(value))]
            return ",".join(name for name, on in zip(names, value, strict=True) if on)
        if self.task_name is not None and self.task_name not in GLUE_TEXT_LABEL_TASKS:
            return str(value)
        return self.label_names[value] if self.label_names else str(value)


# GLUE's submission file name for each task (gluebenchmark.com format).
GLUE_SUBMISSION_NAMES = {
    "cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "qnli": "QNLI",
    "rte": "RTE", "wnli": "WNLI", "mnli": "MNLI-m", "ax": "AX",
}  # fmt: skip
# Tasks whose submissions name the class (entailment, …) rather than its id.
GLUE_TEXT_LABEL_TASKS = ("mnli", "qnli", "rte")


def tsv_lines(records: Iterable[tuple[dict[str, Any], str]], text_columns: list[str], scored: bool):
    """``index``, the ``text_columns`` (quoted where a text holds a tab, quote or line break), ``prediction``
    and, when ``scored``, the label's ``score``: a header, then one line per (record, prediction)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow([PREDICTION_INDEX_COLUMN, *text_columns, "prediction", *(["score"] if scored else [])])
    for record, prediction in records:
        score = [f"{record['score']:.9g}"] if scored else []
        texts = [record[column] for column in text_columns]
        writer.writerow([record[PREDICTION_INDEX_COLUMN], *texts, prediction, *score])
        if buffer.tell() > 1 << 20:  # hand over about a megabyte at a time
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def submission_file_name(task_name: str | None, split_name: str) -> str:
    """``SST-2.tsv`` for GLUE tasks (``MNLI-mm.tsv`` for mismatched), ``<split>.tsv`` otherwise."""
    if task_name not in GLUE_SUBMISSION_NAMES:
        return f"{split_name}.tsv"
    if task_name == "mnli" and split_name.endswith("mismatched"):
        return "MNLI-mm.tsv"
    return f"{GLUE_SUBMISSION_NAMES[task_name]}.tsv"
