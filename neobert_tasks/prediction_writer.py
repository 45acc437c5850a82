"""Prediction files: what ``predict`` (and ``validate --prediction_writer.after_validate true``) writes.

`PredictionWriter` gathers every rank's ``predict_step`` outputs and lets the task format them (GLUE
submission TSVs, NER JSONL and CoNLL, SQuAD JSON, embeddings). The folder it writes into may hold the files
of an earlier command, beside the ``config.yaml`` of this one: in the run's own predictions folder those are
removed when this command starts predicting (a manifest lists them, with their size and time, and a file
changed since is left alone), so a command that is interrupted, or fails, before it writes leaves no files
that look like its own.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from neobert_tasks.interrupt import tell
from neobert_tasks.run_directory import predictions_directory

# Beside the prediction files: their names, so that the next command into the folder can remove them first.
MANIFEST = ".prediction_files.json"


class PredictionWriter(BasePredictionWriter):
    """Write ``predict`` results to files, one or more per predicted split, after gathering all ranks.

    The task module decides the format through ``prediction_files(outputs, split_names, datamodule)``,
    which receives, per split, each ``predict_step`` output key flattened into a list in dataset order
    of arrival, and returns ``{file name: content}``: GLUE submission TSVs, NER JSONL, SQuAD JSON, …, each
    as text, bytes, or an iterable of text pieces that is written as it is produced.

    Args:
        output_dir: Folder for the files; None writes to ``<run dir>/predictions``.
        after_validate: ``validate`` also predicts each validation split it scored and writes its files,
            as ``predict`` with ``data.predict_split`` does (`write_validation_predictions`).
    """

    def __init__(self, output_dir: str | None = None, after_validate: bool = False):
        super().__init__(write_interval="epoch")
        self.output_dir, self.after_validate = output_dir, after_validate
        self._cleared: set[Path] = set()  # folders whose earlier files this command removed
        self._wrote: list[str] = []  # the files this command wrote

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """In the run's own predictions folder, remove the files the last command wrote there and nobody
        changed since, once per command (``validate`` with ``after_validate`` predicts each validation
        split in turn into the same folder). A folder given as ``output_dir`` is the user's: several
        commands may fill it (one GLUE task each), so nothing is removed there."""
        output_dir = self._directory(trainer)
        if self.output_dir is None and trainer.is_global_zero and output_dir not in self._cleared:
            self._cleared.add(output_dir)
            for name in unchanged_written_files(output_dir):
                with contextlib.suppress(OSError):
                    (output_dir / name).unlink()
            (output_dir / MANIFEST).unlink(missing_ok=True)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Say what Ctrl-C left (Lightning then exits with its own one line)."""
        if trainer.state.fn == "predict" and isinstance(exception, KeyboardInterrupt):
            output_dir = self._directory(trainer)
            written = (
                f"only {', '.join(self._wrote)} were written"
                if self._wrote
                else "no predictions were written"
            )
            tell(f"neobert_tasks: predict interrupted; {written} to {output_dir}.")

    def _directory(self, trainer: L.Trainer) -> Path:
        return Path(self.output_dir) if self.output_dir else predictions_directory(trainer)

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        datamodule = trainer.datamodule
        split_names = datamodule.split_names_for("predict") if datamodule is not None else ["predict"]
        per_loader = predictions if len(split_names) > 1 else [predictions]
        array_keys = tuple(
            getattr(pl_module, "prediction_array_keys", ())
        )  # outputs the task reads as arrays
        outputs = [flatten_outputs(step_outputs, array_keys) for step_outputs in per_loader]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, outputs)
            outputs = [merge_outputs([part[split] for part in gathered]) for split in range(len(outputs))]
        output_dir = self._directory(trainer)
        if not trainer.is_global_zero:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        files = pl_module.prediction_files(outputs, split_names, datamodule)
        for file_name, content in files.items():
            write_prediction_file(output_dir / file_name, content)
            self._wrote.append(file_name)
        record_written_files(output_dir, files)
        # Which data was predicted: a submission file built from validation rows must not pass for a test one.
        describe = getattr(datamodule, "split_description", lambda name: f"split '{name}'")
        sources = ", ".join(describe(name) for name in split_names)
        rank_zero_info(f"Predictions of {sources} written to {output_dir}: {', '.join(files)}")


