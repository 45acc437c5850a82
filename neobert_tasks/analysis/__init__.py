"""Look at finished runs: tables of scores, learning curves, confusion matrices and NER error kinds.

What the notebooks in ``notebooks/`` use, kept here so it is tested like the rest of the package:

* `runs`: read ``metrics.json``, ``metrics.csv`` and ``config.yaml`` of run directories into pandas;
* `predictions`: a task's predictions on any split, and NER mistakes sorted by kind;
* `plots`: matplotlib figures, each written to a file as well (needs matplotlib, a dev dependency);
* `samples`: small stand-in datasets for where ``../shared/data`` is absent;
* `cost`: time and peak memory of a call (costs against the sequence length).
"""

from neobert_tasks.analysis.predictions import (
    ERROR_KINDS,
    collect_predictions,
    entity_errors,
    sentence_errors,
    word_tags,
)
from neobert_tasks.analysis.runs import (
    Run,
    find_runs,
    logged_metrics,
    metric_curve,
    read_run,
    repository_root,
    results_table,
)

__all__ = [
    "ERROR_KINDS",
    "Run",
    "collect_predictions",
    "entity_errors",
    "find_runs",
    "logged_metrics",
    "metric_curve",
    "read_run",
    "repository_root",
    "results_table",
    "sentence_errors",
    "word_tags",
]
