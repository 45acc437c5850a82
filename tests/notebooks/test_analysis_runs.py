"""`neobert_tasks.analysis.runs`: run directories read back into tables and curves.

The run directories here are written by hand in the layout ``fit`` leaves (``metrics.json`` as
``ExportBestModel`` writes it, the CSV logger's sparse ``metrics.csv``, the resolved ``config.yaml``), so
these tests need no training.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from neobert_tasks.analysis import (
    find_runs,
    logged_metrics,
    metric_curve,
    read_run,
    repository_root,
    results_table,
)
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.notebooks  # -m notebooks selects everything about the notebooks

# The CSV logger writes one row per logging call: training rows leave the val/* cells empty and back.
METRICS_CSV = """epoch,step,train/loss,val/accuracy,val/loss
0,0,0.70,,
0,1,0.65,,
0,1,,0.55,0.69
1,2,0.60,,
1,3,0.52,,
1,3,,0.61,0.66
"""


def write_run(run_dir: Path, task_name: str | None, accuracy: float) -> Path:
    """A finished run's files with ``val/accuracy`` as the monitored metric."""
    run_dir.mkdir(parents=True)
    best = {"val/accuracy": accuracy, "val/loss": 0.66, "epoch": 1, "step": 3}
    summary = {"monitor": "val/accuracy", "best_score": accuracy, "best_metrics": best}
    (run_dir / "metrics.json").write_text(json.dumps(summary))
    (run_dir / "metrics.csv").write_text(METRICS_CSV)
    init_args = {"task_name": task_name} if task_name else {"learning_rate": 0.001}
    config = {
        "model": {"class_path": "neobert_tasks.tasks.SequenceClassificationTask", "init_args": init_args}
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_dir


def test_read_run_takes_the_task_from_the_config_else_from_the_folder(tmp_path):
    glue = read_run(write_run(tmp_path / "runs" / "glue" / "version_0", "rte", 0.61))
    assert glue.task == "rte"
    assert glue.best_metrics["val/accuracy"] == 0.61
    plain = read_run(write_run(tmp_path / "quickstart" / "version_3", None, 0.7))
    assert plain.task == "quickstart"  # the folder above version_N


def test_find_runs_orders_versions_by_number_and_skips_unfinished_runs(tmp_path):
    for version in (10, 2, 9):
        write_run(tmp_path / "sst2" / f"version_{version}", "sst2", version / 100)
    (tmp_path / "sst2" / "version_11").mkdir()  # killed before metrics.json was written
    runs = find_runs(tmp_path)
    assert [run.directory.name for run in runs] == ["version_2", "version_9", "version_10"]


def test_results_table_has_one_row_per_run_with_every_best_metric(tmp_path):
    write_run(tmp_path / "rte" / "version_0", "rte", 0.61)
    write_run(tmp_path / "sst2" / "version_0", "sst2", 0.8)
    table = results_table(find_runs(tmp_path))
    assert list(table["task"]) == ["rte", "sst2"]
    assert list(table["best_score"]) == [0.61, 0.8]
    assert {"monitor", "epoch", "step", "accuracy", "loss", "run_directory"} <= set(table.columns)
    assert table.loc[0, "accuracy"] == 0.61  # the val/ prefix is dropped


def test_metric_curve_keeps_the_rows_where_the_metric_was_logged(tmp_path):
    logged = logged_metrics(write_run(tmp_path / "run", None, 0.61))
    validation = metric_curve(logged, "val/accuracy")
    assert validation.to_dict("list") == {"step": [1, 3], "value": [0.55, 0.61]}
    assert list(metric_curve(logged, "train/loss")["value"]) == [0.70, 0.65, 0.60, 0.52]
    with pytest.raises(KeyError, match="'val/f1' was not logged; the run logged: train/loss, val/accuracy"):
        metric_curve(logged, "val/f1")


def test_repository_root_is_found_from_the_notebooks_folder_and_from_elsewhere(tmp_path, monkeypatch):
    assert repository_root(REPO_ROOT / "notebooks") == REPO_ROOT
    monkeypatch.chdir(tmp_path)  # no configs/ above: the checkout the package was imported from
    assert repository_root() == REPO_ROOT


def test_logged_metrics_is_the_csv_as_written(tmp_path):
    run_dir = write_run(tmp_path / "run", None, 0.61)
    assert logged_metrics(run_dir).equals(pd.read_csv(run_dir / "metrics.csv"))
