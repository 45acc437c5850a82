"""Read finished runs back into pandas: the best scores of ``metrics.json``, the curves of ``metrics.csv``.

A run directory is what ``fit`` leaves in ``<trainer.default_root_dir>/version_N``: ``config.yaml`` (the
resolved config), ``metrics.csv`` (the CSV logger: one row per logging call, so training and validation
values sit on different rows with empty cells elsewhere) and ``metrics.json`` (written by
``ExportBestModel``: the monitored metric, its best value and every ``val/*`` metric at that point).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml


@dataclass(frozen=True)
class Run:
    """One finished run: its directory, task name, ``metrics.json`` contents and resolved config."""

    directory: Path
    task: str
    summary: dict[str, Any]
    config: dict[str, Any]

    @property
    def best_metrics(self) -> dict[str, float]:
        """The ``val/*`` metrics (plus ``epoch`` and ``step``) at the best checkpoint."""
        return dict(self.summary.get("best_metrics") or {})


def repository_root(start: Path | None = None) -> Path:
    """The source checkout holding ``configs/`` (whose YAML files the notebooks compose).

    Searches ``start`` (default: the working directory) and its parents, so a notebook opened from
    ``notebooks/`` finds it; falls back to the folder above the installed package (an editable install).
    """
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "configs" / "quickstart.yaml").is_file():
            return folder
    return Path(__file__).resolve().parents[2]


def task_name_of(config: Mapping[str, Any], run_directory: Path) -> str:
    """The GLUE task of a run's config, else the name of the folder that holds ``version_N``."""
    for section in ("model", "data"):
        init_args = (config.get(section) or {}).get("init_args") or {}
        if init_args.get("task_name"):
            return str(init_args["task_name"])
    return run_directory.parent.name if run_directory.name.startswith("version_") else run_directory.name


def read_run(run_directory: str | Path) -> Run:
    """Load one run directory; it must hold ``metrics.json`` (``config.yaml`` is optional)."""
    directory = Path(run_directory)
    summary = json.loads((directory / "metrics.json").read_text())
    config_path = directory / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    return Run(directory, task_name_of(config or {}, directory), summary, config or {})


def _natural_key(path: Path) -> str:
    """``path`` with its numbers zero-padded, so that ``version_10`` sorts after ``version_9``."""
    return re.sub(r"\d+", lambda number: number.group().zfill(12), str(path))


def find_runs(output_directory: str | Path) -> list[Run]:
    """Every finished run (a folder with ``metrics.json``) under ``output_directory``, in path order
    (``version_N`` in the order of N)."""
    paths = sorted(Path(output_directory).rglob("metrics.json"), key=_natural_key)
    return [read_run(path.parent) for path in paths]


def results_table(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per run: task, monitored metric and its best value, then every best ``val/*`` metric.

    Metric columns drop the ``val/`` prefix (``accuracy``, ``f1``, ``f1_PER``, ...); a metric a run did
    not log is NaN in its row.
    """
    rows = []
    for run in runs:
        best = run.best_metrics
        scores = {name.removeprefix("val/"): value for name, value in best.items() if name.startswith("val/")}
        rows.append(
            {
                "task": run.task,
                "monitor": run.summary.get("monitor"),
                "best_score": run.summary.get("best_score"),
                "epoch": best.get("epoch"),
                "step": best.get("step"),
                **scores,
                "run_directory": str(run.directory),
            }
        )
    return pd.DataFrame(rows)


def logged_metrics(run_directory: str | Path) -> pd.DataFrame:
    """The CSV logger's ``metrics.csv`` of a run, one row per logging call, as written."""
    return pd.read_csv(Path(run_directory) / "metrics.csv")


def metric_curve(logged: pd.DataFrame, name: str) -> pd.DataFrame:
    """``step`` and ``value`` of the rows where ``name`` was logged (training and validation rows alternate).

    Raises:
        KeyError: when the run never logged ``name``; the message lists the names it did log.
    """
    if name not in logged.columns:
        logged_names = ", ".join(column for column in logged.columns if column not in ("step", "epoch"))
        raise KeyError(f"{name!r} was not logged; the run logged: {logged_names}.")
    rows = logged.loc[logged[name].notna(), ["step", name]]
    return rows.rename(columns={name: "value"}).reset_index(drop=True)
