"""A resumed run's ``metrics.csv`` holds every logged row once, as the uninterrupted run's would.

Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts, so a resumed run lost the
history before its checkpoint. And rows that the killed process wrote after its last checkpoint would be
logged a second time when the resumed run redoes those steps.

So each checkpoint first flushes the CSV loggers (`flush_rows`), so that no row logged before it is lost
if the process is killed. A run resumed from a checkpoint taken after optimizer step G reads the file
before the writer starts (`read_rows`), writes back the rows whose ``step`` is below G, and hands the
writer the file's header (`restore_rows`), so that later rows are appended under the same columns.

Why the step and not a row count: Lightning logs a training step's row after the callbacks'
``on_train_batch_end``, where step checkpoints are saved, so that row is not yet in the file when the
checkpoint is written, and the resumed run does not log it again. Rows logged during step G's batch (the
learning rate at its start) carry ``step`` G; those of the validation after step G carry G - 1, and that
validation is either in the checkpoint (saved after it) or not yet logged (interrupted, run again).

TensorBoard needs none of this: each process writes its own event file in the run folder, and TensorBoard
reads them all (steps redone after a resume then appear twice, with equal values).
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger


def _csv_files(trainer: L.Trainer) -> list[tuple[CSVLogger, Path]]:
    return [
        (logger, Path(logger.log_dir) / "metrics.csv")
        for logger in trainer.loggers
        if isinstance(logger, CSVLogger)
    ]


def flush_rows(trainer: L.Trainer) -> None:
    """Write every CSV logger's pending rows to its ``metrics.csv`` (rank 0 only)."""
    if trainer.is_global_zero:
        for logger, _ in _csv_files(trainer):
            logger.save()


def read_rows(trainer: L.Trainer) -> dict[str, list[list[str]]]:
    """``{metrics.csv path: its rows, header first}`` for every CSV logger whose file exists (rank 0 only),
    read before the CSV writer that deletes it is created; `restore_rows` writes them back."""
    if not trainer.is_global_zero:
        return {}
    history = {}
    for _, path in _csv_files(trainer):
        if path.is_file():
            with path.open(newline="") as file:
                history[str(path)] = list(csv.reader(file))
    return history


def restore_rows(trainer: L.Trainer, history: dict[str, list[list[str]]], before_step: int | None) -> None:
    """Write back each ``metrics.csv`` of ``history`` with the rows whose ``step`` is below
    ``before_step`` (all of them when it is None: a checkpoint that did not record its step), and give its
    writer the header, so that the resumed run appends under the same columns."""
    if not trainer.is_global_zero:
        return
    for logger, path in _csv_files(trainer):
        rows = history.get(str(path))
        if not rows:
            continue
        header, body = rows[0], rows[1:]
        if before_step is not None and "step" in header:
            column = header.index("step")
            body = [row for row in body if row[column] == "" or int(float(row[column])) < before_step]
        writer = logger.experiment  # created now if not yet, deleting the file: write it back after
        with path.open("w", newline="") as file:
            csv.writer(file).writerows([header, *body])
        # Lightning's writer rewrites the file under the header it knows when it meets new columns.
        writer.metrics_keys = sorted(set(writer.metrics_keys) | set(header))
