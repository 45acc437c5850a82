"""A warning when ``validate``, ``test`` or ``predict`` leaves part of its examples out.

``trainer.limit_val_batches`` (``limit_test_batches``, ``limit_predict_batches``) cuts an evaluation short,
and ``data.init_args.limit_eval_samples`` each split it evaluates.
The debug preset sets them, and a run's ``config.yaml`` keeps what its fit used, so ``validate --config
<run>/config.yaml`` scores part of the set unless told otherwise; an integer limit counts batches per
process, so that part also changes with the number of processes. The scores and prediction files do not
show it, so `PartialEvaluationWarning` says so once per command. A ``fit``'s validations are left alone:
limiting them is a training choice, and the best-model checkpoint warns where a cut set is monitored.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn

# Per command: the Trainer attributes of its batch counts (after the limit) and loaders, its limit option,
# and what it produces.
STAGES = {
    "validate": ("num_val_batches", "val_dataloaders", "limit_val_batches", "scores"),
    "test": ("num_test_batches", "test_dataloaders", "limit_test_batches", "scores"),
    "predict": ("num_predict_batches", "predict_dataloaders", "limit_predict_batches", "predictions"),
}


def batch_counts(trainer: L.Trainer, stage: str) -> tuple[int, int]:
    """(batches the command runs, batches its loaders hold) on this process, over all its loaders."""
    counts_name, loaders_name, _, _ = STAGES[stage]
    counts, loaders = getattr(trainer, counts_name), getattr(trainer, loaders_name)
    loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
    try:
        sizes = [len(loader) for loader in loaders]
    except TypeError:  # a loader without a length (an iterable dataset): nothing to compare with
        return 0, 0
    if len(counts) != len(sizes):  # no loader at all (a fit without validation data): nothing was cut
        return 0, 0
    return int(sum(min(count, size) for count, size in zip(counts, sizes, strict=True))), sum(sizes)


class PartialEvaluationWarning(L.Callback):
    """Warn once when a ``validate``, ``test`` or ``predict`` command's batch limit leaves batches out."""

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            warn_if_partial(trainer, "validate")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        warn_if_partial(trainer, "test")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        warn_if_partial(trainer, "predict")


def warn_if_partial(trainer: L.Trainer, stage: str) -> None:
    warn_if_cut(trainer, stage)
    run, held = batch_counts(trainer, stage)
    if run >= held:
        return
    _, _, limit_name, produced = STAGES[stage]
    limit: Any = getattr(trainer, limit_name)
    per_process = " per process" if isinstance(limit, int) and trainer.world_size > 1 else ""
    loaders = len(getattr(trainer, STAGES[stage][0]))
    # An integer limit holds for each loader: 4 over sets of 1 and 40 batches runs 5 (a bar of 4/4 each).
    over = f" over its {loaders} sets, {limit} at most each" if loaders > 1 and isinstance(limit, int) else ""
    rank_zero_warn(
        f"{stage} runs {run} of the {held} batches of its examples{per_process}{over} (trainer.{limit_name}"
        f" {limit}): its {produced} cover part of the set; set --trainer.{limit_name} 1.0 for all of it."
    )


def warn_if_cut(trainer: L.Trainer, stage: str) -> None:
    """Warn when ``data.init_args.limit_eval_samples`` cut a split (or evaluation set) that ``stage`` runs."""
    datamodule = getattr(trainer, "datamodule", None)  # None: loaders given to the trainer directly
    cuts = getattr(datamodule, "evaluation_cuts", None)
    if not cuts:
        return
    names = datamodule.split_names_for(stage)
    cut = [(name, kept, total) for name, (kept, total) in cuts.items() if name in names]
    parts = [f"{kept} of the {total} examples of {name}" for name, kept, total in cut]
    if parts:
        produced = STAGES[stage][3]
        rank_zero_warn(
            f"{stage} runs the first {', '.join(parts)} (data.init_args.limit_eval_samples"
            f" {datamodule.limit_eval_samples}): its {produced} cover part of the set; set"
            " --data.init_args.limit_eval_samples null for all of it."
        )
