"""`neobert_tasks.training_guard` on its own: the step a NaN or infinite loss is reported at, when the record
is read, weights checked at a save, every rank's record, the message, and a tiny `Trainer` stopped by it.

The command-line run with a diverging NeoBERT task is in tests/cli/test_bad_config.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from neobert_tasks.errors import ConfigError
from neobert_tasks.resume import ResumeCheckpoint
from neobert_tasks.training_guard import (
    NonFiniteLossGuard,
    TrainingDivergedError,
    last_good_checkpoint,
    stopped_message,
)
from tests.unit.tiny_training import TinyRegression, checkpoints, tiny_trainer

NAN, INF = float("nan"), float("inf")
ADVICE = "lower the learning rate or use bf16 instead of fp16."


class FakeTrainer(SimpleNamespace):
    """The trainer attributes the guard reads: steps, epoch, checkpoints on disk, and a gather over ranks
    that returns this rank's record followed by ``other_ranks``."""

    def __init__(self, **values):
        super().__init__(
            global_step=0, current_epoch=0, sanity_checking=False, checkpoint_callbacks=[], other_ranks=[]
        )
        self.__dict__.update(values)
        self.strategy = SimpleNamespace(all_gather=self.all_gather)

    def all_gather(self, record: torch.Tensor) -> torch.Tensor:
        others = [torch.tensor(row, dtype=record.dtype)[: record.numel()] for row in self.other_ranks]
        return torch.stack([record, *others]) if others else record


def started(guard: NonFiniteLossGuard, trainer: FakeTrainer, module: torch.nn.Module | None = None):
    module = module or torch.nn.Linear(2, 1)
    module.device = torch.device("cpu")
    guard.on_train_start(trainer, module)
    return module


def train_step(guard: NonFiniteLossGuard, trainer: FakeTrainer, module, loss: float, epoch: int = 0) -> None:
    """One batch as Lightning runs it: it starts at ``global_step``, which its optimizer step raises."""
    trainer.current_epoch = epoch
    guard.on_train_batch_start(trainer, module, None, 0)
    trainer.global_step += 1
    guard.on_train_batch_end(trainer, module, {"loss": torch.tensor(loss)}, None, 0)


def test_the_check_interval_must_be_positive():
    with pytest.raises(ConfigError, match=r"^loss_guard.check_every_n_steps must be at least 1, got 0\.$"):
        NonFiniteLossGuard(check_every_n_steps=0)


def test_the_first_non_finite_loss_is_reported_with_its_step_and_epoch():
    guard, trainer = NonFiniteLossGuard(check_every_n_steps=4), FakeTrainer()
    module = started(guard, trainer)
    train_step(guard, trainer, module, 0.5)  # step 0
    train_step(guard, trainer, module, INF, epoch=1)  # step 1: the first non-finite loss
    train_step(guard, trainer, module, NAN, epoch=1)  # step 2: later ones do not replace it
    with pytest.raises(TrainingDivergedError) as error:
        train_step(guard, trainer, module, 0.5, epoch=1)  # step 3 ends with global step 4: the record is read
    assert str(error.value) == (
        "The training loss became inf at step 1 (epoch 1); training stopped, no checkpoint had been saved;"
        f" {ADVICE}"
    )


def test_the_record_is_read_every_n_steps_and_at_the_end_of_validation_epoch_and_training():
    for hook in ("on_validation_end", "on_train_epoch_end", "on_train_end"):
        guard, trainer = NonFiniteLossGuard(check_every_n_steps=5), FakeTrainer()
        module = started(guard, trainer)
        train_step(guard, trainer, module, NAN)
        train_step(guard, trainer, module, 1.0)  # global step 2: not a multiple of 5, nothing read yet
        with pytest.raises(
            TrainingDivergedError, match=r"^The training loss became nan at step 0 \(epoch 0\)"
        ):
            getattr(guard, hook)(trainer, module)


def test_the_sanity_check_validation_does_not_read_the_record():
    guard, trainer = NonFiniteLossGuard(), FakeTrainer()
    module = started(guard, trainer)
    train_step(guard, trainer, module, NAN)
    trainer.sanity_checking = True
    guard.on_validation_end(trainer, module)  # no error
    trainer.sanity_checking = False
    with pytest.raises(TrainingDivergedError):
        guard.on_validation_end(trainer, module)


