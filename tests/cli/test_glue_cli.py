"""``fit``, ``validate`` and ``predict`` through the command line on every GLUE task of the shared copy.

Each run trains the tiny model for two steps on a few rows, so the scores mean nothing; what is checked
is that each task logs its own metric names (to the CSV logger's ``metrics.csv`` and to ``metrics.json``),
that ``validate`` on the best checkpoint reproduces the scores ``fit`` recorded, and, for one task of each
kind of metric, that those scores are scikit-learn's and SciPy's on the predictions ``predict`` writes
for the same validation rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from neobert_tasks.data.glue import GLUE_TASKS
from neobert_tasks.tasks.sequence_classification import GLUE_SUBMISSION_NAMES
from tests.cli.helpers import glue_args, read_metrics_csv, run_cli
from tests.conftest import REPO_ROOT, shared_path

pytestmark = pytest.mark.slow  # runs the command line end to end

# Metrics each task must log on its (first) validation split.
TASK_METRICS = {
    "cola": ("val/matthews_correlation",),
    "sst2": ("val/accuracy",),
    "mrpc": ("val/f1", "val/accuracy"),
    "stsb": ("val/pearson", "val/spearman"),
    "qqp": ("val/f1", "val/accuracy"),
    "mnli": ("val/accuracy",),
    "qnli": ("val/accuracy",),
    "rte": ("val/accuracy",),
    "wnli": ("val/accuracy",),
}
# The shared copy has no QQP validation split; its fit is checked on its own below.
VALIDATED_TASKS = sorted(set(TASK_METRICS) - {"qqp"})

# Validation rows scored; one batch of them, so limit_val_batches and limit_predict_batches never cut.
EVAL_ROWS = 48
QUICK_ARGS = [
    # With seed 4 the barely trained tiny model predicts both classes on CoLA and MRPC; with most other
    # seeds it predicts one class only, and Matthews correlation and F1 would then be 0 or trivial.
    "--seed_everything", "4",
    # The tiny preset's from-scratch rate (1e-3) takes two batches far enough to predict the majority class
    # only; a fine-tuning rate leaves the model near its seeded start, which predicts both.
    "--model.init_args.learning_rate", "1e-5",
    "--data.init_args.limit_train_samples", "32",
    "--data.init_args.limit_eval_samples", str(EVAL_ROWS),
    "--data.init_args.eval_batch_size", str(EVAL_ROWS),
    "--trainer.limit_train_batches", "2",
    "--trainer.limit_val_batches", "1.0",
    "--trainer.limit_predict_batches", "1.0",
]  # fmt: skip
# Tasks whose scores are compared with scikit-learn's and SciPy's: one per kind of metric (Matthews, F1
# with accuracy, Pearson with Spearman, three-class accuracy with class names in the submission file).
REFERENCE_CHECKED = ("cola", "mrpc", "stsb", "mnli")
# Tasks whose metrics are meaningless when one class is predicted for every row.
NEEDS_BOTH_CLASSES = ("cola", "mrpc")


def reference_metrics(task: str, predictions: list, labels: list) -> dict[str, float]:
    """The task's validation metrics computed by scikit-learn and SciPy."""
    if task == "stsb":  # the file's 9 digits are the model's float32 scores: read them back as such
        predictions = np.asarray(predictions, dtype=np.float32).astype(np.float64)
        return {
            "val/pearson": pearsonr(predictions, labels).statistic,
            "val/spearman": spearmanr(predictions, labels).statistic,
        }
    metrics = {"val/accuracy": accuracy_score(labels, predictions)}
    if task in ("mrpc", "qqp"):
        metrics["val/f1"] = f1_score(labels, predictions)
    if task == "cola":
        metrics = {"val/matthews_correlation": matthews_corrcoef(labels, predictions)}
    return metrics


