"""The closing lines of ``fit``, ``validate`` and ``test``: the score, and where the run's files are.

Lightning's progress bar shows the metrics while it runs, but on a terminal the live bar is redrawn over
them and in a log file they wrap into a narrow column; the last line used to be the export path. The
command line therefore ends with a few plain lines, printed after the trainer (and its bar) has stopped:

    Best val/accuracy 0.7175 (val/f1 0.7340, val/loss 0.5521) at epoch 1, step 158
      checkpoint  runs/quickstart/version_0/checkpoints/epoch=1-step=158.ckpt
      export      runs/quickstart/version_0/export
      scores      runs/quickstart/version_0/metrics.json
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

from neobert_tasks.lightning_private import hide_result_table
from neobert_tasks.run_directory import run_directory

# Metric prefix that each command logs under.
STAGE_PREFIXES = {"fit": "val", "validate": "val", "test": "test"}
# Scores that a closing line names beside the main one.
SHOWN_SCORES = 6


class ResultTable(L.Callback):
    """Turns off Lightning's table of ``validate``/``test`` results when the stage has several dataloaders.

    The tasks log each score once, at the end of the stage (one accuracy over MNLI's matched set and one over
    the mismatched, each evaluation set's own metrics for embeddings); Lightning's table then puts every
    score under every dataloader, as if each set had scored them all. The closing lines list them instead.
    """

    def __init__(self):
        self.hidden = False

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hide_if_several(trainer, trainer.num_val_batches)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._hide_if_several(trainer, trainer.num_test_batches)

    def _hide_if_several(self, trainer: L.Trainer, batches: list) -> None:
        if trainer.state.fn in ("validate", "test") and len(batches) > 1:
            hide_result_table(trainer)
            self.hidden = True


def format_scores(metrics: dict[str, float], main: str | None) -> str:
    """``main value (other value, …)``, 4 decimals as the progress bar shows: the main metric, then at most
    `SHOWN_SCORES` others in `main_first` order; the rest (NER's per-type scores, …) are counted only, and
    the files listed below the line hold them."""
    names = main_first(metrics, main)
    if not names:
        return "no score"
    head, *rest = (f"{name} {metrics[name]:.4f}" for name in names)
    if len(rest) > SHOWN_SCORES:
        rest = [*rest[:SHOWN_SCORES], f"+{len(rest) - SHOWN_SCORES} more"]
    return f"{head} ({', '.join(rest)})" if rest else head


def main_first(names: Iterable[str], main: str | None) -> list[str]:
    """``names`` with ``main`` first, then overall scores before breakdowns (fewer ``_`` and ``/`` in the
    name: ``f1`` before ``f1_LOC`` and ``strict_f1``), then by name."""
    return sorted(names, key=lambda name: (name != main, name.count("_") + name.count("/"), name))


def early_stop_reason(trainer: L.Trainer) -> str | None:
    """Why early stopping ended the fit (Lightning's words), or None when it did not."""
    for callback in trainer.early_stopping_callbacks:
        if callback.stopping_reason != EarlyStoppingReason.NOT_STOPPED:
            message = callback.stopping_reason_message or callback.stopping_reason.name.lower()
            return message.replace(" Signaling Trainer to stop.", "").rstrip(".")
    return None


def fit_lines(trainer: L.Trainer, main: str) -> tuple[str, dict[str, object]]:
    """The best validation's scores, epoch and step, and the run's checkpoint, export and metrics.json."""
    checkpoint = trainer.checkpoint_callback
    best = dict(getattr(checkpoint, "best_metrics", None) or {})
    epoch, step = best.pop("epoch", None), best.pop("step", None)
    main = getattr(checkpoint, "monitor", None) or main
    where = f" at epoch {epoch}, step {step}" if epoch is not None else ""
    # Without a validation split `fit` turns validation off (trainer.limit_val_batches 0).
    missing = (
        "No validation score (no validation ran)"
        if trainer.limit_val_batches == 0
        else f"No {main} score (no validation logged it)"
    )
    head = f"Best {format_scores(best, main)}{where}" if best else missing
    if (reason := early_stop_reason(trainer)) is not None:
        head += f"\nStopped early: {reason}."
    run_dir = run_directory(trainer)
    best_path = getattr(checkpoint, "best_model_path", "") or getattr(checkpoint, "last_model_path", "")
    return head, {"checkpoint": best_path, "export": run_dir / "export", "scores": run_dir / "metrics.json"}


def evaluation_lines(trainer: L.Trainer, stage: str, main: str) -> tuple[str, dict[str, object]]:
    """The scores of a validate or test command, the checkpoint scored and the metrics.csv written."""
    prefix = STAGE_PREFIXES[stage]
    scores = {
        name: float(value)
        for name, value in trainer.callback_metrics.items()
        if name.startswith(f"{prefix}/") and math.isfinite(float(value))
    }
    head = f"{stage.capitalize()}: {format_scores(scores, main)}"
    table = next((callback for callback in trainer.callbacks if isinstance(callback, ResultTable)), None)
    if table is not None and table.hidden and scores:
        # In place of Lightning's table: a score per line, the main metric first.
        width = max(map(len, scores))
        lines = (f"  {name:<{width}}  {scores[name]:.4f}" for name in main_first(scores, main))
        head = "\n".join([f"{stage.capitalize()}:", *lines])
    return head, {"checkpoint": trainer.ckpt_path or "", "logged": run_directory(trainer) / "metrics.csv"}


def summary_lines(trainer: L.Trainer, stage: str) -> list[str]:
    """The closing lines of ``stage`` (fit, validate or test) for ``trainer``'s run: files that exist only."""
    datamodule = trainer.datamodule
    # The embedding datamodule's test leads with its first test set's metric, not the validation's.
    metric_for = getattr(datamodule, "main_metric_for", None)
    main_metric = (metric_for(stage) if metric_for else getattr(datamodule, "main_metric", None)) or "loss"
    main = f"{STAGE_PREFIXES[stage]}/{main_metric}"
    head, files = fit_lines(trainer, main) if stage == "fit" else evaluation_lines(trainer, stage, main)
    found = [(label, Path(str(path))) for label, path in files.items() if path and Path(str(path)).exists()]
    return [head, *(f"  {label:<11} {shown(path)}" for label, path in found)]


def shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (as the user typed the root)."""
    path = path.resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def print_summary(trainer: L.Trainer, stage: str) -> None:
    """Print the closing lines on the main process, to standard output, after everything else."""
    if trainer.is_global_zero:
        print("\n".join(summary_lines(trainer, stage)), flush=True)
