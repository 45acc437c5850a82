"""Long-document classification: one prediction per document from the logits of all its windows.

Batches come from `LongDocumentDataModule`: B documents flattened into N >= B windows, with
`example_position` naming each window's document (its position in the batch). The windows' logits are
pooled per document (mean or max) before the loss, the metrics and the predictions, so training,
evaluation and prediction all see a document as one example however many windows it has.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryF1Score, MulticlassAccuracy, MulticlassF1Score

from neobert_tasks.data.keys import EXAMPLE_INDEX, EXAMPLE_POSITION
from neobert_tasks.errors import ConfigError
from neobert_tasks.metrics import classification_metrics, predictions_from_logits
from neobert_tasks.model.heads import sequence_classification_loss
from neobert_tasks.tasks.sequence_classification import SequenceClassificationTask

POOLING_MODES = ("mean", "max")


def pool_window_logits(
    logits: torch.Tensor, example_position: torch.Tensor, num_documents: int, pooling: str
) -> torch.Tensor:
    """Pool `(windows, labels)` logits into `(documents, labels)` by the mean or the max over each document.

    Args:
        logits: one row of logits per window.
        example_position: per window, the row of its document in the result (0 .. num_documents - 1).
        num_documents: number of documents in the batch; every one must have at least one window.
        pooling: ``mean`` or ``max``.
    """
    if pooling not in POOLING_MODES:
        raise ValueError(f"Unknown pooling '{pooling}'; expected one of {', '.join(POOLING_MODES)}.")
    index = example_position.to(logits.device).unsqueeze(-1).expand_as(logits)
    pooled = logits.new_zeros((num_documents, logits.shape[-1]))
    # include_self=False: the zeros above are placeholders, not values to average or compare with.
    return pooled.scatter_reduce(
        0, index, logits, reduce="mean" if pooling == "mean" else "amax", include_self=False
    )


class LongDocumentClassificationTask(SequenceClassificationTask):
    """Classify documents longer than one model input by pooling the logits of their windows.

    Args:
        pooling: How a document's window logits become its logits: ``mean`` or ``max``.
        kwargs: The options every task shares, declared in `SequenceClassificationTask` and `NeoBERTTask`.
    """

    def __init__(self, pooling: str = "mean", **kwargs: Any):
        if pooling not in POOLING_MODES:
            raise ConfigError(
                f"model.init_args.pooling {pooling!r} is not one of {', '.join(POOLING_MODES)}."
            )
        if kwargs.get("task_name") is not None:
            raise ConfigError(
                "model.init_args.task_name is for GLUE tasks; long documents use generic metrics."
            )
        self.pooling = pooling
        super().__init__(**kwargs)

    def new_metrics(self) -> MetricCollection:
        """Accuracy and F1 (of class 1 with two classes, macro-averaged otherwise) for single-label tasks."""
        if self.problem_type != "single_label_classification":
            return classification_metrics(self.problem_type, self.num_labels)
        f1 = BinaryF1Score() if self.num_labels == 2 else MulticlassF1Score(self.num_labels, average="macro")
        return MetricCollection(
            {"accuracy": MulticlassAccuracy(num_classes=self.num_labels, average="micro"), "f1": f1}
        )

    def document_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of each document of the batch, pooled over its windows."""
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        num_documents = int(batch[EXAMPLE_POSITION].max()) + 1
        return pool_window_logits(logits, batch[EXAMPLE_POSITION], num_documents, self.pooling)

    def document_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The head's loss for the problem type, on document logits."""
        return sequence_classification_loss(logits, labels, self.problem_type, self.num_labels)

    def training_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> torch.Tensor:
        loss = self.training_loss(self.document_logits(batch), batch["labels"])
        self.log_training_loss(loss, batch["labels"].shape[0])
        return loss

    def evaluation_step(self, stage: str, batch, batch_index: int, dataloader_idx: int) -> None:
        labels = batch["labels"]
        if self.problem_type == "single_label_classification" and bool((labels == -1).all()):
            return  # an unlabelled test split: nothing to score
        logits = self.document_logits(batch)
        key = f"{stage}/{dataloader_idx}"
        self.losses[key].update(self.document_loss(logits, labels).detach(), weight=labels.shape[0])
        predictions = predictions_from_logits(logits, self.problem_type)
        self.update_metrics(key, predictions, labels)

    def predict_step(self, batch, batch_index, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """One prediction per document, with its row number in the split as ``index``."""
        return self.prediction_outputs(self.document_logits(batch), batch[EXAMPLE_INDEX])
