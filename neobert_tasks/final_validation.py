"""A fit that ends at ``trainer.max_steps`` in the middle of an epoch validates its final weights first.

Lightning validates at the end of an epoch, every ``val_check_interval`` steps, and when a callback asks the
fit to stop (``trainer.should_stop``: early stopping, ``max_time``), but not when ``max_steps`` ends the fit
between two validations. The steps after the last validation then never count: their weights cannot
become the best checkpoint, the export falls back to an earlier best or, with no validation at all, to
unscored final weights, and Lightning warns that the monitored metric "could not be found" as if the task
did not log it. `ValidateFinalStep` asks for the stop itself at the step that reaches ``max_steps``, which
makes Lightning validate there, as it does for ``max_time``; where a validation is due at that step anyway,
it runs once. Epochs after the last that ``check_val_every_n_epoch`` validates get a warning instead:
Lightning validates no other epoch, even when asked to stop.
"""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn


class ValidateFinalStep(L.Callback):
    """Validate at the step that reaches ``trainer.max_steps`` when it falls inside an epoch."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning validates only the epochs check_val_every_n_epoch divides, whatever ends the fit.
        every, epochs = trainer.check_val_every_n_epoch, trainer.max_epochs
        if trainer.enable_validation and every and every > 1 and epochs and epochs > 0 and epochs % every:
            rank_zero_warn(
                f"trainer.max_epochs {epochs} is not a multiple of trainer.check_val_every_n_epoch {every}:"
                f" the last {epochs % every} epoch(s) train without a validation, so their weights can never"
                " be the best checkpoint; make max_epochs a multiple of it."
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # max_steps ending inside (or at the end of) an epoch that check_val_every_n_epoch skips: the stop
        # asked for below validates nothing there either.
        every, last_step = trainer.check_val_every_n_epoch, trainer.max_steps
        batches = trainer.num_training_batches  # inf for a loader without a length
        if not (trainer.enable_validation and every and every > 1 and last_step > 0):
            return
        if not isinstance(batches, int) or batches < 1:
            return
        steps_per_epoch = math.ceil(batches / trainer.accumulate_grad_batches)
        last_epoch = math.ceil(last_step / steps_per_epoch)  # counted from 1
        ended_by_epochs = trainer.max_epochs and 0 < trainer.max_epochs < last_epoch  # warned of above
        if last_epoch % every and not ended_by_epochs:
            rank_zero_warn(
                f"trainer.max_steps {last_step} ends the fit in epoch {last_epoch}, which"
                f" trainer.check_val_every_n_epoch {every} does not validate: the steps after the last"
                " validation are never scored; make max_steps end a validated epoch."
            )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if 0 < trainer.max_steps <= trainer.global_step and trainer.enable_validation:
            trainer.should_stop = True
