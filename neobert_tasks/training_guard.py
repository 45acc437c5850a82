"""Stop training when the loss stops being a number, before a checkpoint with broken weights is written.

A NaN or infinite loss poisons the weights at the optimizer step that follows, and every checkpoint written
after it would hold them, ``last.ckpt`` included. `NonFiniteLossGuard` records the first optimizer step whose
loss is not finite in a tensor on the device, so that training does not wait for the device at every step,
and reads that record every ``check_every_n_steps`` steps, after each validation and training epoch, before
every checkpoint is written and when training ends. When a loss was not finite (or, at a save, a weight),
it raises `TrainingDivergedError`: raised while a checkpoint is being saved, it aborts that save, so the
last good checkpoint stays on disk, and ``fit`` ends with one sentence instead of exporting broken weights.
Under DDP the record of every rank is gathered at those points, so all ranks stop at the same one.

Lightning calls the hooks of `ModelCheckpoint` callbacks after those of other callbacks, so the checks after
validation and at the end of an epoch also come before the saves made there. Checkpoints saved with
``save_weights_only`` skip the callbacks' ``on_save_checkpoint``; between those checks they are not covered.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

from neobert_tasks.errors import ConfigError, UserInputError

# Layout of the record: the step, epoch and loss of the first non-finite loss; the step is -1 while there is
# none. A fourth entry, 1 when a weight is not finite, is added when the weights are checked (at a save).
STEP, EPOCH, LOSS, BAD_WEIGHTS = range(4)


class TrainingDivergedError(UserInputError):
    """The training loss (or the weights) became NaN or infinite; the message names the step."""


class NonFiniteLossGuard(L.Callback):
    """End ``fit`` at a NaN or infinite training loss, keeping the last checkpoint saved before it.

    Args:
        check_every_n_steps: optimizer steps between two reads of the record (each read waits for the device).
        enabled: set false to let training go on whatever its loss.
    """

    def __init__(self, check_every_n_steps: int = 20, enabled: bool = True) -> None:
        if check_every_n_steps < 1:
            raise ConfigError(
                f"loss_guard.check_every_n_steps must be at least 1, got {check_every_n_steps}."
            )
        self.check_every_n_steps, self.enabled = check_every_n_steps, enabled
        self._record: torch.Tensor | None = None
        self._last_checked_step = -1
        # The step of the batch being trained, as the loggers number it (before the optimizer step counts it).
        self._batch_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record = torch.tensor([-1.0, -1.0, 0.0], device=pl_module.device)
        self._last_checked_step = -1

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self.enabled or self._record is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor) and loss.device.type == "cpu":
            # Nothing to wait for on the CPU: a Python test costs far less than the tensor ops below.
            value = float(loss.detach())
            if not math.isfinite(value) and self._record[STEP] < 0:
                self._record = torch.tensor([self._batch_step, trainer.current_epoch, value])
        elif isinstance(loss, torch.Tensor):
            loss = loss.detach().float().reshape(())
            # All on the device: `full_like` fills from Python numbers without copying from the host.
            step, epoch = (
                torch.full_like(loss, value) for value in (self._batch_step, trainer.current_epoch)
            )
            here = torch.stack([step, epoch, loss])
            first_bad = (self._record[STEP] < 0) & ~torch.isfinite(loss)
            self._record = torch.where(first_bad, here, self._record)
        step = trainer.global_step
        if step % self.check_every_n_steps == 0 and step != self._last_checked_step:
            self._last_checked_step = step  # with gradient accumulation several batches share one step
            self.check(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.check(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before `on_fit_end`, where the best model is exported and metrics.json written.
        self.check(trainer, pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # Raising here aborts the save: Lightning has not written anything yet.
        self.check(trainer, pl_module, weights=True)

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule, weights: bool = False) -> None:
        """Raise `TrainingDivergedError` if any rank saw a non-finite loss (or, with `weights`, weight)."""
        if not self.enabled or self._record is None:
            return
        record = self._record
        if weights:
            finite = torch.stack([torch.isfinite(parameter).all() for parameter in pl_module.parameters()])
            record = torch.cat([record, (~finite.all()).float().reshape(1)])
        # The one wait for the device: (ranks, entries) under DDP, (entries,) in a single process.
        rows = trainer.strategy.all_gather(record).reshape(-1, record.numel()).tolist()
        diverged = sorted(row for row in rows if row[STEP] >= 0)
        if diverged:
            step, epoch, loss = diverged[0][:3]
            raise TrainingDivergedError(
                f"The training loss became {loss} at step {int(step)} (epoch {int(epoch)}); "
                + stopped_message(trainer)
            )
        if weights and any(row[BAD_WEIGHTS] for row in rows):
            raise TrainingDivergedError(
                f"The model's weights became NaN or infinite by step {trainer.global_step}"
                f" (epoch {trainer.current_epoch}) although the loss stayed finite; "
                + stopped_message(trainer)
            )


def stopped_message(trainer: L.Trainer) -> str:
    """The end of the message: where the last good checkpoint is, and what to change."""
    path = last_good_checkpoint(trainer)
    kept = f"the last good checkpoint is '{path}'" if path else "no checkpoint had been saved"
    return f"training stopped, {kept}; lower the learning rate or use bf16 instead of fp16."


def last_good_checkpoint(trainer: L.Trainer) -> str | None:
    """The newest checkpoint file on disk, or None.

    Every file there was written before the divergence was found (the guard refuses later saves), while a
    callback's best or last path may name a save that was refused.
    """
    paths = {
        getattr(callback, name, "")
        for callback in trainer.checkpoint_callbacks
        for name in ("last_model_path", "best_model_path")
    }
    existing = [path for path in paths if path and os.path.isfile(path)]
    return max(existing, key=os.path.getmtime) if existing else None
