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

import contextlib
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from neobert_tasks.errors import (
    MissingPathError,
    StorageError,
    UserInputError,
    describe_storage_fault,
    storage_fault,
)
from neobert_tasks.interrupt import record_sigterm_stop, report_ctrl_c_stop, stopped_by_ctrl_c
from neobert_tasks.lightning_private import count_ended_epoch_once, validation_follows
from neobert_tasks.metric_history import flush_rows, read_rows, restore_rows
from neobert_tasks.run_directory import last_checkpoint_of_run, readable_as_umask_allows
from neobert_tasks.run_summary import early_stop_reason


class CheckpointError(UserInputError):
    """A checkpoint file exists but cannot be used: truncated, corrupt, or holding more than weights."""


ZIP_MAGIC = b"PK\x03\x04"
LEGACY_PICKLE_MAGIC = b"\x80\x02"  # torch.save(..., _use_new_zipfile_serialization=False): pickle protocol 2


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with one-sentence errors naming the file.

    ``weights_only`` unpickles tensors, containers and plain values only, so a crafted file cannot run
    code while it loads; neobert_tasks writes nothing else into its checkpoints.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"Checkpoint '{path}' is a directory; give a .ckpt file in it (or --ckpt_path best or last)."
        )
    if not path.is_file():
        raise MissingPathError(f"Checkpoint '{path}' does not exist.")
    with path.open("rb") as file:
        start = file.read(4)
    # torch.save has written zip archives since torch 1.6; anything else (a text file, an export's
    # safetensors) made torch's unpickler fail with a bare KeyError. Empty files are truncated ones, below.
    if start and start != ZIP_MAGIC and start[:2] != LEGACY_PICKLE_MAGIC:
        raise CheckpointError(
            f"Checkpoint '{path}' is not a checkpoint: torch.save writes zip archives and this"
            f" {path.stat().st_size}-byte file is not one; give the .ckpt file of a run (or --ckpt_path best"
            " or last)."
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights_only" in str(error) or "Weights only load failed" in str(error):
            raise CheckpointError(
                f"Checkpoint '{path}' holds Python objects other than tensors and plain values, which"
                " could run code when loaded, so neobert_tasks refuses to load it."
            ) from error
        raise CheckpointError(f"Checkpoint '{path}' is corrupt or truncated: {error}.") from error
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError) as error:
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
                readable_as_umask_allows(file.fileno())  # mkstemp makes it 0600
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException as error:
            Path(temporary).unlink(missing_ok=True)
            cause = storage_fault(error)
            if cause is None:
                raise
            # A new best checkpoint has a new name: what stays is the checkpoints already in the folder.
            kept = sorted(other.name for other in path.parent.glob("*.ckpt"))
            kept_text = f"{', '.join(kept)} there intact" if kept else "no checkpoint was written there yet"
            raise StorageError(
                f"Could not write checkpoint '{path}' ({describe_storage_fault(cause)}), {kept_text}: free"
                " space or fix the folder, then resume with `fit --ckpt_path last`."
            ) from error

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        # weights_only is forced: nothing neobert_tasks saves needs more, and more would allow code to run.
        return load_checkpoint_file(path, map_location=map_location or (lambda storage, location: storage))


def use_atomic_checkpoints(trainer: L.Trainer) -> None:
    """Give the trainer's strategy `AtomicCheckpointIO` unless the user configured another CheckpointIO.

    Sharded strategies (FSDP with sharded state) write folders through their own code and are left alone.
    """
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()


def remove_unfinished_writes(folder: str | Path) -> None:
    """Delete the temporary files that writes killed mid-way left in ``folder`` (each up to a checkpoint)."""
    leftovers = list(Path(folder).glob(".*.ckpt.*.tmp"))
    if leftovers:
        size = sum(path.stat().st_size for path in leftovers)
        for path in leftovers:
            path.unlink(missing_ok=True)
        rank_zero_info(
            f"Removed {len(leftovers)} unfinished checkpoint write(s) ({size / 2**20:.1f} MiB) from {folder}"
        )


