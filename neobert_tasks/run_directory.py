"""Where a run's files go: ``<trainer.default_root_dir>/version_N``, whichever loggers are configured.

Lightning puts a run's files in the first logger's folder: ``save_dir/name/version`` for TensorBoard and
CSV, but the working directory (W&B, MLflow) or a folder named after the project and run id for others.
The checkpoints, ``config.yaml``, ``export/``, ``metrics.json`` and predictions of a run would then move
with the order of ``trainer.logger``, and ``fit --ckpt_path last``, which looks under
``<default_root_dir>/version_*``, would not find them. The command line instead picks the run folder
itself (the resumed run's, or the next free ``version_N``), gives it to the TensorBoard and CSV loggers it
adds and to the checkpoint callback, and records it in a `RunDirectory` callback that the rest reads.
`check_writable` refuses, in one sentence, a run folder that cannot be written, before anything runs;
`readable_as_umask_allows` gives files written through a temporary file the permissions of any other.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn

from neobert_tasks.class_paths import import_class
from neobert_tasks.errors import StorageError, describe_storage_fault

# Loggers writing into <save_dir>/<name>/<version>, which share the run folder's version.
VERSIONED_LOGGERS = (TensorBoardLogger, CSVLogger)


def next_version(root_dir: str | Path) -> int:
    """One more than the largest N of the ``<root_dir>/version_N`` folders, 0 when there is none."""
    versions = [
        int(match.group(1))
        for path in Path(root_dir).glob("version_*")
        if path.is_dir() and (match := re.fullmatch(r"version_(\d+)", path.name))
    ]
    return max(versions, default=-1) + 1


def pin_logger_versions(loggers: Any, root: str | Path, version: int | str) -> tuple[int | str, list]:
    """Give one version to the TensorBoard and CSV loggers of a ``trainer.logger`` config writing under
    ``root``, each of which would otherwise count its own next version: the version given to one of them
    (the GLUE suite's ``seed_<n>``), else ``version``. Returns it, and the ``init_args`` it was written into.
    """
    entries = loggers if isinstance(loggers, list) else [loggers]
    init_args = [entry["init_args"] for entry in entries if writes_under(entry, root)]
    chosen = next((args["version"] for args in init_args if args.get("version") is not None), version)
    pinned = [args for args in init_args if args.get("version") is None]
    for args in pinned:
        args["version"] = chosen
    return chosen, pinned


def writes_under(entry: Any, root: str | Path) -> bool:
    """Whether a logger config (``class_path``, ``init_args``) is a TensorBoard or CSV logger whose version
    folders go directly under ``root``."""
    class_path = entry.get("class_path") if hasattr(entry, "get") else None
    logger_class = import_class(class_path) if isinstance(class_path, str) else None
    init_args = entry.get("init_args") if logger_class is not None else None
    if init_args is None or not issubclass(logger_class, VERSIONED_LOGGERS):
        return False
    save_dir = init_args.get("save_dir")
    # Both loggers name their folder lightning_logs when no name is given.
    name = init_args.get("name", "lightning_logs") or ""
    return save_dir is not None and (Path(save_dir) / name).resolve() == Path(root).resolve()


# Folder inside a run that `validate`, `test` and `predict` of one of its checkpoints write into.
EVALUATION_FOLDERS = {"validate": "validate", "test": "test", "predict": "predictions"}


def run_of_checkpoint(ckpt_path: str | None) -> Path | None:
    """The run folder of a checkpoint at ``<run>/checkpoints/<name>.ckpt`` beside ``<run>/config.yaml``."""
    folder = Path(ckpt_path).expanduser().resolve().parent if ckpt_path else None
    if folder is None or folder.name != "checkpoints" or not (folder.parent / "config.yaml").is_file():
        return None
    return folder.parent


def run_of_config(command_line: list[str]) -> Path | None:
    """The run folder whose saved ``config.yaml`` a ``--config`` of the command line names (the last such;
    beside it its ``checkpoints/`` or ``metrics.json``), whatever presets follow; None without one."""
    configs = [
        argument.split("=", 1)[1] if argument.startswith("--config=") else command_line[index + 1]
        for index, argument in enumerate(command_line)
        if argument.startswith("--config=") or (argument == "--config" and index + 1 < len(command_line))
    ]
    for config in reversed(configs):
        folder = Path(config).expanduser().resolve().parent
        is_run = (folder / "checkpoints").is_dir() or (folder / "metrics.json").is_file()
        if Path(config).name == "config.yaml" and is_run:
            return folder
    return None


def best_checkpoint_of_run(run: Path) -> Path | None:
    """The best checkpoint a finished run's metrics.json names, when the file is still there: in the run's
    own checkpoints/ first (a run folder copied elsewhere reads its own, not the original's), or where it
    names it (a checkpoint folder set elsewhere)."""
    summary = run / "metrics.json"
    best = json.loads(summary.read_text()).get("best_checkpoint") if summary.is_file() else None
    if not best:
        return None
    for path in (run / "checkpoints" / Path(best).name, Path(best)):
        if path.is_file():
            return path
    return None


def last_checkpoint_of_run(run: Path) -> Path | None:
    """The newest ``last*.ckpt`` of a run (``last-v1.ckpt`` where Lightning kept an older one)."""
    found = [
        (path.stat().st_mtime, path) for path in (run / "checkpoints").glob("last*.ckpt") if path.is_file()
    ]
    return max(found)[1] if found else None


def best_run_checkpoint(root_dir: str | Path) -> Path | None:
    """The best checkpoint that the newest finished run under ``root_dir`` names in its metrics.json."""
    found = []
    for summary in Path(root_dir).glob("*/metrics.json"):
        if (best := best_checkpoint_of_run(summary.parent)) is not None:
            found.append((summary.stat().st_mtime, best))
    return max(found)[1] if found else None


def repoint_loggers(loggers: Any, old_root: str | Path, new_root: str | Path) -> None:
    """Make the TensorBoard and CSV logger configs that write under ``old_root`` write under ``new_root``
    (a run's saved config.yaml names the root it was trained under)."""
    for entry in loggers if isinstance(loggers, list) else [loggers]:
        if writes_under(entry, old_root):
            entry["init_args"]["save_dir"], entry["init_args"]["name"] = str(new_root), ""


class RunDirectory(L.Callback):
    """Holds the run folder; at setup every rank takes rank 0's, in case a late process counted another N.

    Args:
        path: The run folder, ``<default_root_dir>/version_N`` (or ``<run>/validate`` and so on).
        predictions: Folder of prediction files; None is ``<path>/predictions``.
    """

    def __init__(self, path: str, predictions: str | None = None):
        self.path = Path(path)
        self.predictions = Path(predictions) if predictions else self.path / "predictions"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        path = Path(trainer.strategy.broadcast(str(self.path)))
        if self.predictions == self.path / "predictions":
            self.predictions = path / "predictions"
        self.path = path


def run_directory(trainer: L.Trainer) -> Path:
    """The run folder: the command line's `RunDirectory`, else the first logger's folder (a Trainer built
    in Python), else ``default_root_dir``."""
    found = next((callback for callback in trainer.callbacks if isinstance(callback, RunDirectory)), None)
    return found.path if found else Path(trainer.log_dir if trainer.loggers else trainer.default_root_dir)


def predictions_directory(trainer: L.Trainer) -> Path:
    """Where prediction files go: the `RunDirectory`'s folder for them, else ``<run folder>/predictions``."""
    found = next((callback for callback in trainer.callbacks if isinstance(callback, RunDirectory)), None)
    return found.predictions if found else run_directory(trainer) / "predictions"


class RunConfigCallback(SaveConfigCallback):
    """``SaveConfigCallback`` writing ``config.yaml`` into the run folder, not the first logger's."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "save_to_log_dir": False})

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        directory = run_directory(trainer)
        directory.mkdir(parents=True, exist_ok=True)
        record_precision_that_runs(self.config, trainer)
        self.parser.save(
            self.config,
            directory / self.config_filename,
            skip_unset=False,  # a key set to null is written, not left out
            overwrite=self.overwrite,
            multifile=self.multifile,
        )


# Lightning's older spellings of a precision, and the name the trainer reports for each.
PRECISION_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}


def record_precision_that_runs(config, trainer: L.Trainer) -> None:
    """Write into ``config`` the precision the trainer runs, where Lightning substituted another.

    Lightning runs ``16-mixed`` on the CPU as ``bf16-mixed`` (fp16 autocast has no CPU kernels) with only a
    log line; the saved config must say what ran, or the run cannot be reproduced from it.
    """
    trainer_config = config.get("trainer")
    if trainer_config is None or trainer_config.get("precision") is None:
        return
    asked, ran = str(trainer_config["precision"]), str(trainer.precision)
    if PRECISION_ALIASES.get(asked, asked) != ran:
        rank_zero_warn(f"trainer.precision {asked} runs as {ran} on this machine; config.yaml records {ran}.")
        trainer_config["precision"] = ran


def check_writable(folder: Path, new: bool = False) -> None:
    """Create ``folder`` and a file in it, or end with one sentence naming it and why it cannot be written.

    ``new``: the folder must not exist yet. A fit's numbered run folder is the next free ``version_N`` when
    the command starts; another fit into the same root that started at the same moment (a sweep launched
    in parallel) takes the same N, and the two runs would write over each other's checkpoints and metrics.
    Creating it exclusively lets only one of them have it."""
    taken = False
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder.mkdir(exist_ok=not new)
        except FileExistsError:
            if not (new and folder.is_dir()):
                raise
            taken = True
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as error:
        raise StorageError(
            f"Cannot write the run folder '{folder}' ({describe_storage_fault(error)}): set"
            " trainer.default_root_dir to a folder you can write."
        ) from error
    if taken:
        raise StorageError(
            f"Run folder '{folder}' was created by another command that started at the same moment: run this"
            " one again (it takes the next version), or give each run its own trainer.default_root_dir."
        )


# What only a run that trained holds: a checkpoint, the closing scores, an export, predictions.
RUN_RESULTS = ("checkpoints/*.ckpt", "metrics.json", "export", "predictions", "validate", "test")


def _process_umask() -> int:
    """The umask, read once when this module is imported: reading it means setting it for a moment, which
    would race with threads creating files if done at every write."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


FILE_MODE = 0o666 & ~_process_umask()  # what a plain open(path, "w") creates: 0644 under umask 022


def readable_as_umask_allows(path: Path | int) -> None:
    """Give ``path`` (or an open file descriptor) the permissions of a plain ``open(path, "w")``, if the file
    system lets us: a folder mounted without permissions, or another user's file, keeps its own.

    Files written through ``tempfile.mkstemp`` and a rename (our checkpoints, transformers 5's and peft's
    ``*.safetensors``) are created 0600: a colleague or a server running as another user could then read an
    export's config and graph but not its weights.
    """
    with contextlib.suppress(OSError, NotImplementedError):
        os.fchmod(path, FILE_MODE) if isinstance(path, int) else path.chmod(FILE_MODE)


def remove_unused_run_folder(folder: Path) -> None:
    """Remove ``folder``, which this command created, when it holds no result of a run: a command refused
    before training left at most its config.yaml and the loggers' first files there, and the next run would
    otherwise be version_N+1."""
    if not folder.is_dir() or any(next(folder.glob(pattern), None) for pattern in RUN_RESULTS):
        return
    shutil.rmtree(folder, ignore_errors=True)