def test_a_disabled_guard_lets_training_go_on():
    guard, trainer = NonFiniteLossGuard(check_every_n_steps=1, enabled=False), FakeTrainer()
    module = started(guard, trainer)
    for _ in range(3):
        train_step(guard, trainer, module, NAN)
    guard.on_train_end(trainer, module)
    guard.on_save_checkpoint(trainer, module, {})


def test_non_finite_weights_with_a_finite_loss_stop_the_save():
    guard, trainer = NonFiniteLossGuard(), FakeTrainer(global_step=7, current_epoch=2)
    module = started(guard, trainer)
    guard.on_save_checkpoint(trainer, module, {})  # finite weights: the save goes on
    guard.on_train_end(trainer, module)  # weights are only checked at a save
    with torch.no_grad():
        module.bias.fill_(NAN)
    with pytest.raises(TrainingDivergedError) as error:
        guard.on_save_checkpoint(trainer, module, {})
    assert str(error.value) == (
        "The model's weights became NaN or infinite by step 7 (epoch 2) although the loss stayed finite;"
        f" training stopped, no checkpoint had been saved; {ADVICE}"
    )


def test_the_earliest_divergence_of_any_rank_is_reported_on_every_rank():
    # This rank's loss turned NaN at step 3; another rank's at step 1, a third rank's never.
    trainer = FakeTrainer(other_ranks=[[1.0, 0.0, INF, 0.0], [-1.0, -1.0, 0.0, 0.0]])
    guard = NonFiniteLossGuard(check_every_n_steps=100)
    module = started(guard, trainer)
    for loss in (1.0, 1.0, 1.0, NAN):
        train_step(guard, trainer, module, loss)
    with pytest.raises(TrainingDivergedError, match=r"^The training loss became inf at step 1 \(epoch 0\)"):
        guard.check(trainer, module)

    # Only another rank's weights are broken: this rank stops at the save too.
    trainer = FakeTrainer(other_ranks=[[-1.0, -1.0, 0.0, 1.0]])
    module = started(guard, trainer)
    with pytest.raises(TrainingDivergedError, match="weights became NaN or infinite"):
        guard.on_save_checkpoint(trainer, module, {})


def test_the_message_names_the_newest_checkpoint_on_disk(tmp_path):
    older, newer, refused = tmp_path / "epoch=0-step=4.ckpt", tmp_path / "last.ckpt", tmp_path / "never.ckpt"
    for path, mtime in ((older, 100), (newer, 200)):
        path.write_text("")
        os.utime(path, (mtime, mtime))
    callbacks = [
        SimpleNamespace(best_model_path=str(older), last_model_path=str(refused)),  # a save the guard refused
        SimpleNamespace(best_model_path="", last_model_path=str(newer)),
    ]
    trainer = SimpleNamespace(checkpoint_callbacks=callbacks)
    assert last_good_checkpoint(trainer) == str(newer)
    assert stopped_message(trainer) == f"training stopped, the last good checkpoint is '{newer}'; {ADVICE}"
    newer.unlink()
    assert last_good_checkpoint(trainer) == str(older)
    assert last_good_checkpoint(SimpleNamespace(checkpoint_callbacks=[])) is None


def test_a_tiny_run_stops_at_the_nan_loss_keeping_the_last_checkpoint_before_it(tmp_path: Path):
    guard = NonFiniteLossGuard(check_every_n_steps=20)
    resume = ResumeCheckpoint(every_n_train_steps=2)
    trainer = tiny_trainer(tmp_path, [guard, resume], limit_val_batches=0)
    with pytest.raises(TrainingDivergedError) as error:
        trainer.fit(TinyRegression(nan_from_step=3))
    last = checkpoints(tmp_path) / "last.ckpt"
    assert str(error.value) == (
        f"The training loss became nan at step 3 (epoch 0); training stopped, the last good checkpoint is"
        f" '{last}'; {ADVICE}"
    )
    # The save after step 4 (whose weights the NaN gradient of step 3 broke) was refused: step 2 is kept.
    kept = torch.load(last, map_location="cpu", weights_only=True)
    assert kept["global_step"] == 2
    assert all(torch.isfinite(tensor).all() for tensor in kept["state_dict"].values())
