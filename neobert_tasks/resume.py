"""Checkpoints that survive being killed: atomic writes, safe and explained reads, step checkpoints, SIGTERM.

* `AtomicCheckpointIO` writes every checkpoint to a temporary file in the same folder and renames it into
  place, so a process killed mid-write (SIGKILL, out of memory, node failure) leaves the previous
  checkpoint intact rather than a truncated one. It reads with ``torch.load(weights_only=True)``, so a
  checkpoint from an untrusted source cannot run code, and turns a truncated, corrupt or unsafe file into
  one sentence naming it.
* `ResumeCheckpoint` saves ``last.ckpt`` every N optimizer steps (the best-model checkpoint saves it after
  every validation too), and once more when the process receives SIGTERM, which is what SLURM and
  Kubernetes send before pre-empting a job.
* `latest_run_checkpoint` finds the newest ``last.ckpt`` under a root directory, which is what
  ``fit --ckpt_path last`` resumes (in the same run directory).

The rest of resuming lives where its state does: the datamodule saves how many batches of the epoch were
trained (`TokenizedDataModule.state_dict`), the training sampler skips them, and the task reseeds the
random generator from the step at every batch (`NeoBERTTask.on_train_batch_start`).
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from neobert_tasks.errors import MissingPathError, UserInputError


class CheckpointError(UserInputError):
    """A checkpoint file exists but cannot be used: truncated, corrupt, or holding more than weights."""


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with one-sentence errors naming the file.

    ``weights_only`` unpickles tensors, containers and plain values only, so a crafted file cannot run
    code while it loads; neobert_tasks writes nothing else into its checkpoints.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"Checkpoint '{path}' does not exist.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights_only" in str(error) or "Weights only load failed" in str(error):
            raise CheckpointError(
                f"Checkpoint '{path}' holds Python objects other than tensors and plain values, which"
                " could run code when loaded, so neobert_tasks refuses to load it."
            ) from error
        raise CheckpointError(f"Checkpoint '{path}' is corrupt or truncated: {error}.") from error
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(
            f"Checkpoint '{path}' is corrupt or truncated ({path.stat().st_size} bytes; {reason})."
        ) from error


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes through a temporary file and a rename, and loads weights only."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}.")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Same folder, so the rename never crosses file systems and is atomic on POSIX.
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(descriptor, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        # weights_only is forced: nothing neobert_tasks saves needs more, and more would allow code to run.
        return load_checkpoint_file(path, map_location=map_location or (lambda storage, location: storage))


def use_atomic_checkpoints(trainer: L.Trainer) -> None:
    """Give the trainer's strategy `AtomicCheckpointIO` unless the user configured another CheckpointIO.

    Sharded strategies (FSDP with sharded state) write folders through their own code and are left alone.
    """
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


class ResumeCheckpoint(ModelCheckpoint):
    """Save ``last.ckpt`` every ``every_n_train_steps`` optimizer steps and when SIGTERM arrives.

    It writes into the best-model checkpoint's folder (``<run dir>/checkpoints``), so
    ``fit --ckpt_path last`` finds the newest of the two. A checkpoint taken in the middle of an epoch
    resumes in the middle of it, on the batch after the last one trained.

    Args:
        every_n_train_steps: Optimizer steps between two saves of ``last.ckpt``; 0 saves only on SIGTERM
            (and after each validation through the best-model checkpoint).
        save_on_sigterm: Save ``last.ckpt`` when the process receives SIGTERM, then exit with status 143.
    """

    def __init__(self, every_n_train_steps: int = 500, save_on_sigterm: bool = True):
        super().__init__(
            monitor=None,
            save_top_k=0,
            save_last=True,
            every_n_train_steps=max(every_n_train_steps, 0),
            save_on_train_epoch_end=False,
            enable_version_counter=False,  # one last.ckpt, shared with the best-model checkpoint
        )
        self.save_on_sigterm = save_on_sigterm

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        best = trainer.checkpoint_callback
        if self.dirpath is None and best is not None and best is not self:
            # The best-model callback resolves <run dir>/checkpoints in its own setup, which Lightning runs
            # first (it keeps checkpoint callbacks in the order they were given).
            self.dirpath = best.dirpath
        super().setup(trainer, pl_module, stage)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Nothing: saving after validation is the best-model checkpoint's job."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException):
        if not (self.save_on_sigterm and isinstance(exception, SIGTERMException)) or self.dirpath is None:
            return
        # Lightning raises SIGTERMException between two batches, so the state is that of a finished step.
        path = os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)
        trainer.save_checkpoint(path)
        rank_zero_info(f"Received SIGTERM: saved {path}; resume with `fit --ckpt_path last`.")

    def state_dict(self) -> dict[str, Any]:
        # Only the folder matters; ModelCheckpoint's state would also record a best score it never tracks.
        return {"dirpath": self.dirpath}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


def latest_run_checkpoint(root_dir: str | Path) -> tuple[Path, int] | None:
    """The newest ``<root_dir>/version_N/checkpoints/last*.ckpt`` and its N, or None when there is none."""
    candidates = []
    for path in Path(root_dir).glob("version_*/checkpoints/last*.ckpt"):
        version = re.fullmatch(r"version_(\d+)", path.parent.parent.name)
        if version and path.is_file():
            candidates.append((path.stat().st_mtime, path, int(version.group(1))))
    if not candidates:
        return None
    _, path, version = max(candidates)
    return path, version
