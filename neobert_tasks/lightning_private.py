"""The Lightning internals neobert_tasks relies on, here only, each with why no public API does instead.

* `UnrepeatedDistributedSampler` (``lightning.pytorch.overrides.distributed``, not in Lightning's API
  reference): a DDP sampler that gives each rank every ``num_replicas``-th example without padding the
  split to a multiple of the ranks, so an evaluation scores each example exactly once. PyTorch's
  ``DistributedSampler`` repeats examples to even out the ranks. The datamodules evaluate with it and
  `neobert_tasks.data.sampler.LengthSortedEvalSampler` derives from it.
* `validation_follows` reads the fit loop's private ``_should_check_val_fx`` and ``_data_fetcher``: Lightning
  has no public way to ask whether a validation follows the training batch that just ended, which
  `neobert_tasks.resume.ResumeCheckpoint` must know not to save a checkpoint that would resume past it.
* `hide_result_table` sets the running evaluation loop's ``verbose``: ``trainer.validate``/``test`` take it
  as an argument, fixed before the datamodule is set up, so before it is known how many dataloaders (whose
  table misleads, see `neobert_tasks.run_summary.ResultTable`) there are.
* `ignore_unresumable_loader_warning` silences, by its words, the warning Lightning gives when a fit resumes
  mid-epoch with a training loader that has no ``state_dict`` (it checks the private ``_Stateful``
  protocol): "This can cause unreliable results". The datamodules restore the epoch's position from their
  own state (`neobert_tasks.data.loaders`), which that check does not see; they call it once they have.
* `count_ended_epoch_once` rewrites the fit loop's progress counters in a checkpoint saved as an epoch
  ended (in ``on_train_epoch_end``) when ``trainer.max_steps`` is set: Lightning then restores it as
  "restarted on epoch end" and counts the ended epoch a second time, so the next epoch never trains and its
  sampler gets the wrong epoch (the family of Lightning issue #19617). No public API resumes at an epoch's
  start; `neobert_tasks.resume.ResumeCheckpoint` calls it as it loads a checkpoint.
* Behaviour relied on, not called: LightningCLI applies a ``--ckpt_path`` checkpoint's saved hyperparameters
  to the config after ``parse_arguments`` and before ``before_instantiate_classes`` (in its private
  ``_parse_ckpt_path``); `neobert_tasks.cli.NeoBERTCLI` puts back the model options typed on the command
  line in between.

tests/test_lightning_private.py checks that each still exists and behaves so, so that a Lightning upgrade
that changes one fails there, by name, rather than as an evaluation that counts examples twice or a resume
that skips a validation.
"""

from __future__ import annotations

import warnings

import lightning as L
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

__all__ = [
    "UnrepeatedDistributedSampler",
    "count_ended_epoch_once",
    "hide_result_table",
    "ignore_unresumable_loader_warning",
    "validation_follows",
]

# The start of Lightning's warning at a mid-epoch resume whose training loader has no state_dict.
UNRESUMABLE_LOADER_WARNING = (
    "You're resuming from a checkpoint that ended before the epoch ended and your dataloader is not resumable"
)


def validation_follows(trainer: L.Trainer) -> bool:
    """Whether ``fit`` validates right after the training batch that just ended."""
    fit_loop = trainer.fit_loop
    return bool(fit_loop.epoch_loop._should_check_val_fx(fit_loop._data_fetcher))


def hide_result_table(trainer: L.Trainer) -> None:
    """Keep the running ``validate`` or ``test`` from printing its table of results at its end."""
    loop = trainer.test_loop if trainer.state.fn == "test" else trainer.validate_loop
    loop.verbose = False


def ignore_unresumable_loader_warning() -> None:
    """Silence Lightning's warning that a mid-epoch resume is unreliable, once the position is restored."""
    warnings.filterwarnings("ignore", message=UNRESUMABLE_LOADER_WARNING)


def count_ended_epoch_once(trainer: L.Trainer, checkpoint: dict) -> None:
    """Make a checkpoint saved as a training epoch ended resume at the next epoch's start when the run is
    step-based. Its epoch counters read "processed, not completed"; with ``max_steps`` set Lightning forces a
    restart, takes that for an epoch still ending, and increments "processed" again when it finishes it:
    one epoch is counted twice. Marked completed, with the epoch's batch counters at zero, the checkpoint
    reads as one saved at the next epoch's start, which Lightning resumes correctly either way."""
    fit_loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    epochs = fit_loop.get("epoch_progress")
    if trainer.max_steps == -1 or not epochs:
        return
    total = epochs["total"]
    if not total["ready"] == total["started"] == total["processed"] == total["completed"] + 1:
        return
    for counts in (epochs["total"], epochs["current"]):
        counts["completed"] = counts["processed"]
    batches = fit_loop.get("epoch_loop.batch_progress") or {}
    _zero(batches.get("current"))
    batches["is_last_batch"] = False
    _zero((fit_loop.get("epoch_loop.scheduler_progress") or {}).get("current"))
    optimization = fit_loop.get("epoch_loop.automatic_optimization.optim_progress") or {}
    for progress in (optimization.get("optimizer") or {}).values():
        _zero(progress.get("current"))
    # Restarting on a finished batch, Lightning passes once through the epoch loop without a batch, skips
    # the validation it assumes the checkpoint followed, and counts one stepped batch (a checkpoint saved at
    # validation's end has not counted its last); this one has, so the loggers' step would run one ahead.
    stepped = fit_loop.get("epoch_loop.state_dict") or {}
    if stepped.get("_batches_that_stepped"):
        stepped["_batches_that_stepped"] -= 1


def _zero(counts: dict | None) -> None:
    for name in counts or {}:
        counts[name] = 0
