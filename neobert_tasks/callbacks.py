"""Lightning callbacks for what Lightning lacks: checkpointing on the task's own metric, exporting the
best model in the Hugging Face format with a ``metrics.json``, and writing prediction files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info

# GLUE's submission file name for each task and prediction split (gluebenchmark.com format).
GLUE_SUBMISSION_NAMES = {
    "cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "qnli": "QNLI",
    "rte": "RTE", "wnli": "WNLI", "mnli": "MNLI-m", "mnli_mismatched": "MNLI-mm", "ax": "AX",
}  # fmt: skip
# Tasks whose submissions name the class (entailment, …) rather than its id.
GLUE_TEXT_LABEL_TASKS = ("mnli", "qnli", "rte")


def run_directory(trainer: L.Trainer) -> Path:
    """The run's log directory (first logger's version folder), or the root directory without loggers."""
    return Path(trainer.log_dir if trainer.loggers else trainer.default_root_dir)


def _metric_value(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


class BestModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that can monitor the task's main metric and remembers all metrics at the best.

    ``monitor: auto`` resolves to ``val/<datamodule.main_metric>`` (GLUE: Matthews for CoLA, F1 for MRPC
    and QQP, Pearson for STS-B, accuracy otherwise) or ``val/loss``; ``mode: auto`` is ``min`` for losses
    and ``max`` for scores. All other arguments are ``ModelCheckpoint``'s.
    """

    def __init__(
        self, monitor: str | None = "auto", mode: str = "auto", save_last: bool | None = True, **kwargs
    ):
        super().__init__(
            monitor=monitor, mode="max" if mode == "auto" else mode, save_last=save_last, **kwargs
        )
        self.resolve_monitor, self.resolve_mode = monitor == "auto", mode == "auto"
        self.best_metrics: dict[str, float] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.resolve_monitor:
            main_metric = getattr(trainer.datamodule, "main_metric", None)
            self.monitor = f"val/{main_metric}" if main_metric else "val/loss"
        if self.resolve_mode:
            self.mode = "min" if self.monitor.endswith("loss") else "max"
            self.kth_value = torch.tensor(math.inf if self.mode == "min" else -math.inf)
        super().setup(trainer, pl_module, stage)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        previous = self.best_model_path
        super().on_validation_end(trainer, pl_module)
        self._remember_best_metrics(trainer, previous)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # With one validation per epoch (the default) ModelCheckpoint saves here, after validation ended.
        previous = self.best_model_path
        super().on_train_epoch_end(trainer, pl_module)
        self._remember_best_metrics(trainer, previous)

    def _remember_best_metrics(self, trainer: L.Trainer, previous_best_path: str) -> None:
        if trainer.sanity_checking:
            return  # a few batches of an untrained model: not a score to report
        if self.best_model_path != previous_best_path or not self.best_metrics:
            metrics = {
                name: _metric_value(value)
                for name, value in trainer.callback_metrics.items()
                if name.startswith("val/")
            }
            if metrics:  # no validation split: nothing to remember
                self.best_metrics = {**metrics, "epoch": trainer.current_epoch, "step": trainer.global_step}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_metrics": self.best_metrics}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_metrics = state_dict.pop("best_metrics", {})
        super().load_state_dict(state_dict)


class ExportBestModel(L.Callback):
    """At the end of ``fit``: load the best checkpoint's weights, ``save_pretrained`` the model and the
    tokenizer to ``<run dir>/<directory>``, and write ``<run dir>/metrics.json`` with the best scores.

    Args:
        directory: Folder inside the run directory that receives the exported model.
        enabled: Set false to skip the export.
    """

    def __init__(self, directory: str = "export", enabled: bool = True):
        self.directory = directory
        self.enabled = enabled

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking:
            return
        checkpoint = trainer.checkpoint_callback
        best_path = getattr(checkpoint, "best_model_path", "")
        if best_path:
            state = torch.load(best_path, map_location="cpu", weights_only=True)["state_dict"]
            pl_module.load_state_dict(state)
        run_dir = run_directory(trainer)  # every rank: trainer.log_dir broadcasts from rank 0 under DDP
        if not trainer.is_global_zero:
            return
        export_dir = run_dir / self.directory
        pl_module.model.save_pretrained(export_dir)
        tokenizer = getattr(trainer.datamodule, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.save_pretrained(export_dir)
        best_score = getattr(checkpoint, "best_model_score", None)
        summary = {
            "monitor": getattr(checkpoint, "monitor", None),
            "best_score": None if best_score is None else _metric_value(best_score),
            "best_checkpoint": best_path or None,
            "export_dir": str(export_dir),
            "best_metrics": getattr(checkpoint, "best_metrics", {}),
        }
        (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        rank_zero_info(f"Exported the best model to {export_dir}; scores in {run_dir / 'metrics.json'}")


class PredictionWriter(BasePredictionWriter):
    """Write ``predict`` results as TSV files with ``index`` and ``prediction`` columns, in dataset order.

    GLUE tasks get the benchmark's file names (``SST-2.tsv``, ``MNLI-m.tsv``, …) and label formats;
    other datasets get ``<split>.tsv`` with class names. Predictions of all ranks are gathered first.

    Args:
        output_dir: Folder for the files; None writes to ``<run dir>/predictions``.
    """

    def __init__(self, output_dir: str | None = None):
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        datamodule = trainer.datamodule
        split_names = datamodule.split_names_for("predict") if datamodule is not None else ["predict"]
        per_loader = predictions if split_names and len(split_names) > 1 else [predictions]
        rows = [self._rows(outputs) for outputs in per_loader]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, rows)
            rows = [sorted({i: p for part in gathered for i, p in part[n]}.items()) for n in range(len(rows))]
        # Every rank: trainer.log_dir (in run_directory) broadcasts from rank 0 under DDP.
        output_dir = Path(self.output_dir) if self.output_dir else run_directory(trainer) / "predictions"
        if not trainer.is_global_zero:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        for split_name, split_rows in zip(split_names, rows, strict=True):
            path = output_dir / self.file_name(datamodule, split_name)
            lines = ["index\tprediction"]
            lines += [f"{index}\t{self.format(pl_module, value)}" for index, value in sorted(split_rows)]
            path.write_text("\n".join(lines) + "\n")
            rank_zero_info(f"Wrote {len(split_rows)} predictions to {path}")

    @staticmethod
    def _rows(outputs: list[dict[str, torch.Tensor]]) -> list[tuple[int, Any]]:
        rows = []
        for output in outputs:
            rows += zip(output["index"].tolist(), output["prediction"].tolist(), strict=True)
        return rows

    @staticmethod
    def file_name(datamodule, split_name: str) -> str:
        task_name = getattr(datamodule, "task_name", None)
        if task_name in GLUE_SUBMISSION_NAMES:
            key = (
                "mnli_mismatched" if task_name == "mnli" and split_name.endswith("mismatched") else task_name
            )
            return f"{GLUE_SUBMISSION_NAMES[key]}.tsv"
        return f"{split_name}.tsv"

    @staticmethod
    def format(pl_module, value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.6g}" if math.isfinite(value) else "nan"
        if isinstance(value, list):  # multi-label: the names of the predicted classes
            names = pl_module.label_names or [str(i) for i in range(len(value))]
            return ",".join(name for name, on in zip(names, value, strict=True) if on)
        task_name = getattr(pl_module, "task_name", None)
        if task_name is not None and task_name not in GLUE_TEXT_LABEL_TASKS:
            return str(value)
        return pl_module.label_names[value] if pl_module.label_names else str(value)
