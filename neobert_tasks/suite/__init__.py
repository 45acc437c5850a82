"""Benchmark suites over the neobert_tasks command line: GLUE, every task × seed (× grid point).

Run it with ``python -m neobert_tasks.suite glue …`` (see `neobert_tasks.suite.cli`). From Python, e.g.
a notebook, the table is built from an output folder without running anything::

    from neobert_tasks.suite import collect_results, results_dataframe
    rows = collect_results("runs/suite/glue")      # list of dicts: one per task, then the GLUE average
    table = results_dataframe("runs/suite/glue")   # the same as a pandas DataFrame

This package imports no Lightning module until a suite is run, so reading results stays quick.
"""

from neobert_tasks.suite.results import (
    PAPER_GLUE_AVERAGE,
    PAPER_NEOBERT,
    collect_results,
    collect_runs,
    mean_and_std,
    results_dataframe,
    runs_dataframe,
    summarize,
)
from neobert_tasks.suite.tables import markdown_table, write_tables

__all__ = [
    "PAPER_GLUE_AVERAGE",
    "PAPER_NEOBERT",
    "collect_results",
    "collect_runs",
    "markdown_table",
    "mean_and_std",
    "results_dataframe",
    "runs_dataframe",
    "summarize",
    "write_tables",
]