def write_prediction_file(path: Path, content: str | bytes | Iterable[str]) -> None:
    """Write text, bytes (binary formats: .npy, .parquet) or text made piece by piece, as a task's generator
    yields it (a large split's file is never whole in memory), under a temporary name first: a failure
    midway leaves no half file that passes for the whole."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        if isinstance(content, bytes):
            partial.write_bytes(content)
        else:
            with partial.open("w", encoding="utf-8", newline="") as stream:
                stream.write(content) if isinstance(content, str) else stream.writelines(content)
        partial.replace(path)
    except OSError as error:  # a full disk: name the file (a stream's write error names none)
        raise OSError(error.errno, error.strerror, str(path)) from error
    finally:
        partial.unlink(missing_ok=True)


def record_written_files(output_dir: Path, names) -> None:
    """Add ``names``, as they are now (size, modification time), to the folder's manifest."""
    manifest = {**read_manifest(output_dir)}  # after_validate: one split's files at a time
    for name in names:
        written = (output_dir / name).stat()
        manifest[name] = [written.st_size, written.st_mtime_ns]
    (output_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def read_manifest(output_dir: Path) -> dict[str, list[int]]:
    """The folder's manifest: name → [size, modification time] of each file written; empty if unreadable."""
    try:
        manifest = json.loads((output_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def unchanged_written_files(output_dir: Path) -> list[str]:
    """The files of the manifest still as they were written: a file edited or replaced since is the user's."""
    unchanged = []
    for name, stamp in read_manifest(output_dir).items():
        path = output_dir / name
        if Path(name).name != name or name in (".", "..") or not path.is_file():  # inside the folder only
            continue
        if [path.stat().st_size, path.stat().st_mtime_ns] == stamp:
            unchanged.append(name)
    return unchanged


def flatten_outputs(
    step_outputs: list[dict[str, torch.Tensor]], array_keys: tuple[str, ...] = ()
) -> dict[str, list]:
    """``predict_step`` outputs of one split → one Python list per key, rows of all steps in order.

    A row of an ``array_keys`` output stays a NumPy array (a view of its step's CPU tensor) instead of a list
    of Python floats, which take 8 times the memory: a QA window's logits, 70 KB a question that way.
    """
    keys = step_outputs[0].keys() if step_outputs else ()
    return {
        key: [row for output in step_outputs for row in rows_of(output[key], key in array_keys)]
        for key in keys
    }


def rows_of(values: torch.Tensor, as_arrays: bool):
    """The rows of a step's output: NumPy views when ``as_arrays``, else Python values."""
    return list(values.numpy()) if as_arrays else values.tolist()


def merge_outputs(parts: list[dict[str, list]]) -> dict[str, list]:
    """Concatenate the flattened outputs of several ranks (the task orders rows by their own index)."""
    keys = next((part.keys() for part in parts if part), ())
    return {key: [row for part in parts for row in part.get(key, [])] for key in keys}


def write_validation_predictions(trainer: L.Trainer, model: L.LightningModule, datamodule) -> None:
    """Predict each validation split of ``datamodule`` with ``model`` as validated, writing its files: what
    ``--prediction_writer.after_validate true`` asks of ``validate``."""
    splits = datamodule.validation_split_names if hasattr(datamodule, "predict_split") else []
    if getattr(datamodule, "predict_file", None) is not None or hasattr(datamodule, "evaluation_sets_for"):
        splits = []  # predicting a file, or embedding evaluation sets: not splits that predict can label
    if not splits:
        rank_zero_warn("prediction_writer.after_validate: the data has no validation split to predict.")
        return
    previous = datamodule.predict_split
    try:
        for split in splits:
            datamodule.predict_split = split
            trainer.predict(model, datamodule=datamodule, return_predictions=False)
    finally:
        datamodule.predict_split = previous
