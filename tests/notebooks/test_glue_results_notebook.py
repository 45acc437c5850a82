"""``notebooks/02_glue_results.ipynb``: a tiny GLUE suite of two tasks, its table beside the paper's
numbers, learning curves from ``metrics.csv`` and bars; then the same notebook reading that suite's
folder through ``RESULTS_DIR`` without training anything.

With ``../shared`` absent the notebook runs SST-2 alone on the repository's sample, which the
assertions expect instead of both tasks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from neobert_tasks.suite import PAPER_NEOBERT
from tests.conftest import SHARED
from tests.notebooks.execution import execute_notebook

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]  # executes a notebook in a Jupyter kernel

TASKS = ["sst2", "rte"]
PROBE = """{
    "tasks": table["task"].tolist(),
    "means": table["mean"].tolist(),
    "papers": table["paper"].tolist(),
    "run_dirs": runs["run_dir"].tolist(),
    "curve_runs": sorted(logged_by_run),
    "curve_metrics": [axis.get_title() for axis in curves.axes],
    "results_dir": str(results_dir),
}"""


def test_glue_results_notebook_runs_a_tiny_suite_then_reads_it_back(tmp_path, kernel_environment):
    output_dir = tmp_path / "outputs"
    parameters = {"OUTPUT_DIR": output_dir, "SHARED": SHARED, "TASKS": TASKS, "FAST": True}
    probe = execute_notebook("02_glue_results.ipynb", parameters, PROBE, tmp_path, kernel_environment).probe
    tasks = TASKS if (SHARED / "data" / "glue").is_dir() else ["sst2"]

    assert Path(probe["results_dir"]) == output_dir / "suite"
    assert probe["tasks"] == [*tasks, "glue_average"]  # one row per task, then the GLUE average
    assert probe["papers"][: len(tasks)] == [PAPER_NEOBERT[task] for task in tasks]
    assert all(0 <= mean <= 100 for mean in probe["means"])
    assert [Path(run_dir).relative_to(output_dir / "suite").parts for run_dir in probe["run_dirs"]] == [
        (task, "seed_0") for task in tasks
    ]
    for run_dir in probe["run_dirs"]:
        assert (Path(run_dir) / "metrics.json").is_file() and (Path(run_dir) / "metrics.csv").is_file()
    assert probe["curve_runs"] == sorted(f"{task} seed 0" for task in tasks)
    assert probe["curve_metrics"] == ["train/loss", "val/loss", "val/accuracy"]
    for name in ("learning_curves.png", "scores_vs_paper.png"):
        assert (output_dir / name).stat().st_size > 0, f"no {name}"

    # Reading an existing suite folder: the same table, and no new runs in the new output folder.
    rereading = tmp_path / "reread"
    parameters = {"OUTPUT_DIR": rereading, "RESULTS_DIR": output_dir / "suite", "SHARED": tmp_path / "none"}
    again = execute_notebook("02_glue_results.ipynb", parameters, PROBE, tmp_path, kernel_environment).probe
    assert again["tasks"] == probe["tasks"] and again["means"] == probe["means"]
    assert not (rereading / "suite").exists()
    assert (rereading / "scores_vs_paper.png").is_file()
