"""`neobert_tasks.callbacks` on their own: the best-model checkpoint's monitor and mode, NaN scores, the
metrics remembered at the best; the export of the best (not the last) weights with its ``metrics.json``.
A tiny `Trainer` runs the hooks; the folder export itself is replaced by a recorder (tests/export covers
what it writes).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import lightning as L
import pytest
import torch

from neobert_tasks.callbacks import BestModelCheckpoint, ExportBestModel
from neobert_tasks.errors import ConfigError
from tests.unit.tiny_training import BATCHES_PER_EPOCH, TinyRegression, run_folder, tiny_trainer

NAN = float("nan")
pytestmark = pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")


def set_up(checkpoint: BestModelCheckpoint, datamodule=None, tmp_path: Path | None = None) -> None:
    """Run the callback's ``setup`` with what it reads of a trainer."""
    checkpoint.dirpath = checkpoint.dirpath or str(tmp_path or "unused")
    trainer = SimpleNamespace(
        datamodule=datamodule, strategy=SimpleNamespace(broadcast=lambda value: value), is_global_zero=True
    )
    checkpoint.setup(trainer, None, "validate")


@pytest.mark.parametrize(
    ("datamodule", "monitor", "mode"),
    [
        (SimpleNamespace(main_metric="matthews"), "val/matthews", "max"),
        (SimpleNamespace(main_metric=None), "val/loss", "min"),
        (SimpleNamespace(), "val/loss", "min"),  # a datamodule without a main metric
        (None, "val/loss", "min"),  # a Trainer run without a datamodule
    ],
)
def test_monitor_auto_is_the_datamodules_main_metric_or_else_the_loss(datamodule, monitor, mode):
    checkpoint = BestModelCheckpoint()
    set_up(checkpoint, datamodule)
    assert (checkpoint.monitor, checkpoint.mode) == (monitor, mode)
    # The value a first score must beat.
    assert checkpoint.kth_value.item() == (math.inf if mode == "min" else -math.inf)


@pytest.mark.parametrize(
    ("monitor", "mode", "resolved_mode"),
    [
        ("val/loss", "auto", "min"),
        ("val/f1", "auto", "max"),
        ("val/loss", "max", "max"),
        ("val/f1", "min", "min"),
    ],
)
def test_mode_auto_is_min_for_a_loss_and_max_for_a_score_and_a_given_mode_is_kept(
    monitor, mode, resolved_mode
):
    checkpoint = BestModelCheckpoint(monitor=monitor, mode=mode)
    set_up(checkpoint, SimpleNamespace(main_metric="accuracy"))
    assert (checkpoint.monitor, checkpoint.mode) == (monitor, resolved_mode)


def test_monitor_null_keeps_the_latest_checkpoints_without_a_score():
    checkpoint = BestModelCheckpoint(monitor=None)
    set_up(checkpoint, SimpleNamespace(main_metric="accuracy"))
    assert checkpoint.monitor is None


def test_nan_and_infinite_scores_are_refused_and_finite_ones_compared():
    checkpoint = BestModelCheckpoint(monitor="val/pearson", mode="max")
    trainer = SimpleNamespace(global_step=3)
    with pytest.warns(UserWarning, match=r"^val/pearson is nan at step 3: not kept as a best checkpoint\.$"):
        assert not checkpoint.check_monitor_top_k(trainer, torch.tensor(NAN))
    with pytest.warns(UserWarning, match="val/pearson is -inf at step 3"):
        assert not checkpoint.check_monitor_top_k(trainer, torch.tensor(-math.inf))
    assert checkpoint.check_monitor_top_k(trainer, torch.tensor(0.1))  # nothing kept yet: any number is


def fit_with_scores(
    tmp_path: Path, scores: list[float], *callbacks
) -> tuple[BestModelCheckpoint, TinyRegression]:
    """One validation per epoch, logging ``scores`` in turn as ``val/score``, the monitored metric."""
    best = BestModelCheckpoint(monitor="val/score")
    module = TinyRegression(val_scores=scores)
    tiny_trainer(tmp_path, [best, *callbacks], max_epochs=len(scores)).fit(module)
    return best, module


