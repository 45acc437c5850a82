"""The suite's table as Markdown (printed and saved), CSV and JSON, plus a CSV of every run.

Files written to the output folder: ``glue_results.md``, ``glue_results.csv``, ``glue_results.json`` (the
rows of `neobert_tasks.suite.results.summarize`) and ``glue_runs.csv`` (one line per finished run).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from neobert_tasks.suite.grid import format_value
from neobert_tasks.suite.results import GLUE_AVERAGE, flat_run

METRIC_LABELS = {
    "matthews_correlation": "MCC",
    "accuracy": "accuracy",
    "accuracy_mismatched": "mm",
    "f1": "F1",
    "pearson": "Pearson",
    "spearman": "Spearman",
}
NOTE = (
    "Scores are percentages on the validation (GLUE dev) split, best epoch of each run, mean ± sample "
    "standard deviation over seeds, for the grid point with the best mean main metric (the first metric "
    "shown). The paper column is NeoBERT's GLUE dev score (paper Table 3); the paper gives one number per "
    "task, here set beside the main metric. The GLUE average is the mean of the main metrics of the "
    "paper's eight tasks (WNLI left out), as the paper computes it; with fewer tasks, the paper column "
    "averages the same tasks."
)
# The run settings shown beside the grid point, in the header's order (lr, batch, wd, init).
SETTING_COLUMNS = ("learning_rate", "batch_size", "weight_decay", "init")
TABLE_FILES = ("glue_results.md", "glue_results.csv", "glue_results.json", "glue_runs.csv")


def format_score(mean: float | None, std: float | None) -> str:
    """``mean ± std`` with two decimals; the mean alone for one seed; ``–`` without a score."""
    if mean is None:
        return "–"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _metric_label(row: dict[str, Any]) -> str:
    if row["task"] == GLUE_AVERAGE:
        return row["metric"]
    label = "accuracy m" if row["task"] == "mnli" else METRIC_LABELS.get(row["metric"], row["metric"])
    if row.get("second_metric"):
        label += " / " + METRIC_LABELS.get(row["second_metric"], row["second_metric"])
    return label


def _score_cell(row: dict[str, Any]) -> str:
    cell = format_score(row["mean"], row["std"])
    if row.get("second_metric"):
        cell += " / " + format_score(row["second_mean"], row["second_std"])
    return cell


def _value_cell(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format_value(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The table in Markdown, followed by the note on what the numbers are."""
    header = "| task | metric | score | seeds | grid point | lr | batch | wd | init | NeoBERT paper (dev) |"
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for row in rows:
        run_cells = [""] * 5  # the average row has no grid point or settings of its own
        if row["task"] != GLUE_AVERAGE:
            run_cells = [row["point"] or "task config", *(_value_cell(row[key]) for key in SETTING_COLUMNS)]
        paper = "–" if row["paper"] is None else f"{row['paper']:.1f}"
        cells = [row["name"], _metric_label(row), _score_cell(row), str(row["seeds"]), *run_cells, paper]
        lines.append("| " + " | ".join(cells) + " |")
    if not rows:
        lines.append("| (no finished runs) |" + " |" * 9)
    return "\n".join(lines) + "\n\n" + NOTE + "\n"


def write_tables(
    output_dir: str | Path, rows: list[dict[str, Any]], runs: list[dict[str, Any]]
) -> list[Path]:
    """Write the table (Markdown, CSV, JSON) and the per-run CSV into ``output_dir``; their paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [output_dir / name for name in TABLE_FILES]
    paths[0].write_text(markdown_table(rows))
    # The average row's task list is a list: one CSV cell as "cola mrpc …".
    _write_csv(
        paths[1], [{**row, "tasks": " ".join(row["tasks"])} if "tasks" in row else row for row in rows]
    )
    paths[2].write_text(json.dumps(rows, indent=2) + "\n")
    _write_csv(paths[3], [flat_run(run) for run in runs])
    return paths


def _write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    """Records as CSV, columns in order of first appearance; None is an empty cell and integers stay
    integers (a pandas column with a gap would turn batch sizes into floats)."""
    columns = list(dict.fromkeys(key for record in records for key in record))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(records)
