"""Helpers shared by the command-line tests: in-process runs of ``main`` and GLUE arguments for quick runs.

Runs use the tiny randomly initialised model, the debug preset and the CPU preset, the shared
bert-base-uncased tokenizer and the shared GLUE copy (tests skip with a reason when ``../shared`` is
absent), and keep every output (runs, datasets cache) under the test's temporary directory.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from unittest import mock

import pytest

from neobert_tasks.cli import NeoBERTCLI, main
from neobert_tasks.run_directory import RUN_RESULTS
from tests.conftest import REPO_ROOT, shared_path

CONFIGS = REPO_ROOT / "configs"
TINY = CONFIGS / "presets" / "tiny.yaml"
DEBUG = CONFIGS / "presets" / "debug.yaml"
CPU = CONFIGS / "presets" / "cpu.yaml"


def cache_args(tmp_path: Path) -> list[str]:
    """Arguments that put the run directories and the datasets cache under ``tmp_path``."""
    return [
        "--trainer.default_root_dir",
        str(tmp_path / "runs"),
        "--data.init_args.cache_dir",
        str(tmp_path / "datasets_cache"),
    ]


def glue_args(task: str, tmp_path: Path) -> list[str]:
    """``--config`` and override arguments of a quick CPU run of GLUE ``task`` with the tiny model.

    The task config comes first, then the tiny, debug and CPU presets, then the shared tokenizer and the
    task's shared data directory; later arguments given to `run_cli` override any of these.
    """
    return [
        "--config",
        str(CONFIGS / "glue" / f"{task}.yaml"),
        "--config",
        str(TINY),
        "--config",
        str(DEBUG),
        "--config",
        str(CPU),
        "--data.init_args.tokenizer",
        str(shared_path("tokenizers", "bert-base-uncased")),
        "--data.init_args.data_dir",
        str(shared_path("data", "glue", task)),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        *cache_args(tmp_path),
    ]


def build_cli(*args: str, run: bool = True) -> NeoBERTCLI:
    """``main(args=[...])`` in-process: the subcommand and options exactly as on the command line."""
    # LightningCLI warns when both ``args`` and pytest's own command line are present; only ``args`` counts.
    with mock.patch.object(sys, "argv", ["neobert_tasks"]):
        return main(args=[str(arg) for arg in args], run=run)


def run_cli(*args: str, tmp_path: Path, run: bool = True) -> Path:
    """Run the command line in-process and return the run directory (``<root>/version_N``).

    ``tmp_path`` is the test's temporary directory; arguments may already name a root directory under it
    (as `glue_args` does), otherwise the runs go to ``tmp_path / "runs"``. ``run=False`` only
    instantiates the model, the datamodule and the trainer; no args then start with a subcommand.
    """
    args = [str(arg) for arg in args]
    if "--trainer.default_root_dir" not in args:
        args += ["--trainer.default_root_dir", str(tmp_path / "runs")]
    cli = build_cli(*args, run=run)
    return Path(cli.trainer.log_dir)


def read_metrics_csv(run_dir: Path) -> dict[str, list[float]]:
    """Every non-empty value of each column of the CSV logger's ``metrics.csv``, in logged order."""
    columns: dict[str, list[float]] = {}
    with (run_dir / "metrics.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            for name, value in row.items():
                if value not in ("", None):
                    columns.setdefault(name, []).append(float(value))
    return columns


QUICKSTART = CONFIGS / "quickstart.yaml"


def quickstart_args(tmp_path: Path) -> list[str]:
    """The quickstart's tiny model, sample data and tokenizer (all in the repository) with the debug preset:
    a run of a few seconds that needs nothing outside the repository."""
    return [
        "--config",
        str(QUICKSTART),
        "--config",
        str(DEBUG),
        "--data.init_args.data_dir",
        str(REPO_ROOT / "data" / "quickstart"),
        "--data.init_args.tokenizer",
        str(REPO_ROOT / "data" / "tokenizer" / "bert-base-uncased"),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        *cache_args(tmp_path),
    ]


def command_error(capsys, *args: str, tmp_path: Path) -> str:
    """Run the command line expecting a user error; return its one-line message.

    Checks that it exits with status 2, prints ``neobert_tasks: error: <message>`` as its last line and no
    traceback, and that no result (``metrics.json``, ``export/``) was written under ``tmp_path``.
    """
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args, tmp_path=tmp_path)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    # The message is the last line; progress bars of the data loading may come before it.
    message = error.strip().splitlines()[-1]
    assert message.startswith("neobert_tasks: error: ")
    assert not list(tmp_path.rglob("metrics.json")) and not list(tmp_path.rglob("export"))
    # Nor a run folder without results (a config.yaml, the loggers' first files), which would make the next
    # run version_N+1.
    leftovers = [
        path for path in tmp_path.rglob("version_*")
        if path.is_dir() and not any(next(path.glob(pattern), None) for pattern in RUN_RESULTS)
    ]  # fmt: skip
    assert not leftovers, leftovers
    return message.removeprefix("neobert_tasks: error: ")


def ner_args(tmp_path: Path) -> list[str]:
    """A quick CPU run of the CoNLL-2003 config with the tiny model on the shared data (short windows)."""
    return [
        "--config", str(CONFIGS / "conll2003.yaml"), "--config", str(TINY), "--config", str(DEBUG),
        "--config", str(CPU),
        "--data.init_args.tokenizer", str(shared_path("tokenizers", "bert-base-uncased")),
        "--data.init_args.data_dir", str(shared_path("data", "conll2003")),
        "--data.init_args.max_length", "64", "--data.init_args.stride", "16",
        "--model.init_args.learning_rate", "3e-3",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        *cache_args(tmp_path),
    ]  # fmt: skip
