"""Evaluation metrics: official GLUE metrics, generic classification/regression metrics, NER entity F1."""

# The data package first: its embedding evaluation imports `embedding_sets`, whose own import of
# `neobert_tasks.data.sources` would otherwise start the data package while `embedding_sets` is half loaded.
import neobert_tasks.data  # noqa: F401  (isort: keep first)
from neobert_tasks.metrics.entities import EntityF1, extract_entities
from neobert_tasks.metrics.glue import (
    GLUE_MAIN_METRIC,
    classification_metrics,
    glue_metrics,
    predictions_from_logits,
)
from neobert_tasks.metrics.squad import exact_match, normalize_answer, squad_scores, token_f1

__all__ = [
    "GLUE_MAIN_METRIC",
    "EntityF1",
    "classification_metrics",
    "exact_match",
    "extract_entities",
    "glue_metrics",
    "normalize_answer",
    "predictions_from_logits",
    "squad_scores",
    "token_f1",
]
