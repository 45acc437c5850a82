"""Experiment trackers (W&B offline, MLflow's local file store) as the first logger: the run's files stay in
``<default_root_dir>/version_N`` (config, checkpoints, export, metrics.json), ``fit --ckpt_path last`` finds
and continues that run, and the tracker receives the metrics. Skipped when the tracker is not installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from lightning.fabric.utilities.imports import RequirementCache

from neobert_tasks.run_directory import run_directory
from tests.cli.helpers import build_cli, command_error, quickstart_args

pytestmark = pytest.mark.slow  # runs the command line end to end

TRACKERS = {
    "wandb": lambda tmp: {
        "class_path": "lightning.pytorch.loggers.WandbLogger",
        "init_args": {"offline": True, "save_dir": str(tmp / "wandb"), "project": "neobert-tasks"},
    },
    "mlflow": lambda tmp: {
        "class_path": "lightning.pytorch.loggers.MLFlowLogger",
        "init_args": {"tracking_uri": f"file:{tmp / 'mlruns'}", "experiment_name": "quickstart"},
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("tracker", list(TRACKERS))
def test_a_tracker_first_keeps_the_run_folder_and_resumes(tracker, tmp_path, monkeypatch):
    pytest.importorskip(
        tracker, reason=f"{tracker} is not installed (pip install 'neobert_tasks[{tracker}]')"
    )
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store opt-in
    monkeypatch.chdir(tmp_path)  # anything written to the working directory would show up here
    root = tmp_path / "runs"
    loggers = tmp_path / "loggers.yaml"
    tensorboard = {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": str(root), "name": ""},
    }
    loggers.write_text(yaml.safe_dump({"trainer": {"logger": [TRACKERS[tracker](tmp_path), tensorboard]}}))
    args = [*quickstart_args(tmp_path), "--config", loggers, "--trainer.default_root_dir", root]

    build_cli("fit", *args, "--trainer.max_epochs", "1")
    run_dir = root / "version_0"
    for name in (
        "config.yaml",
        "metrics.json",
        "export/config.json",
        "export/README.md",
        "checkpoints/last.ckpt",
        "metrics.csv",  # a CSV logger joins the configured ones
    ):
        assert (run_dir / name).is_file(), name
    assert sorted(path.name for path in root.iterdir()) == ["version_0"]
    assert all(path.is_relative_to(run_dir) for path in tmp_path.rglob("*.ckpt"))
    assert json.loads((run_dir / "metrics.json").read_text())["export_dir"] == str(run_dir / "export")

    resumed = build_cli("fit", *args, "--trainer.max_epochs", "2", "--ckpt_path", "last")
    assert Path(resumed.trainer.ckpt_path) == run_dir / "checkpoints" / "last.ckpt"
    assert run_directory(resumed.trainer) == run_dir.resolve()
    assert sorted(path.name for path in root.iterdir()) == ["version_0"]  # the same run continued
    assert list((run_dir / "checkpoints").glob("last*.ckpt")) == [run_dir / "checkpoints" / "last.ckpt"]

    if tracker == "wandb":
        runs = list((tmp_path / "wandb" / "wandb").glob("offline-run-*"))
        assert runs and all(list(run.glob("*.wandb")) for run in runs)
    else:
        import mlflow

        client = mlflow.tracking.MlflowClient(tracking_uri=f"file:{tmp_path / 'mlruns'}")
        experiment = client.get_experiment_by_name("quickstart")
        runs = client.search_runs([experiment.experiment_id])
        assert any("val/accuracy" in run.data.metrics for run in runs)
        assert Path(tmp_path / "mlruns").is_dir()


def test_configured_loggers_without_a_csv_logger_still_write_metrics_csv(tmp_path):
    """With its own list of loggers (TensorBoard alone here, a tracker beside it in practice) a run folder
    had no metrics.csv, which the analysis helpers read; config.yaml still records the list as configured."""
    root = tmp_path / "runs"
    tensorboard = {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": str(root), "name": ""},
    }
    loggers = tmp_path / "loggers.yaml"
    loggers.write_text(yaml.safe_dump({"trainer": {"logger": [tensorboard]}}))
    build_cli("fit", *quickstart_args(tmp_path), "--config", loggers, "--trainer.default_root_dir", root)
    run_dir = root / "version_0"
    assert "val/accuracy" in (run_dir / "metrics.csv").read_text().splitlines()[0]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["logger"]
    assert [entry["class_path"] for entry in saved] == ["lightning.pytorch.loggers.TensorBoardLogger"]


# Where Lightning's logger classes record whether their package is there (private: a test-only stand-in
# for an environment without the package).
AVAILABILITY = {
    "wandb": ("lightning.pytorch.loggers.wandb", "_WANDB_AVAILABLE"),
    "mlflow": ("lightning.pytorch.loggers.mlflow", "_MLFLOW_AVAILABLE"),
}


@pytest.mark.parametrize("tracker", list(TRACKERS))
def test_a_tracker_without_its_package_is_one_sentence_naming_the_extra(
    tracker, tmp_path, capsys, monkeypatch
):
    module, name = AVAILABILITY[tracker]
    monkeypatch.setattr(f"{module}.{name}", RequirementCache(f"{tracker}>=999"))
    logger = json.dumps(TRACKERS[tracker](tmp_path))
    args = [
        *quickstart_args(tmp_path),
        "--trainer.logger",
        logger,
        "--trainer.default_root_dir",
        tmp_path / "runs",
    ]
    message = command_error(capsys, "fit", *args, tmp_path=tmp_path)
    assert message.endswith(
        f"needs the {tracker} package, which is not installed: pip install 'neobert_tasks[{tracker}]'."
    )