def step_of_epoch(epoch: int) -> int:
    return (epoch + 1) * BATCHES_PER_EPOCH


def test_a_nan_score_never_becomes_the_best_even_as_the_first(tmp_path):
    with pytest.warns(UserWarning, match="val/score is nan") as warned:
        best, _ = fit_with_scores(tmp_path, [NAN, 0.3, NAN, 0.2])
    assert [str(warning.message) for warning in warned if "is nan" in str(warning.message)] == [
        f"val/score is nan at step {step_of_epoch(epoch)}: not kept as a best checkpoint." for epoch in (0, 2)
    ]
    assert best.mode == "max"
    assert Path(best.best_model_path).name == f"epoch=1-step={step_of_epoch(1)}.ckpt"
    assert best.best_model_score.item() == pytest.approx(0.3)
    assert best.best_metrics["val/score"] == pytest.approx(0.3)


def test_the_metrics_of_the_best_validation_are_kept_and_saved_in_the_checkpoint(tmp_path):
    best, _ = fit_with_scores(tmp_path, [0.5, 0.9, 0.7])
    assert set(best.best_metrics) == {"val/score", "val/loss", "epoch", "step"}
    assert best.best_metrics["val/score"] == pytest.approx(0.9)
    assert (best.best_metrics["epoch"], best.best_metrics["step"]) == (1, step_of_epoch(1))

    restored = BestModelCheckpoint(monitor="val/score", dirpath=best.dirpath)  # Lightning checks the folder
    restored.load_state_dict(best.state_dict())
    assert restored.best_metrics == best.best_metrics
    assert restored.best_model_path == best.best_model_path
    assert restored.best_model_score.item() == pytest.approx(0.9)


def test_the_checkpoint_written_at_a_new_best_holds_that_validations_metrics(tmp_path):
    best, _ = fit_with_scores(tmp_path, [0.5, 0.9])
    saved = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
    [state] = [state for key, state in saved["callbacks"].items() if key.startswith("BestModelCheckpoint")]
    assert state["best_metrics"]["val/score"] == pytest.approx(0.9)


def test_a_run_resumed_from_the_best_checkpoint_reports_that_best_if_no_better_validation_follows(tmp_path):
    best, _ = fit_with_scores(tmp_path, [0.5, 0.9])
    resumed = BestModelCheckpoint(monitor="val/score", dirpath=best.dirpath)
    module = TinyRegression(val_scores=[0.7])  # epoch 2, worse than the best
    tiny_trainer(tmp_path, [resumed], max_epochs=3).fit(module, ckpt_path=best.best_model_path)
    assert resumed.best_model_path == best.best_model_path
    assert resumed.best_metrics["val/score"] == pytest.approx(0.9)
    assert (resumed.best_metrics["epoch"], resumed.best_metrics["step"]) == (1, step_of_epoch(1))


# --- ExportBestModel ------------------------------------------------------------------------------------


def test_export_options_are_checked_before_training():
    with pytest.raises(ConfigError, match=r"^export.pooling 'max' is not one of mean, cls\.$"):
        ExportBestModel(pooling="max")
    with pytest.raises(ConfigError, match=r"^export.formats: unknown format 'tflite'"):
        ExportBestModel(formats=["tflite"])


class RecordExport:
    """Stands in for `export_model_folder`: records the weights it was given and where they went."""

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, model, directory, **options):
        metrics_json = Path(directory).parent / "metrics.json"
        self.calls.append(
            {
                "weights": {name: tensor.clone() for name, tensor in model.state_dict().items()},
                "directory": Path(directory),
                "metrics_json_before": metrics_json.exists(),
                "training_config": options["training_config"],
            }
        )
        return {"onnx": None}


@pytest.fixture
def record_export():
    recorder = RecordExport()
    with (
        mock.patch("neobert_tasks.callbacks.export_model_folder", recorder),
        mock.patch("neobert_tasks.callbacks.card_facts", return_value=None),
    ):
        yield recorder


