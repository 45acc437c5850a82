"""The GLUE suite's results, read back from an output folder without running anything.

`collect_runs` reads every finished run (``<output_dir>/<task>/[<grid point>/]seed_<n>/metrics.json`` and
the ``config.yaml`` beside it); `summarize` turns runs into the table: per task, the grid point with the
best mean validation main metric, its mean ± std over seeds, and the GLUE average as the NeoBERT paper
computes it; `collect_results` and `results_dataframe` do both for a notebook.

Scores are percentages (metric × 100) of the best epoch of each run on the validation split, which is
what the paper reports (GLUE dev). Standard deviations are sample ones (n − 1), absent for one seed.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

# NeoBERT's GLUE dev scores (paper Table 3, as quoted in ../shared/neobert/CHECKPOINT.md). The paper
# gives one number per task and does not say there which of F1/accuracy (MRPC, QQP) or Pearson/Spearman
# (STS-B) it is; the table compares it with the task's main metric. No WNLI score: WNLI is left out.
PAPER_NEOBERT = {
    "mnli": 89.0,
    "qnli": 93.7,
    "qqp": 90.7,
    "rte": 91.3,
    "sst2": 95.6,
    "mrpc": 93.4,
    "cola": 66.2,
    "stsb": 91.8,
}
PAPER_GLUE_AVERAGE = 89.0  # the mean of the eight numbers above (88.96), as the paper rounds it
# GLUE's order and display names; the average covers the paper's eight tasks (all but WNLI).
TASK_NAMES = {
    "cola": "CoLA",
    "sst2": "SST-2",
    "mrpc": "MRPC",
    "stsb": "STS-B",
    "qqp": "QQP",
    "mnli": "MNLI",
    "qnli": "QNLI",
    "rte": "RTE",
    "wnli": "WNLI",
}
AVERAGED_TASKS = tuple(PAPER_NEOBERT)
# The metric GLUE reports beside the main one (MNLI mismatched only when that split was scored).
SECOND_METRIC = {"mrpc": "accuracy", "qqp": "accuracy", "stsb": "spearman", "mnli": "accuracy_mismatched"}
# Main metrics when metrics.json names none (it always does when written by ExportBestModel).
MAIN_METRIC = {"cola": "matthews_correlation", "mrpc": "f1", "qqp": "f1", "stsb": "pearson"}
GLUE_AVERAGE = "glue_average"
SEED_FOLDER = re.compile(r"seed_(-?\d+)")


def collect_runs(output_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished run under ``output_dir``, one dict each, sorted by task, grid point and seed.

    Keys: ``task``, ``point`` (grid point folder, None without a grid), ``seed``, ``run_dir``, ``metric``
    (main metric name), ``score`` (its value × 100, None without validation scores), ``scores`` (every
    ``val/`` metric but the loss, × 100), ``learning_rate``, ``batch_size``, ``weight_decay`` and
    ``init`` (``mnli`` for a start from this suite's MNLI runs, ``random``, or the ``pretrained`` value).
    """
    output_dir = Path(output_dir)
    runs = []
    for metrics_file in output_dir.glob("*/**/metrics.json"):
        relative = metrics_file.parent.relative_to(output_dir).parts
        seed_match = SEED_FOLDER.fullmatch(relative[-1])
        if relative[0] not in TASK_NAMES or seed_match is None or len(relative) < 2:
            continue  # not a suite run folder
        point = "/".join(relative[1:-1]) or None
        runs.append(_read_run(output_dir, metrics_file.parent, relative[0], point, int(seed_match[1])))
    order = list(TASK_NAMES)
    return sorted(runs, key=lambda run: (order.index(run["task"]), run["point"] or "", run["seed"]))


def _read_run(output_dir: Path, run_dir: Path, task: str, point: str | None, seed: int) -> dict[str, Any]:
    """One run's record from its ``metrics.json`` and, when present, its resolved ``config.yaml``."""
    summary = json.loads((run_dir / "metrics.json").read_text())
    scores = {
        name.removeprefix("val/"): 100.0 * float(value)
        for name, value in (summary.get("best_metrics") or {}).items()
        # val/loss, and MNLI's val/loss_mismatched, are losses, not scores to put in percent
        if name.startswith("val/") and not name.rsplit("/", 1)[-1].startswith("loss")
    }
    monitor = summary.get("monitor") or ""
    metric = monitor.removeprefix("val/") if monitor.startswith("val/") else MAIN_METRIC.get(task, "accuracy")
    config_file = run_dir / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    model = (config.get("model") or {}).get("init_args") or {}
    data = (config.get("data") or {}).get("init_args") or {}
    return {
        "task": task,
        "point": point,
        "seed": seed,
        "run_dir": str(run_dir),
        "metric": metric,
        "score": scores.get(metric),
        "scores": scores,
        "learning_rate": model.get("learning_rate"),
        "batch_size": data.get("batch_size"),
        "weight_decay": model.get("weight_decay"),
        "init": _initialisation(model, output_dir),
    }