def read_predictions(task: str, run_dir) -> tuple[list, list]:
    """Predictions from ``predict``'s submission file, and the labels of the same validation rows."""
    submission = pd.read_csv(run_dir / "predictions" / f"{GLUE_SUBMISSION_NAMES[task]}.tsv", sep="\t")
    split = GLUE_TASKS[task].validation_splits[0]
    rows = pd.read_parquet(shared_path("data", "glue", task, f"{split}.parquet")).head(EVAL_ROWS)
    # The file is in `idx` order, which is not the row order for every task (MRPC's idx has gaps).
    assert sorted(submission["index"]) == sorted(rows["idx"])
    predicted = dict(zip(submission["index"], submission["prediction"], strict=True))
    predictions = [predicted[index] for index in rows["idx"]]
    if task in ("mnli", "qnli", "rte"):  # GLUE submissions name these classes
        predictions = [GLUE_TASKS[task].label_names.index(name) for name in predictions]
    return predictions, rows["label"].tolist()


@pytest.mark.parametrize("task", VALIDATED_TASKS)
def test_fit_validate_predict(task, tmp_path):
    names = TASK_METRICS[task]
    args = [*glue_args(task, tmp_path), *QUICK_ARGS]

    fit_dir = run_cli("fit", *args, tmp_path=tmp_path)
    logged = read_metrics_csv(fit_dir)
    assert set(names) <= set(logged), f"{task} fit logged {sorted(logged)}"
    summary = json.loads((fit_dir / "metrics.json").read_text())
    assert summary["monitor"] == f"val/{GLUE_TASKS[task].main_metric}"
    assert set(names) <= set(summary["best_metrics"])
    if task == "mnli":  # both validation splits: the mismatched one is logged with its suffix
        assert {"val/accuracy_mismatched", "val/loss_mismatched"} <= set(logged)

    # `validate` from the run's saved config and best checkpoint scores the same rows with the same model.
    best = ["--config", str(fit_dir / "config.yaml"), "--ckpt_path", summary["best_checkpoint"]]
    validated = read_metrics_csv(run_cli("validate", *best, tmp_path=tmp_path))
    for name in names:
        assert validated[name] == [pytest.approx(summary["best_metrics"][name], abs=1e-6)], name

    if task not in REFERENCE_CHECKED:
        return
    # With no test split, `predict` writes the validation rows' predictions as a GLUE submission file.
    predictions, labels = read_predictions(task, run_cli("predict", *best, tmp_path=tmp_path))
    if task in NEEDS_BOTH_CLASSES:
        assert len(set(predictions)) == 2, f"{task}: one class predicted for every row; try another seed"
    # STS-B predictions are written with every digit of their float32 value, and the metrics are computed
    # and logged in float64: the scores are the reference scorers' to rounding.
    tolerance = 1e-12
    for name, expected in reference_metrics(task, predictions, labels).items():
        assert validated[name][0] == pytest.approx(expected, abs=tolerance), name


def test_qqp_without_validation_split_fits_from_the_command_line(tmp_path):
    """The real command line in a subprocess; QQP's shared copy has no validation split, which fit
    reports and trains through (early stopping on val/f1 is turned off), while validate refuses."""
    args = [*glue_args("qqp", tmp_path), *QUICK_ARGS]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "neobert_tasks", "fit", *args],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "No validation split in directory" in result.stderr
    assert "early stopping on val/f1 is turned off" in result.stderr
    # Nothing to validate: no best checkpoint is looked for, and Lightning says nothing about it.
    output = result.stdout + result.stderr
    assert "could not find the monitored key" not in output and "across ranks is zero" not in output
    assert "Exported the final model to" in output
    run_dir = tmp_path / "runs" / "version_0"
    assert "train/loss" in read_metrics_csv(run_dir)
    assert (run_dir / "export" / "config.json").is_file()
    assert json.loads((run_dir / "metrics.json").read_text())["best_metrics"] == {}


def test_qqp_validate_without_validation_split_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("validate", *glue_args("qqp", tmp_path), *QUICK_ARGS, tmp_path=tmp_path)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "has no files for splits ['validation']" in error
    assert "Traceback" not in error
