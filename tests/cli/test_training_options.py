"""Training options through the command line: mixed precision with gradient accumulation (the schedule
counts optimizer steps, not batches), the cosine schedule, and starting from an exported checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.cli.helpers import build_cli, glue_args, read_metrics_csv
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # runs the command line end to end

BF16 = REPO_ROOT / "configs" / "presets" / "bf16.yaml"


def _fit(tmp_path, *extra: str):
    torch.set_num_threads(1)
    return build_cli("fit", *glue_args("rte", tmp_path), *extra)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_bf16_with_accumulation_steps_the_schedule_per_optimizer_step(tmp_path, schedule):
    peak = 1e-3
    cli = _fit(
        tmp_path, "--config", str(BF16), "--trainer.accumulate_grad_batches", "2",
        "--model.init_args.learning_rate", str(peak), "--model.init_args.lr_schedule", schedule,
    )  # fmt: skip
    trainer = cli.trainer
    assert trainer.precision == "bf16-mixed"
    assert trainer.global_step == 4  # 8 batches (debug preset) / accumulation 2
    # The schedule was sized from estimated_stepping_batches (4), so it ends at 10% of the peak.
    final_lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert final_lr == pytest.approx(0.1 * peak)
    losses = read_metrics_csv(Path(trainer.log_dir))["train/loss"]
    assert losses and all(torch.isfinite(torch.tensor(losses)))


def test_fit_starts_from_an_exported_checkpoint_directory(tmp_path):
    first = _fit(tmp_path / "first")
    export_dir = json.loads((Path(first.trainer.log_dir) / "metrics.json").read_text())["export_dir"]
    second = _fit(
        tmp_path / "second",
        "--model.init_args.pretrained",
        export_dir,
        "--model.init_args.model_config",
        "null",
    )
    exported = first.model.model.state_dict()
    # The second run began from the export: its embeddings moved only a little from the exported ones.
    start = second.model.model.model.encoder.weight
    assert start.shape == exported["model.encoder.weight"].shape
    assert (start - exported["model.encoder.weight"]).abs().max() < 0.05
    assert second.model.model.config.hidden_size == 64


def test_options_typed_at_predict_time_win_over_the_checkpoint(tmp_path):
    """``--ckpt_path`` restores the model's saved arguments, but what the user types for this command wins."""
    first = _fit(tmp_path / "fit")
    run_dir = Path(first.trainer.log_dir)
    best = json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]
    predict = build_cli(
        "predict", "--config", str(run_dir / "config.yaml"), "--ckpt_path", best,
        "--model.init_args.attn_implementation", "eager",
        "--trainer.default_root_dir", str(tmp_path / "predict"),
    )  # fmt: skip
    assert predict.model.hparams.attn_implementation == "eager"
    assert predict.model.model.config._attn_implementation == "eager"
    assert predict.model.hparams.learning_rate == first.model.hparams.learning_rate  # the rest: checkpoint's


def test_checkpoint_without_a_monitor_keeps_the_latest(tmp_path):
    cli = _fit(tmp_path, "--checkpoint.monitor", "null")
    checkpoint = cli.trainer.checkpoint_callback
    assert checkpoint.monitor is None and Path(checkpoint.best_model_path).is_file()
    assert (Path(cli.trainer.log_dir) / "export" / "config.json").is_file()


def test_bf16_true_warns_that_fine_tuning_steps_round_away(tmp_path):
    """Lightning converts the weights to bf16 without a word; at NeoBERT's 2e-5 most steps then do nothing."""
    warning = r"trainer.precision bf16-true trains bfloat16 weights, and a step of learning_rate 2e-05 rounds"
    with pytest.warns(UserWarning, match=warning):
        cli = _fit(tmp_path, "--trainer.precision", "bf16-true", "--model.init_args.learning_rate", "2e-5")
    assert next(cli.model.parameters()).dtype == torch.bfloat16
