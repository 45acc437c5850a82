"""Evaluation metrics: official GLUE metrics and generic classification/regression metrics."""

from neobert_tasks.metrics.glue import (
    GLUE_MAIN_METRIC,
    classification_metrics,
    glue_metrics,
    predictions_from_logits,
)

__all__ = ["GLUE_MAIN_METRIC", "classification_metrics", "glue_metrics", "predictions_from_logits"]
