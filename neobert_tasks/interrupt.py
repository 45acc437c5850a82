"""Ctrl-C and SIGTERM during ``fit``: stop after a finished step with ``last.ckpt`` saved, on every process.

(With gradient accumulation, "a finished step" is an optimizer step: the stop waits for its last batch.)

Lightning turns Ctrl-C into a ``KeyboardInterrupt`` wherever the program is, often inside a step (a half
applied optimizer update), then exits without saving, exporting or saying how to go on: an hour of training
since the last validation was lost. `StopOnInterrupt` makes the first Ctrl-C of a ``fit`` what SIGTERM
already is (`neobert_tasks.resume.ResumeCheckpoint`): it hands the signal to Lightning's SIGTERM handler,
Lightning stops at the next batch boundary, ``last.ckpt`` is saved at that step, and the command exits with
status 130 after saying how to resume, or how to end the run there and export its best model. A second
Ctrl-C stops at once, unsaved.

With several processes (DDP) Lightning's own SIGTERM handling hangs (Lightning 2.6, issue #20806): its
handler runs a broadcast wherever the signal lands, so when SLURM or ``kill`` signals every rank, each at a
different point of its step, and rank 0 forwards the signal to the ranks it started, the ranks wait in
collectives that never match. There `StopOnInterrupt` takes SIGTERM and Ctrl-C itself and only notes them.
The ranks then agree, with one all-reduce, at points every rank reaches in the same order: the end of a
training batch that no validation follows, and the end of a validation. When any rank was signalled, all of
them hand the stop to Lightning's handler there, together, so its broadcast matches and every rank raises
Lightning's stop at the same batch, where ``last.ckpt`` is saved.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from neobert_tasks.lightning_private import validation_follows
from neobert_tasks.run_directory import run_directory

# The last command's stage, what stopped it ("Ctrl-C" once the first one arrived) and the checkpoint saved
# then, if any (read by `neobert_tasks.cli.main`).
_stopped: dict[str, str | None] = {"stage": None, "by": None, "saved": None, "config": None}

# The signals a rank has noted and the ranks agree on, in this order.
NOTED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stopped_by_ctrl_c() -> bool:
    """Whether the last ``fit`` of this process was stopped by Ctrl-C (not by SIGTERM)."""
    return _stopped["by"] == "Ctrl-C"


def saved_on_ctrl_c() -> str | None:
    """The checkpoint saved when Ctrl-C stopped the last ``fit``; None in its sanity check (no step yet)."""
    return _stopped["saved"]


def report_stop() -> int:
    """Say what a command stopped by SIGTERM or Ctrl-C kept and how to go on; return its exit status, 128 +
    the signal's number, which tells a scheduler or shell which signal it was."""
    if stopped_by_ctrl_c():  # the fit's own report, when it saved, came from ResumeCheckpoint
        if saved_on_ctrl_c() is None:  # in the sanity check: nothing trained, nothing saved
            tell("neobert_tasks: interrupted before the first step; nothing to save.")
        return 128 + signal.SIGINT
    if _stopped["stage"] in (None, "fit"):
        config = _stopped["config"] or "..."
        command = f"python -m neobert_tasks fit --config {config} --ckpt_path last"
        tell(f"neobert_tasks: stopped by SIGTERM; resume with `{command}`.")
    else:
        tell(f"neobert_tasks: {_stopped['stage']} stopped by SIGTERM; nothing was written: run it again.")
    return 128 + signal.SIGTERM


def tell(message: str) -> None:
    """Print ``message`` to stderr from the first process only: with several, every one ends the same way."""
    if rank_zero_only.rank == 0:
        print(message, file=sys.stderr)


