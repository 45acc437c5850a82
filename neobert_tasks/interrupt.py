"""Ctrl-C during ``fit``: stop after the running step with ``last.ckpt`` saved, as for SIGTERM.

Lightning turns Ctrl-C into a ``KeyboardInterrupt`` wherever the program is, often inside a step (a half
applied optimizer update), then exits without saving, exporting or saying how to go on: an hour of training
since the last validation was lost. `StopOnInterrupt` makes the first Ctrl-C of a one-process ``fit`` what
SIGTERM already is (`neobert_tasks.resume.ResumeCheckpoint`): it hands the signal to Lightning's SIGTERM
handler, Lightning stops at the next batch boundary, ``last.ckpt`` is saved at that step, and the command
exits with status 130 after saying how to resume, or how to end the run there and export its best model.
A second Ctrl-C stops at once, unsaved. Under DDP every process gets the signal at a different batch, so
Lightning's own handling stays.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

import lightning as L

from neobert_tasks.run_directory import run_directory

# What stopped the last fit ("Ctrl-C" once the first one arrived) and the checkpoint saved then, if any
# (read by `neobert_tasks.cli.main`).
_stopped: dict[str, str | None] = {"by": None, "saved": None}


def stopped_by_ctrl_c() -> bool:
    """Whether the last ``fit`` of this process was stopped by Ctrl-C (not by SIGTERM)."""
    return _stopped["by"] == "Ctrl-C"


def saved_on_ctrl_c() -> str | None:
    """The checkpoint saved when Ctrl-C stopped the last ``fit``; None in its sanity check (no step yet)."""
    return _stopped["saved"]


class StopOnInterrupt(L.Callback):
    """Route the first Ctrl-C of a one-process ``fit`` to Lightning's SIGTERM handling."""

    def __init__(self):
        self._previous: Any = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _stopped.update(by=None, saved=None)

    # Lightning registers its SIGTERM handler after on_fit_start, before the sanity check and training.
    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install(trainer)

    def _install(self, trainer: L.Trainer) -> None:
        sigterm_handler = signal.getsignal(signal.SIGTERM)
        one_process = trainer.world_size == 1 and trainer.strategy.launcher is None
        # Signals are handled on the main thread only; no SIGTERM handler on Windows.
        main_thread = threading.current_thread() is threading.main_thread()
        if self._previous is not None or not (one_process and main_thread and callable(sigterm_handler)):
            return

        def stop_after_this_step(signum: int, frame: FrameType | None) -> None:
            self.restore()  # a second Ctrl-C raises KeyboardInterrupt at once
            _stopped["by"] = "Ctrl-C"
            print(
                "\nneobert_tasks: Ctrl-C: stopping after this step and saving last.ckpt"
                " (Ctrl-C again stops at once, unsaved).",
                file=sys.stderr,
                flush=True,
            )
            # Lightning's handler logs "Received SIGTERM", which would name the wrong signal; its logger is
            # its module's (Lightning names loggers by module).
            handler_log = logging.getLogger(type(sigterm_handler).__module__)
            level = handler_log.level
            handler_log.setLevel(logging.WARNING)
            try:
                sigterm_handler(signal.SIGTERM, frame)
            finally:
                handler_log.setLevel(level)

        self._previous = signal.signal(signal.SIGINT, stop_after_this_step)

    def restore(self) -> None:
        """Put back the SIGINT handler that was there before the fit."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.restore()


def report_ctrl_c_stop(trainer: L.Trainer, saved: str) -> str:
    """Record that Ctrl-C stopped the run with ``saved`` written; return what the run kept and the commands
    that resume it or end it there with its export."""
    _stopped["saved"] = saved
    config = run_directory(trainer) / "config.yaml"
    step = trainer.global_step
    lines = [f"Stopped by Ctrl-C at step {step} (epoch {trainer.current_epoch}): saved {saved}."]
    lines.append(f"  resume      python -m neobert_tasks fit --config {config} --ckpt_path last")
    checkpoint = trainer.checkpoint_callback
    best_score = getattr(checkpoint, "best_model_score", None)
    if getattr(checkpoint, "best_model_path", "") and best_score is not None:
        lines.append(
            f"  best so far {checkpoint.monitor} {float(best_score):.4f}: {checkpoint.best_model_path}"
        )
    lines.append(f"  end here    the same with --trainer.max_steps {step}: no more training, then the export")
    return "\n".join(lines)
