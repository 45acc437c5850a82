"""A test-only callback that writes the shape of every training batch, one file per rank.

Used from a subprocess through ``--trainer.callbacks`` (see test_ddp.py) to check what each DDP rank
trained on: how many batches, and how many examples and padded tokens each held.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L


class RecordBatches(L.Callback):
    """Append ``[epoch, rows, padded length, labels]`` of each training batch to ``<folder>/rank_<r>.jsonl``.

    Args:
        folder: Directory the files are written to (created if missing).
    """

    def __init__(self, folder: str):
        self.folder = Path(folder)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        rows, length = batch["input_ids"].shape
        record = [trainer.current_epoch, rows, length, batch["labels"].numel()]
        with open(self.folder / f"rank_{trainer.global_rank}.jsonl", "a") as file:
            file.write(json.dumps(record) + "\n")
