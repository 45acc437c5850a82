"""The suite's table from run records and from an output folder written here: mean, sample std, the
grid point chosen, the second metrics, the GLUE average as the NeoBERT paper computes it, and the saved
files. Nothing outside the repository is needed and nothing is trained."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml

from neobert_tasks.suite import (
    PAPER_GLUE_AVERAGE,
    PAPER_NEOBERT,
    collect_results,
    collect_runs,
    markdown_table,
    mean_and_std,
    results_dataframe,
    summarize,
    write_tables,
)
from neobert_tasks.suite.tables import format_score

MAIN = {"cola": "matthews_correlation", "mrpc": "f1", "qqp": "f1", "stsb": "pearson"}


def record(task: str, seed: int, score: float, point: str | None = None, **more_scores: float) -> dict:
    """A run record as `collect_runs` returns it (scores already × 100)."""
    metric = MAIN.get(task, "accuracy")
    return {
        "task": task,
        "point": point,
        "seed": seed,
        "run_dir": f"/runs/{task}/{point}/seed_{seed}",
        "metric": metric,
        "score": score,
        "scores": {metric: score, **more_scores},
        "learning_rate": 1e-5,
        "batch_size": 16,
        "weight_decay": 1e-5,
        "init": "chandar-lab/NeoBERT",
    }


def row_of(rows: list[dict], task: str) -> dict:
    return next(row for row in rows if row["task"] == task)


def test_mean_and_sample_std():
    assert mean_and_std([80.0, 82.0, 84.0]) == (82.0, 2.0)  # sample std: sqrt(((-2)² + 0 + 2²) / 2)
    assert mean_and_std([70.0]) == (70.0, None)
    assert mean_and_std([]) == (None, None)
    assert format_score(82.0, 2.0) == "82.00 ± 2.00"
    assert format_score(70.0, None) == "70.00"
    assert format_score(None, None) == "–"


def test_task_rows_give_mean_and_std_over_seeds_with_the_second_metric():
    runs = [record("mrpc", seed, f1, accuracy=accuracy) for seed, f1, accuracy in [(0, 90, 85), (1, 92, 87)]]
    # A run without the second metric counts for the main one only.
    runs += [record("stsb", 0, 88.0), record("stsb", 1, 89.0, spearman=88.0)]
    rows = summarize(runs)
    mrpc, stsb = row_of(rows, "mrpc"), row_of(rows, "stsb")
    assert (mrpc["metric"], mrpc["mean"], mrpc["std"]) == ("f1", 91.0, pytest.approx(2**0.5))
    assert (mrpc["second_metric"], mrpc["second_mean"]) == ("accuracy", 86.0)
    assert (stsb["mean"], stsb["second_mean"], stsb["second_std"], stsb["seeds"]) == (88.5, 88.0, None, 2)
    assert (mrpc["paper"], stsb["paper"]) == (PAPER_NEOBERT["mrpc"], PAPER_NEOBERT["stsb"])


def test_the_grid_point_with_the_best_mean_is_chosen():
    runs = [
        record("rte", 0, 70.0, point="lr1e-05"),
        record("rte", 1, 60.0, point="lr1e-05"),  # mean 65: seed 0 alone would win
        record("rte", 0, 68.0, point="lr2e-05"),
        record("rte", 1, 66.0, point="lr2e-05"),  # mean 67
        record("rte", 0, 67.0, point="lr3e-05"),
        record("rte", 1, 67.0, point="lr3e-05"),  # mean 67 as well: the first of equals stays
    ]
    rte = row_of(summarize(runs), "rte")
    assert (rte["point"], rte["mean"], rte["std"], rte["points"]) == (
        "lr2e-05",
        67.0,
        pytest.approx(2**0.5),
        3,
    )


def test_glue_average_of_the_eight_tasks_leaves_wnli_out():
    scores = {task: 80.0 + index for index, task in enumerate(PAPER_NEOBERT)}
    runs = [record(task, seed, value + seed) for task, value in scores.items() for seed in (0, 1, 2)]
    runs += [record("wnli", seed, 10.0) for seed in (0, 1, 2)]
    rows = summarize(runs)
    average = rows[-1]
    assert average["task"] == "glue_average" and "wnli" not in average["tasks"]
    per_task_means = [value + 1 for value in scores.values()]  # seeds add 0, 1, 2
    assert average["mean"] == pytest.approx(statistics.fmean(per_task_means))
    per_seed = [statistics.fmean(value + seed for value in scores.values()) for seed in (0, 1, 2)]
    assert average["std"] == pytest.approx(statistics.stdev(per_seed))
    assert average["paper"] == PAPER_GLUE_AVERAGE
    assert row_of(rows, "wnli")["paper"] is None


def test_the_paper_average_is_its_table_mean_and_partial_suites_compare_like_with_like():
    assert round(statistics.fmean(PAPER_NEOBERT.values()), 1) == PAPER_GLUE_AVERAGE == 89.0
    runs = [record("rte", 0, 70.0), record("cola", 0, 50.0), record("cola", 1, 54.0)]
    average = summarize(runs)[-1]
    assert average["name"] == "GLUE average (2/8 tasks)"
    assert average["mean"] == pytest.approx((70.0 + 52.0) / 2)
    assert average["std"] is None  # one seed in common
    assert average["paper"] == pytest.approx((PAPER_NEOBERT["rte"] + PAPER_NEOBERT["cola"]) / 2)


def write_run(run_dir: Path, best: dict[str, float], monitor: str, pretrained: str | None = None) -> None:
    """The two files of a finished run that the suite reads: metrics.json and config.yaml."""
    run_dir.mkdir(parents=True)
    summary = {"monitor": monitor, "best_metrics": {**best, "val/loss": 0.5, "epoch": 1, "step": 8}}
    (run_dir / "metrics.json").write_text(json.dumps(summary))
    model = {"learning_rate": 2e-5, "weight_decay": 0.01, "pretrained": pretrained, "model_config": None}
    config = {"model": {"init_args": model}, "data": {"init_args": {"batch_size": 32}}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))


def test_results_from_an_output_folder(tmp_path):
    mnli_export = tmp_path / "mnli" / "seed_0" / "export"
    mnli_scores = {"val/accuracy": 0.8, "val/accuracy_mismatched": 0.79, "val/loss_mismatched": 1.1}
    write_run(mnli_export.parent, mnli_scores, "val/accuracy")
    for seed, accuracy in [(0, 0.6), (1, 0.7)]:
        write_run(
            tmp_path / "rte" / f"seed_{seed}", {"val/accuracy": accuracy}, "val/accuracy", str(mnli_export)
        )
    write_run(tmp_path / "notatask" / "seed_0", {"val/accuracy": 1.0}, "val/accuracy")  # ignored
    write_run(tmp_path / "rte" / "extra", {"val/accuracy": 1.0}, "val/accuracy")  # not a seed folder: ignored

    runs = collect_runs(tmp_path)
    assert [(run["task"], run["seed"]) for run in runs] == [("mnli", 0), ("rte", 0), ("rte", 1)]
    # No loss (MNLI's loss_mismatched was once reported as 110.0), no epoch.
    assert runs[0]["scores"] == {"accuracy": 80.0, "accuracy_mismatched": 79.0}
    rows = collect_results(tmp_path)
    mnli, rte = row_of(rows, "mnli"), row_of(rows, "rte")
    assert (mnli["mean"], mnli["second_metric"], mnli["second_mean"]) == (80.0, "accuracy_mismatched", 79.0)
    assert (rte["mean"], rte["std"], rte["init"]) == (65.0, pytest.approx(50**0.5), "mnli")
    assert (rte["learning_rate"], rte["batch_size"], rte["weight_decay"]) == (2e-5, 32, 0.01)
    assert list(results_dataframe(tmp_path)["task"]) == ["mnli", "rte", "glue_average"]


def test_saved_tables(tmp_path):
    runs = [record("rte", 0, 60.0), record("rte", 1, 64.0), record("qqp", 0, 88.0, accuracy=90.0)]
    rows = summarize(runs)
    paths = write_tables(tmp_path, rows, runs)
    assert [path.name for path in paths] == [
        "glue_results.md",
        "glue_results.csv",
        "glue_results.json",
        "glue_runs.csv",
    ]
    markdown = paths[0].read_text()
    assert "| RTE | accuracy | 62.00 ± 2.83 | 2 | task config | 1e-05 | 16 | 1e-05 |" in markdown
    assert "| QQP | F1 / accuracy | 88.00 / 90.00 | 1 |" in markdown
    assert "GLUE average (2/8 tasks)" in markdown and markdown == markdown_table(rows)
    assert json.loads(paths[2].read_text()) == json.loads(json.dumps(rows))
    table = list(csv.DictReader(paths[1].open()))
    assert [line["task"] for line in table] == ["qqp", "rte", "glue_average"]
    assert table[1]["batch_size"] == "16" and table[2]["tasks"] == "qqp rte"
    assert [line["val_accuracy"] for line in csv.DictReader(paths[3].open())] == ["60.0", "64.0", "90.0"]
