"""The closing lines of a command, and how validate/test/predict find the run of a checkpoint."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

from neobert_tasks.run_directory import (
    RunDirectory,
    best_checkpoint_of_run,
    best_run_checkpoint,
    run_of_checkpoint,
)
from neobert_tasks.run_summary import SHOWN_SCORES, format_scores, summary_lines


def test_scores_put_the_main_metric_first():
    scores = {"val/loss": 0.55214, "val/f1": 0.734, "val/accuracy": 0.71754}
    assert format_scores(scores, "val/accuracy") == "val/accuracy 0.7175 (val/f1 0.7340, val/loss 0.5521)"
    assert format_scores({"val/loss": 1.0}, "val/accuracy") == "val/loss 1.0000"
    assert format_scores({}, "val/loss") == "no score"


def test_scores_of_many_metrics_name_the_overall_ones_and_count_the_rest():
    """NER logs 33 scores: the line keeps the overall ones, per-type and strict ones after, at most six."""
    overall = ["test/accuracy", "test/loss", "test/precision", "test/recall"]
    per_type = [f"test/{name}_{kind}" for name in ("f1", "precision") for kind in ("LOC", "PER")]
    scores = dict.fromkeys(["test/f1", *per_type, "test/strict_f1", *overall], 0.5)
    line = format_scores(scores, "test/f1")
    shown = [part.split()[0] for part in line.removeprefix("test/f1 0.5000 (").split(", ")]
    assert shown == [*overall, "test/f1_LOC", "test/f1_PER", "+3"]
    assert line.endswith("+3 more)") and len(shown) - 1 == SHOWN_SCORES


def fitted_trainer(run_dir, best_path):
    checkpoint = SimpleNamespace(
        monitor="val/accuracy",
        best_model_path=str(best_path),
        best_metrics={"val/accuracy": 0.7175, "val/loss": 0.5, "epoch": 1, "step": 158},
    )
    return SimpleNamespace(
        callbacks=[RunDirectory(str(run_dir))],
        checkpoint_callback=checkpoint,
        datamodule=SimpleNamespace(main_metric="accuracy"),
        limit_val_batches=1.0,
        early_stopping_callbacks=[EarlyStopping(monitor="val/accuracy", mode="max")],
    )


def test_fit_lines_name_the_best_epoch_and_the_files_that_exist(tmp_path, monkeypatch):
    run_dir = tmp_path / "version_0"
    (run_dir / "checkpoints").mkdir(parents=True)
    best = run_dir / "checkpoints" / "epoch=1-step=158.ckpt"
    best.touch()
    (run_dir / "metrics.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    lines = summary_lines(fitted_trainer(run_dir, best), "fit")
    assert lines == [
        "Best val/accuracy 0.7175 (val/loss 0.5000) at epoch 1, step 158",
        "  checkpoint  version_0/checkpoints/epoch=1-step=158.ckpt",
        "  scores      version_0/metrics.json",  # no export/ folder was written: not listed
    ]


def test_a_checkpoint_belongs_to_a_run_only_beside_its_config(tmp_path):
    run_dir = tmp_path / "version_3"
    (run_dir / "checkpoints").mkdir(parents=True)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    checkpoint.touch()
    assert run_of_checkpoint(str(checkpoint)) is None  # no config.yaml: not a run of this tool
    (run_dir / "config.yaml").write_text("seed_everything: 0\n")
    assert run_of_checkpoint(str(checkpoint)) == run_dir
    assert run_of_checkpoint(str(tmp_path / "model.ckpt")) is None
    assert run_of_checkpoint(None) is None


def test_best_is_the_newest_finished_runs_best_checkpoint(tmp_path):
    for version, mtime in (("version_0", 100), ("version_1", 200), ("version_2", 300)):
        best = tmp_path / version / "checkpoints" / "best.ckpt"
        best.parent.mkdir(parents=True)
        if version != "version_2":  # its checkpoint was deleted: not a candidate
            best.touch()
        summary = tmp_path / version / "metrics.json"
        summary.write_text(json.dumps({"best_checkpoint": str(best)}))
        os.utime(summary, (mtime, mtime))
    assert best_run_checkpoint(tmp_path) == tmp_path / "version_1" / "checkpoints" / "best.ckpt"
    assert best_run_checkpoint(tmp_path / "nothing") is None


def test_a_moved_run_finds_its_best_checkpoint_in_its_own_folder(tmp_path):
    """metrics.json records the absolute path of the machine that trained the run."""
    moved = tmp_path / "copied" / "version_0"
    (moved / "checkpoints").mkdir(parents=True)
    (moved / "checkpoints" / "epoch=1-step=8.ckpt").touch()
    trained_at = "/elsewhere/runs/version_0/checkpoints/epoch=1-step=8.ckpt"
    (moved / "metrics.json").write_text(json.dumps({"best_checkpoint": trained_at}))
    assert best_checkpoint_of_run(moved) == moved / "checkpoints" / "epoch=1-step=8.ckpt"
    assert best_run_checkpoint(tmp_path / "copied") == moved / "checkpoints" / "epoch=1-step=8.ckpt"


def test_fit_lines_say_why_early_stopping_ended_the_fit(tmp_path):
    trainer = fitted_trainer(tmp_path / "version_0", tmp_path / "best.ckpt")
    stopper = trainer.early_stopping_callbacks[0]
    stopper.stopping_reason = EarlyStoppingReason.PATIENCE_EXHAUSTED
    stopper.stopping_reason_message = (
        "Monitored metric val/accuracy did not improve in the last 3 records. Best score: 0.718. Signaling"
        " Trainer to stop."
    )
    assert summary_lines(trainer, "fit")[0].splitlines()[1] == (
        "Stopped early: Monitored metric val/accuracy did not improve in the last 3 records."
        " Best score: 0.718."
    )