class FinalWeights(L.Callback):
    """Records the weights at the end of training, before ``on_fit_end`` (where the export runs)."""

    def on_train_end(self, trainer, pl_module):
        self.weights = {name: tensor.clone() for name, tensor in pl_module.model.state_dict().items()}


def test_the_best_weights_are_exported_then_metrics_json_is_written(tmp_path, record_export):
    final = FinalWeights()
    best, module = fit_with_scores(tmp_path, [0.5, 0.9, 0.7], ExportBestModel(), final)
    run = run_folder(tmp_path)
    [call] = record_export.calls
    assert call["directory"] == run / "export"
    assert call["training_config"] == run / "config.yaml"
    assert not call["metrics_json_before"]  # metrics.json marks a finished export: written after it

    best_weights = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
    for name, tensor in call["weights"].items():
        torch.testing.assert_close(tensor, best_weights[f"model.{name}"], rtol=0, atol=0)
    assert not torch.equal(call["weights"]["weight"], final.weights["weight"])  # epoch 2 trained on

    summary = json.loads((run / "metrics.json").read_text())
    assert summary == {
        "monitor": "val/score",
        "best_score": pytest.approx(0.9),
        "best_checkpoint": best.best_model_path,
        "export_dir": str(run / "export"),
        "best_metrics": pytest.approx(best.best_metrics),
    }


@pytest.mark.filterwarnings("ignore:val/score is nan")
def test_without_a_finite_score_the_final_weights_are_exported_with_a_warning(tmp_path, record_export):
    with pytest.warns(
        UserWarning, match=r"No validation gave a finite val/score: exporting the final weights\."
    ):
        _, module = fit_with_scores(tmp_path, [NAN, NAN], ExportBestModel())
    [call] = record_export.calls
    for name, tensor in module.model.state_dict().items():
        assert torch.equal(call["weights"][name], tensor)
    summary = json.loads((run_folder(tmp_path) / "metrics.json").read_text())
    assert summary["best_checkpoint"] is None and summary["best_score"] is None


def test_a_disabled_export_writes_nothing(tmp_path, record_export):
    fit_with_scores(tmp_path, [0.5], ExportBestModel(enabled=False))
    assert record_export.calls == []
    assert not (run_folder(tmp_path) / "metrics.json").exists()


def test_a_validation_without_the_monitor_is_not_reported_as_the_best():
    """An embedding run whose monitored set was cut short logged only its pair loss: the closing line called
    that loss the best score, of the final epoch counted from 1."""
    best = BestModelCheckpoint(monitor="val/sts/spearman", mode="max")
    trainer = SimpleNamespace(
        sanity_checking=False, callback_metrics={"val/validation/loss": 2.33}, current_epoch=1, global_step=8
    )
    best._remember_best_metrics(trainer)
    assert best.best_metrics == {}
    trainer.callback_metrics["val/sts/spearman"] = 0.5
    best._remember_best_metrics(trainer)
    assert best.best_metrics["val/sts/spearman"] == pytest.approx(0.5)


def test_max_steps_ending_in_an_epoch_that_is_not_validated_is_warned_of(recwarn):
    from neobert_tasks.final_validation import ValidateFinalStep  # noqa: PLC0415

    def trainer(max_steps, every=2, max_epochs=4, batches=5):
        return SimpleNamespace(
            enable_validation=True, check_val_every_n_epoch=every, num_training_batches=batches,
            max_steps=max_steps, accumulate_grad_batches=1, max_epochs=max_epochs,
        )  # fmt: skip

    with pytest.warns(UserWarning, match=r"max_steps 12 ends the fit in epoch 3, which .* does not validate"):
        ValidateFinalStep().on_train_start(trainer(12), None)  # validated: epochs 2 and 4 (steps 10, 20)
    for quiet in (trainer(20), trainer(10), trainer(12, every=1), trainer(-1), trainer(30, max_epochs=2)):
        ValidateFinalStep().on_train_start(quiet, None)
    assert not [warning for warning in recwarn if "max_steps" in str(warning.message)]
