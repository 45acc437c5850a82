"""A tiny Lightning setup for the unit tests of the callbacks: a 4 → 1 linear regression on 32 fixed rows.

Fits of it take a fraction of a second, so the callbacks' real hooks run inside a real `Trainer` without the
command line, a tokenizer or a NeoBERT model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

ROWS, BATCH_SIZE = 32, 4
BATCHES_PER_EPOCH = ROWS // BATCH_SIZE


class TinyRegression(L.LightningModule):
    """Logs ``train/loss`` at every step, ``val/loss`` and, from ``val_scores``, ``val/score`` at every
    validation (outside the sanity check); the training loss is NaN from step ``nan_from_step`` on."""

    def __init__(self, val_scores: Sequence[float] = (), nan_from_step: int | None = None):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.model = torch.nn.Linear(4, 1)
        with torch.no_grad():
            self.model.weight.copy_(torch.randn(1, 4, generator=generator))
            self.model.bias.zero_()
        self.inputs = torch.randn(ROWS, 4, generator=generator)
        self.targets = self.inputs.sum(dim=1, keepdim=True)
        self.val_scores = list(val_scores)
        self.nan_from_step = nan_from_step
        self.validations = 0

    def loss(self, batch) -> torch.Tensor:
        inputs, targets = batch
        return torch.nn.functional.mse_loss(self.model(inputs), targets)

    def training_step(self, batch, batch_idx):
        # The rows of a step follow from the step, so that a run resumed mid-epoch trains on the same rows
        # as an uninterrupted one whichever batch its (not resumable) loader starts at.
        start = self.global_step % BATCHES_PER_EPOCH * BATCH_SIZE
        loss = self.loss((self.inputs[start : start + BATCH_SIZE], self.targets[start : start + BATCH_SIZE]))
        if self.nan_from_step is not None and self.global_step >= self.nan_from_step:
            loss = loss * float("nan")
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.loss(batch))

    def on_validation_epoch_end(self):
        if self.val_scores and not self.trainer.sanity_checking:
            self.log("val/score", self.val_scores[self.validations])
            self.validations += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.inputs, self.targets), batch_size=BATCH_SIZE)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.inputs[:8], self.targets[:8]), batch_size=BATCH_SIZE)


def tiny_trainer(root: Path, callbacks: list[L.Callback], **kwargs) -> L.Trainer:
    """A CPU trainer with its run folder (and ``metrics.csv``) in ``root/version_0``, logging every step."""
    options = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    options.update(kwargs)
    logger = CSVLogger(root, name="", version=0)
    return L.Trainer(default_root_dir=root, logger=logger, callbacks=callbacks, **options)


def run_folder(root: Path) -> Path:
    return root / "version_0"


def checkpoints(root: Path) -> Path:
    return run_folder(root) / "checkpoints"