class StopOnInterrupt(L.Callback):
    """Stop a ``fit`` at a batch boundary, through Lightning's SIGTERM handling, on the first Ctrl-C, and
    with several processes on SIGTERM too, all processes at the same batch."""

    def __init__(self):
        self._previous: dict[int, Any] = {}  # the handlers this callback replaced, by signal
        self._lightning_handler: Any = None
        self._noted = [0] * len(NOTED_SIGNALS)  # signals this rank received, not yet agreed on
        self._stopping = False
        self._rank_zero = True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        _stopped.update(stage=getattr(stage, "value", stage), by=None, saved=None, config=None)
        self._noted, self._stopping = [0] * len(NOTED_SIGNALS), False

    # Lightning registers its SIGTERM handler after on_fit_start, before the sanity check and training.
    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install(trainer)

    def _install(self, trainer: L.Trainer) -> None:
        sigterm_handler = signal.getsignal(signal.SIGTERM)
        # Signals are handled on the main thread only; no SIGTERM handler on Windows.
        main_thread = threading.current_thread() is threading.main_thread()
        if self._previous or not (main_thread and callable(sigterm_handler)):
            return
        self._lightning_handler, self._rank_zero = sigterm_handler, trainer.is_global_zero
        # Lightning stops at the end of any batch, inside a gradient accumulation too, and the resume starts
        # at the next batch: the half-accumulated step's batches would be lost. Noted, the stop waits.
        accumulates = trainer.accumulate_grad_batches > 1 and trainer.strategy.launcher is None
        if trainer.world_size > 1 or accumulates:
            for number in NOTED_SIGNALS:
                self._previous[number] = signal.signal(number, self._note)
        elif trainer.strategy.launcher is None:
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._stop_after_this_step)

    # validate, test and predict keep nothing to save: with several processes, where Lightning's handler
    # would hang as in a fit and the ranks hold different numbers of batches to agree at, SIGTERM ends
    # each rank at once (rank 0 passes it on to the ranks it started, as Lightning does).
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        main_thread = threading.current_thread() is threading.main_thread()
        if trainer.state.fn == "fit" or trainer.world_size == 1 or self._previous or not main_thread:
            return
        launcher = trainer.strategy.launcher

        def stop_now(signum: int, frame: FrameType | None) -> None:
            # Deaf to more SIGTERMs (rank 0 passes this one on): Lightning's handler, put back, would hang
            # in its broadcast. Lightning's teardown puts back the handler of before the command.
            signal.signal(signal.SIGTERM, lambda *_: None)
            self._previous.pop(signal.SIGTERM, None)
            if launcher is not None:
                launcher.kill(signum)
            raise SIGTERMException

        self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, stop_now)

    on_test_start = on_predict_start = on_validation_start

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.restore()

    on_predict_end = on_test_end

    def _stop_after_this_step(self, signum: int, frame: FrameType | None) -> None:
        """One process: the first Ctrl-C goes to Lightning's SIGTERM handler at once."""
        self._first_ctrl_c()
        _stopped["by"] = "Ctrl-C"
        self._hand_to_lightning(frame)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        """Several processes: note the signal; the ranks act on it together (`_agree`)."""
        if signum == signal.SIGINT:
            self._first_ctrl_c()
        self._noted[NOTED_SIGNALS.index(signum)] = 1

    def _first_ctrl_c(self) -> None:
        self.restore(signal.SIGINT)  # a second Ctrl-C raises KeyboardInterrupt at once
        if self._rank_zero:
            print(
                "\nneobert_tasks: Ctrl-C: stopping after this step and saving last.ckpt"
                " (Ctrl-C again stops at once, unsaved).",
                file=sys.stderr,
                flush=True,
            )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # Not before a validation: Lightning's stop would then come inside it, after a number of batches
        # that differs between ranks (evaluation splits are not padded to equal shares). Not inside a
        # gradient accumulation: only an optimizer step's last batch is where a resume can start after.
        if self._agreeing() and not validation_follows(trainer) and not accumulating(trainer, batch_idx):
            self._agree(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != "fit":
            self.restore()
        elif self._agreeing() and not trainer.sanity_checking and not trainer.is_last_batch:
            # Not after the epoch's last validation: stopped there, before the epoch's end, the checkpoint
            # resumed into an epoch with no batch left and no score (EarlyStopping refused the resume). The
            # ranks agree at the next epoch's first step instead.
            self._agree(trainer)

    def _agreeing(self) -> bool:
        return signal.SIGTERM in self._previous and not self._stopping

    def _agree(self, trainer: L.Trainer) -> None:
        """Every rank, at the same point: stop together if any rank was signalled."""
        noted = torch.tensor(self._noted, device=trainer.strategy.root_device)
        agreed = trainer.strategy.reduce(noted, reduce_op="max").tolist()
        if not any(agreed):
            return
        self._stopping = True
        if agreed[NOTED_SIGNALS.index(signal.SIGINT)]:
            _stopped["by"] = "Ctrl-C"
        # Lightning's handler broadcasts from rank 0; every rank calls it here, so the broadcasts match.
        self._hand_to_lightning(None)

    def _hand_to_lightning(self, frame: FrameType | None) -> None:
        # Lightning's handler logs "Received SIGTERM", which names the wrong signal for Ctrl-C; its logger is
        # its module's (Lightning names loggers by module).
        handler_log = logging.getLogger(type(self._lightning_handler).__module__)
        level = handler_log.level
        if stopped_by_ctrl_c():
            handler_log.setLevel(logging.WARNING)
        try:
            self._lightning_handler(signal.SIGTERM, frame)
        finally:
            handler_log.setLevel(level)

    def restore(self, *signals: int) -> None:
        """Put back the handlers of ``signals`` (all by default) that were there before the fit."""
        for number in signals or tuple(self._previous):
            if number in self._previous:
                signal.signal(number, self._previous.pop(number))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.restore()


def accumulating(trainer: L.Trainer, batch_idx: int) -> bool:
    """Whether batch ``batch_idx`` ends inside a gradient accumulation (no optimizer step after it): the
    rule of Lightning's training loop, where an epoch's last batch always steps."""
    every = trainer.accumulate_grad_batches
    return every > 1 and (batch_idx + 1) % every != 0 and not trainer.is_last_batch


def record_sigterm_stop(trainer: L.Trainer, saved: str) -> None:
    """Record that SIGTERM stopped the run with ``saved`` written, for the closing line's resume command."""
    _stopped.update(saved=saved, config=str(run_directory(trainer) / "config.yaml"))


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
