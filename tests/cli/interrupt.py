"""A test-only callback that sends this process a signal at a chosen training step, to test resuming.

Used through ``--trainer.callbacks`` (see test_resume.py); the signal is real, so SIGKILL ends the process
(a subprocess) with no chance to clean up, exactly as the kernel's OOM killer or a node loss, and SIGTERM
goes to the handler Lightning installs during ``fit``.
"""

from __future__ import annotations

import os
import signal
import time

import lightning as L


class SignalAtStep(L.Callback):
    """Send ``signal_name`` to this process when the optimizer step ``step`` starts.

    Args:
        step: Global step (optimizer steps done) at which to send the signal, before its batch runs.
        signal_name: ``SIGKILL``, ``SIGTERM`` or ``SIGINT`` (Ctrl-C).
    """

    def __init__(self, step: int, signal_name: str = "SIGKILL"):
        self.step = step
        self.signal_name = signal_name

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            send(self.signal_name)


class SignalRanksAtStep(L.Callback):
    """From rank 0, send ``signal_name`` to every process of the run (its process group) when the optimizer
    step ``step`` starts there, as SLURM and a terminal's Ctrl-C do: each rank gets it wherever it is.

    Args:
        step: Global step (optimizer steps done) at which rank 0 sends the signal, before its batch runs.
        signal_name: ``SIGTERM`` or ``SIGINT`` (Ctrl-C).
    """

    def __init__(self, step: int, signal_name: str = "SIGTERM"):
        self.step, self.signal_name = step, signal_name

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.is_global_zero and trainer.global_step == self.step:
            os.killpg(os.getpgrp(), getattr(signal, self.signal_name))


class SignalRanksInEvaluation(L.Callback):
    """From rank 0, send ``signal_name`` to every process of a ``validate`` or ``predict`` run as its
    evaluation batch ``batch`` starts; every rank pauses ``pause_s`` before each batch, so that none has
    finished its share (and waits for the others) when the signal lands.

    Args:
        batch: Index of the batch at whose start rank 0 sends the signal.
        signal_name: ``SIGTERM``.
        pause_s: Seconds every rank sleeps before each batch.
    """

    def __init__(self, batch: int = 1, signal_name: str = "SIGTERM", pause_s: float = 0.2):
        self.batch, self.signal_name, self.pause_s = batch, signal_name, pause_s

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        time.sleep(self.pause_s)
        if trainer.is_global_zero and batch_idx == self.batch:
            os.killpg(os.getpgrp(), getattr(signal, self.signal_name))

    on_predict_batch_start = on_validation_batch_start


class SignalInValidation(L.Callback):
    """Send ``signal_name`` to this process as validation batch ``batch`` starts, in the validation that
    follows optimizer step ``step`` (not the sanity check).

    Args:
        step: Global step (optimizer steps done) of the validation to interrupt.
        batch: Index of the validation batch at whose start the signal is sent.
        signal_name: ``SIGKILL``, ``SIGTERM`` or ``SIGINT`` (Ctrl-C).
    """

    def __init__(self, step: int, batch: int = 1, signal_name: str = "SIGKILL"):
        self.step, self.batch, self.signal_name = step, batch, signal_name

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking and trainer.global_step == self.step and batch_idx == self.batch:
            send(self.signal_name)


class SignalInSanityCheck(L.Callback):
    """Send ``signal_name`` to this process as the sanity check's first batch starts.

    Args:
        signal_name: ``SIGTERM`` or ``SIGINT`` (Ctrl-C).
    """

    def __init__(self, signal_name: str = "SIGINT"):
        self.signal_name = signal_name

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.sanity_checking and batch_idx == 0:
            send(self.signal_name)


def send(signal_name: str) -> None:
    """Send ``signal_name`` to this process; SIGTERM only to Lightning's handler (tests send it to the test
    process itself, which the signal would otherwise end)."""
    number = getattr(signal, signal_name)
    if number == signal.SIGTERM and signal.getsignal(number) in (signal.SIG_DFL, signal.SIG_IGN, None):
        raise RuntimeError("No SIGTERM handler is installed: Lightning's fit should have installed one.")
    if number == signal.SIGINT and signal.getsignal(number) in (signal.default_int_handler, signal.SIG_DFL):
        raise RuntimeError("No Ctrl-C handler is installed: neobert_tasks' fit should have installed one.")
    os.kill(os.getpid(), number)
