"""Prediction files: what ``predict`` (and ``validate --prediction_writer.after_validate true``) writes.

`PredictionWriter` gathers every rank's ``predict_step`` outputs and lets the task format them (GLUE
submission TSVs, NER JSONL and CoNLL, SQuAD JSON, embeddings). The folder it writes into may hold the files
of an earlier command, beside the ``config.yaml`` of this one: those are removed when this command starts
predicting (they are listed in a manifest), so a run that is interrupted, or fails, before it writes leaves
no files that look like its own.
"""

from __future__ import annotations

import json
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
    of arrival, and returns ``{file name: text}``: GLUE submission TSVs, NER JSONL, SQuAD JSON, ….

    Args:
        output_dir: Folder for the files; None writes to ``<run dir>/predictions``.
        after_validate: ``validate`` also predicts each validation split it scored and writes its files,
            as ``predict`` with ``data.predict_split`` does (`write_validation_predictions`).
    """

    def __init__(self, output_dir: str | None = None, after_validate: bool = False):
        super().__init__(write_interval="epoch")
        self.output_dir, self.after_validate = output_dir, after_validate
        self._cleared: set[Path] = set()  # folders whose earlier files this command removed

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Remove the files an earlier command wrote into this folder, once per command (``validate`` with
        ``after_validate`` predicts each validation split in turn into the same folder)."""
        output_dir = self._directory(trainer)
        if trainer.is_global_zero and output_dir not in self._cleared:
            self._cleared.add(output_dir)
            for name in written_files(output_dir):
                (output_dir / name).unlink(missing_ok=True)
            (output_dir / MANIFEST).unlink(missing_ok=True)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Say that Ctrl-C left no predictions (Lightning then exits with its own one line)."""
        if trainer.state.fn == "predict" and isinstance(exception, KeyboardInterrupt):
            output_dir = self._directory(trainer)
            tell(f"neobert_tasks: predict interrupted; no predictions were written to {output_dir}.")

    def _directory(self, trainer: L.Trainer) -> Path:
        return Path(self.output_dir) if self.output_dir else predictions_directory(trainer)

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        datamodule = trainer.datamodule
        split_names = datamodule.split_names_for("predict") if datamodule is not None else ["predict"]
        per_loader = predictions if len(split_names) > 1 else [predictions]
        outputs = [flatten_outputs(step_outputs) for step_outputs in per_loader]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, outputs)
            outputs = [merge_outputs([part[split] for part in gathered]) for split in range(len(outputs))]
        output_dir = self._directory(trainer)
        if not trainer.is_global_zero:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        files = pl_module.prediction_files(outputs, split_names, datamodule)
        manifest = sorted({*written_files(output_dir), *files})  # after_validate: one split's files at a time
        (output_dir / MANIFEST).write_text(json.dumps(manifest) + "\n")
        for file_name, content in files.items():  # text, or bytes for binary formats (.npy, .parquet)
            path = output_dir / file_name
            path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        # Which data was predicted: a submission file built from validation rows must not pass for a test one.
        describe = getattr(datamodule, "split_description", lambda name: f"split '{name}'")
        sources = ", ".join(describe(name) for name in split_names)
        rank_zero_info(f"Predictions of {sources} written to {output_dir}: {', '.join(files)}")


def written_files(output_dir: Path) -> list[str]:
    """The files that the last command's `PredictionWriter` wrote into ``output_dir``, from its manifest."""
    manifest = output_dir / MANIFEST
    try:
        names = json.loads(manifest.read_text()) if manifest.is_file() else []
    except (OSError, ValueError):
        return []
    # Names inside the folder only: a hand-edited manifest must not remove anything elsewhere.
    return [name for name in names if isinstance(name, str) and Path(name).name == name]


def flatten_outputs(step_outputs: list[dict[str, torch.Tensor]]) -> dict[str, list]:
    """``predict_step`` outputs of one split → one Python list per key, rows of all steps in order."""
    keys = step_outputs[0].keys() if step_outputs else ()
    return {key: [row for output in step_outputs for row in output[key].tolist()] for key in keys}


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