def check_free_space(folder: str | Path, pl_module: L.LightningModule) -> None:
    """Refuse to train when ``folder`` cannot hold one more checkpoint: weights, plus AdamW's two moments of
    every trainable weight (the atomic write needs room for a new file beside the old one)."""
    weights = sum(p.numel() * p.element_size() for p in pl_module.parameters())
    moments = sum(2 * p.numel() * 4 for p in pl_module.parameters() if p.requires_grad)
    needed = weights + moments
    existing = next(parent for parent in [Path(folder), *Path(folder).parents] if parent.exists())
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise StorageError(
            f"'{existing}' has {free / 2**20:.0f} MiB free, less than one checkpoint of this model needs"
            f" (about {needed / 2**20:.0f} MiB): free space or set trainer.default_root_dir elsewhere."
        )


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
        self.save_on_sigterm, self.every_n_steps = save_on_sigterm, max(every_n_train_steps, 0)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        best = trainer.checkpoint_callback
        if self.dirpath is None and best is not None and best is not self:
            # The best-model callback resolves <run dir>/checkpoints in its own setup, which Lightning runs
            # first (it keeps checkpoint callbacks in the order they were given).
            self.dirpath = best.dirpath
        super().setup(trainer, pl_module, stage)
        self._trainer = trainer
        if stage == "fit" and trainer.is_global_zero and self.dirpath is not None:
            remove_unfinished_writes(self.dirpath)
            check_free_space(self.dirpath, pl_module)

    def remember_metric_history(self, trainer: L.Trainer) -> None:
        """Read the run's ``metrics.csv`` files; call before ``trainer.fit``, because Lightning creates its
        CSV writer (which deletes an existing file) before any callback's ``setup``."""
        self._csv_history = read_rows(trainer)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Here rather than in on_train_start, which a resumed run that has nothing left to train never
        # reaches; Lightning has restored this callback's state (the checkpoint's step) by now.
        if trainer.ckpt_path:  # resumed: keep the CSV rows logged up to the checkpoint, drop those redone
            restore_rows(trainer, self._csv_history, self._checkpoint_step)
        step = self._checkpoint_step
        if trainer.ckpt_path and step is not None and 0 <= trainer.max_steps < step:
            # Lightning would only say "max_steps reached": steps are never undone.
            rank_zero_warn(
                f"The checkpoint {trainer.ckpt_path} is at step {step}, past trainer.max_steps"
                f" {trainer.max_steps}: nothing is trained and the run ends with the weights of step {step}."
            )

    def on_train_batch_end(self, trainer: L.Trainer, *args, **kwargs) -> None:
        # A checkpoint taken just before a validation resumes past it: Lightning counts that validation as
        # done. The best-model checkpoint saves last.ckpt once the validation has finished instead. Asked
        # only at the steps that save: the look ahead costs time at every step (bench/README.md).
        due = self.every_n_steps and trainer.global_step % self.every_n_steps == 0
        if due and not validation_follows(trainer):
            super().on_train_batch_end(trainer, *args, **kwargs)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning saves why early stopping stopped a run but not that the fit stopped: a resume of the
        # finished run would train another epoch (or step) and stop again. (Here, not in on_fit_start:
        # some strategies restore the callbacks after it.)
        if trainer.ckpt_path and (reason := early_stop_reason(trainer)) is not None:
            trainer.should_stop = True
            rank_zero_warn(
                f"The run of checkpoint {trainer.ckpt_path} was ended by early stopping ({reason}): it is"
                " finished, so nothing is trained."
            )

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # last.ckpt holds the final state, whatever the last save before it (a step save, or a validation
        # that did not improve the best score), so that `fit --ckpt_path last` with more epochs trains on.
        if self.dirpath is not None and not trainer.sanity_checking:
            with epoch_end_state(trainer):
                self._save_last_file(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Nothing: saving after validation is the best-model checkpoint's job."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException):
        if not (self.save_on_sigterm and isinstance(exception, SIGTERMException)) or self.dirpath is None:
            return
        if trainer.state.fn != "fit":
            return  # validate, test, predict: nothing trained; saving would replace the run's last.ckpt
        if trainer.sanity_checking:
            return  # nothing trained yet in this process: the last.ckpt on disk, if any, is still right
        # Lightning raises SIGTERMException between two batches, so the state is that of a finished step,
        # or of a validation batch: that validation must run again, from its start, after the resume.
        if trainer.validating:
            mark_validation_unfinished(trainer)
        path = self._save_last_file(trainer)
        if stopped_by_ctrl_c():  # the first Ctrl-C of a fit comes here too (neobert_tasks.interrupt)
            rank_zero_info(report_ctrl_c_stop(trainer, path))
        else:
            rank_zero_info(f"Received SIGTERM at step {trainer.global_step}: saved {path}.")
            record_sigterm_stop(trainer, path)  # the closing line gives the command that resumes it

    def _save_last_file(self, trainer: L.Trainer) -> str:
        path = os.path.join(self.dirpath, self.CHECKPOINT_NAME_LAST + self.FILE_EXTENSION)
        trainer.save_checkpoint(path, weights_only=False)
        return path

    _checkpoint_step: int | None = None
    _csv_history: dict[str, list[list[str]]] = {}
    _trainer: L.Trainer | None = None

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's key holds every_n_train_steps, so a resume that changed it would not find this
        # state (the step metrics.csv is cut at) and Lightning would warn that a callback is missing.
        return type(self).__qualname__

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn == "fit":
            count_ended_epoch_once(trainer, checkpoint)  # before Lightning restores its loops from it
        # Checkpoints written before the key above hold the state under ModelCheckpoint's key.
        states = checkpoint.get("callbacks") or {}
        older = [key for key in states if isinstance(key, str) and key.startswith(self.state_key + "{")]
        if self.state_key not in states and older:
            self.load_state_dict(states[older[0]])

    def state_dict(self) -> dict[str, Any]:
        # Lightning asks for it as it builds every checkpoint: flush metrics.csv so that no row logged
        # before this checkpoint is lost to a kill, and record the step the rows are cut at on a resume
        # (ModelCheckpoint's own state would record a best score this callback never tracks).
        if self._trainer is None:
            return {"dirpath": self.dirpath}
        flush_rows(self._trainer)
        return {"dirpath": self.dirpath, "global_step": self._trainer.global_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._checkpoint_step = state_dict.get("global_step")


# Lightning offers no public way to save a checkpoint that resumes into an interrupted validation: this sets
# the progress counters of its validation loop (attributes without an underscore, but not documented API).
# tests/cli/test_resume.py (SIGKILL and SIGTERM in validation) fails if a Lightning upgrade breaks it.
# `validation_follows` reads private state, so it lives with Lightning's other internals we use.


def mark_validation_unfinished(trainer: L.Trainer) -> None:
    """Set the running validation's progress to "its first batch started, none processed", which Lightning
    resumes by running that validation again from its first batch (restart stage "restarted mid-evaluation";
    it would skip the batches counted in ``current``, whose metric states the checkpoint does not hold)."""
    progress = trainer.fit_loop.epoch_loop.val_loop.batch_progress
    # ``total`` counts the batches of every validation in this epoch, ``current`` those of this one.
    before = progress.total.processed - progress.current.processed
    for counts, done in ((progress.total, before), (progress.current, 0)):
        counts.completed = counts.processed = done
        counts.ready = counts.started = done + 1


def latest_run_checkpoint(root_dir: str | Path) -> tuple[Path, int] | None:
    """The newest ``<root_dir>/version_N/checkpoints/last*.ckpt`` and its N, or None when there is none."""
    candidates = []
    for run in Path(root_dir).glob("version_*"):
        version = re.fullmatch(r"version_(\d+)", run.name)
        if version and (path := last_checkpoint_of_run(run)) is not None:
            candidates.append((path.stat().st_mtime, path, int(version.group(1))))
    return max(candidates)[1:] if candidates else None


@contextlib.contextmanager
def epoch_end_state(trainer: L.Trainer):
    """Within the block, the fit loop's epoch counts read as Lightning saves them while the last epoch runs,
    so that a resume from a checkpoint written once ``fit`` has ended goes on where it stopped:

    * the epoch ran to its end: as at its ``on_train_epoch_end`` (trained, not yet counted complete), which
      Lightning resumes into the next epoch;
    * ``max_steps`` stopped it at a batch inside it: as at any of its steps (started, not yet processed),
      which resumes at the next batch (the datamodule skips the batches done).

    Once ``fit`` has ended Lightning counts the last epoch processed and complete: a resume from that would
    train none of it, and after an earlier resume inside an epoch, whose restart counts that epoch processed
    twice, it would start an epoch too far.
    """
    progress = trainer.fit_loop.epoch_progress
    inside = trainer.fit_loop.epoch_loop.batch_progress.current.completed < trainer.num_training_batches
    ended = [(counts.processed, counts.completed) for counts in (progress.total, progress.current)]
    for counts in (progress.total, progress.current):
        if counts.started > 0:  # the last epoch started is started - 1, counting from 0
            counts.processed, counts.completed = counts.started - int(inside), counts.started - 1
    try:
        yield
    finally:
        for counts, (processed, completed) in zip((progress.total, progress.current), ended, strict=True):
            counts.processed, counts.completed = processed, completed