def _initialisation(model_arguments: dict[str, Any], output_dir: Path) -> str | None:
    """Where a run's weights came from: ``mnli`` (this suite's MNLI runs), ``random`` or ``pretrained``."""
    if model_arguments.get("model_config") is not None:
        return "random"
    pretrained = model_arguments.get("pretrained")
    if pretrained and Path(pretrained).resolve().is_relative_to((output_dir / "mnli").resolve()):
        return "mnli"
    return pretrained


def mean_and_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n − 1); None for no values, std None for a single one."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def select_point(runs: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """The grid point (and its runs) with the best mean main score over seeds; ties go to the first.

    ``runs`` are one task's. A point without any score is chosen only when no point has one.
    """
    by_point: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_point[run["point"]].append(run)
    best_point, best_mean = next(iter(by_point)), None
    for point, point_runs in by_point.items():
        mean, _ = mean_and_std([run["score"] for run in point_runs if run["score"] is not None])
        if mean is not None and (best_mean is None or mean > best_mean):
            best_point, best_mean = point, mean
    return best_point, by_point[best_point]


def task_row(task: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The table row of one task from all its runs (every grid point and seed)."""
    point, chosen = select_point(runs)
    mean, std = mean_and_std([run["score"] for run in chosen if run["score"] is not None])
    second = SECOND_METRIC.get(task)
    second_values = [run["scores"][second] for run in chosen if second in run["scores"]]
    second_mean, second_std = mean_and_std(second_values)
    first = chosen[0]
    return {
        "task": task,
        "name": TASK_NAMES[task],
        "metric": first["metric"],
        "mean": mean,
        "std": std,
        "second_metric": second if second_values else None,
        "second_mean": second_mean,
        "second_std": second_std,
        "seeds": sum(run["score"] is not None for run in chosen),
        "point": point,
        "points": len({run["point"] for run in runs}),
        "learning_rate": first["learning_rate"],
        "batch_size": first["batch_size"],
        "weight_decay": first["weight_decay"],
        "init": first["init"],
        "paper": PAPER_NEOBERT.get(task),
    }


def glue_average_row(chosen_runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    """The GLUE average over the paper's eight tasks that have scores, as the paper computes it.

    The mean is the mean of the tasks' mean main scores; the std is that of the per-seed averages over
    the seeds every averaged task has (None with fewer than two such seeds). ``paper`` is the paper's
    average over the same tasks, so that a partial suite compares like with like.
    """
    scores = {
        task: {run["seed"]: run["score"] for run in runs if run["score"] is not None}
        for task, runs in chosen_runs.items()
        if task in AVERAGED_TASKS
    }
    tasks = [task for task in TASK_NAMES if scores.get(task)]
    if not tasks:
        return None
    mean = statistics.fmean(statistics.fmean(scores[task].values()) for task in tasks)
    common_seeds = sorted(set.intersection(*(set(scores[task]) for task in tasks)))
    per_seed = [statistics.fmean(scores[task][seed] for task in tasks) for seed in common_seeds]
    paper = PAPER_GLUE_AVERAGE if len(tasks) == len(AVERAGED_TASKS) else None
    return {
        "task": GLUE_AVERAGE,
        "name": f"GLUE average ({len(tasks)}/{len(AVERAGED_TASKS)} tasks)",
        "metric": "main metrics",
        "mean": mean,
        "std": statistics.stdev(per_seed) if len(per_seed) > 1 else None,
        "seeds": len(common_seeds),
        "tasks": tasks,
        "paper": paper if paper is not None else statistics.fmean(PAPER_NEOBERT[task] for task in tasks),
    }


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table: one row per task with runs (GLUE order), then the GLUE average row when possible."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_task[run["task"]].append(run)
    rows, chosen = [], {}
    for task in TASK_NAMES:
        if by_task.get(task):
            rows.append(task_row(task, by_task[task]))
            chosen[task] = [run for run in by_task[task] if run["point"] == rows[-1]["point"]]
    average = glue_average_row(chosen)
    return rows + ([average] if average else [])


def collect_results(output_dir: str | Path) -> list[dict[str, Any]]:
    """The suite's table built from the finished runs under ``output_dir`` (see `summarize`)."""
    return summarize(collect_runs(output_dir))


def results_dataframe(output_dir: str | Path) -> pd.DataFrame:
    """`collect_results` as a pandas DataFrame, one row per task plus the GLUE average."""
    return pd.DataFrame(collect_results(output_dir))


def runs_dataframe(output_dir: str | Path) -> pd.DataFrame:
    """`collect_runs` as a pandas DataFrame, with one ``val_<metric>`` column per validation score."""
    return pd.DataFrame([flat_run(run) for run in collect_runs(output_dir)])


def flat_run(run: dict[str, Any]) -> dict[str, Any]:
    """A run record with its ``scores`` spread into ``val_<metric>`` keys (one CSV column each)."""
    flat = {key: value for key, value in run.items() if key != "scores"}
    return {**flat, **{f"val_{name}": value for name, value in run["scores"].items()}}
